"""The device flow (idt/flow/_farneback_cuda.py kernels, idt/flow/farneback_cuda.py driver) against its CPU twins.

Without a GPU the CUDA C runs on the CPU through ``tests/_cuda_on_cpu.py`` (IEEE float32, no contraction except
the explicit ``fmaf`` calls). Each kernel is checked against the CPU step it mirrors: OpenCV's ``resize``,
``GaussianBlur`` and ``medianBlur`` and the Numba kernels of ``idt/flow/_farneback_nb.py`` (the window kernels
and ``solve_flow`` against the fused ``window_solve`` the CPU extractor runs, bit for bit, and against OpenCV's
``sepFilter2D``, which they match in its vector loops).
Bit for bit where the arithmetic allows it (uint8 resize, presmoothing, median, polynomial expansion, solve,
window sums), to a stated tolerance elsewhere (float resize: OpenCV's own float path rounds its positions
differently; the per-pixel normal-equation terms: LLVM's contraction choices differ in the last bit). The
whole driver is checked against :class:`FarnebackPyramidFlow` on a moving pattern (and vtest, slow). Broken
kernels must fail; the ``gpu`` tests run the same checks under real CuPy.

The bit-for-bit checks of the expansion and the window sums rely on the CPU side using fused multiply-adds
(Numba's ``contract`` and OpenCV's AVX2 dispatch do on an FMA3 machine); elsewhere they fall back to a tolerance.
"""

from __future__ import annotations

import importlib
import shutil
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

import _cuda_on_cpu
from conftest import SHARED
from idtfv.idt.device import cuda_available
from idtfv.idt.flow import _farneback_nb as nb
from idtfv.idt.flow.farneback import FarnebackPyramidFlow, _expansion_filters, _window_kernel
from idtfv.idt.flow.pyramid import build_pyramid
from idtfv.idt.pyramid import pyramid_geometry

KERNELS = "idtfv.idt.flow._farneback_cuda"
DRIVER = "idtfv.idt.flow.farneback_cuda"
needs_gpu = pytest.mark.skipif(not cuda_available(), reason="needs CuPy and a CUDA device")

#: OpenCV (AVX2 dispatch) and Numba (LLVM) fuse multiply-adds here, as the CUDA C does (cv::CPU_AVX2 = 11,
#: cv::CPU_FMA3 = 12; the Python bindings do not name them).
FMA_CPU = bool(cv2.checkHardwareSupport(11) and cv2.checkHardwareSupport(12))

#: Sizes (h, w) of the kernel checks: a pyramid level, odd small ones, the smallest the flow accepts.
SIZES = [(51, 68), (23, 17), (7, 9), (2, 3), (2, 2)]

#: The driver's flows on the moving pattern agree with the CPU class's to this (pixels, every pixel).
FLOW_TOL = 5e-5


@pytest.fixture(scope="session")
def build_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("cuda_on_cpu_farneback")


class _Modules:
    def __init__(self, cp, k, d):
        self.cp, self.k, self.d = cp, k, d


@pytest.fixture
def emulated(build_dir, monkeypatch):
    """The kernels and the driver over the stand-in cupy, forgotten afterwards (``_cuda_on_cpu.stand_in``)."""
    with _cuda_on_cpu.stand_in(build_dir, monkeypatch) as cp:
        cp.uint8 = np.uint8
        yield _Modules(cp, importlib.import_module(KERNELS), importlib.import_module(DRIVER))


@pytest.fixture
def real_gpu():
    import cupy

    from idtfv.idt.flow import _farneback_cuda, farneback_cuda

    return _Modules(cupy, _farneback_cuda, farneback_cuda)


# ------------------------------------------------------------------------------------------------ helpers
def _run(m, name, n, *args, outs=()):
    """Launch kernel ``name`` on uploaded copies of ``args`` (NumPy arrays, scalars); return the arrays at the
    positions ``outs``, downloaded."""
    cp = m.cp
    dev = [cp.asarray(np.ascontiguousarray(a)) if isinstance(a, np.ndarray) else a for a in args]
    m.k.launch(name, n, *dev)
    return [cp.asnumpy(dev[i]) for i in outs]


