"""Temporal action detection: window Fisher vectors from prefix sums, temporal NMS, THUMOS'14 AP, end to end.

References: window vectors are compared with :func:`fisher_vectors_cells` run directly on the window's own
trajectories (an independent path: no prefix sums); NMS and AP with hand-made cases worked out in the comments;
the end-to-end test plants action intervals in synthetic untrimmed videos and requires they be found.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from idtfv.classify.detect import (Detection, DetectParams, average_precision, detection_map, read_detections,
                                   read_intervals, temporal_iou, temporal_nms, window_grid, write_detections)
from idtfv.encoding.fisher import fisher_vectors_cells
from idtfv.encoding.pyramid import parse_pyramid
from idtfv.encoding.temporal import TemporalFisher, encode_windows, score_windows, time_bins
from idtfv.errors import FormatError, ParameterError


def _gmm(rng, K=8, D=6, offset=40.0):
    means = rng.normal(0, 2, (K, D)) + offset  # far from the origin: the mu^2 / sigma^2 cancellation case
    return means, rng.uniform(0.5, 2, (K, D)), rng.dirichlet(np.ones(K))


def _direct(X, gmm, bins, pos, grids, a, b, **kw):
    """The window's vector the slow way: its trajectories, cells with the window's temporal split."""
    sel = (bins >= a) & (bins < b)
    L, cells, off = b - a, [], 0
    for nx, ny, nt in grids:
        ix = np.clip(np.floor(pos[sel, 0] * nx), 0, nx - 1).astype(int)
        iy = np.clip(np.floor(pos[sel, 1] * ny), 0, ny - 1).astype(int)
        it = np.zeros(int(sel.sum()), int)
        for t in range(nt):
            it[(bins[sel] >= a + (t * L) // nt) & (bins[sel] < a + ((t + 1) * L) // nt)] = t
        cells.append(off + (it * ny + iy) * nx + ix)
        off += nx * ny * nt
    c = np.stack(cells, 1) if sel.any() else np.zeros((0, len(grids)), int)
    return fisher_vectors_cells(X[sel], gmm, c, off, **kw)


@pytest.mark.parametrize("pyramid", ["1x1x1", "1x1x1,1x2x1,2x1x2"])
@pytest.mark.parametrize("improved", [True, False])
def test_window_fisher_vectors_equal_direct_encoding(pyramid, improved):
    rng = np.random.default_rng(3)
    gmm = _gmm(rng)
    N = 2500
    X = (gmm[0][rng.integers(8, size=N)] + rng.normal(0, 1, (N, 6))).astype(np.float32)
    bins = rng.integers(0, 50, N)
    bins[:40] = 7  # a crowded bin
    pos = rng.uniform(0, 1, (N, 3))
    tf = TemporalFisher(X, gmm, bins, 50, pyramid=pyramid, positions=pos)
    starts = np.array([0, 0, 3, 7, 10, 20, 49, 5, 33])
    ends = np.array([50, 1, 9, 8, 11, 45, 50, 5, 41])  # whole video, single bins, an empty window (5, 5)
    F = tf.windows(starts, ends, improved=improved)
    grids = parse_pyramid(pyramid)
    for j, (a, b) in enumerate(zip(starts, ends)):
        R = _direct(X, gmm, bins, pos, grids, a, b, improved=improved)
        scale = max(1.0, float(np.abs(R).max()))
        np.testing.assert_allclose(F[j], R, rtol=0, atol=1e-5 * scale, err_msg=f"window [{a}, {b})")
    assert not F[7].any()  # the empty window is all zeros, as an empty video's vector


def test_descriptors_outside_the_bins_are_left_out():
    rng = np.random.default_rng(4)
    gmm = _gmm(rng, offset=0.0)
    X = rng.normal(0, 1, (300, 6)).astype(np.float32)
    bins = rng.integers(-3, 13, 300)
    F = TemporalFisher(X, gmm, bins, 10).windows([0], [10])
    inside = (bins >= 0) & (bins < 10)
    np.testing.assert_allclose(F[0, 0], fisher_vectors_cells(X[inside], gmm)[0], atol=1e-6)


class _PCA:
    """Identity 'PCA' with the attributes encode_arrays and the window encoders read."""

    def __init__(self, d):
        self.n_features_in_ = d
        self.components_ = np.eye(d)

    def transform(self, X):
        return np.asarray(X, np.float32)


class _GMM:
    def __init__(self, means, variances, weights):
        from idtfv.encoding._gaussians import PreparedGMM

        self.means_ = means.astype(np.float32)
        self.prepared_ = PreparedGMM.from_params(means, variances, weights)


def _video(rng, n=1200, frames=120):
    meta = np.zeros((n, 10), np.float32)
    meta[:, 0] = rng.integers(0, frames, n)
    meta[:, 7:10] = rng.uniform(0, 1, (n, 3))
    arrays = {"meta": meta, "traj": rng.normal(0, 1, (n, 4)).astype(np.float32),
              "hog": rng.normal(1, 2, (n, 5)).astype(np.float32)}
    models = {ch: (_PCA(d), _GMM(*_gmm(rng, K=4, D=d, offset=0.0))) for ch, d in (("traj", 4), ("hog", 5))}
    return arrays, models


def test_whole_video_window_is_the_encode_stage_vector_and_scores_are_linear():
    from idtfv.encoding.stage import encode_arrays

    rng = np.random.default_rng(5)
    arrays, models = _video(rng)
    bf, n_bins = 6, 20  # 120 frames
    full = encode_windows(arrays, models, [0], [n_bins], bin_frames=bf, n_bins=n_bins)
    np.testing.assert_allclose(full[0], encode_arrays(arrays, models), atol=1e-6)
    starts, ends = window_grid(n_bins, [4, 8], [1, 2])
    V = encode_windows(arrays, models, starts, ends, bin_frames=bf, n_bins=n_bins, pyramid="1x1x1,1x2x1")
    coef = rng.normal(0, 1, (3, V.shape[1]))
    b = rng.normal(0, 1, 3)
    S = score_windows(arrays, models, starts, ends, coef, b, bin_frames=bf, n_bins=n_bins, pyramid="1x1x1,1x2x1",
                      block=7)
    np.testing.assert_allclose(S, V.astype(np.float64) @ coef.T + b, atol=1e-9)
    with pytest.raises(ParameterError, match="coef"):
        score_windows(arrays, models, starts, ends, coef[:, 1:], b, bin_frames=bf, n_bins=n_bins)


def test_windows_read_one_channel_at_a_time():
    """score_windows (idtfv detect) reads each channel when it scores it: given an archive-like mapping that hands
    out fresh arrays, no two channels are alive at once; the scores are those of the dict of arrays."""
    import weakref
    from collections.abc import Mapping

    rng = np.random.default_rng(6)
    arrays, models = _video(rng)
    arrays["mbhx"] = rng.normal(0, 1, (1200, 3)).astype(np.float32)
    models["mbhx"] = (_PCA(3), _GMM(*_gmm(rng, K=4, D=3, offset=0.0)))
    alive, most = set(), [0]

    class Archive(Mapping):  # as idtfv.cache.NpzArchive: every read is a new array
        def __getitem__(self, name):
            a = arrays[name].copy()
            if name != "meta":
                alive.add(name)
                weakref.finalize(a, alive.discard, name)
                most[0] = max(most[0], len(alive))
            return a

        def __iter__(self):
            return iter(arrays)

        def __len__(self):
            return len(arrays)

        def __contains__(self, name):  # by name, as NpzArchive (Mapping's would read the array)
            return name in arrays

    starts, ends = window_grid(20, [4, 8], [1, 2])
    coef = rng.normal(0, 1, (2, 3 * 2 * 4 * sum(d for d in (4, 5, 3))))
    got = score_windows(Archive(), models, starts, ends, coef, np.zeros(2), bin_frames=6, n_bins=20,
                        pyramid="1x1x1,1x2x1")
    want = score_windows(arrays, models, starts, ends, coef, np.zeros(2), bin_frames=6, n_bins=20,
                         pyramid="1x1x1,1x2x1")
    assert np.array_equal(got, want) and most[0] == 1, most
    reads = []
    Archive.__getitem__ = (lambda self, name, _get=Archive.__getitem__: reads.append(name) or _get(self, name))
    score_windows(Archive(), models, starts, ends, coef, np.zeros(2), bin_frames=6, n_bins=20,
                  pyramid="1x1x1,1x2x1")
    assert sorted(reads) == sorted(["meta", *models]), reads  # each read once (the check and the use: one read)


def test_detect_reads_a_videos_channels_one_at_a_time(tmp_path, monkeypatch):
    """idtfv detect hands score_windows the open features file, not a dict of every channel: while a channel is
    read, no other channel's array is alive (a long video's five channels were in memory together)."""
    import weakref

    from idtfv.cache import NpzArchive
    from idtfv.classify.svm import LinearSVM
    from idtfv.cli import main
    from idtfv.encoding import DescriptorPCA, DiagGMM
    from idtfv.encoding.stage import save_codebooks

    rng = np.random.default_rng(2)
    models = {}
    for ch in ("hog", "hof"):
        X = rng.normal(size=(300, 6))
        pca = DescriptorPCA(n_components=3).fit(X)
        models[ch] = (pca, DiagGMM(n_components=2, max_iter=5).fit(pca.transform(X)))
    codebook = save_codebooks(tmp_path / "codebook-000000000000", models,
                              {"method": "fisher", "k": 2, "channels": ["hog", "hof"]}, seed=0)
    svm = tmp_path / "svm"
    svm.mkdir()
    LinearSVM(C=1.0).fit(rng.normal(size=(9, 24)), np.arange(9) % 3).save(
        svm / "model", extra={"class_names": ["walk", "run", "jump"]})
    feats = tmp_path / "feats"
    feats.mkdir()
    n = 400
    meta = np.zeros((n, 10), np.float32)
    meta[:, 0] = np.sort(rng.integers(15, 100, n))
    meta[:, 7:10] = rng.uniform(0, 1, (n, 3))
    np.savez(feats / "u1.npz", meta=meta, hog=rng.normal(size=(n, 6)).astype(np.float32),
             hof=rng.normal(size=(n, 6)).astype(np.float32))
    manifest = tmp_path / "manifest.csv"
    manifest.write_text("video_id,path,label,label_name,group,split1,frames,fps,width,height\n"
                        "u1,u1.avi,0,walk,a,test,100,25.0,160,120\n")
    stamp = tmp_path / "features.json"
    stamp.write_text(json.dumps({"stage": "features", "dir": str(feats), "params": {}, "done": ["u1"],
                                 "failed": {}}))
    alive, most, real = set(), [0], NpzArchive.__getitem__

    def tracked(self, name):
        a = real(self, name)
        if name in models:
            alive.add(name)
            weakref.finalize(a, alive.discard, name)
            most[0] = max(most[0], len(alive))
        return a

    monkeypatch.setattr(NpzArchive, "__getitem__", tracked)
    argv = ["detect", "--manifest", manifest, "--features", stamp, "--codebook", codebook, "--svm", svm,
            "--out", tmp_path / "out"]
    assert main([str(a) for a in argv]) == 0
    assert most[0] == 1 and (tmp_path / "out" / "detections.csv").read_text().count("\n") > 1


def test_time_bins_follow_the_end_frame_rule():
    meta = np.zeros((4, 10))
    meta[:, 0] = [0, 5, 6, 13]
    assert time_bins(meta, 6).tolist() == [0, 0, 1, 2]
    with pytest.raises(ParameterError, match="bin_frames"):
        time_bins(meta, 0)


# ------------------------------------------------------------------------------------------------ windows, NMS
def test_window_grid_and_params():
    s, e = window_grid(10, [4, 8], [2, 4])
    assert list(zip(s.tolist(), e.tolist())) == [(0, 4), (2, 6), (4, 8), (6, 10), (0, 8)]
    s, e = window_grid(3, [4], [1])  # nothing fits: the whole video
    assert (s.tolist(), e.tolist()) == ([0], [3])
    p = DetectParams(window_seconds=[8, 1, 2, 2])
    assert p.window_seconds == (1.0, 2.0, 8.0) and p.bin_frames(25) == 6 and p.bin_frames(1) == 1
    for bad in ({"window_seconds": []}, {"window_seconds": [0, 1]}, {"stride_fraction": 0},
                {"nms_iou": 1.0}, {"max_per_class": 0}):
        with pytest.raises(ParameterError):
            DetectParams(**bad)
    with pytest.raises(TypeError):
        DetectParams((1, 2))  # keyword-only


def test_temporal_iou_and_nms_on_a_hand_made_case():
    assert temporal_iou([[0, 2]], [[1, 3], [2, 4], [0, 2]]).tolist() == [[1 / 3, 0.0, 1.0]]
    seg = np.array([[0, 4], [1, 5], [6, 8], [0.5, 4.5], [7, 9], [20, 21]], float)
    sc = np.array([0.9, 0.8, 0.7, 0.95, 0.7, -1.0])
    # 3 (0.95) kept; 0 overlaps it 3.5/4.5 = 0.78, 1 overlaps 3.5/4.5: dropped; 2 kept (ties: earlier first);
    # 4 overlaps 2 by 1/3 > 0.3: dropped; 5 kept
    assert temporal_nms(seg, sc, 0.3).tolist() == [3, 2, 5]
    assert temporal_nms(seg, sc, 0.4).tolist() == [3, 2, 4, 5]  # 1/3 <= 0.4: 4 survives
    assert temporal_nms(seg, sc, 0.3, max_keep=2).tolist() == [3, 2]


def test_thumos_average_precision_on_a_hand_made_case():
    truth = {"v1": np.array([[0.0, 10.0], [20.0, 30.0]]), "v2": np.array([[5.0, 9.0]])}
    dets = [Detection("v1", "a", 0, 10, 0.9),    # TP (IoU 1): precision 1/1
            Detection("v1", "a", 1, 10, 0.8),    # same GT already matched: FP
            Detection("v2", "a", 5, 9, 0.7),     # TP: precision 2/3
            Detection("v3", "a", 0, 5, 0.6),     # video without this class: FP
            Detection("v1", "a", 22, 40, 0.5)]   # IoU 8/20 = 0.4 with [20, 30]
    # IoU 0.5: the last one is FP -> AP = (1 + 2/3) / 3
    assert average_precision(dets, truth, 0.5) == pytest.approx((1 + 2 / 3) / 3)
    # IoU 0.4: it is a TP at rank 5 -> + 3/5
    assert average_precision(dets, truth, 0.4) == pytest.approx((1 + 2 / 3 + 3 / 5) / 3)
    assert average_precision(dets, {}, 0.5) is None
    # the highest-IoU unmatched interval is matched: [0, 12] overlaps GT [0, 10] (10/12) more than [2, 12] ...
    t2 = {"v": np.array([[2.0, 12.0], [0.0, 10.0]])}
    d2 = [Detection("v", "a", 0, 10, 1.0), Detection("v", "a", 2, 12, 0.5)]
    assert average_precision(d2, t2, 0.5) == pytest.approx(1.0)
    report = detection_map(dets + [Detection("v1", "b", 0, 1, 1.0)],
                           [Detection("v1", "a", 0, 10, 0), Detection("v1", "a", 20, 30, 0),
                            Detection("v2", "a", 5, 9, 0), Detection("v1", "b", 50, 60, 0)],
                           class_names=["a", "b", "c"])
    assert report["per_class"]["b"]["0.1"] == 0.0 and report["per_class"]["c"]["0.5"] is None
    assert report["mAP"]["0.5"] == pytest.approx(((1 + 2 / 3) / 3 + 0.0) / 2)
    assert report["n_videos"] == 2 and report["n_detections"] == 5  # v3 has no ground truth: left out


def test_detection_files_round_trip_and_bad_input(tmp_path):
    dets = [Detection("v1", "walk", 1.25, 3.5, 0.123456789), Detection("v2", "run", 0, 8, -2.0)]
    p = write_detections(tmp_path / "d.csv", dets)
    back = read_detections(p)
    assert [(d.video_id, d.label, d.start, d.end) for d in back] == [("v1", "walk", 1.25, 3.5), ("v2", "run", 0, 8)]
    assert back[0].score == pytest.approx(0.123457)
    gt = tmp_path / "gt.csv"
    gt.write_text("video_id,class,start,end\nv1,walk,1,oops\n")
    with pytest.raises(FormatError, match=r"gt\.csv.*line 2.*numbers"):
        read_intervals(gt)
    gt.write_text("video_id,class,start,end\nv1,walk,3,1\n")
    with pytest.raises(FormatError, match="start < end"):
        read_intervals(gt)
    gt.write_text("video,label\n")
    with pytest.raises(FormatError, match="header"):
        read_intervals(gt)
    det = tmp_path / "det.csv"  # a NaN score was reported as 'expected 0 <= start < end, got start 1, end 3.5'
    det.write_text("video_id,class,start,end,score\nv1,walk,1,3.5,nan\n")
    with pytest.raises(FormatError, match="line 2: score must be a finite number, got nan"):
        read_detections(det)


# ------------------------------------------------------------------------------------------------ end to end
@pytest.mark.slow
def test_detect_finds_the_planted_intervals_of_the_untrimmed_set(tmp_path, capsys):
    """Train on trimmed default clips of 4 classes, detect in 2 untrimmed videos of unseen actors."""
    from idtfv import cli
    from idtfv.data.synthetic import generate_dataset
    from idtfv.data.untrimmed import generate_untrimmed

    trimmed = generate_dataset(tmp_path / "trimmed", n_classes=4, n_actors=6, n_frames=40)
    untrimmed = generate_untrimmed(tmp_path / "untrimmed", n_videos=2, n_classes=4, actors=(4, 5),
                                   actions_per_video=2, action_seconds=(2.0, 3.0), gap_seconds=(1.5, 2.5))
    c = tmp_path / "cache"
    run = lambda *argv: cli.main([str(a) for a in argv])  # noqa: E731
    assert run("features", "--manifest", trimmed, "--cache", c, "--out", c / "f.json", "--jobs", 2) == 0
    assert run("features", "--manifest", untrimmed, "--cache", c, "--out", c / "fu.json", "--jobs", 2) == 0
    assert run("encode", "--manifest", trimmed, "--features", c / "f.json", "--cache", c, "--out", c / "fv.npz",
               "--k", 16, "--jobs", 2) == 0
    assert run("train-svm", "--manifest", trimmed, "--features", c / "fv.npz", "--out", c / "svm") == 0
    # the encode output names its codebook: a second, newer codebook of the same features must not be picked
    record = json.loads((c / "fv.json").read_text())
    # and the SVM says which codebook made its training vectors (detect checks the one it encodes with)
    model_meta = json.loads((c / "svm" / "model.json").read_text())
    assert (model_meta["codebook"], model_meta["codebook_sha256"]) == (record["codebook"], record["codebook_sha256"])
    codebook = c / record["codebook"]
    assert record["cache"] == "." and codebook.is_dir() and record["pyramid"] == "1x1x1"
    assert run("encode", "--manifest", trimmed, "--features", c / "f.json", "--cache", c, "--out", c / "fv8.npz",
               "--k", 8, "--jobs", 2) == 0
    assert json.loads((c / "fv8.json").read_text())["codebook"] != record["codebook"]
    out = tmp_path / "det"
    argv = ["detect", "--manifest", untrimmed, "--features", c / "fu.json", "--vectors", c / "fv.npz",
            "--svm", c / "svm", "--annotations", untrimmed.parent / "annotations.csv", "--out", out]
    assert run(*argv) == 0
    report = json.loads((out / "report.json").read_text())
    first = (out / "detections.csv").read_bytes()
    assert report["n_ground_truth"] == 4 and report["n_videos"] == 2 and report["codebook"] == codebook.name
    # planted truth: 4 intervals of 2-3 s among 4 classes; chance level is far below these
    assert report["mAP"]["0.1"] >= 0.5, report
    assert report["average_mAP"] >= 0.3, report
    lo, hi = report["average_mAP_ci"]
    # the report rounds the bounds to 10 decimals (the estimate is not): a bound may sit on it, rounded
    assert lo - 1e-10 <= report["average_mAP"] <= hi + 1e-10
    assert "detect: detection mAP at temporal IoU" in capsys.readouterr().out
    assert run(*argv) == 0 and (out / "detections.csv").read_bytes() == first  # deterministic
    # the same figures from idtfv evaluate --detections (one metric)
    assert run("evaluate", "--detections", out / "detections.csv", "--annotations",
               untrimmed.parent / "annotations.csv", "--manifest", untrimmed, "--out", tmp_path / "ev") == 0
    again = json.loads((tmp_path / "ev" / "report.json").read_text())
    # (the CSV rounds times to 1 ms and scores to 1e-6: the same ranking and matches here)
    assert again["mAP"] == pytest.approx(report["mAP"], abs=1e-9) and again["n_ground_truth"] == 4
    # --codebook with the same directory gives the same detections
    argv2 = [a if a != "--vectors" else "--codebook" for a in argv]
    argv2[argv2.index("--codebook") + 1] = codebook
    argv2[argv2.index("--out") + 1] = tmp_path / "det2"
    assert run(*argv2) == 0 and (tmp_path / "det2" / "detections.csv").read_bytes() == first
    # bad input: one error line, exit 2
    argv[argv.index("--annotations") + 1] = untrimmed
    assert run(*argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error:") and "manifest.csv" in err[0]


def test_encode_record_names_the_codebook_and_catches_a_changed_one(tmp_path):
    """The record beside an encode output: codebook relative to the cache, content hash checked on reading; the
    pair (vectors, cache) can move together."""
    from idtfv.encoding import read_encode_record
    from idtfv.encoding.record import codebook_sha256, write_encode_record

    cache = tmp_path / "cache"
    cb = cache / "codebook-0123456789ab"
    cb.mkdir(parents=True)
    (cb / "codebook.json").write_text('{"method": "fisher"}\n')
    (cb / "gmm_hog.npz").write_bytes(b"weights")
    (cb / ".lock").write_text("")  # not content
    vectors = tmp_path / "out" / "fv.npz"
    vectors.parent.mkdir()
    vectors.write_bytes(b"vectors")
    path = write_encode_record(vectors, cb, cache, method="fisher", pyramid="1x1x1,1x3x1", split=2)
    assert path == tmp_path / "out" / "fv.json"
    rec = json.loads(path.read_text())
    assert rec["cache"] == "../cache" and rec["codebook"] == "codebook-0123456789ab" and rec["split"] == 2
    import hashlib
    naive = hashlib.sha256(b"codebook.json\0" + b'{"method": "fisher"}\n' + b"\0" + b"gmm_hog.npz\0weights\0")
    assert rec["codebook_sha256"] == codebook_sha256(cb) == naive.hexdigest()
    assert read_encode_record(vectors)["codebook_dir"] == str(cb.resolve())
    moved = tmp_path / "moved"
    moved.mkdir()
    (tmp_path / "out").rename(moved / "out")
    cache.rename(moved / "cache")
    assert read_encode_record(moved / "out" / "fv.npz")["codebook_dir"] == str((moved / "cache" / cb.name).resolve())
    (moved / "cache" / cb.name / "gmm_hog.npz").write_bytes(b"refitted")
    with pytest.raises(FormatError, match="changed since these vectors were encoded"):
        read_encode_record(moved / "out" / "fv.npz")
    with pytest.raises(FormatError, match="no encode record"):
        read_encode_record(tmp_path / "nothing.npz")


# ------------------------------------------------------------------------------------------------ bad input, fast
@pytest.fixture
def tiny_detect_inputs(tmp_path):
    """A one-video manifest, a features stamp, a Fisher codebook of one channel (hog, PCA 3, K=2: 12 dims per
    video) and a 3-class SVM on those 12 dims: everything ``idtfv detect`` checks before its first video."""
    from idtfv.classify.svm import LinearSVM
    from idtfv.encoding import DescriptorPCA, DiagGMM
    from idtfv.encoding.stage import save_codebooks

    rng = np.random.default_rng(0)
    X = rng.normal(size=(200, 6))
    pca = DescriptorPCA(n_components=3).fit(X)
    gmm = DiagGMM(n_components=2, max_iter=5).fit(pca.transform(X))
    codebook = save_codebooks(tmp_path / "codebook-000000000000", {"hog": (pca, gmm)},
                              {"method": "fisher", "k": 2, "channels": ["hog"]}, seed=0)
    Y = rng.normal(size=(9, 12))
    svm = tmp_path / "svm"
    svm.mkdir()
    LinearSVM(C=1.0).fit(Y, np.arange(9) % 3).save(svm / "model", extra={"class_names": ["walk", "run", "jump"]})
    manifest = tmp_path / "manifest.csv"
    manifest.write_text("video_id,path,label,label_name,group,split1,frames,fps,width,height\n"
                        "u1,u1.avi,0,walk,a,test,100,25.0,160,120\n")
    stamp = tmp_path / "features.json"
    stamp.write_text(json.dumps({"stage": "features", "dir": "feats", "params": {}, "done": [], "failed": {}}))
    argv = ["detect", "--manifest", manifest, "--features", stamp, "--codebook", codebook, "--svm", svm,
            "--out", tmp_path / "out"]
    return tmp_path, [str(a) for a in argv]


def _set(argv, option, value):
    argv = list(argv)
    if option in argv:
        argv[argv.index(option) + 1] = str(value)
    else:
        argv += [option, str(value)]
    return argv


def _svm_with_class_names(tmp_path, names):
    import shutil

    other = tmp_path / "svm_edited"
    shutil.copytree(tmp_path / "svm", other)
    meta = json.loads((other / "model.json").read_text())
    meta["class_names"] = names
    (other / "model.json").write_text(json.dumps(meta))
    return other


@pytest.mark.parametrize("case", ["svm-of-other-vectors", "pyramid-of-other-vectors", "class-names-cut",
                                  "svm-missing", "annotations-header-only"])
def test_detect_bad_inputs_are_one_error_line_naming_the_file(tiny_detect_inputs, case, capsys):
    """Each used to be a traceback-free but misleading line (``coef: expected ...`` naming no file, ``No such file
    ... svm.json``, ``<annotations>: ...``) or, for class names cut short in model.json, a run that silently
    dropped classes."""
    from idtfv.classify.svm import LinearSVM
    from idtfv.cli import main

    tmp_path, argv = tiny_detect_inputs
    assert main(_set(argv, "--out", tmp_path / "undamaged")) == 0, capsys.readouterr().err  # the inputs as made
    capsys.readouterr()
    if case == "svm-of-other-vectors":
        other = tmp_path / "svm4"
        other.mkdir()
        rng = np.random.default_rng(1)
        LinearSVM(C=1.0).fit(rng.normal(size=(9, 4)), np.arange(9) % 3).save(
            other / "model", extra={"class_names": ["walk", "run", "jump"]})
        argv, needle = _set(argv, "--svm", other), "svm4/model.npz: an SVM on 4-dimensional vectors"
    elif case == "pyramid-of-other-vectors":
        argv, needle = _set(argv, "--pyramid", "1x1x1,1x2x1"), "svm/model.npz: an SVM on 12-dimensional"
    elif case == "class-names-cut":
        argv, needle = _set(argv, "--svm", _svm_with_class_names(tmp_path, ["walk", "run"])), "model's 3 classes"
    elif case == "svm-missing":
        argv, needle = _set(argv, "--svm", tmp_path / "nosvm"), "--svm " + str(tmp_path / "nosvm") + ": no such"
    else:
        gt = tmp_path / "gt.csv"
        gt.write_text("video_id,class,start,end\n")
        argv, needle = _set(argv, "--annotations", gt), "gt.csv: no ground-truth interval"
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and len(err.strip().splitlines()) == 1, err
    assert needle in err, err
    assert not (tmp_path / "out").exists()


def test_detect_refuses_a_codebook_other_than_the_one_its_svm_was_trained_with(tiny_detect_inputs, capsys):
    """An SVM trained on the vectors of one codebook scores windows encoded with another of the same size (another
    seed, a refit) as readily as with its own: the dimensions agree and the scores mean nothing. train-svm stores
    the content hash of its vectors' codebook in model.json, and detect refuses another codebook in one line."""
    import shutil

    from idtfv.cli import main
    from idtfv.encoding import DescriptorPCA, DiagGMM, codebook_sha256
    from idtfv.encoding.stage import save_codebooks

    tmp_path, argv = tiny_detect_inputs
    own = tmp_path / "codebook-000000000000"
    rng = np.random.default_rng(5)  # another codebook with the same dimensions (hog, PCA 3, K=2)
    X = rng.normal(size=(200, 6))
    pca = DescriptorPCA(n_components=3).fit(X)
    other = save_codebooks(tmp_path / "codebook-111111111111",
                           {"hog": (pca, DiagGMM(n_components=2, max_iter=5).fit(pca.transform(X)))},
                           {"method": "fisher", "k": 2, "channels": ["hog"]}, seed=1)
    assert codebook_sha256(other) != codebook_sha256(own)
    svm = tmp_path / "svm_of_own"
    shutil.copytree(tmp_path / "svm", svm)
    meta = json.loads((svm / "model.json").read_text())
    meta.update(codebook=own.name, codebook_sha256=codebook_sha256(own))  # as train-svm writes it
    (svm / "model.json").write_text(json.dumps(meta))
    assert main(_set(_set(argv, "--svm", svm), "--out", tmp_path / "own")) == 0, capsys.readouterr().err
    capsys.readouterr()
    assert main(_set(_set(_set(argv, "--svm", svm), "--codebook", other), "--out", tmp_path / "other")) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and len(err.strip().splitlines()) == 1, err
    assert f"trained on vectors of codebook {own.name}" in err and str(other) in err, err
    assert not (tmp_path / "other").exists()
    # a model without the record (trained on vectors not made by idtfv encode) is checked by dimension only
    assert main(_set(argv, "--codebook", other)) == 0


