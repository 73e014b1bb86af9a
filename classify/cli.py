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

from idtfv.atomic import same_file
from idtfv.errors import ParameterError

__all__ = ["add_train_svm", "add_train_knn", "add_evaluate", "add_fuse", "add_detect", "add_cv"]

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
    _channel_args(p)
    p.set_defaults(func=_cmd_train_svm)


def _fraction(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        v = math.nan
    if not 0 < v < 1:
        raise argparse.ArgumentTypeError(f"expected a fraction between 0 and 1, got {text!r}")
    return v


def _channel_args(p, *, codebook: bool = True) -> None:
    """Options of the per-channel results, the channel combination and the validation split (train-svm, cv)."""
    group = p.add_argument_group("channels and validation")
    if codebook:
        group.add_argument("--codebook", type=Path, default=None, metavar="DIR",
                           help="the encode stage's codebook directory (CACHE/codebook-*) of these vectors: report "
                                "each descriptor channel's own SVM and their late fusion (default: the codebook "
                                "idtfv encode recorded beside --features, when it wrote one)")
        group.add_argument("--no-channels", action="store_true",
                           help="report the concatenated channels only (skips the per-channel SVMs: about half the "
                                "training time)")
    group.add_argument("--combine", choices=("concat", "late", "validate"), default="concat",
                       help="test scores from one SVM on the concatenated channels (concat, default: the IJCV 2016 "
                            "recipe), from per-channel SVMs fused late (late), or whichever of the two is better on "
                            "a validation split of the training videos drawn by group (validate)"
                            + ("; late and validate need --codebook" if codebook else ""))
    group.add_argument("--validation", type=_fraction, default=None, metavar="F",
                       help="hold out this fraction of the training groups (seeded) for validation: write "
                            "DIR/validation_scores.csv from an SVM trained on the other training videos (input of "
                            "idtfv fuse --weights validate; --combine validate uses it too, default 0.25)")


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
               "  idtfv evaluate fused.csv\n"
               "  idtfv evaluate --detections detect/detections.csv --annotations untrimmed/annotations.csv",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("scores", type=Path, nargs="*", metavar="SCORES.csv", help="score files")
    p.add_argument("--manifest", type=Path, default=None,
                   help="manifest (labels, class names, splits; with --detections: the classes and videos evaluated)")
    p.add_argument("--split", type=_comma_list(_split_number, "a split number >= 1"), action="extend", default=None,
                   metavar="N[,N...]",
                   help="split number of each score file, in order: a comma list or repeated (--split 1 --split 2); "
                        "needs --manifest; keeps each file's test videos of its split and warns about missing ones")
    det = p.add_argument_group("temporal detection (instead of score files)")
    det.add_argument("--detections", type=Path, default=None, metavar="DET.csv",
                     help="detections video_id,class,start,end,score (idtfv detect's detections.csv): report THUMOS'14 "
                          "mAP at temporal IoU 0.1-0.5, per class and overall, with bootstrap intervals over videos")
    det.add_argument("--annotations", type=Path, default=None, metavar="GT.csv",
                     help="ground-truth intervals video_id,class,start,end (seconds) of --detections")
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
    p.add_argument("--weights", type=_weights, action="extend", default=None, metavar="W[,W...]|validate",
                   help="one non-negative weight per score file, in order: a comma list or repeated (default equal); "
                        "or 'validate': the weights (multiples of 0.1 summing to 1) that fuse the --validation "
                        "score files best")
    p.add_argument("--validation", type=_comma_list(Path, "a path"), action="extend", default=None,
                   metavar="V.csv[,V.csv...]",
                   help="for --weights validate: each input's scores of the same validation videos, in the order of "
                        "the score files (e.g. DIR/validation_scores.csv of idtfv train-svm --validation 0.25; "
                        "never the test videos)")
    p.add_argument("--normalize", choices=("zscore", "softmax", "none"), default="zscore",
                   help="per-video normalisation before averaging (default zscore)")
    p.add_argument("--out", type=Path, required=True, metavar="FUSED.csv", help="fused score file to write")
    p.add_argument("--report", type=Path, default=None, metavar="REPORT.json", help="also write an evaluation report")
    p.set_defaults(func=_cmd_fuse)


def _print_summary(report: dict, stream=None, prefix: str = "") -> None:
    from .evaluate import summary_line

    print(summary_line(report, prefix), file=sys.stdout if stream is None else stream)


def _check_codebook_of_vectors(codebook: Path, features: Path) -> None:
    """Refuse a --codebook other than the one the encode record beside ``features`` names (by content): the
    channels' columns would be cut at the wrong places whenever the dimensions happen to divide (K=8 with two
    pyramid cells has the columns of K=16 with one), and the per-channel results would be silently wrong."""
    from idtfv.encoding import codebook_sha256, record_path, recorded_codebook

    recorded = recorded_codebook(features)
    if recorded is None:  # no (readable) record: the column count is checked later
        return
    if not (codebook / "codebook.json").is_file():
        return  # not a codebook directory: load_codebooks says so, naming the file
    if codebook_sha256(codebook) != recorded[1]:
        raise ParameterError(f"--codebook {codebook}: not the codebook these vectors were encoded with "
                             f"({record_path(features)} names {recorded[0]}); drop --codebook to use that one")


def _cmd_train_svm(args) -> int:
    from .stage import run_svm_split

    if args.jobs < 1:
        raise ParameterError(f"--jobs must be >= 1, got {args.jobs}")
    if args.folds < 2:
        raise ParameterError(f"--folds must be >= 2, got {args.folds}")
    C_grid = None if args.C_grid is None else [c for group in args.C_grid for c in group]
    if args.codebook is not None and args.no_channels:
        raise ParameterError("--no-channels contradicts --codebook (which asks for the per-channel results)")
    if args.codebook is not None:
        _check_codebook_of_vectors(args.codebook, args.features)
    if args.codebook is None and not args.no_channels:
        from idtfv.encoding import read_encode_record, record_path

        if record_path(args.features).is_file():  # vectors of idtfv encode: the channels' columns are known
            args.codebook = Path(read_encode_record(args.features)["codebook_dir"])
    if args.combine != "concat" and args.codebook is None:
        raise ParameterError(f"--combine {args.combine} needs --codebook (the channels' columns come from it)")
    channels = None
    if args.codebook is not None:
        from idtfv.scores import read_features

        from .cv import channel_blocks

        channels = channel_blocks(args.codebook, read_features(args.features).features.shape[1])
    t0 = time.perf_counter()
    with _warnings_as_lines():
        report = run_svm_split(args.manifest, args.features, args.split, args.out, C=args.C, cv_C=args.cv_C,
                               C_grid=C_grid, n_folds=args.folds, loss=args.loss, tol=args.tol, n_jobs=args.jobs,
                               random_state=args.seed, channels=channels, combine=args.combine,
                               validation_fraction=args.validation)
    tr = report["training"]
    extra = f", C={tr['C']:g}" + (" (cross-validated)" if tr["cv"] else "")
    _print_summary(report, prefix=f"train-svm split {args.split}: ")
    print(f"trained on {tr['n_train']} videos ({tr['dim']} dims{extra}) in {time.perf_counter() - t0:.1f} s; "
          f"wrote {args.out}/")
    _print_channels(report)
    if tr["n_missing_train"] or tr["n_missing_test"]:
        print(f"warning: {tr['n_missing_train']} training and {tr['n_missing_test']} test videos of the split have "
              "no features and were left out", file=sys.stderr)
    return 0


def _print_channels(report: dict, prefix: str = "") -> None:
    """One line of per-channel test accuracies (with counts) and the combination chosen, when the report has them."""
    if "channels" not in report:
        return

    def fig(f):
        return "n/a" if f["accuracy"] is None else f"{100 * f['accuracy']:.1f}% ({f['n_correct']}/{f['n_videos']})"

    print(f"{prefix}channels: " + ", ".join(f"{name} {fig(f)}" for name, f in report["channels"].items()))
    comb = report.get("combination", {})
    if "validation" in comb:
        v = comb["validation"]
        print(f"{prefix}combination: {comb['chosen']} (validation on {v['n_videos']} training videos: concat "
              f"{fig(v['concat'])}, late {fig(v['late'])})")


def _cmd_train_knn(args) -> int:
    from .stage import run_knn_split

    if args.k < 1:
        raise ParameterError(f"--k must be >= 1 (the number of neighbours), got {args.k}")
    with _warnings_as_lines():
        report = run_knn_split(args.manifest, args.features, args.split, args.out, n_neighbors=args.k,
                               metric=args.metric, weights=args.weights)
    _print_summary(report, prefix=f"train-knn split {args.split}: ")
    return 0


def _out_dir_lock(out):
    """``--out DIR``'s lock while ``idtfv evaluate`` writes there (:func:`idtfv.lock.output_dir_lock`; nothing
    without ``--out``). Held here: :func:`~idtfv.classify.evaluate.evaluate` is the library function that writes
    the files it is given (train-svm's and train-deep's reports too, under their own lock) and has no directory."""
    if out is None:
        return contextlib.nullcontext()
    from idtfv.lock import output_dir_lock

    return output_dir_lock(out)


def _cmd_evaluate(args) -> int:
    from .evaluate import evaluate, evaluate_detections

    if args.detections is not None or args.annotations is not None:
        if args.detections is None or args.annotations is None:
            raise ParameterError("--detections and --annotations go together: the detections CSV and its "
                                 "ground-truth intervals CSV")
        if args.scores or args.split is not None:
            raise ParameterError("--detections evaluates one detections CSV; give no score files and no --split")
        out = args.out
        if out is not None and out.exists() and not out.is_dir():
            raise ParameterError(f"--out {out}: exists and is not a directory; give a directory for report.json")
        with _out_dir_lock(out):
            report = evaluate_detections(args.detections, args.annotations, manifest=args.manifest,
                                         report_json=out / "report.json" if out else None)
        _print_summary(report)
        return 0
    if not args.scores:
        raise ParameterError("give score files to evaluate (or --detections with --annotations)")
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
    with _warnings_as_lines(), _out_dir_lock(out):
        report = evaluate(args.scores, manifest=args.manifest, split=split,
                          confusion_png=out / "confusion.png" if out else None,
                          report_json=out / "report.json" if out else None)
    _print_summary(report)
    return 0


def _weights(text: str) -> list:
    if text.strip() == "validate":
        return ["validate"]
    return _comma_list(_number, "a number (or 'validate')")(text)


def _refuse_overwriting_inputs(outputs: dict, inputs) -> None:
    """Refuse an output option naming one of the input files (or another output): the atomic write would
    replace the user's file before anything else fails."""
    named = [(opt, Path(p)) for opt, p in outputs.items() if p is not None]
    for i, (opt, out) in enumerate(named):
        for src in inputs:
            if same_file(out, Path(src)):
                raise ParameterError(f"{opt} {out}: is the input file {src}; writing there would replace it: give "
                                     "another file name")
        for opt2, out2 in named[:i]:
            if out == out2 or same_file(out, out2):
                raise ParameterError(f"{opt} and {opt2} name the same file ({out}); give two file names")


def _cmd_fuse(args) -> int:
    from .evaluate import evaluate
    from .fusion import choose_weights, fuse_scores
    from idtfv.scores import write_scores

    _refuse_overwriting_inputs({"--out": args.out, "--report": args.report},
                               [*args.scores, *(args.validation or [])])
    weights = args.weights
    chosen = None
    if weights is not None and "validate" in weights:
        if weights != ["validate"]:
            raise ParameterError(f"--weights: give either numbers or 'validate', got {', '.join(map(str, weights))}")
        val = args.validation or []
        if len(val) != len(args.scores):
            raise ParameterError(f"--weights validate needs --validation: one validation score file per score file "
                                 f"({len(args.scores)}), got {len(val)}")
        chosen = choose_weights(val, normalize=args.normalize)
        weights = chosen["weights"]
        print(f"weights {_plain(weights)} chosen on {chosen['n_videos']} validation videos: accuracy "
              f"{100 * chosen['accuracy']:.2f}% ({chosen['n_correct']}/{chosen['n_videos']}; equal weights "
              f"{100 * chosen['equal_weights_accuracy']:.2f}%)")
    elif args.validation:
        raise ParameterError("--validation is used only with --weights validate")
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
            report = evaluate(fused)
        report["fusion"] = {"weights": [float(w) for w in weights] if weights is not None else None,
                            "normalize": args.normalize, "validation": chosen}
        if args.report:
            from .evaluate import write_report

            write_report(report, args.report)
        _print_summary(report, prefix=f"fused {len(args.scores)} files ({args.normalize}): ")
    elif args.report:
        raise ParameterError("--report: the fused scores carry no labels to evaluate against")
    print(f"wrote {args.out}")
    return 0


# ------------------------------------------------------------------------------------------------ idtfv detect
def add_detect(subparsers) -> None:
    """Add ``idtfv detect`` (temporal action detection, :mod:`idtfv.classify.detect`)."""
    p = subparsers.add_parser(
        "detect", help="temporal action detection: sliding windows scored by the trained SVMs, NMS, THUMOS mAP",
        description=textwrap.fill(
            "Score sliding windows of every video of an untrimmed manifest with the linear SVMs of idtfv train-svm "
            "(window Fisher vectors from per-bin prefix sums, no re-encoding), keep the best per class by temporal "
            "NMS, write DIR/detections.csv (video_id,class,start,end,score) and, with --annotations, "
            "DIR/report.json: THUMOS'14 mAP at temporal IoU 0.1-0.5 with bootstrap intervals over videos (the report "
            "of idtfv evaluate --detections). The codebook and pyramid are read from the record idtfv encode wrote "
            "beside the SVM's training vectors (--vectors).", _HELP_WIDTH),
        epilog="example:\n"
               "  idtfv detect --manifest untrimmed/manifest.csv --features untrimmed/features.json "
               "--vectors fisher_split1.npz --svm svm_split1/ --annotations untrimmed/annotations.csv --out detect/",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--manifest", type=Path, required=True, help="manifest of the videos to search")
    p.add_argument("--features", type=Path, required=True, metavar="STAMP.json",
                   help="idtfv features stamp of these videos (all trajectories, not --store sample)")
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument("--vectors", type=Path, default=None, metavar="FV.npz",
                       help="the idtfv encode output the SVM was trained on: its codebook and pyramid are read from "
                            "the record encode wrote beside it (FV.json)")
    which.add_argument("--codebook", type=Path, default=None, metavar="DIR",
                       help="or the encode stage's codebook directory (CACHE/codebook-*) the SVM's vectors were made "
                            "with (then give --pyramid if it was not 1x1x1)")
    p.add_argument("--pyramid", default=None,
                   help="the encode stage's --pyramid (default: the record's with --vectors, else 1x1x1)")
    p.add_argument("--svm", type=Path, required=True, metavar="DIR", help="idtfv train-svm output directory")
    p.add_argument("--annotations", type=Path, default=None, metavar="GT.csv",
                   help="ground truth video_id,class,start,end (seconds): evaluate, write DIR/report.json")
    p.add_argument("--windows", type=_comma_list(_positive_float, "a positive number of seconds"), default=None,
                   metavar="S[,S...]", help="window lengths in seconds (default 1,2,4,8)")
    p.add_argument("--stride", type=_positive_float, default=0.25, metavar="F",
                   help="window stride as a fraction of its length (default 0.25)")
    p.add_argument("--nms-iou", type=float, default=0.3, help="temporal NMS IoU threshold (default 0.3)")
    p.add_argument("--max-per-class", type=int, default=100, help="detections kept per video and class (default 100)")
    p.add_argument("--out", type=Path, required=True, metavar="DIR", help="output directory")
    p.set_defaults(func=_cmd_detect)


def _cmd_detect(args) -> int:
    from .detect import DetectParams, run_detect

    params = DetectParams(**({} if args.windows is None else {"window_seconds": args.windows}),
                          stride_fraction=args.stride, nms_iou=args.nms_iou, max_per_class=args.max_per_class)
    result = run_detect(args.manifest, args.features, codebook=args.codebook, vectors=args.vectors, svm=args.svm,
                        out=args.out, params=params, pyramid=args.pyramid, annotations=args.annotations)
    if result["missing"]:
        print(f"warning: {len(result['missing'])} videos have no features and were left out", file=sys.stderr)
    sec = result["seconds"]
    print(f"detect: {result['n_detections']} detections in {result['n_videos']} videos ({sec['detect']:.1f} s, "
          f"codebook {Path(result['codebook']).name}) -> {result['detections']}")
    if result["report"] is not None:
        _print_summary(result["report"], prefix="detect: ")
        print(f"wrote {args.out / 'report.json'}")
    return 0


# ------------------------------------------------------------------------------------------------ idtfv cv
def add_cv(subparsers) -> None:
    """Add ``idtfv cv`` (cross-validation protocols, :mod:`idtfv.classify.cv`)."""
    from idtfv.cli import add_runner_options
    from idtfv.encoding import EncodeParams
    from idtfv.options import add_params_options

    p = subparsers.add_parser(
        "cv", help="cross-validation: per fold a codebook on its training videos, vectors, an SVM; pooled report",
        description=textwrap.fill(
            "Evaluate the pipeline over several folds: the manifest's split columns (--scheme splits, default: "
            "UCF101's and HMDB51's 3 splits), k folds over the manifest's groups (--scheme kfold) or leave one "
            "group out (--scheme logo). Per fold, PCA and the codebook are fitted on that fold's training videos "
            "only and cached, every video is encoded (cached, resumable) and the SVM trained: DIR/fold<f>/ holds "
            "what idtfv encode + train-svm write for that split. DIR/report.json (written last) has the mean and "
            "std of accuracy and mAP over folds, per-fold and per-channel figures, counts of correct clips and a "
            "bootstrap interval; DIR/confusion.png and DIR/confusion.json the confusion matrix pooled over folds. "
            "The features are extracted once, by idtfv features.", _HELP_WIDTH),
        epilog="examples:\n"
               "  idtfv cv --manifest manifest.csv --features features.json --cache cache --out cv_splits/\n"
               "  idtfv cv --manifest manifest.csv --features features.json --cache cache --out cv_logo/ "
               "--scheme logo\n"
               "  idtfv cv --manifest manifest.csv --features features.json --cache cache --out cv_k10/ "
               "--scheme kfold --n-folds 10 --combine validate",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--manifest", type=Path, required=True, help="manifest CSV (labels, groups, split columns)")
    p.add_argument("--features", type=Path, required=True, metavar="STAMP.json",
                   help="features stage stamp written by idtfv features (extracted once, shared by every fold)")
    p.add_argument("--cache", type=Path, required=True,
                   help="cache directory of the encode stage (codebook-*/ and encode-*/, shared with idtfv encode)")
    p.add_argument("--out", type=Path, required=True, metavar="DIR", help="output directory")
    folds = p.add_argument_group("folds")
    folds.add_argument("--scheme", choices=("splits", "kfold", "logo"), default="splits",
                       help="splits: the manifest's split columns; kfold: --n-folds folds over the groups (seeded by "
                            "--seed); logo: leave one group out (default splits)")
    folds.add_argument("--n-folds", type=int, default=5, metavar="K", help="folds of --scheme kfold (default 5)")
    folds.add_argument("--splits", type=_comma_list(_split_number, "a split number >= 1"), action="extend",
                       default=None, metavar="N[,N...]",
                       help="--scheme splits: the split columns to use (default all)")
    add_params_options(p, EncodeParams, title="encoding options (see EncodeParams; --seed also seeds the folds and "
                                              "the SVM)")
    svm = p.add_argument_group("SVM options (as idtfv train-svm)")
    svm.add_argument("--C", type=_positive_float, default=100.0, help="SVM cost C (default 100)")
    svm.add_argument("--cv-C", action="store_true", help="choose C per fold by cross-validation on its training videos")
    svm.add_argument("--C-folds", type=int, default=3, metavar="N", help="folds of --cv-C (default 3)")
    svm.add_argument("--loss", choices=("squared_hinge", "hinge"), default="squared_hinge", help="SVM loss")
    svm.add_argument("--tol", type=_positive_float, default=1e-4, help="dual solver tolerance (default 1e-4)")
    _channel_args(p, codebook=False)
    add_runner_options(p, jobs_default=1)
    p.set_defaults(func=_cmd_cv)


def _cmd_cv(args) -> int:
    import logging

    from idtfv.encoding import EncodeParams
    from idtfv.options import params_from_args

    from .cv import CVOptions, run_cv

    if args.C_folds < 2:
        raise ParameterError(f"--C-folds must be >= 2, got {args.C_folds}")
    params = params_from_args(args, EncodeParams)
    try:
        options = CVOptions(scheme=args.scheme, n_folds=args.n_folds,
                            splits=tuple(args.splits) if args.splits else None, seed=params.seed)
    except ParameterError as exc:  # worded with the command-line option, as params_from_args words its fields
        name = getattr(exc, "field", None)
        if name is None:
            raise
        raise ParameterError(f"--{name.replace('_', '-')}: expected {exc.expected}, got {exc.value!r}") from None
    svm = {"C": args.C, "cv_C": args.cv_C, "n_folds": args.C_folds, "loss": args.loss, "tol": args.tol,
           "random_state": params.seed, "combine": args.combine, "validation_fraction": args.validation}
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.WARNING, format="%(name)s: %(message)s", stream=sys.stderr)
    t0 = time.perf_counter()
    with _warnings_as_lines():
        report = run_cv(args.manifest, args.features, params, args.out, cache=args.cache, options=options, svm=svm,
                        jobs=args.jobs, scheduler=args.scheduler, force=args.force)

    def pct(v):
        return "n/a" if v is None else f"{100 * v:.2f}%"

    for f in report["folds"]:
        extra = f", combination {f['combination']['chosen']}" if "combination" in f else ""
        print(f"fold {f['fold']}: accuracy {pct(f['accuracy'])} ({f['n_correct']}/{f['n_test']}), mAP {pct(f['mAP'])}; "
              f"trained on {f['n_train']} videos, K={f['k']}{extra}")
    _print_summary(report, prefix=f"cv {args.scheme} ({report['n_splits']} folds): ")
    if report["encode_failed"]:
        print(f"warning: {report['encode_failed']} videos failed to encode and were left out of their folds",
              file=sys.stderr)
    print(f"wrote {args.out}/report.json, confusion.png, confusion.json in {time.perf_counter() - t0:.1f} s")
    return 0
