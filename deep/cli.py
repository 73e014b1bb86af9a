"""``idtfv train-deep``: train a CNN baseline on a manifest split and write checkpoint, scores, features and report.

A thin shell over ``idtfv.deep.stage.run_experiment``; bad input prints ``error: ...`` and exits with 2. On success
it prints two lines, like ``idtfv train-svm``: the test accuracy (with the count of correct videos and its bootstrap
interval), mean class accuracy and mAP of ``report.json``, then what was trained and where the run directory is.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from idtfv.errors import EXIT_BAD_INPUT, IdtfvError, ParameterError

__all__ = ["add_train_deep", "add_stack_scores", "main", "run", "run_stack", "resolve_preset", "SMALL"]

#: The "small" preset: a backbone that trains on the default dataset on 2 CPU cores in minutes.
SMALL = {"width": 16, "depth": 10, "size": 96}


def _fraction(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        v = float("nan")
    if not 0 < v < 1:
        raise argparse.ArgumentTypeError(f"expected a fraction between 0 and 1, got {text!r}")
    return v


def _add_arguments(p: argparse.ArgumentParser) -> None:
    from .names import MODALITIES, MODEL_NAMES  # names only: no torch for --help

    p.add_argument("--manifest", required=True, help="manifest CSV")
    p.add_argument("--model", required=True, choices=sorted(MODEL_NAMES), help="model family")
    p.add_argument("--modality", default="rgb", choices=sorted(MODALITIES),
                   help="input modality (default rgb); warped_flow is computed on the fly (DIS + the iDT "
                        "extractor's camera homography, as extract-flow --warped)")
    p.add_argument("--split", type=int, default=1, help="split number (default 1)")
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--rawframes", default=None,
                   help="rawframes directory written by extract-flow / idtfv flow (optional): frames, and the flow "
                        "fields of --modality flow (write it with --warped to train on precomputed warped flow); "
                        "without it flow is computed on the fly with DIS")
    p.add_argument("--epochs", type=int, default=30)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--preset", default="auto", choices=("auto", "standard", "small"),
                   help="model size defaults: standard (paper widths, depth 18, standard crop), small (width 16, "
                        "depth 10, crop 96: trains on 2 CPU cores in minutes); auto = small on CPU, standard on "
                        "CUDA. --width/--depth/--size override it")
    p.add_argument("--width", type=int, default=None, help="base width (channels of the first layer)")
    p.add_argument("--depth", type=int, default=None, help="ResNet depth: 10, 18, 34 or 50")
    p.add_argument("--frames", type=int, default=None, help="segments K or clip length T (model default)")
    p.add_argument("--stride", type=int, default=None, help="frame step inside a clip (model default)")
    p.add_argument("--size", type=int, default=None, help="crop side in pixels (model default)")
    p.add_argument("--snippet-len", type=int, default=None, help="frames stacked per segment (modality default)")
    p.add_argument("--optimizer", default="adamw", choices=("sgd", "adamw"),
                   help="adamw (default; lr 0.001) or sgd with momentum 0.9 (lr 0.01)")
    p.add_argument("--lr", type=float, default=None, help="peak learning rate (sgd 0.01, adamw 0.001)")
    p.add_argument("--weight-decay", type=float, default=5e-4)
    p.add_argument("--clips", type=int, default=1, help="test clips per video")
    p.add_argument("--crops", type=int, default=1, choices=(1, 3, 10), help="test crops per clip")
    p.add_argument("--pretrained", default=None, help="local state-dict file to initialise from")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = torch default)")
    p.add_argument("--workers", type=int, default=0, help="data loader processes (0 = in process)")
    p.add_argument("--validation", type=_fraction, default=None, metavar="F",
                   help="also hold out this fraction of the training groups (seeded by --seed; the rule of idtfv "
                        "train-svm --validation), train a second model on the other training videos and write its "
                        "scores of the held-out videos to OUT/validation_scores.csv (input of idtfv fuse --weights "
                        "validate); the test scores still come from the model trained on every training video")
    p.add_argument("--no-progress", action="store_true",
                   help="no progress output (by default: a bar when stderr is a terminal, and one line per epoch)")


def resolve_preset(preset: str, device: str, model: str, *, width=None, depth=None, size=None):
    """(width, depth, size) after applying ``preset`` ("auto": small on CPU, standard on CUDA); given values
    win; ``None`` means the model's standard value."""
    from .models import MODELS
    from .train import resolve_device

    if preset == "auto":
        preset = "standard" if resolve_device(device).type == "cuda" else "small"
    small = dict(SMALL) if preset == "small" else {}
    if not MODELS[model].has_depth:
        small.pop("depth", None)
    pick = lambda given, key: given if given is not None else small.get(key)  # noqa: E731
    return pick(width, "width"), pick(depth, "depth"), pick(size, "size")


