"""One manifest split + one feature file -> trained classifier, test scores, report, confusion matrix, model.

This is the library behind ``idtfv train-svm`` and ``idtfv train-knn`` (the CLIs are thin shells over
:func:`run_svm_split` and :func:`run_knn_split`). Outputs in ``out/`` (all written atomically, byte-identical for
the same inputs and seed):

- ``model.npz`` + ``model.json`` — the SVM weights and metadata (SVM only);
- ``scores.csv`` — scores of the split's test videos (:mod:`idtfv.scores` format, true labels filled in);
- ``confusion.png`` — the confusion matrix (single-label data);
- ``validation_scores.csv`` — with ``validation_fraction`` (or ``combine="validate"``): scores of a validation
  subset of the training videos (whole groups, seeded; :func:`idtfv.classify.channels.validation_split`) from the
  classifier trained on the other training videos: the input of ``idtfv fuse --weights validate``;
- ``report.json`` — :func:`idtfv.classify.evaluate.evaluate`'s report plus a ``training`` section. It marks the
  run complete: a rerun removes the old one before writing anything, and it is written last, so a run killed
  half way never leaves a directory that looks finished.

A run holds ``out``'s lock (:func:`idtfv.lock.output_dir_lock`, ``out/.lock``) from the end of the input checks to
``report.json``: a second run into the same ``out`` meanwhile fails at once and writes nothing, so no reader can pair
one run's scores with another's report.

Result files hold results only, no run-environment detail (``n_jobs``): the same inputs and seed give the same
bytes with any ``--jobs``.

Labels come from the manifest (the feature file's labels, when known, must agree). Label ids must run 0..C-1
without gaps: an id that no video has (the manifest's placeholder name ``class<i>``) is refused. A class without
training videos gets a :class:`~idtfv.classify.evaluate.ResultWarning` (its classifier has no positive example).
Videos of the split without a feature vector (e.g. failed extraction) are left out and counted in the report
(``n_missing_train``, ``n_missing_test``); unlabelled training videos are left out too, and so are training videos
whose vector is all zeros (no trajectories, ``idtfv encode --keep-empty``; ``n_empty_train``, with a
:class:`~idtfv.classify.evaluate.ResultWarning`); such test videos are scored.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from idtfv.errors import FormatError, ManifestError, ParameterError
from idtfv.lock import output_dir_lock

from .evaluate import ResultWarning, _examples, evaluate, write_report
from idtfv.scores import Features, Scores, read_features, write_scores

__all__ = ["SplitData", "load_split", "run_svm_split", "run_knn_split"]


@dataclass
class SplitData:
    """Rows of one feature matrix selected for a manifest split.

    Attributes
    ----------
    X : ndarray (N, d), the whole feature matrix (not copied)
    train_index, test_index : ndarray of int, rows of X
    y_train : ndarray (n_train,) class ids, or (n_train, C) bool indicators when ``multilabel``
    test_ids : list of str
    test_label_sets : list of tuple of int
    class_names : list of str
    groups_train : list of str (empty strings when the manifest has no groups)
    multilabel : bool
    n_missing_train, n_missing_test, n_unlabelled_train : int
    train_ids : list of str, the video ids of ``train_index``
    n_empty_train : int, training videos left out for an all-zero vector (no trajectories)
    """

    X: np.ndarray
    train_index: np.ndarray
    test_index: np.ndarray
    y_train: np.ndarray
    test_ids: list
    test_label_sets: list
    class_names: list
    groups_train: list
    multilabel: bool
    n_missing_train: int
    n_missing_test: int
    n_unlabelled_train: int
    train_ids: list = field(default_factory=list)
    n_empty_train: int = 0


def _labels_of(entry) -> tuple[int, ...]:
    labs = getattr(entry, "labels", None) or (() if entry.label is None or int(entry.label) < 0 else (entry.label,))
    return tuple(sorted(int(x) for x in labs))


def _check_label_ids(man, source: str) -> None:
    """Refuse label ids with gaps: an id no video has is a placeholder class (``class<i>``) nobody asked for."""
    used = {k for e in man.rows for k in _labels_of(e)}
    gaps = [k for k, name in enumerate(man.class_names) if k not in used and name == f"class{k}"]
    if gaps:
        ids = ", ".join(map(str, gaps[:5])) + (", ..." if len(gaps) > 5 else "")
        raise ManifestError(
            f"{source}: label id{'s' if len(gaps) > 1 else ''} {ids} {'are' if len(gaps) > 1 else 'is'} used by no "
            f"video, but the ids run 0..{len(man.class_names) - 1}, which would make placeholder classes "
            f"({_examples(f'class{k}' for k in gaps)}); number the {len(used)} classes 0..{len(used) - 1} without "
            "gaps (renumber the label column)")


def load_split(manifest, features, split: int) -> SplitData:
    """Select the training and test rows of ``split`` from a feature file.

    Parameters
    ----------
    manifest : Manifest or path
    features : Features or path (``.npz`` of :func:`idtfv.scores.write_features`)
    split : int, 1-based split number
    """
    from idtfv.data.manifest import read_manifest

    man = read_manifest(manifest) if isinstance(manifest, (str, os.PathLike)) else manifest
    _check_label_ids(man, str(manifest) if isinstance(manifest, (str, os.PathLike)) else man.source)
    src = str(features) if isinstance(features, (str, os.PathLike)) else "<features>"
    feats = read_features(features) if isinstance(features, (str, os.PathLike)) else features
    if not isinstance(feats, Features):
        raise ParameterError(f"features must be a feature file path or a Features object, got {type(feats).__name__}")
    pos = {v: i for i, v in enumerate(feats.video_ids)}
    train = man.split(int(split), "train")
    test = man.split(int(split), "test")
    if not train or not test:
        raise ParameterError(f"split {split}: the manifest has {len(train)} training and {len(test)} test videos; "
                             "both must be non-empty")
    for e in train + test:
        i = pos.get(e.video_id)
        if i is not None and feats.labels[i] >= 0:
            labs = _labels_of(e)
            if labs and int(feats.labels[i]) not in labs:
                raise FormatError(src, f"video {e.video_id!r} has label {int(feats.labels[i])} here but {labs} in the "
                                       "manifest; were these features computed for another manifest?")
    tr = [e for e in train if e.video_id in pos]
    te = [e for e in test if e.video_id in pos]
    n_missing_train, n_missing_test = len(train) - len(tr), len(test) - len(te)
    labelled = [e for e in tr if _labels_of(e)]
    n_unlabelled = len(tr) - len(labelled)
    if n_unlabelled:
        warnings.warn(f"split {split}: {n_unlabelled} training video{'s' if n_unlabelled != 1 else ''} without a label "
                      f"in the manifest ({_examples(e.video_id for e in tr if not _labels_of(e))}) left out of "
                      "training", ResultWarning, stacklevel=2)
    # an all-zero vector is a video without trajectories (idtfv encode --keep-empty): no training example
    zero = [e for e in labelled if not np.any(feats.features[pos[e.video_id]])]
    if zero:
        warnings.warn(f"split {split}: {len(zero)} training video{'s' if len(zero) != 1 else ''} with an all-zero "
                      f"feature vector (no trajectories: {_examples(e.video_id for e in zero)}) left out of "
                      "training", ResultWarning, stacklevel=2)
        left_out = {e.video_id for e in zero}
        labelled = [e for e in labelled if e.video_id not in left_out]
    if len(labelled) < 2:
        raise FormatError(src, f"only {len(labelled)} labelled training videos of split {split} have features "
                               f"({n_missing_train} missing); compute the features first")
    if not te:
        raise FormatError(src, f"none of the {len(test)} test videos of split {split} has features")
    n_classes = len(man.class_names)
    sets_tr = [_labels_of(e) for e in labelled]
    trained = {k for labs in sets_tr for k in labs}
    untrained = [name for k, name in enumerate(man.class_names) if k not in trained]
    if len(trained) < 2 and all(len(labs) == 1 for labs in sets_tr):
        only = man.class_names[next(iter(trained))]
        raise ParameterError(f"split {split}: all {len(labelled)} labelled training videos with features are of one "
                             f"class ({only!r}); a classifier needs training videos of at least 2 classes (check the "
                             f"manifest's split{split} column and the features stage)")
    if untrained:
        warnings.warn(f"split {split}: {len(untrained)} of {n_classes} classes have no training video with features "
                      f"({_examples(untrained)}): their classifier has no positive example and never predicts them",
                      ResultWarning, stacklevel=2)
    multilabel = any(len(s) > 1 for s in sets_tr + [_labels_of(e) for e in te])
    if multilabel:
        y = np.zeros((len(labelled), n_classes), dtype=bool)
        for i, s in enumerate(sets_tr):
            y[i, list(s)] = True
    else:
        y = np.array([s[0] for s in sets_tr], dtype=np.int64)
    return SplitData(
        X=feats.features,
        train_index=np.array([pos[e.video_id] for e in labelled], dtype=np.int64),
        test_index=np.array([pos[e.video_id] for e in te], dtype=np.int64),
        y_train=y,
        test_ids=[e.video_id for e in te],
        test_label_sets=[_labels_of(e) for e in te],
        class_names=list(man.class_names),
        groups_train=[e.group for e in labelled],
        multilabel=multilabel,
        n_missing_train=n_missing_train,
        n_missing_test=n_missing_test,
        n_unlabelled_train=n_unlabelled,
        train_ids=[e.video_id for e in labelled],
        n_empty_train=len(zero),
    )


def _check_out_dir(out: Path) -> None:
    if out.exists() and not out.is_dir():
        raise ParameterError(f"--out {out}: exists and is not a directory; give a directory for the outputs")


def _begin(out: Path) -> None:
    """Before the first output of a run: create ``out`` and remove the previous run's completion mark."""
    _check_out_dir(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "report.json").unlink(missing_ok=True)


