r"""The improved-dense-trajectory extractor: a streaming driver over frames.

For every frame :math:`t \ge 1` (Wang & Schmid, ICCV 2013; LEAR's ``DenseTrackStab``), the steps of
:func:`iter_trajectories`' loop (methods of :class:`_Steps`):

1. ``pyramid``: the scale pyramid of :math:`I_t` (:func:`idtfv.idt.pyramid.pyramid_geometry`,
   :func:`idtfv.idt.flow.build_pyramid`);
2. ``optical_flow``: flow :math:`f_s` from :math:`I_{t-1}` to :math:`I_t` on every level :math:`s`,
   median-filtered (a :class:`idtfv.idt.flow.PyramidFlow`: Farnebäck, TV-L1 or DIS);
3. ``compensate_camera``: homography :math:`H` from keypoint and flow matches, and the compensated flow
   :math:`f^w_s`, recomputed on :math:`I_t` warped by :math:`H^{-1}` with the reference's border band filled from
   :math:`I_{t-1}`, or derived from :math:`f_s` (:mod:`idtfv.idt.camera`; ``warp_flow``, ``warp_margin``). A
   still pair (the flow matches' own fit moves no frame corner by more than ``still_camera`` px) takes that fit,
   detects no keypoints and derives :math:`f^w_s` (:meth:`idtfv.idt.camera.CameraMotion.step`);
4. ``track``: each live track at level :math:`s` moves by :math:`f_s` at its (rounded) point and stores
   :math:`f^w_s` there as its compensated step; tracks that leave the frame end (:mod:`idtfv.idt.tracking`);
5. ``describe``: integral histograms of level :math:`s` of :math:`I_{t-1}` (HOG) and of :math:`f^w_s` (HOF, MBH)
   give each moved track its per-frame descriptor blocks at its point before the move, summed per temporal cell
   as the track goes (:mod:`idtfv.idt.descriptors`; on the CPU the histograms' rows are made and the blocks read
   in one pass, :func:`~idtfv.idt.descriptors.stream_cell_descriptors`, whole histograms never stored);
6. ``finish``: tracks with :math:`L` steps are validated (pruning in original-frame pixels) and emitted as rows;
7. ``sample``: empty grid cells of each level of :math:`I_t` get new points (every ``init_gap`` frames,
   :mod:`idtfv.idt.sampling`);
8. ``advance``: :math:`I_t` becomes the previous frame.

With ``IDTParams(device="cuda")`` (:mod:`idtfv.idt.device`) the frame lives on the GPU: it is uploaded once,
and its pyramid and flows (:mod:`idtfv.idt.flow.farneback_cuda`), the warp and compensated flows of step 3
(:mod:`idtfv.idt._frame_cuda`), the integral histograms (:mod:`idtfv.idt._histograms_cuda`), the dense sampling
(:mod:`idtfv.idt._frame_cuda`) and the track pools with the tracking step, the blocks' gathering and sums and
the pruning (:class:`idtfv.idt.tracking_cuda.DeviceTrackPool`) read and write device arrays: per frame only the
finished tracks that pass the pruning come back, as rows. What stays on the host: the keypoints, matches and
homography of step 3 (from the host frames; the flow matches read back only their points' flow vectors,
:class:`_FlowAtPoints`) and the rows' last columns (:func:`_kept_rows`). The sampling, warp, tracking, histograms,
pools and pruning are bit-identical to the CPU's; the flow agrees to float rounding, so the trajectories meet the
issue's parity bar rather than equal the CPU's (``docs/GPU.md``). A flow solver without a device twin
(``farneback_impl="opencv"``, TV-L1, DIS) keeps steps 1-3 and 7 and the track pools on the host, and only the
tracking step's kernel and step 5's histograms and gathering run on the device (then bit-identical: the
trajectories are the CPU path's).

With ``IDTParams(threads=N)``, N > 1, on the CPU a **front thread** (:class:`_FrontThread`) runs up to two
frames ahead of the **main thread**. What runs where, per frame t:

* front thread: decoding and the size check, the human mask (and the keypoints when every frame's are needed:
  ``still_camera=0``, :meth:`_Steps.detect_ahead`; else a pair's homography detects them when it needs them), step 1,
  the HOG integral histograms of every level (:meth:`_Steps.hogs_ahead`: they depend on the frame alone; step 5
  uses them one frame later), step 2 and step 3's homography (:meth:`_Steps.homography`: keypoint and flow
  matches, RANSAC). With keypoints (the default preset) the homography is a job queued with the frame
  (:class:`_HomographyJob`) that the front thread makes while it is ahead and the main thread otherwise, as it
  takes the frame; either way in frame order, one after the other, so the camera's state and generator see what
  they see on one thread;
* main thread: as it takes frame t, frame t's corner response (:func:`idtfv.idt.sampling.corner_response`, which
  remembers it: step 7 samples level 0 with it, and the front thread's homography of frame t+1 takes its flow
  matches' corners from it, so the front thread, the longer share of both presets, finds it made instead of making
  it); step 3's warped flow (warp, pyramid, a second Farnebäck solve from frame t-1, which runs beside
  the front thread's solves of frames t+1, t+2: the solver keeps frames t-1 .. t+2 and gives each caller its own
  workspace, :meth:`~idtfv.idt.flow.PyramidFlow.look_ahead`), steps 4-7 with step 5's HOF and MBH histograms
  (:meth:`_Steps.describe`), and 8;
* with N >= 3, steps 4-7 are also shared out by level (:func:`level_groups`) among the main thread and N - 2
  workers.

The default preset's work splits about evenly between the two (the front thread's flow and keypoints against
the main thread's warped flow and histograms); the front thread makes the HOG histograms and the levels' corner
responses (for step 7 and the next homography) only while it is ahead, else the main thread makes them, the
same numbers either way. The other way round, with ``still_camera=0``, the main thread, while it waits for an
item, makes the keypoints of the frame two ahead of the front thread's (:class:`_KeypointJob`, with a twin of the
camera's detector), which the front thread then takes instead of detecting them (that front thread was the
slower one by ~10%). With either preset, a main thread waiting for an item also makes the next frame's pyramid and
flow preparation (its levels' polynomial expansions, :class:`_PrepJob`), which the front thread otherwise makes as
it reaches the frame. A solver that cannot look ahead (DIS, TV-L1) keeps its calls in
the one-thread order.

On the device (``device="cuda"``) :class:`_HostAhead` runs instead, and only host work leaves the main thread:
a decode thread decodes the frames in order, checks their size and makes their human masks, and N - 1 host
threads detect and describe each frame's keypoints and compute its corner response (for the flow matches of the
next frame's homography), several frames at once, up to ``2 N`` frames ahead of the main thread. The main thread
does every step that touches the device (the upload, steps 1-2, the warp and compensated flows, 4-7, every
readback) and the order-dependent host work (the keypoint matching and the homography's RANSAC, the camera's
state) frame after frame: no device launch, allocation or copy happens on another thread, so on the GPU worker
every one goes to the video's CUDA stream. What left the main thread is the camera's keypoints, ~7 ms of CPU per
320x240 frame (``docs/GPU.md``, "The host's share").

Either way each step sees the inputs it sees on one thread, in the same order per state (the flow's, the
camera's, each level's pool), so the output bytes do not depend on N; an error ahead (decoding, a frame of
another size, a failed detection) is raised by the main thread at that frame, as on one thread, and stops the
threads ahead.

Only the live tracks and two pyramids are kept on one thread; with the front thread a few more frames' pyramids,
flows and HOG histograms (at most two frames past the main thread's, :data:`_AHEAD`), with the device's stage
ahead at most ``2 N + 2`` host frames and their keypoints, so memory does not grow with the video's length.
"""

from __future__ import annotations

import collections
import contextvars
import itertools
import os
import queue
import threading
import time
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import NamedTuple

import cv2
import numpy as np

from idtfv import __version__
from idtfv.allocator import tune_thread_heap
from idtfv.errors import ParameterError, VideoError
from idtfv.idt import _tracking_nb as _nb
from idtfv.idt import descriptors as _desc
from idtfv.idt.camera import (CameraMotion, CameraStep, _detect, _make_detector, compensated_flows,
                              detected_ahead, is_identity, resolve_matcher)
from idtfv.idt.device import resolve_device
from idtfv.idt.flow.farneback import FarnebackPyramidFlow
from idtfv.idt.flow.pyramid import build_pyramid
from idtfv.idt.flow.pyramid_flow import make_pyramid_flow
from idtfv.idt.humans import HeldDetections, HOGPeopleDetector, box_mask, boxes_cache_path, load_boxes, save_boxes
from idtfv.idt.params import IDTParams
from idtfv.idt.pyramid import pyramid_geometry
from idtfv.idt.sampling import corner_response, dense_sample_levels, dense_sample_pool
from idtfv.idt.tracking import TrackPool
from idtfv.idt.layout import BLOCK_NAMES
from idtfv.idt.trajectories import Trajectories, TrajectoryWriter, concatenate, fill_t_pos, output_format
from idtfv.jit import light_numba_init

light_numba_init()  # before the first kernel call: Numba's runtime then starts without importing scipy.linalg

__all__ = ["extract", "extract_to_file", "iter_trajectories", "STAGES"]

#: Keys of the ``timings`` dict filled by :func:`iter_trajectories` (seconds per stage). On the CPU, step 5 makes the
#: integral histograms' rows and reads the blocks in one pass (:func:`idtfv.idt.descriptors.stream_cell_descriptors`),
#: all timed as "histograms": "descriptors" then stays near 0 (it is the block gathering on the device only).
STAGES = ("decode", "pyramid", "flow", "camera", "warp_flow", "histograms", "tracking", "descriptors", "sampling",
          "output")
#: The per-frame descriptor blocks of a track, in LEAR's column order.
DESCRIPTORS = ("hog", "hof", "mbhx", "mbhy")


class _NoStage:
    """The stage timer's context when nothing is timed: entering and leaving it does nothing (one shared
    instance, no per-call object or generator)."""

    __slots__ = ()

    def __enter__(self):
        return None

    def __exit__(self, *exc):
        return False


_NO_STAGE = _NoStage()


class _Stage:
    """One timed stage of :class:`_Timer`: its seconds are added to the timer's dict when it is left."""

    __slots__ = ("timer", "name", "sync", "t0")

    def __init__(self, timer: "_Timer", name: str):
        self.timer, self.name = timer, name

    def __enter__(self):
        timer = self.timer
        # the device's thread only: host threads running ahead (_HostAhead: decoding, keypoints) make no device
        # call, not even a synchronisation (their current stream would not be the video's)
        self.sync = timer.sync if timer.sync is not None and threading.get_ident() == timer._owner else None
        if self.sync is not None:
            self.sync()
        self.t0 = time.perf_counter()
        return None

    def __exit__(self, *exc):
        if self.sync is not None:
            self.sync()
        dt = time.perf_counter() - self.t0
        timer = self.timer
        with timer._lock:
            timer.t[self.name] = timer.t.get(self.name, 0.0) + dt
        return False


