"""The features stage writes each video's trajectories to its result file as they finish (the runner's
``writes_npz`` protocol), so a worker's memory does not grow with a video's length: the stored arrays are those of
the in-memory extraction, bit for bit, and the in-memory path is not taken; the runner's side of the protocol
(fingerprint, resume, a function that breaks it) holds for any such function."""

from __future__ import annotations

import numpy as np
import pytest

from idtfv.atomic import temp_name, writer_tag
from idtfv.cache import load_valid
from idtfv.data.manifest import VideoEntry
from idtfv.idt import extractor
from idtfv.idt.params import IDTParams
from idtfv.idt.stage import features_item, features_params, run_features
from idtfv.runner import EMPTY_KEY, SOURCE_SUFFIX, entry_fingerprint, run_stage


def _entry(path, video_id="v"):
    return VideoEntry(video_id=video_id, path=path, label=0, label_name="a")


def test_the_stage_file_holds_the_in_memory_arrays_and_never_holds_them_all(tiny_video, tmp_path, monkeypatch):
    video = tiny_video(frames=24, width=96, height=72)
    params = features_params(preset="fast")
    entry = _entry(video)
    want = extractor.extract(video, params=IDTParams.from_dict(params["idt"])).as_arrays()
    assert want["meta"].shape[0] > 0  # a video with trajectories (else the test would compare empty arrays)

    def refuse(*args, **kwargs):  # the stage must not extract a whole video into memory
        raise AssertionError("extract() called by the features stage")

    monkeypatch.setattr(extractor, "extract", refuse)
    result = run_features([entry], params, cache_root=tmp_path / "cache")
    assert result.ok == ["v"] and not result.failed
    got = load_valid(result.path("v"))
    assert sorted(got) == sorted(want)
    for name in want:
        if name != "info_json":
            assert got[name].dtype == want[name].dtype and got[name].tobytes() == want[name].tobytes(), name
    assert (result.dir / f"v{SOURCE_SUFFIX}").read_text().strip() == entry_fingerprint(entry, params)


@pytest.mark.parametrize("store", ["all", "sample"])
def test_a_video_too_short_for_a_trajectory_is_empty_not_a_result(tiny_video, tmp_path, store):
    video = tiny_video(frames=6)  # shorter than L + 1 = 16 frames
    params = features_params()
    if store == "sample":
        params = {**params, "store": "sample", "sample_per_video": 5, "sample_seed": 0}
    result = run_features([_entry(video)], params, cache_root=tmp_path / "cache")
    assert result.ok == [] and "v" in result.empty
    assert "6 frames" in result.empty["v"]
    stored = load_valid(result.path("v"))
    assert EMPTY_KEY in stored and stored["meta"].shape == (0, 10)
    assert [p.name for p in result.dir.iterdir() if p.name.endswith(".tmp")] == []  # no scratch left


# ------------------------------------------------------------------------- the runner's side, any function
def _writes(entry, params, *, out):
    from idtfv.cache import atomic_savez

    atomic_savez(out, {"x": np.frombuffer(entry.path.read_bytes(), np.uint8).copy()})


_writes.writes_npz = True


def _returns_arrays(entry, params, *, out):
    scratch = out.parent / temp_name(out.name, writer_tag())  # a file beside the result, gone at the end
    scratch.write_bytes(entry.path.read_bytes())
    try:
        return {"x": np.frombuffer(scratch.read_bytes(), np.uint8).copy()}
    finally:
        scratch.unlink()


_returns_arrays.writes_npz = True


def _writes_nothing(entry, params, *, out):
    return None


_writes_nothing.writes_npz = True


def test_the_runner_lets_a_function_write_its_result_and_resumes_it(tmp_path):
    video = tmp_path / "a.bin"
    video.write_bytes(b"abcdef")
    entries = [_entry(video, "a")]
    first = run_stage("toy", _writes, entries, params={}, cache_root=tmp_path / "c", fingerprint=entry_fingerprint)
    assert first.done == ["a"]
    assert load_valid(first.path("a"))["x"].tobytes() == b"abcdef"
    assert (first.dir / f"a{SOURCE_SUFFIX}").is_file()
    again = run_stage("toy", _writes, entries, params={}, cache_root=tmp_path / "c", fingerprint=entry_fingerprint)
    assert again.skipped == ["a"] and again.done == []