def _finish(data: SplitData, scores: np.ndarray, out: Path, training: dict, title: str, extra=None) -> dict:
    """Write scores.csv, confusion.png and, last, report.json (the mark of a complete run); after :func:`_begin`."""
    write_scores(out / "scores.csv", data.test_ids, scores, data.class_names, data.test_label_sets)
    if data.multilabel:
        (out / "confusion.png").unlink(missing_ok=True)  # none for multi-label data: no stale one either
    sc = Scores(video_ids=data.test_ids, scores=scores, class_names=data.class_names,
                labels=np.array([s[0] if len(s) == 1 else -1 for s in data.test_label_sets], dtype=np.int64),
                label_sets=list(data.test_label_sets))
    report = evaluate(sc, confusion_png=None if data.multilabel else out / "confusion.png", title=title)
    report["splits"][0]["source"] = "scores.csv"
    report["splits"][0]["split"] = training["split"]
    report["splits"][0]["n_missing"] = data.n_missing_test
    report["training"] = training
    report.update(extra or {})
    write_report(report, out / "report.json")
    return report


def _training_info(data: SplitData, split: int, manifest, features) -> dict:
    return {
        "split": int(split),
        "manifest": Path(manifest).name if isinstance(manifest, (str, os.PathLike)) else None,
        "features": Path(features).name if isinstance(features, (str, os.PathLike)) else None,
        "n_train": int(len(data.train_index)),
        "n_test": int(len(data.test_index)),
        "n_missing_train": data.n_missing_train,
        "n_missing_test": data.n_missing_test,
        "n_unlabelled_train": data.n_unlabelled_train,
        "dim": int(data.X.shape[1]),
        "multilabel": data.multilabel,
        **({"n_empty_train": data.n_empty_train} if data.n_empty_train else {}),  # only when some were left out
    }