def add_train_deep(subparsers) -> None:
    """Add ``idtfv train-deep``."""
    p = subparsers.add_parser("train-deep", help="train a CNN baseline (TSN, I3D, SlowFast, ...) on a manifest split",
                              description=__doc__.splitlines()[0])
    _add_arguments(p)
    p.set_defaults(func=run)


def add_stack_scores(subparsers) -> None:
    """Add ``idtfv stack-scores``."""
    q = subparsers.add_parser("stack-scores", help="stack the softmax scores of train-deep runs into a feature "
                                                    "file for SVM fusion (train-svm --features)",
                              description="Two-stream SVM fusion input: softmax scores of several train-deep runs "
                                          "(scores_train.csv + scores.csv), concatenated per video.")
    q.add_argument("runs", nargs="+", metavar="RUN_DIR", help="train-deep output directories")
    q.add_argument("--out", required=True, help="feature file to write (.npz)")
    q.set_defaults(func=run_stack)


def run_stack(args: argparse.Namespace) -> int:
    """Execute ``stack-scores``."""
    try:
        from .runs import stack_runs

        path = stack_runs(args.runs, args.out)
    except (IdtfvError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    print(f"wrote {path}")
    return 0


def run(args: argparse.Namespace) -> int:
    """Execute parsed ``train-deep`` arguments; returns the exit status."""
    try:
        from .stage import default_sampling, run_experiment, set_threads
        from .train import TrainConfig

        if args.threads < 0:
            raise ParameterError(f"--threads must be >= 0 (0 = torch's default), got {args.threads}")
        out = Path(args.out)
        if out.exists() and not out.is_dir():
            raise ParameterError(f"--out {out}: exists and is not a directory; give a directory for the checkpoint, "
                                 "scores and report")
        set_threads(args.threads)
        args.width, args.depth, args.size = resolve_preset(args.preset, args.device, args.model, width=args.width,
                                                           depth=args.depth, size=args.size)
        sampling = default_sampling(args.model, args.modality, frames=args.frames, size=args.size,
                                    snippet_len=args.snippet_len, stride=args.stride, num_clips=args.clips,
                                    num_crops=args.crops)
        lr = args.lr if args.lr is not None else (0.01 if args.optimizer == "sgd" else 0.001)
        config = TrainConfig(epochs=args.epochs, batch_size=args.batch_size, optimizer=args.optimizer, lr=lr,
                             weight_decay=args.weight_decay, device=args.device, seed=args.seed,
                             workers=args.workers).validate()
        t0 = time.perf_counter()
        summary = run_experiment(args.manifest, model=args.model, modality=args.modality, split=args.split,
                                 out_dir=args.out, sampling=sampling, train_config=config, width=args.width,
                                 depth=args.depth, rawframes=args.rawframes, pretrained=args.pretrained,
                                 progress=not args.no_progress, validation_fraction=args.validation)
    except (IdtfvError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    from idtfv.classify import summary_line

    print(summary_line(summary["report"], prefix=f"train-deep split {args.split}: "))
    out = str(args.out).rstrip("/")
    print(f"trained {args.model} ({args.modality}) on {summary['n_train']} videos, {args.epochs} epochs, in "
          f"{time.perf_counter() - t0:.1f} s; wrote {out}/ (report.json, confusion.png, scores.csv"
          + (f", validation_scores.csv: {summary['validation']['n_videos']} videos of groups "
             f"{', '.join(summary['validation']['groups'])}" if summary["validation"] else "") + ")")
    return 0


def main(argv=None) -> int:
    """Stand-alone entry point: ``python -m idtfv.deep.cli ...`` (same options as ``idtfv train-deep``)."""
    parser = argparse.ArgumentParser(prog="train-deep", description=__doc__.splitlines()[0])
    _add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
