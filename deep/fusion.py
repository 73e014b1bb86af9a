"""Two-stream fusion by a linear SVM on stacked scores (Simonyan & Zisserman 2014, sec. 6).

``stack_scores`` reads the ``scores_train.csv`` and ``scores.csv`` of several ``train-deep`` runs (e.g. the
spatial RGB net and the temporal flow net), aligns them by video id, turns each run's scores into class
posteriors (softmax) and writes their concatenation (n, M C) as a feature file (``idtfv.classify.scores`` format)
for every train and test video; ``idtfv train-svm --features stacked.npz`` then trains the fusion SVM.
Fusion by averaging is ``idtfv fuse A/scores.csv B/scores.csv --normalize softmax``.

Caveat: the training videos' scores come from nets trained on those videos, so they are more confident than the
test scores; the paper does the same.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from idtfv.errors import FormatError

__all__ = ["stack_scores"]


def _softmax(s: np.ndarray) -> np.ndarray:
    e = np.exp(s - s.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def stack_scores(run_dirs, out_path) -> Path:
    """Stack the softmax scores of ``run_dirs`` (each with ``scores_train.csv`` and ``scores.csv``) into a
    feature file at ``out_path``; returns its path. Runs must cover the same videos and class names."""
    from idtfv.classify.scores import read_scores, write_features

    blocks, ids, labels, names = [], None, None, None
    for d in map(Path, run_dirs):
        parts = [read_scores(d / f) for f in ("scores_train.csv", "scores.csv")]
        vid = [v for p in parts for v in p.video_ids]
        sc = np.concatenate([p.scores for p in parts])
        lab = np.concatenate([np.asarray(p.labels) for p in parts])
        if ids is None:
            ids, labels, names = vid, lab, list(parts[0].class_names)
        else:
            if list(parts[0].class_names) != names:
                raise FormatError(d / "scores.csv", f"class names differ from {run_dirs[0]}'s; stack runs of one "
                                                    "manifest")
            pos = {v: i for i, v in enumerate(vid)}
            missing = [v for v in ids if v not in pos]
            if missing or len(vid) != len(ids):
                raise FormatError(d / "scores.csv", f"videos differ from {run_dirs[0]}'s (e.g. {missing[:3]}); "
                                                    "stack runs of one manifest split")
            sc = sc[[pos[v] for v in ids]]
        blocks.append(_softmax(sc))
    if ids is None:
        raise FormatError(Path("."), "no run directories given")
    return write_features(out_path, ids, np.concatenate(blocks, axis=1), labels)
