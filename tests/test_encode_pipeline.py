"""`idtfv encode` end to end on a tiny synthetic feature set: codebooks, per-video vectors, the feature file."""

from __future__ import annotations

import json

import numpy as np
import pytest
from threadpoolctl import threadpool_limits

from idtfv.encoding.fisher import fisher_vectors_cells
from idtfv.encoding.stage import encode_arrays, load_codebooks
from idtfv.encoding.pyramid import cell_ids, parse_pyramid
from idtfv.idt import DescriptorLayout
from idtfv.errors import FormatError
from idtfv.cli import main

N_VIDEOS = 8
#: {channel: width} of the reference options (the test files' info_json holds no options)
CHANNELS = DescriptorLayout().channel_widths


@pytest.fixture(autouse=True)
def _one_blas_thread():
    """One BLAS thread: the results do not depend on it, and on a busy 2-core machine threads only spin."""
    with threadpool_limits(1):
        yield


def make_video(rng, label, n):
    meta = np.zeros((n, 10), np.float32)
    meta[:, 7:10] = rng.uniform(0, 0.999, (n, 3))
    arrays = {"meta": meta}
    for ch, d in CHANNELS.items():
        base = rng.normal(size=(n, d)) + (2.0 if label else -2.0) * (np.arange(d) % 3 == 0)
        arrays[ch] = np.abs(base).astype(np.float32)
    arrays["info_json"] = np.array("{}")
    return arrays


@pytest.fixture()
def dataset(tmp_path):
    rng = np.random.default_rng(0)
    feat_dir = tmp_path / "cache" / "features-abc"
    feat_dir.mkdir(parents=True)
    lines = ["video_id,path,label,label_name,group,split1,frames,fps,width,height"]
    for i in range(N_VIDEOS):
        vid = f"v{i}"
        label = i % 2
        lines.append(f"{vid},videos/{vid}.avi,{label},{'ab'[label]},g{i},{'train' if i < 6 else 'test'},,,,")
        if i != 7:  # v7's features failed
            np.savez(feat_dir / f"{vid}.npz", **make_video(rng, label, 150 + 10 * i))
    (tmp_path / "manifest.csv").write_text("\n".join(lines) + "\n")
    stamp = {"stage": "features", "dir": str(feat_dir), "params": {}, "done": [f"v{i}" for i in range(7)],
             "failed": {"v7": "VideoError: broken"}}
    (tmp_path / "features.json").write_text(json.dumps(stamp))
    return tmp_path


def run(ds, *extra, out="fv.npz", cache="cache"):
    return main(["encode", "--manifest", str(ds / "manifest.csv"), "--features", str(ds / "features.json"),
                 "--cache", str(ds / cache), "--out", str(ds / out), "--k", "3", "--pca-samples", "600",
                 "--gmm-iter", "8", *extra])