def _codebook_of(features) -> tuple[str, str] | None:
    """``(name, content SHA-256)`` of the codebook that made the vectors ``features`` (the encode record beside a
    feature file of ``idtfv encode``), or None (in-memory features, or vectors made otherwise)."""
    if not isinstance(features, (str, os.PathLike)):
        return None
    from idtfv.encoding import recorded_codebook

    return recorded_codebook(features)


def run_svm_split(manifest, features, split: int, out, *, C: float = 100.0, cv_C: bool = False, C_grid=None,
                  n_folds: int = 3, loss: str = "squared_hinge", tol: float = 1e-4, n_jobs: int = 1,
                  random_state: int = 0, channels=None, combine: str = "concat",
                  validation_fraction: float | None = None) -> dict:
    """Train the one-vs-rest linear SVM on a split's training videos and score its test videos.

    Parameters
    ----------
    manifest, features : paths (or Manifest / Features)
    split : int
    out : path, output directory
    C : float, keyword-only
        Cost (used unless ``cv_C``).
    cv_C : bool
        Choose C by ``n_folds``-fold cross-validation on the training videos (folds keep manifest groups apart
        when every training video has one), from ``C_grid`` (default :data:`idtfv.classify.svm.DEFAULT_C_GRID`).
    loss, tol : see :class:`idtfv.classify.svm.LinearSVM`
    n_jobs : int
        Threads over classes.
    random_state : int
    channels : {name: (start, stop)}, optional
        Columns of each descriptor channel in the vectors (``idtfv cv`` knows them from the codebook): the report
        gets ``channels`` (test figures of one SVM per channel, of their late fusion ``late`` and of the SVM on
        the whole vector ``concat``) and ``combination``.
    combine : ``"concat"`` (default), ``"late"`` or ``"validate"``
        Which test scores are written: the SVM on the concatenated channels, the late fusion of per-channel SVMs,
        or the better of the two on a validation split of the training videos (:mod:`idtfv.classify.channels`);
        ``late`` and ``validate`` need ``channels``.
    validation_fraction : float in (0, 1), optional
        Hold out this fraction of the training groups (seeded by ``random_state``), train on the others, and
        write the held-out videos' scores to ``validation_scores.csv`` (the model and test scores still come
        from all training videos).

    Returns
    -------
    dict, the report written to ``out/report.json``.
    """
    from ._kernel_svm import linear_kernel
    from .svm import DEFAULT_C_GRID, LinearSVM, select_C

    out = Path(out)
    _check_out_dir(out)
    data = load_split(manifest, features, split)
    with output_dir_lock(out):  # from here to report.json: a second run into out fails at once
        classes = np.arange(len(data.class_names))
        K = linear_kernel(data.X, index=data.train_index)
        cv = None
        if cv_C:
            groups = data.groups_train if all(data.groups_train) else None
            cv = select_C(K, data.y_train, classes=classes, Cs=C_grid or DEFAULT_C_GRID, n_folds=n_folds,
                          groups=groups, loss=loss, tol=tol, random_state=random_state, n_jobs=n_jobs)
            C = cv["best_C"]
        model = LinearSVM(C=float(C), loss=loss, tol=tol, n_jobs=n_jobs, random_state=random_state)
        model.fit(data.X, data.y_train, classes=classes, index=data.train_index, kernel=K)
        del K
        scores = model.decision_function(data.X, index=data.test_index)
        training = _training_info(data, split, manifest, features)
        training.update(classifier="linear-svm", C=float(C), loss=loss, tol=tol, random_state=random_state,
                        converged=model.converged_, max_passes=int(model.n_passes_.max()), cv=cv)
        extra_report, validation = _channels_and_validation(
            data, scores, channels=channels, combine=combine, validation_fraction=validation_fraction,
            svm=dict(C=float(C), loss=loss, tol=tol, n_jobs=n_jobs, random_state=random_state))
        if "scores" in extra_report:
            scores = extra_report.pop("scores")
        _begin(out)
        extra = {"class_names": data.class_names, "split": int(split), "cv": cv, "features": training["features"],
                 "manifest": training["manifest"]}
        codebook = _codebook_of(features)
        if codebook is not None:  # vectors of idtfv encode: which codebook makes vectors this SVM can score
            extra["codebook"], extra["codebook_sha256"] = codebook
        model.save(out / "model", extra=extra)
        if validation is not None:
            ids, val_scores, val_sets = validation
            write_scores(out / "validation_scores.csv", ids, val_scores, data.class_names, val_sets)
            training["validation"] = {"file": "validation_scores.csv", "n_videos": len(ids)}
        else:
            (out / "validation_scores.csv").unlink(missing_ok=True)
        return _finish(data, scores, out, training, title=f"linear SVM, split {split}", extra=extra_report)


