"""Per-channel SVMs, concatenated vs late-fused channels, and validation splits drawn from the training videos.

A video vector is the concatenation of its descriptor channels' encodings (Traj, HOG, HOF, MBHx, MBHy; columns
``blocks[ch] = (start, stop)``). Two ways to combine the channels:

- ``"concat"``: one SVM on the whole vector (the IJCV 2016 recipe, Wang et al.; ``idtfv train-svm``'s default);
- ``"late"``: one SVM per channel, their test scores z-scored per video and averaged with equal weights
  (:func:`idtfv.classify.fusion.fuse_scores`' rule).

``combine="validate"`` chooses between them on a **validation split drawn from the training videos by group**
(:func:`validation_split`: a seeded fraction of the training groups; the test split is never looked at): both are
trained on the other training videos and scored on the validation videos; the higher validation accuracy wins
(then the higher mAP; a tie keeps ``concat``), and the winner is retrained on all training videos.

Every figure of this module comes with ``n_correct`` beside the accuracy.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from idtfv.errors import ParameterError

from .evaluate import split_metrics
from .fusion import zscore

__all__ = ["COMBINES", "DEFAULT_VALIDATION_FRACTION", "validation_split", "figures", "ChannelResult",
           "evaluate_channels", "fit_scores"]

#: How the channels are combined: one SVM on the concatenation, late fusion of per-channel SVMs, or the better of
#: the two on a validation split of the training videos.
COMBINES = ("concat", "late", "validate")
#: Fraction of the training groups held out for validation (at least one group).
DEFAULT_VALIDATION_FRACTION = 0.25


def validation_split(groups, *, fraction: float = DEFAULT_VALIDATION_FRACTION, seed: int = 0) -> np.ndarray:
    """Which training videos form the validation split: whole groups, a seeded fraction of them.

    Parameters
    ----------
    groups : sequence of str, one per training video (an empty string: the video is a group of its own)
    fraction : float in (0, 1), keyword-only
        ``max(1, round(fraction * n_groups))`` groups are held out (at most ``n_groups - 1``).
    seed : int
        Seeds the permutation of the sorted group ids.

    Returns
    -------
    ndarray (n,) bool, True = validation video.
    """
    if not 0 < fraction < 1:
        raise ParameterError(f"validation fraction: expected a number in (0, 1), got {fraction!r}")
    keys = [g if g else f"\0{i}" for i, g in enumerate(groups)]
    unique = sorted(set(keys))
    if len(unique) < 2:
        raise ParameterError(f"a validation split needs at least 2 groups of training videos, got {len(unique)}")
    n_val = min(len(unique) - 1, max(1, int(round(fraction * len(unique)))))
    perm = np.random.default_rng(int(seed)).permutation(len(unique))
    held = {unique[j] for j in perm[:n_val]}
    return np.array([k in held for k in keys], dtype=bool)


def figures(scores: np.ndarray, label_sets, n_classes: int) -> dict:
    """``accuracy``, ``n_correct``, ``n_videos`` and ``mAP`` of scores (n, C) against label sets (None when
    undefined)."""
    targets = np.zeros((len(label_sets), n_classes), dtype=bool)
    for i, s in enumerate(label_sets):
        targets[i, list(s)] = True
    lab = targets.any(axis=1)
    m = split_metrics(np.asarray(scores)[lab], targets[lab])

    def num(x):
        return None if x is None or math.isnan(x) else round(float(x), 10)

    return {"accuracy": num(m["accuracy"]), "n_correct": m["n_correct"], "n_videos": int(lab.sum()),
            "mAP": num(m["mAP"])}


def fit_scores(X, train_index, y, score_index, *, classes, C: float, loss: str, tol: float, n_jobs: int,
               random_state: int) -> np.ndarray:
    """Train the one-vs-rest linear SVM on ``X[train_index]`` and score ``X[score_index]``; (n, C) float64."""
    from ._kernel_svm import linear_kernel
    from .svm import LinearSVM

    K = linear_kernel(X, index=train_index)
    model = LinearSVM(C=float(C), loss=loss, tol=tol, n_jobs=n_jobs, random_state=random_state)
    model.fit(X, y, classes=classes, index=train_index, kernel=K)
    return model.decision_function(X, index=score_index)


def _late(channel_scores: list) -> np.ndarray:
    return sum(zscore(s) for s in channel_scores) / len(channel_scores)


def _check_blocks(blocks, dim: int) -> dict:
    if not blocks:
        raise ParameterError("channels: expected {name: (start, stop)} column ranges of the vector, got none")
    out = {}
    for name, (a, b) in blocks.items():
        a, b = int(a), int(b)
        if not 0 <= a < b <= dim:
            raise ParameterError(f"channels: {name!r} spans columns [{a}, {b}), outside the vector's {dim} columns")
        out[str(name)] = (a, b)
    return out


@dataclass
class ChannelResult:
    """What :func:`evaluate_channels` found.

    Attributes
    ----------
    scores : ndarray (n_test, C), the chosen combination's test scores
    channels : dict, per channel and for ``concat`` and ``late``: test figures (:func:`figures`)
    combination : dict, ``chosen``, ``rule`` and (``validate``) the ``validation`` figures of both
    validation : tuple or None, ``(video_ids, scores (n_val, C), label_sets)`` of the validation videos, scored
        by the chosen combination trained without them (``validate`` only)
    """

    scores: np.ndarray
    channels: dict
    combination: dict
    validation: tuple | None = None


def evaluate_channels(data, concat_scores, *, blocks, combine: str = "concat", C: float, loss: str = "squared_hinge",
                      tol: float = 1e-4, n_jobs: int = 1, random_state: int = 0,
                      validation_fraction: float | None = None) -> ChannelResult:
    """Per-channel SVMs of a split, their late fusion, and the choice between it and the concatenation.

    Parameters
    ----------
    data : SplitData (:func:`idtfv.classify.stage.load_split`)
    concat_scores : ndarray (n_test, C), the test scores of the SVM on the whole vector
    blocks : {channel: (start, stop)} columns of each channel
    combine : ``concat``, ``late`` or ``validate`` (:data:`COMBINES`)
    C, loss, tol, n_jobs, random_state : the SVM's options, the same for every channel
    validation_fraction : float, the training groups held out by ``validate`` (default
        :data:`DEFAULT_VALIDATION_FRACTION`); seeded by ``random_state``
    """
    if combine not in COMBINES:
        raise ParameterError(f"combine: expected one of {', '.join(COMBINES)}, got {combine!r}")
    blocks = _check_blocks(blocks, data.X.shape[1])
    classes = np.arange(len(data.class_names))
    opts = dict(classes=classes, C=C, loss=loss, tol=tol, n_jobs=n_jobs, random_state=random_state)
    n_classes = len(data.class_names)

    per_channel = {}
    for name, (a, b) in blocks.items():
        per_channel[name] = fit_scores(data.X[:, a:b], data.train_index, data.y_train, data.test_index, **opts)
    late = _late(list(per_channel.values()))
    report = {name: figures(s, data.test_label_sets, n_classes) for name, s in per_channel.items()}
    report["concat"] = figures(concat_scores, data.test_label_sets, n_classes)
    report["late"] = figures(late, data.test_label_sets, n_classes)

    validation = None
    if combine == "validate":
        fraction = DEFAULT_VALIDATION_FRACTION if validation_fraction is None else validation_fraction
        groups = [g or "" for g in data.groups_train]
        is_val = validation_split(groups, fraction=fraction, seed=random_state)
        tr, va = data.train_index[~is_val], data.train_index[is_val]
        y_tr = data.y_train[~is_val]
        val_sets = [tuple(int(k) for k in np.flatnonzero(row)) if data.multilabel else (int(row),)
                    for row in data.y_train[is_val]]
        val_concat = fit_scores(data.X, tr, y_tr, va, **opts)
        val_late = _late([fit_scores(data.X[:, a:b], tr, y_tr, va, **opts) for a, b in blocks.values()])
        fig = {"concat": figures(val_concat, val_sets, n_classes), "late": figures(val_late, val_sets, n_classes)}

        def key(name):
            f = fig[name]
            return (f["n_correct"], -1.0 if f["mAP"] is None else f["mAP"], name == "concat")

        chosen = max(("concat", "late"), key=key)
        groups_val = sorted({g for g, v in zip(groups, is_val) if v and g})
        combination = {"chosen": chosen, "rule": "higher validation accuracy, then mAP; a tie keeps concat",
                       "validation": {"fraction": fraction, "seed": int(random_state),
                                      "n_train": int(len(tr)), "n_videos": int(len(va)), "groups": groups_val,
                                      **fig}}
        ids = [data.train_ids[i] for i in np.flatnonzero(is_val)] if data.train_ids else []
        validation = (ids, val_concat if chosen == "concat" else val_late, val_sets)
    else:
        chosen = combine
        combination = {"chosen": chosen, "rule": f"fixed ({combine})"}
    scores = concat_scores if chosen == "concat" else late
    return ChannelResult(scores=scores, channels=report, combination=combination, validation=validation)