class _Timer:
    """Seconds per stage into ``timings`` (None: no timing, and ``timer(name)`` is a shared do-nothing context).
    ``sync``, when set (``device="cuda"`` with timings), is called before a stage's clock starts and before it
    stops, so that a stage's time is the device work it launched, not the launches (CUDA kernels run
    asynchronously); the CPU path has none. Every stage of :data:`STAGES` is a key of ``timings`` from the start
    (0.0 for one that does not run: "descriptors" on the CPU, whose blocks are read in the "histograms" pass)."""

    def __init__(self, timings: dict | None, sync=None):
        self.t = timings
        if timings is not None:
            for name in STAGES:
                timings.setdefault(name, 0.0)
        self.sync = sync
        self._owner = threading.get_ident()  # only this thread synchronises: the others touch no device
        self._lock = threading.Lock()  # with --threads, the per-level steps time themselves from several threads

    def __call__(self, name: str):
        if self.t is None:
            return _NO_STAGE
        return _Stage(self, name)


# ---------------------------------------------------------------------------------------------- frame sources
#: How to make uint8 frames of another dtype (a bare .astype(np.uint8) turns 0..1 floats into black frames).
_TO_UINT8 = {"f": "floats: np.clip(f * 255, 0, 255).round().astype(np.uint8) for 0..1 values, "
                  "np.clip(f, 0, 255).round().astype(np.uint8) for 0..255",
             "u": "wider integers: scale to 0..255 first (uint16: (f >> 8).astype(np.uint8))",
             "i": "integers: np.clip(f, 0, 255).astype(np.uint8) for 0..255 values",
             "b": "a boolean mask: f.astype(np.uint8) * 255"}


def _to_gray(frame, where: str) -> np.ndarray:
    if frame is None or isinstance(frame, (str, bytes)):  # np.asarray(None) is an object scalar: say what came
        raise VideoError(where, f"expected a uint8 frame array (h, w) or (h, w, 3), got {type(frame).__name__}; "
                                "the frames' iterable yields one array per frame")
    a = np.asarray(frame)
    if a.dtype != np.uint8:
        how = _TO_UINT8.get(a.dtype.kind, "convert each frame to a uint8 array")
        raise VideoError(where, f"frames must be uint8 arrays (0..255), got dtype {a.dtype}; {how}")
    if a.ndim == 3 and a.shape[2] == 3:
        return cv2.cvtColor(a, cv2.COLOR_RGB2GRAY)  # idtfv.video yields RGB
    if a.ndim == 3 and a.shape[2] == 1:
        return np.ascontiguousarray(a[:, :, 0])
    if a.ndim == 2:
        return np.ascontiguousarray(a)
    hint = "; drop the alpha channel (f[..., :3])" if a.ndim == 3 and a.shape[2] == 4 else ""
    raise VideoError(where, f"frames must be (h, w) grey or (h, w, 3) RGB, got shape {a.shape}{hint}")


def _resize(gray: np.ndarray, width: int | None) -> np.ndarray:
    if width is None or gray.shape[1] <= width:
        return gray
    h, w = gray.shape
    return cv2.resize(gray, (width, int(round(h * width / w))), interpolation=cv2.INTER_AREA)


class _Source(NamedTuple):
    """What :func:`_open_source` hands the driver.

    Attributes
    ----------
    frames : iterator of ndarray
        Grey ``uint8`` frames ``(h, w)`` at the working size.
    info : dict
        ``source``, ``fps``, ``backend`` and, for a file, ``source_size`` ``(width, height)`` before the resize
        (for frames it is added once the first frame was read).
    n_frames : int or None
        The number of frames in ``[start, end)`` when known before the first one is used (``t_pos`` is then set
        as the rows are made); ``None``: ``t_pos`` stays NaN until the end (:func:`fill_t_pos`).
    total_hint : int or None
        The progress bar's total: ``n_frames``, else the container header's count clipped to the range (an
        estimate; the driver corrects it at the end), else None.
    too_short : callable
        ``too_short(n_seen)``: the :class:`~idtfv.errors.VideoError` for a source that gave fewer than 2 frames
        (the messages of the checks a counted file gets up front).
    """

    frames: Iterator[np.ndarray]
    info: dict
    n_frames: int | None
    total_hint: int | None
    too_short: object


def _open_source(path_or_frames, params: IDTParams, backend: str, *, count_frames: bool = False) -> _Source:
    """Open a video file or wrap frames for the driver (:class:`_Source`).

    A file is decoded once: its header gives the fps, size and a frame-count estimate, and its honest length is
    the number of frames the pass decodes (``t_pos`` is filled in at the end). With ``count_frames`` (a consumer
    that writes rows as they come: LEAR text) the file is first decoded once more to count its frames, so that
    ``t_pos`` is known from the first row on.
    """
    width = params.working_width
    if isinstance(path_or_frames, (str, os.PathLike)):
        path = os.fspath(path_or_frames)
        if count_frames or (params.end is not None and params.end - params.start < 2):
            return _counted_file(path, params, backend)  # a 1-frame range fails here, as it always did
        return _file_read_once(path, params, backend)
    if isinstance(path_or_frames, np.ndarray) and path_or_frames.ndim in (3, 4):
        frames_in = path_or_frames  # (T, h, w[, 3]) stack
    elif isinstance(path_or_frames, np.ndarray):  # one (h, w) frame would be taken as h frames of 1-D rows
        raise VideoError("<frames>", f"expected a stack of frames (T, h, w) or (T, h, w, 3), got an array of shape "
                                     f"{path_or_frames.shape}; pass several frames (a list or a stacked array)")
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
    info = {"source": "<frames>", "fps": None, "backend": "frames"}

    def gen():
        for k, f in enumerate(sliced):
            gray = _to_gray(f, f"<frames>[{params.start + k}]")
            if k == 0:
                info["source_size"] = (gray.shape[1], gray.shape[0])
            yield _resize(gray, width)

    return _Source(gen(), info, n, n, _too_short("<frames>"))


def _too_short(where: str):
    """The driver's message for a source that gave 1 frame when its length was not checked up front."""
    return lambda n_seen: VideoError(where, "only 1 frame; need at least 2 to track anything")


def _reader_frames(reader) -> Iterator[np.ndarray]:
    with reader:
        yield from reader


def _counted_file(path: str, params: IDTParams, backend: str) -> _Source:
    """A file counted first (:func:`idtfv.video.probe_video` decodes it all), then decoded: ``n_frames`` known."""
    from idtfv.video import open_video, probe_video, require_frames

    probe = probe_video(path, count_frames=True, backend=backend)
    total = require_frames(probe, 2, path)
    end = total if params.end is None else min(params.end, total)
    if params.start >= end:
        raise VideoError(path, f"start={params.start} is beyond the last frame ({total} frames)")
    n = end - params.start
    if n < 2:
        raise VideoError(path, f"only {n} frame in the range [{params.start}, {end}); need at least 2")
    reader = open_video(path, gray=True, max_width=params.working_width, start=params.start, end=end,
                        backend=backend)
    info = {"source": path, "fps": float(probe.fps), "backend": probe.backend,
            "source_size": (int(probe.width), int(probe.height))}
    return _Source(_reader_frames(reader), info, n, n, _too_short(path))


def _file_read_once(path: str, params: IDTParams, backend: str) -> _Source:
    """A file decoded once: the checks :func:`_counted_file` makes up front are made when the decoding tells.

    Every message is :func:`_counted_file`'s: ``start`` beyond the end fails at the open (the reader decoded the
    whole file looking for frame ``start``), a range of 1 frame once the decoding ended (:attr:`too_short`); a
    truncated file is reported by the reader when its stream ends (:class:`idtfv.video.TruncatedVideoWarning`).
    """
    from idtfv.video import StartBeyondEndError, open_video, require_frames

    try:
        reader = open_video(path, gray=True, max_width=params.working_width, start=params.start, end=params.end,
                            backend=backend)
    except StartBeyondEndError as exc:
        total = require_frames(exc.frames, 2, path)
        raise VideoError(path, f"start={params.start} is beyond the last frame ({total} frames)") from None
    header = reader.header_frames
    hint = None
    if header > 0:
        hint = (header if params.end is None else min(params.end, header)) - params.start
        hint = hint if hint >= 1 else None
    info = {"source": path, "fps": float(reader.fps), "backend": reader.info.backend,
            "source_size": (int(reader.info.width), int(reader.info.height))}

    def too_short(n_seen: int) -> VideoError:
        total = reader.decodable_frames  # the stream ended inside [start, end): it is the file's count
        if total is None:  # not reached: a range of >= 2 frames that stopped at 1 ended with the stream
            return _too_short(path)(n_seen)
        try:
            require_frames(total, 2, path)  # a 1-frame video: "only 1 decodable frame; need at least 2"
        except VideoError as exc:
            return exc
        return VideoError(path, f"only {n_seen} frame in the range [{params.start}, {total}); need at least 2")

    return _Source(_reader_frames(reader), info, None, hint, too_short)


class _HumanMasks:
    """Human boxes per frame: from a box file, from the detector's cache, or detected every k frames."""

    def __init__(self, params: IDTParams, source, source_size=None):
        self.boxes = load_boxes(params.boxes) if params.boxes is not None else None
        self.box_scale = 1.0  # a box file is in source pixels: working width / source width when frames shrink
        self.held = None
        self.cache_path = None
        self.cache_hit = False
        if params.detect_humans and params.camera_motion:  # the boxes only serve the homography
            if isinstance(source, (str, os.PathLike)) and params.humans_cache != "":
                # keyed by the option as given (keys stay those of earlier versions), or by the working width
                # when the frames are shrunk to it (boxes of a shrunk frame must not meet those of a full one)
                width = params.resize_width
                if source_size is not None and params.working_width is not None and \
                        source_size[0] > params.working_width:
                    width = params.working_width
                self.cache_path = boxes_cache_path(source, params.humans_cache, start=params.start, end=params.end,
                                                   resize_width=width, every=params.detect_every)
                if self.cache_path.exists():
                    self.boxes = load_boxes(self.cache_path)
                    self.cache_hit = True
            if not self.cache_hit:
                self.held = HeldDetections(HOGPeopleDetector(), every=params.detect_every, start=params.start)
        self.enabled = self.boxes is not None or self.held is not None

    def __call__(self, frame_num: int, gray: np.ndarray):
        if self.boxes is not None:
            boxes = self.boxes.get(frame_num)
            if boxes is not None and self.box_scale != 1.0 and not self.cache_hit:
                boxes = np.asarray(boxes, np.float64)[:, :4] * self.box_scale
            return box_mask(gray.shape, boxes)
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


# ---------------------------------------------------------------------------------------------- the steps
def level_groups(sizes: list[tuple[int, int]], threads: int) -> list[tuple[int, ...]]:
    """Pyramid levels shared out among ``threads`` groups of about equal area (largest first, each to the least
    loaded group): with the reference's 1/sqrt(2) scales, level 0 alone weighs about as much as all the others.

    Parameters
    ----------
    sizes : list of (width, height)
        The levels' sizes, finest first.
    threads : int

    Returns
    -------
    list of tuple of int
        Non-empty groups of level indices, each in increasing order.
    """
    groups: list[list[int]] = [[] for _ in range(min(threads, len(sizes)))]
    load = [0] * len(groups)
    for s in sorted(range(len(sizes)), key=lambda s: -sizes[s][0] * sizes[s][1]):
        g = load.index(min(load))
        groups[g].append(s)
        load[g] += sizes[s][0] * sizes[s][1]
    return [tuple(sorted(g)) for g in groups if g]


