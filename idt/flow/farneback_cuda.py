r"""The extractor's per-frame flow on a CUDA device: :class:`CudaFarnebackPyramidFlow` and
:func:`build_pyramid_cuda`, the device twins of :class:`idtfv.idt.flow.FarnebackPyramidFlow` and
:func:`idtfv.idt.flow.build_pyramid`.

Same algorithm, options and state as the CPU class (this is a subclass: the options are validated by it): each
frame is presmoothed (3x3 Gaussian) and expanded once per level, the expansions of frame t are kept for the next
frame pair and for :meth:`~CudaFarnebackPyramidFlow.flow_from_previous` /
:meth:`~CudaFarnebackPyramidFlow.refine_from_previous`; coarse to fine, each level refined ``iterations`` times
(normal equations, window sum, solve) from the next-coarser level's median-filtered flow, resized bilinearly and
scaled by the size ratio; every level's flow median-filtered. Every step is a kernel of
:mod:`idtfv.idt.flow._farneback_cuda`; the scratch arrays of each level live on the device and are reused from
frame to frame.

Arrays are CuPy arrays: pyramid levels ``(h_i, w_i)`` uint8 (as :func:`build_pyramid_cuda` makes them from a
uint8 frame, and as the CPU pyramid is) or float32; flows ``(h_i, w_i, 2)`` float32, fresh arrays on every call.
NumPy inputs are uploaded. Importing this module imports neither CuPy nor the kernels (they load on first use),
so it can be named on a machine without a GPU.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from idtfv.errors import ParameterError
from idtfv.idt.flow.farneback import FarnebackPyramidFlow
from idtfv.idt.flow.pyramid import PyramidFlow

__all__ = ["CudaFarnebackPyramidFlow", "build_pyramid_cuda"]


def _k():
    """The kernel module (imports CuPy and compiles the kernels on first use)."""
    from idtfv.idt.flow import _farneback_cuda

    return _farneback_cuda


def _cp():
    import cupy

    return cupy


def _scale(src: int, dst: int) -> np.float64:
    """OpenCV's ``scale = 1 / inv_scale`` with ``inv_scale = dst / src`` (both in double): its uint8 resize."""
    return np.float64(1.0 / (dst / src))


def _ipp_scale(src: int, dst: int) -> np.float64:
    """Intel IPP's ``src / dst`` (in double; an ulp off :func:`_scale` for some sizes): the float32 resize."""
    return np.float64(src / dst)


def _resize(src, out, factor: float | None = None) -> None:
    """``cv2.resize(src, out's size, INTER_LINEAR)`` on the device into ``out`` (uint8 -> uint8 or float32 ->
    float32; for float32 the result is multiplied by ``factor``, default 1)."""
    k = _k()
    sh, sw = src.shape
    dh, dw = out.shape
    args = (src, np.int32(sh), np.int32(sw), out, np.int32(dh), np.int32(dw))
    if src.dtype == np.uint8:
        k.launch("resize_u8", dh * dw, *args, _scale(sw, dw), _scale(sh, dh))
    else:
        k.launch("resize_f32", dh * dw, *args, _ipp_scale(sw, dw), _ipp_scale(sh, dh),
                 np.float32(1.0 if factor is None else factor))


