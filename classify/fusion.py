"""Late fusion of score files: a weighted average of per-video normalised scores.

For inputs m = 1..M with scores s_m (n, C) aligned by video id and weights w_m >= 0::

    fused[i] = sum_m w_m * norm(s_m[i]) / sum_m w_m

with ``norm`` applied to each video's score row (default ``"zscore"``):

- ``"zscore"``: (s - mean_c s) / std_c s (a constant row becomes zeros). Invariant to each classifier's offset
  and scale, so SVM margins and CNN logits mix fairly;
- ``"softmax"``: exp(s - max) / sum exp(s - max) (the two-stream / TSN practice for CNN logits);
- ``"none"``: raw scores (TSN's weighted average of class scores).
"""

from __future__ import annotations

import os

import numpy as np

from idtfv.errors import FormatError, ParameterError

from .scores import Scores, read_scores

__all__ = ["fuse_scores", "normalize_scores", "NORMALIZERS"]


def _zscore(s: np.ndarray) -> np.ndarray:
    mu = s.mean(axis=1, keepdims=True)
    sd = s.std(axis=1, keepdims=True)
    return np.divide(s - mu, sd, out=np.zeros_like(s), where=sd > 0)


def _softmax(s: np.ndarray) -> np.ndarray:
    e = np.exp(s - s.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


NORMALIZERS = {"zscore": _zscore, "softmax": _softmax, "none": lambda s: s.astype(np.float64, copy=True)}


def normalize_scores(scores, method: str = "zscore") -> np.ndarray:
    """Normalise each row (video) of a score matrix (n, C) with ``method`` in :data:`NORMALIZERS`."""
    if method not in NORMALIZERS:
        raise ParameterError(f"normalize must be one of {sorted(NORMALIZERS)}, got {method!r}")
    return NORMALIZERS[method](np.asarray(scores, dtype=np.float64))


def fuse_scores(inputs, *, weights=None, normalize: str = "zscore") -> Scores:
    """Fuse several score files of the same videos and classes.

    Parameters
    ----------
    inputs : sequence of Scores or paths, length M >= 1
        Must hold the same set of video ids (any order) and the same class names in the same order.
    weights : sequence of float, length M, optional, keyword-only
        Non-negative, not all zero (default: equal weights).
    normalize : {"zscore", "softmax", "none"}
        Per-video normalisation applied to each input before averaging.

    Returns
    -------
    Scores
        Rows in the first input's video order; labels merged from the inputs (known labels must agree).

    Raises
    ------
    FormatError
        Mismatched video ids, class names, or conflicting labels (names the offending file).
    ParameterError
        Bad weights or normalisation name.
    """
    items = [inputs] if isinstance(inputs, (Scores, str, os.PathLike)) else list(inputs)
    if not items:
        raise ParameterError("fuse_scores: expected at least one score file, got none")
    if normalize not in NORMALIZERS:
        raise ParameterError(f"fuse_scores: normalize must be one of {sorted(NORMALIZERS)}, got {normalize!r}")
    w = np.ones(len(items)) if weights is None else np.asarray(weights, dtype=np.float64).ravel()
    if w.shape != (len(items),) or not np.isfinite(w).all() or (w < 0).any() or w.sum() <= 0:
        raise ParameterError(
            f"fuse_scores: weights must be {len(items)} non-negative numbers, not all zero; "
            f"got {list(np.atleast_1d(w))}"
        )
    srcs = ["<scores>" if isinstance(x, Scores) else str(x) for x in items]
    loaded = [x if isinstance(x, Scores) else read_scores(x) for x in items]
    ref = loaded[0]
    ids = list(ref.video_ids)
    sets = list(ref.label_sets)
    fused = np.zeros(ref.scores.shape, dtype=np.float64)
    for src, sc, wm in zip(srcs, loaded, w):
        if list(sc.class_names) != list(ref.class_names):
            raise FormatError(src, f"class names differ from {srcs[0]}'s (need the same classes in the same order)")
        pos = {v: i for i, v in enumerate(sc.video_ids)}
        if len(pos) != len(ids) or any(v not in pos for v in ids):
            only_ref = [v for v in ids if v not in pos]
            only_here = [v for v in sc.video_ids if v not in set(ids)]
            ex = (only_ref or only_here)[0]
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
        if wm > 0:
            fused += wm * NORMALIZERS[normalize](sc.scores[order])
    fused /= w.sum()
    labels = np.array([s[0] if len(s) == 1 else -1 for s in sets], dtype=np.int64)
    return Scores(video_ids=ids, scores=fused, class_names=list(ref.class_names), labels=labels, label_sets=sets)
