"""Evaluation protocols beyond one split: cross-validation folds, one codebook per fold, a pooled report.

``run_cv(manifest, features, encode_params, out, cache=..., options=CVOptions(...))`` (behind ``idtfv cv`` and
``make cv``) evaluates the iDT pipeline by the protocol a dataset prescribes:

- ``scheme="splits"`` (default): the manifest's split columns are the folds (UCF101's and HMDB51's 3 splits, the
  default dataset's 3 actor splits; ``splits=(1, 2)`` takes some of them);
- ``scheme="kfold"``: ``n_folds``-fold cross-validation over the manifest's groups (a seeded permutation of the
  sorted group ids, group i of it in fold ``i % n_folds``): the videos of one group are never split between
  training and test;
- ``scheme="logo"``: leave one group out, one fold per group in sorted order (e.g. the 10-fold
  leave-one-sequence-out protocol of interaction datasets, whose sequences are the groups).

A video without a group is a group of its own; unlabelled videos take part in no fold. The ``kfold`` and ``logo``
folds are written as the split columns ``split1..splitF`` of a derived manifest ``out/folds.csv``; fold f is split f
of it (``splits``: of the manifest itself), so each fold runs exactly the single-split pipeline:

1. ``idtfv.encoding.run_encode`` on fold f: PCA and the codebook are fitted on fold f's training videos only
   (cached as ``CACHE/codebook-<hash>``, the hash covering the training videos), every video is encoded with them
   (``CACHE/encode-<hash>``, resumable), the fold's vectors go to ``out/fold<f>/vectors.npz``. Features are
   extracted once, by ``idtfv features``: every fold reads the same features stage stamp;
2. :func:`idtfv.classify.stage.run_svm_split` on split f: ``out/fold<f>/`` gets ``scores.csv``, ``report.json``,
   ``confusion.png`` and the model, the same bytes as ``idtfv encode`` + ``idtfv train-svm`` give for that split.

A rerun reuses every cached codebook and vector (only the SVMs are trained again, which takes seconds).

``out/report.json`` (written last: a directory without it is an unfinished run) is
:func:`idtfv.classify.evaluate.evaluate` of the folds' score files (mean and std of the accuracy and mAP over
folds, the count of correct clips and a seeded bootstrap interval, the per-fold figures in ``splits``) plus
``protocol`` (scheme, folds, fold sizes) and ``folds`` (per fold: sizes, codebook, C, figures). The confusion matrix
pooled (summed) over folds is ``out/confusion.png`` and ``out/confusion.json``.
"""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from idtfv.errors import ParameterError
from idtfv.lock import output_dir_lock
from idtfv.options import field_error

__all__ = ["CVOptions", "SCHEMES", "make_folds", "channel_blocks", "run_cv"]

#: Fold schemes: the manifest's split columns, k-fold over groups, leave one group out.
SCHEMES = ("splits", "kfold", "logo")
_SEED_LIMIT = 2**32


@dataclass(frozen=True)
class CVOptions:
    """How the folds are made (frozen, validated, keyword-only).

    Parameters
    ----------
    scheme : str
        ``"splits"`` (the manifest's split columns are the folds), ``"kfold"`` (``n_folds`` folds over the
        groups) or ``"logo"`` (leave one group out).
    n_folds : int
        Folds of ``kfold`` (>= 2, at most the number of groups).
    splits : tuple of int or None
        ``splits``: the split columns to use (default all of them).
    seed : int
        ``kfold``: seeds the permutation of the groups.
    """

    scheme: str = "splits"
    n_folds: int = 5
    splits: tuple | None = None
    seed: int = 0

    def __post_init__(self):
        def bad(name, expected):
            return field_error("CVOptions", name, expected, getattr(self, name), _DEFAULTS[name])

        def is_int(v):
            return isinstance(v, (int, np.integer)) and not isinstance(v, bool)

        if self.scheme not in SCHEMES:
            raise bad("scheme", "one of " + ", ".join(SCHEMES))
        if not (is_int(self.n_folds) and self.n_folds >= 2):
            raise bad("n_folds", "an integer >= 2")
        if not (is_int(self.seed) and 0 <= self.seed < _SEED_LIMIT):
            raise bad("seed", f"an integer in [0, {_SEED_LIMIT})")
        if self.splits is not None:
            values = list(self.splits) if isinstance(self.splits, (list, tuple)) else None
            if not values or not all(is_int(v) and v >= 1 for v in values) or len(set(values)) != len(values):
                raise bad("splits", "distinct split numbers >= 1")
            object.__setattr__(self, "splits", tuple(int(v) for v in values))

    def to_dict(self) -> dict:
        return {f.name: (list(v) if isinstance(v := getattr(self, f.name), tuple) else v)
                for f in dataclasses.fields(self)}


_DEFAULTS = {f.name: f.default for f in dataclasses.fields(CVOptions)}


