"""Evaluation of score files: accuracy, per-class accuracy, mAP, top-k, confusion matrix.

Definitions (one split; n labelled videos, C classes, scores s (n, C), true labels y):

- prediction: ``argmax_c s[i, c]`` (first index on ties);
- accuracy: fraction of videos whose prediction is the true class (multi-label: is *one of* the true classes);
- per-class accuracy of class c: accuracy over the videos of class c (the confusion row's recall; multi-label:
  the fraction of class-c videos predicted as c);
  ``mean_class_accuracy`` is their mean over classes present in the split;
- top-k accuracy (k=5 by default, reported when C >= k): the true class is among the k highest scores (ties
  broken by the lower class index, like the prediction);
- AP of class c: non-interpolated average precision of ranking all videos by ``s[:, c]``, positives = videos of
  class c; ``AP = sum_n (R_n - R_{n-1}) P_n`` over the distinct score thresholds (ties count as one step, as in
  scikit-learn). It is undefined for a class without positives in the split, and for a class without negatives
  (every video is of class c: any ranking scores 1, which measures nothing);
- confusion[t, p]: number of videos of true class t predicted as p (single-label data only);
- ``n_correct``: the number of correctly predicted videos behind ``accuracy`` (``accuracy = n_correct / n``);
- ``accuracy_ci``: a seeded percentile bootstrap confidence interval of the accuracy (default 95%, 1000
  resamples of the test videos with replacement; with several splits, each split is resampled on its own and the
  interval is that of the mean over splits). With few test videos one clip moves the accuracy by several points:
  the count and the interval say how much the figure can be trusted;
- ``mAP_ci``: the same for the mAP, the test videos resampled within each class (label set), so that every class
  keeps its positives in every resample.

Undefined figures (the per-class accuracy and AP of a class without test videos, the AP of a class without
negatives; ``mAP`` / ``mean_class_accuracy`` when no class has a defined value) are ``None`` in the report (``null``
in JSON, ``n/a`` when the CLIs print them) and are left out of the means; :func:`evaluate` says so once, in a
:class:`ResultWarning`.

With several score files (e.g. one per split of UCF101), every number is computed per file and averaged over
files (``accuracy`` = mean over splits, with ``accuracy_std``; a per-class figure over the splits where it is
defined); the confusion matrix is summed. Videos with unknown labels are not scored; videos of the requested
manifest split that are absent from the score file are counted in ``n_missing`` (they are not counted as errors)
and named in a :class:`ResultWarning`.
"""

from __future__ import annotations

import json
import math
import os
import warnings
from pathlib import Path

import numpy as np

from idtfv.errors import FormatError, ParameterError

from idtfv.atomic import atomic_write_text
from idtfv.scores import Scores, as_scores


__all__ = ["evaluate", "summary_line", "average_precision", "split_metrics", "bootstrap_accuracy_ci",
           "bootstrap_map_ci", "write_report", "ResultWarning", "N_BOOTSTRAP", "CI_LEVEL", "THUMOS_IOUS",
           "detection_average_precision", "detection_map", "bootstrap_detection_map_ci", "evaluate_detections"]

#: How many ids a warning about missing videos or undefined classes names.
_N_EXAMPLES = 3
#: Bootstrap resamples and confidence level of ``accuracy_ci``.
N_BOOTSTRAP = 1000
CI_LEVEL = 0.95
#: The THUMOS'14 temporal IoU thresholds of detection mAP.
THUMOS_IOUS = (0.1, 0.2, 0.3, 0.4, 0.5)
#: Elements of one block of resampled weights (bounds the bootstraps' temporary arrays to ~32 MB each).
_BOOT_BLOCK = 4_000_000


class ResultWarning(UserWarning):
    """A result was computed, but part of it is undefined or incomplete on this data (a class without test videos,
    test videos missing from a score file). The ``idtfv`` commands print each as one ``warning: ...`` line."""


# --------------------------------------------------------------------------- metrics


def average_precision(scores, positives) -> float:
    """Non-interpolated average precision of one ranking.

    Parameters
    ----------
    scores : array_like, shape (n,)
        Higher = more likely positive.
    positives : array_like of bool, shape (n,)

    Returns
    -------
    float
        ``sum_n (R_n - R_{n-1}) P_n`` over distinct score thresholds, NaN when there is no positive.
    """
    s = np.asarray(scores, dtype=np.float64)
    pos = np.asarray(positives, dtype=bool)
    n_pos = int(pos.sum())
    if n_pos == 0:
        return math.nan
    order = np.argsort(-s, kind="stable")
    s, pos = s[order], pos[order]
    tp = np.cumsum(pos)
    # last index of each run of equal scores = one threshold
    last = np.r_[np.flatnonzero(np.diff(s) != 0), s.size - 1]
    tp_t = tp[last].astype(np.float64)
    precision = tp_t / (last + 1)
    recall = tp_t / n_pos
    d_recall = np.diff(np.r_[0.0, recall])
    return float(np.sum(d_recall * precision))


def _top_k(scores: np.ndarray, k: int) -> np.ndarray:
    """Indices of the k highest scores per row, shape (n, k), ties broken by lower class index."""
    return np.argsort(-scores, axis=1, kind="stable")[:, :k]


