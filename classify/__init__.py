"""classify: score/feature file formats, linear SVM, k-NN, evaluation and late fusion.

Modules: :mod:`~idtfv.scores` (score CSV and feature ``.npz`` formats), :mod:`~idtfv.classify.svm` (one-vs-rest
linear SVM through the linear kernel, C selection), :mod:`~idtfv.classify._kernel_svm` and
:mod:`~idtfv.classify._svm_dcd_nb` (kernel blocks, dual coordinate descent kernel), :mod:`~idtfv.classify.knn`,
:mod:`~idtfv.classify.evaluate` (clip figures, and THUMOS'14 detection mAP: :func:`evaluate_detections`),
:mod:`~idtfv.classify.intervals` (detection CSV files), :mod:`~idtfv.classify.fusion`, :mod:`~idtfv.classify.plots`
(confusion PNG), :mod:`~idtfv.classify.detect` (sliding-window detection), :mod:`~idtfv.classify.cv`
(cross-validation), :mod:`~idtfv.classify.stage` (one split: train, score, report) and :mod:`~idtfv.classify.cli`
(``idtfv train-svm``, ``train-knn``, ``evaluate``, ``fuse``, ``detect``, ``cv``).

:mod:`~idtfv.classify.fusion` is the one home of score normalisation (:func:`softmax`, :func:`zscore`) and late
fusion (:func:`fuse_scores`: weighted average; :func:`stack_scores`: stacked scores for a fusion SVM), also used by
:mod:`idtfv.deep`.

The formats, :func:`evaluate` and the fusion functions are imported eagerly (NumPy only; importing the
``evaluate`` function here also keeps it from being shadowed by its submodule of the same name); the scikit-learn
based classifiers load on first use.
"""

from __future__ import annotations

import importlib

from idtfv.scores import Features, Scores, read_features, read_scores, write_features, write_scores
from .evaluate import evaluate, evaluate_detections, summary_line
from .fusion import NORMALIZERS, fuse_scores, softmax, stack_scores, zscore

__all__ = [
    "Scores",
    "Features",
    "write_scores",
    "read_scores",
    "write_features",
    "read_features",
    "evaluate",
    "evaluate_detections",
    "summary_line",
    "validation_split",
    "fuse_scores",
    "stack_scores",
    "softmax",
    "zscore",
    "NORMALIZERS",
    "LinearSVM",
    "KNNClassifier",
]

_LAZY = {
    # the one rule that draws a validation split from the training videos by group (train-svm, cv, train-deep)
    "validation_split": ("idtfv.classify.channels", "validation_split"),
    "LinearSVM": ("idtfv.classify.svm", "LinearSVM"),
    "KNNClassifier": ("idtfv.classify.knn", "KNNClassifier"),
}


def __getattr__(name):
    if name in _LAZY:
        mod, attr = _LAZY[name]
        return getattr(importlib.import_module(mod), attr)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
