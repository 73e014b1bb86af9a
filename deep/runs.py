"""A ``train-deep`` run directory's score files, and stacking several runs for SVM fusion (``idtfv stack-scores``).

Two-stream fusion by a linear SVM on stacked scores (Simonyan & Zisserman 2014, sec. 6): :func:`stack_runs`
reads the ``scores_train.csv`` and ``scores.csv`` of several runs (e.g. the spatial RGB net and the temporal flow
net), and writes their softmax scores side by side, ``(n, M C)``, as a feature file for every train and test
video (:func:`idtfv.classify.stack_scores`); ``idtfv train-svm --features stacked.npz`` then trains the fusion
SVM. Fusion by averaging is ``idtfv fuse A/scores.csv B/scores.csv --normalize softmax``.

Caveat: the training videos' scores come from nets trained on those videos, so they are more confident than the
test scores; the paper does the same.

NumPy only (no torch), so that ``idtfv stack-scores`` starts fast.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from idtfv.atomic import same_file
from idtfv.classify import Scores, read_scores, stack_scores, write_features
from idtfv.errors import FormatError, ParameterError

__all__ = ["SCORES_TRAIN", "SCORES_TEST", "read_run_scores", "stack_runs"]

#: Score files of a run: the split's training videos, and its test videos.
SCORES_TRAIN = "scores_train.csv"
SCORES_TEST = "scores.csv"


def read_run_scores(run_dir) -> Scores:
    """The scores of a run's training then test videos (``scores_train.csv`` rows, then ``scores.csv`` rows)."""
    d = Path(run_dir)
    train, test = read_scores(d / SCORES_TRAIN), read_scores(d / SCORES_TEST)
    if list(test.class_names) != list(train.class_names):
        raise FormatError(d / SCORES_TEST, f"class names differ from {SCORES_TRAIN}'s; re-run train-deep")
    return Scores(video_ids=list(train.video_ids) + list(test.video_ids),
                  scores=np.concatenate([train.scores, test.scores]), class_names=list(train.class_names),
                  labels=np.concatenate([train.labels, test.labels]),
                  label_sets=list(train.label_sets) + list(test.label_sets))


def stack_runs(run_dirs, out_path) -> Path:
    """Stack the softmax scores of ``run_dirs`` into a feature file at ``out_path``; return its path.

    Rows follow the first run's video order (its training videos, then its test videos); the runs must score
    the same videos with the same class names (:class:`idtfv.errors.FormatError` naming the run otherwise).
    """
    run_dirs = [Path(d) for d in run_dirs]
    out_path = Path(out_path)
    if out_path.suffix != ".npz":
        raise ParameterError(f"--out {out_path}: expected a feature file name ending in .npz (the input of idtfv "
                             "train-svm --features)")
    for d in run_dirs:
        for name in (SCORES_TRAIN, SCORES_TEST, "features.npz"):
            if same_file(out_path, d / name):
                raise ParameterError(f"--out {out_path}: is {d / name}, a file of the run {d}; writing there would "
                                     "replace it: give another file name")
    feats = stack_scores([read_run_scores(d) for d in run_dirs], normalize="softmax",
                         sources=[str(d) for d in run_dirs])
    return write_features(out_path, feats.video_ids, feats.features, feats.labels)
