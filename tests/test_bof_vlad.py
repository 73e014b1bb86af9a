"""BoF, VLAD, spatio-temporal pyramid cells and seeded sampling against naive loops."""

from __future__ import annotations

import json

import numpy as np
import pytest
from threadpoolctl import threadpool_limits

from idtfv.encoding.bof import bof_histograms
from idtfv.encoding.kmeans import KMeansCodebook
from idtfv.encoding.pyramid import cell_ids, n_cells, parse_pyramid
from idtfv.encoding.sampling import features_layout, load_training_sample
from idtfv.sampling import keep_sample, sample_rows, split_quota, video_rng
from idtfv.encoding.vlad import vlad_vectors
from idtfv.errors import FormatError, ParameterError
from idtfv.idt import IDTParams


@pytest.fixture(autouse=True)
def _one_blas_thread():
    """One BLAS thread: the results do not depend on it, and on a busy 2-core machine threads only spin."""
    with threadpool_limits(1):
        yield


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    X = (rng.normal(size=(500, 4)) + rng.integers(0, 3, (500, 1)) * 3).astype(np.float32)
    km = KMeansCodebook(6, random_state=0).fit(X)
    return X, km


def test_assignment_is_nearest_centre(data):
    X, km = data
    d = ((X[:, None, :].astype(float) - km.centers_[None]) ** 2).sum(2)
    np.testing.assert_array_equal(km.assign(X), d.argmin(1))


def test_bof_matches_naive_counts(data):
    X, km = data
    a = km.assign(X)
    cells = np.stack([np.zeros(500, int), 1 + (np.arange(500) % 2)], 1)
    H = bof_histograms(X, km, cells, 3)
    for c in range(3):
        rows = (cells == c).any(1)
        ref = np.bincount(a[rows], minlength=6) / rows.sum()
        np.testing.assert_allclose(H[c], ref, atol=1e-7)
    assert np.allclose(H.sum(1), 1)
    assert not bof_histograms(X[:0], km).any()


def test_vlad_matches_naive_residual_sums(data):
    X, km = data
    X = (X[:300] * 1.3 + 0.5).astype(np.float32)  # not the training data: residual sums far from zero
    a = km.assign(X)
    ref = np.zeros((6, 4))
    for i in range(len(X)):
        ref[a[i]] += X[i] - km.centers_[a[i]]
    raw = vlad_vectors(X, km, power=1.0, normalized=False)[0]
    np.testing.assert_allclose(raw, ref.ravel(), rtol=1e-5, atol=1e-4)
    v = vlad_vectors(X, km)[0]
    s = np.sign(ref.ravel()) * np.sqrt(np.abs(ref.ravel()))
    np.testing.assert_allclose(v, s / np.linalg.norm(s), atol=1e-6)
    vi = vlad_vectors(X, km, intra=True, power=1.0)[0].reshape(6, 4)
    r = ref / np.linalg.norm(ref, axis=1, keepdims=True)
    np.testing.assert_allclose(vi, (r / np.linalg.norm(r)), atol=1e-6)


def test_pyramid_cells_match_naive():
    grids = parse_pyramid("1x1x1, 1x3x1,2x2x2")
    assert grids == ((1, 1, 1), (1, 3, 1), (2, 2, 2)) and n_cells(grids) == 12
    rng = np.random.default_rng(1)
    P = rng.uniform(0, 1, (200, 3))
    P[0] = [0.999, 0.999, 0.999]
    P[1] = [1.0, 0.0, -0.1]  # outside [0, 1): clipped into edge cells
    ids = cell_ids(P, grids)
    for i, (x, y, t) in enumerate(P):
        assert ids[i, 0] == 0
        assert ids[i, 1] == 1 + min(int(np.floor(max(y, 0) * 3)), 2)
        ix, iy, it = (min(max(int(np.floor(v * 2)), 0), 1) for v in (x, y, t))
        assert ids[i, 2] == 4 + (it * 2 + iy) * 2 + ix
    for bad in ("1x1", "0x1x1", "", "axbxc"):
        with pytest.raises(ParameterError):
            parse_pyramid(bad)


