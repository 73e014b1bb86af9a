"""Bootstrap intervals of mAP (clips) and of THUMOS'14 detection mAP, and ``idtfv evaluate --detections``: checked
against naive implementations (resample the rows / copy the videos, recompute from scratch) and planted truth."""

from __future__ import annotations

import json

import numpy as np
import pytest

from idtfv import cli
from idtfv.classify import evaluate, evaluate_detections, summary_line
from idtfv.classify.evaluate import (bootstrap_detection_map_ci, bootstrap_map_ci, detection_average_precision,
                                     detection_map, split_metrics)
from idtfv.classify.intervals import Detection, temporal_iou, write_detections
from idtfv.scores import Scores


# ------------------------------------------------------------------------------------------------ clip mAP
def _naive_map_ci(scores, targets, n, level, seed):
    """Resample the rows of each label set with numpy's own draws (the documented ones: label sets in order of
    their first video, all resamples at once), recompute split_metrics' mAP each time."""
    rng = np.random.default_rng(seed)
    total = np.zeros(n)
    for s, t in zip(scores, targets):
        keys = [tuple(row) for row in t]
        groups = [[i for i, k in enumerate(keys) if k == key] for key in dict.fromkeys(keys)]
        draws = [np.array(g)[rng.integers(0, len(g), size=(n, len(g)))] for g in groups]
        total += [split_metrics(s[rows], t[rows])["mAP"] for rows in np.concatenate(draws, axis=1)]
    total /= len(scores)
    total = total[np.isfinite(total)]
    return tuple(np.quantile(total, [(1 - level) / 2, (1 + level) / 2]))


@pytest.mark.parametrize("ties", [False, True])
def test_map_bootstrap_equals_resampling_the_videos(ties):
    rng = np.random.default_rng(3)
    scores, targets = [], []
    for n in (30, 17):  # two splits
        y = rng.integers(0, 4, n)
        t = np.eye(4, dtype=bool)[y]
        s = rng.normal(size=(n, 4)) + 1.5 * t
        if ties:
            s = np.round(s)  # many equal scores: one threshold each, as average_precision
        scores.append(s)
        targets.append(t)
    got = bootstrap_map_ci(scores, targets, n_resamples=300, level=0.9, seed=7)
    want = _naive_map_ci(scores, targets, 300, 0.9, 7)
    assert got == pytest.approx(want, abs=1e-12)
    assert got[0] < np.mean([split_metrics(s, t)["mAP"] for s, t in zip(scores, targets)]) < got[1]
    assert bootstrap_map_ci(scores, targets, n_resamples=300, level=0.9, seed=7) == got  # seeded
    assert bootstrap_map_ci(scores, targets, n_resamples=300, level=0.9, seed=8) != got


def test_map_interval_keeps_every_class_and_holds_the_map_on_tiny_test_sets():
    """One test video per class (a tiny run): every stratified resample is the test set itself, so the interval is
    the mAP (resampling all videos at once dropped the classes not drawn, and the interval could miss the mAP). With
    two per class the mAP lies inside it."""
    rng = np.random.default_rng(5)
    s = rng.normal(size=(7, 7))
    t = np.eye(7, dtype=bool)
    m = split_metrics(s, t)["mAP"]
    assert bootstrap_map_ci([s], [t], n_resamples=200, seed=0) == pytest.approx((m, m), abs=1e-12)
    y = np.repeat(np.arange(7), 2)
    s2 = rng.normal(size=(14, 7)) + 0.5 * np.eye(7)[y]
    t2 = np.eye(7, dtype=bool)[y]
    lo, hi = bootstrap_map_ci([s2], [t2], n_resamples=400, seed=0)
    assert lo <= split_metrics(s2, t2)["mAP"] <= hi and lo < hi