def _same(a, b, what):
    assert a.shape == b.shape and a.dtype == b.dtype, what
    a, b = np.ascontiguousarray(a), np.ascontiguousarray(b)
    assert np.array_equal(a.view(np.uint8), b.view(np.uint8)), f"{what}: {int((a != b).sum())} values differ, max " \
        f"{float(np.abs(a.astype(np.float64) - b).max())}"


def _close(a, b, tol, what):
    assert a.shape == b.shape and a.dtype == b.dtype, what
    err = float(np.abs(a.astype(np.float64) - b).max())
    assert err <= tol, f"{what}: max |diff| {err} > {tol}"
    return err


def _image(h, w, seed):
    """A smooth random grey image with full contrast (uint8)."""
    rng = np.random.default_rng(seed)
    img = cv2.GaussianBlur(rng.integers(0, 256, (h + 8, w + 8)).astype(np.float32), (0, 0), 1.5)
    img = cv2.normalize(img, None, 0, 255, cv2.NORM_MINMAX)
    return np.ascontiguousarray(img[4:4 + h, 4:4 + w]).astype(np.uint8)


def _resize_u8(m, src, size):
    w, h = size
    sh, sw = src.shape
    (out,) = _run(m, "resize_u8", w * h, src, np.int32(sh), np.int32(sw), np.empty((h, w), np.uint8), np.int32(h),
                  np.int32(w), np.float64(1.0 / (w / sw)), np.float64(1.0 / (h / sh)), outs=(3,))
    return out


def _resize_f32(m, src, size, factor=1.0):
    w, h = size
    sh, sw = src.shape
    (out,) = _run(m, "resize_f32", w * h, src, np.int32(sh), np.int32(sw), np.empty((h, w), np.float32),
                  np.int32(h), np.int32(w), np.float64(sw / w), np.float64(sh / h), np.float32(factor), outs=(3,))
    return out


# ------------------------------------------------------------------------------------------------ kernels
def _bilinear(src, size):
    """Naive INTER_LINEAR in float64: OpenCV's pixel-centre mapping, clamped borders (the independent reference)."""
    w, h = size
    sh, sw = src.shape

    def axis(n, sn):
        pos = (np.arange(n) + 0.5) * (sn / n) - 0.5
        i = np.floor(pos).astype(np.int64)
        frac = pos - i
        frac[i < 0] = 0.0
        i = np.maximum(i, 0)
        frac[i >= sn - 1] = 0.0
        i = np.minimum(i, sn - 1)
        return i, np.minimum(i + 1, sn - 1), frac

    x0, x1, fx = axis(w, sw)
    y0, y1, fy = axis(h, sh)
    s = src.astype(np.float64)
    rows = s[:, x0] * (1 - fx) + s[:, x1] * fx
    return rows[y0] * (1 - fy)[:, None] + rows[y1] * fy[:, None]


