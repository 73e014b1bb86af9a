"""``extract-trajectories``: improved dense trajectories of one video to ``.npz`` or LEAR text.

Thin shell over :func:`idt.extract`. Bad input (missing or non-video file, a 1-frame video, a bad option) prints
one ``error: ...`` line to stderr and exits with status 2.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from idt.errors import EXIT_BAD_INPUT, IdtfvError

__all__ = ["build_parser", "extract_trajectories_main"]


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, exit 2 (argparse's default prints the usage too)
        self.exit(EXIT_BAD_INPUT, f"error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="extract-trajectories",
                description="Extract improved dense trajectories (Wang & Schmid 2013) with HOG/HOF/MBH descriptors.")
    p.add_argument("video", help="input video file")
    p.add_argument("-o", "--output", help="output file (default: VIDEO's name with .npz, or .txt.gz for "
                                          "--format lear, in the current directory); '-' writes LEAR text to stdout")
    p.add_argument("--format", choices=("npz", "lear"), default=None,
                   help="npz (compressed arrays, default) or lear (436 tab-separated columns per trajectory)")
    prec = p.add_mutually_exclusive_group()
    prec.add_argument("--compact", action="store_true",
                      help="npz: store descriptors as float16 (the default; about half the size; loads as float32)")
    prec.add_argument("--full-precision", action="store_true",
                      help="npz: store descriptors as float32 instead of the default float16")
    p.add_argument("--start", type=int, default=None, help="first frame (0-based)")
    p.add_argument("--end", type=int, default=None, help="stop before this frame")
    p.add_argument("--resize-width", type=int, default=None, help="shrink wider frames to this width first")
    p.add_argument("--track-length", type=int, default=None, help="L, trajectory length in frames (15)")
    p.add_argument("--stride", type=int, default=None, help="W, dense sampling step in pixels (5)")
    p.add_argument("--scales", type=int, default=None, help="maximum number of spatial scales (8)")
    p.add_argument("--flow", choices=("farneback", "tvl1", "dis"), default=None, help="optical flow (farneback)")
    p.add_argument("--warp-flow", choices=("recompute", "subtract"), default=None,
                   help="camera-compensated flow: solve again on the warped frame, or derive it from the flow and "
                        "the homography")
    p.add_argument("--matcher", choices=("auto", "surf", "orb", "akaze", "sift", "flow"), default=None,
                   help="keypoints for the camera homography (auto: SURF if available, else AKAZE)")
    p.add_argument("--preset", choices=("default", "fast"), default="default",
                   help="default (LEAR-faithful) or fast (one flow pass, flow-only homography, cheaper Farneback)")
    p.add_argument("--no-camera-motion", action="store_true", help="do not estimate/compensate camera motion")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--boxes", metavar="FILE", help="LEAR-style human bounding boxes to mask out of the homography")
    g.add_argument("--detect-humans", action="store_true",
                   help="detect people with OpenCV's HOG detector (boxes cached per video, see --humans-cache)")
    p.add_argument("--detect-every", type=int, default=None, metavar="K",
                   help="with --detect-humans: detect every K frames and hold the boxes in between (5)")
    p.add_argument("--humans-cache", metavar="DIR", default=None,
                   help="with --detect-humans: directory caching the detected boxes as LEAR box files, keyed by the "
                        "video's path, size and mtime (default $IDTFV_HUMANS_CACHE or ~/.cache/idtfv/humans; "
                        "'' disables)")
    p.add_argument("--seed", type=int, default=None, help="random seed (0)")
    p.add_argument("--draw", metavar="TRACKS.mp4", help="also render the tracks over the video to this file")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    return p


def _params_from_args(args):
    from idt.params import IDTParams

    opts = {}
    for name in ("start", "end", "resize_width", "track_length", "stride", "scales", "flow", "warp_flow",
                 "matcher", "boxes", "seed", "detect_every", "humans_cache"):
        v = getattr(args, name)
        if v is not None:
            opts[name] = v
    if args.no_camera_motion:
        opts["camera_motion"] = False
    if args.detect_humans:
        opts["detect_humans"] = True
    return IDTParams.fast(**opts) if args.preset == "fast" else IDTParams(**opts)


def _output_path(args) -> tuple[Path | None, str]:
    fmt = args.format
    if args.output == "-":
        return None, "lear"
    if args.output:
        out = Path(args.output)
        if fmt is None:
            fmt = "lear" if out.name.endswith((".txt", ".txt.gz")) else "npz"
        return out, fmt
    fmt = fmt or "npz"
    stem = Path(args.video).name.rsplit(".", 1)[0]
    return Path(stem + (".npz" if fmt == "npz" else ".txt.gz")), fmt


def extract_trajectories_main(argv=None) -> int:
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as e:  # --help (0) or a bad option (2, one line already printed)
        return int(e.code or 0)
    try:
        video = Path(args.video)
        if not video.exists():
            raise IdtfvError(f"{video}: no such file; give the path of a video")
        params = _params_from_args(args)
        out, fmt = _output_path(args)
        if out is not None and not out.parent.exists():
            raise IdtfvError(f"{out}: the output directory {out.parent} does not exist; create it first")
        from idt.extract import extract

        bar = None
        on_frame = None
        if not args.quiet and sys.stderr.isatty():
            from tqdm import tqdm

            bar = tqdm(desc=video.name, unit="frame", file=sys.stderr)

            def on_frame(i, n):
                if bar.total is None and n:
                    bar.total = n
                bar.n = i
                bar.refresh()

        drawer = None
        if args.draw:
            from idt.draw import TrackDrawer

            drawer = TrackDrawer(args.draw)
        try:
            tracks = extract(video, params, on_frame=on_frame, on_tracks=drawer)
        finally:
            if bar is not None:
                bar.close()
            if drawer is not None:
                drawer.close()
        if out is None:
            from idt.trajectories import _format_lear

            sys.stdout.buffer.write(_format_lear(tracks.to_lear()))
        else:
            tracks.save(out, format=fmt, compact=fmt == "npz" and not args.full_precision)
            if not args.quiet:
                print(f"{len(tracks)} trajectories from {tracks.info.get('frames')} frames -> {out}",
                      file=sys.stderr)
    except (IdtfvError, OSError) as e:
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        print(f"error: {msg}", file=sys.stderr)
        return EXIT_BAD_INPUT
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(extract_trajectories_main())
