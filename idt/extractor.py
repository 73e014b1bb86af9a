r"""The improved-dense-trajectory extractor: a streaming driver over frames.

For every frame :math:`t \ge 1` (Wang & Schmid, ICCV 2013; LEAR's ``DenseTrackStab``):

1. build the scale pyramid of :math:`I_t` (:mod:`idtfv.idt.pyramid`);
2. flow :math:`f_s` from :math:`I_{t-1}` to :math:`I_t` on every level :math:`s`, median-filtered
   (:mod:`idtfv.idt.flow_pyramid`);
3. camera motion: homography :math:`H` from keypoint and flow matches (:mod:`idtfv.idt.camera`), and the compensated flow
   :math:`f^w_s` (recomputed on :math:`I_t` warped by :math:`H^{-1}` with the reference's border band filled from
   :math:`I_{t-1}`, or derived from :math:`f_s`: ``warp_flow``, ``warp_margin``);
4. integral histograms of level :math:`s` of :math:`I_{t-1}` (HOG) and of :math:`f^w_s` (HOF, MBH)
   (:mod:`idtfv.idt.descriptors`); per-frame blocks are summed per temporal cell as the track goes (:mod:`idtfv.idt.tracking`);
5. each live track at level :math:`s` reads its per-frame descriptor blocks at its current point, then moves by
   :math:`f_s` at that (rounded) point and stores :math:`f^w_s` there as its compensated step; tracks that leave
   the frame end; tracks with :math:`L` steps are validated (pruning in original-frame pixels) and emitted;
6. empty grid cells of each level of :math:`I_t` get new points (every ``init_gap`` frames).

Only the live tracks and two pyramids are kept, so memory does not grow with the video's length.
"""

from __future__ import annotations

import itertools
import os
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager

import cv2
import numpy as np

from idtfv import __version__
from idtfv.idt import descriptors as _desc
from idtfv.idt.camera import CameraMotion, compensate_flow, resolve_matcher, scale_homography, warp_to_previous
from idtfv.errors import ParameterError, VideoError
from idtfv.idt.flow_pyramid import make_pyramid_flow
from idtfv.idt.humans import HeldDetections, HOGPeopleDetector, box_mask, boxes_cache_path, load_boxes, save_boxes
from idtfv.idt import _tracking_nb as _nb
from idtfv.idt.params import IDTParams
from idtfv.idt.pyramid import build_pyramid, pyramid_geometry
from idtfv.idt.sampling import dense_sample
from idtfv.idt.tracking import TrackPool
from idtfv.idt.trajectories import Trajectories, concatenate

__all__ = ["extract", "iter_trajectories", "STAGES"]

#: Keys of the ``timings`` dict filled by :func:`iter_trajectories` (seconds per stage).
STAGES = ("decode", "pyramid", "flow", "camera", "warp_flow", "histograms", "tracking", "descriptors", "sampling",
          "output")


class _Timer:
    def __init__(self, timings: dict | None):
        self.t = timings

    @contextmanager
    def __call__(self, name):
        if self.t is None:
            yield
            return
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.t[name] = self.t.get(name, 0.0) + time.perf_counter() - t0


# ---------------------------------------------------------------------------------------------- frame sources
def _to_gray(frame, where: str) -> np.ndarray:
    a = np.asarray(frame)
    if a.dtype != np.uint8:
        raise VideoError(where, f"frames must be uint8 arrays, got dtype {a.dtype}; convert with .astype(np.uint8)")
    if a.ndim == 3 and a.shape[2] == 3:
        return cv2.cvtColor(a, cv2.COLOR_RGB2GRAY)  # idtfv.video yields RGB
    if a.ndim == 3 and a.shape[2] == 1:
        return np.ascontiguousarray(a[:, :, 0])
    if a.ndim == 2:
        return np.ascontiguousarray(a)
    raise VideoError(where, f"frames must be (h, w) grey or (h, w, 3) RGB, got shape {a.shape}")