def test_quota_and_seeded_sampling(tmp_path):
    # even shares (22 each); what the short videos cannot give goes to the long one
    assert split_quota([5, 100, 40, 0], 90).tolist() == [5, 45, 40, 0]
    assert split_quota([10, 10, 10], 7).tolist() == [2, 2, 3]  # the last share takes the rounding remainder
    assert split_quota([3, 4], 100).tolist() == [3, 4]
    a = sample_rows(1000, 10, rng=video_rng(7, "v1"))
    assert a.tolist() == sample_rows(1000, 10, rng=video_rng(7, "v1")).tolist()
    assert a.tolist() != sample_rows(1000, 10, rng=video_rng(7, "v2")).tolist()
    rng = np.random.default_rng(2)
    paths = {}
    full = {}
    for vid, n in (("b", 50), ("a", 30), ("c", 200)):
        arrays = {"meta": rng.random((n, 10), dtype=np.float32)}
        for ch, d in (("hog", 96), ("traj", 30)):
            arrays[ch] = rng.random((n, d), dtype=np.float32)
        full[vid] = arrays
        paths[vid] = tmp_path / f"{vid}.npz"
        if vid == "c":  # streaming: only the kept sample is stored
            np.savez(paths[vid], **keep_sample(arrays, n_keep=100, seed=0, video_id=vid, channels=("hog", "traj")))
        else:
            np.savez(paths[vid], **arrays)
    sample, info = load_training_sample(paths, total=120, seed=0, channels=("hog", "traj"))
    assert info == {"videos": 3, "rows_available": 180, "rows": 120, "from_samples": 1}
    assert sample["hog"].shape == (120, 96) and sample["traj"].shape == (120, 30)
    # every sampled row is a real row of its video, the same row in both channels
    allrows = {tuple(r) for v in full.values() for r in np.hstack([v["hog"], v["traj"]])}
    assert all(tuple(r) in allrows for r in np.hstack([sample["hog"], sample["traj"]]))
    again, _ = load_training_sample(dict(reversed(list(paths.items()))), total=120, seed=0, channels=("hog", "traj"))
    assert again["hog"].tobytes() == sample["hog"].tobytes()


def test_sampling_follows_the_files_layout_and_rejects_a_mixed_stage(tmp_path):
    """The widths come from the files' info_json (the extractor's options), not from constants."""
    rng = np.random.default_rng(5)
    short = {"traj": 18, "hog": 24}  # track_length 9, 1x1x3 cells: 2 x 9, 8 bins x 3 cells
    info = json.dumps({"params": IDTParams(track_length=9, nxy_cells=1).to_dict()})
    paths = {}
    for vid, n in (("a", 40), ("b", 60)):
        arrays = {"meta": rng.random((n, 10), dtype=np.float32), "info_json": np.array(info)}
        arrays.update({ch: rng.random((n, d), dtype=np.float32) for ch, d in short.items()})
        paths[vid] = tmp_path / f"{vid}.npz"
        np.savez(paths[vid], **arrays)
    assert features_layout(paths["a"]).channel_widths["traj"] == 18
    sample, info_ = load_training_sample(paths, total=50, seed=0, channels=("traj", "hog"))
    assert sample["traj"].shape == (50, 18) and sample["hog"].shape == (50, 24) and info_["rows"] == 50
    # a file of the reference layout (no options recorded) in the same stage: named, with both layouts' widths
    np.savez(tmp_path / "c.npz", meta=np.zeros((5, 10), np.float32), traj=np.zeros((5, 30), np.float32),
             hog=np.zeros((5, 96), np.float32))
    with pytest.raises(FormatError, match=r"c\.npz.*'traj' has shape \(5, 30\), expected \(5, 18\)"):
        load_training_sample({**paths, "c": tmp_path / "c.npz"}, total=100, seed=0, channels=("traj", "hog"))