def _t_pos(frame_num: int, n_frames: int | None, params: IDTParams) -> float:
    """The ``t_pos`` of the rows of tracks ending at ``frame_num`` (the absolute index, LEAR's ``frameNum``):
    ``(frame_num - start - L/2) / n_frames`` clipped to [0, 0.999] with ``n_frames`` the number of frames in
    ``[start, end)`` (LEAR's convention for ``start = 0``); NaN when that number is not known yet (:func:`extract`
    fills it in at the end)."""
    if n_frames:
        return float(np.clip((frame_num - params.start - params.track_length / 2.0) / n_frames, 0, 0.999))
    return float("nan")


def _pool_rows(levels, frame_num: int, width: int, height: int, t_pos: float, params: IDTParams,
               widths) -> Trajectories | None:
    """The rows (LEAR's column order) of the finished tracks of one frame's levels that pass the pruning, level
    after level, or None when none does: ``levels`` lists ``(pool, rows, scale)``, the ``rows`` of a level's
    ``pool`` (:meth:`~idtfv.idt.tracking.TrackPool.pop_finished_rows`, not empty) and the level's factor. Each
    level's rows are validated and made into rows in place by one kernel (:func:`idtfv.idt._tracking_nb.pool_rows`),
    written after the rows kept on the levels before in one set of arrays, so a frame makes one
    :class:`Trajectories` (rather than one per level: fewer allocations and less Python between the kernels).
    ``width``, ``height``: the frame's size; ``widths``: the four descriptor blocks' widths (:data:`DESCRIPTORS`'
    order)."""
    n = sum(len(rows) for _, rows, _ in levels)
    meta = np.empty((n, 10), np.float32)
    traj = np.empty((n, 2 * params.track_length), np.float32)
    blocks = [np.empty((n, w), np.float32) for w in widths]
    m = 0
    for pool, rows, scale in levels:
        end = m + len(rows)  # this level's rows go after the rows kept so far: at most len(rows) of them
        m += _nb.pool_rows(rows, pool.pos, pool.disp, pool.desc, pool.per_cell, float(scale), params.min_var,
                           params.max_var, params.max_dis, params.max_dis_ratio, params.min_camera_disp,
                           bool(params.camera_motion), frame_num, width, height, t_pos, meta[m:end], traj[m:end],
                           *(b[m:end] for b in blocks))
    if m == 0:
        return None
    return Trajectories(meta=meta[:m], traj=traj[:m], info={}, **{k: b[:m] for k, b in zip(DESCRIPTORS, blocks)})


def _kept_rows(meta6, traj, desc, frame_num, width, height, n_frames, params, offsets):
    """The rows of validated tracks: ``meta6 (m, 6)``, ``traj (m, 2L)`` and ``desc (m, n_t, D)`` (temporal-cell
    means) of the kept tracks of ``DeviceTrackPool.pop_validated`` (pruned on the device); on the CPU
    :func:`_pool_rows` makes the same rows from the pool in place."""
    m = len(meta6)
    meta = np.empty((m, 10), np.float32)
    meta[:, 0] = frame_num
    meta[:, 1:7] = meta6
    meta[:, 7] = np.clip(meta6[:, 0] / np.float32(width), 0, 0.999)
    meta[:, 8] = np.clip(meta6[:, 1] / np.float32(height), 0, 0.999)
    meta[:, 9] = _t_pos(frame_num, n_frames, params)  # NaN for an unknown length: extract() fills it in
    # desc (m, n_t, D) holds temporal-cell means already (TrackPool sums as the track goes)
    blocks = {name: np.ascontiguousarray(desc[:, :, a:b]).reshape(m, -1) for name, (a, b) in offsets.items()}
    return Trajectories(meta=meta, traj=traj, info={}, **blocks)


def _fan_out(executor: ThreadPoolExecutor, run, groups) -> list:
    """``run(group)`` (a list) for every group, concatenated in group order: the first on this thread, the others
    on the executor (whose threads may also be solving the next frame's flow: the OS shares the cores out)."""
    futures = [executor.submit(run, g) for g in groups[1:]]
    out = list(run(groups[0]))
    for f in futures:
        out.extend(f.result())
    return out