def test_detect_reads_annotations_with_a_bom_or_spaced_header(tmp_path):
    """A spreadsheet's "CSV UTF-8" starts with a BOM, which was read into the header ('header is \\ufeffvideo_id,...');
    a header written 'video_id, class, start, end' passed the check but then failed with a KeyError traceback."""
    want = [Detection("v1", "walk", 1.0, 2.5, 0.0), Detection("v2", "run", 0.0, 4.0, 0.0)]
    body = "v1,walk,1,2.5\nv2,run,0,4\n"
    for header in ("\ufeffvideo_id,class,start,end\n", "video_id, class, start, end\n"):
        gt = tmp_path / "gt.csv"
        gt.write_text(header + body, encoding="utf-8")
        assert read_intervals(gt) == want


@pytest.mark.parametrize("sparse", [False, True])
def test_sliding_bin_sums_give_the_whole_arrays_bits(monkeypatch, sparse):
    """TemporalFisher keeps the statistics of the bins still being added to only (they slide along the bins as the
    time-ordered descriptors come), against the same algebra over whole arrays (every cell's sums held to the
    end): the prefix sums and windows bit for bit, with gaps of empty bins, bins outside [0, B), several grids and
    blocks spanning more bins than the buffers start with."""
    from idtfv.encoding import temporal

    rng = np.random.default_rng(11)
    gmm = _gmm(rng, K=8, D=6, offset=0.0)
    N, B = 9000, 400
    X = rng.normal(0, 1, (N, 6)).astype(np.float32)
    bins = rng.integers(-3, B + 3, N)
    if sparse:
        bins = np.where(rng.uniform(size=N) < 0.8, bins // 50 * 50, bins)  # crowded bins, long empty runs
    pos = rng.uniform(0, 1, (N, 3))
    starts, ends = np.array([0, 10, 37, 200, 399]), np.array([B, 11, 300, 201, 400])
    got = TemporalFisher(X, gmm, bins, B, pyramid="1x1x1,2x1x2", positions=pos)

    original_init, original_finish = temporal._BinSums.__init__, temporal._BinSums.finish_below

    def whole_init(self, body, counts, g, width):
        original_init(self, body, counts, g, width)
        self._alloc(body.shape[0])  # every cell from the start: nothing slides

    def finish_at_the_end(self, cell):
        if cell == self.body.shape[0]:
            original_finish(self, cell)

    monkeypatch.setattr(temporal._BinSums, "__init__", whole_init)
    monkeypatch.setattr(temporal._BinSums, "finish_below", finish_at_the_end)
    want = TemporalFisher(X, gmm, bins, B, pyramid="1x1x1,2x1x2", positions=pos)
    assert np.array_equal(got.prefix_, want.prefix_) and np.array_equal(got.counts_, want.counts_)
    assert np.array_equal(got.windows(starts, ends), want.windows(starts, ends))
    assert want.counts_[-1].sum() > 0  # not vacuous: data, and in the sparse case runs of empty bins
    assert (np.diff(got.counts_[:, 0]) == 0).any() == sparse


def test_temporal_fisher_memory_is_about_its_prefix_sums():
    """The growing part of a long video's window statistics is the prefix sums alone: tracemalloc's peak is
    within 3x the prefix array (the descriptors' sorted copy included); it held every bin's float64 and float32
    sums as well before (~4.9x)."""
    import tracemalloc

    rng = np.random.default_rng(0)
    K, D, B = 64, 24, 600
    gmm = (rng.normal(size=(K, D)), np.ones((K, D)), np.full(K, 1 / K))
    X = rng.normal(size=(150 * B, D)).astype(np.float32)
    bins = np.sort(rng.integers(0, B, 150 * B))
    TemporalFisher(X[:100], gmm, bins[:100], 10)  # warm-up: kernels
    tracemalloc.start()
    try:
        tf = TemporalFisher(X, gmm, bins, B)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 3 * tf.prefix_.nbytes, (peak, tf.prefix_.nbytes)


def test_score_windows_in_segments_equals_the_whole_video_prefix(monkeypatch):
    """score_windows takes the windows by segment of SEGMENT_BINS start bins, each with its own prefix sums: the
    scores equal those from the whole video's prefix (encode_windows) to float64 rounding, across segment edges
    (windows starting in one segment and ending in the next)."""
    from idtfv.encoding import temporal

    rng = np.random.default_rng(8)
    arrays, models = _video(rng, n=3000, frames=600)
    bf, n_bins = 6, 100
    starts, ends = window_grid(n_bins, [4, 8, 16], [1, 2, 4])
    V = encode_windows(arrays, models, starts, ends, bin_frames=bf, n_bins=n_bins, pyramid="1x1x1,1x2x1")
    coef = rng.normal(0, 1, (3, V.shape[1]))
    b = rng.normal(0, 1, 3)
    want = V.astype(np.float64) @ coef.T + b
    monkeypatch.setattr(temporal, "SEGMENT_BINS", 7)  # 15 segments; most 8- and 16-bin windows cross an edge
    got = score_windows(arrays, models, starts, ends, coef, b, bin_frames=bf, n_bins=n_bins,
                        pyramid="1x1x1,1x2x1", block=5)
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-6 * np.abs(want).max())
    assert ((starts // 7) != ((ends - 1) // 7)).sum() > 50  # not vacuous: windows across segment edges
    with pytest.raises(ParameterError, match="windows must satisfy"):
        score_windows(arrays, models, [5], [101], coef, b, bin_frames=bf, n_bins=n_bins, pyramid="1x1x1,1x2x1")


def test_score_windows_memory_does_not_grow_with_the_video():
    """A 4x longer video (in bins) scores its windows within about the same peak memory: the prefix sums of one
    segment of starts at a time (it held every bin's before: 4x)."""
    import tracemalloc

    rng = np.random.default_rng(9)
    K, D = 64, 16
    gmm = _GMM(*_gmm(rng, K=K, D=D, offset=0.0))
    models = {"hog": (_PCA(D), gmm)}
    peaks = {}
    for n_bins in (3000, 12000):
        n = 2 * n_bins
        meta = np.zeros((n, 10), np.float32)
        meta[:, 0] = np.sort(rng.integers(0, 6 * n_bins, n))
        meta[:, 7:10] = rng.uniform(0, 1, (n, 3))
        arrays = {"meta": meta, "hog": rng.normal(0, 1, (n, D)).astype(np.float32)}
        starts, ends = window_grid(n_bins, [8, 16], [2, 4])
        coef = rng.normal(0, 1, (2, 2 * K * D))
        score_windows(arrays, models, starts[:3], ends[:3], coef, np.zeros(2), bin_frames=6, n_bins=n_bins)
        tracemalloc.start()
        try:
            score_windows(arrays, models, starts, ends, coef, np.zeros(2), bin_frames=6, n_bins=n_bins)
            peaks[n_bins] = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
    assert peaks[12000] < 1.6 * peaks[3000], peaks
