"""Late fusion of score files: per-video normalisation, weighted averaging and stacking.

The one home of score normalisation and fusion; ``idtfv fuse`` (:func:`fuse_scores`) and ``idtfv stack-scores``
(:func:`stack_scores`, through :mod:`idtfv.deep`) use it.

For inputs m = 1..M with scores s_m (n, C) aligned by video id and weights w_m >= 0::

    fused[i]   = sum_m w_m * norm(s_m[i]) / sum_m w_m            (fuse_scores: weighted late fusion)
    stacked[i] = [norm(s_1[i]), ..., norm(s_M[i])]   (n, M C)   (stack_scores: input of a fusion SVM)

with ``norm`` applied to each video's score row:

- ``"zscore"`` (:func:`zscore`): (s - mean_c s) / std_c s (a constant row becomes zeros). Invariant to each
  classifier's offset and scale, so SVM margins and CNN logits mix fairly (``fuse_scores``' default);
- ``"softmax"`` (:func:`softmax`): exp(s - max) / sum exp(s - max), class posteriors from CNN logits (the
  two-stream / TSN practice; ``stack_scores``' default, Simonyan & Zisserman 2014, sec. 6);
- ``"none"``: raw scores (TSN's weighted average of class scores).

Weights chosen on validation videos (:func:`choose_weights`, ``idtfv fuse --weights validate``): every weight
vector of a grid on the simplex (steps of 1/10 by default) is tried on the inputs' **validation** score files
(e.g. ``idtfv train-svm --validation 0.25`` writes ``validation_scores.csv``, the scores of a seeded quarter of
the training groups from an SVM trained on the other training videos); the best validation accuracy wins, then
the best mAP, then the weights closest to equal. The test scores are never looked at.
"""

from __future__ import annotations

import os

import numpy as np

from idtfv.errors import FormatError, ParameterError

from idtfv.scores import Features, Scores, as_scores


__all__ = ["softmax", "zscore", "NORMALIZERS", "fuse_scores", "stack_scores", "choose_weights", "weight_grid"]


def zscore(scores) -> np.ndarray:
    """Row-wise z-score of ``scores (n, C)``: ``(s - mean) / std`` per row, zeros for a constant row; float64."""
    s = np.asarray(scores, dtype=np.float64)
    mu = s.mean(axis=1, keepdims=True)
    sd = s.std(axis=1, keepdims=True)
    return np.divide(s - mu, sd, out=np.zeros_like(s), where=sd > 0)


