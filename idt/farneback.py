r"""Farnebäck dense optical flow over the iDT scale pyramid, reusing each frame's polynomial expansions.

Farnebäck, "Two-frame motion estimation based on polynomial expansion" (SCIA 2003); the same algorithm as
OpenCV's ``calcOpticalFlowFarneback`` (see :mod:`idtfv.idt._farneback_nb` for the equations). OpenCV expands both
frames on every call; here each frame is expanded once per pyramid level and the expansion is kept for the next
frame pair, which halves the expansion work (and more when the camera-compensated flow is computed from the same
previous frame, :meth:`FarnebackPyramidFlow.flow_from_previous`).

Coarse to fine over the pyramid (as LEAR's DenseTrackStab does): the coarsest level starts from zero flow; level
i starts from level i+1's median-filtered flow, bilinearly resized and scaled by the level's size ratio
(:math:`\approx\sqrt 2`); on each level ``iterations`` rounds of (per-pixel normal equations, window sum, 2x2
solve). Each level's result is median-filtered (``cv2.medianBlur`` 5x5 per channel). Each level is smoothed
with a 3x3 Gaussian (sigma 0.8) before its expansion, as OpenCV does to the level it works on; so with the same
window a level's flow equals OpenCV's ``calcOpticalFlowFarneback(..., levels=0)`` on that level to float rounding
away from a 12-pixel border (tested). Window: Gaussian (LEAR's code, OpenCV's ``OPTFLOW_FARNEBACK_GAUSSIAN``) or box
(OpenCV's default flags), both over offsets -winsize//2..winsize//2.

The expansion is one fused Numba pass (separable moments and coefficients); the window sums use OpenCV's SIMD
``sepFilter2D``; the
per-pixel steps are Numba kernels.
"""

from __future__ import annotations

import cv2
import numpy as np

from idtfv.errors import ParameterError
from idtfv.idt import _farneback_nb as _nb

__all__ = ["poly_expansion", "farneback_level", "FarnebackPyramidFlow"]

WINDOWS = ("gaussian", "box")


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
        self.mb = np.empty((h, w, 5), np.float32)
        self.flow = np.empty((2, h, w), np.float32)  # planar x, y
        self.init = np.empty((2, h, w), np.float32)
        self.med = np.empty((2, h, w), np.float32)


def _expand_into(img: np.ndarray, filters, out: np.ndarray) -> np.ndarray:
    kernels, consts = filters
    _nb.poly_expand(img, *kernels, *consts, out)
    return out


def _window_kernel(winsize: int, window: str) -> np.ndarray:
    """1-D window of the displacement estimation; both span offsets -m..m, m = winsize // 2 (as OpenCV)."""
    m = winsize // 2
    if window == "box":
        return np.full(2 * m + 1, 1.0 / winsize, np.float32)  # OpenCV scales its box sums by 1 / winsize^2
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


def _level(r0, r1, init, winsize, iterations, window, work: _Workspace) -> np.ndarray:
    """Refine the planar prior ``init`` (2, h, w) (zero if None); returns ``work.flow`` (2, h, w)."""
    if init is None:
        init = work.flow
        init.fill(0.0)
    k = _window_kernel(winsize, window)
    m, mb, flow = work.m, work.mb, work.flow
    _nb.update_matrices(r0, r1, init, _nb.BORDER_WEIGHTS, m)
    for i in range(iterations):
        cv2.sepFilter2D(m, -1, k, k, dst=mb, borderType=cv2.BORDER_REPLICATE)
        if i < iterations - 1:
            _nb.solve_and_update(mb, _nb.DET_EPS, r0, r1, _nb.BORDER_WEIGHTS, flow, m)
        else:
            _nb.solve_flow(mb, _nb.DET_EPS, flow)
    return flow


def _median(flow: np.ndarray, ksize: int, work: _Workspace) -> np.ndarray:
    """Planar (2, h, w) ``flow`` median-filtered per channel (``cv2.medianBlur``) into ``work.med``."""
    if ksize <= 1:
        work.med[:] = flow
    else:
        for c in range(2):
            cv2.medianBlur(flow[c], ksize, dst=work.med[c])
    return work.med