def _check_resize(m):
    for h, w in ((240, 320), (51, 68), (23, 17), (7, 9), (3, 2)):
        img = _image(h, w, h * w)
        _, sizes = pyramid_geometry(w, h, patch=4)
        lvl = img
        for size in sizes[1:] + [(max(1, w // 3), max(1, h // 2))]:  # the pyramid's chain, and a 1/3 x 1/2 step
            _same(_resize_u8(m, lvl, size), cv2.resize(lvl, size, interpolation=cv2.INTER_LINEAR), f"u8 {size}")
            lvl = cv2.resize(lvl, size, interpolation=cv2.INTER_LINEAR)
        rng = np.random.default_rng(w)
        f = (rng.normal(size=(h, w)) * 3).astype(np.float32)
        for size in ((max(2, round(w / 1.41)), max(2, round(h / 1.41))), (w * 2 - 1, h * 2 + 3)):
            got = _resize_f32(m, f, size, 1.5)
            _close(got, np.float32(_bilinear(f, size) * 1.5), 1e-5, f"f32 {size}")  # |values| < 30: a few ulp
            want = cv2.resize(f, size, interpolation=cv2.INTER_LINEAR) * np.float32(1.5)
            if cv2.ipp.useIPP() and min(h, w) >= 2:  # IPP's float path (x86 builds), bit for bit
                _same(got, want, f"f32 {size} cv2")
            else:  # OpenCV's own code places samples in float (and IPP leaves 1-pixel sources to it)
                _close(got, want, 2e-3, f"f32 {size} cv2")


def _presmooth(m, img):
    h, w = img.shape
    n = h * w
    (g,) = _run(m, "gauss3", n, img, np.int32(1), np.empty((h, w), np.float32), np.int32(h), np.int32(w),
                outs=(2,))
    (f,) = _run(m, "u8_to_f32", n, img, np.empty((h, w), np.float32), np.int64(n), outs=(1,))
    (g32,) = _run(m, "gauss3", n, f, np.int32(0), np.empty((h, w), np.float32), np.int32(h), np.int32(w), outs=(2,))
    _same(g32, g, f"presmoothing of the uint8 level and of its float32 copy {h}x{w}")
    return g


def _expand(m, img, poly_n, poly_sigma):
    h, w = img.shape
    kernels, consts = _expansion_filters(poly_n, poly_sigma)
    n = h * w
    (v,) = _run(m, "poly_rows", n, img, np.int32(h), np.int32(w), *kernels, np.int32(poly_n),
                np.empty((3, h, w), np.float32), outs=(7,))
    (out,) = _run(m, "poly_cols", n, v, np.int32(h), np.int32(w), *kernels, np.int32(poly_n),
                  *[np.float32(c) for c in consts], np.empty((h, w, 5), np.float32), outs=(15,))
    want = np.empty((h, w, 5), np.float32)
    nb.poly_expand(np.ascontiguousarray(img), *kernels, *consts, want)
    return out, want


def _check_presmooth_and_expansion(m):
    for h, w in SIZES:
        img = _image(h, w, h + w)
        g = _presmooth(m, img)
        _same(g, cv2.GaussianBlur(img.astype(np.float32), (3, 3), 0), f"presmooth {h}x{w}")
        for poly_n, sigma in ((7, 1.5), (5, 1.1)):
            got, want = _expand(m, g, poly_n, sigma)
            if FMA_CPU:
                _same(got, want, f"expansion {h}x{w} n={poly_n}")
            else:
                _close(got, want, 1e-3, f"expansion {h}x{w} n={poly_n}")


def _terms_inputs(h, w, seed):
    """Expansions of two frames, a prior flow reaching outside the frame, the CPU's terms for it."""
    img = _image(h, w, seed).astype(np.float32)
    r0 = np.empty((h, w, 5), np.float32)
    kernels, consts = _expansion_filters(7, 1.5)
    nb.poly_expand(img, *kernels, *consts, r0)
    r1 = np.empty_like(r0)
    nb.poly_expand(np.ascontiguousarray(np.roll(img, 1, axis=1)), *kernels, *consts, r1)
    rng = np.random.default_rng(seed)
    flow = (rng.normal(size=(2, h, w)) * 2).astype(np.float32)
    flow[:, ::5, ::3] = 0.0  # exact zeros, points exactly on the last row / column
    flow[0, :, -1] = 0.0
    m = np.empty((h, w, 5), np.float32)
    nb.update_matrices(r0, r1, flow, nb.BORDER_WEIGHTS, m)
    return r0, r1, flow, m


def _terms_tol(want):
    """Per-pixel terms: the last bits of a few products differ (LLVM's contraction), relative to the value."""
    return 2e-6 * max(1.0, float(np.abs(want).max()))


def _update(m, r0, r1, kind, prior, scales=(0.0, 0.0), ratios=(0.0, 0.0)):
    """``update_matrices`` with a prior of ``kind`` (0 none, 1 an (h, w, 2) flow, 2 a coarser planar flow)."""
    h, w = r0.shape[:2]
    ph, pw = prior.shape[1:] if kind == 2 else (0, 0)
    (got,) = _run(m, "update_matrices", h * w, r0, r1, prior, np.int32(kind), np.int32(ph), np.int32(pw),
                  *map(np.float64, scales), *map(np.float32, ratios), nb.BORDER_WEIGHTS,
                  np.int32(len(nb.BORDER_WEIGHTS)), np.int32(h), np.int32(w), np.empty((h, w, 5), np.float32),
                  outs=(14,))
    return got


def _check_priors(m, r0, r1):
    """update_matrices' other priors against the launches they replace, bit for bit: no prior against a zero flow,
    and the coarser level's flow upscaled in the kernel against resize_f32 of each plane times the size ratio (the
    coarse-to-fine loop before the fusion) given as a flow."""
    h, w = r0.shape[:2]
    _same(_update(m, r0, r1, 0, np.zeros(2, np.float32)), _update(m, r0, r1, 1, np.zeros((h, w, 2), np.float32)),
          f"no prior {h}x{w}")
    for ph, pw in {(max(2, (h + 1) // 2), max(2, (w + 1) // 2)), (2, 2), (max(2, h - 1), w)}:
        coarse = (np.random.default_rng(ph * pw).normal(size=(2, ph, pw)) * 2).astype(np.float32)
        ratios = (w / pw, h / ph)
        planes = [_resize_f32(m, coarse[c], (w, h), np.float32(ratios[c])) for c in range(2)]
        want = _update(m, r0, r1, 1, np.ascontiguousarray(np.stack(planes, -1)))
        got = _update(m, r0, r1, 2, coarse, (1.0 / (w / pw), 1.0 / (h / ph)), ratios)
        _same(got, want, f"upscaled prior {ph}x{pw} -> {h}x{w}")
        assert np.abs(np.stack(planes)).max() > 0  # a non-zero prior


def _check_displacement(m):
    hw = lambda h, w: (np.int32(h), np.int32(w))  # noqa: E731
    bw, nbw = nb.BORDER_WEIGHTS, np.int32(len(nb.BORDER_WEIGHTS))
    for h, w in SIZES:
        r0, r1, flow, want = _terms_inputs(h, w, h * w)
        got = _update(m, r0, r1, 1, np.ascontiguousarray(flow.transpose(1, 2, 0)))
        assert np.abs(want).max() > 0
        if FMA_CPU:  # the CPU's multiply-adds are written down (_farneback_simd_nb): the CUDA C's are the same
            _same(got, want, f"update {h}x{w}")
        else:
            _close(got, want, _terms_tol(want), f"update {h}x{w}")
        _check_priors(m, r0, r1)
        for winsize, window in ((10, "gaussian"), (10, "box"), (5, "box"), (3, "gaussian"), (1, "gaussian"),
                                (15, "gaussian")):
            k = _window_kernel(winsize, window)
            r = np.int32(len(k) // 2)
            (t,) = _run(m, "window_rows", 5 * h * w, want, np.empty_like(want), *hw(h, w), np.int32(5), k, r,
                        outs=(1,))
            (mb,) = _run(m, "window_cols", 5 * h * w, t, np.empty_like(want), *hw(h, w), np.int32(5), k, r,
                         outs=(1,))
            # the CPU's fused kernel (window sum, solve: the extractor's step) does the same arithmetic, every
            # window: its window sums and its flow bit for bit against the window kernels and solve_flow
            fused_sums = np.empty_like(want)
            nb.window_sum(want, k, fused_sums)
            (f_dev,) = _run(m, "solve_flow", h * w, mb, np.float64(nb.DET_EPS), *hw(h, w),
                            np.empty((2, h, w), np.float32), outs=(4,))
            f_fused = np.empty((2, h, w), np.float32)
            nb.window_solve(want.copy(), k, nb.DET_EPS, f_fused, r0, r1, nb.BORDER_WEIGHTS, False)
            if FMA_CPU:
                _same(mb, fused_sums, f"window {h}x{w} {winsize} {window} against window_sum")
                _same(f_dev, f_fused, f"window + solve {h}x{w} {winsize} {window} against window_solve")
            else:  # Numba cannot fuse the multiply-adds the CUDA C writes as fmaf
                _close(mb, fused_sums, _terms_tol(fused_sums), f"window {h}x{w} {winsize} {window}")
            mb_want = cv2.sepFilter2D(want, -1, k, k, borderType=cv2.BORDER_REPLICATE)
            # the extractor's window (11 taps): OpenCV's vector loops fuse (as the kernels); the few values at the
            # end of a row that it does in scalar code do not, and differ in the last bit. Kernels of 5 taps or
            # fewer go through OpenCV's symmetric small-kernel code, which adds in another order.
            _close(mb, mb_want, _terms_tol(mb_want), f"window {h}x{w} {winsize} {window}")
            if FMA_CPU and len(k) > 5 and h * w > 1000:
                assert (mb == mb_want).mean() > 0.98, f"window {h}x{w}: {(mb != mb_want).mean():.2%} differ"
        mb = cv2.sepFilter2D(want, -1, _window_kernel(10, "gaussian"), _window_kernel(10, "gaussian"),
                             borderType=cv2.BORDER_REPLICATE)
        f_want = np.empty((2, h, w), np.float32)
        nb.solve_flow(mb, nb.DET_EPS, f_want)
        (f_got,) = _run(m, "solve_flow", h * w, mb, np.float64(nb.DET_EPS), *hw(h, w), np.empty_like(f_want),
                        outs=(4,))
        _same(f_got, f_want, f"solve {h}x{w}")
        f2_want, m2_want = np.empty_like(f_want), np.empty_like(want)
        nb.solve_and_update(mb, nb.DET_EPS, r0, r1, nb.BORDER_WEIGHTS, f2_want, m2_want)
        f2, m2 = _run(m, "solve_and_update", h * w, mb, np.float64(nb.DET_EPS), r0, r1, bw, nbw, *hw(h, w),
                      np.empty_like(f_want), np.empty_like(want), outs=(8, 9))
        _same(f2, f2_want, f"solve_and_update flow {h}x{w}")
        _close(m2, m2_want, _terms_tol(m2_want), f"solve_and_update terms {h}x{w}")


def _check_median(m):
    for h, w in SIZES:
        rng = np.random.default_rng(h * w + 1)
        plane = (rng.normal(size=(h, w)) * 4).astype(np.float32)
        plane[::2, ::3] = np.round(plane[::2, ::3]) + np.float32(0.0)  # ties (no -0.0: min/max order)
        other = (rng.normal(size=(h, w)) * 2).astype(np.float32)
        planes = np.ascontiguousarray(np.stack([plane, other]))
        for ksize in (3, 5):
            med, out = _run(m, "median2", h * w, planes, np.int32(h), np.int32(w), np.int32(ksize),
                            np.empty((2, h, w), np.float32), np.empty((h, w, 2), np.float32), outs=(4, 5))
            for c, src in enumerate((plane, other)):
                want = cv2.medianBlur(src, ksize)
                _same(med[c], want, f"median {ksize} {h}x{w} plane {c}")
                _same(np.ascontiguousarray(out[..., c]), want, f"median {ksize} {h}x{w} channel {c}")


KERNEL_CHECKS = {"resize": _check_resize, "expansion": _check_presmooth_and_expansion,
                 "displacement": _check_displacement, "median": _check_median}


@pytest.mark.parametrize("check", list(KERNEL_CHECKS), ids=list(KERNEL_CHECKS))
def test_emulated_kernels_match_their_cpu_twins(emulated, check):
    KERNEL_CHECKS[check](emulated)


# ------------------------------------------------------------------------------------------------ the driver
def _moving_frames(h=72, w=96, n=3, seed=0):
    """A smooth random pattern moving by (2, 1) pixels a frame, with a square moving the other way."""
    big = _image(h + 4 * n + 8, w + 4 * n + 8, seed)
    frames = []
    for t in range(n):
        f = big[4 + t:4 + t + h, 4 + 2 * t:4 + 2 * t + w].copy()
        f[20 - t:36 - t, 40 - 2 * t:56 - 2 * t] = 255 - f[20 - t:36 - t, 40 - 2 * t:56 - 2 * t]
        frames.append(np.ascontiguousarray(f))
    return frames


def _compare_driver(m, frames, options=None, *, tol=FLOW_TOL, dtype=np.uint8):
    """Run the CPU and device classes over ``frames``; flows of every call and entry point within ``tol``."""
    cp = m.cp
    options = options or {}
    h, w = frames[0].shape
    _, sizes = pyramid_geometry(w, h)
    cpu, dev = FarnebackPyramidFlow(**options), m.d.CudaFarnebackPyramidFlow(**options)
    assert dev.name == "CudaFarnebackPyramidFlow"
    errors, moving = [], False
    for i, f in enumerate(frames):
        p_cpu = [lvl.astype(dtype) for lvl in build_pyramid(f, sizes)]
        p_dev = m.d.build_pyramid_cuda(cp.asarray(f), sizes)
        for a, b in zip(build_pyramid(f, sizes), p_dev):
            _same(cp.asnumpy(b), a, "pyramid level")
        if dtype != np.uint8:
            p_dev = [cp.asarray(lvl) for lvl in p_cpu]
        want, got = cpu(p_cpu), dev(p_dev)
        assert (want is None) == (got is None) == (i == 0)
        if want is None:
            continue
        for a, b in zip(want, got):
            errors.append(_close(cp.asnumpy(b), a, tol, f"frame {i} level {a.shape}"))
            moving |= float(np.abs(a).max()) > 0.5
    # the camera-compensated entry points: from frame t-1 to another frame (the first one), and refined
    other = [cp.asarray(lvl.astype(dtype)) for lvl in build_pyramid(frames[0], sizes)]
    other_cpu = [cp.asnumpy(lvl) for lvl in other]
    for a, b in zip(cpu.flow_from_previous(other_cpu), dev.flow_from_previous(other)):
        errors.append(_close(cp.asnumpy(b), a, tol, f"flow_from_previous {a.shape}"))
        moving |= float(np.abs(a).max()) > 0.5
    priors = [np.ascontiguousarray(f * np.float32(0.9)) for f in want]
    for a, b in zip(cpu.refine_from_previous(other_cpu, priors, iterations=2),
                    dev.refine_from_previous(other, [cp.asarray(p) for p in priors], iterations=2)):
        errors.append(_close(cp.asnumpy(b), a, tol, f"refine_from_previous {a.shape}"))
    assert moving  # not vacuous: the flows are not all zero
    return max(errors)


DRIVER_OPTIONS = {
    "default": {},
    "fast": {"poly_n": 5, "poly_sigma": 1.1, "iterations": 1},
    "box-median3-raw": {"window": "box", "median": 3, "presmooth": False, "iterations": 3},
    "no-median": {"median": 1, "winsize": 7},
}


@pytest.mark.parametrize("name", list(DRIVER_OPTIONS), ids=list(DRIVER_OPTIONS))
def test_emulated_driver_matches_the_cpu_flow(emulated, name):
    _compare_driver(emulated, _moving_frames(), DRIVER_OPTIONS[name])


def test_emulated_driver_takes_float32_levels_and_small_frames(emulated):
    _compare_driver(emulated, _moving_frames(), dtype=np.float32)
    small = [np.ascontiguousarray(f[:9, :11]) for f in _moving_frames()]  # one level, smaller than a window
    _compare_driver(emulated, small)


def test_emulated_driver_checks_its_input_and_keeps_the_cpu_state_rules(emulated):
    from idtfv.errors import ParameterError

    d, cp = emulated.d, emulated.cp
    frames = _moving_frames()
    _, sizes = pyramid_geometry(96, 72)
    fp = d.CudaFarnebackPyramidFlow()
    with pytest.raises(ParameterError, match="needs two frames"):
        fp.flow_from_previous(d.build_pyramid_cuda(frames[0], sizes))
    with pytest.raises(ParameterError, match="empty"):
        fp([])
    with pytest.raises(ParameterError, match="uint8 or float32"):
        fp([cp.zeros((8, 8), np.float64)])
    with pytest.raises(ParameterError, match="at least 2x2"):
        fp([cp.zeros((1, 8), np.float32)])
    with pytest.raises(ParameterError, match="median"):
        d.CudaFarnebackPyramidFlow(median=4)
    with pytest.raises(ParameterError, match="sizes"):
        d.build_pyramid_cuda(frames[0], [(10, 10)])
    assert fp(d.build_pyramid_cuda(frames[0], sizes)) is None
    with pytest.raises(ParameterError, match="differ from the previous"):
        fp(d.build_pyramid_cuda(frames[1][:, :90], [(90, 72)]))
    flows = fp(d.build_pyramid_cuda(frames[1], sizes))
    assert [f.shape for f in flows] == [(h, w, 2) for w, h in sizes] and flows[0].dtype == np.float32
    with pytest.raises(ParameterError, match="priors"):
        fp.refine_from_previous(d.build_pyramid_cuda(frames[1], sizes), flows[:1])


def test_importing_the_driver_does_not_import_cupy():
    import subprocess

    code = ("import sys, idtfv.idt.flow as f; f.CudaFarnebackPyramidFlow; f.build_pyramid_cuda; "
            "assert 'cupy' not in sys.modules and 'idtfv.idt.flow._farneback_cuda' not in sys.modules")
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0


@pytest.mark.slow
@pytest.mark.skipif(not (SHARED / "reference" / "videos").exists(), reason="needs ../shared/reference/videos")
def test_emulated_driver_on_a_vtest_pair(emulated):
    from idtfv.video import open_video

    with open_video(SHARED / "reference" / "videos" / "vtest_320x240.avi", gray=True, start=10, end=13) as r:
        frames = [np.ascontiguousarray(f) for f in r]
    _compare_driver(emulated, frames, tol=1e-3)


# ------------------------------------------------------------------------------------------------ mutations
MUTATIONS = [
    ("if (i < nb) wgt *= border[i];", "if (i < nb - 1) wgt *= border[i];"),  # a border weight left out
    ("for (int j = 0; j <= 2 * r; ++j)", "for (int j = 0; j < 2 * r; ++j)"),  # a window tap left out
    ("return v[n / 2];", "return v[n / 2 + 1];"),  # the median's rank
    ("out[2 * i + 1] = b;", "out[2 * i + 1] = a;"),  # the interleaved flow's second channel
    ("float b = fb_median_at(src + hw, h, w, ksize, y, x);", "float b = fb_median_at(src, h, w, ksize, y, x);"),
    ("float up = fb_gauss3_row(src, u8, w, fb_reflect101(y - 1, h), x);",  # the presmoothing's row above
     "float up = fb_gauss3_row(src, u8, w, y, x);"),
    ("return u8 ? (float)((const unsigned char*)src)[k]", "return u8 ? (float)((const signed char*)src)[k]"),
    ("float fd = (float)((d + 0.5) * scale - 0.5);", "float fd = (float)(d * scale);"),  # the uint8 one's
    ("double fd = (d + 0.5) * scale - 0.5;", "double fd = d * scale;"),  # the float resize's half-pixel offset
    ("const float* r1 = src + (long long)fb_clamp(sy + 1, 0, sh - 1) * sw;",
     "const float* r1 = src + (long long)fb_clamp(sy, 0, sh - 1) * sw;"),  # the float resize's second row
    ("int v = (((b0 * (s0 >> 4)) >> 16) + ((b1 * (s1 >> 4)) >> 16) + 2) >> 2;",
     "int v = (b0 * s0 + b1 * s1 + (1 << 21)) >> 22;"),  # OpenCV's SIMD rounding of the uint8 rows
    ("if (i < 0) i = -i;", "if (i < 0) i = 0;"),  # presmoothing: reflect-101, not replicate
    ("float ra = img[(long long)min(y + t, h - 1) * w + x];", "float ra = img[(long long)min(y + t, h - 2) * w + x];"),
    ("c0 = FB_FMA(g[t], s, c0);", "c0 = g[t] * s + c0;"),  # the expansion's fused multiply-add
    ("float inside = (fx >= 0.0f && fx <= (float)(w - 1)", "float inside = (fx >= 0.0f && fx < (float)(w - 1)"),
    ("double idet = 1.0 / (FB_DFMA(g11, g22, -(g12 * g12)) + det_eps);",
     "double idet = 1.0 / (FB_DFMA(g11, g22, -(g12 * g12)) + 1e-2);"),  # DET_EPS
    ("float s = src[i] * k[r];", "float s = src[i] * k[0];"),  # the centre tap of the column pass
    ("dst[i] = v * factor;", "dst[i] = v;"),  # the float resize's factor
    ("return fmaf(s1 - s0, fy, s0);", "return s0 + fy * (s1 - s0);"),  # IPP's fused blend down the column
    ("dx = fb_resize_f32_at(prior, ph, pw, y, x, scale_x, scale_y) * ratio_x;",  # the fused upscale's ratio
     "dx = fb_resize_f32_at(prior, ph, pw, y, x, scale_x, scale_y) * ratio_y;"),
    ("dy = fb_resize_f32_at(prior + (long long)ph * pw,", "dy = fb_resize_f32_at(prior,"),  # its second plane
    ("        dy = prior[2 * i + 1];", "        dy = prior[2 * i];"),  # an (h, w, 2) prior's second channel
]


def _mutation_checks(m):
    for check in KERNEL_CHECKS.values():
        check(m)
    _compare_driver(m, _moving_frames())


@pytest.mark.parametrize("old, new", MUTATIONS, ids=[f"m{i}" for i in range(len(MUTATIONS))])
def test_emulated_broken_kernels_fail(emulated, monkeypatch, old, new):
    k = emulated.k
    if "FB_FMA(g[t], s, c0)" in old and not FMA_CPU:
        pytest.skip("the expansion is compared bit for bit only where the CPU fuses multiply-adds")
    with _cuda_on_cpu.mutated(k, monkeypatch, old, new), pytest.raises(AssertionError):
        _mutation_checks(emulated)


# ------------------------------------------------------------------------------------------------ on a GPU
@pytest.mark.gpu
@needs_gpu
@pytest.mark.parametrize("check", list(KERNEL_CHECKS), ids=list(KERNEL_CHECKS))
def test_gpu_kernels_match_their_cpu_twins(real_gpu, check):
    KERNEL_CHECKS[check](real_gpu)


@pytest.mark.gpu
@needs_gpu
@pytest.mark.parametrize("name", list(DRIVER_OPTIONS), ids=list(DRIVER_OPTIONS))
def test_gpu_driver_matches_the_cpu_flow(real_gpu, name):
    _compare_driver(real_gpu, _moving_frames(), DRIVER_OPTIONS[name])


@pytest.mark.gpu
@needs_gpu
@pytest.mark.skipif(not (SHARED / "reference" / "videos").exists(), reason="needs ../shared/reference/videos")
def test_gpu_driver_on_a_vtest_pair(real_gpu):
    from idtfv.video import open_video

    with open_video(SHARED / "reference" / "videos" / "vtest_320x240.avi", gray=True, start=10, end=13) as r:
        frames = [np.ascontiguousarray(f) for f in r]
    _compare_driver(real_gpu, frames, tol=1e-3)


@pytest.mark.skipif(shutil.which("nvcc") is None, reason="needs nvcc")
def test_cuda_source_compiles_with_nvcc(tmp_path):
    import ast

    module = Path(__file__).resolve().parents[1] / "idt" / "flow" / "_farneback_cuda.py"
    tree = ast.parse(module.read_text())
    (source,) = [ast.literal_eval(n.value) for n in tree.body
                 if isinstance(n, ast.Assign) and getattr(n.targets[0], "id", None) == "_SOURCE"]
    ptx = _cuda_on_cpu.nvcc_ptx(source, tmp_path)
    for name in ("resize_u8", "resize_f32", "u8_to_f32", "gauss3", "poly_rows", "poly_cols", "update_matrices",
                 "solve_flow", "solve_and_update", "window_rows", "window_cols", "median2", "merge2"):
        assert f".entry {name}(" in ptx
