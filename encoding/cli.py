"""``idtfv encode``: PCA + GMM (or k-means) per channel on the split's training videos, then one vector per video.

Thin shell over :func:`idtfv.encoding.stage.run_encode`; an ``idtfv.commands`` entry point (``pyproject.toml``).
The encoding options are generated from :class:`idtfv.encoding.params.EncodeParams`' fields; building the
parser imports nothing heavy (no Numba, no scikit-learn).
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

__all__ = ["add_encode"]


def add_encode(subparsers) -> None:
    """Add the ``encode`` subcommand."""
    from idtfv.cli import add_runner_options
    from idtfv.options import add_params_options

    from .params import EncodeParams

    p = subparsers.add_parser(
        "encode", help="PCA + GMM + Fisher vectors (or BoF / VLAD) of every video -> feature file",
        description="Fit PCA (half the dimensions) and a diagonal GMM (or a k-means codebook) per descriptor "
                    "channel on a seeded sample of the split's training descriptors, encode every video of the "
                    "manifest (resumable, parallel) and write the feature file (video_ids, features, labels).")
    p.add_argument("--manifest", type=Path, required=True, help="manifest CSV")
    p.add_argument("--features", type=Path, required=True, metavar="STAMP.json",
                   help="features stage stamp written by idtfv features")
    p.add_argument("--split", type=int, default=1,
                   help="split whose training videos fit PCA and the codebook (default 1)")
    p.add_argument("--cache", type=Path, required=True, help="cache directory (codebook-*/ and encode-*/ go here)")
    p.add_argument("--out", type=Path, required=True, metavar="FV.npz", help="feature file to write")
    p.add_argument("--codebook", type=Path, default=None, metavar="DIR",
                   help="use this existing codebook directory (CACHE/codebook-*) instead of fitting one")
    p.add_argument("--streaming", action="store_true",
                   help="streaming mode (never stores raw descriptors): fit the codebook from the samples of an "
                        "'idtfv features --store sample' stamp, then extract and encode every video of the "
                        "manifest in one worker call each, keeping only its vector (idtfv.encoding.streaming)")
    p.add_argument("--keep-empty", action="store_true",
                   help="write videos without trajectories (status 'empty' in the features index) to the feature "
                        "file as zero vectors, to evaluate on every test video; train-svm leaves all-zero training "
                        "vectors out. Default: such videos are left out, with a warning")
    add_params_options(p, EncodeParams, title="encoding options (see EncodeParams)")
    add_runner_options(p, jobs_default=1)
    p.set_defaults(func=_cmd_encode)


def _cmd_encode(args) -> int:
    from idtfv.atomic import prepare_output_file
    from idtfv.cli import report_failures
    from idtfv.options import params_from_args

    from .params import EncodeParams

    params = params_from_args(args, EncodeParams)
    prepare_output_file(args.out, fix="give an --out in a writable directory (make: another CACHE)")  # before the fits
    if args.streaming:
        from .streaming import run_streaming_encode as run_encode
    else:
        from .stage import run_encode

    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s", stream=sys.stderr)
    summary = run_encode(args.manifest, args.features, params, split=args.split, cache=args.cache, out=args.out,
                         jobs=args.jobs, scheduler=args.scheduler, force=args.force, codebook=args.codebook,
                         keep_empty=args.keep_empty)
    if summary["missing"]:
        print(f"encode: {len(summary['missing'])} videos without features skipped (see the features stage index)",
              file=sys.stderr)
    status = report_failures("encode", summary["result"], allow_failed=args.allow_failed)
    print(f"encode: {summary['n_videos']} videos x {summary['dim']} dims (K={summary['k']}) -> {args.out}")
    return status
