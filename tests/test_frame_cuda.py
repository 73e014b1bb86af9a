"""The frame kernels of idt/_frame_cuda.py (dense sampling, camera compensation) against their CPU twins.

Without a GPU the CUDA C runs on the CPU through ``tests/_cuda_on_cpu.py``. What each comparison is:

- the min-eigenvalue response against ``cv2.cornerMinEigenVal(gray, 3, ksize=3)``: bit for bit where OpenCV
  dispatches its AVX2 filters (whose fused multiply-adds the kernel reproduces), else within 8 float32 ulps of the
  image's largest response;
- the grid selection against ``sampling.dense_sample`` (Numba ``sample_grid``) on the same response: the same
  points in the same order;
- the warp against ``camera.warp_to_previous``: bit for bit with OpenCV's scalar path (``cv2.setUseOptimized(False)``),
  and with its SIMD path at most 1 grey level off on at most 0.1 % of the pixels;
- the flow compensation against the Numba kernels: bit for bit.

Broken kernels (a Sobel tap, the reflect border, the threshold comparison, a homography row, ...) must fail.
``extract(..., IDTParams(device="cuda"))`` with the whole frame on the device (pyramid, Farnebäck, warp, sampling)
must meet the issue's parity bar against the CPU, with the device steps counted as called. The ``gpu`` tests run
the same comparisons on a real device.
"""

from __future__ import annotations

import importlib
import shutil
import sys
from contextlib import contextmanager
from pathlib import Path

import cv2
import numpy as np
import pytest

import _cuda_on_cpu
from idtfv.idt import camera, sampling
from idtfv.idt.device import cuda_available

NAME = "idtfv.idt._frame_cuda"

#: OpenCV runs the AVX2 filter code whose rounding the response kernel reproduces (see idt/_frame_cuda.py).
#: (cv::CPU_AVX2 = 11 and cv::CPU_FMA3 = 12 of core/cvdef.h; the Python bindings do not name them)
OPENCV_AVX2 = cv2.useOptimized() and cv2.checkHardwareSupport(11) and cv2.checkHardwareSupport(12)


@pytest.fixture(scope="session")
def build_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("cuda_on_cpu_frame")


@pytest.fixture
def emulated(build_dir, monkeypatch):
    """``idtfv.idt._frame_cuda`` over the stand-in cupy (forgotten afterwards: ``_cuda_on_cpu.stand_in``)."""
    with _cuda_on_cpu.stand_in(build_dir, monkeypatch):
        yield importlib.import_module(NAME)


def _host(a):
    return a.get() if hasattr(a, "get") else np.asarray(a)


def _images(seed=0, sizes=((2, 2), (3, 5), (5, 7), (17, 31), (33, 47), (31, 64), (37, 53), (48, 65))):
    """uint8 images: noise, smoothed noise, and a frame half flat (zero response there) with a bright square."""
    rng = np.random.default_rng(seed)
    out = []
    for h, w in sizes:
        g = rng.integers(0, 256, (h, w), dtype=np.uint8)
        out += [g, cv2.GaussianBlur(g, (5, 5), 1.5)]
    flat = np.full((45, 70), 90, np.uint8)
    flat[5:20, 40:60] = 200
    flat[25:, :30] = rng.integers(0, 256, (20, 30), dtype=np.uint8)
    out.append(flat)
    return out


# ---------------------------------------------------------------------------------------------- the response
def _compare_response(mod, images, exact):
    for g in images:
        want = cv2.cornerMinEigenVal(g, 3, ksize=3)
        got = _host(mod.corner_response(g))
        assert got.dtype == np.float32 and got.shape == g.shape
        if exact:
            assert np.array_equal(got.view(np.uint32), want.view(np.uint32)), g.shape
        else:
            tol = 8 * np.spacing(np.float32(np.abs(want).max()))
            assert np.abs(got - want).max() <= tol, g.shape


def test_emulated_corner_response_matches_opencv(emulated):
    _compare_response(emulated, _images(0), exact=OPENCV_AVX2)


