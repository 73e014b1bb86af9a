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
"""

from __future__ import annotations

import os

import numpy as np

from idtfv.errors import FormatError, ParameterError

from idtfv.scores import Features, Scores, read_scores

__all__ = ["softmax", "zscore", "NORMALIZERS", "fuse_scores", "stack_scores"]


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
    loaded = [x if isinstance(x, Scores) else read_scores(x) for x in items]
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