def test_a_function_may_return_its_arrays_instead(tmp_path):
    video = tmp_path / "a.bin"
    video.write_bytes(b"abcdef")
    result = run_stage("toy", _returns_arrays, [_entry(video, "a")], params={}, cache_root=tmp_path / "c")
    assert result.done == ["a"]
    assert load_valid(result.path("a"))["x"].tobytes() == b"abcdef"
    assert sorted(p.name for p in result.dir.iterdir() if p.name.startswith(".") and "tmp" in p.name) == []


def test_a_function_that_writes_nothing_and_returns_nothing_fails_its_video(tmp_path):
    video = tmp_path / "a.bin"
    video.write_bytes(b"abcdef")
    result = run_stage("toy", _writes_nothing, [_entry(video, "a")], params={}, cache_root=tmp_path / "c")
    assert "a" in result.failed and "writes_npz" in result.failed["a"]
    assert not result.path("a").exists()
    # forced over an earlier valid result, the old file does not pass for the new one
    done = run_stage("toy", _writes, [_entry(video, "a")], params={}, cache_root=tmp_path / "c")
    assert done.done == ["a"] and done.path("a").exists()
    forced = run_stage("toy", _writes_nothing, [_entry(video, "a")], params={}, cache_root=tmp_path / "c",
                       force=True)
    assert "a" in forced.failed and not forced.path("a").exists()


# ------------------------------------------------------------------------------------ the sampled (streaming) mode
def test_the_sample_mode_reads_its_rows_back_from_a_scratch_file_and_keeps_the_same_arrays(tiny_video, tmp_path):
    from idtfv.idt.stage import features_sample_item

    video = tiny_video(frames=24, width=96, height=72)
    params = {**features_params(preset="fast"), "store": "sample", "sample_per_video": 7, "sample_seed": 3}
    entry = _entry(video)
    want = features_sample_item(entry, params)  # in memory: keep_sample on the whole arrays
    assert want["n_rows"] > 7 and want["sample_meta"].shape == (7, 10)
    out = tmp_path / "stage" / "v.npz"
    out.parent.mkdir()
    got = features_sample_item(entry, params, out=out)
    assert list(got) == list(want)
    for name in want:
        if name != "info_json":
            assert got[name].dtype == want[name].dtype and got[name].tobytes() == want[name].tobytes(), name
    assert list(out.parent.iterdir()) == []  # the scratch file is gone (and the runner saves the result)


@pytest.mark.parametrize("shape, dtype", [((0, 3), np.float32), ((1,), np.int64), ((1000, 10), np.float32),
                                          ((300, 70000), np.float16), ((5000,), np.uint8)])
def test_take_rows_is_fancy_indexing(tmp_path, shape, dtype):
    from idtfv.cache import atomic_savez, take_rows

    rng = np.random.default_rng(sum(shape))
    a = (rng.standard_normal(shape) * 100).astype(dtype)
    atomic_savez(tmp_path / "a.npz", {"a": a, "b": np.arange(3)})
    n = shape[0]
    cases = [np.arange(0), np.arange(n), np.sort(rng.integers(0, n, min(n, 17))) if n else np.arange(0)]
    if n:
        cases += [np.array([0]), np.array([n - 1]), np.array([0, 0, n - 1, n - 1])]  # ends and repeats
    for rows in cases:
        got = take_rows(tmp_path / "a.npz", "a", rows)
        assert got.dtype == a.dtype and got.shape == (len(rows), *shape[1:])
        assert got.tobytes() == a[rows].tobytes()


def test_take_rows_refuses_a_damaged_member_with_the_file_named(tmp_path):
    from idtfv.cache import atomic_savez, take_rows
    from idtfv.errors import FormatError

    atomic_savez(tmp_path / "a.npz", {"a": np.random.default_rng(0).standard_normal((5000, 4)).astype(np.float32)})
    data = (tmp_path / "a.npz").read_bytes()
    (tmp_path / "cut.npz").write_bytes(data[: len(data) // 2])
    with pytest.raises(FormatError, match="cut.npz"):
        take_rows(tmp_path / "cut.npz", "a", np.array([1, 4000]))