def test_encode_fisher_with_pyramid(dataset, capsys):
    assert run(dataset, "--pyramid", "1x1x1,1x1x2") == 0
    with np.load(dataset / "fv.npz") as z:
        ids, F, labels = z["video_ids"].tolist(), z["features"], z["labels"]
    assert ids == [f"v{i}" for i in range(7)]  # v7 skipped and reported
    assert labels.tolist() == [0, 1, 0, 1, 0, 1, 0]
    dim_per_cell = sum(2 * 3 * (d // 2) for d in CHANNELS.values())
    assert F.shape == (7, 3 * dim_per_cell) and F.dtype == np.float32
    assert "1 videos without features skipped" in capsys.readouterr().err

    # Independent check of one vector: PCA + Fisher per channel and cell, from the saved codebooks.
    cb_dir = next((dataset / "cache").glob("codebook-*"))
    models, summary = load_codebooks(cb_dir)
    assert summary["k"] == 3 and summary["sample"]["rows"] == 600
    with np.load(dataset / "cache" / "features-abc" / "v4.npz") as z:
        arrays = {k: z[k] for k in z.files}
    cells = cell_ids(arrays["meta"][:, 7:10], parse_pyramid("1x1x1,1x1x2"))
    parts = [fisher_vectors_cells(pca.transform(arrays[ch]), gmm, cells, 3).ravel()
             for ch, (pca, gmm) in models.items()]
    np.testing.assert_allclose(F[4], np.concatenate(parts), atol=1e-6)
    # every (channel, cell) block is L2-normalised
    blocks = F[4].reshape(-1)
    offset = 0
    for d in CHANNELS.values():
        size = 2 * 3 * (d // 2)
        for c in range(3):
            assert abs(np.linalg.norm(blocks[offset:offset + size]) - 1) < 1e-5
            offset += size


def test_deterministic_and_resumable(dataset):
    assert run(dataset) == 0
    first = (dataset / "fv.npz").read_bytes()
    assert run(dataset, out="again.npz") == 0  # resumed: codebook and vectors reused
    assert run(dataset, "--jobs", "2", out="fresh.npz", cache="cache2") == 0  # from scratch, in 2 processes
    assert (dataset / "again.npz").read_bytes() == first
    with np.load(dataset / "fv.npz") as a, np.load(dataset / "fresh.npz") as b:
        assert a["features"].tobytes() == b["features"].tobytes()


@pytest.mark.parametrize("method,per_channel", [("bof", lambda d: 3), ("vlad", lambda d: 3 * (d // 2))])
def test_bof_and_vlad(dataset, method, per_channel):
    whiten = ["--pca-whiten"] if method == "vlad" else []
    assert run(dataset, "--method", method, "--channels", "hog,mbhx", *whiten) == 0
    with np.load(dataset / "fv.npz") as z:
        F = z["features"]
    assert F.shape == (7, per_channel(96) * 2)
    if method == "bof":
        np.testing.assert_allclose(F.reshape(7, 2, 3).sum(2), 1.0, atol=1e-6)


def test_streaming_encode_arrays_equals_stage(dataset):
    assert run(dataset) == 0
    models, summary = load_codebooks(next((dataset / "cache").glob("codebook-*")))
    with np.load(dataset / "cache" / "features-abc" / "v2.npz") as z:
        vec = encode_arrays({k: z[k] for k in z.files}, models, method="fisher")
    with np.load(dataset / "fv.npz") as z:
        np.testing.assert_array_equal(z["features"][2], vec)


def test_video_without_trajectories_gives_zeros_and_bad_arrays_are_named(dataset):
    assert run(dataset, "--channels", "hog") == 0
    models, _ = load_codebooks(next((dataset / "cache").glob("codebook-*")))
    empty = {"meta": np.zeros((0, 10), np.float32), "hog": np.zeros((0, 96), np.float32)}
    vec = encode_arrays(empty, models, pyramid="1x1x1,1x3x1")
    assert vec.shape == (4 * 2 * 3 * 48,) and not vec.any()
    with pytest.raises(FormatError, match=r"v9.npz: 'hog' has shape \(0, 95\)"):
        encode_arrays({"meta": empty["meta"], "hog": np.zeros((0, 95))}, models, source="v9.npz")


def test_bad_input_is_one_line_error(dataset, capsys):
    (dataset / "features.json").write_text("{}")
    assert run(dataset) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and "features.json" in err[0]
    assert main(["encode", "--manifest", str(dataset / "manifest.csv"), "--features", str(dataset / "nope.json"),
                 "--cache", str(dataset / "c"), "--out", str(dataset / "o.npz"), "--pyramid", "1x2"]) == 2


def test_corrupt_video_features_fail_that_video_only(dataset, capsys):
    (dataset / "cache" / "features-abc" / "v6.npz").write_bytes(b"garbage")
    assert run(dataset, "--allow-failed") == 0
    with np.load(dataset / "fv.npz") as z:
        assert "v6" not in z["video_ids"].tolist() and len(z["video_ids"]) == 6
    assert "v6" in capsys.readouterr().err


# ------------------------------------------------------------------------------------------------ other layouts
def test_features_of_other_extractor_options_encode_with_their_layout(tmp_path):
    """Features extracted with L = 9 and 1x1x3 cells: the codebook and vectors follow their layout (read from the
    stamp, or from the files' info_json when the stamp has no extractor options)."""
    from conftest import write_tiny_video
    from idtfv.data.manifest import Manifest, VideoEntry
    from idtfv.encoding.params import EncodeParams
    from idtfv.encoding.sampling import features_layout
    from idtfv.encoding.stage import run_encode
    from idtfv.idt import IDTParams
    from idtfv.idt.stage import run_features
    from idtfv.runner import write_stamp

    idt = IDTParams(track_length=9, nxy_cells=1, nt_cells=3)
    rows = [VideoEntry(f"v{i}", write_tiny_video(tmp_path / f"v{i}.avi", frames=16, seed=i, motion=(2, i % 2 + 1)),
                       i % 2, "ab"[i % 2], group=f"g{i}", splits={1: "train" if i < 3 else "test"})
            for i in range(4)]
    man = Manifest(rows, tmp_path)
    features = {"idt": idt.to_dict()}
    result = run_features(rows, features, cache_root=tmp_path / "cache")
    assert not result.failed
    write_stamp(tmp_path / "features.json", result, stage="features", params=features)
    # planted widths (traj 2 x 9; 1x1x3 cells of 8, 9, 8, 8 bins), halved by PCA
    widths = {"traj": 18, "hog": 24, "hof": 27, "mbhx": 24, "mbhy": 24}
    with np.load(result.path("v0")) as z:
        assert {ch: z[ch].shape[1] for ch in widths} == widths
    assert features_layout(result.path("v0")).channel_widths == widths

    params = EncodeParams(k=2, pca_samples=200, gmm_iter=5, pyramid="1x1x1,1x1x2")
    summary = run_encode(man, tmp_path / "features.json", params, split=1, cache=tmp_path / "cache",
                         out=tmp_path / "fv.npz")
    assert summary["k"] == 2 and not summary["failed"]
    expected_dim = 3 * sum(2 * 2 * (w // 2) for w in widths.values())  # cells x channels x [u, v] x K x D/2
    with np.load(tmp_path / "fv.npz") as z:
        F = z["features"]
    assert summary["dim"] == expected_dim and F.shape == (4, expected_dim) and np.isfinite(F).all()
    models, cb = load_codebooks(summary["codebook_dir"])
    assert {ch: pca.n_features_in_ for ch, (pca, _) in models.items()} == widths
    assert cb["layout"] == {"track_length": 9, "nxy_cells": 1, "nt_cells": 3}
    with np.load(result.path("v3")) as z:
        np.testing.assert_array_equal(F[3], encode_arrays(dict(z), models, pyramid="1x1x1,1x1x2"))

    # a stamp without the extractor options: the layout comes from the files themselves; same codebook fit
    write_stamp(tmp_path / "bare.json", result, stage="features", params={})
    again = run_encode(man, tmp_path / "bare.json", params, split=1, cache=tmp_path / "cache2",
                       out=tmp_path / "fv2.npz")
    with np.load(tmp_path / "fv2.npz") as z:
        assert z["features"].tobytes() == F.tobytes()
    assert again["dim"] == expected_dim


def test_encode_item_holds_one_channel_at_a_time(dataset):
    """The encode stage reads a video's channels one by one from its features file: its peak memory is about one
    channel's descriptors (and their centred copy), not all five channels' (a long video's 1.7 KB per trajectory
    in float32), with the vector of the whole-arrays path bit for bit."""
    import tracemalloc
    import types

    from idtfv.encoding.stage import encode_item

    assert run(dataset) == 0
    cb_dir = next((dataset / "cache").glob("codebook-*"))
    models, summary = load_codebooks(cb_dir)
    n = 40_000
    arrays = make_video(np.random.default_rng(5), 1, n)
    feat_dir = dataset / "long"
    feat_dir.mkdir()
    np.savez(feat_dir / "long.npz", **arrays)
    all_channels = sum(arrays[ch].nbytes for ch in CHANNELS)  # 1704 bytes per trajectory
    params = {"features_dir": str(feat_dir), "codebook_dir": str(cb_dir), "pyramid": "1x1x1"}
    entry = types.SimpleNamespace(video_id="long")
    encode_item(entry, params)  # warm-up: imports, kernels
    tracemalloc.start()
    try:
        out = encode_item(entry, params)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert int(out["n_descriptors"]) == n
    np.testing.assert_array_equal(out["features"], encode_arrays(arrays, models, method=summary["method"]))
    # one channel (hof: 108 floats, centred in place) and its projection are ~0.4 of all_channels; the
    # whole-arrays path held all_channels plus a centred copy and the projection (~1.4 x all_channels)
    assert peak < 0.55 * all_channels, (peak, all_channels)
    # the caller's arrays are not touched without consume=True
    before = arrays["hog"].copy()
    encode_arrays(arrays, models, method=summary["method"])
    assert np.array_equal(arrays["hog"], before)