def test_evaluate_reports_the_map_interval(tmp_path):
    rng = np.random.default_rng(0)
    y = np.repeat(np.arange(3), 8)
    s = rng.normal(size=(24, 3)) + np.eye(3)[y]
    sc = Scores(video_ids=[f"v{i}" for i in range(24)], scores=s, class_names=["a", "b", "c"], labels=y,
                label_sets=[(int(k),) for k in y])
    rep = evaluate(sc, n_bootstrap=200, bootstrap_seed=1)
    lo, hi = rep["mAP_ci"]
    assert (lo, hi) == pytest.approx(_naive_map_ci([s], [np.eye(3, dtype=bool)[y]], 200, 0.95, 1), abs=1e-9)
    assert lo <= rep["mAP"] <= hi
    assert f"mAP {100 * rep['mAP']:.2f}% [95% CI {100 * lo:.2f}-{100 * hi:.2f}%]" in summary_line(rep)


# ------------------------------------------------------------------------------------------------ detection mAP
def _random_detection_set(rng, n_videos=5, classes=("a", "b", "c")):
    truth, dets = [], []
    for v in range(n_videos):
        vid = f"v{v}"
        for c in classes:
            for _ in range(rng.integers(0, 3)):
                a = float(rng.uniform(0, 50))
                truth.append(Detection(vid, c, a, a + float(rng.uniform(1, 8)), 0.0))
        for c in classes:
            for _ in range(rng.integers(0, 6)):
                a = float(rng.uniform(0, 55))
                dets.append(Detection(vid, c, a, a + float(rng.uniform(1, 8)), float(rng.normal())))
        for t in [t for t in truth if t.video_id == vid]:  # a few near hits
            if rng.random() < 0.7:
                j = float(rng.normal(0, 0.8))
                dets.append(Detection(vid, t.label, max(0.0, t.start + j), t.end + j, float(rng.normal(1.0))))
    return dets, truth


def test_detection_ap_equals_the_naive_loop():
    rng = np.random.default_rng(11)
    for _ in range(20):
        dets, truth = _random_detection_set(rng)
        for c in ("a", "b", "c"):
            g = {}
            for t in truth:
                if t.label == c:
                    g.setdefault(t.video_id, []).append((t.start, t.end))
            dc = [d for d in dets if d.label == c]
            for iou in (0.1, 0.3, 0.5):
                got = detection_average_precision(dc, {v: np.array(x) for v, x in g.items()}, iou)
                if not g:
                    assert got is None
                else:
                    assert got == pytest.approx(_naive_official(dc, g, iou), abs=1e-12)


def _naive_official(dets, truth, iou):
    """TH14evalDet's loop written out again: scan the video's intervals by decreasing IoU, match the first free one
    with IoU >= threshold; AP = sum of the precision at every true positive / number of intervals."""
    n_pos = sum(len(g) for g in truth.values())
    used = {v: [False] * len(g) for v, g in truth.items()}
    tp = fp = 0
    total = 0.0
    for d in sorted(dets, key=lambda d: -d.score):
        g = truth.get(d.video_id, [])
        ov = [temporal_iou([[d.start, d.end]], [x])[0, 0] for x in g]
        hit = False
        for j in sorted(range(len(g)), key=lambda j: -ov[j]):
            if ov[j] < iou:
                break
            if not used[d.video_id][j]:
                used[d.video_id][j] = hit = True
                break
        tp, fp = tp + hit, fp + (not hit)
        total += tp / (tp + fp) if hit else 0.0
    return total / n_pos


def _naive_detection_ci(dets, truth, names, n, level, seed):
    """Copy the drawn videos under new ids (v#k), run detection_map on the copies, take quantiles."""
    vids = sorted({t.video_id for t in truth} | {d.video_id for d in dets})
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(vids), size=(n, len(vids)))
    maps = []
    for row in idx:
        rd, rt, copies = [], [], []
        for k, i in enumerate(row):
            v = vids[i]
            new = f"{v}#{k}"
            copies.append(new)
            rd += [Detection(new, d.label, d.start, d.end, d.score) for d in dets if d.video_id == v]
            rt += [Detection(new, t.label, t.start, t.end, 0.0) for t in truth if t.video_id == v]
        rep = detection_map(rd, rt, class_names=names, videos=copies)
        maps.append([np.nan if rep["mAP"][k] is None else rep["mAP"][k] for k in ("0.1", "0.3", "0.5")])
    maps = np.array(maps)
    out = []
    for col in [*maps.T, np.nanmean(maps, axis=1)]:
        col = col[np.isfinite(col)]
        out.append(list(np.quantile(col, [(1 - level) / 2, (1 + level) / 2])))
    return out