class FarnebackPyramidFlow:
    """Dense Farnebäck flow on every pyramid level, coarse to fine, caching the previous frame's expansions.

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

    Call it once per frame with the frame's pyramid (finest level first, each coarser by about sqrt 2); it
    returns the flows from the previous frame to this one (None on the first call) and remembers this frame's
    expansions.
    """

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
        self._prev: list[np.ndarray] | None = None
        self._sizes: list[tuple[int, int]] | None = None
        self._work: list[_Workspace] = []
        # expansion buffers: sets 0 and 1 alternate as previous/current frame, set 2 is for flow_from_previous
        self._bufs: list[list[np.ndarray]] = []
        self._prev_set = 1

    def reset(self) -> None:
        """Forget the previous frame (the next call returns None)."""
        self._prev = None

    def expand(self, pyramid: list[np.ndarray]) -> list[np.ndarray]:
        """Polynomial expansions ``(h_i, w_i, 5)`` float32 of every level of a pyramid (new arrays)."""
        levels = self._check(pyramid)
        return [poly_expansion(self._smooth(lvl), _filters=self._filters) for lvl in levels]

    def _smooth(self, lvl: np.ndarray, dst: np.ndarray | None = None) -> np.ndarray:
        lvl = np.ascontiguousarray(lvl, dtype=np.float32)
        if not self.presmooth:
            return lvl
        return cv2.GaussianBlur(lvl, (3, 3), 0, dst=dst)

    def __call__(self, pyramid: list[np.ndarray]) -> list[np.ndarray] | None:
        """Flows ``(h_i, w_i, 2)`` float32 from the previous call's frame to this pyramid's (None on the first call)."""
        levels = self._check(pyramid)
        cur_set = 1 - self._prev_set
        cur = self._expand_levels(levels, cur_set)
        out = None if self._prev is None else self._solve(self._prev, cur)
        self._prev, self._prev_set = cur, cur_set
        return out

    def flow_from_previous(self, pyramid: list[np.ndarray]) -> list[np.ndarray]:
        """Flows from the stored previous frame to ``pyramid`` (e.g. the camera-compensated frame), keeping the state."""
        if self._prev is None:
            raise ParameterError("FarnebackPyramidFlow.flow_from_previous needs a previous frame; "
                                 "call the object on a pyramid first")
        levels = self._check(pyramid)
        return self._solve(self._prev, self._expand_levels(levels, 2))

    def _expand_levels(self, levels: list[np.ndarray], buf_set: int) -> list[np.ndarray]:
        sizes = [lvl.shape for lvl in levels]
        if sizes != self._sizes:  # first frame or a new video size: new scratch arrays
            self._sizes = sizes
            self._work = [_Workspace(h, w) for h, w in sizes]
            self._bufs = [[np.empty((h, w, 5), np.float32) for h, w in sizes] for _ in range(3)]
        return [_expand_into(self._smooth(lvl, work.img), self._filters, buf)
                for lvl, work, buf in zip(levels, self._work, self._bufs[buf_set])]

    def _check(self, pyramid):
        if len(pyramid) == 0:
            raise ParameterError("FarnebackPyramidFlow: the pyramid is empty; pass a list of (h, w) grey levels")
        levels = []
        for i, lvl in enumerate(pyramid):
            lvl = np.asarray(lvl)
            if lvl.ndim != 2 or min(lvl.shape) < 2:
                raise ParameterError(f"FarnebackPyramidFlow: pyramid level {i} must be a 2-D grey image of at least "
                                     f"2x2 pixels, got shape {lvl.shape}")
            levels.append(lvl)
        if self._prev is not None and [r.shape[:2] for r in self._prev] != [lvl.shape for lvl in levels]:
            raise ParameterError(
                "FarnebackPyramidFlow: the pyramid's level sizes "
                f"{[lvl.shape for lvl in levels]} differ from the previous frame's "
                f"{[r.shape[:2] for r in self._prev]}; call reset() when the video changes")
        return levels

    def _solve(self, prev: list[np.ndarray], cur: list[np.ndarray]) -> list[np.ndarray]:
        flows: list[np.ndarray] = [None] * len(cur)  # type: ignore[list-item]
        coarser = None
        for i in range(len(cur) - 1, -1, -1):
            work = self._work[i]
            init = None
            if coarser is not None:  # coarse to fine: the next-coarser level's filtered flow, resized and rescaled
                h, w = cur[i].shape[:2]
                h0, w0 = coarser.shape[1:]
                for c, ratio in ((0, w / w0), (1, h / h0)):
                    cv2.resize(coarser[c], (w, h), dst=work.init[c], interpolation=cv2.INTER_LINEAR)
                    work.init[c] *= np.float32(ratio)
                init = work.init
            f = _level(prev[i], cur[i], init, self.winsize, self.iterations, self.window, work)
            coarser = _median(f, self.median, work)
            flows[i] = np.stack((coarser[0], coarser[1]), axis=-1)
        return flows