def _resize(gray: np.ndarray, width: int | None) -> np.ndarray:
    if width is None or gray.shape[1] <= width:
        return gray
    h, w = gray.shape
    return cv2.resize(gray, (width, int(round(h * width / w))), interpolation=cv2.INTER_AREA)


def _open_source(path_or_frames, params: IDTParams, backend: str):
    """(frames iterator of grey uint8, info dict, n_frames or None)."""
    if isinstance(path_or_frames, (str, os.PathLike)):
        from idtfv.video import open_video, probe_video, require_frames

        path = os.fspath(path_or_frames)
        probe = probe_video(path, count_frames=True, backend=backend)
        total = require_frames(probe, 2, path)
        end = total if params.end is None else min(params.end, total)
        if params.start >= end:
            raise VideoError(path, f"start={params.start} is beyond the last frame ({total} frames)")
        n = end - params.start
        if n < 2:
            raise VideoError(path, f"only {n} frame in the range [{params.start}, {end}); need at least 2")
        reader = open_video(path, gray=True, max_width=params.resize_width, start=params.start, end=end,
                            backend=backend)

        def gen():
            with reader:
                yield from reader

        info = {"source": path, "fps": float(probe.fps), "backend": probe.backend}
        return gen(), info, n
    if isinstance(path_or_frames, np.ndarray) and path_or_frames.ndim in (3, 4):
        frames_in = path_or_frames  # (T, h, w[, 3]) stack
    elif isinstance(path_or_frames, Iterable):
        frames_in = path_or_frames
    else:
        raise VideoError(str(type(path_or_frames).__name__),
                         "expected a video path or an iterable of uint8 frames")
    n = None
    if hasattr(frames_in, "__len__"):
        total = len(frames_in)
        end = total if params.end is None else min(params.end, total)
        n = max(0, end - params.start)
    sliced = itertools.islice(frames_in, params.start, params.end)

    def gen():
        for k, f in enumerate(sliced):
            yield _resize(_to_gray(f, f"<frames>[{params.start + k}]"), params.resize_width)

    return gen(), {"source": "<frames>", "fps": None, "backend": "frames"}, n


class _HumanMasks:
    """Human boxes per frame: from a box file, from the detector's cache, or detected every k frames."""

    def __init__(self, params: IDTParams, source):
        self.boxes = load_boxes(params.boxes) if params.boxes is not None else None
        self.held = None
        self.cache_path = None
        self.cache_hit = False
        if params.detect_humans and params.camera_motion:  # the boxes only serve the homography
            if isinstance(source, (str, os.PathLike)) and params.humans_cache != "":
                self.cache_path = boxes_cache_path(source, params.humans_cache, start=params.start, end=params.end,
                                                   resize_width=params.resize_width, every=params.detect_every)
                if self.cache_path.exists():
                    self.boxes = load_boxes(self.cache_path)
                    self.cache_hit = True
            if not self.cache_hit:
                self.held = HeldDetections(HOGPeopleDetector(), every=params.detect_every, start=params.start)
        self.enabled = self.boxes is not None or self.held is not None

    def __call__(self, frame_num: int, gray: np.ndarray):
        if self.boxes is not None:
            return box_mask(gray.shape, self.boxes.get(frame_num))
        if self.held is not None:
            return box_mask(gray.shape, self.held(frame_num, gray))
        return None

    def finish(self, info: dict) -> None:
        """Record the boxes in ``info`` and write the cache (a failed write only leaves a note in ``info``)."""
        if self.held is None and not self.cache_hit:
            return
        boxes = self.boxes if self.cache_hit else self.held.boxes
        info["detected_humans"] = {str(k): np.round(v, 2).tolist() for k, v in sorted(boxes.items())}
        if self.cache_path is not None:
            info["humans_cache"] = {"path": str(self.cache_path), "hit": self.cache_hit}
            if not self.cache_hit:
                try:
                    self.cache_path.parent.mkdir(parents=True, exist_ok=True)
                    save_boxes(self.cache_path, boxes)
                except OSError as e:
                    info["humans_cache"]["error"] = str(e).splitlines()[0]