def _channels_and_validation(data: SplitData, scores, *, channels, combine, validation_fraction, svm: dict):
    """Per-channel figures, the channel combination and the validation scores of :func:`run_svm_split`.

    Returns ``(extra report entries (with ``scores`` when the combination replaces the test scores), validation
    (ids, scores, label sets) or None)``."""
    from .channels import COMBINES, evaluate_channels, fit_scores, validation_split

    if combine not in COMBINES:
        raise ParameterError(f"combine: expected one of {', '.join(COMBINES)}, got {combine!r}")
    if combine != "concat" and not channels:
        raise ParameterError(f"combine={combine!r} needs the channels' columns (channels=...; idtfv cv passes "
                             "them from the codebook)")
    extra, validation = {}, None
    if channels:
        res = evaluate_channels(data, scores, blocks=channels, combine=combine,
                                validation_fraction=validation_fraction, **svm)
        extra = {"channels": res.channels, "combination": res.combination}
        if res.combination["chosen"] != "concat":
            extra["scores"] = res.scores
        validation = res.validation
    if validation is None and validation_fraction is not None:
        is_val = validation_split(data.groups_train, fraction=validation_fraction, seed=svm["random_state"])
        val_scores = fit_scores(data.X, data.train_index[~is_val], data.y_train[~is_val], data.train_index[is_val],
                                classes=np.arange(len(data.class_names)), **svm)
        val_sets = [tuple(int(k) for k in np.flatnonzero(row)) if data.multilabel else (int(row),)
                    for row in data.y_train[is_val]]
        validation = ([data.train_ids[i] for i in np.flatnonzero(is_val)], val_scores, val_sets)
    return extra, validation


def run_knn_split(manifest, features, split: int, out, *, n_neighbors: int = 5, metric: str = "cosine",
                  weights: str = "uniform") -> dict:
    """k-NN baseline on a split: vote scores of the test videos, report and confusion matrix in ``out``."""
    from .knn import KNNClassifier

    out = Path(out)
    _check_out_dir(out)
    data = load_split(manifest, features, split)
    with output_dir_lock(out):
        knn = KNNClassifier(n_neighbors=n_neighbors, metric=metric, weights=weights)
        knn.fit(data.X, data.y_train, classes=np.arange(len(data.class_names)), index=data.train_index)
        scores = knn.decision_function(data.X, index=data.test_index)
        training = _training_info(data, split, manifest, features)
        training.update(classifier="knn", n_neighbors=n_neighbors, metric=metric, weights=weights)
        _begin(out)
        return _finish(data, scores, out, training, title=f"{n_neighbors}-NN ({metric}), split {split}")