def test_emulated_corner_response_of_a_frame_size(emulated):
    # a 320x240 level (whole 32-column blocks) and its odd-sized next levels
    rng = np.random.default_rng(5)
    g = cv2.GaussianBlur(rng.integers(0, 256, (240, 320), dtype=np.uint8), (7, 7), 2.0)
    _compare_response(emulated, [g, cv2.resize(g, (226, 170)), cv2.resize(g, (113, 85))], exact=OPENCV_AVX2)


def test_emulated_corner_response_rejects_float(emulated):
    with pytest.raises(TypeError, match="uint8"):
        emulated.corner_response(np.zeros((8, 8), np.float32))


# ---------------------------------------------------------------------------------------------- dense sampling
def _sampling_cases(seed):
    rng = np.random.default_rng(seed)
    for g in _images(seed, sizes=((3, 4), (17, 31), (37, 53), (48, 65))):
        h, w = g.shape
        cells = np.stack(np.meshgrid(np.arange(w // 5) * 5 + 2, np.arange(h // 5) * 5 + 2), -1).reshape(-1, 2)
        cells = cells.astype(np.float32)
        some = np.concatenate([rng.uniform(-3, [w + 3, h + 3], (25, 2)),  # some outside, some in the ragged edge
                               np.array([[w // 5 * 5 - 0.5, 1.0], [4.999, 4.999], [5.0, 0.0]])]).astype(np.float32)
        for existing, quality in ((None, 0.001), (some, 0.001), (some, 0.0), (some, 1.0), (cells, 0.001),
                                  (np.zeros((0, 2), np.float32), 0.001)):
            yield g, existing, quality


def _compare_sampling(mod, seed, *, device_response):
    n_points = n_cases = 0
    for g, existing, quality in _sampling_cases(seed):
        want = sampling.dense_sample(g, existing, stride=5, quality=quality)
        eig = None if device_response else sampling.corner_response(g).copy()
        got = mod.dense_sample(g, existing, stride=5, quality=quality, eig=eig)
        assert got.dtype == np.float32 and isinstance(got, np.ndarray)
        assert np.array_equal(got, want), (g.shape, quality)
        n_points += len(want)
        n_cases += 1
    assert n_points > 100 and n_cases > 20  # not vacuous


@pytest.mark.parametrize("seed", [0, 1])
def test_emulated_dense_sample_equals_cpu(emulated, seed):
    _compare_sampling(emulated, seed, device_response=False)


@pytest.mark.skipif(not OPENCV_AVX2, reason="the device response equals OpenCV's bit for bit only with AVX2")
def test_emulated_dense_sample_with_device_response_equals_cpu(emulated):
    _compare_sampling(emulated, 2, device_response=True)


def test_emulated_dense_sample_edge_cases(emulated):
    g = np.random.default_rng(3).integers(0, 256, (4, 9), dtype=np.uint8)
    assert emulated.dense_sample(g, stride=5).shape == (0, 2)  # no whole cell: an empty grid
    g = np.random.default_rng(3).integers(0, 256, (20, 25), dtype=np.uint8)
    full = np.stack(np.meshgrid(np.arange(5) * 5 + 2.0, np.arange(4) * 5 + 2.0), -1).reshape(-1, 2)
    assert emulated.dense_sample(g, full.astype(np.float32), stride=5).shape == (0, 2)  # every cell occupied
    assert len(emulated.dense_sample(g, stride=5)) == 20  # and none occupied: noise responds everywhere
    assert emulated.dense_sample(np.full((20, 25), 7, np.uint8), stride=5).shape == (0, 2)  # flat: max 0


# --------------------------------------------------------------------- the sampling of every level at once
def _level_cases(seed, n_levels):
    """Decreasing levels (a pyramid's, the last without a whole grid cell), noise and smoothed noise (so the
    levels' maxima differ), each with its live points: none, some (inside and out) or a whole grid."""
    rng = np.random.default_rng(seed)
    shapes = [(int(40 / 1.25 ** k) + 3, int(57 / 1.25 ** k) + 1) for k in range(n_levels - 1)] + [(4, 4)]
    grays, existing = [], []
    for k, (h, w) in enumerate(shapes):
        g = rng.integers(0, 256, (h, w), dtype=np.uint8)
        grays.append(cv2.GaussianBlur(g, (5, 5), 1.0 + k % 3) if k % 2 else g)
        kind = k % 3
        if kind == 0:
            existing.append(np.zeros((0, 2), np.float32))
        elif kind == 1:
            existing.append(rng.uniform(-3, [w + 3, h + 3], (4 + 3 * k, 2)).astype(np.float32))
        else:
            cells = np.stack(np.meshgrid(np.arange(w // 5) * 5 + 2, np.arange(h // 5) * 5 + 2), -1).reshape(-1, 2)
            existing.append(cells[::2].astype(np.float32))
    return grays, existing


def _compare_sampling_levels(mod, n_levels, seed=0, scratch=None):
    """``dense_sample_levels`` against each level's ``dense_sample`` (the device's, and the CPU's where OpenCV's
    response is bit-identical), bit for bit; launches: 4 per run of MAX_LEVELS levels (3 without live points)."""
    cp = sys.modules["cupy"]
    grays, existing = _level_cases(seed, n_levels)
    n_points = 0
    counted = hasattr(cp, "launches")  # the stand-in counts launches, a real CuPy does not
    for quality in (0.001, 0.2, 0.0):
        before = sum(cp.launches.values()) if counted else 0
        got, scratch = mod.dense_sample_levels([cp.asarray(g) for g in grays], existing, stride=5, quality=quality,
                                               scratch=scratch)
        runs = range(0, n_levels, mod.MAX_LEVELS)
        marks = sum(any(len(p) for p in existing[a:a + mod.MAX_LEVELS]) for a in runs)
        assert not counted or sum(cp.launches.values()) - before == 3 * len(runs) + marks
        for g, pts, points in zip(grays, existing, got):
            want = mod.dense_sample(g, pts, stride=5, quality=quality)
            assert points.dtype == np.float32 and np.array_equal(points, want), (g.shape, quality)
            if OPENCV_AVX2:
                assert np.array_equal(points, sampling.dense_sample(g, pts, stride=5, quality=quality))
            n_points += len(want)
    assert n_points > 100  # not vacuous
    return scratch


@pytest.mark.parametrize("n_levels", [6, 11])
def test_emulated_dense_sample_levels_equals_each_level_alone(emulated, n_levels):
    scratch = _compare_sampling_levels(emulated, n_levels)
    assert _compare_sampling_levels(emulated, n_levels, seed=1, scratch=scratch) is scratch  # buffers reused


def test_emulated_dense_sample_levels_checks_its_input(emulated):
    grays, existing = _level_cases(0, 3)
    with pytest.raises(ValueError, match="live points of each level"):
        emulated.dense_sample_levels(grays, existing[:2])
    with pytest.raises(TypeError, match="uint8 image"):
        emulated.dense_sample_levels([g.astype(np.float32) for g in grays], existing)


#: The batched sampling broken (each level alone is right): which level a thread finds, the levels' maxima's
#: reduction, a level's maximum, where a level's marks go.
LEVEL_MUTATIONS = [
    ("while (l + 1 < n_levels && table[(l + 1) * IDT_ST + col] <= i) ++l;",
     "while (l + 1 < n_levels && table[(l + 1) * IDT_ST + col] < i) ++l;"),
    ("part[threadIdx.x + half] > part[threadIdx.x]", "part[threadIdx.x + half] < part[threadIdx.x]"),
    ("maxv[l], quality, stride", "maxv[0], quality, stride"),
    ("stride, (int)row[3], (int)row[4], occ + row[5]);", "stride, (int)row[3], (int)row[4], occ);"),
]


@pytest.mark.parametrize("old, new", LEVEL_MUTATIONS, ids=[f"m{i}" for i in range(len(LEVEL_MUTATIONS))])
def test_emulated_broken_level_sampling_fails(emulated, monkeypatch, old, new):
    with _cuda_on_cpu.mutated(emulated, monkeypatch, old, new), pytest.raises(AssertionError):
        _compare_sampling_levels(emulated, 6)


# ---------------------------------------------------------------------------------------------- the warp
HOMOGRAPHIES = [
    np.eye(3),
    np.array([[1.0, 0.0, 0.5], [0.0, 1.0, -0.5], [0.0, 0.0, 1.0]]),  # half-pixel shift: blends land on .5
    np.array([[1.01, 0.004, -2.3], [-0.003, 0.995, 1.7], [1e-5, -2e-5, 1.0]]),
    np.array([[0.97, -0.02, 3.1], [0.015, 1.02, -2.2], [-4e-5, 3e-5, 1.0]]),
    np.array([[1.3, 0.1, -40.0], [0.05, 0.8, 60.0], [2e-4, 1e-4, 1.0]]),  # much of the frame from outside
    np.array([[1.25, 0.01, -1.5], [-0.02, 1.3, 2.0], [3e-5, 2e-5, 1.25]]),  # not normalised: h22 != 1
]


@contextmanager
def _opencv_scalar():
    was = cv2.useOptimized()
    cv2.setUseOptimized(False)
    try:
        yield
    finally:
        cv2.setUseOptimized(was)


def _warp_cases(seed):
    rng = np.random.default_rng(seed)
    for h, w in ((240, 320), (37, 53), (12, 9)):
        gray = cv2.GaussianBlur(rng.integers(0, 256, (h, w), dtype=np.uint8), (5, 5), 1.0)
        prev = rng.integers(0, 256, (h, w), dtype=np.uint8)
        for H in HOMOGRAPHIES:
            for p, margin in ((None, 5.0), (prev, 5.0), (prev, 0.0), (prev, 2.5)):
                yield gray, H, p, margin


def _compare_warp(mod, seed=0):
    n_band = 0
    for gray, H, prev, margin in _warp_cases(seed):
        with _opencv_scalar():
            want = camera.warp_to_previous(gray, H, prev=prev, margin=margin)
        got = _host(mod.warp_to_previous(gray, H, prev=prev, margin=margin))
        assert got.dtype == np.uint8 and np.array_equal(got, want), (gray.shape, H[0, 2], margin)
        if prev is not None:
            n_band += int(np.count_nonzero(got == prev))
    assert n_band > 1000  # the border band was exercised


def test_emulated_warp_is_bit_identical_to_opencv_scalar(emulated):
    _compare_warp(emulated)


def test_emulated_warp_against_opencv_simd_within_one_level(emulated):
    worst = 0.0
    for gray, H, prev, margin in _warp_cases(1):
        want = camera.warp_to_previous(gray, H, prev=prev, margin=margin).astype(int)
        got = _host(emulated.warp_to_previous(gray, H, prev=prev, margin=margin)).astype(int)
        assert np.abs(got - want).max() <= 1
        worst = max(worst, np.count_nonzero(got != want) / got.size)
    assert worst <= 1e-3


def test_emulated_warp_rejects_a_prev_of_another_size(emulated):
    g = np.zeros((10, 12), np.uint8)
    with pytest.raises(ValueError, match="prev has shape"):
        emulated.warp_to_previous(g, np.eye(3), prev=np.zeros((10, 11), np.uint8))


# ---------------------------------------------------------------------------------------------- flow compensation
def _compare_compensation(mod, seed=0):
    rng = np.random.default_rng(seed)
    n_zero = 0
    for h, w in ((31, 47), (240, 320), (3, 2)):
        flow = (rng.normal(size=(h, w, 2)) * 2).astype(np.float32)
        for H in HOMOGRAPHIES[1:]:
            for interior in (None, (5.0, w - 6.0, h - 6.0), (2.5, w - 4.0, h - 3.5)):
                want = camera.compensate_flow(flow, H, interior=interior)
                got = _host(mod.compensate_flow(flow, H, interior=interior))
                assert got.dtype == np.float32 and np.array_equal(got.view(np.uint32), want.view(np.uint32)), \
                    (h, w, interior)
                n_zero += int(np.count_nonzero(np.all(got == 0, axis=-1)))
    assert n_zero > 1000  # the border rule was exercised
    flow = np.ones((4, 5, 2), np.float32)
    assert mod.compensate_flow(flow, np.eye(3)) is flow  # the identity without a border rule: the flow itself


def test_emulated_compensate_flow_is_bit_identical_to_numba(emulated):
    _compare_compensation(emulated)


# ---------------------------------------------------------------------------------------------- the flow at points
def _compare_flow_at(mod, seed=0):
    """``flow_at`` (the camera's flow matches read from the device flow) against NumPy's indexing of the same
    flow: every pixel kind (corners, edges, repeated points), the empty case, and indices outside refused."""
    rng = np.random.default_rng(seed)
    for h, w in ((240, 320), (7, 3), (1, 1)):
        flow = rng.normal(size=(h, w, 2)).astype(np.float32)
        yi = np.concatenate([rng.integers(0, h, 500), [0, h - 1, 0, h - 1, 0]])
        xi = np.concatenate([rng.integers(0, w, 500), [0, w - 1, w - 1, 0, 0]])
        got = mod.flow_at(flow, yi, xi)
        assert got.dtype == np.float32 and got.shape == (505, 2) and np.array_equal(got, flow[yi, xi]), (h, w)
        assert mod.flow_at(flow, yi[:0], xi[:0]).shape == (0, 2)
        for bad in ((np.array([h]), np.array([0])), (np.array([0]), np.array([w])), (np.array([-1]), np.array([0]))):
            with pytest.raises(IndexError):
                mod.flow_at(flow, *bad)


def test_emulated_flow_at_equals_numpy_indexing(emulated):
    _compare_flow_at(emulated)


# ---------------------------------------------------------------------------------------------- broken kernels
def _check_all(mod, exact_response=OPENCV_AVX2):
    _compare_response(mod, _images(0), exact=exact_response)
    _compare_sampling(mod, 0, device_response=False)
    _compare_warp(mod)
    _compare_compensation(mod)
    _compare_flow_at(mod)


MUTATIONS = [
    ("float dx = fmaf(s0 + s2, f1, s1 * f0);", "float dx = fmaf(s0 + s2, f1, s1 * f1);"),  # a Sobel tap
    ("float s2 = (float)r2[xp] - (float)r2[xm];", "float s2 = (float)r2[xp] - (float)r2[x];"),
    ("if (i < 0) i = -i;", "if (i < 0) i = -i - 1;"),  # BORDER_REFLECT instead of BORDER_REFLECT_101
    ("float a = (float)sxx * 0.5f;", "float a = (float)sxx;"),
    ("idt_sobel_at(img, h, w, f1, f0, simd_cols, yy, xx, &gx, &gy);",  # the fused response's neighbourhood
     "idt_sobel_at(img, h, w, f1, f0, simd_cols, y, xx, &gx, &gy);"),
    ("> threshold) ? 1 : 0;", ">= threshold) ? 1 : 0;"),  # the threshold comparison
    ("float fx = floorf(pts[2 * i]);", "float fx = rintf(pts[2 * i]);"),  # a point's cell
    ("float sy = (xf * m[3] + (yf * m[4] + m[5])) / wv;", "float sy = (xf * m[3] + (yf * m[4] + m[2])) / wv;"),
    ("float wv = xf * m[6] + (yf * m[7] + m[8]);", "float wv = xf * m[6] + (yf * m[7] + 1.0f);"),
    ("float v = v0 + beta * (v1 - v0);", "float v = v0 + alpha * (v1 - v0);"),
    ("float r = rintf(v);", "float r = floorf(v + 0.5f);"),  # ties to even
    ("(syd < (double)(h - 1) - margin)", "(syd < (double)h - margin)"),  # the border band
    ("out[2 * (long long)i + 1] = (float)((Hi[3] * px + Hi[4] * py + Hi[5]) / den - (double)y);",
     "out[2 * (long long)i + 1] = (float)((Hi[3] * px + Hi[4] * py + Hi[2]) / den - (double)y);"),  # H^-1's row
    ("if (!(sx > lo && sx < hix && sy > lo && sy < hiy)) {", "if (!(sx > lo && sx < hix && sy > lo && sy < hix)) {"),
    # flow_at (mutations that stay inside the flow: the emulator runs them in this process)
    ("long long i = (long long)yx[k] * w + yx[n + k];", "long long i = (long long)yx[k] * w + yx[n + k] / 2;"),
    ("out[2 * k + 1] = flow[2 * i + 1];", "out[2 * k + 1] = flow[2 * i];"),
]


@pytest.mark.parametrize("old, new", MUTATIONS, ids=[f"m{i}" for i in range(len(MUTATIONS))])
def test_emulated_broken_kernels_fail(emulated, monkeypatch, old, new):
    with _cuda_on_cpu.mutated(emulated, monkeypatch, old, new), pytest.raises(AssertionError):
        _check_all(emulated)


@pytest.mark.skipif(not OPENCV_AVX2, reason="OpenCV's scalar tail differs from its vector loop only with AVX2")
def test_emulated_response_without_opencv_scalar_tail_fails(emulated, monkeypatch):
    with _cuda_on_cpu.mutated(emulated, monkeypatch, "if (x < simd_cols) {", "if (true) {"), \
            pytest.raises(AssertionError):
        _compare_response(emulated, _images(0), exact=True)


def test_device_options_are_checked():
    from idtfv.errors import ParameterError

    g = np.zeros((20, 25), np.uint8)
    with pytest.raises(ParameterError, match="device must be 'cpu' or 'cuda'"):
        sampling.dense_sample(g, device="auto")
    flows = [np.zeros((20, 25, 2), np.float32)]
    with pytest.raises(ParameterError, match="device must be 'cpu' or 'cuda'"):
        camera.compensated_flows(np.eye(3), flows, [1.0], frame=g, prev_frame=g, params=camera.CameraParams(),
                                 recompute=None, device="gpu")


# ---------------------------------------------------------------------------------------------- the extractor
KINDS = ("traj", "hog", "hof", "mbhx", "mbhy")
#: Kernel modules the device extraction imports over the stand-in cupy (removed again after the test).
DEVICE_MODULES = ("idtfv.idt._frame_cuda", "idtfv.idt._tracking_cuda", "idtfv.idt._histograms_cuda",
                  "idtfv.idt.flow._farneback_cuda")


@pytest.fixture
def emulated_extract(emulated, monkeypatch):
    """The emulated frame kernels, with every other device module (tracking, histograms, Farnebäck) imported
    over the same stand-in cupy, and all of them removed afterwards."""
    import idtfv.idt as pkg
    import idtfv.idt.flow as flow_pkg

    for name in DEVICE_MODULES[1:]:
        monkeypatch.delitem(sys.modules, name, raising=False)
    try:
        yield emulated
    finally:
        for name in DEVICE_MODULES[1:]:
            sys.modules.pop(name, None)
            short = name.rsplit(".", 1)[1]
            (flow_pkg if ".flow." in name else pkg).__dict__.pop(short, None)


def _clip(frames=16):
    from conftest import tiny_frames

    return tiny_frames(frames=frames, width=96, height=72, motion=(2, 1))


def _meets_parity_bar(cpu, gpu):
    """The issue's bar: trajectory counts within 1 %, descriptor mean profiles correlating > 0.999."""
    assert len(cpu) > 50
    assert abs(len(gpu) - len(cpu)) <= 0.01 * len(cpu), (len(cpu), len(gpu))
    for kind in KINDS:
        a, b = getattr(cpu, kind).mean(0), getattr(gpu, kind).mean(0)
        assert np.corrcoef(a, b)[0, 1] > 0.999, kind


def _count_calls(monkeypatch, owner, names, calls):
    for name in names:
        real = getattr(owner, name)

        def counted(*args, _real=real, _name=name, **kwargs):
            calls[_name] = calls.get(_name, 0) + 1
            return _real(*args, **kwargs)

        monkeypatch.setattr(owner, name, counted)


@pytest.mark.parametrize("warp_flow", ["recompute", "subtract"])
def test_emulated_extract_on_cuda_meets_the_parity_bar(emulated_extract, monkeypatch, warp_flow):
    from idtfv.idt import IDTParams, extract
    from idtfv.idt.flow import farneback_cuda

    calls: dict = {}
    _count_calls(monkeypatch, emulated_extract, ("dense_sample", "dense_sample_levels", "warp_to_previous",
                                                 "compensate_flow"), calls)
    _count_calls(monkeypatch, farneback_cuda.CudaFarnebackPyramidFlow, ("solve",), calls)
    _count_calls(monkeypatch, farneback_cuda, ("build_pyramid_cuda",), calls)
    _count_calls(monkeypatch, sampling, ("corner_response",), calls)
    # still_camera=0: every pair takes warp_flow's path (the clip's pairs would be still ones, derived flows)
    params = IDTParams(track_length=9, scales=2, warp_flow=warp_flow, still_camera=0)
    cpu = extract(_clip(), params)
    n_host_responses = calls.pop("corner_response", 0)  # the CPU run's sampling and flow matches
    gpu = extract(_clip(), params.replace(device="cuda"))
    assert gpu.info["device"] == "cuda" and gpu.info["flow_impl"] == "CudaFarnebackPyramidFlow"
    assert "flow_impl" in cpu.info and cpu.info["flow_impl"] != gpu.info["flow_impl"]
    # the device path really ran: sampling on the first frame and every init_gap, the flow and the pyramid on
    # every frame, the warp (recompute) or the derived flows (subtract) on every frame after the first
    frames = len(_clip())
    assert calls["dense_sample_levels"] == len(range(0, frames, params.init_gap))  # both levels at once
    assert "dense_sample" not in calls
    assert calls["solve"] >= frames - 1 and calls["build_pyramid_cuda"] >= frames
    if warp_flow == "recompute":
        assert calls["warp_to_previous"] == frames - 1
    else:
        assert calls["compensate_flow"] == 2 * (frames - 1)
    # the dense sampling no longer computes its response on the host
    assert n_host_responses >= 2 * calls["dense_sample_levels"] and "corner_response" not in calls
    _meets_parity_bar(cpu, gpu)


@pytest.mark.slow
def test_emulated_extract_on_cuda_meets_the_parity_bar_on_a_reference_video(emulated_extract):
    from conftest import SHARED
    from idtfv.idt import IDTParams, extract

    video = SHARED / "reference" / "videos" / "vtest_320x240.avi"  # 320x240, 6 scales, camera motion
    if not video.exists():
        pytest.skip("needs ../shared/reference/videos")
    params = IDTParams(end=30)
    _meets_parity_bar(extract(video, params), extract(video, params.replace(device="cuda")))


# ---------------------------------------------------------------------------------------------- on a device
@pytest.mark.gpu
@pytest.mark.skipif(not cuda_available(), reason="needs CuPy and a CUDA device")
def test_gpu_frame_kernels_match_their_cpu_twins():
    from idtfv.idt import _frame_cuda

    _check_all(_frame_cuda)
    _compare_sampling(_frame_cuda, 1, device_response=OPENCV_AVX2)
    _compare_sampling_levels(_frame_cuda, 11)  # every level at once
    test_emulated_warp_against_opencv_simd_within_one_level(_frame_cuda)


@pytest.mark.gpu
@pytest.mark.skipif(not cuda_available(), reason="needs CuPy and a CUDA device")
def test_gpu_extract_meets_the_parity_bar():
    from idtfv.idt import IDTParams, extract

    params = IDTParams(track_length=9, scales=2)
    cpu = extract(_clip(), params)
    gpu = extract(_clip(), params.replace(device="cuda"))
    assert gpu.info["flow_impl"] == "CudaFarnebackPyramidFlow"
    _meets_parity_bar(cpu, gpu)


@pytest.mark.skipif(shutil.which("nvcc") is None, reason="needs nvcc")
def test_frame_cuda_source_compiles_with_nvcc(tmp_path):
    import ast

    module = Path(__file__).resolve().parents[1] / "idt" / "_frame_cuda.py"
    source = next(ast.literal_eval(n.value) for n in ast.parse(module.read_text()).body
                  if isinstance(n, ast.Assign) and getattr(n.targets[0], "id", None) == "_SOURCE")
    ptx = _cuda_on_cpu.nvcc_ptx(source, tmp_path)
    for name in ("corner_min_eig", "mark_cells", "select_cells", "warp_perspective", "compensate_flow",
                 "compensate_flow_interior", "corner_min_eig_levels", "level_max", "mark_cells_levels",
                 "select_cells_levels"):
        assert f".entry {name}(" in ptx