def test_detection_bootstrap_equals_copying_the_videos():
    rng = np.random.default_rng(5)
    dets, truth = _random_detection_set(rng, n_videos=6)
    vids = sorted({t.video_id for t in truth} | {d.video_id for d in dets})
    ci = bootstrap_detection_map_ci(dets, truth, class_names=["a", "b", "c"], ious=(0.1, 0.3, 0.5), videos=vids,
                                    n_resamples=60, level=0.8, seed=2)
    want = _naive_detection_ci(dets, truth, ["a", "b", "c"], 60, 0.8, 2)
    for got, ref in zip([ci["mAP"]["0.1"], ci["mAP"]["0.3"], ci["mAP"]["0.5"], ci["average_mAP"]], want):
        assert got == pytest.approx(ref, abs=1e-9)


def _planted(tmp_path):
    """Three videos, two classes; the detector finds every interval of 'walk' exactly and ranks one false alarm of
    'run' above its only true hit."""
    gt = tmp_path / "gt.csv"
    gt.write_text("video_id,class,start,end\nv1,walk,1,5\nv1,run,10,14\nv2,walk,2,6\nv3,walk,0,3\n")
    dets = [Detection("v1", "walk", 1, 5, 0.9), Detection("v2", "walk", 2.2, 6, 0.8),  # IoU 1 and 0.95
            Detection("v3", "walk", 0, 3, 0.7),
            Detection("v2", "run", 0, 4, 0.95),   # no run in v2: false positive first
            Detection("v1", "run", 11, 14, 0.6),  # IoU 0.75 with [10, 14]
            Detection("v3", "jump", 0, 1, 0.5)]   # a class without ground truth: not reported
    return gt, write_detections(tmp_path / "det.csv", dets)


def test_evaluate_detections_on_planted_truth_and_the_cli(tmp_path, capsys):
    gt, det = _planted(tmp_path)
    rep = evaluate_detections(det, gt, n_bootstrap=100)
    # walk: 3 hits at ranks 1..3 -> AP 1 at every IoU; run: FP then TP -> AP 1/2 up to IoU 0.75
    assert rep["per_class"] == {"run": {k: 0.5 for k in ("0.1", "0.2", "0.3", "0.4", "0.5")},
                                "walk": {k: 1.0 for k in ("0.1", "0.2", "0.3", "0.4", "0.5")}}
    assert rep["mAP"]["0.5"] == 0.75 and rep["average_mAP"] == 0.75 and rep["n_classes"] == 2
    assert rep["n_ground_truth"] == 4 and rep["n_videos"] == 3 and rep["n_detections"] == 6
    lo, hi = rep["average_mAP_ci"]
    assert 0.5 <= lo <= 0.75 <= hi <= 1.0
    out = tmp_path / "eval"
    assert cli.main(["evaluate", "--detections", str(det), "--annotations", str(gt), "--out", str(out)]) == 0
    line = capsys.readouterr().out.strip()
    assert line.startswith("detection mAP at temporal IoU 0.1 75.00%, 0.2 75.00%") and "3 videos, 2 classes, 4 " \
        "intervals" in line and "average 75.00% [95% CI" in line
    saved = json.loads((out / "report.json").read_text())
    assert saved["mAP"] == rep["mAP"] and saved["task"] == "detection" and saved["bootstrap"]["resamples"] == 1000
    # bad input: one error line, exit 2
    for argv in (["evaluate", "--detections", str(det)],
                 ["evaluate", "--detections", str(det), "--annotations", str(det), "x.csv"],
                 ["evaluate", "--detections", str(gt), "--annotations", str(gt)]):
        assert cli.main(argv) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("error:"), err