# ---------------------------------------------------------------------------------------------- the driver
def _layout(params: IDTParams):
    return _desc.DescriptorLayout(patch=params.patch, nx_cells=params.nxy_cells, ny_cells=params.nxy_cells,
                                  nt_cells=params.nt_cells)


def _finish(pos, disp, desc, scale, frame_num, width, height, n_frames, params, offsets):
    """Validate finished tracks of one level and build their rows (LEAR column order).

    ``frame_num`` is the absolute index of the frame where the tracks end (LEAR's ``frameNum``);
    ``t_pos = (frame_num - start - L/2) / n_frames`` clipped to [0, 0.999] with ``n_frames`` the number of frames
    in ``[start, end)`` (LEAR's convention for ``start = 0``).
    """
    n = len(pos)
    meta6 = np.zeros((n, 6), np.float32)
    traj = np.zeros((n, 2 * params.track_length), np.float32)
    keep = np.zeros(n, np.bool_)
    _nb.validate_tracks(pos, disp, float(scale), params.min_var, params.max_var, params.max_dis,
                        params.max_dis_ratio, params.min_camera_disp, bool(params.camera_motion), meta6, traj, keep)
    if not keep.any():
        return None
    meta6, traj, desc = meta6[keep], traj[keep], desc[keep]
    m = len(meta6)
    meta = np.empty((m, 10), np.float32)
    meta[:, 0] = frame_num
    meta[:, 1:7] = meta6
    meta[:, 7] = np.clip(meta6[:, 0] / np.float32(width), 0, 0.999)
    meta[:, 8] = np.clip(meta6[:, 1] / np.float32(height), 0, 0.999)
    if n_frames:
        meta[:, 9] = np.clip((frame_num - params.start - params.track_length / 2.0) / n_frames, 0, 0.999)
    else:
        meta[:, 9] = np.nan  # unknown length: extract() fills it in at the end
    # desc (m, n_t, D) holds temporal-cell means already (TrackPool sums as the track goes)
    blocks = {name: np.ascontiguousarray(desc[:, :, a:b]).reshape(m, -1) for name, (a, b) in offsets.items()}
    return Trajectories(meta=meta, traj=traj, info={}, **blocks)