def _group_of(entry) -> str:
    # A video without a group is a group of its own ("\0" keeps it apart from any real group id).
    return entry.group or f"\0{entry.video_id}"


def _labelled(entry) -> bool:
    return bool(getattr(entry, "labels", ()) or (entry.label is not None and int(entry.label) >= 0))


def make_folds(manifest, options: CVOptions):
    """The folds of ``options`` as split columns.

    Parameters
    ----------
    manifest : Manifest
    options : CVOptions

    Returns
    -------
    (fold_manifest, folds, fold_groups)
        ``fold_manifest``: ``manifest`` itself (``splits``) or a manifest whose split column f is fold f (the
        training videos ``train``, the held-out ones ``test``); ``folds``: the split numbers of the folds, in order;
        ``fold_groups``: per fold, the sorted test groups (``kfold`` / ``logo``; None for ``splits``).
    """
    if options.scheme == "splits":
        folds = list(options.splits) if options.splits else list(range(1, manifest.n_splits + 1))
        for f in folds:
            if f > manifest.n_splits:
                raise ParameterError(f"{manifest.source}: split {f} does not exist; this manifest has splits "
                                     f"1..{manifest.n_splits} (--splits)")
            n_train, n_test = len(manifest.split(f, "train")), len(manifest.split(f, "test"))
            if not n_train or not n_test:
                raise ParameterError(f"{manifest.source}: split {f} has {n_train} training and {n_test} test videos; "
                                     "a fold needs both (choose other --splits, or --scheme kfold / logo)")
        return manifest, folds, None
    rows = [e for e in manifest.rows if _labelled(e)]
    groups = sorted({_group_of(e) for e in rows})
    if options.scheme == "logo":
        if len(groups) < 2:
            raise ParameterError(f"{manifest.source}: leave-one-group-out needs at least 2 groups, the labelled "
                                 f"videos have {len(groups)}; fill the manifest's group column")
        fold_of = {g: i for i, g in enumerate(groups)}
        n = len(groups)
    else:
        n = options.n_folds
        if n > len(groups):
            raise ParameterError(f"{manifest.source}: {n} folds need at least {n} groups, the labelled videos have "
                                 f"{len(groups)}; choose --n-folds <= {len(groups)}")
        perm = np.random.default_rng(options.seed).permutation(len(groups))
        fold_of = {groups[j]: i % n for i, j in enumerate(perm)}
    in_fold = {e.video_id for e in rows}
    new_rows = []
    for e in manifest.rows:
        if e.video_id in in_fold:
            k = fold_of[_group_of(e)]
            splits = {f + 1: ("test" if k == f else "train") for f in range(n)}
        else:
            splits = {}
        new_rows.append(dataclasses.replace(e, splits=splits))
    fold_groups = [sorted(g.lstrip("\0") for g in groups if fold_of[g] == f) for f in range(n)]
    return manifest.replace_rows(new_rows), list(range(1, n + 1)), fold_groups


def _svm_options(svm: dict | None) -> dict:
    allowed = {"C", "cv_C", "C_grid", "n_folds", "loss", "tol", "n_jobs", "random_state", "channels", "combine",
               "validation_fraction"}
    svm = dict(svm or {})
    unknown = sorted(set(svm) - allowed)
    if unknown:
        raise ParameterError(f"run_cv: unknown SVM option(s) {', '.join(unknown)}; known: {', '.join(sorted(allowed))}")
    return svm


def channel_blocks(codebook_dir, dim: int) -> dict:
    """``{channel: (start, stop)}``: the columns of each descriptor channel in vectors of ``dim`` columns encoded
    with this codebook (``CACHE/codebook-*``; channels in the codebook's order, each with all its pyramid cells).

    The number of pyramid cells is ``dim`` over the length of one cell of every channel; a ``dim`` that is not a
    multiple of it is a :class:`~idtfv.errors.ParameterError` (vectors of another codebook)."""
    from idtfv.encoding import encoded_dim, load_codebooks

    models, summary = load_codebooks(codebook_dir)
    per_cell = {ch: encoded_dim({ch: model}, summary["method"], ((1, 1, 1),)) for ch, model in models.items()}
    total = sum(per_cell.values())
    if dim % total:
        raise ParameterError(f"{codebook_dir}: its channels encode {total} columns per pyramid cell, but the vectors "
                             f"have {dim}; give the codebook these vectors were encoded with")
    cells = dim // total
    blocks, start = {}, 0
    for ch, width in per_cell.items():
        blocks[ch] = (start, start + cells * width)
        start += cells * width
    return blocks