def split_metrics(scores: np.ndarray, targets: np.ndarray, *, top_k: int = 5) -> dict:
    """Metrics of one split.

    Parameters
    ----------
    scores : ndarray, shape (n, C)
    targets : ndarray of bool, shape (n, C)
        True labels as indicators; every row must have at least one True.
    top_k : int, keyword-only

    Returns
    -------
    dict with ``accuracy``, ``n_correct``, ``hits`` (n,) bool (video i predicted correctly),
    ``per_class_accuracy`` (C,) (NaN for absent classes), ``mean_class_accuracy``,
    ``average_precision`` (C,), ``mAP``, ``topk`` (or None when C < top_k), ``confusion`` (C, C) int64 or None
    (multi-label), ``multilabel``.
    """
    n, c = scores.shape
    multilabel = bool((targets.sum(axis=1) > 1).any())
    pred = np.argmax(scores, axis=1) if n else np.zeros(0, dtype=np.int64)
    hit = targets[np.arange(n), pred]
    acc = float(hit.mean()) if n else math.nan
    per_class = np.full(c, math.nan)
    for j in range(c):
        m = targets[:, j]
        if m.any():
            per_class[j] = float(hit[m].mean()) if not multilabel else float((pred[m] == j).mean())
    present = ~np.isnan(per_class)
    mca = float(per_class[present].mean()) if present.any() else math.nan
    # a class that every video belongs to has no negative: any ranking gives AP 1, which measures nothing
    ap = np.array([average_precision(scores[:, j], targets[:, j]) if not targets[:, j].all() else math.nan
                   for j in range(c)])
    m_ap = float(np.nanmean(ap)) if (~np.isnan(ap)).any() else math.nan
    topk = None
    if c >= top_k and n:
        idx = _top_k(scores, top_k)
        topk = float(np.take_along_axis(targets, idx, axis=1).any(axis=1).mean())
    confusion = None
    if not multilabel:
        y = np.argmax(targets, axis=1)
        confusion = np.zeros((c, c), dtype=np.int64)
        np.add.at(confusion, (y, pred), 1)
    return {
        "accuracy": acc,
        "n_correct": int(hit.sum()),
        "hits": hit,
        "per_class_accuracy": per_class,
        "mean_class_accuracy": mca,
        "average_precision": ap,
        "mAP": m_ap,
        "topk": topk,
        "confusion": confusion,
        "multilabel": multilabel,
    }