def build_pyramid_cuda(gray, sizes: Sequence[tuple[int, int]]) -> list:
    """The device twin of :func:`idtfv.idt.flow.build_pyramid`: ``gray`` itself, then each level resized from
    the one before (OpenCV's ``INTER_LINEAR``).

    Parameters
    ----------
    gray : (h, w) uint8 or float32 CuPy array (NumPy is uploaded)
        Level 0; ``sizes[0]`` must be its own ``(w, h)``.
    sizes : sequence of (w_i, h_i)
        Every level's size.

    Returns
    -------
    list of ``len(sizes)`` CuPy arrays ``(h_i, w_i)``, ``gray``'s dtype
        uint8 levels equal ``build_pyramid``'s bit for bit (OpenCV's fixed-point arithmetic); float32 levels
        agree to float rounding (``docs/GPU.md``).
    """
    cp = _cp()
    g = cp.ascontiguousarray(cp.asarray(gray))
    if g.ndim != 2 or g.dtype not in (np.uint8, np.float32):
        raise ParameterError(f"build_pyramid_cuda: gray must be a 2-D uint8 or float32 image, got shape {g.shape} "
                             f"dtype {g.dtype}")
    if len(sizes) == 0 or tuple(sizes[0]) != (g.shape[1], g.shape[0]):
        raise ParameterError(f"build_pyramid_cuda: sizes[0] must be the frame's own (w, h) = "
                             f"{(g.shape[1], g.shape[0])}, got {list(sizes[:1])}")
    levels = [g]
    for w, h in sizes[1:]:
        if min(w, h) < 1:
            raise ParameterError(f"build_pyramid_cuda: level sizes must be at least 1x1, got {(w, h)}")
        out = cp.empty((int(h), int(w)), g.dtype)
        _resize(levels[-1], out)
        levels.append(out)
    return levels


class _Upscale:
    """A prior that is the next-coarser level's planar flow ``(2, h0, w0)``, to be resized to the level and
    multiplied by the size ratios (``update_matrices`` does it, instead of two ``resize_f32`` launches)."""

    def __init__(self, coarser):
        self.coarser = coarser


def _prior_args(prior, work) -> tuple:
    """``update_matrices``' prior arguments ``(prior, kind, ph, pw, scale_x, scale_y, ratio_x, ratio_y)`` for a
    prior that is None (zero flow), an ``(h, w, 2)`` float32 device flow, or an :class:`_Upscale` (the same scales,
    OpenCV's in double, and float32 ratios ``w / w0``, ``h / h0`` as :func:`_resize` and the coarse-to-fine loop
    used)."""
    if prior is None:
        return (work.flow, np.int32(0), np.int32(0), np.int32(0), np.float64(0), np.float64(0), np.float32(0),
                np.float32(0))
    if isinstance(prior, _Upscale):
        src = prior.coarser
        h, w = work.h, work.w
        h0, w0 = src.shape[1:]
        return (src, np.int32(2), np.int32(h0), np.int32(w0), _ipp_scale(w0, w), _ipp_scale(h0, h), np.float32(w / w0),
                np.float32(h / h0))
    return (prior, np.int32(1), np.int32(0), np.int32(0), np.float64(0), np.float64(0), np.float32(0),
            np.float32(0))


class _DeviceWorkspace:
    """Scratch arrays of one level size on the device, reused across frames."""

    def __init__(self, cp, h: int, w: int):
        self.h, self.w = h, w
        self.gray = cp.empty((h, w), cp.float32)  # the level as float32 (no presmoothing)
        self.img = cp.empty((h, w), cp.float32)  # the presmoothed level
        self.v = cp.empty((3, h, w), cp.float32)  # vertical moments of the expansion
        self.m = cp.empty((h, w, 5), cp.float32)
        self.mt = cp.empty((h, w, 5), cp.float32)  # window sum, row pass
        self.mb = cp.empty((h, w, 5), cp.float32)
        self.flow = cp.empty((2, h, w), cp.float32)  # planar x, y
        self.med = cp.empty((2, h, w), cp.float32)


