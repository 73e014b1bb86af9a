"""The flow commands: ``extract-flow VIDEO -o DIR`` and ``idtfv flow --manifest M --out DIR``.

Thin shells over :mod:`idtfv.idt.flow.stage`. Bad input is one ``error: ...`` line on stderr and exit status 2.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from idtfv.cli import OneLineParser, add_runner_options, report_failures, run_command
from idtfv.errors import ParameterError
from idtfv.idt.flow.rawframes import DEFAULT_BOUND, DEFAULT_QUALITY

__all__ = ["main", "build_parser", "add_flow", "add_flow_options"]

_PRESETS = ("default", "fast")  # idtfv.idt.flow.stage.PRESETS


def add_flow_options(parser: argparse.ArgumentParser) -> None:
    """The flow options shared by ``extract-flow`` and ``idtfv flow``."""
    g = parser.add_argument_group("flow options")
    g.add_argument("--method", choices=("tvl1", "farneback", "dis"), default="tvl1", help="flow method (default tvl1)")
    g.add_argument("--preset", choices=_PRESETS, default="default",
                   help="default = OpenCV DualTVL1's parameters; fast = TVL1Params.fast() (~7x cheaper)")
    g.add_argument("--bound", type=float, default=DEFAULT_BOUND,
                   help=f"clip flow to +-BOUND px before mapping to 0..255 (default {DEFAULT_BOUND:g})")
    g.add_argument("--resize-width", type=int, default=None, metavar="W",
                   help="shrink frames wider than W to width W (keeping the aspect ratio)")
    g.add_argument("--warped", action="store_true",
                   help="camera-compensated (TSN 'warped') flow through the extractor's homography")
    g.add_argument("--format", dest="fmt", choices=("jpg", "npz"), default="jpg",
                   help="jpg = rawframes directory (default); npz = lossless DIR/<video_id>.npz, float16")
    g.add_argument("--backend", choices=("auto", "cpu", "gpu"), default="auto",
                   help="where TV-L1 runs (gpu falls back to the CPU with a warning)")
    g.add_argument("--quality", type=int, default=DEFAULT_QUALITY, help=f"JPEG quality (default {DEFAULT_QUALITY})")
    g.add_argument("--seed", type=int, default=0, help="random seed of the homography RANSAC (--warped)")


def _options(args) -> dict:
    if args.bound <= 0:
        raise ParameterError(f"--bound must be > 0 px, got {args.bound:g}")
    if not 1 <= args.quality <= 100:
        raise ParameterError(f"--quality must be in 1..100, got {args.quality}")
    return {"method": args.method, "preset": args.preset, "bound": float(args.bound),
            "resize_width": args.resize_width, "warped": bool(args.warped), "fmt": args.fmt,
            "backend": args.backend, "quality": int(args.quality), "seed": int(args.seed)}


def build_parser() -> argparse.ArgumentParser:
    """The ``extract-flow`` parser."""
    p = OneLineParser(
        prog="extract-flow",
        description="Optical flow of a video as mmaction2/TSN rawframes: DIR/<video_id>/img_00001.jpg, "
                    "flow_x_00001.jpg, flow_y_00001.jpg (T frames -> T-1 flow pairs), or a float16 .npz.")
    p.add_argument("video", type=Path, help="input video")
    p.add_argument("-o", "--out", type=Path, required=True, metavar="DIR", help="output directory")
    p.add_argument("--video-id", default=None, help="name of the output (default: the video's file stem)")
    add_flow_options(p)
    return p


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``extract-flow``; returns the exit status."""
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exc:  # --help (0) or a bad option (2, one line already printed)
        return int(exc.code or 0)

    def body():
        from idtfv.idt.flow.stage import extract_video

        info = extract_video(args.video, args.out, video_id=args.video_id, **_options(args))
        print(f"extract-flow: {int(info['n_frames'])} frames, {int(info['n_flows'])} flows "
              f"({int(info['width'])}x{int(info['height'])}) -> {args.out}")

    return run_command(body)


def add_flow(subparsers) -> None:
    """Add ``idtfv flow`` (rawframes of every video of a manifest, through the stage runner)."""
    p = subparsers.add_parser(
        "flow", help="optical flow of every video of a manifest as rawframes (resumable)",
        description="Run extract-flow over a manifest: DIR/<video_id>/ rawframes (or DIR/<video_id>.npz) per "
                    "video; the runner's index and per-video records go to CACHE/flow-<hash>/.")
    p.add_argument("--manifest", type=Path, required=True, help="manifest CSV")
    p.add_argument("--out", type=Path, required=True, metavar="DIR", help="rawframes output directory")
    p.add_argument("--cache", type=Path, default=None, help="cache directory for the runner (default DIR/.cache)")
    add_runner_options(p)
    add_flow_options(p)
    p.set_defaults(func=_cmd_flow)


def _cmd_flow(args) -> int:
    from idtfv.data.manifest import read_manifest
    from idtfv.idt.flow.stage import run_flow

    manifest = read_manifest(args.manifest)
    options = _options(args)
    cache = args.cache if args.cache is not None else args.out / ".cache"
    result = run_flow(manifest.rows, options, out=args.out, cache_root=cache, jobs=args.jobs,
                      scheduler=args.scheduler, force=args.force)
    return report_failures("flow", result, allow_failed=args.allow_failed)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