def iter_trajectories(path_or_frames, params: IDTParams | None = None, *, backend: str = "auto",
                      batch_frames: int = 32, timings: dict | None = None,
                      on_frame=None, on_tracks=None) -> Iterator[Trajectories]:
    """Extract trajectories as they finish, in batches (bounded memory).

    Parameters
    ----------
    path_or_frames : path or iterable of frames
        A video file, or uint8 frames ``(h, w)`` grey / ``(h, w, 3)`` RGB (a list, an array ``(T, h, w[, 3])``
        or a generator).
    params : IDTParams
        Options (reference defaults when None).
    backend : str
        Video decoding backend for :mod:`idtfv.video` (``"auto"``, ``"opencv"``, ``"pyav"``).
    batch_frames : int
        Yield the trajectories finished during this many frames together (empty batches are not yielded).
    timings : dict or None
        If given, seconds per stage (:data:`STAGES`) are accumulated into it.
    on_frame : callable or None
        ``on_frame(frame_index, n_frames or None)`` after each frame (progress bars).
    on_tracks : callable or None
        ``on_tracks(frame_num, gray, pos, index)`` after each frame, with the points ``pos (k, L+1, 2)`` of the
        live level-0 tracks and their steps done ``index (k,)`` (for ``--draw``).

    Yields
    ------
    Trajectories
        Each batch's ``info`` holds the run's metadata (same dict for every batch). ``t_pos`` is NaN when the
        number of frames is not known in advance (a generator input); :func:`extract` fills it in.
    """
    params = IDTParams() if params is None else params
    if not isinstance(params, IDTParams):
        raise ParameterError(f"params: expected an IDTParams, got {type(params).__name__}")
    if not isinstance(batch_frames, int) or batch_frames < 1:
        raise ParameterError(f"batch_frames: expected a positive integer, got {batch_frames!r}")
    timer = _Timer(timings)
    frames, src_info, n_frames = _open_source(path_or_frames, params, backend)
    layout = _layout(params)
    dims = layout.dims()
    names = ("hog", "hof", "mbhx", "mbhy")
    offsets, o = {}, 0
    for name in names:
        offsets[name] = (o, o + dims[name])
        o += dims[name]
    desc_dim = o
    matcher = resolve_matcher(params.matcher) if params.camera_motion else "none"
    info = {
        "version": __version__,
        "params": params.to_dict(),
        "matcher": matcher,
        "flow": params.flow,
        "warp_flow": params.warp_flow if params.camera_motion else "none",
        **src_info,
    }
    humans = _HumanMasks(params, path_or_frames)
    fp = make_pyramid_flow(params)
    info["flow_impl"] = type(fp).__name__
    camera = CameraMotion(params, rng=np.random.default_rng(params.seed)) if params.camera_motion else None

    it = iter(frames)
    with timer("decode"):
        first = next(it, None)
    if first is None:
        raise VideoError(src_info["source"], "no frames in the requested range; need at least 2")
    h, w = first.shape
    if min(h, w) < params.patch:
        raise VideoError(src_info["source"], f"frames are {w}x{h}, smaller than the {params.patch}-px descriptor "
                                             "patch; use a larger video or a smaller patch")
    factors, sizes = pyramid_geometry(w, h, scales=params.scales, scale_factor=params.scale_factor,
                                      patch=params.patch)
    info.update(width=int(w), height=int(h), scales=[float(f) for f in factors])
    pools = []
    for (lw, lh) in sizes:
        pools.append(TrackPool(params.track_length, desc_dim, params.nt_cells,
                               capacity=(lw // params.stride) * (lh // params.stride)))

    hist_bufs = [None] * len(sizes)
    frame_num = params.start
    with timer("pyramid"):
        prev_pyr = build_pyramid(first, sizes)
    with timer("flow"):
        fp(prev_pyr)
    mask = humans(frame_num, first) if humans.enabled else None
    if camera is not None:
        with timer("camera"):
            camera.features(first, mask)
    with timer("sampling"):
        for lvl, pool in zip(prev_pyr, pools):
            pool.add(dense_sample(lvl, None, stride=params.stride, quality=params.quality))
    prev_gray = first
    batch: list[Trajectories] = []
    frames_in_batch = 0
    n_seen = 1
    n_accepted = 0
    init_counter = 0
    if on_frame is not None:
        on_frame(1, n_frames)

    while True:
        with timer("decode"):
            gray = next(it, None)
        if gray is None:
            break
        if gray.shape != (h, w):
            raise VideoError(src_info["source"], f"frame {frame_num + 1} has size {gray.shape[::-1]}, "
                                                 f"expected {(w, h)} like the first frame")
        frame_num += 1
        n_seen += 1
        with timer("pyramid"):
            pyr = build_pyramid(gray, sizes)
        with timer("flow"):
            flows = fp(pyr)
        if camera is not None:
            mask = humans(frame_num, gray) if humans.enabled else None
            with timer("camera"):
                H, n_inl, _ = camera.estimate(prev_gray, gray, flows[0], human_mask=mask)
            accepted = not np.array_equal(H, np.eye(3))
            n_accepted += accepted
            with timer("warp_flow"):
                margin = params.warp_margin
                if not accepted and margin <= 0:
                    flows_w = flows
                elif params.warp_flow == "recompute":
                    warped = warp_to_previous(gray, H, prev=prev_gray if margin > 0 else None, margin=margin)
                    flows_w = fp.flow_from_previous(build_pyramid(warped, sizes))
                elif margin > 0:
                    # the reference's border rule in level pixels (see IDTParams.warp_margin)
                    flows_w = [compensate_flow(f, scale_homography(H, s),
                                               interior=(margin / s, (w - 1 - margin) / s, (h - 1 - margin) / s))
                               for f, s in zip(flows, factors)]
                else:
                    flows_w = [compensate_flow(f, scale_homography(H, s)) for f, s in zip(flows, factors)]
        else:
            flows_w = flows

        finished = []
        for s, pool in enumerate(pools):
            if len(pool) == 0:
                continue
            with timer("tracking"):
                rows, prev_pts = pool.step(flows[s], flows_w[s])
            if len(rows):
                with timer("histograms"):
                    # reuse this level's arrays: fresh ~10 MB per frame costs about as much in page faults as
                    # the kernels themselves
                    hists = _desc.frame_histograms(prev_pyr[s].astype(np.float32), flows_w[s], layout=layout,
                                                   out=hist_bufs[s])
                    hist_bufs[s] = hists
                with timer("descriptors"):
                    blocks = _desc.cell_descriptors(hists, prev_pts, layout=layout)
                    pool.store_descriptors(rows, np.concatenate([blocks[k] for k in names], axis=1))
            with timer("output"):
                pos, disp, desc = pool.pop_finished()
                if len(pos):
                    t = _finish(pos, disp, desc, factors[s], frame_num, w, h, n_frames, params, offsets)
                    if t is not None:
                        finished.append(t)
        if on_tracks is not None and len(pools[0]):
            rows0 = pools[0].live()
            on_tracks(frame_num, gray, pools[0].pos[rows0], pools[0].index[rows0])

        init_counter += 1
        if init_counter >= params.init_gap:
            init_counter = 0
            with timer("sampling"):
                for lvl, pool in zip(pyr, pools):
                    pool.add(dense_sample(lvl, pool.current_points(), stride=params.stride,
                                          quality=params.quality))
        prev_pyr, prev_gray = pyr, gray
        batch.extend(finished)
        frames_in_batch += 1
        if on_frame is not None:
            on_frame(n_seen, n_frames)
        if frames_in_batch >= batch_frames:
            if batch:
                info_now = dict(info, frames=n_seen, homographies_accepted=n_accepted)
                yield concatenate(batch, info=info_now)
            batch, frames_in_batch = [], 0
    info.update(frames=n_seen, homographies_accepted=n_accepted)
    humans.finish(info)
    if n_seen < 2:
        raise VideoError(src_info["source"], "only 1 frame; need at least 2 to track anything")
    # the last batch carries the final info (frames seen, homographies accepted)
    yield concatenate(batch, info=info)


def extract(path_or_frames, params: IDTParams | None = None, *, backend: str = "auto",
            timings: dict | None = None, on_frame=None, on_tracks=None) -> Trajectories:
    """Improved dense trajectories of a whole video.

    Parameters
    ----------
    path_or_frames : path or iterable of uint8 frames
        See :func:`iter_trajectories`.
    params : IDTParams or None
        Options; LEAR's reference defaults when None.
    backend : str
        Video decoding backend.
    timings, on_frame, on_tracks
        See :func:`iter_trajectories`.

    Returns
    -------
    Trajectories
        ``meta (n,10)``, ``traj (n,30)``, ``hog (n,96)``, ``hof (n,108)``, ``mbhx (n,96)``, ``mbhy (n,96)`` and
        ``info`` (params, matcher used, frames, fps, size, scales, homographies accepted).
    """
    parts = list(iter_trajectories(path_or_frames, params, backend=backend, batch_frames=1 << 30,
                                   timings=timings, on_frame=on_frame, on_tracks=on_tracks))
    out = concatenate(parts, info=parts[-1].info)
    if len(out) and np.isnan(out.meta[:, 9]).any():
        p = IDTParams() if params is None else params
        n = out.info["frames"]
        out.meta[:, 9] = np.clip((out.meta[:, 0] - p.start - p.track_length / 2.0) / n, 0, 0.999)
    return out
