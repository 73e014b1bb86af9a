"""A result is keyed by its stage's parameters *and* by what it was computed from: a video replaced in place (or
another dataset's video under the same id) is recomputed, downstream too; a copied or touched video is not."""

from __future__ import annotations

import json
import os
import shutil

import numpy as np
import pytest
from threadpoolctl import threadpool_limits

from idtfv.cache import FINGERPRINT_SAMPLE, file_fingerprint
from idtfv.data.manifest import VideoEntry
from idtfv.runner import INPUT_CHANGED, SOURCE_SUFFIX, entry_fingerprint, run_stage, stored_fingerprint


# ------------------------------------------------------------------------------------------- the fingerprint
def test_file_fingerprint_follows_content_not_name_or_time(tmp_path):
    rng = np.random.default_rng(0)
    data = rng.integers(0, 256, 3 * FINGERPRINT_SAMPLE + 123, np.uint8).tobytes()
    a = tmp_path / "a.avi"
    a.write_bytes(data)
    b = tmp_path / "copy" / "b.mp4"
    b.parent.mkdir()
    shutil.copyfile(a, b)  # another name and another time stamp
    os.utime(b, (1, 1))
    assert file_fingerprint(a) == file_fingerprint(b)
    assert file_fingerprint(a).startswith(f"{len(data)}:")

    def changed(at):
        x = bytearray(data)
        x[at] ^= 1
        b.write_bytes(bytes(x))
        return file_fingerprint(b) != file_fingerprint(a)

    # the header and the index (ends) are read; one flipped byte in either changes it; the middle is not read
    assert changed(0) and changed(FINGERPRINT_SAMPLE - 1) and changed(len(data) - 1)
    assert changed(len(data) - FINGERPRINT_SAMPLE)
    assert not changed(2 * FINGERPRINT_SAMPLE)  # documented: at most 128 KiB is read
    b.write_bytes(data + b"\0")  # the size is part of it
    assert file_fingerprint(b) != file_fingerprint(a)
    small = tmp_path / "small"
    small.write_bytes(b"abc")
    assert file_fingerprint(small) != file_fingerprint(a) and file_fingerprint(small).startswith("3:")
    with pytest.raises(OSError):
        file_fingerprint(tmp_path / "missing")


# ---------------------------------------------------------------------------------------------- the runner
def video_bytes(entry, params):
    """A stage whose result is its input's bytes (planted truth for "computed from which input")."""
    return {"x": np.frombuffer(entry.path.read_bytes(), np.uint8).copy()}


def _run(entries, cache, **kw):
    return run_stage("toy", video_bytes, entries, params={}, cache_root=cache, fingerprint=entry_fingerprint, **kw)


@pytest.mark.parametrize("jobs", [1, 2])
def test_a_video_replaced_in_place_is_recomputed_the_others_are_not(tmp_path, jobs):
    entries = []
    for name in "ab":
        path = tmp_path / f"{name}.avi"
        path.write_bytes(f"old {name}".encode())
        entries.append(VideoEntry(name, path, 0, "walk"))
    cache = tmp_path / "cache"
    first = _run(entries, cache, jobs=jobs)
    assert first.done == ["a", "b"]
    assert stored_fingerprint(first.dir, "a") == file_fingerprint(entries[0].path)
    entries[0].path.write_bytes(b"new content of a")
    again = _run(entries, cache, jobs=jobs)
    assert (again.done, again.skipped) == (["a"], ["b"])
    assert again.notes == {"a": INPUT_CHANGED}
    with np.load(again.path("a")) as z:
        assert z["x"].tobytes() == b"new content of a"
    assert stored_fingerprint(again.dir, "a") == file_fingerprint(entries[0].path)
    third = _run(entries, cache, jobs=jobs)
    assert third.skipped == ["a", "b"] and not third.notes


def test_copied_touched_or_deleted_videos_keep_their_results(tmp_path):
    path = tmp_path / "a.avi"
    path.write_bytes(b"the clip")
    cache = tmp_path / "cache"
    assert _run([VideoEntry("a", path, 0, "walk")], cache).done == ["a"]
    moved = tmp_path / "elsewhere" / "a.avi"  # the dataset moved to another disk (new path, new time stamps)
    moved.parent.mkdir()
    shutil.copyfile(path, moved)
    os.utime(moved, (12345, 12345))
    assert _run([VideoEntry("a", moved, 0, "walk")], cache).skipped == ["a"]
    moved.unlink()  # videos deleted once their features exist: the results stay usable
    result = _run([VideoEntry("a", moved, 0, "walk")], cache)
    assert result.skipped == ["a"] and not result.failed


def test_a_result_without_a_stored_fingerprint_is_trusted_and_force_stores_one(tmp_path):
    path = tmp_path / "a.avi"
    path.write_bytes(b"v1")
    entry = VideoEntry("a", path, 0, "walk")
    cache = tmp_path / "cache"
    result = _run([entry], cache)
    side = result.dir / f"a{SOURCE_SUFFIX}"
    side.unlink()  # a run killed between the result and its fingerprint: the result was computed from this input
    assert _run([entry], cache).skipped == ["a"]
    forced = _run([entry], cache, force=True)
    assert forced.done == ["a"] and side.read_text().strip() == file_fingerprint(path)


