"""``idtfv`` subcommands of the classify package: ``train-svm``, ``train-knn``, ``evaluate``, ``fuse``.

Thin shells over :mod:`idtfv.classify.stage`, :func:`idtfv.classify.evaluate` and :func:`idtfv.classify.fuse_scores`.
Errors (:class:`idtfv.errors.IdtfvError`, ``OSError``) are reported by the ``idtfv`` dispatcher as one
``error: ...`` line with exit status 2.
"""

from __future__ import annotations

import argparse
import contextlib
import math
import sys
import textwrap
import time
import warnings
from pathlib import Path

from idtfv.errors import ParameterError

__all__ = ["add_train_svm", "add_train_knn", "add_evaluate", "add_fuse"]

#: Width of the descriptions pre-wrapped for the parsers that show examples verbatim (RawDescriptionHelpFormatter).
_HELP_WIDTH = 88


def _positive_float(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}") from None
    if not v > 0:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}")
    return v


def _comma_list(convert, what: str):
    """An argparse type: one value or a comma list (``1,2,3``) -> list of ``convert(value)``.

    With ``action="extend"`` the option may be repeated (``--split 1 --split 2``); every occurrence takes exactly
    one word, so a list option written before the positional files never swallows them."""

    def parse(text: str) -> list:
        items = [item.strip() for item in text.split(",")]
        values = []
        for item in items:
            try:
                values.append(convert(item))
            except (ValueError, argparse.ArgumentTypeError):
                raise argparse.ArgumentTypeError(f"expected {what} (or a comma list of them), got {item!r} in "
                                                 f"{text!r}") from None
        return values

    return parse


def _number(text: str) -> float:
    return float(text)


def _split_number(text: str) -> int:
    value = int(text)
    if value < 1:
        raise ValueError(text)
    return value


def _plain(values) -> str:
    """Numbers as the user typed them (``2, 0.5``), never ``np.float64(2.0)``."""
    return ", ".join(f"{float(v):g}" for v in values)


@contextlib.contextmanager
def _warnings_as_lines():
    """Print the :class:`~idtfv.classify.evaluate.ResultWarning` s raised inside as ``warning: ...`` lines on
    stderr (once each); other warnings go on as they were."""
    from .evaluate import ResultWarning

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ResultWarning)
        yield
    seen = set()
    for w in caught:
        if issubclass(w.category, ResultWarning):
            text = " ".join(str(w.message).split())
            if text not in seen:
                seen.add(text)
                print(f"warning: {text}", file=sys.stderr)
        else:
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno, source=w.source)


def _common_split_args(p):
    p.add_argument("--manifest", type=Path, required=True, help="manifest CSV")
    p.add_argument("--features", type=Path, required=True, metavar="FV.npz",
                   help="feature file (idtfv.scores format: video_ids, features, labels)")
    p.add_argument("--split", type=int, default=1, metavar="N", help="manifest split to train/test on (default 1)")
    p.add_argument("--out", type=Path, required=True, metavar="DIR",
                   help="output directory (scores.csv, report.json, confusion.png, model files)")


def add_train_svm(subparsers) -> None:
    """Add ``idtfv train-svm``."""
    p = subparsers.add_parser(
        "train-svm", help="train one-vs-rest linear SVMs on a split and score its test videos",
        description="Train one-vs-rest linear SVMs (liblinear's problem, solved on the linear kernel) on the "
                    "split's training videos, score its test videos, write DIR/model.npz + model.json, "
                    "DIR/scores.csv, DIR/confusion.png and, last, DIR/report.json (the mark of a finished run); "
                    "print the accuracy.")
    _common_split_args(p)
    p.add_argument("--C", type=_positive_float, default=100.0, help="SVM cost C (default 100, the iDT papers)")
    p.add_argument("--cv-C", action="store_true", help="choose C by cross-validation on the training videos")
    p.add_argument("--C-grid", type=_comma_list(_positive_float, "a positive number"), nargs="+", default=None,
                   metavar="C", help="C values for --cv-C, space- or comma-separated (default 0.1,1,10,100,1000)")
    p.add_argument("--folds", type=int, default=3, help="folds for --cv-C (default 3; groups kept apart)")
    p.add_argument("--loss", choices=("squared_hinge", "hinge"), default="squared_hinge",
                   help="SVM loss (default squared_hinge, as LinearSVC)")
    p.add_argument("--tol", type=_positive_float, default=1e-4,
                   help="dual solver tolerance (default 1e-4, as LinearSVC)")
    p.add_argument("--jobs", type=int, default=1, metavar="J", help="threads over classes (default 1)")
    p.add_argument("--seed", type=int, default=0, help="random seed (coordinate order, CV folds)")
    p.set_defaults(func=_cmd_train_svm)