def bootstrap_accuracy_ci(hits, *, n_resamples: int = N_BOOTSTRAP, level: float = CI_LEVEL,
                          seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap interval of the (mean over splits of the) accuracy.

    Parameters
    ----------
    hits : sequence of array_like of bool, one (n_j,) array per split
        Whether each test video of split j was predicted correctly.
    n_resamples : int, keyword-only
        Bootstrap resamples B; each resamples every split's videos with replacement (n_j of n_j).
    level : float in (0, 1)
        Coverage of the interval.
    seed : int
        Seeds the resampling: same hits and seed -> same interval.

    Returns
    -------
    (low, high) : the ``(1 - level) / 2`` and ``(1 + level) / 2`` quantiles of the B resampled mean accuracies
    (NaN, NaN when a split has no video).
    """
    if not (isinstance(n_resamples, int) and n_resamples >= 1):
        raise ParameterError(f"bootstrap: n_resamples must be an integer >= 1, got {n_resamples!r}")
    if not 0 < level < 1:
        raise ParameterError(f"bootstrap: level must be in (0, 1), got {level!r}")
    rng = np.random.default_rng(int(seed))
    total = np.zeros(n_resamples)
    hits = [np.asarray(h, dtype=bool) for h in hits]
    if not hits or any(h.size == 0 for h in hits):
        return math.nan, math.nan
    for h in hits:
        acc = np.empty(n_resamples)
        chunk = max(1, 4_000_000 // h.size)  # at most ~32 MB of indices at a time
        for start in range(0, n_resamples, chunk):
            stop = min(n_resamples, start + chunk)
            acc[start:stop] = h[rng.integers(0, h.size, size=(stop - start, h.size))].mean(axis=1)
        total += acc
    total /= len(hits)
    low, high = np.quantile(total, [(1 - level) / 2, (1 + level) / 2])
    return float(low), float(high)


def _resample_counts(rng: np.random.Generator, n: int, n_resamples: int, width: int = 0):
    """Blocks of bootstrap resamples of n items, as counts: yields ``(start, stop, W)`` with ``W (stop - start, n)``
    int64, ``W[b, i]`` = how many times item i was drawn in resample b. The draws are those of
    :func:`bootstrap_accuracy_ci` (``rng.integers(0, n, size=(block, n))``, same blocks unless the caller's
    temporaries are ``width > n`` columns wide): with the same seed, the same resamples."""
    chunk = max(1, _BOOT_BLOCK // max(n, width))
    for start in range(0, n_resamples, chunk):
        stop = min(n_resamples, start + chunk)
        idx = rng.integers(0, n, size=(stop - start, n))
        flat = (idx + n * np.arange(stop - start)[:, None]).ravel()
        yield start, stop, np.bincount(flat, minlength=(stop - start) * n).reshape(stop - start, n)


def _check_bootstrap(n_resamples, level) -> None:
    if not (isinstance(n_resamples, int) and n_resamples >= 1):
        raise ParameterError(f"bootstrap: n_resamples must be an integer >= 1, got {n_resamples!r}")
    if not 0 < level < 1:
        raise ParameterError(f"bootstrap: level must be in (0, 1), got {level!r}")


def _percentile_interval(values: np.ndarray, level: float) -> tuple[float, float]:
    """The ``(1 -+ level) / 2`` quantiles of the finite values (NaN, NaN when none is finite)."""
    v = values[np.isfinite(values)]
    if not v.size:
        return math.nan, math.nan
    low, high = np.quantile(v, [(1 - level) / 2, (1 + level) / 2])
    return float(low), float(high)


def _weighted_class_aps(scores: np.ndarray, targets: np.ndarray, W: np.ndarray) -> np.ndarray:
    """AP of every class for every resample given as counts ``W (B, n)``, shape (B, C) (NaN where undefined).

    A video drawn k times counts k times. With ``N_p`` the (weighted) number of videos scoring at least positive
    p's score and ``TP_p`` the positives among them, ``AP = sum_p w_p TP_p / N_p / sum_p w_p`` over the positives:
    the precision at each positive's threshold, equal scores forming one threshold as in
    :func:`average_precision`, so the value is exactly :func:`average_precision` of the resampled rows (up to
    rounding). The counts are integer sums of products computed as float32 matrix products (exact below 2**24)."""
    B, n = W.shape
    Wf = W.astype(np.float32)
    total = W.sum(axis=1)
    out = np.full((B, scores.shape[1]), math.nan)
    for j in range(scores.shape[1]):
        pos = np.flatnonzero(targets[:, j])
        if not pos.size:
            continue
        s = scores[:, j]
        at_least = (s[:, None] >= s[None, pos]).astype(np.float32)  # (n, P): video i counts at positive p
        N = (Wf @ at_least).astype(np.float64)
        TP = (Wf[:, pos] @ at_least[pos]).astype(np.float64)
        wp = W[:, pos].astype(np.float64)
        n_pos = wp.sum(axis=1)
        ok = (n_pos > 0) & (n_pos < total)  # no positive, or no negative: undefined (as split_metrics)
        with np.errstate(divide="ignore", invalid="ignore"):
            ap = np.where(wp > 0, wp * TP / np.where(N > 0, N, 1.0), 0.0).sum(axis=1) / n_pos
        out[ok, j] = ap[ok]
    return out


def _strata(targets: np.ndarray) -> list[np.ndarray]:
    """The test videos grouped by label set (rows of ``targets`` that are equal), groups in order of their first
    video; each group's video indices in increasing order."""
    _, first, inverse = np.unique(targets, axis=0, return_index=True, return_inverse=True)
    inverse = np.asarray(inverse).reshape(-1)
    return [np.flatnonzero(inverse == g) for g in np.argsort(first, kind="stable")]


def _stratified_counts(rng: np.random.Generator, strata: list[np.ndarray], n: int, n_resamples: int):
    """Blocks ``(start, stop, W)`` of stratified resamples of ``n`` videos as counts ``W (stop - start, n)``: in
    every resample each stratum of ``m`` videos is drawn ``m`` times with replacement from itself. The draws:
    ``rng.integers(0, m, size=(n_resamples, m))`` for each stratum in turn (all resamples at once)."""
    draws = [(members, rng.integers(0, len(members), size=(n_resamples, len(members)))) for members in strata]
    chunk = max(1, _BOOT_BLOCK // max(n, 1))
    for start in range(0, n_resamples, chunk):
        stop = min(n_resamples, start + chunk)
        offsets = n * np.arange(stop - start)[:, None]
        flat = np.concatenate([(members[idx[start:stop]] + offsets).ravel() for members, idx in draws])
        yield start, stop, np.bincount(flat, minlength=(stop - start) * n).reshape(stop - start, n)


def bootstrap_map_ci(scores, targets, *, n_resamples: int = N_BOOTSTRAP, level: float = CI_LEVEL,
                     seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap interval of the (mean over splits of the) mAP, stratified by label set: each resample
    draws, for every label set (a class, for single-label data), as many of its test videos as it has, with
    replacement, and recomputes the mAP.

    Stratified so that every class keeps its number of positives (and a class is defined in every resample where it
    is defined on the test set): resampling all videos at once leaves a class with few test videos out of some
    resamples' means, which then describe another set of classes, and the interval could miss the mAP itself.

    Parameters
    ----------
    scores : sequence of ndarray, one (n_j, C) array per split
    targets : sequence of ndarray of bool, one (n_j, C) array per split (true labels as indicators)
    n_resamples, level, seed : as :func:`bootstrap_accuracy_ci` (the draws: :func:`_stratified_counts`)

    Returns
    -------
    (low, high) : quantiles of the resampled mean mAP. A resample's mAP is the mean AP over the classes defined in
    it (a positive and a negative video drawn, as :func:`split_metrics`); resamples where no class is defined are
    left out; (NaN, NaN) when none is left or a split has no video.
    """
    _check_bootstrap(n_resamples, level)
    rng = np.random.default_rng(int(seed))
    scores = [np.asarray(s, dtype=np.float64) for s in scores]
    targets = [np.asarray(t, dtype=bool) for t in targets]
    if not scores or any(s.shape[0] == 0 for s in scores):
        return math.nan, math.nan
    total = np.zeros(n_resamples)
    for s, t in zip(scores, targets):
        m_ap = np.empty(n_resamples)
        for start, stop, W in _stratified_counts(rng, _strata(t), s.shape[0], n_resamples):
            aps = _weighted_class_aps(s, t, W)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)  # a resample without any defined class: NaN
                m_ap[start:stop] = np.nanmean(aps, axis=1)
        total += m_ap
    return _percentile_interval(total / len(scores), level)


# --------------------------------------------------------------------------- temporal detection (THUMOS'14)


def _detection_flags(detections, truth: dict, iou: float) -> tuple[np.ndarray, list]:
    """The THUMOS'14 matching of one class's detections, in decreasing score (ties: the order given).

    Returns ``(tp (m,) bool, order (m,) indices into detections)``: a detection is a true positive when a
    ground-truth interval of its video, not yet matched, overlaps it by temporal IoU >= ``iou`` (the one of highest
    IoU among those is matched). Matching only involves the detections of one video, so each detection's flag is
    the same whichever other videos are evaluated with it (the bootstrap relies on this)."""
    from .intervals import temporal_iou

    order = sorted(range(len(detections)), key=lambda i: -detections[i].score)
    used = {v: np.zeros(len(g), bool) for v, g in truth.items()}
    tp = np.zeros(len(order), bool)
    for r, i in enumerate(order):
        d = detections[i]
        g = truth.get(d.video_id)
        if g is None or not len(g):
            continue
        ov = temporal_iou([[d.start, d.end]], g)[0]
        for j in np.argsort(-ov, kind="stable"):
            if ov[j] < iou:
                break
            if not used[d.video_id][j]:
                used[d.video_id][j] = True
                tp[r] = True
                break
    return tp, order


def _weighted_detection_ap(tp: np.ndarray, vid: np.ndarray, W: np.ndarray, n_pos: np.ndarray) -> np.ndarray:
    """Non-interpolated AP of ranked detections when each video counts ``W[b, v]`` times.

    Parameters
    ----------
    tp : (m,) bool, true positive or not, in rank order.
    vid : (m,) int, the video (column of ``W``) of each ranked detection.
    W : (B, V) int, copies of each video in resample b (all ones: the plain AP).
    n_pos : (B,) ground-truth intervals of the class in resample b.

    Returns
    -------
    (B,) AP, NaN where ``n_pos`` is 0. The w consecutive copies of a true positive after ``TP`` true and ``N``
    ranked detections add ``sum_{j=1..w} (TP + j) / (N + j) = w - (N - TP) (H(N + w) - H(N))`` (H: harmonic
    numbers; w = 1: the precision at that rank) to the precision sum. ``N`` and ``TP`` before the k-th true
    positive are ``W`` times the per-video counts of the detections ranked above it (exact matrix products), so the
    cost grows with the true positives, not with every detection.
    """
    B, V = W.shape
    hits = np.flatnonzero(tp)
    with np.errstate(divide="ignore", invalid="ignore"):
        if not hits.size:
            return np.where(n_pos > 0, 0.0, math.nan)
        m = int(hits[-1]) + 1  # detections after the last true positive change nothing
        onehot = np.zeros((V, m))
        onehot[vid[:m], np.arange(m)] = 1.0
        above = (np.cumsum(onehot, axis=1) - onehot)[:, hits]  # (V, T) detections of video v ranked above hit k
        tp_onehot = onehot * tp[:m]
        tp_above = (np.cumsum(tp_onehot, axis=1) - tp_onehot)[:, hits]
        Wf = np.asarray(W, dtype=np.float64)
        n_before = np.rint(Wf @ above).astype(np.int64)
        tp_before = np.rint(Wf @ tp_above).astype(np.int64)
        w = np.asarray(W, dtype=np.int64)[:, vid[hits]]
        top = int((n_before + w).max())
        harmonic = np.concatenate([[0.0], np.cumsum(1.0 / np.arange(1, top + 1))])
        one = (tp_before + 1) / (n_before + 1.0)
        many = w - (n_before - tp_before) * (harmonic[n_before + w] - harmonic[n_before])
        contrib = np.where(w == 1, one, np.where(w > 0, many, 0.0))
        return np.where(n_pos > 0, contrib.sum(axis=1) / n_pos, math.nan)


def detection_average_precision(detections, truth, iou: float) -> float | None:
    """THUMOS'14 average precision of one class's detections (``TH14evalDet.m``).

    Detections are taken in decreasing score (ties: the order given). Each is a true positive when some
    ground-truth interval of its video, not yet matched, overlaps it by temporal IoU >= ``iou`` (among those, the
    one of highest IoU is matched), else a false positive. AP = (sum of the precision at each true positive) /
    (number of ground-truth intervals): the non-interpolated AP of the official evaluation.

    Parameters
    ----------
    detections : sequence of :class:`~idtfv.classify.intervals.Detection`, this class's detections (any videos).
    truth : {video_id: (g, 2) ground-truth intervals of this class}.
    iou : temporal IoU threshold.

    Returns
    -------
    AP in [0, 1], or None when the class has no ground-truth interval (undefined).
    """
    n_pos = sum(len(v) for v in truth.values())
    if n_pos == 0:
        return None
    detections = list(detections)
    tp, order = _detection_flags(detections, truth, iou)
    videos = {v: i for i, v in enumerate(dict.fromkeys(d.video_id for d in detections))}
    vid = np.array([videos[detections[i].video_id] for i in order], np.int64)
    return float(_weighted_detection_ap(tp, vid, np.ones((1, len(videos)), np.int64), np.array([float(n_pos)]))[0])


def _by_class(detections, truth, names, vids):
    """Per class: (its detections, {video: (g, 2) truth}) restricted to the videos ``vids``."""
    keep = set(vids)
    out = {}
    for name in names:
        g: dict[str, list] = {}
        for t in truth:
            if t.label == name and t.video_id in keep:
                g.setdefault(t.video_id, []).append((t.start, t.end))
        out[name] = ([d for d in detections if d.label == name and d.video_id in keep],
                     {v: np.array(x, np.float64) for v, x in g.items()})
    return out


def detection_map(detections, truth, *, class_names=None, ious=THUMOS_IOUS, videos=None) -> dict:
    """THUMOS'14 mAP: AP per class at each temporal IoU, and the mean over the classes with ground truth.

    Parameters
    ----------
    detections : detected intervals (``score`` used).
    truth : ground-truth intervals (``score`` ignored).
    class_names : classes to report (default: those of the ground truth, sorted).
    ious : IoU thresholds (default 0.1..0.5).
    videos : evaluate only these video ids (default: every video of the ground truth); detections of other videos
        are left out.

    Returns
    -------
    dict: ``ious``, ``mAP`` {iou: mean AP}, ``average_mAP`` (mean over the thresholds), ``per_class`` {class:
    {iou: AP or None}}, ``n_videos``, ``n_ground_truth``, ``n_detections``. Keys of the IoU maps are
    ``"0.1"``, ... (JSON). A class without ground truth has AP None and is left out of the means.
    """
    vids = sorted({t.video_id for t in truth}) if videos is None else sorted(set(videos))
    keep = set(vids)
    n_dets = sum(1 for d in detections if d.video_id in keep)
    n_gt = sum(1 for t in truth if t.video_id in keep)
    names = sorted({t.label for t in truth if t.video_id in keep}) if class_names is None else list(class_names)
    per_class: dict[str, dict[str, float | None]] = {}
    for name, (dc, g_arr) in _by_class(detections, truth, names, vids).items():
        per_class[name] = {f"{iou:g}": detection_average_precision(dc, g_arr, iou) for iou in ious}
    maps = {}
    for iou in ious:
        vals = [per_class[n][f"{iou:g}"] for n in names if per_class[n][f"{iou:g}"] is not None]
        maps[f"{iou:g}"] = float(np.mean(vals)) if vals else None
    defined = [v for v in maps.values() if v is not None]
    return {"ious": [float(v) for v in ious], "mAP": maps,
            "average_mAP": float(np.mean(defined)) if defined else None, "per_class": per_class,
            "n_videos": len(vids), "n_ground_truth": n_gt, "n_detections": n_dets}


def bootstrap_detection_map_ci(detections, truth, *, class_names=None, ious=THUMOS_IOUS, videos=None,
                               n_resamples: int = N_BOOTSTRAP, level: float = CI_LEVEL, seed: int = 0) -> dict:
    """Percentile bootstrap intervals of the detection mAP at each IoU and of their average: the evaluated videos
    are resampled with replacement (n of n; a video drawn k times counts k times, its detections and its ground
    truth alike) and :func:`detection_map` recomputed.

    Parameters
    ----------
    detections, truth, class_names, ious, videos : as :func:`detection_map`
    n_resamples, level, seed : resamples B, coverage, seed (same inputs and seed -> same intervals)

    Returns
    -------
    dict: ``mAP`` {iou: [low, high]}, ``average_mAP`` [low, high] (None where undefined). A resample's mAP at an
    IoU is the mean AP over the classes with ground truth in it; resamples without any are left out.
    """
    _check_bootstrap(n_resamples, level)
    vids = sorted({t.video_id for t in truth}) if videos is None else sorted(set(videos))
    names = sorted({t.label for t in truth if t.video_id in set(vids)}) if class_names is None \
        else list(class_names)
    keys = [f"{iou:g}" for iou in ious]
    if not vids:
        return {"mAP": {k: None for k in keys}, "average_mAP": None}
    pos = {v: i for i, v in enumerate(vids)}
    per_class = _by_class(detections, truth, names, vids)
    # per class and IoU: the flags in rank order (fixed), the video of each ranked detection, truth per video
    prepared = []
    for name, (dc, g_arr) in per_class.items():
        n_gt = np.zeros(len(vids))
        for v, g in g_arr.items():
            n_gt[pos[v]] = len(g)
        per_iou = []
        for iou in ious:
            tp, order = _detection_flags(dc, g_arr, iou)
            per_iou.append((tp, np.array([pos[dc[i].video_id] for i in order], np.int64)))
        prepared.append((n_gt, per_iou))
    width = max((int(tp.sum()) for _, per_iou in prepared for tp, _ in per_iou), default=0)
    rng = np.random.default_rng(int(seed))
    maps = np.full((n_resamples, len(ious)), math.nan)
    for start, stop, W in _resample_counts(rng, len(vids), n_resamples, width):
        aps = np.full((stop - start, len(prepared), len(ious)), math.nan)
        for c, (n_gt, per_iou) in enumerate(prepared):
            n_pos = W @ n_gt
            for t, (tp, vid) in enumerate(per_iou):
                aps[:, c, t] = _weighted_detection_ap(tp, vid, W, n_pos)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            maps[start:stop] = np.nanmean(aps, axis=1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        average = np.nanmean(maps, axis=1)

    def interval(values):
        low, high = _percentile_interval(values, level)
        return None if math.isnan(low) else [_json_num(low), _json_num(high)]

    return {"mAP": {k: interval(maps[:, t]) for t, k in enumerate(keys)}, "average_mAP": interval(average)}


def evaluate_detections(detections, annotations, *, manifest=None, class_names=None, ious=THUMOS_IOUS, videos=None,
                        report_json=None, n_bootstrap: int = N_BOOTSTRAP, ci_level: float = CI_LEVEL,
                        bootstrap_seed: int = 0) -> dict:
    """Evaluate temporal detections against ground-truth intervals (THUMOS'14 protocol) and build a JSON report.

    Parameters
    ----------
    detections : path of a detections CSV (``video_id,class,start,end,score``) or a sequence of Detection
    annotations : path of a ground-truth CSV (``video_id,class,start,end``) or a sequence of Detection
    manifest : Manifest or path, optional
        Its class names are the classes reported and its videos the videos evaluated (a video without any action
        counts: its detections are false positives); a ground-truth class or video it lacks is a FormatError.
    class_names, videos : as :func:`detection_map` (default: the manifest's, else the ground truth's)
    ious : temporal IoU thresholds (default 0.1..0.5)
    report_json : path, optional, where to write the report
    n_bootstrap, ci_level, bootstrap_seed : the bootstrap over videos (:func:`bootstrap_detection_map_ci`)

    Returns
    -------
    dict: :func:`detection_map`'s report plus ``task: "detection"``, ``n_classes``, ``mAP_ci`` {iou: [low,
    high]}, ``average_mAP_ci`` and ``bootstrap`` (its settings).
    """
    from .intervals import read_detections, read_intervals

    dets = read_detections(detections) if isinstance(detections, (str, os.PathLike)) else list(detections)
    truth = read_intervals(annotations) if isinstance(annotations, (str, os.PathLike)) else list(annotations)
    man = _manifest(manifest)
    gt_src = str(annotations) if isinstance(annotations, (str, os.PathLike)) else "<annotations>"
    if man is not None:
        known = set(man.class_names)
        unknown = sorted({t.label for t in truth} - known)
        if unknown:
            raise FormatError(gt_src, f"classes {_examples(unknown)} are not among the manifest's classes "
                                      f"({_examples(man.class_names)}); use the manifest of these videos")
        ids = {e.video_id for e in man.rows}
        stray = sorted({t.video_id for t in truth} - ids)
        if stray:
            raise FormatError(gt_src, f"videos {_examples(stray)} are not in the manifest ({len(stray)} unknown ids); "
                                      "use the manifest of these videos")
        class_names = list(man.class_names) if class_names is None else class_names
        videos = sorted(ids) if videos is None else videos
    if not truth:
        raise FormatError(gt_src, "no ground-truth interval; detection mAP needs at least one")
    report = detection_map(dets, truth, class_names=class_names, ious=ious, videos=videos)
    ci = bootstrap_detection_map_ci(dets, truth, class_names=class_names, ious=ious, videos=videos,
                                    n_resamples=n_bootstrap, level=ci_level, seed=bootstrap_seed)
    report = {"task": "detection", "n_classes": len(report["per_class"]), **report, "mAP_ci": ci["mAP"],
              "average_mAP_ci": ci["average_mAP"],
              "bootstrap": {"resamples": int(n_bootstrap), "level": float(ci_level), "seed": int(bootstrap_seed),
                            "resampled": "videos"}}
    if report_json is not None:
        write_report(report, report_json)
    return report


# --------------------------------------------------------------------------- manifest alignment


def _manifest(manifest):
    if manifest is None:
        return None
    if isinstance(manifest, (str, os.PathLike)):
        from idtfv.data.manifest import read_manifest

        return read_manifest(manifest)
    return manifest


def _entry_label_set(entry) -> tuple[int, ...]:
    """All class ids of a manifest entry (``VideoEntry.labels``; ``label`` as a fallback)."""
    labs = getattr(entry, "labels", None)
    if labs:
        return tuple(sorted(int(x) for x in labs if int(x) >= 0))
    lab = entry.label
    if lab is None or lab == "":
        return ()
    if isinstance(lab, str):
        return tuple(sorted(int(x) for x in lab.split(";") if x.strip() != "" and int(x) >= 0))
    return () if int(lab) < 0 else (int(lab),)


def _align_with_manifest(sc: Scores, src: str, man, split) -> tuple[Scores, int]:
    """Check the score file against the manifest; take labels from it; restrict to the split's test videos."""
    if list(man.class_names) != list(sc.class_names):
        raise FormatError(
            src,
            f"class names differ from the manifest's ({len(sc.class_names)} vs {len(man.class_names)} classes, "
            "or another order); score the videos with the manifest's classes in label-id order",
        )
    by_id = {e.video_id: e for e in man.rows}
    unknown = [v for v in sc.video_ids if v not in by_id]
    if unknown:
        raise FormatError(src, f"video id {unknown[0]!r} is not in the manifest ({len(unknown)} unknown ids)")
    sets = []
    for v, s in zip(sc.video_ids, sc.label_sets):
        m = _entry_label_set(by_id[v])
        if s and m and s != m:
            raise FormatError(src, f"video {v!r}: label {s} in the score file, {m} in the manifest")
        sets.append(m or s)
    n_missing = 0
    keep = np.ones(len(sc.video_ids), dtype=bool)
    if split is not None:
        test_order = [e.video_id for e in man.split(int(split), "test")]
        test_ids = set(test_order)
        if not test_ids:
            raise ParameterError(f"split {split}: the manifest has no test videos in column split{split}")
        keep = np.array([v in test_ids for v in sc.video_ids], dtype=bool)
        if not keep.any():
            raise FormatError(src, f"none of the {len(test_ids)} test videos of split {split} is in this score file; "
                                   "check the split number")
        present = set(sc.video_ids)
        missing = [v for v in test_order if v not in present]
        n_missing = len(missing)
        if missing:
            warnings.warn(f"{src}: lacks {n_missing} of the {len(test_ids)} test videos of split {split} "
                          f"(e.g. {_examples(missing)}); they are left out of every figure (n_missing in the report)",
                          ResultWarning, stacklevel=3)
    ids = [v for v, k in zip(sc.video_ids, keep) if k]
    sets = [s for s, k in zip(sets, keep) if k]
    labels = np.array([s[0] if len(s) == 1 else -1 for s in sets], dtype=np.int64)
    out = Scores(video_ids=ids, scores=sc.scores[keep], class_names=list(sc.class_names), labels=labels,
                 label_sets=sets)
    return out, n_missing


# --------------------------------------------------------------------------- public API


def _examples(names) -> str:
    """The first few names, quoted: ``'a', 'b', 'c'`` (and ``...`` when there are more)."""
    names = list(names)
    text = ", ".join(repr(str(n)) for n in names[:_N_EXAMPLES])
    return text + (", ..." if len(names) > _N_EXAMPLES else "")


def _nanmean_rows(rows: list) -> np.ndarray:
    """Mean over splits of per-class values, NaN where no split defines one (without numpy's empty-slice
    warning), shape (C,)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return np.nanmean(np.stack(rows), axis=0)


def _warn_undefined(names: list, per_class: np.ndarray, ap: np.ndarray) -> None:
    """One :class:`ResultWarning` naming the classes whose per-class figures are undefined."""
    no_test = [n for n, v in zip(names, per_class) if math.isnan(v)]
    all_positive = [n for n, v, a in zip(names, per_class, ap) if not math.isnan(v) and math.isnan(a)]
    parts = []
    if no_test:
        parts.append(f"{len(no_test)} of {len(names)} classes have no scored test video ({_examples(no_test)}: "
                     "none in the split, or none with features): their accuracy and AP are undefined")
    if all_positive:
        parts.append(f"{len(all_positive)} class{'es' if len(all_positive) > 1 else ''} "
                     f"({_examples(all_positive)}) {'are' if len(all_positive) > 1 else 'is'} the label of every "
                     "test video: AP undefined (no negative to rank)")
    if parts:
        warnings.warn("; ".join(parts) + "; null in the report, n/a when printed, left out of mean class accuracy "
                      "and mAP", ResultWarning, stacklevel=3)


def _as_list(x):
    if isinstance(x, (Scores, str, os.PathLike)):
        return [x]
    return list(x)


def _json_num(x):
    if x is None:
        return None
    x = float(x)
    return None if math.isnan(x) else round(x, 10)


def evaluate(scores, *, manifest=None, split=None, top_k: int = 5, confusion_png=None, report_json=None,
             title: str | None = None, n_bootstrap: int = N_BOOTSTRAP, ci_level: float = CI_LEVEL,
             bootstrap_seed: int = 0) -> dict:
    """Evaluate one or several score files (e.g. one per split) and build a JSON-ready report.

    Parameters
    ----------
    scores : Scores, path, or a sequence of them
        Several inputs are treated as separate splits and averaged.
    manifest : Manifest or path, optional, keyword-only
        Supplies/validates labels and class names.
    split : int or sequence of int, optional
        Manifest split number of each input; restricts each to that split's test videos and counts the test
        videos missing from it (``n_missing``). Needs ``manifest``.
    top_k : int
        k of the top-k accuracy (reported only when C >= k).
    confusion_png, report_json : path, optional
        Where to write the confusion-matrix figure (summed over splits) and the report.
    title : str, optional
        Figure title.
    n_bootstrap, ci_level, bootstrap_seed : int, float, int
        Resamples, coverage and seed of ``accuracy_ci`` and ``mAP_ci`` (:func:`bootstrap_accuracy_ci`,
        :func:`bootstrap_map_ci`).

    Returns
    -------
    dict
        ``accuracy`` (mean over splits), ``accuracy_std``, ``n_correct`` (summed over splits), ``accuracy_ci``
        ([low, high], seeded bootstrap), ``bootstrap`` (its settings), ``mean_class_accuracy``, ``mAP``,
        ``mAP_std``, ``mAP_ci`` ([low, high], resampled within each class, :func:`bootstrap_map_ci`), ``top{k}``
        (or None), ``per_class_accuracy`` and ``average_precision`` ({class name: value}), ``confusion``
        (list of lists, rows = true class; None for multi-label), ``splits`` (per-input numbers), sizes.
    """
    items = _as_list(scores)
    if not items:
        raise ParameterError("evaluate: expected at least one score file, got none")
    if top_k < 1:
        raise ParameterError(f"evaluate: top_k must be >= 1, got {top_k}")
    splits = _as_list(split) if isinstance(split, (list, tuple)) else [split] * len(items)
    if len(splits) != len(items):
        raise ParameterError(f"evaluate: got {len(items)} score files but {len(splits)} split numbers")
    seen: dict = {}
    for item, sp in zip(items, splits):  # one file twice would count as two splits and halve the spread
        if isinstance(item, (str, os.PathLike)):
            key = (os.path.realpath(item), sp)
            if key in seen:
                raise ParameterError(f"evaluate: {os.fspath(item)} is given twice (as {seen[key]} before); each "
                                     "score file is one split: give each once")
            seen[key] = os.fspath(item)
    if any(s is not None for s in splits) and manifest is None:
        raise ParameterError("evaluate: split= needs manifest= (the split columns live in the manifest)")
    man = _manifest(manifest)

    per_split, names, ranked = [], None, []
    conf_sum = None
    for item, sp in zip(items, splits):
        src = str(item) if not isinstance(item, Scores) else "<scores>"
        sc = as_scores(item)
        if names is None:
            names = list(sc.class_names)
        elif list(sc.class_names) != names:
            raise FormatError(src, "class names differ from the first score file's; all inputs must share classes")
        n_missing = 0
        if man is not None:
            sc, n_missing = _align_with_manifest(sc, src, man, sp)
        targets = sc.targets()
        lab = targets.any(axis=1)
        if not lab.any():
            raise FormatError(src, "no video has a known label; give the dataset's manifest (idtfv evaluate "
                                   "--manifest; evaluate(manifest=) in Python) or write labels into the score file's "
                                   "label column")
        m = split_metrics(sc.scores[lab], targets[lab], top_k=top_k)
        ranked.append((sc.scores[lab], targets[lab]))
        m.update(source=src, split=sp, n_videos=int(lab.sum()), n_unlabelled=int((~lab).sum()), n_missing=n_missing)
        per_split.append(m)
        if m["confusion"] is not None:
            conf_sum = m["confusion"] if conf_sum is None else conf_sum + m["confusion"]

    multilabel = any(m["multilabel"] for m in per_split)
    if multilabel:
        conf_sum = None

    def mean_of(key):
        vals = [m[key] for m in per_split if m[key] is not None and not math.isnan(m[key])]
        return float(np.mean(vals)) if vals else math.nan

    accs = np.array([m["accuracy"] for m in per_split])
    pca = _nanmean_rows([m["per_class_accuracy"] for m in per_split])
    aps = _nanmean_rows([m["average_precision"] for m in per_split])
    _warn_undefined(names, pca, aps)
    topk_key = f"top{top_k}"
    ci = bootstrap_accuracy_ci([m["hits"] for m in per_split], n_resamples=n_bootstrap, level=ci_level,
                               seed=bootstrap_seed)
    maps = [m["mAP"] for m in per_split if not math.isnan(m["mAP"])]
    map_ci = bootstrap_map_ci([r[0] for r in ranked], [r[1] for r in ranked], n_resamples=n_bootstrap,
                              level=ci_level, seed=bootstrap_seed)
    report = {
        "n_splits": len(per_split),
        "n_classes": len(names),
        "multilabel": multilabel,
        "n_videos": int(sum(m["n_videos"] for m in per_split)),
        "accuracy": _json_num(accs.mean()),
        "accuracy_std": _json_num(accs.std()),
        "n_correct": int(sum(m["n_correct"] for m in per_split)),
        "accuracy_ci": [_json_num(ci[0]), _json_num(ci[1])],
        "bootstrap": {"resamples": int(n_bootstrap), "level": float(ci_level), "seed": int(bootstrap_seed)},
        "mean_class_accuracy": _json_num(mean_of("mean_class_accuracy")),
        "mAP": _json_num(mean_of("mAP")),
        "mAP_std": _json_num(np.std(maps)) if maps else None,
        "mAP_ci": [_json_num(map_ci[0]), _json_num(map_ci[1])],
        topk_key: _json_num(mean_of("topk")) if len(names) >= top_k else None,
        "per_class_accuracy": {c: _json_num(v) for c, v in zip(names, pca)},
        "average_precision": {c: _json_num(v) for c, v in zip(names, aps)},
        "class_names": names,
        "confusion": conf_sum.tolist() if conf_sum is not None else None,
        "splits": [
            {
                "source": m["source"],
                "split": m["split"],
                "n_videos": m["n_videos"],
                "n_unlabelled": m["n_unlabelled"],
                "n_missing": m["n_missing"],
                "accuracy": _json_num(m["accuracy"]),
                "n_correct": m["n_correct"],
                "mean_class_accuracy": _json_num(m["mean_class_accuracy"]),
                "mAP": _json_num(m["mAP"]),
                topk_key: _json_num(m["topk"]),
            }
            for m in per_split
        ],
    }
    if confusion_png is not None and conf_sum is not None:
        from .plots import plot_confusion

        acc_txt = f"accuracy {100 * accs.mean():.2f}%"
        plot_confusion(conf_sum, names, confusion_png, title=f"{title} - {acc_txt}" if title else acc_txt)
    if report_json is not None:
        write_report(report, report_json)
    return report


def write_report(report: dict, path) -> Path:
    """Write a report dict as indented JSON, atomically (NaN -> null)."""
    path = Path(path)
    text = json.dumps(report, indent=2, allow_nan=False) + "\n"
    atomic_write_text(path, text)
    return path


def summary_line(report: dict, prefix: str = "") -> str:
    """The one-line summary of an :func:`evaluate` report that every command prints, e.g. ``accuracy 62.50%
    [5/8 correct, 95% CI 25.00-87.50%], mean class accuracy 62.50%, mAP 70.83% [95% CI 50.00-95.83%] on 8 videos,
    4 classes``; of an :func:`evaluate_detections` report (``task: "detection"``), the detection mAP at each
    temporal IoU and their average with its bootstrap interval.

    Undefined figures (``None``, null in report.json) print as ``n/a``; several splits add the standard
    deviations; top-5 appears when the report has it (at least 5 classes)."""
    def pct(value) -> str:  # None = undefined on this data (null in report.json)
        return "n/a" if value is None else f"{100 * value:.2f}%"

    if report.get("task") == "detection":
        return _detection_summary(report, prefix, pct)

    parts = [f"accuracy {pct(report.get('accuracy'))}"]
    if report.get("n_splits", 1) > 1 and report.get("accuracy_std") is not None:
        parts[-1] += f" (+-{100 * report['accuracy_std']:.2f} over {report['n_splits']} splits)"
    if report.get("n_correct") is not None:  # small test sets: the count and the bootstrap interval beside the %
        honest = f"{report['n_correct']}/{report['n_videos']} correct"
        ci, boot = report.get("accuracy_ci"), report.get("bootstrap") or {}
        if ci and None not in ci:
            honest += f", {100 * boot.get('level', 0.95):g}% CI {100 * ci[0]:.2f}-{100 * ci[1]:.2f}%"
        parts[-1] += f" [{honest}]"
    parts.append(f"mean class accuracy {pct(report.get('mean_class_accuracy'))}")
    parts.append(f"mAP {pct(report.get('mAP'))}")
    if report.get("n_splits", 1) > 1 and report.get("mAP_std") is not None:
        parts[-1] += f" (+-{100 * report['mAP_std']:.2f})"
    ci = report.get("mAP_ci")
    if ci and None not in ci and report.get("mAP") is not None:
        level = 100 * (report.get("bootstrap") or {}).get("level", 0.95)
        parts[-1] += f" [{level:g}% CI {100 * ci[0]:.2f}-{100 * ci[1]:.2f}%]"
    if report.get("top5") is not None:  # None also when there are fewer than 5 classes: not applicable
        parts.append(f"top-5 {pct(report['top5'])}")
    return f"{prefix}{', '.join(parts)} on {report['n_videos']} videos, {report['n_classes']} classes"


def _detection_summary(report: dict, prefix: str, pct) -> str:
    """The summary line of an :func:`evaluate_detections` report, e.g. ``detection mAP at temporal IoU 0.1 75.00%,
    0.2 ..., 0.5 40.00%; average 60.00% [95% CI 41.67-80.00%] on 4 videos, 8 classes, 12 intervals``."""
    maps = ", ".join(f"{k} {pct(v)}" for k, v in report["mAP"].items())
    avg = f"average {pct(report.get('average_mAP'))}"
    ci, boot = report.get("average_mAP_ci"), report.get("bootstrap") or {}
    if ci:
        avg += f" [{100 * boot.get('level', 0.95):g}% CI {100 * ci[0]:.2f}-{100 * ci[1]:.2f}%]"
    return (f"{prefix}detection mAP at temporal IoU {maps}; {avg} on {report['n_videos']} videos, "
            f"{report['n_classes']} classes, {report['n_ground_truth']} intervals")