class _CameraAhead(CameraMotion):
    """A :class:`~idtfv.idt.camera.CameraMotion` whose frames' keypoints may be detected ahead, on another thread
    (``threads > 1``, :meth:`_Steps.detect_ahead`): :meth:`features` takes the oldest of :attr:`ahead` (which
    :meth:`_Steps.compensate_camera` fills on the main thread) instead of detecting again. Same keypoints, so the
    same homography."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.ahead: collections.deque = collections.deque()  # keypoints made ahead for the next frames, in frame order

    def features(self, gray, human_mask=None):
        if not self.ahead:
            return super().features(gray, human_mask)
        self._prev = self.ahead.popleft()


def _on_device_flow(flow: FarnebackPyramidFlow):
    """The device twin of ``flow`` (same options) and the device pyramid builder (``device="cuda"``):
    :class:`~idtfv.idt.flow.farneback_cuda.CudaFarnebackPyramidFlow`,
    :func:`~idtfv.idt.flow.farneback_cuda.build_pyramid_cuda` (which uploads a host frame: the frame's one
    upload)."""
    from idtfv.idt.flow.farneback_cuda import CudaFarnebackPyramidFlow, build_pyramid_cuda

    twin = CudaFarnebackPyramidFlow(poly_n=flow.poly_n, poly_sigma=flow.poly_sigma, winsize=flow.winsize,
                                    iterations=flow.iterations, median=flow.median, window=flow.window,
                                    presmooth=flow.presmooth)
    return twin, build_pyramid_cuda


class _FlowAtPoints:
    """A device flow ``(h, w, 2)`` as :func:`idtfv.idt.camera.estimate_homography`'s flow matches read it: its
    ``shape``, and its vectors at integer pixels ``flow[yi, xi]`` (host index arrays), which alone come back to
    the host (up to ``flow_matches`` vectors instead of the level)."""

    def __init__(self, flow):
        self.flow = flow
        self.shape = tuple(flow.shape)

    def __getitem__(self, index):
        from idtfv.idt._frame_cuda import flow_at

        yi, xi = index
        return flow_at(self.flow, yi, xi)


class _Steps:
    """One video's extraction: the state carried from frame to frame, and one method per step of a frame.

    :meth:`start` takes the first frame; then, for every following frame, the methods in their order of
    definition (the loop of :func:`iter_trajectories`). The state: the previous frame and its pyramid, the flow
    solver's and the camera estimator's own (each keeps the previous frame's work), and one
    :class:`~idtfv.idt.tracking.TrackPool` of live tracks per pyramid level (a
    :class:`~idtfv.idt.tracking_cuda.DeviceTrackPool` when :attr:`on_device`).
    """

    def __init__(self, params: IDTParams, *, humans: _HumanMasks, timer: _Timer, n_frames: int | None):
        self.params, self.humans, self.timer, self.n_frames = params, humans, timer, n_frames
        self.layout = _desc.DescriptorLayout(patch=params.patch, nx_cells=params.nxy_cells,
                                             ny_cells=params.nxy_cells, nt_cells=params.nt_cells)
        dims = self.layout.dims()
        self.offsets, o = {}, 0  # each descriptor's columns in a track's (n_t, D) block sums
        for name in DESCRIPTORS:
            self.offsets[name] = (o, o + dims[name])
            o += dims[name]
        self.desc_dim = o
        self._widths = tuple(dims[name] * params.nt_cells for name in DESCRIPTORS)  # the rows' block widths
        self.flow = make_pyramid_flow(params.pyramid_flow())
        self.camera_params = params.camera()
        self.camera = _CameraAhead(self.camera_params) if params.camera_motion else None  # RANSAC seeded by seed
        self.n_accepted = 0  # homographies accepted (not the identity)
        self.n_still = 0  # still pairs (CameraStep.still: no keypoints, the compensated flow derived)
        # whether a thread ahead detects every frame's keypoints (detect_ahead): not with still pairs possible,
        # whose frames the camera detects only when a pair needs them (CameraMotion.step)
        self.detects_ahead = (self.camera is not None and self.camera.detector is not None
                              and self.camera_params.still_camera <= 0)
        self.device = resolve_device(params.device)  # "cpu" or "cuda" (an error or a warning when no device)
        # device="cuda" with our Farnebäck: the frame is uploaded once and steps 1-3 and 7 run on the device too
        # (the pyramid, the flows and the compensated flows are device arrays; see _on_device_flow)
        self.on_device = self.device == "cuda" and type(self.flow) is FarnebackPyramidFlow
        self._build_pyramid = build_pyramid
        if self.on_device:
            self.flow, self._build_pyramid = _on_device_flow(self.flow)
        # the pruning's thresholds, for the device pools (DeviceTrackPool.pop_validated)
        self._pruning = dict(min_var=params.min_var, max_var=params.max_var, max_dis=params.max_dis,
                             max_dis_ratio=params.max_dis_ratio, min_camera_disp=params.min_camera_disp,
                             camera=bool(params.camera_motion))
        self._since_sampling = 0
        # --threads on the CPU: the per-level steps of the levels in each group run on one thread (see
        # level_groups). One thread is the front thread (_FrontThread), so the levels are fanned out only from 3
        # threads on (over the main thread and threads - 2 workers). On the device (device="cuda") every step that
        # touches the device stays on the main thread (_HostAhead): no level workers.
        self.level_threads = params.threads - 1
        self.executor = None
        if self.device == "cpu" and self.level_threads > 1:
            self.executor = ThreadPoolExecutor(self.level_threads - 1, thread_name_prefix="idt-level",
                                               initializer=tune_thread_heap)
        self.groups = None
        self.prev_hogs = None  # the previous frame's HOG integral histograms per level, when made ahead
        self._flow_source = None  # with a front thread: where frame t's flows start (FarnebackPyramidFlow.step)
        # with a front thread (_FrontThread): whether the flow's next-frame solve may run beside the side solve
        self.flow_ahead = params.threads > 1 and self.device == "cpu" and self.flow.look_ahead(_AHEAD)

    # ---- the first frame
    def start(self, frame_num: int, gray: np.ndarray) -> None:
        """The first frame: the pyramid geometry and track pools, the flow's and the camera's first frame, the
        first points."""
        p = self.params
        h, w = gray.shape
        self.width, self.height = w, h
        self.factors, self.sizes = pyramid_geometry(w, h, scales=p.scales, scale_factor=p.scale_factor,
                                                    patch=p.patch)
        pool_class = TrackPool
        if self.on_device:  # the pools on the device too: only finished (and kept) tracks come back
            from idtfv.idt.tracking_cuda import DeviceTrackPool as pool_class
        self.pools = [pool_class(p.track_length, self.desc_dim, p.nt_cells,
                                 capacity=(lw // p.stride) * (lh // p.stride)) for lw, lh in self.sizes]
        # each level's histogram arrays, reused frame after frame (device="cuda" with a flow off the device only:
        # the CPU streams its histograms' rows, stream_cell_descriptors)
        self.hist_bufs = [None] * len(self.sizes)
        self.level_hists = None  # on the device: all levels' histograms in one buffer, reused frame after frame
        self._sampling = None  # on the device: the levels' sampling buffers, reused
        if self.executor is not None:
            self.groups = level_groups(self.sizes, self.level_threads)
        pyr = self.pyramid(gray)
        self.optical_flow(pyr)  # None: remembers the frame
        if self.camera is not None:
            mask = self.humans(frame_num, gray) if self.humans.enabled else None
            with self.timer("camera"):
                self.camera.features(gray, mask)
        self.sample(pyr)
        self.advance(gray, pyr)

    # ---- every following frame
    def pyramid(self, gray: np.ndarray) -> list[np.ndarray]:
        """1. The frame's scale pyramid."""
        with self.timer("pyramid"):
            return self._build_pyramid(gray, self.sizes)

    def optical_flow(self, pyr: list[np.ndarray]) -> list[np.ndarray] | None:
        """2. The flow from the previous frame on every level (median-filtered)."""
        with self.timer("flow"):
            return self.flow(pyr)

    def detect_ahead(self, frame_num: int, gray: np.ndarray, detector=None):
        """Frame ``frame_num``'s human mask and keypoints ``(mask, FrameFeatures or None)``, or None without
        ``camera_motion``: run ahead on another thread (:class:`_FrontThread`), handed to
        :meth:`compensate_camera` with the frame. Touches neither the camera's state nor the flow's. ``detector``:
        a twin of the camera's (the same options) for a thread other than the front one."""
        if self.camera is None:
            return None
        mask = self.humans(frame_num, gray) if self.humans.enabled else None
        if not self.detects_ahead:
            return mask, None
        with self.timer("camera"):
            return mask, _detect(self.camera.detector if detector is None else detector, gray, mask)

    def keypoints_ahead(self, gray: np.ndarray, mask: np.ndarray | None, detector):
        """A frame's keypoints and descriptors (with ``detector``, this thread's twin of the camera's; none when
        the camera has no detector) and the corner response of the frame (its flow matches' corners, when the
        frame is the previous one), made ahead on a host thread (:class:`_HostAhead`), for the camera to take
        (:func:`idtfv.idt.camera.detected_ahead`). Host work on the frame alone: touches no device, neither the
        camera's state nor the flow's."""
        with self.timer("camera"):
            # a failed detection is kept, raised by the homography of a pair that needs the keypoints (at its frame)
            features = detected_ahead(detector, gray, mask)
            if self.camera_params.flow_matches > 0:
                features.response = corner_response(gray, remember=False)
            return features

    def homography(self, frame_num: int, prev_gray: np.ndarray, gray: np.ndarray, flows: list[np.ndarray],
                   ahead=None) -> CameraStep:
        """3a. The camera's motion from ``prev_gray`` (frame ``frame_num - 1``) to ``gray``: its homography, from
        keypoint and flow matches (:meth:`detect_ahead`'s mask and keypoints when given), and whether the pair is
        still (:meth:`~idtfv.idt.camera.CameraMotion.step`). Frame after frame on one thread: the camera keeps the
        previous frame's keypoints and RANSAC's generator."""
        if ahead is not None:
            mask, features = ahead
            if features is not None:
                self.camera.ahead.append(features)
        else:
            mask = self.humans(frame_num, gray) if self.humans.enabled else None
        with self.timer("camera"):
            return self.camera.step(prev_gray, gray, _FlowAtPoints(flows[0]) if self.on_device else flows[0],
                                    human_mask=mask)

    def compensate_camera(self, frame_num: int, gray: np.ndarray, flows: list[np.ndarray],
                          pyr: list | None = None, ahead=None, source=None, H=None) -> list[np.ndarray]:
        """3. The camera's homography from the previous frame, and the camera-compensated flow on every level
        (the flow itself without ``camera_motion``). On the device (:attr:`on_device`) the keypoints and the
        homography are still the CPU's, from the host frames; the flow matches read only their points' vectors
        back (:class:`_FlowAtPoints`), and the warp and compensated flows are made from the device frames
        ``pyr[0]`` and the previous frame's. ``ahead`` is :meth:`detect_ahead`'s result for this frame when it
        ran ahead, ``H`` the camera's motion when it was estimated ahead (:meth:`homography`, :class:`_FrontThread`),
        ``source`` where ``flows`` start (the flow's :meth:`~idtfv.idt.flow.PyramidFlow.step`) when the flow has
        moved on to the next frame already."""
        if self.camera is None:
            return flows
        motion = self.homography(frame_num, self.prev_gray, gray, flows, ahead) if H is None else H
        H, still = motion.H, motion.still
        self._flow_source = source
        self.n_accepted += not is_identity(H)
        self.n_still += still
        with self.timer("warp_flow"):
            if self.on_device:
                return compensated_flows(H, flows, self.factors, frame=pyr[0], prev_frame=self.prev_pyr[0],
                                         params=self.camera_params, recompute=self._flow_to, refine=self._refine_to,
                                         device="cuda", still=still)
            return compensated_flows(H, flows, self.factors, frame=gray, prev_frame=self.prev_gray,
                                     params=self.camera_params, recompute=self._flow_to, refine=self._refine_to,
                                     still=still)

    def _flow_to(self, warped: np.ndarray) -> list[np.ndarray]:
        return self.flow.flow_from_previous(self._build_pyramid(warped, self.sizes), source=self._flow_source)

    def _refine_to(self, warped: np.ndarray, priors: list[np.ndarray]) -> list[np.ndarray]:
        return self.flow.refine_from_previous(self._build_pyramid(warped, self.sizes), priors,
                                              source=self._flow_source)

    def track(self, flows: list[np.ndarray], flows_w: list[np.ndarray], *,
              first: int = 0) -> list[tuple[np.ndarray, np.ndarray]]:
        """4. Every live track moves by the flow at its point and stores the compensated flow as its step; tracks
        that leave the frame end. Per level (from level ``first``): the rows that moved and their points before
        the move."""
        if self.on_device:  # every level's step in two launches and one download of the counts
            from idtfv.idt.tracking_cuda import step_levels

            with self.timer("tracking"):
                return step_levels(self.pools[first:], flows, flows_w)
        moved = []
        for pool, flow, flow_w in zip(self.pools[first:], flows, flows_w):
            if len(pool) == 0:
                moved.append((np.zeros(0, np.int64), np.zeros((0, 2), np.float32)))
                continue
            with self.timer("tracking"):
                moved.append(pool.step(flow, flow_w, device=self.device))
        return moved

    def describe(self, moved: list[tuple[np.ndarray, np.ndarray]], flows_w: list[np.ndarray], *,
                 first: int = 0) -> None:
        """5. Descriptor blocks of the previous frame (HOG) and the compensated flow (HOF, MBH) at the tracks'
        points before the move, added to their temporal cells (levels from ``first``)."""
        if self.on_device:
            self._describe_on_device(moved, flows_w, first)
            return
        for k, (rows, points) in enumerate(moved):
            s = first + k
            pool = self.pools[s]
            if len(rows) == 0:
                continue
            hog = None if self.prev_hogs is None else self.prev_hogs[s]
            if self.device == "cpu":
                # the histograms' rows and the blocks in one pass (stream_cell_descriptors), timed as "histograms":
                # "descriptors" then stays near 0 on the CPU (bench_profile's table)
                with self.timer("histograms"):
                    _desc.stream_cell_descriptors(pool, rows, self.prev_pyr[s], flows_w[k], points,
                                                  layout=self.layout, hog=hog)
                continue
            with self.timer("histograms"):
                # reuse this level's arrays: fresh ~10 MB per frame costs about as much in page faults as the
                # kernels themselves; the HOG may have been made ahead (the front thread's, not ours to reuse)
                bufs = self.hist_bufs[s]
                hists = _desc.frame_histograms(self.prev_pyr[s], flows_w[k], layout=self.layout, out=bufs,
                                               device=self.device, hog=hog)
                self.hist_bufs[s] = hists if hog is None else hists._replace(hog=None if bufs is None else bufs.hog)
            with self.timer("descriptors"):  # HOG | HOF | MBHx | MBHy side by side (DESCRIPTORS' order)
                pool.store_descriptors(rows, _desc.cell_descriptor_rows(hists, points, layout=self.layout,
                                                                        device=self.device))

    def _describe_on_device(self, moved, flows_w, first: int) -> None:
        """:meth:`describe` with the pools on the device: the histograms of every level with moved tracks in three
        launches for all of them, their blocks at the device points in one and their sums into the levels' pools in
        one (issue 14's launch budget); nothing moves. Every level's histograms depend only on the previous frame's
        level and this frame's compensated flow, all ready after step 3, so making them together changes no bit."""
        from idtfv.idt.tracking_cuda import gather_levels, store_levels

        todo = [k for k, (rows, _) in enumerate(moved) if len(rows)]
        if not todo:
            return
        with self.timer("histograms"):
            self.level_hists = _desc.level_histograms([self.prev_pyr[first + k] for k in todo],
                                                      [flows_w[k] for k in todo], layout=self.layout,
                                                      out=self.level_hists)  # reused frame after frame
        with self.timer("descriptors"):  # HOG | HOF | MBHx | MBHy side by side (DESCRIPTORS' order)
            blocks = gather_levels(self.level_hists, [moved[k][1] for k in todo], layout=self.layout)
            store_levels([self.pools[first + k] for k in todo], [moved[k][0] for k in todo], blocks)

    def levels(self, frame_num: int, flows: list[np.ndarray], flows_w: list[np.ndarray]) -> list[Trajectories]:
        """4-6 (:meth:`track`, :meth:`describe`, :meth:`finish`) level by level, the levels of each of
        :attr:`groups` on one thread (``threads > 1``; :func:`_fan_out`): every level's steps touch only that
        level's pool, flows and buffers, so the rows, in level order, are those of the one-thread steps."""
        def run(group):
            out = []
            for s in group:
                moved = self.track(flows[s:s + 1], flows_w[s:s + 1], first=s)
                self.describe(moved, flows_w[s:s + 1], first=s)
                out.append((s, self.finish(frame_num, levels=(s,))))
            return out

        by_level = dict(_fan_out(self.executor, run, self.groups))
        return [t for s in range(len(self.pools)) for t in by_level[s]]

    def finish(self, frame_num: int, levels=None) -> list[Trajectories]:
        """6. Tracks that reached L steps leave their pools; those that pass the pruning become rows."""
        out = []
        with self.timer("output"):
            if self.on_device:  # every level pruned on the device at once: only the kept tracks' rows come back
                from idtfv.idt.tracking_cuda import pop_levels

                levels = range(len(self.pools)) if levels is None else levels
                for kept in pop_levels([self.pools[s] for s in levels], [self.factors[s] for s in levels],
                                       **self._pruning):
                    if kept is not None:
                        out.append(_kept_rows(*kept, frame_num, self.width, self.height, self.n_frames,
                                              self.params, self.offsets))
                return out
            finished = []
            for s in range(len(self.pools)) if levels is None else levels:
                rows = self.pools[s].pop_finished_rows()
                if len(rows):
                    finished.append((self.pools[s], rows, self.factors[s]))
            if finished:
                t = _pool_rows(finished, frame_num, self.width, self.height,
                               _t_pos(frame_num, self.n_frames, self.params), self.params, self._widths)
                if t is not None:
                    out.append(t)
        return out

    def sample(self, pyr: list[np.ndarray]) -> None:
        """7. New points in the empty grid cells of every level (on the first frame, then every ``init_gap``)."""
        if self._since_sampling == 0 and self.on_device:
            self._sample_on_device(pyr)
        elif self._since_sampling == 0:
            def run(levels):
                with self.timer("sampling"):
                    for s in levels:
                        pool = self.pools[s]
                        pool.add(dense_sample_pool(pyr[s], pool, stride=self.params.stride,
                                                   quality=self.params.quality))

            if self.executor is None:
                run(range(len(self.pools)))
            else:
                _fan_out(self.executor, lambda group: run(group) or (), self.groups)
        self._since_sampling = (self._since_sampling + 1) % self.params.init_gap

    def _sample_on_device(self, pyr: list) -> None:
        """:meth:`sample` with the pools on the device: every level's response, maximum, occupied cells and
        selection in one launch each for all levels and their cell bytes in one download (issue 14's launch
        budget), then each level's new points into its pool. A level's sampling reads only its own level and pool,
        so sampling them all before adding to any gives each level's points of the level-by-level loop; the new
        points of all levels go up in one copy and start their tracks in one launch."""
        from idtfv.idt.tracking_cuda import add_levels

        with self.timer("sampling"):
            points, self._sampling = dense_sample_levels(pyr, [pool.current_points() for pool in self.pools],
                                                         stride=self.params.stride, quality=self.params.quality,
                                                         scratch=self._sampling)
            add_levels(self.pools, points)

    def advance(self, gray: np.ndarray, pyr: list[np.ndarray], hogs: list[np.ndarray] | None = None):
        """8. This frame becomes the previous one (with its levels' HOG integral histograms when they were made
        ahead, :meth:`hogs_ahead`); returns the previous frame's, no longer used."""
        done = self.prev_hogs
        self.prev_gray, self.prev_pyr, self.prev_hogs = gray, pyr, hogs
        return done

    def responses_ahead(self, pyr: list[np.ndarray], *, sampled: bool) -> None:
        """The corner responses (:func:`idtfv.idt.sampling.corner_response`, remembered there) of a frame's levels
        that :meth:`sample` (all levels, when ``sampled``) and the next frame's :meth:`homography` (level 0, its
        flow matches) will ask for, made ahead by the front thread (:class:`_FrontThread`)."""
        with self.timer("sampling"):
            for lvl in pyr if sampled else pyr[:1]:
                corner_response(lvl)

    def hogs_ahead(self, pyr: list[np.ndarray], out: list[np.ndarray] | None = None) -> list[np.ndarray]:
        """The HOG integral histogram of every level of a frame (:func:`idtfv.idt.descriptors.hog_histogram`; in
        ``out``'s arrays when given): made by the front thread (:class:`_FrontThread`), used by :meth:`describe`
        when the frame is the previous one."""
        with self.timer("histograms"):
            return [_desc.hog_histogram(lvl, layout=self.layout, out=None if out is None else out[s])
                    for s, lvl in enumerate(pyr)]

    def live_tracks(self) -> tuple[np.ndarray, np.ndarray]:
        """Points ``(k, L+1, 2)`` and steps done ``(k,)`` of the live tracks of level 0 (birth order)."""
        pool = self.pools[0]
        if self.on_device:
            return pool.live_tracks()  # a download, only for on_tracks (--draw)
        rows = pool.live()
        return pool.pos[rows], pool.index[rows]


def _check_size(gray: np.ndarray, shape: tuple[int, int], source, frame_num: int) -> None:
    if gray.shape != shape:
        raise VideoError(source, f"frame {frame_num} has size {gray.shape[::-1]}, expected {shape[::-1]} like the "
                                 "first frame")


class _Frame(NamedTuple):
    """A frame after the first, as the main thread's loop takes it: the frame, its pyramid and its flows from the
    frame before (steps 1-2), and what was made for it ahead on another thread (None where nothing was)."""

    gray: np.ndarray
    pyr: list
    flows: list
    ahead: tuple | None = None  # _Steps.detect_ahead's (mask, keypoints)
    H: object = None  # the camera's motion from the frame before (_Steps.homography), or its _HomographyJob
    flow_source: object = None  # where the flows start (PyramidFlow.step), for the warped flow
    hogs: list | None = None  # the HOG integral histogram of every level (_Steps.hogs_ahead)


def _serial(steps: _Steps, frames, shape, source, frame_num: int):
    """The :class:`_Frame` of every frame after the first (steps 1-2), one after the other."""
    for gray in frames:
        frame_num += 1
        _check_size(gray, shape, source, frame_num)
        pyr = steps.pyramid(gray)
        yield _Frame(gray, pyr, steps.optical_flow(pyr))


#: With a front thread (:class:`_FrontThread`): how many frames past the main thread's its flow may be solved
#: (and its items queued); a deeper buffer evens out frames that cost one thread more than the other.
_AHEAD = 2

#: Seconds the main thread waits for the thread ahead's next item before it takes some of that thread's work
#: (:meth:`_AheadThread._help`): an item due any moment is not worth delaying by a job.
_HELP_AFTER = 0.0005

#: With a front thread: how many items must wait in the queue for it to make the queued homographies itself
#: (:meth:`_FrontThread._run_homographies`); with fewer it leaves them to the main thread.
_HOMOGRAPHY_AHEAD = 2

#: Frames the front thread reads ahead so that the main thread may make their keypoints (:class:`_KeypointJob`).
_JOBS_AHEAD = 2


class _Failed:
    """An exception raised on the thread ahead, handed to the main thread to raise there."""

    def __init__(self, error: BaseException):
        self.error = error


class _AheadThread:
    """What :class:`_FrontThread` and :class:`_HostAhead` share: one thread ahead of the main one (its
    :meth:`_run`), a bounded queue of items between them, and the stop.

    The thread runs in the caller's context (a truncated file's warning, raised by the reader when its stream ends
    on that thread, reaches :func:`idtfv.video.collect_video_warnings`, a dataset run's notes, as on one thread). It
    queues items with :meth:`_put` (False once the main thread stopped it), ends with :data:`_END` or a
    :class:`_Failed`; the main thread takes them with :meth:`_take`, which raises the failure at its frame, and
    :meth:`_stop_thread` stops it whatever it is doing. ``stats`` gets ``front_wait`` (the thread ahead waiting
    for a free place) and ``main_wait`` (the main thread waiting for an item), in seconds.
    """

    _END = object()

    def __init__(self, steps: _Steps, frames, shape, source, frame_num: int):
        self.steps, self.frames, self.shape, self.source = steps, iter(frames), shape, source
        self.frame_num = frame_num  # the last frame handed to the main thread

    def _start(self, *, depth: int, name: str, stats: dict) -> None:
        self._items: queue.Queue = queue.Queue(maxsize=depth)
        self._stop = threading.Event()
        self.stats = {**stats, "front_wait": 0.0, "main_wait": 0.0}
        self._thread = threading.Thread(target=contextvars.copy_context().run, args=(self._thread_main,), name=name,
                                        daemon=True)
        self._thread.start()

    def _thread_main(self) -> None:
        tune_thread_heap()  # its arrays on huge pages, as the main thread's (when the command tuned the heap)
        self._run()

    def _run(self) -> None:
        raise NotImplementedError

    # ---- the thread ahead
    def _checked_frames(self, *, end: bool = True):
        """``(k, gray)`` of the frames after :attr:`frame_num`, each checked for its size, until the video ends
        (then, with ``end``, :data:`_END` is queued) or the main thread stops the thread."""
        k = self.frame_num
        while not self._stop.is_set():
            gray = next(self.frames, None)
            if gray is None:
                if end:
                    self._put(self._END)
                return
            k += 1
            _check_size(gray, self.shape, self.source, k)
            yield k, gray

    def _wait(self, blocking) -> bool:
        """``blocking(timeout)`` until it succeeds (True) or the main thread stops the thread (False)."""
        t0 = time.perf_counter()
        try:
            while not self._stop.is_set():
                if blocking(0.05):
                    return True
            return False
        finally:
            self.stats["front_wait"] += time.perf_counter() - t0

    def _put(self, item) -> bool:
        def put(timeout):
            try:
                self._items.put(item, timeout=timeout)
                return True
            except queue.Full:
                return False

        return self._wait(put)

    # ---- the main thread
    def _stop_thread(self) -> None:
        """Stop the thread ahead and wait for it (a thread blocked on a full queue gets its place)."""
        self._stop.set()
        while self._thread.is_alive():
            try:
                self._items.get_nowait()
            except queue.Empty:
                pass
            self._thread.join(0.05)

    def _take(self):
        """The next item; StopIteration at the end, the thread's exception at the frame where it was raised."""
        t0 = time.perf_counter()
        helped = 0.0
        try:
            while True:
                try:
                    item = self._items.get(timeout=_HELP_AFTER)
                    break
                except queue.Empty:
                    pass
                t1 = time.perf_counter()
                if self._help():  # the thread ahead's work, done here while there is nothing to take
                    helped += time.perf_counter() - t1
                    continue
                try:
                    item = self._items.get(timeout=0.05)
                    break
                except queue.Empty:
                    if not self._thread.is_alive() and self._items.empty():
                        raise RuntimeError(f"the {self._thread.name} thread of --threads ended without a "
                                           "result") from None
        finally:
            self.stats["main_wait"] += time.perf_counter() - t0 - helped
            self.stats["main_help"] = self.stats.get("main_help", 0.0) + helped
        if item is self._END:
            raise StopIteration
        if isinstance(item, _Failed):
            raise item.error
        return item

    def _help(self) -> bool:
        """Some of the thread ahead's work, done on the main thread while it waits for an item (True), or nothing
        to do (False). Here: nothing."""
        return False

    def __iter__(self):
        return self


class _Ahead(NamedTuple):
    """A frame decoded ahead of the main thread (:class:`_HostAhead`): its number, the frame, its human mask and
    the keypoint detection running or done on a host thread (a future of :meth:`_Steps.keypoints_ahead`)."""

    frame_num: int
    gray: np.ndarray
    mask: np.ndarray | None
    keypoints: Future | None


class _HostAhead(_AheadThread):
    """``threads = N > 1`` on the device (``device="cuda"``): :func:`_serial`'s items, the host's work on each
    frame alone done ahead of the main thread, every device step on the main thread.

    A **decode thread** takes frame after frame in order: decodes it, checks its size, makes its human mask (in
    frame order: the detector holds its boxes from frame to frame) and hands the frame's keypoint detection and
    description and its corner response (:meth:`_Steps.keypoints_ahead`) to a pool of ``N - 1`` **host
    threads**, several frames' detections at once (OpenCV releases the GIL; each host thread has its own twin of
    the camera's detector). The frames wait in a queue of :attr:`depth` (``2 N``) items, so at most ``2 N + 2``
    frames are held ahead whatever the video's length. The **main thread** takes them in order, waits for the
    frame's keypoints and does everything else as on one thread: the upload, pyramid and flows (step 1-2), the
    homography (its RANSAC generator and the camera's previous keypoints are state: frame after frame on this
    thread), the warp and compensated flows, and steps 4-8. So no device launch, allocation or copy happens off
    the main thread (on the GPU worker: off the video's CUDA stream), and the output bytes are those of one thread.

    An exception ahead (a decode error, a frame of another size, a failed detection) is raised by the main thread
    when it reaches that frame, after the frames before it, as one thread does; :meth:`close` stops the decode
    thread and the host threads whatever the main thread is doing.

    Attributes
    ----------
    stats : dict
        Seconds: ``main_wait`` (the main thread waiting for a frame or its keypoints), ``front_wait`` (the decode
        thread waiting for a free place in the queue). For benchmarks of the balance.
    """

    def __init__(self, steps: _Steps, frames, shape, source, frame_num: int):
        super().__init__(steps, frames, shape, source, frame_num)
        threads = steps.params.threads
        self.depth = 2 * threads
        camera = steps.camera
        self._detects = camera is not None  # keypoints (and the flow matches' corner response) to make ahead
        self._matcher = camera.matcher_name if camera is not None else None
        self._local = threading.local()  # each host thread's detector
        self._pool = ThreadPoolExecutor(threads - 1, thread_name_prefix="idt-host") if self._detects else None
        self._start(depth=self.depth, name="idt-decode", stats={})

    # ---- the decode thread and the host threads
    def _keypoints(self, gray: np.ndarray, mask: np.ndarray | None):
        detector = getattr(self._local, "detector", False)
        if detector is False:  # OpenCV's detectors are not documented as safe to share between threads
            detector = self._local.detector = _make_detector(self._matcher, self.steps.camera_params)[0]
        return self.steps.keypoints_ahead(gray, mask, detector)

    def _run(self) -> None:
        try:
            steps = self.steps
            humans = steps.humans.enabled and self._detects
            for k, gray in self._checked_frames():
                mask = steps.humans(k, gray) if humans else None
                future = self._pool.submit(self._keypoints, gray, mask) if self._detects else None
                if not self._put(_Ahead(k, gray, mask, future)):
                    return
        except BaseException as e:  # raised by the main thread, in frame order
            self._put(_Failed(e))

    # ---- the main thread
    def warped(self) -> None:
        """Nothing to release: no flow is solved ahead."""

    def recycle(self, hogs) -> None:
        """Nothing to recycle (no HOG is made ahead here)."""

    def close(self) -> None:
        """Stop the decode thread and the host threads (at the end, on an error or when the consumer stops early)
        and wait for them."""
        self._stop_thread()
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)

    def __next__(self) -> _Frame:
        item = self._take()
        ahead = None
        if self._detects:
            t0 = time.perf_counter()
            try:
                ahead = (item.mask, item.keypoints.result())  # a failed detection raises here, at its frame
            finally:
                self.stats["main_wait"] += time.perf_counter() - t0
        self.frame_num = item.frame_num
        steps = self.steps
        pyr = steps.pyramid(item.gray)  # the frame's one upload, on the main thread
        return _Frame(item.gray, pyr, steps.optical_flow(pyr), ahead)


