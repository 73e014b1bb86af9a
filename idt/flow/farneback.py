r"""Farnebäck dense optical flow (Farnebäck, "Two-frame motion estimation based on polynomial expansion", SCIA 2003).

Three forms of the same algorithm:

* :func:`farneback_flow`: two frames, OpenCV's ``calcOpticalFlowFarneback`` with LEAR's options
  (:class:`FarnebackParams`; :func:`idtfv.idt.flow.estimate_flow` with ``method="farneback"``), and
  :func:`solve_level`, one OpenCV level for :func:`idtfv.idt.flow.pyramid.coarse_to_fine`;
* :class:`FarnebackPyramidFlow`: the extractor's flow, ours (Numba, :mod:`idtfv.idt.flow._farneback_nb` has the
  equations). Each frame is expanded once per pyramid level and the expansion is kept for the next frame pair,
  which halves the expansion work (and more when the camera-compensated flow is computed from the same previous
  frame, :meth:`~idtfv.idt.flow.pyramid.PyramidFlow.flow_from_previous`; or, from a guess of each level's flow,
  :meth:`FarnebackPyramidFlow.refine_from_previous`: one round per level instead of the coarse-to-fine solve);
* :class:`OpenCVFarnebackPyramidFlow`: the same over the pyramid with OpenCV (both expansions recomputed on
  every call); ``farneback_impl="opencv"``.

Both pyramid flows go coarse to fine over the iDT pyramid (as LEAR's DenseTrackStab does,
:func:`idtfv.idt.flow.pyramid.coarse_to_fine_levels`): the coarsest level starts from zero flow; level i starts
from level i+1's flow, bilinearly resized and scaled by the level's size ratio (:math:`\approx\sqrt 2`); on each
level ``iterations`` rounds of (per-pixel normal equations, window sum, 2x2 solve), then a 5x5 median filter per
channel (``cv2.medianBlur``), the flow tracking uses.

Ours smooths each level with a 3x3 Gaussian (sigma 0.8) before its expansion, as OpenCV does to the level it
works on; so with the same window a level's flow equals OpenCV's ``calcOpticalFlowFarneback(..., levels=0)`` on
that level to float rounding away from a 12-pixel border (tested). It starts a level from the next-coarser
level's *filtered* flow. Window: Gaussian (LEAR's code, OpenCV's ``OPTFLOW_FARNEBACK_GAUSSIAN``) or box (OpenCV's
default flags), both over offsets -winsize//2..winsize//2. The expansion is one fused Numba pass (separable
moments and coefficients), so are the first iteration's per-pixel terms, and each iteration is one more
(:func:`~idtfv.idt.flow._farneback_nb.window_solve`: window sum, 2x2 solve and the next iteration's terms, row
by row, with the window sums of OpenCV's ``sepFilter2D`` vector loops); the Numba kernels are loaded on first use
(importing this module does not load Numba).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import cv2
import numpy as np

from idtfv.errors import ParameterError
from idtfv.idt.flow.pyramid import PyramidFlow, coarse_to_fine_levels, median_filter_flow

__all__ = ["FarnebackParams", "farneback_flow", "solve_level", "poly_expansion", "farneback_level",
           "FarnebackPyramidFlow", "OpenCVFarnebackPyramidFlow", "farneback_levels", "WINDOWS"]

#: Window weightings of the displacement estimate.
WINDOWS = ("gaussian", "box")


def _kernels():
    """The Numba kernels (compiled or loaded from Numba's cache on first use)."""
    from idtfv.idt.flow import _farneback_nb

    return _farneback_nb


def _median_kernels():
    """The Numba median-filter kernel's module (loaded on first use, like :func:`_kernels`)."""
    from idtfv.idt.flow import _median_nb

    return _median_nb


def _level_kernels():
    """The one-call level kernel's module (:mod:`idtfv.idt.flow._level_nb`; loaded on first use)."""
    from idtfv.idt.flow import _level_nb

    return _level_nb


# ------------------------------------------------------------------------------------- OpenCV, two frames
@dataclass(frozen=True)
class FarnebackParams:
    """OpenCV ``calcOpticalFlowFarneback`` options (LEAR's values by default).

    Attributes
    ----------
    pyr_scale : float
        Pyramid downsampling factor in (0, 1).
    levels : int
        Extra pyramid levels (0 = the original size only).
    winsize : int
        Averaging window (px).
    iterations : int
        Iterations per level.
    poly_n : int
        Neighbourhood of the polynomial expansion (5 or 7).
    poly_sigma : float
        Gaussian :math:`\\sigma` of the expansion (1.1 for ``poly_n=5``, 1.5 for 7).
    gaussian : bool
        Gaussian instead of box averaging window (``OPTFLOW_FARNEBACK_GAUSSIAN``).
    """

    pyr_scale: float = float(np.sqrt(2.0) / 2.0)
    levels: int = 5
    winsize: int = 10
    iterations: int = 2
    poly_n: int = 7
    poly_sigma: float = 1.5
    gaussian: bool = True

    def validate(self) -> "FarnebackParams":
        """Raise :class:`ParameterError` for the first option out of range; return ``self``."""
        checks = [
            ("pyr_scale", 0 < self.pyr_scale < 1, "in (0, 1)"),
            ("levels", isinstance(self.levels, int) and self.levels >= 0, "an int >= 0"),
            ("winsize", isinstance(self.winsize, int) and self.winsize >= 1, "an int >= 1"),
            ("iterations", isinstance(self.iterations, int) and self.iterations >= 1, "an int >= 1"),
            ("poly_n", self.poly_n in (5, 7), "5 or 7"),
            ("poly_sigma", self.poly_sigma > 0, "> 0"),
        ]
        for name, ok, expected in checks:
            if not ok:
                raise ParameterError(f"FarnebackParams.{name} must be {expected}, got {getattr(self, name)!r}")
        return self

    def replace(self, **changes) -> "FarnebackParams":
        """Return a validated copy with ``changes`` applied."""
        return dataclasses.replace(self, **changes).validate()

    def _flags(self, initial: bool) -> int:
        flags = cv2.OPTFLOW_FARNEBACK_GAUSSIAN if self.gaussian else 0
        return flags | (cv2.OPTFLOW_USE_INITIAL_FLOW if initial else 0)


def farneback_flow(i0, i1, *, params: FarnebackParams | None = None) -> np.ndarray:
    """Flow ``(h, w, 2)`` float32 from ``i0`` to ``i1`` (uint8 or float32 gray; see
    :func:`idtfv.idt.flow.estimate_flow`)."""
    p = (params or FarnebackParams()).validate()
    flow = cv2.calcOpticalFlowFarneback(
        i0, i1, None, p.pyr_scale, p.levels, p.winsize, p.iterations, p.poly_n, p.poly_sigma, p._flags(False)
    )
    return np.ascontiguousarray(flow, dtype=np.float32)


def solve_level(i0, i1, u, params: FarnebackParams | None = None):
    """Per-level solver for :func:`idtfv.idt.flow.pyramid.coarse_to_fine`: one Farnebäck level started from ``u``.

    ``i0, i1 (h, w)`` float32 in 0..255, ``u (2, h, w)``; returns the refined ``(2, h, w)`` flow.
    """
    p = (params or FarnebackParams()).validate()
    init = np.ascontiguousarray(np.moveaxis(np.asarray(u, np.float32), 0, -1))
    flow = cv2.calcOpticalFlowFarneback(
        i0, i1, init, p.pyr_scale, 0, p.winsize, p.iterations, p.poly_n, p.poly_sigma, p._flags(True)
    )
    return np.ascontiguousarray(np.moveaxis(flow, -1, 0))


# ------------------------------------------------------------------------------------- ours: expansion, level
def _expansion_filters(poly_n: int, poly_sigma: float):
    """1-D kernels g t^k (k = 0, 1, 2) and the constants turning moments into coefficients."""
    t = np.arange(-poly_n, poly_n + 1, dtype=np.float64)
    g = np.exp(-t * t / (2.0 * poly_sigma * poly_sigma))
    g /= g.sum()
    kernels = [np.ascontiguousarray(np.float32(g * t**k)[poly_n:]) for k in range(3)]  # t = 0..n
    s0, s2, s4 = g.sum(), (g * t**2).sum(), (g * t**4).sum()
    q = np.array([[s0 * s0, s0 * s2, s0 * s2], [s0 * s2, s0 * s4, s2 * s2], [s0 * s2, s2 * s2, s0 * s4]])
    qi = np.linalg.inv(q)
    consts = (1.0 / (s0 * s2), 1.0 / (2.0 * s2 * s2), qi[1, 0], qi[1, 1], qi[1, 2], qi[2, 0], qi[2, 1], qi[2, 2])
    return kernels, consts


def poly_expansion(img: np.ndarray, *, poly_n: int = 7, poly_sigma: float = 1.5, _filters=None) -> np.ndarray:
    """Quadratic polynomial expansion of an image with a Gaussian applicability.

    Parameters
    ----------
    img : (h, w) float32
        Grey image.
    poly_n : int
        n: the applicability covers offsets -n..n (a (2n+1)^2 neighbourhood), as OpenCV's ``poly_n``.
    poly_sigma : float
        :math:`\\sigma` of the Gaussian applicability.

    Returns
    -------
    (h, w, 5) float32
        ``[b_x, b_y, A_11, A_22, A_12]`` of :math:`f(t) \\approx t^T A t + b^T t + c` (image borders replicated).
    """
    img = np.asarray(img)
    if img.ndim != 2 or min(img.shape) < 2:
        raise ParameterError(f"poly_expansion: img must be a 2-D grey image of at least 2x2 pixels, got {img.shape}")
    filters = _filters if _filters is not None else _expansion_filters(poly_n, poly_sigma)
    img = np.ascontiguousarray(img, dtype=np.float32)
    return _expand_into(img, filters, np.empty(img.shape + (5,), np.float32))


class _Workspace:
    """Scratch arrays of one level size, reused across frames (fresh large arrays cost page faults)."""

    def __init__(self, h: int, w: int):
        self.img = np.empty((h, w), np.float32)
        self.m = np.empty((h, w, 5), np.float32)
        self.flow = np.empty((2, h, w), np.float32)  # planar x, y
        self.init = np.empty((2, h, w), np.float32)
        self.med = np.empty((2, h, w), np.float32)


def _expand_into(img: np.ndarray, filters, out: np.ndarray) -> np.ndarray:
    kernels, consts = filters
    _kernels().poly_expand(img, *kernels, *consts, out)
    return out


def _window_kernel(winsize: int, window: str) -> np.ndarray:
    """1-D window of the displacement estimation; both span offsets -m..m, m = winsize // 2 (as OpenCV)."""
    m = winsize // 2
    if window == "box":
        return np.full(2 * m + 1, 1.0 / winsize, np.float32)  # OpenCV scales its box sums by 1 / winsize^2
    if m == 0:  # winsize 1: one tap (the Gaussian's sigma 0.3 * m would be 0, and its weights 0 / 0)
        return np.ones(1, np.float32)
    sigma = 0.3 * m  # OpenCV's Gaussian-window Farnebäck uses these numbers
    t = np.arange(-m, m + 1, dtype=np.float64)
    k = np.exp(-t * t / (2 * sigma * sigma))
    return np.float32(k / k.sum())


def farneback_level(r0: np.ndarray, r1: np.ndarray, flow: np.ndarray | None = None, *, winsize: int = 10,
                    iterations: int = 2, window: str = "gaussian") -> np.ndarray:
    """Refine a displacement field between two expanded frames of the same size.

    Parameters
    ----------
    r0, r1 : (h, w, 5) float32
        :func:`poly_expansion` of the first and second frame.
    flow : (h, w, 2) float32 or None
        Prior displacement (zero if None).
    winsize : int
        Window size of the displacement estimation: offsets -m..m with m = ``winsize // 2`` (as OpenCV), Gaussian
        weights with sigma ``0.3 * m`` or uniform weights (box).
    iterations : int
        Rounds of (normal equations at the current flow, window sum, solve).
    window : {"gaussian", "box"}

    Returns
    -------
    (h, w, 2) float32
        Displacement from frame 1 to frame 2, (x, y) in pixels.
    """
    h, w = r0.shape[:2]
    if r1.shape != (h, w, 5) or r0.shape != (h, w, 5):
        raise ParameterError(f"farneback_level: r0 and r1 must both be (h, w, 5) expansions, got {r0.shape} and "
                             f"{r1.shape}")
    if window not in WINDOWS:
        raise ParameterError(f"farneback_level: window must be one of {WINDOWS}, got {window!r}")
    if flow is not None and np.shape(flow) != (h, w, 2):
        raise ParameterError(f"farneback_level: flow must have shape {(h, w, 2)}, got {np.shape(flow)}")
    work = _Workspace(h, w)
    if flow is not None:
        work.init[:] = np.asarray(flow, dtype=np.float32).transpose(2, 0, 1)
        flow = work.init
    return np.ascontiguousarray(_level(r0, r1, flow, winsize, iterations, window, work).transpose(1, 2, 0))


def _level(r0, r1, init, winsize, iterations, window, work: _Workspace, kernel: np.ndarray | None = None
           ) -> np.ndarray:
    """Refine the planar prior ``init`` (2, h, w) (zero if None); returns ``work.flow`` (2, h, w).

    ``kernel`` is ``_window_kernel(winsize, window)`` when the caller keeps it (made here if None).
    """
    nb = _kernels()
    if init is None:
        init = work.flow
        init.fill(0.0)
    k = _window_kernel(winsize, window) if kernel is None else kernel
    m, flow = work.m, work.flow
    nb.update_matrices(r0, r1, init, nb.BORDER_WEIGHTS, m)
    for i in range(iterations):
        # window sum and solve in one pass over the rows (the numbers of cv2.sepFilter2D's vector loops, then
        # solve_flow), and, but after the last iteration, the terms at the new flow back into m (update_matrices')
        nb.window_solve(m, k, nb.DET_EPS, flow, r0, r1, nb.BORDER_WEIGHTS, i < iterations - 1)
    return flow


def _median(flow: np.ndarray, ksize: int, work: _Workspace) -> tuple[np.ndarray, np.ndarray]:
    """Planar (2, h, w) ``flow`` median-filtered per channel into ``work.med`` (the next finer level's prior), and
    the same flow interleaved into a fresh ``(h, w, 2)`` array (the level's output): ``cv2.medianBlur``'s values,
    5x5 by our shared selection networks (:mod:`idtfv.idt.flow._median_nb`), 3x3 by OpenCV."""
    if ksize == 5:
        out = np.empty(flow.shape[1:] + (2,), np.float32)
        _median_kernels().median5_flow(flow, work.med, out)
        return work.med, out
    if ksize <= 1:
        work.med[:] = flow
    else:
        for c in range(2):
            cv2.medianBlur(flow[c], ksize, dst=work.med[c])
    return work.med, cv2.merge((work.med[0], work.med[1]))


# ------------------------------------------------------------------------------------- ours: the pyramid flow
class FarnebackPyramidFlow(PyramidFlow):
    """Dense Farnebäck flow on every pyramid level, coarse to fine, expanding each frame once (Numba).

    A :class:`~idtfv.idt.flow.pyramid.PyramidFlow`: call it once per frame with the frame's pyramid (finest level
    first, each coarser by about sqrt 2); it returns the flows from the previous frame to this one (None on the
    first call).

    Parameters
    ----------
    poly_n : int
        n of the polynomial expansion (offsets -n..n), as OpenCV's ``poly_n`` (7).
    poly_sigma : float
        :math:`\\sigma` of its Gaussian applicability (1.5).
    winsize : int
        Window of the displacement estimation (10).
    iterations : int
        Iterations per level (2).
    median : int
        ``cv2.medianBlur`` kernel applied to each level's flow (5; 1 disables it).
    window : {"gaussian", "box"}
        Window weighting: Gaussian as LEAR's code, box as OpenCV's default flags.
    presmooth : bool
        Smooth each level with a 3x3 Gaussian (sigma 0.8) before expanding it, as OpenCV's
        ``calcOpticalFlowFarneback`` does to its finest level (and LEAR's code to level 0); with it, a level's flow
        equals OpenCV's ``levels=0`` call on that level (same window) away from the borders.
    """

    name = "NumbaFarnebackPyramidFlow"

    def __init__(self, *, poly_n: int = 7, poly_sigma: float = 1.5, winsize: int = 10, iterations: int = 2,
                 median: int = 5, window: str = "gaussian", presmooth: bool = True):
        if not isinstance(poly_n, (int, np.integer)) or poly_n < 1:
            raise ParameterError(f"FarnebackPyramidFlow: poly_n must be a positive integer, got {poly_n!r}")
        if not poly_sigma > 0:
            raise ParameterError(f"FarnebackPyramidFlow: poly_sigma must be > 0, got {poly_sigma!r}")
        if not isinstance(winsize, (int, np.integer)) or winsize < 1:
            raise ParameterError(f"FarnebackPyramidFlow: winsize must be a positive integer, got {winsize!r}")
        if not isinstance(iterations, (int, np.integer)) or iterations < 1:
            raise ParameterError(f"FarnebackPyramidFlow: iterations must be a positive integer, got {iterations!r}")
        if median not in (1, 3, 5):
            raise ParameterError(
                f"FarnebackPyramidFlow: median must be 1 (off), 3 or 5 (cv2.medianBlur on float), got {median!r}")
        if window not in WINDOWS:
            raise ParameterError(f"FarnebackPyramidFlow: window must be one of {WINDOWS}, got {window!r}")
        self.poly_n = int(poly_n)
        self.poly_sigma = float(poly_sigma)
        self.winsize = int(winsize)
        self.iterations = int(iterations)
        self.median = int(median)
        self.window = window
        self.presmooth = bool(presmooth)
        self._filters = _expansion_filters(self.poly_n, self.poly_sigma)
        self._window = _window_kernel(self.winsize, self.window)
        self._sizes: list[tuple[int, int]] | None = None
        self._work: list[_Workspace] = []  # scratch of the frame-after-frame solve (__call__)
        self._work_side: list[_Workspace] = []  # of the side solve (the same arrays unless looking ahead)
        self._bufs: list[list[np.ndarray]] = []  # expansion buffers per slot (the frame slots, then the side's)
        self._ahead_imgs: list[np.ndarray] = []  # presmoothing scratch of prepare_ahead (another thread's)
        super().__init__()

    def look_ahead(self, frames: int = 1) -> bool:
        """``frames + 2`` frame slots and a workspace of its own for the side solve (see
        :class:`~idtfv.idt.flow.pyramid.PyramidFlow`): ``frames`` more expansions and one more workspace per
        level. Call it before the first frame; returns True."""
        if self._prev is not None:
            raise ParameterError("FarnebackPyramidFlow.look_ahead: call it before the first frame (or after "
                                 "reset())")
        if not isinstance(frames, (int, np.integer)) or frames < 1:
            raise ParameterError(f"FarnebackPyramidFlow.look_ahead: frames must be an integer >= 1, got {frames!r}")
        self.frame_slots = int(frames) + 2
        self._sizes = None  # the buffers are made again for the slots at the next frame
        return True

    def _smooth_expand(self, lvl: np.ndarray, dst: np.ndarray, out: np.ndarray) -> np.ndarray:
        """A level's expansion into ``out``, presmoothed into ``dst``: for uint8 and float32 levels (the extractor's)
        both in one kernel call (:func:`~idtfv.idt.flow._level_nb.smooth_expand`, ``cv2.GaussianBlur``'s numbers);
        else OpenCV's blur, then the expansion."""
        if self.presmooth and lvl.dtype in (np.uint8, np.float32):
            kernels, consts = self._filters
            _level_kernels().smooth_expand(np.ascontiguousarray(lvl), dst, *kernels, *consts, out)
            return out
        return _expand_into(self._smooth(lvl, dst), self._filters, out)

    def _smooth(self, lvl: np.ndarray, dst: np.ndarray | None = None) -> np.ndarray:
        lvl = np.ascontiguousarray(lvl, dtype=np.float32)
        if not self.presmooth:
            return lvl
        return cv2.GaussianBlur(lvl, (3, 3), 0, dst=dst)

    def prepare(self, levels: list[np.ndarray], slot: int) -> list[np.ndarray]:
        """Polynomial expansions ``(h_i, w_i, 5)`` float32 of every level, in ``slot``'s buffers."""
        sizes = [lvl.shape for lvl in levels]
        if sizes != self._sizes:  # first frame or a new video size: new scratch arrays
            self._sizes = sizes
            self._work = [_Workspace(h, w) for h, w in sizes]
            self._work_side = [_Workspace(h, w) for h, w in sizes] if self.frame_slots > 2 else self._work
            self._bufs = [[np.empty((h, w, 5), np.float32) for h, w in sizes] for _ in range(self.frame_slots + 1)]
            self._ahead_imgs = [np.empty((h, w), np.float32) for h, w in sizes] if self.frame_slots > 2 else []
        works = self._work_side if slot == self.frame_slots else self._work
        return [self._smooth_expand(lvl, work.img, buf) for lvl, work, buf in zip(levels, works, self._bufs[slot])]

    def prepare_ahead(self, pyramid: list[np.ndarray], slot: int):
        """:meth:`~idtfv.idt.flow.pyramid.PyramidFlow.prepare_ahead` with presmoothing scratch of its own (the
        frame-after-frame :meth:`prepare` may run meanwhile on the other thread). Only after :meth:`look_ahead` and
        the first frame (which makes the buffers)."""
        levels = self._check(pyramid)
        if not self._ahead_imgs or [lvl.shape for lvl in levels] != self._sizes or not 0 <= slot < self.frame_slots:
            raise ParameterError(f"FarnebackPyramidFlow.prepare_ahead: needs look_ahead() and a first frame of this "
                                 f"size, and a frame slot 0..{self.frame_slots - 1}; got slot {slot} for levels "
                                 f"{[lvl.shape for lvl in levels]} (first frame's: {self._sizes})")
        return slot, [self._smooth_expand(lvl, img, buf)
                      for lvl, img, buf in zip(levels, self._ahead_imgs, self._bufs[slot])]

    def flow_from_previous(self, pyramid: list[np.ndarray], *, source=None) -> list[np.ndarray]:
        source = self._side_source(source, "flow_from_previous")
        return self._solve(source, self.prepare(self._check(pyramid), self.frame_slots), self._work_side)

    flow_from_previous.__doc__ = PyramidFlow.flow_from_previous.__doc__

    def refine_from_previous(self, pyramid: list[np.ndarray], priors: list[np.ndarray], *,
                             iterations: int = 1, source=None) -> list[np.ndarray]:
        """Flows from frame t-1 to ``pyramid`` (frame t warped by :math:`H^{-1}`), each level refined on its own
        from ``priors`` instead of coarse to fine from zero (the extractor's ``warp_flow="refine"``).

        The prior of level i is a good guess of its flow (the camera-compensated flow derived from the plain
        one, :func:`idtfv.idt.camera.compensate_flow`), so ``iterations`` (default 1) rounds of (update, window
        sum, solve) replace the full coarse-to-fine solve; then the same median filter. The expansions of frame
        t-1 (or ``source``) and the state are those of :meth:`flow_from_previous`.

        Parameters
        ----------
        pyramid : list of (h_i, w_i) arrays
            The warped frame's pyramid, finest first (the sizes of the frames before).
        priors : list of (h_i, w_i, 2) float32
            Each level's starting flow.
        iterations : int
            Rounds per level (>= 1).
        source : object or None
            Frame t-1 as :meth:`step` returned it with frame t's flows (None: the last call's).

        Returns
        -------
        list of (h_i, w_i, 2) float32
        """
        source = self._side_source(source, "refine_from_previous")
        if not isinstance(iterations, (int, np.integer)) or iterations < 1:
            raise ParameterError(f"FarnebackPyramidFlow.refine_from_previous: iterations must be an integer >= 1, "
                                 f"got {iterations!r}")
        levels = self._check(pyramid)
        shapes = [(lvl.shape[0], lvl.shape[1], 2) for lvl in levels]
        if len(priors) != len(levels) or any(np.shape(p) != s for p, s in zip(priors, shapes)):
            raise ParameterError(f"FarnebackPyramidFlow.refine_from_previous: priors must be one (h, w, 2) flow per "
                                 f"level, shapes {shapes}; got {[np.shape(p) for p in priors]}")
        cur = self.prepare(levels, self.frame_slots)
        out = []
        for s, (r0, r1, prior) in enumerate(zip(source, cur, priors)):  # levels are independent
            work = self._work_side[s]
            work.init[:] = np.asarray(prior, np.float32).transpose(2, 0, 1)
            flow = _level(r0, r1, work.init, self.winsize, int(iterations), self.window, work, self._window)
            out.append(_median(flow, self.median, work)[1])
        return out

    def solve(self, prev: list[np.ndarray], cur: list[np.ndarray]) -> list[np.ndarray]:
        """Flows ``(h_i, w_i, 2)`` float32 between two frames' expansions, coarse to fine."""
        return self._solve(prev, cur, self._work)

    def _solve(self, prev: list[np.ndarray], cur: list[np.ndarray], works: list[_Workspace]) -> list[np.ndarray]:
        outputs = {}
        # the 5x5 median (the extractor's): each level's kernels in one call (_level_nb.level_flow, the same numbers),
        # the prior's upscaling and rescaling included; else kernel by kernel
        one_call = self.median == 5

        def level(s, prior):  # refine, then filter: the filtered flow is the next level's prior and the output
            work = works[s]
            if one_call:  # the prior: the coarser level's filtered flow, resized and rescaled in the kernel
                nb = _kernels()
                init = work.init
                if prior is None:  # the coarsest level: from zero flow
                    init = work.flow
                    init.fill(0.0)
                outputs[s] = np.empty(cur[s].shape[:2] + (2,), np.float32)
                _level_kernels().level_flow(prev[s], cur[s], prior, init, work.m, self._window, nb.DET_EPS,
                                            work.flow, nb.BORDER_WEIGHTS, self.iterations, work.med, outputs[s])
                return work.med
            init = None
            if prior is not None:  # upscale()'s resized prior, scaled here by the size ratios
                init, ratio_x, ratio_y = prior
                init[0] *= np.float32(ratio_x)
                init[1] *= np.float32(ratio_y)
            flow = _level(prev[s], cur[s], init, self.winsize, self.iterations, self.window, work, self._window)
            filtered, outputs[s] = _median(flow, self.median, work)
            return filtered

        def upscale(coarser, s):  # resized to level s into its workspace; level() scales it by the size ratios
            if one_call:  # (in level_flow)
                return coarser
            work = works[s]
            h, w = cur[s].shape[:2]
            h0, w0 = coarser.shape[1:]
            for c in range(2):
                cv2.resize(coarser[c], (w, h), dst=work.init[c], interpolation=cv2.INTER_LINEAR)
            return work.init, w / w0, h / h0

        coarse_to_fine_levels(len(cur), level, upscale)
        return [outputs[s] for s in range(len(cur))]  # (h, w, 2), fresh arrays (the planes are scratch)


# ------------------------------------------------------------------------------------- OpenCV: the pyramid flow
def farneback_levels(gray: np.ndarray, sizes: list[tuple[int, int]], factors: list[float]) -> list[np.ndarray]:
    r"""The images OpenCV's Farnebäck works on at each level, as the reference builds them.

    Level 0 is the frame; level i is the *frame* smoothed by a Gaussian of
    :math:`\sigma_i = (s_i - 1) / 2` (kernel ``max(3, round(5 sigma) | 1)``) and resized bilinearly to
    ``sizes[i]`` (the anti-aliasing of OpenCV's own Farnebäck pyramid), not the iterated grey pyramid.
    """
    out = [gray]
    for (w, h), s in zip(sizes[1:], factors[1:]):
        sigma = (s - 1.0) * 0.5
        k = max(3, int(round(sigma * 5)) | 1)
        out.append(cv2.resize(cv2.GaussianBlur(gray, (k, k), sigma, sigma), (w, h), interpolation=cv2.INTER_LINEAR))
    return out


def _upsample(flow: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Flow of a coarser level brought to ``size = (w, h)``: bilinear resize, vectors scaled by the size ratio."""
    h0, w0 = flow.shape[:2]
    w, h = size
    up = cv2.resize(flow, (w, h), interpolation=cv2.INTER_LINEAR)
    up[..., 0] *= w / w0
    up[..., 1] *= h / h0
    return up


class OpenCVFarnebackPyramidFlow(PyramidFlow):
    """Farnebäck flow on each level, coarse to fine, with OpenCV (both expansions recomputed on every call).

    Each level starts from the next-coarser level's unfiltered flow; the median-filtered flows are returned. The
    levels OpenCV works on are :func:`farneback_levels` of the frame (``antialias=True``, ``scale_factor`` the
    pyramid's ratio) or the grey pyramid itself. Options as :class:`FarnebackPyramidFlow`.
    """

    name = "OpenCVFarnebackPyramidFlow"

    def __init__(self, *, poly_n: int = 7, poly_sigma: float = 1.5, winsize: int = 10, iterations: int = 2,
                 median: int = 5, window: str = "gaussian", scale_factor: float = float(np.sqrt(2.0)),
                 antialias: bool = True):
        if window not in WINDOWS:
            raise ParameterError(f"OpenCVFarnebackPyramidFlow: window must be one of {WINDOWS}, got {window!r}")
        self.poly_n, self.poly_sigma = poly_n, poly_sigma
        self.winsize, self.iterations, self.median, self.window = winsize, iterations, median, window
        self.scale_factor = scale_factor
        self.antialias = antialias
        super().__init__()

    def look_ahead(self, frames: int = 1) -> bool:
        """True: the levels are prepared into fresh arrays and OpenCV's calls keep no state, so a side solve may
        run beside the next frame's (see :class:`~idtfv.idt.flow.pyramid.PyramidFlow`)."""
        return True

    def prepare(self, levels: list[np.ndarray], slot: int) -> list[np.ndarray]:
        if not self.antialias or len(levels) == 1:
            return levels
        sizes = [(lvl.shape[1], lvl.shape[0]) for lvl in levels]
        factors = [self.scale_factor ** i for i in range(len(levels))]
        return farneback_levels(levels[0], sizes, factors)

    def solve(self, prev: list[np.ndarray], cur: list[np.ndarray]) -> list[np.ndarray]:
        flags = cv2.OPTFLOW_USE_INITIAL_FLOW
        if self.window == "gaussian":
            flags |= cv2.OPTFLOW_FARNEBACK_GAUSSIAN

        def level(s, prior):
            h, w = cur[s].shape[:2]
            f = np.zeros((h, w, 2), np.float32) if prior is None else prior
            return cv2.calcOpticalFlowFarneback(prev[s], cur[s], f, 0.5, 0, self.winsize, self.iterations,
                                                self.poly_n, self.poly_sigma, flags)

        def upscale(coarser, s):
            return _upsample(coarser, (cur[s].shape[1], cur[s].shape[0]))

        return [median_filter_flow(f, self.median) for f in coarse_to_fine_levels(len(cur), level, upscale)]