def add_train_knn(subparsers) -> None:
    """Add ``idtfv train-knn``."""
    p = subparsers.add_parser(
        "train-knn", help="k-nearest-neighbour baseline on a split",
        description="Score a split's test videos by k-NN votes among its training videos; write DIR/scores.csv, "
                    "DIR/report.json, DIR/confusion.png, print the accuracy.")
    _common_split_args(p)
    p.add_argument("--k", type=int, default=5, help="number of neighbours (default 5)")
    p.add_argument("--metric", choices=("cosine", "l2"), default="cosine", help="similarity (default cosine)")
    p.add_argument("--weights", choices=("uniform", "distance"), default="uniform", help="vote weights")
    p.set_defaults(func=_cmd_train_knn)


def add_evaluate(subparsers) -> None:
    """Add ``idtfv evaluate``."""
    p = subparsers.add_parser(
        "evaluate", help="accuracy, mAP, top-5 and confusion matrix of score files",
        description=textwrap.fill(
            "Evaluate score files (several = several splits, averaged). Writes a JSON report and a confusion-matrix "
            "PNG when --out is given; prints the summary. Figures a small test set leaves undefined (a class without "
            "test videos) are null in the report and printed as n/a.", _HELP_WIDTH),
        epilog="examples:\n"
               "  idtfv evaluate --manifest manifest.csv --split 1 svm_split1/scores.csv --out eval_split1/\n"
               "  idtfv evaluate --manifest manifest.csv --split 1,2,3 s1/scores.csv s2/scores.csv s3/scores.csv\n"
               "  idtfv evaluate fused.csv",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("scores", type=Path, nargs="+", metavar="SCORES.csv", help="score files")
    p.add_argument("--manifest", type=Path, default=None, help="manifest (labels, class names, splits)")
    p.add_argument("--split", type=_comma_list(_split_number, "a split number >= 1"), action="extend", default=None,
                   metavar="N[,N...]",
                   help="split number of each score file, in order: a comma list or repeated (--split 1 --split 2); "
                        "needs --manifest; keeps each file's test videos of its split and warns about missing ones")
    p.add_argument("--out", type=Path, default=None, metavar="DIR", help="write DIR/report.json, DIR/confusion.png")
    p.set_defaults(func=_cmd_evaluate)


def add_fuse(subparsers) -> None:
    """Add ``idtfv fuse``."""
    p = subparsers.add_parser(
        "fuse", help="late fusion: weighted average of normalised score files",
        description=textwrap.fill(
            "Fuse score files of the same videos and classes (e.g. iDT + two-stream CNN) by a weighted average of "
            "per-video normalised scores; write the fused score file and print its accuracy.", _HELP_WIDTH),
        epilog="examples:\n"
               "  idtfv fuse svm_split1/scores.csv tsn_rgbdiff/scores.csv --out fused.csv\n"
               "  idtfv fuse --weights 2,1 svm_split1/scores.csv tsn_rgbdiff/scores.csv --out fused.csv "
               "--report fused.json",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("scores", type=Path, nargs="+", metavar="SCORES.csv", help="score files to fuse")
    p.add_argument("--weights", type=_comma_list(_number, "a number"), action="extend", default=None,
                   metavar="W[,W...]",
                   help="one non-negative weight per score file, in order: a comma list or repeated (default equal)")
    p.add_argument("--normalize", choices=("zscore", "softmax", "none"), default="zscore",
                   help="per-video normalisation before averaging (default zscore)")
    p.add_argument("--out", type=Path, required=True, metavar="FUSED.csv", help="fused score file to write")
    p.add_argument("--report", type=Path, default=None, metavar="REPORT.json", help="also write an evaluation report")
    p.set_defaults(func=_cmd_fuse)


def _print_summary(report: dict, stream=None, prefix: str = "") -> None:
    stream = sys.stdout if stream is None else stream
    def pct(value) -> str:  # None = undefined on this data (null in report.json)
        return "n/a" if value is None else f"{100 * value:.2f}%"

    parts = [f"accuracy {pct(report.get('accuracy'))}"]
    if report.get("n_splits", 1) > 1 and report.get("accuracy_std") is not None:
        parts[-1] += f" (+-{100 * report['accuracy_std']:.2f} over {report['n_splits']} splits)"
    if report.get("n_correct") is not None:  # small test sets: the count and the bootstrap interval beside the %
        honest = f"{report['n_correct']}/{report['n_videos']} correct"
        ci, boot = report.get("accuracy_ci"), report.get("bootstrap") or {}
        if ci and None not in ci:
            honest += f", {100 * boot.get('level', 0.95):g}% CI {100 * ci[0]:.2f}-{100 * ci[1]:.2f}%"
        parts[-1] += f" [{honest}]"
    parts.append(f"mean class accuracy {pct(report.get('mean_class_accuracy'))}")
    parts.append(f"mAP {pct(report.get('mAP'))}")
    if report.get("top5") is not None:  # None also when there are fewer than 5 classes: not applicable
        parts.append(f"top-5 {pct(report['top5'])}")
    print(f"{prefix}{', '.join(parts)} on {report['n_videos']} videos, {report['n_classes']} classes", file=stream)


def _cmd_train_svm(args) -> int:
    from .stage import run_svm_split

    if args.jobs < 1:
        raise ParameterError(f"--jobs must be >= 1, got {args.jobs}")
    if args.folds < 2:
        raise ParameterError(f"--folds must be >= 2, got {args.folds}")
    C_grid = None if args.C_grid is None else [c for group in args.C_grid for c in group]
    t0 = time.perf_counter()
    with _warnings_as_lines():
        report = run_svm_split(args.manifest, args.features, args.split, args.out, C=args.C, cv_C=args.cv_C,
                               C_grid=C_grid, n_folds=args.folds, loss=args.loss, tol=args.tol, n_jobs=args.jobs,
                               random_state=args.seed)
    tr = report["training"]
    extra = f", C={tr['C']:g}" + (" (cross-validated)" if tr["cv"] else "")
    _print_summary(report, prefix=f"train-svm split {args.split}: ")
    print(f"trained on {tr['n_train']} videos ({tr['dim']} dims{extra}) in {time.perf_counter() - t0:.1f} s; "
          f"wrote {args.out}/")
    if tr["n_missing_train"] or tr["n_missing_test"]:
        print(f"warning: {tr['n_missing_train']} training and {tr['n_missing_test']} test videos of the split have "
              "no features and were left out", file=sys.stderr)
    return 0


def _cmd_train_knn(args) -> int:
    from .stage import run_knn_split

    if args.k < 1:
        raise ParameterError(f"--k must be >= 1 (the number of neighbours), got {args.k}")
    with _warnings_as_lines():
        report = run_knn_split(args.manifest, args.features, args.split, args.out, n_neighbors=args.k,
                               metric=args.metric, weights=args.weights)
    _print_summary(report, prefix=f"train-knn split {args.split}: ")
    return 0


def _cmd_evaluate(args) -> int:
    from .evaluate import evaluate

    split = args.split
    if split is not None and len(split) != len(args.scores):
        raise ParameterError(f"--split: give one split number per score file ({len(args.scores)}), got "
                             f"{len(split)} ({', '.join(map(str, split))})")
    if split is not None and args.manifest is None:
        raise ParameterError("--split needs --manifest (the split columns live in the manifest)")
    out = args.out
    if out is not None and out.exists() and not out.is_dir():
        raise ParameterError(f"--out {out}: exists and is not a directory; give a directory for report.json and "
                             "confusion.png")
    with _warnings_as_lines():
        report = evaluate(args.scores, manifest=args.manifest, split=split,
                          confusion_png=out / "confusion.png" if out else None,
                          report_json=out / "report.json" if out else None)
    _print_summary(report)
    return 0


def _cmd_fuse(args) -> int:
    from .evaluate import evaluate
    from .fusion import fuse_scores
    from idtfv.scores import write_scores

    weights = args.weights
    if weights is not None:
        n = len(args.scores)
        if len(weights) != n:
            raise ParameterError(f"--weights: expected one weight per score file; got {len(weights)} "
                                 f"weight{'s' if len(weights) != 1 else ''} for {n} score files ({_plain(weights)})")
        if not all(math.isfinite(w) and w >= 0 for w in weights) or not sum(weights) > 0:
            raise ParameterError(f"--weights: expected {n} finite non-negative number{'s' if n > 1 else ''}, not all "
                                 f"zero; got {_plain(weights)}")
    fused = fuse_scores(args.scores, weights=weights, normalize=args.normalize)
    write_scores(args.out, fused.video_ids, fused.scores, fused.class_names, fused.label_sets)
    if any(fused.label_sets):
        with _warnings_as_lines():
            report = evaluate(fused, report_json=args.report)
        _print_summary(report, prefix=f"fused {len(args.scores)} files ({args.normalize}): ")
    elif args.report:
        raise ParameterError("--report: the fused scores carry no labels to evaluate against")
    print(f"wrote {args.out}")
    return 0
