r"""Dense optical flow on every level of the scale pyramid, median-filtered as the reference does.

Farnebäck (the reference): coarse-to-fine over the iDT pyramid itself: on the coarsest level the flow starts at
zero; on level :math:`i` it starts from level :math:`i+1`'s flow resized (bilinear) and multiplied by the size
ratio, and OpenCV's ``calcOpticalFlowFarneback`` refines it on that level alone (``levels=0``,
``OPTFLOW_USE_INITIAL_FLOW``; poly_n 7, poly_sigma 1.5, window 10, 2 iterations). Every level's result is then
median-filtered 5x5 per channel (``cv2.medianBlur``), and that filtered field is what tracking uses.

DIS (fast preset): OpenCV's ``DISOpticalFlow`` on level 0 (it has its own internal pyramid); coarser levels get
that flow area-resized and divided by the scale factor. TV-L1: :func:`idtfv.idt.flow.estimate_flow` per level.

Every class is called once per frame with the new frame's pyramid and keeps the previous one:
``flows = fp(pyramid)`` returns ``None`` on the first frame, then the flows from the previous frame to this one.
``fp.flow_from_previous(pyramid)`` computes the flows from the last call's source frame (t-1) to another pyramid
(frame t compensated for the camera motion) without changing the state.
"""

from __future__ import annotations

import cv2
import numpy as np

from idtfv.errors import ParameterError

__all__ = ["median_filter_flow", "farneback_levels", "OpenCVFarnebackPyramidFlow", "DISPyramidFlow", "TVL1PyramidFlow",
           "make_pyramid_flow"]


def median_filter_flow(flow: np.ndarray, ksize: int = 5) -> np.ndarray:
    """Median filter each channel of an (h, w, 2) float32 flow (``cv2.medianBlur``; ksize 3 or 5 for float)."""
    if ksize <= 1:
        return flow
    out = np.empty_like(flow)
    out[..., 0] = cv2.medianBlur(np.ascontiguousarray(flow[..., 0]), ksize)
    out[..., 1] = cv2.medianBlur(np.ascontiguousarray(flow[..., 1]), ksize)
    return out


