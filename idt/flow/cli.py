"""``extract-flow VIDEO -o DIR`` and ``idtfv flow --manifest M --out DIR``: two-stream inputs as rawframes.

For a video of T decoded frames this writes ``DIR/<video_id>/img_00001.jpg .. img_{T}.jpg`` and T-1 flow pairs
``flow_x/flow_y_00001.jpg ..`` (flow k: frame k -> k+1), or with ``--format npz`` the single
``DIR/<video_id>.npz`` (see :mod:`idt.flow.rawframes`). ``--warped`` writes TSN's camera-compensated "warped
flow": the camera homography between the two frames is estimated (``idt.camera.estimate_homography``, fed by a
first flow), the second frame is warped into the first one's camera and the flow is solved again.

Bad input is one ``error: ...`` line on stderr and exit status 2.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import cv2
import numpy as np

from idt.errors import EXIT_BAD_INPUT, IdtfvError, ParameterError, VideoError
from idt.flow import DISParams, FarnebackParams, TVL1Params, estimate_flow_batch, gpu_available
from idt.flow.rawframes import DEFAULT_BOUND, DEFAULT_QUALITY, RawframesWriter, save_flow_npz

__all__ = ["main", "register", "extract_video", "flow_params", "flow_item", "add_flow_options"]

_PRESETS = ("default", "fast")
#: Frame pairs solved together when TV-L1 runs on a GPU.
GPU_BATCH = 16


def flow_params(*, method: str = "tvl1", preset: str = "default"):
    """The parameter object of ``method`` for a ``--preset`` (``fast``: :meth:`TVL1Params.fast`, DIS "fast")."""
    if preset not in _PRESETS:
        raise ParameterError(f"preset must be one of {', '.join(_PRESETS)}, got {preset!r}")
    if method == "tvl1":
        return TVL1Params.fast() if preset == "fast" else TVL1Params()
    if method == "dis":
        return DISParams(preset="fast" if preset == "fast" else "medium")
    if method == "farneback":
        return FarnebackParams()
    raise ParameterError(f"method must be one of tvl1, farneback, dis, got {method!r}")


def _gray(rgb: np.ndarray) -> np.ndarray:
    return cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)


def _flow_fn(method, backend, params, warped, seed):
    """A ``(prev_grays, grays) -> (B, h, w, 2)`` flow function for a chunk of consecutive pairs.

    With ``warped``: TSN's warped flow, which needs the extractor's ``idt.camera`` (imported here, lazily).
    """
    def plain(prevs, curs):
        return estimate_flow_batch(prevs, curs, method=method, backend=backend, params=params)

    if not warped:
        return plain
    try:
        from idt.camera import estimate_homography, warp_to_previous
    except ImportError as exc:  # pragma: no cover - depends on the extractor package being present
        raise ParameterError(f"--warped needs idt.camera (estimate_homography, warp_to_previous): {exc}") from None
    rng = np.random.default_rng(seed)

    def warped_fn(prevs, curs):
        first = plain(prevs, curs)
        compensated = []
        for prev, cur, flow in zip(prevs, curs, first):
            H, _n_inliers, _matcher = estimate_homography(prev, cur, flow, rng=rng)
            compensated.append(warp_to_previous(cur, H, prev=prev))  # border band: prev, as the reference
        return plain(prevs, compensated)

    return warped_fn


def extract_video(
    video,
    out_dir,
    *,
    video_id: str | None = None,
    method: str = "tvl1",
    preset: str = "default",
    bound: float = DEFAULT_BOUND,
    resize_width: int | None = None,
    warped: bool = False,
    fmt: str = "jpg",
    backend: str = "auto",
    quality: int = DEFAULT_QUALITY,
    seed: int = 0,
) -> dict:
    """Write one video's rawframes (``fmt="jpg"``) or flow ``.npz`` (``fmt="npz"``) under ``out_dir``.

    Returns ``{"n_frames", "n_flows", "height", "width"}`` (int64 0-d arrays, the runner's per-video record).

    Raises
    ------
    idt.errors.VideoError
        Unreadable video or fewer than 2 frames.
    idt.errors.ParameterError
        Bad options.
    """
    from idt.data.manifest import make_video_id
    from idt.video import iter_frames

    if fmt not in ("jpg", "npz"):
        raise ParameterError(f"format must be jpg or npz, got {fmt!r}")
    if resize_width is not None and not (isinstance(resize_width, int) and resize_width > 0):
        raise ParameterError(f"--resize-width must be a positive integer, got {resize_width!r}")
    params = flow_params(method=method, preset=preset)
    video = Path(video)
    out_dir = Path(out_dir)
    video_id = video_id or make_video_id(video.name)
    flow_fn = _flow_fn(method, backend, params, warped, seed)
    # pairs are solved in chunks: one at a time on the CPU, batches of GPU_BATCH on a GPU
    chunk = GPU_BATCH if (method == "tvl1" and backend != "cpu" and gpu_available()) else 1

    frames = iter_frames(video, gray=False, max_width=resize_width)
    n_frames = 0
    prev_gray = None
    shape = (0, 0)
    pending_prev, pending_cur = [], []
    flows = []
    sink = RawframesWriter(out_dir / video_id, bound=bound, quality=quality) if fmt == "jpg" else None

    def flush():
        if not pending_prev:
            return
        for flow in flow_fn(pending_prev, pending_cur):
            if sink is not None:
                sink.add_flow(flow)
            else:
                flows.append(flow.astype(np.float16))
        pending_prev.clear()
        pending_cur.clear()

    try:
        for rgb in frames:
            gray = _gray(rgb)
            n_frames += 1
            shape = gray.shape
            if sink is not None:
                sink.add_frame(rgb)
            if prev_gray is not None:
                pending_prev.append(prev_gray)
                pending_cur.append(gray)
                if len(pending_prev) >= chunk:
                    flush()
            prev_gray = gray
        flush()
        if n_frames < 2:
            raise VideoError(video, f"has {n_frames} decodable frame(s); optical flow needs at least 2")
        if sink is not None:
            sink.commit()
        else:
            save_flow_npz(out_dir / f"{video_id}.npz", np.stack(flows), bound=bound)
    except BaseException:
        if sink is not None:
            sink.abort()
        raise
    return {
        "n_frames": np.int64(n_frames),
        "n_flows": np.int64(n_frames - 1),
        "height": np.int64(shape[0]),
        "width": np.int64(shape[1]),
    }


def flow_item(entry, params: dict) -> dict:
    """Runner stage function: ``extract_video`` for one manifest entry, options from ``params["flow"]``."""
    p = dict(params["flow"])
    out = p.pop("out")
    return extract_video(entry.path, out, video_id=entry.video_id, **p)


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
    p = argparse.ArgumentParser(
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
    args = build_parser().parse_args(argv)
    try:
        options = _options(args)
        info = extract_video(args.video, args.out, video_id=args.video_id, **options)
    except (IdtfvError, OSError) as exc:
        print(f"error: {' '.join(str(exc).split())}", file=sys.stderr)
        return EXIT_BAD_INPUT
    print(f"extract-flow: {int(info['n_frames'])} frames, {int(info['n_flows'])} flows "
          f"({int(info['width'])}x{int(info['height'])}) -> {args.out}")
    return 0


def register(subparsers) -> None:
    """Add ``idtfv flow`` (rawframes of every video of a manifest, through the stage runner)."""
    p = subparsers.add_parser(
        "flow", help="optical flow of every video of a manifest as rawframes (resumable)",
        description="Run extract-flow over a manifest: DIR/<video_id>/ rawframes (or DIR/<video_id>.npz) per "
                    "video; the runner's index and per-video records go to CACHE/flow-<hash>/.")
    p.add_argument("--manifest", type=Path, required=True, help="manifest CSV")
    p.add_argument("--out", type=Path, required=True, metavar="DIR", help="rawframes output directory")
    p.add_argument("--cache", type=Path, default=None, help="cache directory for the runner (default DIR/.cache)")
    from idt.pipeline.cli import add_runner_options

    add_runner_options(p)
    add_flow_options(p)
    p.set_defaults(func=_cmd_flow)


def _cmd_flow(args) -> int:
    from idt.data.manifest import read_manifest
    from idt.pipeline.cli import report_failures
    from idt.pipeline.runner import run_stage

    manifest = read_manifest(args.manifest)
    options = _options(args)
    args.out.mkdir(parents=True, exist_ok=True)
    params = {"flow": {**options, "out": str(args.out.resolve())}}
    cache = args.cache if args.cache is not None else args.out / ".cache"
    result = run_stage("flow", flow_item, manifest.rows, params=params, cache_root=cache, jobs=args.jobs,
                       scheduler=args.scheduler, force=args.force)
    return report_failures("flow", result, allow_failed=args.allow_failed)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
