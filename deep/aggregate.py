"""Multi-view test aggregation: scores of several views (clips x crops) per video -> one row per video.

Fusing the scores of several models (streams) is :func:`idtfv.classify.fuse_scores`.
"""

from __future__ import annotations

import numpy as np

from idtfv.errors import ParameterError

__all__ = ["aggregate_views"]

_REDUCE = {"mean": np.mean, "max": np.max}


def aggregate_views(video_ids, scores, *, how: str = "mean") -> tuple[list[str], np.ndarray]:
    """Combine the view scores of each video.

    Parameters
    ----------
    video_ids : sequence of str, length n_views (one per view, videos may repeat in any order).
    scores : array (n_views, C).
    how : "mean" (average of the view scores) or "max".

    Returns
    -------
    ids : the distinct video ids in order of first appearance.
    agg : (len(ids), C) float64.
    """
    if how not in _REDUCE:
        raise ParameterError(f"how must be one of {sorted(_REDUCE)}, got {how!r}")
    scores = np.asarray(scores, dtype=np.float64)
    ids = [str(v) for v in video_ids]
    if scores.ndim != 2 or scores.shape[0] != len(ids):
        raise ParameterError(f"need one score row per view id: {len(ids)} ids, scores of shape {scores.shape}")
    order: dict[str, list[int]] = {}
    for i, v in enumerate(ids):
        order.setdefault(v, []).append(i)
    agg = np.stack([_REDUCE[how](scores[rows], axis=0) for rows in order.values()]) if order else \
        np.zeros((0, scores.shape[1]))
    return list(order), agg
