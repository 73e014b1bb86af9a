r"""Image pyramids and the one coarse-to-fine driver of every flow solver.

:func:`build_pyramid` makes a pyramid: level 0 is the image, level :math:`i` is level :math:`i-1` resized to the
:math:`i`-th size. Two geometries use it: the iDT scale pyramid of the extractor (sizes from
:func:`idtfv.idt.pyramid.pyramid_geometry`, OpenCV's bilinear ``resize``) and the solvers' internal pyramids
(:func:`scaled_sizes`: each side ``round(size * eta)`` of the previous one, none under ``min_size``, resampled by
a backend's :class:`PyramidOps`).

:func:`coarse_to_fine_levels` is the coarse-to-fine loop: on the coarsest level the flow starts from zero, on
level :math:`s` from level :math:`s+1`'s result brought up to level :math:`s`; it returns every level's flow.
The Farnebäck pyramid flows (:mod:`idtfv.idt.flow.farneback`) run it over the iDT pyramid, and
:func:`coarse_to_fine` runs it over a solver's own pyramid of two frames (TV-L1 on the CPU and the GPU).

Array operations of :func:`coarse_to_fine` go through an ``ops`` object (:data:`CPU_OPS` here, Numba;
:mod:`idtfv.idt.flow._tvl1_cupy` supplies the GPU one with the same arithmetic), so the same driver runs on NumPy
and CuPy arrays. The resampling is OpenCV's ``INTER_LINEAR`` grid, written out so both backends compute the same
numbers; between levels the flow is upsampled bilinearly and multiplied by :math:`1/\eta` (as OpenCV's
``DualTVL1`` does, so the two can be compared at matched parameters).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import cv2
import numpy as np

from idtfv.errors import ParameterError

__all__ = ["PyramidOps", "CPU_OPS", "build_pyramid", "scaled_sizes", "coarse_to_fine_levels", "coarse_to_fine",
           "MIN_LEVEL_SIZE", "PyramidFlow", "median_filter_flow"]

#: A solver's level smaller than this (either side, pixels) is not built; OpenCV's DualTVL1 uses the same floor.
MIN_LEVEL_SIZE = 16


def _resize_bilinear(img: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    return cv2.resize(img, size, interpolation=cv2.INTER_LINEAR)


def build_pyramid(img, sizes: Sequence[tuple[int, int]], *, resize: Callable = _resize_bilinear) -> list:
    """The levels of ``img``, finest first: ``img`` itself, then each level resized from the one before.

    Parameters
    ----------
    img : (h, w) array (or ``(B, h, w)`` for a ``resize`` that takes batches)
        Level 0.
    sizes : sequence of (w_i, h_i)
        The size of every level; ``sizes[0]`` is ``img``'s own.
    resize : callable
        ``resize(level, (w, h)) -> next level``; default OpenCV's bilinear ``cv2.resize``.

    Returns
    -------
    list of ``len(sizes)`` arrays
    """
    levels = [img]
    for size in sizes[1:]:
        levels.append(resize(levels[-1], tuple(size)))
    return levels


def scaled_sizes(width: int, height: int, *, n_scales: int, scale_step: float,
                 min_size: int = MIN_LEVEL_SIZE) -> list[tuple[int, int]]:
    """Sizes ``(w_i, h_i)`` of a solver's pyramid: each side ``round(side * scale_step)`` of the level before.

    OpenCV's size rule for a factor (Python's ``round``, half to even); at most ``n_scales`` levels, and none with
    a side under ``min_size`` (level 0 is always kept).
    """
    sizes = [(int(width), int(height))]
    for _ in range(1, n_scales):
        w, h = sizes[-1]
        nxt = (int(round(w * scale_step)), int(round(h * scale_step)))
        if min(nxt) < min_size:
            break
        sizes.append(nxt)
    return sizes


def coarse_to_fine_levels(n_levels: int, solve_level: Callable, upscale_flow: Callable) -> list:
    """The coarse-to-fine loop over ``n_levels`` levels (0 finest).

    Parameters
    ----------
    n_levels : int
    solve_level : callable
        ``solve_level(s, prior) -> flow_s``: the flow of level ``s`` refined from ``prior``, which is None on the
        coarsest level (start from zero flow).
    upscale_flow : callable
        ``upscale_flow(flow_coarser, s) -> prior``: level ``s + 1``'s flow brought up to level ``s``.

    Returns
    -------
    list
        ``[flow_0, ..., flow_{n-1}]``, whatever ``solve_level`` returns, finest first.
    """
    flows = [None] * n_levels
    for s in range(n_levels - 1, -1, -1):
        prior = None if s == n_levels - 1 else upscale_flow(flows[s + 1], s)
        flows[s] = solve_level(s, prior)
    return flows


# ----------------------------------------------------------------------------------------- a solver's pyramid
@dataclass(frozen=True)
class PyramidOps:
    """The array operations of :func:`coarse_to_fine`, for one backend.

    ``downscale(img (..., h, w), (w', h'), eta) -> (..., h', w')`` resampled bilinearly with step ``1 / eta``;
    ``upscale_flow(u (..., 2, h, w), shape, factor) -> (..., 2, H, W)`` resized bilinearly to ``shape = (H, W)``
    and multiplied by ``factor``; ``zeros_flow(img (..., h, w)) -> (..., 2, h, w)``. Leading axes (a batch of
    frame pairs) are optional.
    """

    downscale: Callable
    upscale_flow: Callable
    zeros_flow: Callable


def _cpu_downscale(img, size, eta):
    # the Numba kernels load on first use, not when the package is imported
    from idtfv.idt.flow._tvl1_nb import resize_linear

    w, h = size
    out = np.empty((h, w), np.float32)
    resize_linear(np.ascontiguousarray(img, np.float32), out, 1.0 / eta, 1.0 / eta, np.float32(1.0))
    return out


def _cpu_upscale_flow(u, shape, factor):
    from idtfv.idt.flow._tvl1_nb import resize_linear

    h, w = shape
    _, sh, sw = u.shape
    out = np.empty((2, h, w), np.float32)
    for d in range(2):
        resize_linear(np.ascontiguousarray(u[d], np.float32), out[d], sh / h, sw / w, np.float32(factor))
    return out


def _cpu_zeros_flow(img):
    return np.zeros((2, *img.shape), np.float32)


#: NumPy/Numba implementation of :class:`PyramidOps`.
CPU_OPS = PyramidOps(downscale=_cpu_downscale, upscale_flow=_cpu_upscale_flow, zeros_flow=_cpu_zeros_flow)


def coarse_to_fine(
    i0,
    i1,
    solve_level: Callable,
    *,
    n_scales: int,
    scale_step: float,
    min_size: int = MIN_LEVEL_SIZE,
    ops: PyramidOps = CPU_OPS,
):
    """Estimate the flow from ``i0`` to ``i1`` coarse to fine over their own pyramids.

    Parameters
    ----------
    i0, i1 : (h, w) float32 arrays (NumPy or the backend's type; ``(B, h, w)`` batches if ``ops`` supports them)
        First and second frame, :math:`I_0` and :math:`I_1`.
    solve_level : callable
        ``solve_level(i0_s, i1_s, u) -> u`` refining ``u (2, h_s, w_s)`` (``(B, 2, h_s, w_s)``) at one level.
    n_scales : int
        Number of pyramid levels :math:`N_{scales}` (fewer if the images get smaller than ``min_size``).
    scale_step : float
        Downsampling factor :math:`\\eta` in (0, 1) between consecutive levels.

    Returns
    -------
    u : (2, h, w) float32 (``(B, 2, h, w)`` for batches)
        Flow planes :math:`(u_1, u_2)` such that ``i1[y + u2, x + u1] ~ i0[y, x]``.
    """
    h, w = i0.shape[-2:]
    sizes = scaled_sizes(w, h, n_scales=n_scales, scale_step=scale_step, min_size=min_size)

    def downscale(img, size):
        return ops.downscale(img, size, scale_step)

    p0 = build_pyramid(i0, sizes, resize=downscale)
    p1 = build_pyramid(i1, sizes, resize=downscale)

    def solve(s, u):
        return solve_level(p0[s], p1[s], ops.zeros_flow(p0[s]) if u is None else u)

    def upscale(u, s):
        return ops.upscale_flow(u, p0[s].shape[-2:], 1.0 / scale_step)

    return coarse_to_fine_levels(len(sizes), solve, upscale)[0]


# ----------------------------------------------------------------------------------- flow on every level
def median_filter_flow(flow: np.ndarray, ksize: int = 5) -> np.ndarray:
    """Median filter each channel of an (h, w, 2) float32 flow (``cv2.medianBlur``; ksize 3 or 5 for float)."""
    if ksize <= 1:
        return flow
    out = np.empty_like(flow)
    out[..., 0] = cv2.medianBlur(np.ascontiguousarray(flow[..., 0]), ksize)
    out[..., 1] = cv2.medianBlur(np.ascontiguousarray(flow[..., 1]), ksize)
    return out


class PyramidFlow:
    """Optical flow on every level of an image pyramid, frame after frame (the extractor's flow protocol).

    Call the object once per frame with the frame's pyramid (finest level first); it returns the flows from the
    previous frame to this one, ``[(h_i, w_i, 2) float32]`` (None on the first call)::

        flows = fp(pyramid_t)                     # t-1 -> t
        flows_w = fp.flow_from_previous(other)    # t-1 -> another pyramid of frame t (camera-compensated)
        flows_w = fp.refine_from_previous(other, guesses)  # the same, started from a guess per level

    A solver subclasses it with two methods:

    ``prepare(levels, slot)``
        What the solver works on for one frame: the levels themselves (default), smoothed levels, polynomial
        expansions, ... ``slot`` cycles through ``0 .. frame_slots - 1`` for consecutive frames (0, 1, 0, ...),
        and is ``frame_slots`` (2) for :meth:`flow_from_previous`'s pyramid: a solver may keep buffers per slot,
        which stay valid until that slot is prepared again.
    ``solve(prev, cur)``
        The flows between two prepared frames, on every level.

    This class keeps the prepared frames t-1 and t and checks the pyramids. :attr:`name` is recorded by the
    extractor as ``info["flow_impl"]``.

    **Looking ahead** (the extractor's ``threads > 1``): one thread calls the object on frames up to t+n while
    another solves :meth:`flow_from_previous` (or :meth:`refine_from_previous`) from frame t-1 to a warped frame
    t. That needs the prepared frames t-1 .. t+n at once and separate scratch for the two callers: a solver that
    can do it overrides :meth:`look_ahead` (after ``look_ahead(n)``, n + 2 frame slots cycle and the side solve
    has its own workspace), and the caller passes the side solve the ``source`` that :meth:`step` returned with
    frame t's flows, since by then the object's own frame t-1 may already be a later one.
    """

    #: The implementation's name in the extractor's output metadata.
    name = "PyramidFlow"
    #: Frame slots :meth:`prepare` cycles through (n + 2 after ``look_ahead(n)``); the side solve's slot is this.
    frame_slots = 2

    def __init__(self):
        self.reset()

    def look_ahead(self, frames: int = 1) -> bool:
        """Make :meth:`__call__` on frames up to t + ``frames`` safe to run on one thread while another runs
        :meth:`flow_from_previous` / :meth:`refine_from_previous` from frame t-1 (passing :meth:`step`'s
        ``source``). Returns whether the solver can (this default: False, nothing changes; the caller must then
        keep the two in order)."""
        return False

    def reset(self) -> None:
        """Forget the previous frames (the next call returns None), e.g. before another video."""
        self._prev = None  # frame t, prepared (the last call's)
        self._source = None  # frame t-1, prepared (where the last call's flows start)
        self._shapes = None
        self._slot = 0

    def prepare(self, levels: list[np.ndarray], slot: int):
        """What :meth:`solve` works on for one frame (default: the levels themselves)."""
        return levels

    def solve(self, prev, cur) -> list[np.ndarray]:  # pragma: no cover - every solver defines it
        raise NotImplementedError

    def __call__(self, pyramid: list[np.ndarray]) -> list[np.ndarray] | None:
        """Flows from the previous call's frame to ``pyramid``'s (None on the first call); remembers this frame."""
        return self.step(pyramid)[0]

    def step(self, pyramid: list[np.ndarray], *, prepared=None) -> tuple[list[np.ndarray] | None, object]:
        """:meth:`__call__`, and the ``source`` of its flows (the previous frame, prepared): what
        :meth:`flow_from_previous` and :meth:`refine_from_previous` start from for this frame pair even after the
        object moved on to the next frame (:meth:`look_ahead`). ``prepared``: this frame as
        :meth:`prepare_ahead` prepared it (None: prepared here)."""
        levels = self._check(pyramid)
        if prepared is None:
            cur = self.prepare(levels, self._slot)
        else:
            slot, cur = prepared
            if slot != self._slot:
                raise ParameterError(f"{type(self).__name__}.step: the frame was prepared in slot {slot}, but this "
                                     f"call's frame takes slot {self._slot}; prepare it with slot_after(n) for "
                                     "the frame n calls after the next one")
        self._slot = (self._slot + 1) % self.frame_slots
        out = None if self._prev is None else self.solve(self._prev, cur)
        self._source, self._prev = self._prev, cur
        self._shapes = [lvl.shape for lvl in levels]
        return out, self._source

    def slot_after(self, n: int = 0) -> int:
        """The slot (:meth:`prepare`) that the frame ``n`` calls after the next one takes (0: the next call's)."""
        return (self._slot + n) % self.frame_slots

    def prepare_ahead(self, pyramid: list[np.ndarray], slot: int):
        """A later frame prepared on another thread while this object works on the frames before it (after
        :meth:`look_ahead`), into ``slot`` (:meth:`slot_after`); hand the result to that frame's :meth:`step`
        (``prepared``). The caller keeps the slot out of use meanwhile: its frame is at least ``frame_slots``
        frames past every frame whose preparation is still to be read. This default prepares with :meth:`prepare`,
        which keeps no scratch of its own; a solver whose :meth:`prepare` does overrides it."""
        return slot, self.prepare(self._check(pyramid), slot)

    def _side_source(self, source, who: str):
        source = self._source if source is None else source
        if source is None:
            raise ParameterError(f"{type(self).__name__}.{who}: needs two frames; call the object on the pyramids "
                                 "of frames t-1 and t first")
        return source

    def flow_from_previous(self, pyramid: list[np.ndarray], *, source=None) -> list[np.ndarray]:
        """Flows from the frame the last call's flows started from (t-1; or ``source``, from :meth:`step`) to
        ``pyramid`` (e.g. frame t warped by :math:`H^{-1}`), without changing the state."""
        source = self._side_source(source, "flow_from_previous")
        return self.solve(source, self.prepare(self._check(pyramid), self.frame_slots))

    def refine_from_previous(self, pyramid: list[np.ndarray], priors: list[np.ndarray], *,
                             source=None) -> list[np.ndarray]:
        """Flows from frame t-1 (or ``source``, from :meth:`step`) to ``pyramid`` started from a guess of each
        level's flow (``priors``, e.g. the compensated flow derived from the plain one), without changing the
        state.

        A solver that can start from a prior overrides this (:class:`~idtfv.idt.flow.FarnebackPyramidFlow`:
        each level refined on its own); this default ignores ``priors`` and is :meth:`flow_from_previous`.
        """
        return self.flow_from_previous(pyramid, source=source)

    def _check(self, pyramid) -> list[np.ndarray]:
        who = type(self).__name__
        if len(pyramid) == 0:
            raise ParameterError(f"{who}: the pyramid is empty; pass a list of (h, w) grey levels, finest first")
        levels = []
        for i, lvl in enumerate(pyramid):
            lvl = np.asarray(lvl)
            if lvl.ndim != 2 or min(lvl.shape) < 2:
                raise ParameterError(f"{who}: pyramid level {i} must be a 2-D grey image of at least 2x2 pixels, "
                                     f"got shape {lvl.shape}")
            levels.append(lvl)
        shapes = [lvl.shape for lvl in levels]
        if self._shapes is not None and shapes != self._shapes:
            raise ParameterError(f"{who}: the pyramid's level sizes {shapes} differ from the previous frame's "
                                 f"{self._shapes}; call reset() when the video changes")
        return levels