class CudaFarnebackPyramidFlow(FarnebackPyramidFlow):
    """:class:`~idtfv.idt.flow.FarnebackPyramidFlow` on the current CUDA device (CuPy arrays in and out).

    Options, validation, state and the three entry points (``__call__``, :meth:`flow_from_previous`,
    :meth:`refine_from_previous`) are the CPU class's; levels are ``(h_i, w_i)`` uint8 or float32 CuPy arrays,
    flows ``(h_i, w_i, 2)`` float32 CuPy arrays. On the same pyramid the flows agree with the CPU class's to
    float rounding (the per-pixel terms and the float resize round differently in the last bit; measured figures
    in ``docs/GPU.md``).
    """

    name = "CudaFarnebackPyramidFlow"

    def __init__(self, **options):
        super().__init__(**options)
        self._dev = None  # device copies of the constant arrays, made on first use

    # -------------------------------------------------------------------------------------------- helpers
    def _constants(self):
        if self._dev is None:
            cp = _cp()
            from idtfv.idt.flow._farneback_nb import BORDER_WEIGHTS, DET_EPS

            kernels, consts = self._filters
            self._dev = {
                "g": [cp.asarray(np.ascontiguousarray(k, np.float32)) for k in kernels],
                "consts": [np.float32(c) for c in consts],
                "window": cp.asarray(np.ascontiguousarray(self._window, np.float32)),
                "border": cp.asarray(np.ascontiguousarray(BORDER_WEIGHTS, np.float32)),
                "nborder": np.int32(len(BORDER_WEIGHTS)),
                "det_eps": np.float64(DET_EPS),
            }
        return self._dev

    def _check(self, pyramid) -> list:
        """The levels as C-contiguous device arrays (NumPy uploaded), checked as the CPU class checks them."""
        cp = _cp()
        who = type(self).__name__
        if len(pyramid) == 0:
            raise ParameterError(f"{who}: the pyramid is empty; pass a list of (h, w) grey levels, finest first")
        levels = []
        for i, lvl in enumerate(pyramid):
            lvl = cp.ascontiguousarray(cp.asarray(lvl))
            if lvl.ndim != 2 or min(lvl.shape) < 2:
                raise ParameterError(f"{who}: pyramid level {i} must be a 2-D grey image of at least 2x2 pixels, "
                                     f"got shape {lvl.shape}")
            if lvl.dtype not in (np.uint8, np.float32):
                raise ParameterError(f"{who}: pyramid level {i} must be uint8 or float32, got {lvl.dtype}; "
                                     "convert with .astype(cupy.float32)")
            levels.append(lvl)
        shapes = [tuple(lvl.shape) for lvl in levels]
        if self._shapes is not None and shapes != [tuple(s) for s in self._shapes]:
            raise ParameterError(f"{who}: the pyramid's level sizes {shapes} differ from the previous frame's "
                                 f"{self._shapes}; call reset() when the video changes")
        return levels

    def _smooth_expand(self, lvl, work: _DeviceWorkspace, out) -> None:
        k, c = _k(), self._constants()
        h, w = work.h, work.w
        n = h * w
        hw = (np.int32(h), np.int32(w))
        if self.presmooth:  # one launch, reading the uint8 level itself
            k.launch("gauss3", n, lvl, np.int32(lvl.dtype == np.uint8), work.img, *hw)
            src = work.img
        elif lvl.dtype == np.uint8:
            k.launch("u8_to_f32", n, lvl, work.gray, np.int64(n))
            src = work.gray
        else:
            src = lvl
        g = c["g"]
        poly_n = np.int32(len(self._filters[0][0]) - 1)
        k.launch("poly_rows", n, src, *hw, *g, poly_n, work.v)
        k.launch("poly_cols", n, work.v, *hw, *g, poly_n, *c["consts"], out)

    def _level(self, r0, r1, prior, iterations: int, work: _DeviceWorkspace):
        """Refine the prior flow (see :func:`_prior_args`; None: zero flow); returns ``work.flow`` (2, h, w)."""
        k, c = _k(), self._constants()
        h, w = work.h, work.w
        n = h * w
        hw = (np.int32(h), np.int32(w))
        k.launch("update_matrices", n, r0, r1, *_prior_args(prior, work), c["border"], c["nborder"], *hw, work.m)
        r = np.int32(len(self._window) // 2)
        for i in range(iterations):
            k.launch("window_rows", 5 * n, work.m, work.mt, *hw, np.int32(5), c["window"], r)
            k.launch("window_cols", 5 * n, work.mt, work.mb, *hw, np.int32(5), c["window"], r)
            if i < iterations - 1:
                k.launch("solve_and_update", n, work.mb, c["det_eps"], r0, r1, c["border"], c["nborder"], *hw,
                         work.flow, work.m)
            else:
                k.launch("solve_flow", n, work.mb, c["det_eps"], *hw, work.flow)
        return work.flow

    def _median(self, flow, work: _DeviceWorkspace):
        """Planar ``flow`` median-filtered per channel (``cv2.medianBlur``): ``(planar, merged)``, the planar
        result in ``work.med`` (or ``flow`` itself without a median filter) and a fresh ``(h, w, 2)`` copy, in one
        launch."""
        k = _k()
        h, w = work.h, work.w
        out = _cp().empty((h, w, 2), np.float32)
        if self.median <= 1:
            k.launch("merge2", h * w, flow, np.int64(h * w), out)
            return flow, out
        k.launch("median2", h * w, flow, np.int32(h), np.int32(w), np.int32(self.median), work.med, out)
        return work.med, out

    # ----------------------------------------------------------------------------------- PyramidFlow API
    def look_ahead(self, frames: int = 1) -> bool:
        """Not on the device (the extractor keeps its flow calls in order there): False, nothing changes."""
        return False

    def flow_from_previous(self, pyramid: list, *, source=None) -> list:
        return PyramidFlow.flow_from_previous(self, pyramid, source=source)

    def prepare(self, levels: list, slot: int) -> list:
        """Polynomial expansions ``(h_i, w_i, 5)`` float32 of every level, in ``slot``'s device buffers."""
        cp = _cp()
        sizes = [tuple(lvl.shape) for lvl in levels]
        if sizes != self._sizes:  # first frame or a new video size: new scratch arrays
            self._sizes = sizes
            self._work = [_DeviceWorkspace(cp, h, w) for h, w in sizes]
            self._bufs = [[cp.empty((h, w, 5), cp.float32) for h, w in sizes] for _ in range(3)]
        for lvl, work, buf in zip(levels, self._work, self._bufs[slot]):
            self._smooth_expand(lvl, work, buf)
        return self._bufs[slot]

    def solve(self, prev: list, cur: list) -> list:
        """Flows ``(h_i, w_i, 2)`` float32 (CuPy) between two frames' expansions, coarse to fine."""
        from idtfv.idt.flow.pyramid import coarse_to_fine_levels

        merged = [None] * len(cur)

        def level(s, prior):
            work = self._work[s]
            planar, merged[s] = self._median(self._level(prev[s], cur[s], prior, self.iterations, work), work)
            return planar

        def upscale(coarser, s):  # resized to level s and multiplied by the size ratio: in update_matrices
            return _Upscale(coarser)

        coarse_to_fine_levels(len(cur), level, upscale)
        return merged

    def refine_from_previous(self, pyramid: list, priors: list, *, iterations: int = 1, source=None) -> list:
        """Flows from frame t-1 (or ``source``, from :meth:`step`) to ``pyramid``, each level refined on its own
        from ``priors`` (``(h_i, w_i, 2)`` float32, CuPy or NumPy); as
        :meth:`FarnebackPyramidFlow.refine_from_previous`."""
        source = self._side_source(source, "refine_from_previous")
        if not isinstance(iterations, (int, np.integer)) or iterations < 1:
            raise ParameterError(f"{type(self).__name__}.refine_from_previous: iterations must be an integer >= 1, "
                                 f"got {iterations!r}")
        cp = _cp()
        levels = self._check(pyramid)
        shapes = [(lvl.shape[0], lvl.shape[1], 2) for lvl in levels]
        if len(priors) != len(levels) or any(tuple(p.shape) != s for p, s in zip(priors, shapes)):
            raise ParameterError(f"{type(self).__name__}.refine_from_previous: priors must be one (h, w, 2) flow "
                                 f"per level, shapes {shapes}; got {[tuple(p.shape) for p in priors]}")
        cur = self.prepare(levels, 2)
        out = []
        for s, (r0, r1, prior) in enumerate(zip(source, cur, priors)):  # levels are independent
            work = self._work[s]
            p = cp.ascontiguousarray(cp.asarray(prior, dtype=cp.float32))  # (h, w, 2): read as such
            flow = self._level(r0, r1, p, int(iterations), work)
            out.append(self._median(flow, work)[1])
        return out
