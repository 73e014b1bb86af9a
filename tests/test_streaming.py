"""Streaming encode (idtfv.encoding.streaming): sample-only features stage, extract + encode in one call, STREAMING=1.

The reference is the normal path on the same tiny real videos: ``idtfv features --store all`` then ``idtfv encode``.
With the same codebook, ``idtfv encode --streaming`` must give the same vectors bit for bit; the sample-only stage
must hold exactly ``keep_sample`` of the full arrays and nothing else.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from threadpoolctl import threadpool_limits

from conftest import write_tiny_video
from idtfv.encoding.stage import encode_arrays, load_codebooks
from idtfv.encoding.sampling import CHANNELS
from idtfv.sampling import keep_sample, training_subset
from idtfv.data.manifest import Manifest, VideoEntry, write_manifest
from idtfv.errors import ParameterError
from idtfv.cli import main
from idtfv.runner import read_index, read_stamp

ENCODE_OPTS = ["--k", "2", "--pca-samples", "150", "--gmm-iter", "5", "--pyramid", "1x1x1,1x1x2"]


@pytest.fixture(autouse=True)
def _one_blas_thread():
    with threadpool_limits(1):
        yield


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    """Six tiny real videos of two classes (4 train, 2 test) and one file that is not a video (test split)."""
    root = tmp_path_factory.mktemp("streaming")
    rows = []
    for i in range(6):
        label = i % 2
        motion = (2, 1) if label == 0 else (-1, 2)
        path = write_tiny_video(root / "videos" / f"v{i}.avi", frames=24, seed=i, motion=motion)
        rows.append(VideoEntry(f"v{i}", path, label, "ab"[label], group=f"g{i}",
                               splits={1: "train" if i < 4 else "test"}))
    (root / "videos" / "broken.avi").write_text("this is not a video")
    rows.append(VideoEntry("broken", root / "videos" / "broken.avi", 0, "a", group="g9", splits={1: "test"}))
    write_manifest(Manifest(rows, root), root / "manifest.csv")
    return root


def _cli(root, *argv):
    return main([str(a) for a in argv])


def _features(root, out, *extra):
    return _cli(root, "features", "--manifest", root / "manifest.csv", "--cache", root / "cache", "--out",
                root / out, "--allow-failed", *extra)


def _encode(root, features, out, *extra):
    return _cli(root, "encode", "--manifest", root / "manifest.csv", "--features", root / features, "--cache",
                root / "cache", "--out", root / out, "--allow-failed", *ENCODE_OPTS, *extra)


def _load(path):
    with np.load(path, allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


def test_streaming_equals_the_normal_path_and_stores_no_descriptors(dataset, capsys):
    root = dataset
    # normal path: every descriptor stored, then encode
    assert _features(root, "full.json") == 0
    assert _encode(root, "full.json", "fv.npz") == 0
    full_dir = read_stamp(root / "full.json")["dir"]
    codebook = next((root / "cache").glob("codebook-*"))
    # streaming: features keeps a sample only ...
    assert _features(root, "sample.json", "--store", "sample", "--sample-per-video", "25") == 0
    stamp = read_stamp(root / "sample.json")
    assert stamp["dir"] != full_dir and stamp["params"]["store"] == "sample"
    assert stamp["failed"].keys() == {"broken"} and stamp["done"] == [f"v{i}" for i in range(6)]
    allowed = {f"sample_{ch}" for ch in ("meta", *CHANNELS)} | {"n_rows", "info_json"}
    for vid in stamp["done"]:
        small, full = _load(stamp["dir"] / f"{vid}.npz"), _load(full_dir / f"{vid}.npz")
        assert set(small) == allowed  # no full descriptor array is stored
        assert int(small["n_rows"]) == len(full["meta"]) > 25
        want = keep_sample(full, n_keep=25, seed=0, video_id=vid)
        for key, value in want.items():
            np.testing.assert_array_equal(small[key], value)
    # ... then extract + encode in one worker call, with the normal path's codebook: the same vectors
    capsys.readouterr()
    assert _encode(root, "sample.json", "fv_stream.npz", "--streaming", "--codebook", codebook) == 0
    assert "1 failed of 7 videos" in capsys.readouterr().out
    normal, stream = _load(root / "fv.npz"), _load(root / "fv_stream.npz")
    assert stream["video_ids"].tolist() == normal["video_ids"].tolist() == [f"v{i}" for i in range(6)]
    assert stream["labels"].tolist() == normal["labels"].tolist() == [0, 1, 0, 1, 0, 1]
    np.testing.assert_array_equal(stream["features"], normal["features"])
    stream_dir = next(d for d in (root / "cache").glob("encode-*")
                      if json.loads((d / "params.json").read_text())["params"].get("streaming") is True)
    assert read_index(stream_dir / "index.csv")["broken"].status == "failed"
    for i in range(6):
        item = _load(stream_dir / f"v{i}.npz")
        assert set(item) == {"features", "n_descriptors"}
        assert int(item["n_descriptors"]) == len(_load(full_dir / f"v{i}.npz")["meta"])

    # resumable: a rerun computes nothing and writes the same bytes
    first = (root / "fv_stream.npz").read_bytes()
    assert _encode(root, "sample.json", "fv_stream.npz", "--streaming", "--codebook", codebook) == 0
    assert "0 computed, 6 already done, 1 failed" in capsys.readouterr().out
    assert (root / "fv_stream.npz").read_bytes() == first
    # recomputed in 2 worker processes: the same bytes
    assert _encode(root, "sample.json", "fv_stream.npz", "--streaming", "--codebook", codebook, "--force",
                   "--jobs", "2") == 0
    assert "6 computed, 0 already done, 1 failed" in capsys.readouterr().out
    assert (root / "fv_stream.npz").read_bytes() == first

    # the codebook fitted from the samples alone (of a class-stratified half of the training videos)
    assert _features(root, "subset.json", "--store", "sample", "--sample-per-video", "25", "--subset", "0.5") == 0
    sub = read_stamp(root / "subset.json")
    assert sub["dir"] == stamp["dir"]  # the same stage: the subset only picks the videos
    assert sub["params"]["subset"] == {"fraction": 0.5, "split": 1}
    assert len(sub["done"]) == 2 and {int(v[1:]) % 2 for v in sub["done"]} == {0, 1}
    assert all(int(v[1:]) < 4 for v in sub["done"])  # training videos only
    assert _encode(root, "subset.json", "fv_sub.npz", "--streaming") == 0
    cb_sub = next(c for c in (root / "cache").glob("codebook-*") if c != codebook)
    models, summary = load_codebooks(cb_sub)
    assert summary["sample"] == {"videos": 2, "rows_available": 50, "rows": 50, "from_samples": 2}
    F = _load(root / "fv_sub.npz")["features"]
    for i in (1, 4):  # a training video and a test video, from the stored full arrays of the normal path
        np.testing.assert_array_equal(
            F[i], encode_arrays(_load(full_dir / f"v{i}.npz"), models, pyramid="1x1x1,1x1x2"))


def test_training_subset_is_stratified_seeded_and_order_free():
    entries = []
    for c, n_train in enumerate((10, 5, 1)):
        for j in range(n_train + 2):
            entries.append(VideoEntry(f"c{c}_{j}", Path(f"c{c}_{j}.avi"), c, f"class{c}",
                                      splits={1: "train" if j < n_train else "test"}))
    chosen = training_subset(entries, 0.4, split=1, seed=3)
    by_class = [sum(e.label == c for e in chosen) for c in range(3)]
    assert by_class == [4, 2, 1]  # round(0.4 n_c), at least one per class
    assert all(e.splits[1] == "train" for e in chosen)
    assert [e.video_id for e in chosen] == [e.video_id for e in entries if e in chosen]  # manifest order
    again = training_subset(entries[::-1], 0.4, split=1, seed=3)
    assert {e.video_id for e in again} == {e.video_id for e in chosen}
    picks = {frozenset(e.video_id for e in training_subset(entries, 0.4, seed=s)) for s in range(6)}
    assert len(picks) > 1  # the seed matters
    assert len(training_subset(entries, 1.0)) == 16
    for bad in (0.0, 1.5, -0.1):
        with pytest.raises(ParameterError, match="--subset"):
            training_subset(entries, bad)
    with pytest.raises(ParameterError, match="split 2"):
        training_subset(entries, 0.5, split=2)


def test_bad_streaming_options_are_one_line_errors(dataset, tmp_path, capsys):
    root = dataset

    def fails(*argv, needle):
        assert main([str(a) for a in argv]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("error: ") and needle in err[0], err

    common = ["features", "--manifest", root / "manifest.csv", "--cache", tmp_path / "c", "--out", tmp_path / "f.json"]
    fails(*common, "--subset", "0.5", needle="--subset needs --store sample")
    fails(*common, "--store", "sample", "--subset", "1.5", needle="--subset must be a fraction")
    fails(*common, "--store", "sample", "--sample-per-video", "0", needle="--sample-per-video must be >= 1")
    assert not (tmp_path / "f.json").exists()
    stamp = tmp_path / "noidt.json"
    stamp.write_text(json.dumps({"stage": "features", "dir": str(tmp_path), "params": {}, "done": [], "failed": {}}))
    enc = ["encode", "--manifest", root / "manifest.csv", "--cache", tmp_path / "c", "--out", tmp_path / "o.npz",
           "--streaming"]
    fails(*enc, "--features", stamp, needle="params.idt")
    stamp.write_text(json.dumps({"stage": "features", "dir": str(tmp_path), "params": {"idt": {}}, "done": [],
                                 "failed": {}}))
    fails(*enc, "--features", stamp, needle="no training video with a features sample")
    fails(*enc, "--features", stamp, "--codebook", tmp_path / "nocb", needle="codebook")
    stamp.write_text(json.dumps({"stage": "features", "dir": str(tmp_path), "params": {"idt": {}, "store": "sample"},
                                 "done": [], "failed": {}}))
    fails(*enc[:-1], "--features", stamp, needle="encode --streaming")  # the normal encode of a sample stamp


def test_streaming_uses_kept_full_features_instead_of_extracting(dataset, monkeypatch, capsys):
    root = dataset
    assert _features(root, "full.json") == 0  # kept descriptors (resumed from the first test when it ran)
    assert _encode(root, "full.json", "fv.npz") == 0
    codebook = next(c for c in (root / "cache").glob("codebook-*")
                    if json.loads((c / "codebook.json").read_text())["sample"]["from_samples"] == 0)
    from idtfv import idt

    def no_extraction(*args, **kwargs):
        raise ParameterError("extraction was called")

    monkeypatch.setattr(idt, "extract", no_extraction)
    assert _encode(root, "full.json", "fv_kept.npz", "--streaming", "--codebook", codebook) == 0
    assert "6 computed" in capsys.readouterr().out  # jobs=1: in this process, so the patch applies
    np.testing.assert_array_equal(_load(root / "fv_kept.npz")["features"], _load(root / "fv.npz")["features"])


def test_streaming_extracts_again_when_a_kept_file_is_damaged(dataset, caplog, capsys):
    """A kept ``--store all`` file that is truncated or fails its CRC counts as absent: the video is extracted again
    (the same vector as from the intact file), with a warning naming the file; no failed video, no traceback."""
    root = dataset
    assert _features(root, "full.json") == 0
    assert _encode(root, "full.json", "fv.npz") == 0
    codebook = next(c for c in (root / "cache").glob("codebook-*")
                    if json.loads((c / "codebook.json").read_text())["sample"]["from_samples"] == 0)
    full_dir = Path(read_stamp(root / "full.json")["dir"])
    kept = {v: (full_dir / f"{v}.npz").read_bytes() for v in ("v1", "v4")}
    try:
        (full_dir / "v1.npz").write_bytes(kept["v1"][: len(kept["v1"]) // 2])  # truncated
        flipped = bytearray(kept["v4"])
        flipped[len(flipped) // 3] ^= 0xFF  # inside a member: its zlib stream or CRC-32 fails
        (full_dir / "v4.npz").write_bytes(bytes(flipped))
        capsys.readouterr()
        with caplog.at_level("WARNING", logger="idtfv.encoding.streaming"):
            assert _encode(root, "full.json", "fv_damaged.npz", "--streaming", "--codebook", codebook,
                           "--force") == 0
    finally:
        for vid, data in kept.items():
            (full_dir / f"{vid}.npz").write_bytes(data)
    assert "6 computed" in capsys.readouterr().out
    warned = [r.getMessage() for r in caplog.records if r.name == "idtfv.encoding.streaming"]
    for vid in ("v1", "v4"):
        assert any(m.startswith(f"{full_dir / vid}.npz: ") and "extracting the video again" in m for m in warned)
    np.testing.assert_array_equal(_load(root / "fv_damaged.npz")["features"], _load(root / "fv.npz")["features"])


def test_subset_sample_of_another_split_is_reported(dataset, caplog):
    """A --subset sample drawn from split 1's training videos, encoded for split 2: said in a warning, and the
    codebook uses only videos that are training videos of split 2 (never a split-2 test video)."""
    from idtfv.data.manifest import read_manifest

    root = dataset
    man = read_manifest(root / "manifest.csv")
    rows = [VideoEntry(e.video_id, e.path, e.label, e.label_name, group=e.group,
                       splits={**e.splits, 2: "train" if e.video_id in ("v0", "v1", "v2", "v5") else "test"})
            for e in man.rows]
    write_manifest(Manifest(rows, root), root / "manifest2.csv")
    assert _cli(root, "features", "--manifest", root / "manifest2.csv", "--cache", root / "cache", "--out",
                root / "subset1.json", "--allow-failed", "--store", "sample", "--sample-per-video", "25",
                "--subset", "1", "--split", "1") == 0
    assert read_stamp(root / "subset1.json")["done"] == ["v0", "v1", "v2", "v3"]
    with caplog.at_level("WARNING", logger="idtfv.encoding.streaming"):
        assert _cli(root, "encode", "--manifest", root / "manifest2.csv", "--features", root / "subset1.json",
                    "--split", "2", "--cache", root / "cache", "--out", root / "fv2.npz", "--allow-failed",
                    "--streaming", *ENCODE_OPTS) == 0
    assert "drawn from split 1's training videos" in caplog.text and "encoding split 2" in caplog.text
    cb = sorted((root / "cache").glob("codebook-*"), key=lambda p: p.stat().st_mtime)[-1]
    assert json.loads((cb / "codebook.json").read_text())["sample"]["videos"] == 3  # v0, v1, v2: not v3, not v5