class _Job:
    """Work on one frame that whichever of two threads claims it first runs (:meth:`claim`, then :meth:`run`); its
    result or exception is :attr:`future`'s."""

    def __init__(self):
        self.future: Future = Future()
        self._claimed = False
        self._lock = threading.Lock()

    def claim(self) -> bool:
        """True for the first caller only: that thread runs the job."""
        with self._lock:
            if self._claimed:
                return False
            self._claimed = True
            return True

    def _settle(self, make) -> None:
        try:
            self.future.set_result(make())
        except BaseException as e:  # raised by the thread that takes the result, at this frame
            self.future.set_exception(e)


class _KeypointJob(_Job):
    """Frame ``frame_num``'s keypoints (:meth:`_Steps.detect_ahead`), made by whichever thread claims the job
    first: the front thread when it reaches the frame, or the main thread while it waits for an item
    (:meth:`_FrontThread._help`). The same keypoints either way (a twin detector, the same options)."""

    def __init__(self, frame_num: int, gray: np.ndarray):
        super().__init__()
        self.frame_num, self.gray = frame_num, gray

    def run(self, steps: _Steps, detector=None) -> None:
        self._settle(lambda: steps.detect_ahead(self.frame_num, self.gray, detector))


class _PrepJob(_Job):
    """Frame ``frame_num``'s pyramid and flow preparation (its levels' polynomial expansions, in the flow slot its
    step will take: :meth:`~idtfv.idt.flow.PyramidFlow.prepare_ahead`), offered by the front thread while it solves
    the flow of the frame before: made by the main thread if it waits for an item meanwhile
    (:meth:`_FrontThread._help`), else by the front thread as it reaches the frame (then in the flow's step, as
    without the job). The same numbers either way: a pure function of the frame, written where the step reads it."""

    def __init__(self, frame_num: int, gray: np.ndarray, slot: int):
        super().__init__()
        self.frame_num, self.gray, self.slot = frame_num, gray, slot

    def run(self, steps: _Steps) -> None:
        def make():
            pyr = steps.pyramid(self.gray)
            with steps.timer("flow"):
                return pyr, steps.flow.prepare_ahead(pyr, self.slot)

        self._settle(make)
        self.gray = None