def test_a_stage_without_fingerprint_keeps_the_old_contract(tmp_path):
    path = tmp_path / "a.avi"
    path.write_bytes(b"v1")
    entry = VideoEntry("a", path, 0, "walk")
    first = run_stage("toy", video_bytes, [entry], params={}, cache_root=tmp_path / "c")
    path.write_bytes(b"v2")
    again = run_stage("toy", video_bytes, [entry], params={}, cache_root=tmp_path / "c")
    assert again.skipped == ["a"] and not (first.dir / f"a{SOURCE_SUFFIX}").exists()


def failing_on_new(entry, params):
    if entry.path.read_bytes() == b"bad":
        raise ValueError("cannot read it")
    return video_bytes(entry, params)


def test_a_replaced_video_that_fails_leaves_neither_its_old_result_nor_its_fingerprint(tmp_path):
    path = tmp_path / "a.avi"
    path.write_bytes(b"good")
    entry = VideoEntry("a", path, 0, "walk")
    cache = tmp_path / "cache"
    first = run_stage("toy", failing_on_new, [entry], params={}, cache_root=cache, fingerprint=entry_fingerprint)
    path.write_bytes(b"bad")
    again = run_stage("toy", failing_on_new, [entry], params={}, cache_root=cache, fingerprint=entry_fingerprint)
    assert list(again.failed) == ["a"]
    assert not first.path("a").exists() and stored_fingerprint(first.dir, "a") is None


def test_run_stage_refuses_a_fingerprint_that_is_not_callable(tmp_path):
    from idtfv.errors import ParameterError

    with pytest.raises(ParameterError, match="fingerprint"):
        run_stage("toy", video_bytes, [], params={}, cache_root=tmp_path, fingerprint="size")


# ------------------------------------------------------------------------------------- the stages downstream
def test_features_stage_recomputes_the_replaced_video_only(tmp_path, tiny_video):
    from idtfv.idt.stage import features_params, run_features

    a = tiny_video("a.avi", frames=20, seed=1)
    b = tiny_video("b.avi", frames=20, seed=2)
    entries = [VideoEntry("a", a, 0, "walk"), VideoEntry("b", b, 1, "run")]
    params = features_params(preset="fast")
    first = run_features(entries, params, cache_root=tmp_path / "cache")
    assert first.done == ["a", "b"]
    with np.load(first.path("a")) as z:
        before = z["meta"].copy()
    tiny_video("a.avi", frames=20, seed=3)  # another clip under the same name
    again = run_features(entries, params, cache_root=tmp_path / "cache")
    assert (again.done, again.skipped) == (["a"], ["b"])
    with np.load(again.path("a")) as z:
        assert not np.array_equal(z["meta"], before)


def _encode_dataset(tmp_path, sources):
    """Features files of 6 videos (4 train, 2 test) and the fingerprints a features stage stored for them."""
    rng = np.random.default_rng(0)
    feat_dir = tmp_path / "cache" / "features-abc"
    feat_dir.mkdir(parents=True, exist_ok=True)
    lines = ["video_id,path,label,label_name,group,split1,frames,fps,width,height"]
    from idtfv.idt import DescriptorLayout

    for i in range(6):
        vid, label = f"v{i}", i % 2
        lines.append(f"{vid},videos/{vid}.avi,{label},{'ab'[label]},g{i},{'train' if i < 4 else 'test'},,,,")
        n = 120 + 10 * i
        meta = np.zeros((n, 10), np.float32)
        meta[:, 7:10] = rng.uniform(0, 0.999, (n, 3))
        arrays = {"meta": meta, "info_json": np.array("{}")}
        for ch, d in DescriptorLayout().channel_widths.items():
            shift = sources[vid] == "replaced"  # what a replaced video's recomputed features look like
            arrays[ch] = np.abs(rng.normal(size=(n, d)) + label + 3 * shift).astype(np.float32)
        np.savez(feat_dir / f"{vid}.npz", **arrays)
        (feat_dir / f"{vid}{SOURCE_SUFFIX}").write_text(sources[vid] + "\n")
    (tmp_path / "manifest.csv").write_text("\n".join(lines) + "\n")
    stamp = {"stage": "features", "dir": str(feat_dir), "params": {}, "done": [f"v{i}" for i in range(6)],
             "failed": {}}
    (tmp_path / "features.json").write_text(json.dumps(stamp))


def test_encode_follows_the_features_inputs_codebook_and_vectors(tmp_path):
    from idtfv.encoding.stage import run_encode
    from idtfv.encoding.params import EncodeParams

    sources = {f"v{i}": f"100:{i:020x}" for i in range(6)}
    _encode_dataset(tmp_path, sources)
    params = EncodeParams(k=2, pca_samples=400, gmm_iter=5)

    def encode():
        with threadpool_limits(1):
            return run_encode(tmp_path / "manifest.csv", tmp_path / "features.json", params, split=1,
                              cache=tmp_path / "cache", out=tmp_path / "fv.npz")

    first = encode()
    same = encode()
    assert same["codebook_dir"] == first["codebook_dir"] and same["result"].skipped == [f"v{i}" for i in range(6)]
    # a test video replaced (its features recomputed by the features stage): that vector only
    sources["v5"] = "replaced"
    _encode_dataset(tmp_path, sources)
    test_changed = encode()
    assert test_changed["codebook_dir"] == first["codebook_dir"]
    assert test_changed["result"].done == ["v5"] and test_changed["result"].notes == {"v5": INPUT_CHANGED}
    # a training video replaced: another codebook, every vector encoded with it
    sources["v0"] = "replaced"
    _encode_dataset(tmp_path, sources)
    train_changed = encode()
    assert train_changed["codebook_dir"] != first["codebook_dir"]
    assert train_changed["result"].done == [f"v{i}" for i in range(6)]
