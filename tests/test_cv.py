"""Evaluation protocols (issue 13): cross-validation folds, per-channel SVMs, validation-chosen fusion weights and the
small-data statistics (counts of correct clips, bootstrap intervals).

The data are synthetic per-video descriptor files laid out like the built-in default dataset (8 classes x 12 actors,
groups a01..a12, split s tests one third of the actors), so every fold runs the real encode stage and SVM quickly.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from threadpoolctl import threadpool_limits

from idtfv.classify import Scores, evaluate, fuse_scores, read_scores, write_features, write_scores
from idtfv.classify.channels import validation_split
from idtfv.classify.cv import CVOptions, make_folds
from idtfv.classify.evaluate import bootstrap_accuracy_ci
from idtfv.classify.fusion import choose_weights, weight_grid
from idtfv.cli import main
from idtfv.data.manifest import read_manifest
from idtfv.errors import ParameterError
from idtfv.idt import DescriptorLayout

CHANNELS = DescriptorLayout().channel_widths
ENCODE = ["--k", "3", "--pca-samples", "1500", "--gmm-iter", "4"]


@pytest.fixture(autouse=True)
def _one_blas_thread():
    with threadpool_limits(1):
        yield


def make_dataset(root: Path, *, n_classes=8, n_actors=12, n=16, signal=0.25, marker=None, seed=0) -> Path:
    """Descriptor files + manifest + features stamp in ``root``; ``marker = (video_id, group)`` adds a video of
    class 0 whose descriptors are all 1e4 (a video that would dominate any PCA or GMM fitted on it)."""
    root = Path(root).absolute()
    rng = np.random.default_rng(seed)
    feat = root / "features-x"
    feat.mkdir(parents=True)
    lines = ["video_id,path,label,label_name,group,split1,split2,split3,frames,fps,width,height"]
    protos = {ch: rng.normal(size=(n_classes, d)) for ch, d in CHANNELS.items()}
    for a in range(n_actors):
        fold = a * 3 // n_actors
        splits = ",".join("test" if fold == 3 - s else "train" for s in (1, 2, 3))
        for c in range(n_classes):
            vid = f"c{c}_a{a + 1:02d}"
            lines.append(f"{vid},videos/{vid}.avi,{c},class_{c},a{a + 1:02d},{splits},,,,")
            meta = np.zeros((n, 10), np.float32)
            meta[:, 7:10] = rng.uniform(0, 0.999, (n, 3))
            arrays = {"meta": meta, "info_json": np.array("{}")}
            for ch, d in CHANNELS.items():
                arrays[ch] = np.abs(rng.normal(size=(n, d)) + signal * protos[ch][c]).astype(np.float32)
            np.savez(feat / f"{vid}.npz", **arrays)
    if marker is not None:
        vid, group = marker
        lines.append(f"{vid},videos/{vid}.avi,0,class_0,{group},,,,,,,")
        arrays = {"meta": np.zeros((n, 10), np.float32), "info_json": np.array("{}")}
        for ch, d in CHANNELS.items():
            arrays[ch] = np.full((n, d), 1e4, np.float32)
        np.savez(feat / f"{vid}.npz", **arrays)
    (root / "manifest.csv").write_text("\n".join(lines) + "\n")
    ids = [line.split(",")[0] for line in lines[1:]]
    (root / "features.json").write_text(json.dumps({"stage": "features", "dir": str(feat), "params": {},
                                                    "done": ids, "failed": {}}))
    return root


def cv(ds: Path, out: str, *extra, cache="cache") -> int:
    return main(["cv", "--manifest", str(ds / "manifest.csv"), "--features", str(ds / "features.json"),
                 "--cache", str(ds / cache), "--out", str(ds / out), *ENCODE, *extra])


def codebook_arrays(cb_dir: Path) -> dict:
    out = {}
    for f in sorted(cb_dir.glob("*.npz")):
        with np.load(f, allow_pickle=False) as z:
            out.update({f"{f.stem}/{k}": z[k] for k in z.files})
    return out


# ----------------------------------------------------------------------------------------------- folds
@pytest.mark.slow  # real encode stage over several folds (15-35 s on 2 cores)
def test_cv_with_folds_split1_reproduces_encode_and_train_svm_on_split1(tmp_path, capsys):
    ds = make_dataset(tmp_path / "ds")
    assert cv(ds, "cv", "--splits", "1") == 0
    # the single-split pipeline, from scratch in its own cache
    assert main(["encode", "--manifest", str(ds / "manifest.csv"), "--features", str(ds / "features.json"),
                 "--split", "1", "--cache", str(ds / "cache_single"), "--out", str(ds / "fv1.npz"), *ENCODE]) == 0
    assert main(["train-svm", "--manifest", str(ds / "manifest.csv"), "--features", str(ds / "fv1.npz"),
                 "--split", "1", "--out", str(ds / "svm1")]) == 0
    with np.load(ds / "fv1.npz") as a, np.load(ds / "cv" / "fold1" / "vectors.npz") as b:
        assert a["video_ids"].tolist() == b["video_ids"].tolist()
        assert a["features"].tobytes() == b["features"].tobytes()  # same codebook seed -> same vectors
    assert (ds / "svm1" / "scores.csv").read_bytes() == (ds / "cv" / "fold1" / "scores.csv").read_bytes()
    single = json.loads((ds / "svm1" / "report.json").read_text())
    pooled = json.loads((ds / "cv" / "report.json").read_text())
    for key in ("accuracy", "mAP", "mean_class_accuracy", "n_correct", "n_videos", "confusion"):
        assert pooled[key] == single[key], key
    assert pooled["folds"][0]["accuracy"] == single["accuracy"] and pooled["protocol"]["folds"] == [1]
    assert 0.2 < single["accuracy"] < 1  # a figure that can move, not a saturated one
    # the same codebook directory name: cv and idtfv encode share the cache key
    assert pooled["folds"][0]["codebook"] == next((ds / "cache_single").glob("codebook-*")).name
    # per-channel figures are reported beside the combination, which stays the concatenation by default
    ch = pooled["folds"][0]["channels"]
    assert list(ch) == [*CHANNELS, "concat", "late"] and ch["concat"]["n_correct"] == single["n_correct"]
    # train-svm found the codebook in encode's record (no --codebook): the same per-channel figures as the fold's
    assert single["channels"] == ch
    assert main(["train-svm", "--manifest", str(ds / "manifest.csv"), "--features", str(ds / "fv1.npz"),
                 "--split", "1", "--out", str(ds / "svm1_concat"), "--no-channels"]) == 0
    concat_only = json.loads((ds / "svm1_concat" / "report.json").read_text())
    assert "channels" not in concat_only and concat_only["accuracy"] == single["accuracy"]
    assert (ds / "svm1_concat" / "scores.csv").read_bytes() == (ds / "svm1" / "scores.csv").read_bytes()
    conf = json.loads((ds / "cv" / "confusion.json").read_text())
    assert conf["confusion"] == single["confusion"] and (ds / "cv" / "confusion.png").stat().st_size > 0
    printed = capsys.readouterr().out
    assert f"({single['n_correct']}/32)" in printed and "95% CI" in printed


@pytest.mark.slow  # real encode stage over several folds (15-35 s on 2 cores)
def test_three_splits_pooled_report_is_the_mean_over_folds(tmp_path):
    ds = make_dataset(tmp_path / "ds", n_actors=6, n_classes=4)
    assert cv(ds, "cv") == 0
    rep = json.loads((ds / "cv" / "report.json").read_text())
    folds = rep["folds"]
    assert [f["fold"] for f in folds] == [1, 2, 3]
    accs = [json.loads((ds / "cv" / f"fold{f}" / "report.json").read_text())["accuracy"] for f in (1, 2, 3)]
    maps = [json.loads((ds / "cv" / f"fold{f}" / "report.json").read_text())["mAP"] for f in (1, 2, 3)]
    assert rep["accuracy"] == pytest.approx(np.mean(accs)) and rep["accuracy_std"] == pytest.approx(np.std(accs))
    assert rep["mAP"] == pytest.approx(np.mean(maps)) and rep["mAP_std"] == pytest.approx(np.std(maps))
    conf = np.zeros((4, 4), int)
    for f in (1, 2, 3):
        conf += np.array(json.loads((ds / "cv" / f"fold{f}" / "report.json").read_text())["confusion"])
    assert rep["confusion"] == conf.tolist() and conf.sum() == 24  # every video tested exactly once
    # each fold is the single-split pipeline on that split: idtfv encode + train-svm give the same scores bytes
    for f in (1, 2, 3):
        assert main(["encode", "--manifest", str(ds / "manifest.csv"), "--features", str(ds / "features.json"),
                     "--split", str(f), "--cache", str(ds / "cache_single"), "--out", str(ds / f"fv{f}.npz"),
                     *ENCODE]) == 0
        assert main(["train-svm", "--manifest", str(ds / "manifest.csv"), "--features", str(ds / f"fv{f}.npz"),
                     "--split", str(f), "--out", str(ds / f"svm{f}")]) == 0
        assert (ds / f"svm{f}" / "scores.csv").read_bytes() == (ds / "cv" / f"fold{f}" / "scores.csv").read_bytes()
        single = json.loads((ds / f"svm{f}" / "report.json").read_text())
        assert single["accuracy"] == accs[f - 1] and folds[f - 1]["codebook"] == json.loads(
            (ds / f"fv{f}.json").read_text())["codebook"]
    # a rerun reuses the cached codebooks and vectors and gives the same bytes
    first = (ds / "cv" / "report.json").read_bytes()
    assert cv(ds, "cv") == 0 and (ds / "cv" / "report.json").read_bytes() == first


@pytest.mark.slow  # real encode stage over several folds (15-35 s on 2 cores)
def test_the_codebook_of_a_fold_never_sees_its_test_videos(tmp_path):
    """A marker video (descriptors 1e4) in actor a05's group: PCA and GMM of the fold that tests a05 are the same
    bytes with and without it; the folds that train on it are visibly changed (the check can fail)."""
    args = ("--scheme", "kfold", "--n-folds", "3")
    plain = make_dataset(tmp_path / "plain", n_actors=6, n_classes=4)
    marked = make_dataset(tmp_path / "marked", n_actors=6, n_classes=4, marker=("marker", "a05"))
    assert cv(plain, "cv", *args) == 0 and cv(marked, "cv", *args) == 0
    rep_p = json.loads((plain / "cv" / "report.json").read_text())
    rep_m = json.loads((marked / "cv" / "report.json").read_text())
    test_fold = [f["fold"] for f in rep_m["folds"] if "a05" in f["test_groups"]]
    assert len(test_fold) == 1
    for fp, fm in zip(rep_p["folds"], rep_m["folds"]):
        assert fp["test_groups"] == fm["test_groups"]  # the same folds: the marker joins an existing group
        a = codebook_arrays(plain / "cache" / fp["codebook"])
        b = codebook_arrays(marked / "cache" / fm["codebook"])
        assert a.keys() == b.keys()
        if fm["fold"] == test_fold[0]:
            assert fm["n_test"] == fp["n_test"] + 1
            for k in a:
                assert a[k].tobytes() == b[k].tobytes(), k
        else:
            assert np.abs(b["pca_hog/mean"] - a["pca_hog/mean"]).max() > 1.0


def test_make_folds_keep_groups_whole_and_test_every_video_once(tmp_path):
    ds = make_dataset(tmp_path / "ds", n_actors=6, n_classes=2, n=4)
    man = read_manifest(ds / "manifest.csv")
    for options, n in ((CVOptions(scheme="logo"), 6), (CVOptions(scheme="kfold", n_folds=4, seed=3), 4)):
        fm, folds, groups = make_folds(man, options)
        assert folds == list(range(1, n + 1)) and sum(len(g) for g in groups) == 6
        tested = {}
        for f in folds:
            test = fm.split(f, "test")
            train_groups = {e.group for e in fm.split(f, "train")}
            assert {e.group for e in test}.isdisjoint(train_groups) and sorted({e.group for e in test}) == groups[f - 1]
            for e in test:
                tested[e.video_id] = tested.get(e.video_id, 0) + 1
        assert tested == {e.video_id: 1 for e in man.rows}
    again = make_folds(man, CVOptions(scheme="kfold", n_folds=4, seed=3))[2]
    assert again == make_folds(man, CVOptions(scheme="kfold", n_folds=4, seed=3))[2]
    with pytest.raises(ParameterError, match="7 folds need at least 7 groups"):
        make_folds(man, CVOptions(scheme="kfold", n_folds=7))
    with pytest.raises(ParameterError, match="CVOptions.scheme"):
        CVOptions(scheme="loso")


def test_cv_bad_input_is_one_line_and_exit_2(tmp_path, capsys):
    ds = make_dataset(tmp_path / "ds", n_actors=3, n_classes=2, n=4)
    assert cv(ds, "cv", "--scheme", "kfold", "--n-folds", "9") == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error:") and "9 folds need at least 9 groups" in err[0]
    assert cv(ds, "cv", "--splits", "4") == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "split 4 does not exist" in err[0] and "manifest.csv" in err[0]


# ----------------------------------------------------------------------------------------------- channels

def test_per_channel_svms_equal_train_svm_on_each_channels_columns(tmp_path):
    ds = make_dataset(tmp_path / "ds", n_actors=6, n_classes=4)
    assert cv(ds, "cv", "--splits", "1") == 0
    rep = json.loads((ds / "cv" / "fold1" / "report.json").read_text())
    with np.load(ds / "cv" / "fold1" / "vectors.npz") as z:
        ids, F, labels = z["video_ids"].tolist(), z["features"], z["labels"]
    # channel c's columns: 2 K (d/2) per channel, in the layout's order (K=3, one pyramid cell)
    start, channel_scores = 0, []
    for ch, d in CHANNELS.items():
        width = 2 * 3 * (d // 2)
        write_features(ds / f"{ch}.npz", ids, F[:, start:start + width], labels)
        start += width
        assert main(["train-svm", "--manifest", str(ds / "manifest.csv"), "--features", str(ds / f"{ch}.npz"),
                     "--split", "1", "--out", str(ds / f"svm_{ch}")]) == 0
        own = json.loads((ds / f"svm_{ch}" / "report.json").read_text())
        assert rep["channels"][ch]["accuracy"] == own["accuracy"] and rep["channels"][ch]["mAP"] == own["mAP"]
        channel_scores.append(ds / f"svm_{ch}" / "scores.csv")
    assert start == F.shape[1]
    late = evaluate(fuse_scores(channel_scores, normalize="zscore"))
    assert rep["channels"]["late"]["n_correct"] == late["n_correct"]
    assert rep["combination"] == {"chosen": "concat", "rule": "fixed (concat)"}


def test_validate_combination_never_looks_at_the_test_videos(tmp_path):
    ds = make_dataset(tmp_path / "ds", n_actors=6, n_classes=4)
    assert cv(ds, "cv", "--splits", "1", "--combine", "validate") == 0
    rep = json.loads((ds / "cv" / "fold1" / "report.json").read_text())
    comb = rep["combination"]
    assert comb["chosen"] in ("concat", "late") and comb["validation"]["n_videos"] > 0
    # the validation videos are whole training groups of split 1, never a test video
    man = read_manifest(ds / "manifest.csv")
    val = read_scores(ds / "cv" / "fold1" / "validation_scores.csv")
    train_groups = {e.group for e in man.split(1, "train")}
    assert {man.by_id[v].group for v in val.video_ids} == set(comb["validation"]["groups"]) <= train_groups
    assert len(val.video_ids) == sum(e.group in comb["validation"]["groups"] for e in man.rows)
    # scrambling the test videos' vectors changes the test figures but neither the choice nor its evidence
    with np.load(ds / "cv" / "fold1" / "vectors.npz") as z:
        ids, F, labels = z["video_ids"].tolist(), z["features"].copy(), z["labels"]
    test = {e.video_id for e in man.split(1, "test")}
    rows = [i for i, v in enumerate(ids) if v in test]
    F[rows] = np.random.default_rng(1).permutation(F[rows])
    write_features(ds / "scrambled.npz", ids, F, labels)
    assert main(["train-svm", "--manifest", str(ds / "manifest.csv"), "--features", str(ds / "scrambled.npz"),
                 "--split", "1", "--out", str(ds / "svm_s"), "--combine", "validate",
                 "--codebook", str(ds / "cache" / rep_codebook(ds))]) == 0
    other = json.loads((ds / "svm_s" / "report.json").read_text())
    assert other["combination"] == comb
    assert (ds / "svm_s" / "validation_scores.csv").read_bytes() == \
        (ds / "cv" / "fold1" / "validation_scores.csv").read_bytes()


def rep_codebook(ds: Path) -> str:
    return json.loads((ds / "cv" / "report.json").read_text())["folds"][0]["codebook"]


def test_validation_split_takes_whole_groups_seeded():
    groups = [f"g{i // 3}" for i in range(30)] + ["", ""]
    a = validation_split(groups, fraction=0.25, seed=0)
    assert (a == validation_split(groups, fraction=0.25, seed=0)).all()
    for g in set(groups) - {""}:
        member = [a[i] for i, x in enumerate(groups) if x == g]
        assert all(member) or not any(member)
    n_groups = 12  # 10 named groups + 2 ungrouped videos, each its own group
    held = len({g for g, v in zip(groups, a) if v and g}) + sum(1 for g, v in zip(groups, a) if v and not g)
    assert held == round(0.25 * n_groups)
    with pytest.raises(ParameterError, match="fraction"):
        validation_split(groups, fraction=1.5)


# ----------------------------------------------------------------------------------------------- fusion weights
def _scores(path, ids, s, labels):
    return write_scores(path, ids, s, ["a", "b", "c"], labels)


def test_fuse_weights_validate_picks_the_best_grid_point_on_validation_only(tmp_path, capsys):
    rng = np.random.default_rng(0)
    n = 60
    y = rng.integers(0, 3, n)
    onehot = np.eye(3)[y]
    good = onehot * 1.0 + rng.normal(0, 0.6, (n, 3))  # informative
    bad = -onehot * 0.8 + rng.normal(0, 0.6, (n, 3))  # misleading: equal weights would hurt
    ids = [f"v{i}" for i in range(n)]
    va, vb = _scores(tmp_path / "va.csv", ids[:40], good[:40], y[:40]), _scores(tmp_path / "vb.csv", ids[:40],
                                                                                 bad[:40], y[:40])
    ta, tb = _scores(tmp_path / "ta.csv", ids[40:], good[40:], y[40:]), _scores(tmp_path / "tb.csv", ids[40:],
                                                                                 bad[40:], y[40:])
    # naive reference: every grid point through fuse_scores + evaluate
    best = max(evaluate(fuse_scores([va, vb], weights=w))["accuracy"] for w in weight_grid(2))
    chosen = choose_weights([va, vb])
    assert chosen["accuracy"] == pytest.approx(best) and chosen["weights"][0] > chosen["weights"][1]
    assert chosen["accuracy"] > chosen["equal_weights_accuracy"]
    assert main(["fuse", "--weights", "validate", "--validation", f"{va},{vb}", str(ta), str(tb),
                 "--out", str(tmp_path / "fused.csv"), "--report", str(tmp_path / "fused.json")]) == 0
    want = fuse_scores([ta, tb], weights=chosen["weights"])
    np.testing.assert_allclose(read_scores(tmp_path / "fused.csv").scores, want.scores, rtol=1e-9)
    assert json.loads((tmp_path / "fused.json").read_text())["fusion"]["weights"] == chosen["weights"]
    # the test scores do not take part: other test files, the same weights
    _scores(tmp_path / "tb.csv", ids[40:], -bad[40:], y[40:])
    assert main(["fuse", "--weights", "validate", "--validation", f"{va},{vb}", str(ta), str(tb),
                 "--out", str(tmp_path / "fused2.csv"), "--report", str(tmp_path / "fused2.json")]) == 0
    assert json.loads((tmp_path / "fused2.json").read_text())["fusion"]["weights"] == chosen["weights"]
    capsys.readouterr()
    assert main(["fuse", "--weights", "validate", str(ta), str(tb), "--out", str(tmp_path / "x.csv")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--validation" in err[0]


def test_train_svm_validation_scores_come_from_held_out_training_groups(tmp_path):
    ds = make_dataset(tmp_path / "ds", n_actors=6, n_classes=4)
    assert cv(ds, "cv", "--splits", "1") == 0
    fv = ds / "cv" / "fold1" / "vectors.npz"
    assert main(["train-svm", "--manifest", str(ds / "manifest.csv"), "--features", str(fv), "--split", "1",
                 "--out", str(ds / "svm"), "--validation", "0.25"]) == 0
    man = read_manifest(ds / "manifest.csv")
    val = read_scores(ds / "svm" / "validation_scores.csv")
    train = {e.video_id for e in man.split(1, "train")}
    assert set(val.video_ids) <= train and len(val.video_ids) == 4  # 1 of the 4 training actors x 4 classes
    # the test scores are still those of the SVM trained on every training video
    assert main(["train-svm", "--manifest", str(ds / "manifest.csv"), "--features", str(fv), "--split", "1",
                 "--out", str(ds / "svm_plain")]) == 0
    assert (ds / "svm" / "scores.csv").read_bytes() == (ds / "svm_plain" / "scores.csv").read_bytes()


# ----------------------------------------------------------------------------------------------- small-data statistics
def test_bootstrap_interval_matches_the_normal_approximation_and_is_seeded():
    hits = np.zeros(400, bool)
    hits[:280] = True  # 70%
    lo, hi = bootstrap_accuracy_ci([hits], n_resamples=4000, seed=0)
    half = 1.96 * math.sqrt(0.7 * 0.3 / 400)
    assert lo == pytest.approx(0.7 - half, abs=0.01) and hi == pytest.approx(0.7 + half, abs=0.01)
    assert (lo, hi) == bootstrap_accuracy_ci([hits], n_resamples=4000, seed=0)
    assert bootstrap_accuracy_ci([np.ones(10, bool)]) == (1.0, 1.0)
    # two splits: the interval of the mean is narrower than either split's own
    lo2, hi2 = bootstrap_accuracy_ci([hits, hits[::-1].copy()], n_resamples=4000, seed=0)
    assert hi2 - lo2 < hi - lo


def test_reports_count_correct_clips_beside_the_accuracy(tmp_path):
    ids = [f"v{i}" for i in range(7)]
    s = np.eye(3)[[0, 1, 2, 0, 1, 2, 0]] + 0.0
    labels = [0, 1, 2, 1, 1, 2, 2]  # 5 of 7 right
    rep = evaluate(Scores(video_ids=ids, scores=s, class_names=["a", "b", "c"], labels=np.array(labels),
                          label_sets=[(x,) for x in labels]))
    assert rep["n_correct"] == 5 and rep["accuracy"] == pytest.approx(5 / 7)
    assert rep["accuracy_ci"][0] <= 5 / 7 <= rep["accuracy_ci"][1] and rep["bootstrap"]["seed"] == 0
    assert rep["splits"][0]["n_correct"] == 5


def test_a_bad_fold_option_is_named_as_the_command_line_option(tmp_path, capsys):
    ds = make_dataset(tmp_path / "d", n_actors=3, n_classes=2, n=4)
    assert cv(ds, "cv", "--scheme", "kfold", "--n-folds", "1") == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["error: --n-folds: expected an integer >= 2, got 1"]
    assert not (ds / "cv").exists()