class _HomographyJob(_Job):
    """Frame ``frame_num``'s homography (:meth:`_Steps.homography`), queued with the frame by the front thread and
    made by whichever thread claims it first: the front thread while it is ahead of the main one
    (:meth:`_FrontThread._run_homographies`), else the main thread as it takes the frame. The camera's state and
    RANSAC's generator see the frames in order: a job runs only after the job of the frame before (``after``) is
    done, which the main thread's order gives and the front thread checks."""

    def __init__(self, frame_num: int, prev_gray: np.ndarray, gray: np.ndarray, flows: list, ahead,
                 after: "_HomographyJob | None"):
        super().__init__()
        self._args = (frame_num, prev_gray, gray, flows, ahead)
        self.after = after

    def ready(self) -> bool:
        """Whether the frame before's homography is done (this one may run)."""
        after = self.after
        return after is None or after.future.done()

    def run(self, steps: _Steps) -> None:
        self._settle(lambda: steps.homography(*self._args))
        self._args = self.after = None  # the frames and flows go with their item; no chain of jobs is kept


class _FrontThread(_AheadThread):
    """``threads > 1`` on the CPU: :func:`_serial`'s items, made by a front thread running ahead of the main one.

    The front thread takes frame after frame: decodes it, checks its size, detects its human mask and keypoints
    (:meth:`_Steps.detect_ahead`), builds its pyramid (unless the main thread, waiting for an item, made it and the
    frame's flow preparation: :class:`_PrepJob`) (and, while it is ahead of the main thread, :meth:`_ahead`,
    the levels' HOG histograms and corner responses), solves its flow from the frame before
    (:meth:`~idtfv.idt.flow.PyramidFlow.step`, which also gives where that flow starts: the main thread's warped
    flow of the same frame pair starts there too), estimates the homography (:meth:`_Steps.homography`; with
    keypoints it queues it as a job instead and makes it only while it is ahead, :meth:`_run_homographies`) and
    queues the item. The main thread takes the items in order and does everything else: the warped flow (a
    second solve from frame t-1, beside the front thread's solves of the next frames), tracking, HOF and MBH
    histograms, descriptors, pruning and sampling.

    The two solves run side by side only when the solver can look ahead
    (``look_ahead(_AHEAD)``: frames t-1 .. t + :data:`_AHEAD` prepared at once, a workspace per caller); then the
    front thread may solve frame k's flow once the main thread's warped flow of frame k - :data:`_AHEAD` - 1 is
    done (:meth:`warped`), i.e. up to :data:`_AHEAD` frames past the frame the main thread is on. A solver that
    cannot (DIS, TV-L1) keeps the one-thread order: frame k's flow after frame k-1's warped flow. At most
    :data:`_AHEAD` finished items wait in the queue, so memory stays at a few frames' pyramids, flows and HOG
    histograms (whose arrays come back for reuse, :meth:`recycle`) whatever the video's length.

    Each step sees the inputs it sees on one thread, in the same order per solver state, so the output bytes
    do not depend on the thread count. An exception on the front thread (a decode error, a frame of another
    size) is raised by the main thread when it reaches that frame, after the frames before it, as one thread
    does; :meth:`close` stops the front thread whatever the main thread is doing.

    Attributes
    ----------
    stats : dict
        Seconds of the front thread: ``front_cpu`` (its CPU time), ``front_wall`` (from start to end),
        ``front_wait`` (waiting for the main thread: a flow permit, a free queue place); and the main thread's
        ``main_wait`` (waiting for an item). For benchmarks of the balance.
    """

    def __init__(self, steps: _Steps, frames, shape, source, frame_num: int):
        super().__init__(steps, frames, shape, source, frame_num)
        self._first, self._first_num = steps.prev_gray, frame_num  # the frame before the front thread's first
        # flow solves the front thread may start before the main thread's next warped flow (see the docstring)
        self._permits = threading.Semaphore(_AHEAD + 1 if steps.flow_ahead else 1)
        self._free_hogs: queue.SimpleQueue = queue.SimpleQueue()  # HOG arrays the main thread is done with
        # keypoints of a frame ahead, offered to the main thread while it waits (:meth:`_frames_and_jobs`; only
        # when every frame's keypoints are detected ahead, and without human masks, whose detector keeps state
        # frame after frame on the front thread). With still pairs possible the homography jobs detect them
        camera = steps.camera
        self._share = steps.detects_ahead and not steps.humans.enabled
        self._job: _KeypointJob | None = None
        # the next frame's pyramid and flow preparation, offered to the main thread while it waits (_PrepJob): with
        # a solver that looks ahead and keeps enough frame slots for the main thread to take one (_help's rule: a
        # frame at most frame_slots - 2 past its last, and the offered frame is at least 2 past it; OpenCV's
        # Farnebäck keeps 2 slots, so no job is made or a frame read ahead for it)
        self._prep_jobs = steps.flow_ahead and steps.flow.frame_slots - 2 >= 2
        self._prep: _PrepJob | None = None
        self._main_detector = None  # the main thread's twin of the camera's detector, made on first use
        # whether the homographies go to whichever thread has time (:meth:`_run_homographies`): with keypoints
        # (the default preset's AKAZE), where the front thread has the larger share. Without them (flow matches
        # only: the fast preset) the front thread makes them: handed over, the main thread never waited, and the
        # two threads running side by side the whole time slowed each other more than the homographies weighed
        # (paired whole-process runs on 2 cores: faster with keypoints, slower without; bench_threads.py gives
        # the speed-ups)
        self._hand_over = camera is not None and camera.detector is not None
        # homography jobs queued with their frames and not yet claimed, oldest first
        self._homographies: collections.deque = collections.deque()
        self._last_job: _HomographyJob | None = None
        # the main thread makes each frame's corner response as it takes the frame (__next__): the front thread's
        # flow matches of the next frame pair need it (and step 7's sampling of level 0, on the main thread, the same
        # numbers). Made at step 7, it came too late: the front thread, already past the next frame's flow, made it
        # itself (379 of 400 frames, vtest fast preset; the main thread made 112 of those a second time). Made
        # here, it is the main thread's ~0.2 ms a 320x240 frame off the front thread, the longer share of both
        # presets: paired in-process runs, 2 threads, whole vtest, 8 rounds each, 2.1 % (default) and 2.2 % (fast)
        # less wall time. The same numbers whoever makes them
        self._early_response = camera is not None and steps.camera_params.flow_matches > 0
        self._start(depth=_AHEAD, name="idt-front", stats={"front_cpu": 0.0, "front_wall": 0.0})

    # ---- the front thread
    def _ahead(self, k: int) -> bool:
        """Whether the front thread takes frame ``k``'s share of the main thread's work (the HOG histograms, the
        corner responses): when it is ahead of the main one (the frame before still waits in the queue) and has
        waited for the main thread at least as long as the main thread has waited for it so far. The second
        condition keeps a front thread that is the slower one (the default preset's still pairs leave the main
        thread only the tracking and descriptors) from taking more: paired in-process runs on 2 cores, vtest
        frames 0-300, 8 rounds: 7 % less wall time for the default, none for the fast preset; ``bench_threads``
        once with each rule back to back, whole processes: the speed-up of 2 threads 1.71 -> 1.74x (default),
        1.64 -> 1.76x (fast; the old rule's run with ``--no-write``, the new one's published 2026-12-04 21:56 UTC).
        Either way the bytes are the same; only who computes them changes."""
        stats = self.stats
        return not self._items.empty() and stats["front_wait"] >= stats["main_wait"]

    def _run(self) -> None:
        t0, c0 = time.perf_counter(), time.thread_time()
        try:
            steps = self.steps
            prev_gray = self._first
            for k, gray, job, upcoming in self._frames_and_jobs():
                ahead = self._keypoints(k, gray, job)
                if ahead is self._END:
                    return
                made = self._prepared(gray)
                if made is self._END:
                    return
                pyr, prepared = made
                hogs = None
                if self._ahead(k):  # ahead of the main thread: take some of its work (else it does it)
                    try:
                        hogs = steps.hogs_ahead(pyr, self._free_hogs.get_nowait())
                    except queue.Empty:
                        hogs = steps.hogs_ahead(pyr)
                    steps.responses_ahead(pyr, sampled=(k - self._first_num) % steps.params.init_gap == 0)
                if not self._wait(lambda timeout: self._permits.acquire(timeout=timeout)):
                    return
                if self._prep_jobs:  # offered from now on (its slot is free once this frame's permit is taken)
                    self._prep = None if upcoming is None else _PrepJob(*upcoming, steps.flow.slot_after(1))
                with steps.timer("flow"):
                    flows, flow_source = steps.flow.step(pyr, prepared=prepared)
                if steps.camera is None:
                    H = None
                elif self._hand_over:
                    H = self._last_job = _HomographyJob(k, prev_gray, gray, flows, ahead, self._last_job)
                    self._homographies.append(H)
                else:
                    H = steps.homography(k, prev_gray, gray, flows, ahead)
                prev_gray = gray
                if not self._put(_Frame(gray, pyr, flows, None, H, flow_source, hogs)):
                    return
                if not self._run_homographies():
                    return
        except BaseException as e:  # raised by the main thread, in frame order
            self._put(_Failed(e))
        finally:
            self.stats["front_wall"] += time.perf_counter() - t0
            self.stats["front_cpu"] += time.thread_time() - c0

    def _run_homographies(self) -> bool:
        """The queued frames' homographies, oldest first, while the front thread is ahead: at least
        :data:`_HOMOGRAPHY_AHEAD` items wait in the queue (the main thread is busy with an earlier frame). Else,
        or once the main thread claimed one, they are left to the main thread, which makes each as it takes its
        frame (:meth:`__next__`): the work goes to whichever thread has time, the homographies are the same.
        False when one failed (the main thread raises it at its frame; this thread stops)."""
        pending = self._homographies
        while pending and self._items.qsize() >= _HOMOGRAPHY_AHEAD:
            job = pending[0]
            if not job.ready():  # the frame before's is the main thread's, still running
                return True
            pending.popleft()
            if job.claim():
                job.run(self.steps)
                if job.future.exception() is not None:
                    return False
        while pending and pending[0].future.done():  # made by the main thread meanwhile
            pending.popleft()
        return True

    def _prepared(self, gray: np.ndarray):
        """This frame's ``(pyramid, prepared)``: from its :class:`_PrepJob` when the main thread made it (waited for
        here if it is still at it), else the pyramid made here and ``prepared`` None (the flow's step prepares it,
        after the frame's permit); :data:`_END` when the main thread stopped this one meanwhile."""
        job, self._prep = self._prep, None
        if job is None or job.claim():
            return self.steps.pyramid(gray), None
        if not self._wait_for(job):
            return self._END
        return job.future.result()  # a failure raises here, at its frame

    def _wait_for(self, job: _Job) -> bool:
        """Wait until ``job``, claimed by the main thread, is done (True), or the main thread stops this one."""
        def finished(timeout):
            try:
                job.future.exception(timeout)  # (waits; the outcome is taken by the caller)
                return True
            except TimeoutError:
                return False

        return self._wait(finished)

    def _frames_and_jobs(self):
        """``(k, gray, job, upcoming)`` of :meth:`_checked_frames`. ``upcoming``: the next frame's ``(k + 1,
        gray)`` when :class:`_PrepJob` s are made (the frames are read one ahead), else None. Without sharing,
        ``job`` None; with it, the frames are read :data:`_JOBS_AHEAD` ahead, and while this thread works on frame
        k, frame k + :data:`_JOBS_AHEAD`'s keypoint job is offered to the main thread (:attr:`_job`; far enough
        ahead that this thread seldom waits for it); ``job`` is frame k's. A failure reading a frame is raised
        after the frames before it are queued, at its own frame, as on one thread."""
        depth = _JOBS_AHEAD if self._share else int(self._prep_jobs)
        if depth == 0:
            for k, gray in self._checked_frames():
                yield k, gray, None, None
            return
        frames = self._checked_frames(end=False)
        window: collections.deque = collections.deque()
        failure = None

        def read() -> None:
            nonlocal failure
            if failure is not None:
                return
            try:
                upcoming = next(frames, None)
            except BaseException as e:
                failure = e
                return
            if upcoming is not None:
                window.append((*upcoming, _KeypointJob(*upcoming) if self._share else None))

        for _ in range(depth + 1):
            read()
        while window:
            k, gray, job = window.popleft()
            if self._share:
                self._job = window[-1][2] if len(window) == _JOBS_AHEAD else None
            yield k, gray, job, (window[0][:2] if window and self._prep_jobs else None)
            read()
        self._job = None
        if failure is not None:
            raise failure
        if not self._stop.is_set():
            self._put(self._END)

    def _keypoints(self, k: int, gray: np.ndarray, job: _KeypointJob | None):
        """Frame k's :meth:`_Steps.detect_ahead`: made here, or taken from the main thread, which claimed the job
        while it waited (then waited for here)."""
        if job is None:
            return self.steps.detect_ahead(k, gray)
        if job.claim():
            job.run(self.steps)
        elif not self._wait_for(job):
            return self._END  # stopped by the main thread
        return job.future.result()  # a failed detection raises here, at its frame

    # ---- the main thread
    def _help(self) -> bool:
        """The pyramid and flow preparation of the frame after the front thread's (:class:`_PrepJob`), else the
        keypoints of the frame :data:`_JOBS_AHEAD` past it (:class:`_KeypointJob`), if nobody has started them.

        A preparation is taken only for a frame at most ``frame_slots - 2`` past the last one handed to this thread
        (:attr:`frame_num`): its slot was last the frame's ``frame_slots`` before, whose expansions this thread's
        warped flows no longer read (they read the last frame's on), and the front thread reads the two before it."""
        prep = self._prep
        if (prep is not None and prep.frame_num <= self.frame_num + self.steps.flow.frame_slots - 2
                and prep.claim()):
            prep.run(self.steps)
            return True
        job = self._job
        if job is None or not job.claim():
            return False
        if self._main_detector is None:
            steps = self.steps
            self._main_detector = _make_detector(steps.camera.matcher_name, steps.camera_params)[0]
        job.run(self.steps, self._main_detector)
        return True

    def warped(self) -> None:
        """The main thread's warped flow of the current frame is done: one more flow solve may start ahead."""
        self._permits.release()

    def recycle(self, hogs) -> None:
        """The HOG arrays of a frame the main thread is done with (:meth:`_Steps.advance`): the front thread
        fills them again (fresh arrays would cost page faults)."""
        if hogs is not None:
            self._free_hogs.put(hogs)

    def close(self) -> None:
        """Stop the front thread (at the end, on an error or when the consumer stops early) and wait for it."""
        self._stop.set()
        self._permits.release()
        self._stop_thread()

    def __next__(self):
        item = self._take()
        self.frame_num += 1
        if self._early_response:
            # made now, before the homography (which may wait for the front thread): the front thread's homography
            # of the next frame pair asks for it some milliseconds from now, after that frame's flow (see
            # __init__)
            with self.steps.timer("sampling"):
                corner_response(item.gray)
        job = item.H
        if isinstance(job, _HomographyJob):
            if job.claim():  # the front thread did not get to it: made here (the frame before's is done)
                job.run(self.steps)
            else:  # the front thread is on it (or done)
                t0 = time.perf_counter()
                job.future.exception()  # (waits; the outcome is taken below)
                self.stats["main_wait"] += time.perf_counter() - t0
            item = item._replace(H=job.future.result())  # a failed estimate raises here, at its frame
        return item