def _upsample(flow: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Flow of a coarser level brought to ``size = (w, h)``: bilinear resize, vectors scaled by the size ratio."""
    h0, w0 = flow.shape[:2]
    w, h = size
    up = cv2.resize(flow, (w, h), interpolation=cv2.INTER_LINEAR)
    up[..., 0] *= w / w0
    up[..., 1] *= h / h0
    return up


class _PyramidFlowBase:
    def __init__(self, params):
        self.params = params
        self._prev = None  # the last call's pyramid (frame t)
        self._source = None  # the pyramid the last call's flows start from (frame t-1)

    def _prepare(self, pyramid: list[np.ndarray]) -> list[np.ndarray]:
        """The images the solver works on (default: the pyramid itself)."""
        return pyramid

    def __call__(self, pyramid: list[np.ndarray]) -> list[np.ndarray] | None:
        """Flows from the previous call's pyramid to ``pyramid`` (None on the first call); remembers ``pyramid``."""
        cur = self._prepare(pyramid)
        out = None if self._prev is None else self._solve(self._prev, cur)
        self._source, self._prev = self._prev, cur
        return out

    def flow_from_previous(self, pyramid: list[np.ndarray]) -> list[np.ndarray]:
        """Flows from the frame the last call's flows started from (t-1) to ``pyramid`` (e.g. frame t warped by
        :math:`H^{-1}`), without changing the state."""
        if self._source is None:
            raise RuntimeError("flow_from_previous needs two frames; call the object on two pyramids first")
        return self._solve(self._source, self._prepare(pyramid))

    def _solve(self, prev, cur):  # pragma: no cover - abstract
        raise NotImplementedError


def farneback_levels(gray: np.ndarray, sizes: list[tuple[int, int]], factors: list[float]) -> list[np.ndarray]:
    r"""The images Farnebäck works on at each level, as the reference builds them.

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


class OpenCVFarnebackPyramidFlow(_PyramidFlowBase):
    """Farnebäck flow on each level, coarse to fine, with OpenCV (recomputes both expansions each call).

    The per-level images come from :func:`farneback_levels` (``antialias=True``) or are the grey pyramid itself.
    """

    def __init__(self, params, *, antialias: bool = True):
        super().__init__(params)
        self.antialias = antialias

    def _prepare(self, pyramid):
        if not self.antialias or len(pyramid) == 1:
            return pyramid
        sizes = [(lvl.shape[1], lvl.shape[0]) for lvl in pyramid]
        factors = [self.params.scale_factor ** i for i in range(len(pyramid))]
        return farneback_levels(pyramid[0], sizes, factors)

    def _solve(self, prev, cur):
        p = self.params
        flows: list[np.ndarray] = [None] * len(cur)
        init = None
        for i in range(len(cur) - 1, -1, -1):
            h, w = cur[i].shape[:2]
            if init is None:
                f = np.zeros((h, w, 2), np.float32)
            else:
                f = _upsample(init, (w, h))
            flags = cv2.OPTFLOW_USE_INITIAL_FLOW
            if p.farneback_window == "gaussian":
                flags |= cv2.OPTFLOW_FARNEBACK_GAUSSIAN
            f = cv2.calcOpticalFlowFarneback(prev[i], cur[i], f, 0.5, 0, p.farneback_winsize, p.farneback_iterations,
                                             p.farneback_poly_n, p.farneback_poly_sigma, flags)
            init = f
            flows[i] = median_filter_flow(f, p.median_ksize)
        return flows


class DISPyramidFlow(_PyramidFlowBase):
    """OpenCV DIS flow on level 0, resized to the other levels."""

    def __init__(self, params):
        super().__init__(params)
        self._dis = cv2.DISOpticalFlow_create(int(params.dis_preset))
        self._dis.setFinestScale(int(params.dis_finest_scale))

    def _solve(self, prev, cur):
        if self.params.dis_per_level:
            return [median_filter_flow(self._dis.calc(a, b, None), self.params.median_ksize)
                    for a, b in zip(prev, cur)]
        f0 = self._dis.calc(prev[0], cur[0], None)
        flows = [median_filter_flow(f0, self.params.median_ksize)]
        h0, w0 = f0.shape[:2]
        for lvl in cur[1:]:
            h, w = lvl.shape[:2]
            f = cv2.resize(f0, (w, h), interpolation=cv2.INTER_AREA)
            f[..., 0] *= w / w0
            f[..., 1] *= h / h0
            flows.append(median_filter_flow(f, self.params.median_ksize))
        return flows


class TVL1PyramidFlow(_PyramidFlowBase):
    """TV-L1 flow (:func:`idtfv.idt.flow.estimate_flow`) on each level."""

    def __init__(self, params):
        super().__init__(params)
        try:
            from idtfv.idt.flow import estimate_flow
        except ImportError:
            raise ParameterError("flow='tvl1' needs idtfv.idt.flow.estimate_flow, which is not available in this "
                                 "installation; use flow='farneback' or 'dis'") from None
        self._estimate = estimate_flow

    def _solve(self, prev, cur):
        return [median_filter_flow(np.ascontiguousarray(self._estimate(a, b, method="tvl1"), np.float32),
                                   self.params.median_ksize) for a, b in zip(prev, cur)]


class NumbaFarnebackPyramidFlow(_PyramidFlowBase):
    """Adapter over the project's :class:`idtfv.idt.farneback.FarnebackPyramidFlow` (expansions reused across frames).

    That class alternates two expansion buffers (frames t-1 and t); after the call on frame t the t-1 expansions
    are still intact, so :meth:`flow_from_previous` (flows from t-1 to the camera-compensated frame t) expands only
    the warped frame, in its third buffer. It relies on three of that class's internals (``_check``,
    ``_expand_levels``, ``_solve``); ``tests/test_extract.py`` checks the adapter against the plain call.
    """

    def __init__(self, params, impl_cls):
        super().__init__(params)
        self.impl = impl_cls(poly_n=params.farneback_poly_n, poly_sigma=params.farneback_poly_sigma,
                             winsize=params.farneback_winsize, iterations=params.farneback_iterations,
                             median=params.median_ksize, window=params.farneback_window)
        self._source_exp = None

    def __call__(self, pyramid):
        self._source_exp = self.impl._prev  # expansions of frame t-1 (None on the first frame)
        out = self.impl(pyramid)
        self._source, self._prev = self._prev, pyramid
        return out

    def flow_from_previous(self, pyramid):
        if self._source_exp is None:
            raise RuntimeError("flow_from_previous needs two frames; call the object on two pyramids first")
        levels = self.impl._check(pyramid)
        return self.impl._solve(self._source_exp, self.impl._expand_levels(levels, 2))


def _project_farneback():
    """The project's Numba Farnebäck pyramid flow (reusing expansions), if importable."""
    try:
        from idtfv.idt.farneback import FarnebackPyramidFlow
    except ImportError:
        return None
    return FarnebackPyramidFlow


def make_pyramid_flow(params):
    """The pyramid-flow object for ``params.flow`` (and ``params.farneback_impl``)."""
    if params.flow == "farneback":
        if params.farneback_impl in ("auto", "numba"):
            cls = _project_farneback()
            if cls is not None:
                return NumbaFarnebackPyramidFlow(params, cls)
        if params.farneback_impl == "numba":
            raise ParameterError("farneback_impl='numba' needs idtfv.idt.farneback, which is not importable; "
                                 "use farneback_impl='opencv' or 'auto'")
        return OpenCVFarnebackPyramidFlow(params)
    if params.flow == "dis":
        return DISPyramidFlow(params)
    if params.flow == "tvl1":
        return TVL1PyramidFlow(params)
    raise ParameterError(f"flow: expected farneback, tvl1 or dis, got {params.flow!r}")