def softmax(scores) -> np.ndarray:
    """Row-wise softmax of ``scores (n, C)``: ``exp(s - max) / sum exp(s - max)``; float64 rows summing to 1."""
    s = np.asarray(scores, dtype=np.float64)
    e = np.exp(s - s.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def _raw(scores) -> np.ndarray:
    return np.asarray(scores).astype(np.float64, copy=True)


#: Per-video normalisations by name: ``f(scores (n, C)) -> (n, C) float64``.
NORMALIZERS = {"zscore": zscore, "softmax": softmax, "none": _raw}


def _check_normalize(normalize: str, who: str) -> None:
    if normalize not in NORMALIZERS:
        raise ParameterError(f"{who}: normalize must be one of {sorted(NORMALIZERS)}, got {normalize!r}")


def _items(inputs, who: str) -> list:
    items = [inputs] if isinstance(inputs, (Scores, str, os.PathLike)) else list(inputs)
    if not items:
        raise ParameterError(f"{who}: expected at least one score file, got none")
    return items


def _align(items: list, sources, who: str):
    """Load ``items`` and align them on the first one's video order.

    Returns ``(ref, rows, label_sets)``: the first input (Scores), one ``(score matrix (n, C) in ref's video
    order)`` per input, and the merged per-video label sets. Raises :class:`FormatError` naming the input whose
    class names, video ids or labels disagree with the first's.
    """
    if sources is None:
        srcs = ["<scores>" if isinstance(x, Scores) else str(x) for x in items]
    else:
        srcs = [str(s) for s in sources]
        if len(srcs) != len(items):
            raise ParameterError(f"{who}: {len(items)} inputs but {len(srcs)} source names")
    loaded = [as_scores(x) for x in items]
    ref = loaded[0]
    ids = list(ref.video_ids)
    sets = list(ref.label_sets)
    rows = []
    for src, sc in zip(srcs, loaded):
        if list(sc.class_names) != list(ref.class_names):
            raise FormatError(src, f"class names differ from {srcs[0]}'s (need the same classes in the same order)")
        pos = {v: i for i, v in enumerate(sc.video_ids)}
        if len(pos) != len(ids) or any(v not in pos for v in ids):
            only_ref = [v for v in ids if v not in pos]
            only_here = [v for v in sc.video_ids if v not in set(ids)]
            ex = (only_ref or only_here or [sc.video_ids[0]])[0]
            raise FormatError(
                src,
                f"video ids differ from {srcs[0]}'s ({len(only_ref)} missing here, {len(only_here)} extra; "
                f"e.g. {ex!r});"
                " score the same videos",
            )
        order = np.array([pos[v] for v in ids], dtype=np.int64)
        for i, j in enumerate(order):
            s = sc.label_sets[j]
            if s and sets[i] and s != sets[i]:
                raise FormatError(src, f"video {ids[i]!r}: label {s} conflicts with {sets[i]} in {srcs[0]}")
            if s and not sets[i]:
                sets[i] = s
        rows.append(sc.scores[order])
    return ref, rows, sets


def _single_labels(sets) -> np.ndarray:
    return np.array([s[0] if len(s) == 1 else -1 for s in sets], dtype=np.int64)


def fuse_scores(inputs, *, weights=None, normalize: str = "zscore", sources=None) -> Scores:
    """Weighted late fusion of several score files of the same videos and classes.

    Parameters
    ----------
    inputs : sequence of Scores or paths, length M >= 1
        Must hold the same set of video ids (any order) and the same class names in the same order.
    weights : sequence of float, length M, optional, keyword-only
        Non-negative, not all zero (default: equal weights).
    normalize : {"zscore", "softmax", "none"}
        Per-video normalisation (:data:`NORMALIZERS`) applied to each input before averaging.
    sources : sequence of str, length M, optional
        Names of the inputs in error messages (default: the paths; ``<scores>`` for in-memory Scores).

    Returns
    -------
    Scores
        ``scores (n, C)`` float64, rows in the first input's video order; labels merged from the inputs (known
        labels must agree).

    Raises
    ------
    FormatError
        Mismatched video ids, class names, or conflicting labels (names the offending file).
    ParameterError
        Bad weights or normalisation name.
    """
    items = _items(inputs, "fuse_scores")
    _check_normalize(normalize, "fuse_scores")
    n_items = len(items)
    w = np.ones(n_items) if weights is None else np.asarray(weights, dtype=np.float64).ravel()
    if w.shape != (n_items,) or not np.isfinite(w).all() or (w < 0).any() or w.sum() <= 0:
        raise ParameterError(
            f"fuse_scores: weights must be {n_items} non-negative numbers, not all zero; "
            f"got {list(np.atleast_1d(w))}"
        )
    ref, rows, sets = _align(items, sources, "fuse_scores")
    fused = np.zeros(ref.scores.shape, dtype=np.float64)
    for s, wm in zip(rows, w):
        if wm > 0:
            fused += wm * NORMALIZERS[normalize](s)
    fused /= w.sum()
    return Scores(video_ids=list(ref.video_ids), scores=fused, class_names=list(ref.class_names),
                  labels=_single_labels(sets), label_sets=sets)


def stack_scores(inputs, *, normalize: str = "softmax", sources=None) -> Features:
    """Stacked scores: per video, the normalised score rows of every input side by side (a fusion SVM's input).

    Parameters
    ----------
    inputs : sequence of Scores or paths, length M >= 1
        Same videos (any order) and the same class names in the same order, e.g. the spatial and the temporal
        stream's scores of every train and test video.
    normalize : {"softmax", "zscore", "none"}
        Per-video normalisation (:data:`NORMALIZERS`); softmax turns logits into class posteriors.
    sources : sequence of str, length M, optional
        Names of the inputs in error messages.

    Returns
    -------
    Features
        ``features (n, M C)`` float32 (input m's classes in columns ``m C .. m C + C - 1``), rows in the first
        input's video order, labels merged as in :func:`fuse_scores`.

    Raises
    ------
    FormatError, ParameterError
        As :func:`fuse_scores`.
    """
    items = _items(inputs, "stack_scores")
    _check_normalize(normalize, "stack_scores")
    ref, rows, sets = _align(items, sources, "stack_scores")
    stacked = np.concatenate([NORMALIZERS[normalize](s) for s in rows], axis=1)
    return Features(video_ids=list(ref.video_ids), features=stacked.astype(np.float32), labels=_single_labels(sets))


def weight_grid(n_inputs: int, steps: int = 10) -> np.ndarray:
    """Every weight vector ``(k_1, ..., k_M) / steps`` with non-negative integers ``k`` summing to ``steps``,
    shape (n, M), in lexicographic order of ``k`` (descending first weight)."""
    if n_inputs < 1 or steps < 1:
        raise ParameterError(f"weight_grid: expected n_inputs >= 1 and steps >= 1, got {n_inputs}, {steps}")

    def rec(m, left):
        if m == 1:
            yield (left,)
            return
        for k in range(left, -1, -1):
            for rest in rec(m - 1, left - k):
                yield (k, *rest)

    return np.array(list(rec(n_inputs, steps)), dtype=np.float64) / steps


def choose_weights(validation_inputs, *, normalize: str = "zscore", steps: int = 10, sources=None) -> dict:
    """Fusion weights chosen on validation score files (never on the test scores).

    Parameters
    ----------
    validation_inputs : sequence of Scores or paths, length M
        Each input's scores of the same validation videos (with labels), e.g. ``validation_scores.csv`` of
        ``idtfv train-svm --validation``.
    normalize : as :func:`fuse_scores`
    steps : int
        Grid resolution: weights are multiples of ``1 / steps`` summing to 1 (:func:`weight_grid`).
    sources : names of the inputs in error messages

    Returns
    -------
    dict: ``weights`` (list of M floats), ``accuracy``, ``n_correct``, ``n_videos``, ``mAP`` on the validation
    videos, ``equal_weights_accuracy`` (for comparison), ``candidates`` (grid size), ``rule``.
    """
    from .evaluate import split_metrics

    items = _items(validation_inputs, "choose_weights")
    _check_normalize(normalize, "choose_weights")
    ref, rows, sets = _align(items, sources, "choose_weights")
    labelled = np.array([bool(s) for s in sets])
    if not labelled.any():
        src = "<scores>" if isinstance(items[0], Scores) else str(items[0])
        raise FormatError(src, "the validation scores carry no labels; choosing weights needs labelled validation "
                               "videos (idtfv train-svm --validation writes them)")
    n_classes = ref.scores.shape[1]
    targets = np.zeros((int(labelled.sum()), n_classes), dtype=bool)
    for i, s in enumerate(s for s, k in zip(sets, labelled) if k):
        targets[i, list(s)] = True
    normed = [NORMALIZERS[normalize](r)[labelled] for r in rows]
    grid = weight_grid(len(items), steps)
    equal = np.full(len(items), 1.0 / len(items))
    best, best_key, equal_acc = None, None, None
    for w in grid:
        fused = sum(wm * s for wm, s in zip(w, normed) if wm > 0)
        m = split_metrics(fused, targets)
        m_ap = -1.0 if np.isnan(m["mAP"]) else m["mAP"]
        key = (m["n_correct"], round(m_ap, 12), -float(np.sum((w - equal) ** 2)))
        if best_key is None or key > best_key:
            best, best_key = (w, m), key
    w, m = best
    fused_eq = sum(s for s in normed) / len(normed)
    equal_acc = split_metrics(fused_eq, targets)["accuracy"]
    return {"weights": [round(float(x), 10) for x in w], "accuracy": float(m["accuracy"]),
            "n_correct": int(m["n_correct"]), "n_videos": int(labelled.sum()),
            "mAP": None if np.isnan(m["mAP"]) else float(m["mAP"]), "equal_weights_accuracy": float(equal_acc),
            "candidates": int(len(grid)), "normalize": normalize,
            "rule": "best validation accuracy, then mAP, then closest to equal weights"}