def _device_sync():
    """Wait for the work queued on this thread's current CUDA stream (the stage timer's ``sync``)."""
    import cupy

    return lambda: cupy.cuda.get_current_stream().synchronize()


def _decoded(frames, timer: _Timer) -> Iterator[np.ndarray]:
    it = iter(frames)
    while True:
        with timer("decode"):
            gray = next(it, None)
        if gray is None:
            return
        yield gray


# ---------------------------------------------------------------------------------------------- the driver
def iter_trajectories(path_or_frames, params: IDTParams | None = None, *, backend: str = "auto",
                      batch_frames: int = 32, batch_rows: int | None = None, timings: dict | None = None,
                      on_frame=None, on_tracks=None, count_frames: bool = True) -> Iterator[Trajectories]:
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
    batch_rows : int or None
        Also yield as soon as the batch holds at least this many trajectories (None: by ``batch_frames`` only),
        which bounds a batch's memory on dense footage while sparse footage still gets few, large batches.
    timings : dict or None
        If given, seconds per stage (:data:`STAGES`, every one a key: 0 for a stage that does not run) are
        accumulated into it.
    on_frame : callable or None
        ``on_frame(frame_index, total)`` after each frame (progress bars). ``total``: the number of frames when
        known in advance, else a file header's count (an estimate: when it was wrong, one more call
        ``on_frame(n, n)`` with the ``n`` frames decoded ends the run), else None.
    on_tracks : callable or None
        ``on_tracks(frame_num, gray, pos, index)`` after each frame, with the points ``pos (k, L+1, 2)`` of the
        live level-0 tracks and their steps done ``index (k,)`` (for ``--draw``).
    count_frames : bool
        For a video file: count its decodable frames first (one more decode pass) so that every batch's
        ``t_pos`` is final, as a consumer that writes rows as they come needs (LEAR text). With False the file is
        decoded once and ``t_pos`` is NaN until the end, as for a generator (:func:`extract` and the npz
        :class:`~idtfv.idt.trajectories.TrajectoryWriter` fill it in from the last batch's ``info["frames"]``:
        the same bytes). A range of fewer than 2 frames, ``start`` beyond the end or a 1-frame video fail with the
        same messages either way: with False, once the decoding tells (before any batch is yielded).

    Yields
    ------
    Trajectories
        Each batch's ``info`` holds the run's metadata (same dict for every batch). ``t_pos`` is NaN when the
        number of frames is not known in advance (a generator input, a file with ``count_frames=False``):
        :func:`idtfv.idt.trajectories.fill_t_pos` with the last batch's ``info`` fills it in.
    """
    params = IDTParams() if params is None else params
    if not isinstance(params, IDTParams):
        raise ParameterError(f"params: expected an IDTParams, got {type(params).__name__}")
    if not isinstance(batch_frames, int) or batch_frames < 1:
        raise ParameterError(f"batch_frames: expected a positive integer, got {batch_frames!r}")
    if batch_rows is not None and (not isinstance(batch_rows, int) or batch_rows < 1):
        raise ParameterError(f"batch_rows: expected a positive integer or None, got {batch_rows!r}")
    from idtfv.video import BACKENDS

    if backend not in BACKENDS:  # also with frames, which use none: a typo must not pass unnoticed
        raise ParameterError(f"backend: expected one of {', '.join(BACKENDS)}, got {backend!r}")
    for name, hook in (("on_frame", on_frame), ("on_tracks", on_tracks)):
        if hook is not None and not callable(hook):  # before the first frame, not after it
            raise ParameterError(f"{name}: expected a callable or None, got {type(hook).__name__}")
    if isinstance(path_or_frames, bytes):  # a path (os.fsencode), not an iterable of ints
        path_or_frames = os.fsdecode(path_or_frames)
    timer = _Timer(timings)
    opened = _open_source(path_or_frames, params, backend, count_frames=count_frames)
    frames, src_info, n_frames, total = opened.frames, opened.info, opened.n_frames, opened.total_hint
    source = src_info["source"]
    source_size = src_info.pop("source_size", None)  # known here for a file, after the first frame for frames
    if isinstance(source, (str, os.PathLike)):
        # the file's name only: where a cache or a dataset lives must not change the bytes of a result
        src_info["source"] = os.path.basename(os.fspath(source))
    info = {
        "version": __version__,
        "params": {k: v for k, v in params.to_dict().items() if k != "threads"},  # threads change no byte
        "matcher": resolve_matcher(params.matcher) if params.camera_motion else "none",
        "flow": params.flow,
        "warp_flow": params.warp_flow if params.camera_motion else "none",
        **src_info,
    }
    humans = _HumanMasks(params, path_or_frames, source_size)
    steps = _Steps(params, humans=humans, timer=timer, n_frames=n_frames)
    pipe = None
    if timings is not None and steps.device == "cuda":
        timer.sync = _device_sync()
    try:
        info["flow_impl"] = steps.flow.name
        if params.device != "cpu":  # CPU runs keep their info (and output bytes) as before the option existed
            info["device"] = steps.device

        frames = _decoded(frames, timer)
        first = next(frames, None)
        if first is None:
            raise VideoError(source, "no frames in the requested range; need at least 2")
        h, w = first.shape
        source_size = src_info.get("source_size", source_size)
        if min(h, w) < params.patch:
            if source_size is not None and tuple(source_size) != (w, h):  # the working width made it too small
                raise VideoError(source, f"frames are {source_size[0]}x{source_size[1]}, {w}x{h} at the working width "
                                         f"{w}, smaller than the {params.patch}-px descriptor patch; use "
                                         "--resize-width 0 (keep the full size) or a larger --resize-width")
            raise VideoError(source, f"frames are {w}x{h}, smaller than the {params.patch}-px descriptor patch; "
                                     "use a larger video or a smaller --patch")
        if source_size is not None and tuple(source_size) != (w, h):  # shrunk to the working width
            info.update(source_width=int(source_size[0]), source_height=int(source_size[1]))
            humans.box_scale = w / source_size[0]
        frame_num = params.start
        steps.start(frame_num, first)
        info.update(width=int(w), height=int(h), scales=[float(f) for f in steps.factors])
        batch: list[Trajectories] = []
        frames_in_batch = rows_in_batch = 0
        n_seen = 1

        def counts() -> dict:  # the run's counts so far, in every batch's info
            return dict(frames=n_seen, homographies_accepted=steps.n_accepted, still_pairs=steps.n_still)

        if on_frame is not None:
            on_frame(1, total)

        if params.threads == 1:
            pipe = None
        elif steps.device == "cuda":  # every device step on this thread, the host's work on the frames ahead
            pipe = _HostAhead(steps, frames, (h, w), source, frame_num)
        else:
            pipe = _FrontThread(steps, frames, (h, w), source, frame_num)
        for gray, pyr, flows, ahead, H, flow_source, hogs in \
                pipe if pipe is not None else _serial(steps, frames, (h, w), source, frame_num):
            frame_num += 1
            n_seen += 1
            flows_w = steps.compensate_camera(frame_num, gray, flows, pyr, ahead, flow_source, H)
            if pipe is not None:
                pipe.warped()  # _FrontThread: one more flow solve may start ahead
            if steps.executor is None:
                moved = steps.track(flows, flows_w)
                steps.describe(moved, flows_w)
                finished = steps.finish(frame_num)
            else:
                finished = steps.levels(frame_num, flows, flows_w)
            batch.extend(finished)
            rows_in_batch += sum(len(t) for t in finished)
            if on_tracks is not None and len(steps.pools[0]):
                on_tracks(frame_num, gray, *steps.live_tracks())
            steps.sample(pyr)
            done = steps.advance(gray, pyr, hogs)
            if pipe is not None:
                pipe.recycle(done)

            frames_in_batch += 1
            if on_frame is not None:
                on_frame(n_seen, total)
            if frames_in_batch >= batch_frames or (batch_rows is not None and rows_in_batch >= batch_rows):
                if batch:
                    yield concatenate(batch, info=dict(info, **counts()))
                batch, frames_in_batch, rows_in_batch = [], 0, 0
        if n_seen < 2:
            raise opened.too_short(n_seen)
        if on_frame is not None and total is not None and total != n_seen:
            on_frame(n_seen, n_seen)  # the header's estimate was wrong: the bar ends at the frames decoded
        info.update(counts())
        humans.finish(info)
        # the last batch carries the final info (frames seen, homographies accepted)
        yield concatenate(batch, info=info)
    finally:
        if pipe is not None:
            pipe.close()
        if steps.executor is not None:
            steps.executor.shutdown(wait=True, cancel_futures=True)


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
        ``info`` (params, matcher used, frames, fps, size, scales, homographies accepted). A video file is
        decoded once: ``t_pos`` uses the number of frames that pass decoded (``info["frames"]``).
    """
    # a file is decoded once: t_pos waits for the frame count of that pass (filled in below, same bytes)
    parts = list(iter_trajectories(path_or_frames, params, backend=backend, timings=timings, on_frame=on_frame,
                                   on_tracks=on_tracks, count_frames=False))
    info = parts[-1].info
    blocks = {}
    for name in BLOCK_NAMES:  # one block at a time, dropping the batches' copy: about 1.25x the rows at the peak
        blocks[name] = np.concatenate([getattr(part, name) for part in parts])
        for part in parts:
            setattr(part, name, None)
    del parts
    out = Trajectories(**blocks, info=info)
    fill_t_pos(out.meta, out.info)  # NaN when the number of frames was not known in advance
    return out