def run_cv(manifest, features, encode_params, out, *, cache, options: CVOptions | None = None, svm: dict | None = None,
           jobs: int = 1, scheduler=None, force: bool = False, per_channel: bool = True) -> dict:
    """Cross-validate the iDT pipeline: per fold, codebook + vectors (cached) and an SVM; one pooled report.

    Parameters
    ----------
    manifest : path (or Manifest)
    features : path, the features stage stamp (``idtfv features --out``)
    encode_params : EncodeParams (``idtfv.encoding``), the same for every fold
    out : path, output directory (``report.json``, ``confusion.png``, ``confusion.json``, ``fold<f>/``,
        ``folds.csv`` for ``kfold`` / ``logo``)
    cache : path, keyword-only; where the encode stage keeps ``codebook-*`` and ``encode-*``
    options : CVOptions (default: the manifest's split columns)
    svm : dict, keyword arguments of :func:`idtfv.classify.stage.run_svm_split` (``C``, ``cv_C``, ``loss``, ...)
    jobs, scheduler, force : runner options of the encode stage
    per_channel : bool
        Also report each descriptor channel's own SVM (and their late fusion) per fold.

    Returns
    -------
    dict, the report written to ``out/report.json``; ``report["encode_failed"]`` counts the videos whose encoding
    failed (left out of their fold, like videos without features).
    """
    from idtfv.data.manifest import Manifest, read_manifest, write_manifest
    from idtfv.encoding import EncodeParams, run_encode
    from idtfv.runner import read_stamp

    from .evaluate import evaluate, write_report
    from .stage import run_svm_split

    options = CVOptions() if options is None else options
    if not isinstance(options, CVOptions):
        raise ParameterError(f"options: expected a CVOptions, got {type(options).__name__}")
    if not isinstance(encode_params, EncodeParams):
        raise ParameterError(f"encode_params: expected an EncodeParams (idtfv.encoding), got "
                             f"{type(encode_params).__name__}")
    svm = _svm_options(svm)
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ParameterError(f"--out {out}: exists and is not a directory; give a directory for the outputs")
    read_stamp(features)  # a clear error before anything is written
    man = manifest if isinstance(manifest, Manifest) else read_manifest(manifest)
    fold_man, folds, fold_groups = make_folds(man, options)
    # from the first fold to report.json: a second run into out fails at once (each fold directory is locked again
    # by run_svm_split, a lock of its own)
    with output_dir_lock(out):
        (out / "report.json").unlink(missing_ok=True)
        if options.scheme == "splits":
            man_arg = manifest
        else:
            man_arg = write_manifest(fold_man, out / "folds.csv")

        fold_info, score_files, encode_failed = [], [], 0
        for i, f in enumerate(folds):
            fold_dir = out / f"fold{f}"
            fold_dir.mkdir(exist_ok=True)
            enc = run_encode(man_arg, features, encode_params, split=f, cache=cache, out=fold_dir / "vectors.npz",
                             jobs=jobs, scheduler=scheduler, force=force)
            encode_failed += len(enc["failed"])
            fold_svm = dict(svm)
            if per_channel:
                fold_svm.setdefault("channels", channel_blocks(enc["codebook_dir"], enc["dim"]))
            rep = run_svm_split(man_arg, fold_dir / "vectors.npz", f, fold_dir, **fold_svm)
            tr = rep["training"]
            info = {"fold": f, "n_train": tr["n_train"], "n_test": tr["n_test"],
                    "n_missing_train": tr["n_missing_train"], "n_missing_test": tr["n_missing_test"],
                    "encode_failed": len(enc["failed"]), "codebook": Path(enc["codebook_dir"]).name, "k": enc["k"],
                    "C": tr["C"], "accuracy": rep["accuracy"], "n_correct": rep["n_correct"], "mAP": rep["mAP"]}
            if fold_groups is not None:
                info["test_groups"] = fold_groups[i]
            for key in ("combination", "channels"):
                if key in rep:
                    info[key] = rep[key]
            fold_info.append(info)
            score_files.append(fold_dir / "scores.csv")

        report = evaluate(score_files, manifest=fold_man, split=folds, confusion_png=out / "confusion.png",
                          title=f"{len(folds)}-fold cross-validation ({options.scheme}), pooled")
        for entry, f in zip(report["splits"], folds):
            entry["source"] = f"fold{f}/scores.csv"
        report["protocol"] = {
            "scheme": options.scheme, **{k: v for k, v in options.to_dict().items() if k != "scheme"},
            "folds": folds, "n_folds": len(folds),
            "manifest": Path(man_arg).name if isinstance(man_arg, (str, os.PathLike)) else None,
            "features": Path(features).name, "encode": encode_params.to_dict(),
            "codebook_fitted_on": "each fold's training videos only",
        }
        report["folds"] = fold_info
        report["encode_failed"] = encode_failed
        if report["confusion"] is not None:
            text = json.dumps({"class_names": report["class_names"], "rows": "true class", "columns": "predicted class",
                               "pooled_over_folds": folds, "confusion": report["confusion"]}, indent=2) + "\n"
            from idtfv.atomic import atomic_write_text

            atomic_write_text(out / "confusion.json", text)
        write_report(report, out / "report.json")
        return report
