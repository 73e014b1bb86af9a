"""The flow stage: two-stream inputs as rawframes, for one video (``extract-flow``) or a manifest (``idtfv flow``).

For a video of T decoded frames this writes ``DIR/<video_id>/img_00001.jpg .. img_{T}.jpg`` and T-1 flow pairs
``flow_x/flow_y_00001.jpg ..`` (flow k: frame k -> k+1), or with ``--format npz`` the single
``DIR/<video_id>.npz`` (see :mod:`idtfv.idt.flow.rawframes`). ``--warped`` writes TSN's camera-compensated "warped
flow": the camera homography between the two frames is estimated (``idtfv.idt.camera.estimate_homography``, fed by a
first flow), the second frame is warped into the first one's camera and the flow is solved again.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from idtfv.errors import ParameterError, VideoError
from idtfv.idt.flow import DISParams, FarnebackParams, TVL1Params, estimate_flow_batch, gpu_available
from idtfv.idt.flow.rawframes import DEFAULT_BOUND, DEFAULT_QUALITY, RawframesWriter, save_flow_npz

__all__ = ["PRESETS", "extract_video", "flow_params", "flow_item", "run_flow"]

PRESETS = ("default", "fast")
#: Frame pairs solved together when TV-L1 runs on a GPU.
GPU_BATCH = 16


def flow_params(*, method: str = "tvl1", preset: str = "default"):
    """The parameter object of ``method`` for a ``--preset`` (``fast``: :meth:`TVL1Params.fast`, DIS "fast")."""
    if preset not in PRESETS:
        raise ParameterError(f"preset must be one of {', '.join(PRESETS)}, got {preset!r}")
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

    With ``warped``: TSN's warped flow, which needs the extractor's ``idtfv.idt.camera`` (imported here, lazily).
    """
    def plain(prevs, curs):
        return estimate_flow_batch(prevs, curs, method=method, backend=backend, params=params)

    if not warped:
        return plain
    try:
        from idtfv.idt.camera import estimate_homography, warp_to_previous
    except ImportError as exc:  # pragma: no cover - depends on the extractor package being present
        raise ParameterError(f"--warped needs idtfv.idt.camera (estimate_homography, warp_to_previous): {exc}") from None
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
    idtfv.errors.VideoError
        Unreadable video or fewer than 2 frames.
    idtfv.errors.ParameterError
        Bad options.
    """
    from idtfv.data.manifest import make_video_id
    from idtfv.video import iter_frames

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


def run_flow(entries, options: dict, *, out, cache_root, jobs: int = 1, scheduler=None, force: bool = False):
    """Run :func:`flow_item` over ``entries`` through the stage runner; returns its ``StageResult``."""
    from idtfv.runner import run_stage

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    params = {"flow": {**options, "out": str(out.resolve())}}
    return run_stage("flow", flow_item, entries, params=params, cache_root=cache_root, jobs=jobs,
                     scheduler=scheduler, force=force)