def _writer_threads(out, format, compresslevel, threads: int) -> int:
    """The ``threads`` :func:`extract_to_file` gives its writer: with ``--threads`` the extractor's threads occupy
    as many cores, and its main thread waits for the front one (0.3-0.9 s on whole vtest), so a compression cheaper
    than that slack runs best on the main thread, inside ``write()``: the default npz (Huffman codes for the
    descriptor blocks, ~3% of the extraction's CPU). The costly ones go to the writer's own thread: a ``.txt.gz``
    (gzip of the text: ~15% of the CPU with zlib when this was raced, ~7% with idtfv's encoder) and an npz at a
    level the caller gave. The bytes are the same either way.
    (A/B timings of both choices: issue 12's closing note of 2026-12-03; ``bench/bench_threads.py`` races the
    thread counts with the default npz.)"""
    if threads < 2 or not (isinstance(out, (str, bytes)) or hasattr(out, "__fspath__")):
        return 1  # one thread, or a stream (LEAR text, not compressed)
    return 1 if output_format(out, format) == "npz" and compresslevel is None else threads


#: The batches :func:`extract_to_file` hands to the writer: the trajectories finished since the last one, handed
#: over once they number :data:`_WRITE_ROWS` or :data:`_WRITE_FRAMES` frames went by. A batch is held twice (its
#: parts and their concatenation), so a bound in rows bounds the peak above the steady state whatever the footage's
#: density (bikes, 320x240, ~200 trajectories finishing per frame: 314 MB peak RSS with 32 frames per batch, 254 MB
#: with 1), while sparse footage (vtest: ~45 a frame) is not written frame by frame: each write is a fixed cost of
#: Python on the main thread, which with ``--threads`` also holds the GIL the front thread needs. Whole processes
#: on 2 cores, vtest, ``--threads 2``, alternating, medians of 4-5 rounds: 8 frames per batch against 1, 5.75 vs
#: 5.92 s; these bounds against 1 frame, 5.63 vs 5.66 s (within the runs' noise); one thread unchanged. The bytes
#: are the same either way.
_WRITE_ROWS = 512
_WRITE_FRAMES = 32


def extract_to_file(path_or_frames, out, params: IDTParams | None = None, *, format: str | None = None,
                    compact: bool = True, compresslevel: int | None = None, backend: str = "auto",
                    timings: dict | None = None, on_frame=None, on_tracks=None) -> TrajectoryWriter:
    """Extract a video's trajectories straight to a file, writing each batch as it finishes (flat memory).

    ``extract_to_file(video, "v.npz")`` writes the bytes of ``extract(video).save("v.npz")`` while holding one
    batch of trajectories at a time instead of all of them (``extract-trajectories`` runs this). A video file is
    decoded once for an npz (``t_pos`` is filled in when the file is closed); LEAR text, whose rows go out as they
    come, counts the file's frames first (``count_frames=True`` of :func:`iter_trajectories`: one more decode pass).
    With ``params.threads >= 2`` a ``.txt.gz`` (or an npz at a given ``compresslevel``) is compressed on a thread of
    the writer's own while the extraction goes on; the default npz on the main thread (:func:`_writer_threads`).

    Parameters
    ----------
    path_or_frames : path or iterable of uint8 frames
        See :func:`iter_trajectories`.
    out : path-like or binary stream
        The output file (written atomically), or a stream for LEAR text (``sys.stdout.buffer``).
    params : IDTParams or None
        Options; LEAR's reference defaults when None.
    format, compact, compresslevel
        Those of :class:`~idtfv.idt.trajectories.TrajectoryWriter`.
    backend, timings, on_frame, on_tracks
        See :func:`iter_trajectories`.

    Returns
    -------
    TrajectoryWriter
        Closed: ``n_rows`` (trajectories written), ``info`` (the run's metadata) and ``path``. On an error the
        output is left as it was.
    """
    params = IDTParams() if params is None else params
    threads = params.threads if isinstance(params, IDTParams) else 1  # (iter_trajectories refuses other params)
    with TrajectoryWriter(out, format, compact=compact, compresslevel=compresslevel,
                          threads=_writer_threads(out, format, compresslevel, threads)) as writer:
        # npz: the file is decoded once and t_pos filled in at close(); LEAR text writes rows as they come, so
        # their t_pos needs the frame count first (one more decode pass, as before)
        for part in iter_trajectories(path_or_frames, params, backend=backend, timings=timings, on_frame=on_frame,
                                      on_tracks=on_tracks, count_frames=writer.format == "lear",
                                      batch_frames=_WRITE_FRAMES, batch_rows=_WRITE_ROWS):
            writer.write(part)
    return writer
