"""TV-L1 on the GPU (CuPy) against the CPU (Numba) path; skipped without CuPy and a CUDA device."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from idt.flow import TVL1Params, estimate_flow, estimate_flow_batch, gpu_available

needs_gpu = pytest.mark.skipif(not gpu_available(), reason="needs CuPy and a CUDA device")

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
VIDEOS = SHARED / "reference" / "videos"


def _texture(h, w, seed):
    rng = np.random.default_rng(seed)
    img = cv2.GaussianBlur(rng.normal(size=(h, w)).astype(np.float32), (0, 0), 1.5)
    return cv2.normalize(img, None, 0, 255, cv2.NORM_MINMAX)


def _planted(h=96, w=128, seed=0):
    i1 = _texture(h, w, seed)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    u = 1.5 * np.sin(2 * np.pi * yy / h) + 0.8 * np.cos(2 * np.pi * xx / w)
    v = 1.2 * np.cos(2 * np.pi * (xx + yy) / (h + w)) - 0.5
    i0 = cv2.remap(i1, xx + u, yy + v, cv2.INTER_CUBIC, borderMode=cv2.BORDER_REFLECT)
    return np.clip(i0, 0, 255).astype(np.uint8), i1.astype(np.uint8), np.stack([u, v], -1)


@pytest.mark.gpu
@needs_gpu
def test_gpu_pyramid_ops_match_cpu_ops():
    import cupy as cp

    from idt.flow._tvl1_cupy import GPU_OPS
    from idt.flow.pyramid import CPU_OPS

    img = _texture(61, 83, 1)
    for eta in (0.8, 0.5):
        np.testing.assert_allclose(cp.asnumpy(GPU_OPS.downscale(cp.asarray(img), eta)), CPU_OPS.downscale(img, eta),
                                   atol=1e-4)
    u = np.stack([_texture(20, 30, 2), _texture(20, 30, 3)]) / 255
    np.testing.assert_allclose(cp.asnumpy(GPU_OPS.upscale_flow(cp.asarray(u), (25, 37), 1.25)),
                               CPU_OPS.upscale_flow(u, (25, 37), 1.25), atol=1e-5)


@pytest.mark.gpu
@needs_gpu
@pytest.mark.parametrize("preset", ["default", "fast"])
def test_gpu_matches_cpu_on_planted_flow(preset):
    a, b, truth = _planted()
    params = TVL1Params() if preset == "default" else TVL1Params.fast()
    cpu = estimate_flow(a, b, backend="cpu", params=params)
    gpu = estimate_flow(a, b, backend="gpu", params=params)
    assert gpu.shape == cpu.shape and gpu.dtype == np.float32
    # same arithmetic on both sides (no FMA, IEEE division/sqrt); only the order of the convergence sums differs,
    # which can move the stopping iteration of a warp. For scale: perturbing the input by 1e-6 moves the CPU flow
    # by ~0.01 px on average.
    d = np.linalg.norm(gpu - cpu, axis=-1)
    assert d.mean() < 5e-3 and np.percentile(d, 99) < 5e-2
    assert np.linalg.norm(gpu - truth, axis=-1)[8:-8, 8:-8].mean() < 0.3


@pytest.mark.gpu
@needs_gpu
@pytest.mark.skipif(not VIDEOS.exists(), reason="needs ../shared/reference/videos")
def test_gpu_matches_cpu_on_real_frames():
    cap = cv2.VideoCapture(str(VIDEOS / "bikes_320x240.avi"))
    frames = [cv2.cvtColor(cap.read()[1], cv2.COLOR_BGR2GRAY) for _ in range(32)]
    cap.release()
    a, b = frames[30], frames[31]
    cpu = estimate_flow(a, b, backend="cpu")
    gpu = estimate_flow(a, b, backend="gpu")
    assert np.linalg.norm(gpu - cpu, axis=-1).mean() < 5e-3


@pytest.mark.gpu
@needs_gpu
def test_gpu_batch_matches_cpu_per_pair():
    pairs = [_planted(60, 80, seed=s)[:2] for s in (1, 2, 3, 4)]
    batch = estimate_flow_batch([p[0] for p in pairs], [p[1] for p in pairs], backend="gpu")
    for (a, b), got in zip(pairs, batch):
        assert np.linalg.norm(got - estimate_flow(a, b, backend="cpu"), axis=-1).mean() < 5e-3


@pytest.mark.gpu
@needs_gpu
def test_gpu_identical_frames_zero_flow():
    img = _texture(40, 56, 3).astype(np.uint8)
    assert np.all(estimate_flow(img, img, backend="gpu") == 0)


# ------------------------------------------------------------------------------------------------------------------
# Without a GPU: run the GPU host code (pyramid ops, kernel schedule, convergence flags, median ping-pong) against a
# NumPy emulation of the six CUDA kernels, launch by launch, and compare with the CPU path. This checks everything
# except the CUDA C itself (which mirrors the Numba kernels line by line and is compile-checked with nvcc when
# available).
# ------------------------------------------------------------------------------------------------------------------
class _FakeKernels:
    """NumPy versions of the kernels in ``idt.flow._tvl1_cupy._SOURCE`` (same arguments, same semantics; the
    batch axis is ``grid[1]``)."""

    BLOCK = 256

    @staticmethod
    def resize_linear(grid, block, args):
        src, sh, sw, dst, dh, dw, scale_y, scale_x, factor = args
        y = (np.arange(dh) + 0.5) * scale_y - 0.5
        x = (np.arange(dw) + 0.5) * scale_x - 0.5
        y0, x0 = np.floor(y).astype(int), np.floor(x).astype(int)
        ty, tx = (y - y0).astype(np.float32), (x - x0).astype(np.float32)
        ty[y0 < 0], tx[x0 < 0] = 0, 0
        y0, x0 = np.maximum(y0, 0), np.maximum(x0, 0)
        ty[y0 >= sh - 1], tx[x0 >= sw - 1] = 0, 0
        y0, x0 = np.minimum(y0, sh - 1), np.minimum(x0, sw - 1)
        y1, x1 = np.minimum(y0 + 1, sh - 1), np.minimum(x0 + 1, sw - 1)
        tx, ty = tx[None, :], ty[:, None]
        one = np.float32(1)
        for b in range(grid[1]):
            s = src[b]
            top = s[y0][:, x0] * (one - tx) + s[y0][:, x1] * tx
            bot = s[y1][:, x0] * (one - tx) + s[y1][:, x1] * tx
            dst[b] = (top * (one - ty) + bot * ty) * factor

    @staticmethod
    def centered_gradient(grid, block, args):
        src, h, w, dx, dy = args
        for b in range(grid[1]):
            s = src[b]
            xm, xp = np.r_[0, 0:w - 1], np.r_[1:w, w - 1]
            ym, yp = np.r_[0, 0:h - 1], np.r_[1:h, h - 1]
            dx[b] = np.float32(0.5) * (s[:, xp] - s[:, xm])
            dy[b] = np.float32(0.5) * (s[yp] - s[ym])

    @staticmethod
    def warp_linearise(grid, block, args):
        i0, i1, i1x, i1y, u1, u2, h, w, a, i1wx, i1wy, grad, rho_c = args
        yy, xx = np.mgrid[0:h, 0:w]
        for b in range(grid[1]):
            fx, fy = xx + u1[b].astype(np.float64), yy + u2[b].astype(np.float64)
            ix, iy = np.floor(fx).astype(int), np.floor(fy).astype(int)

            def weights(t):
                t1, s = t + 1.0, 1.0 - t
                w0 = ((a * t1 - 5.0 * a) * t1 + 8.0 * a) * t1 - 4.0 * a
                w1 = ((a + 2.0) * t - (a + 3.0)) * t * t + 1.0
                w2 = ((a + 2.0) * s - (a + 3.0)) * s * s + 1.0
                return [w0, w1, w2, 1.0 - w0 - w1 - w2]

            wx, wy = weights(fx - ix), weights(fy - iy)
            out = []
            for img in (i1[b], i1x[b], i1y[b]):
                total = 0.0
                for j in range(4):
                    row = 0.0
                    for k in range(4):
                        r, c = iy - 1 + j, ix - 1 + k
                        inside = (r >= 0) & (r < h) & (c >= 0) & (c < w)
                        v = np.where(inside, img[np.clip(r, 0, h - 1), np.clip(c, 0, w - 1)], 0).astype(np.float64)
                        row = row + wx[k] * v
                    total = total + wy[j] * row
                out.append(total)
            far = ~((fx > -4) & (fx < w + 3) & (fy > -4) & (fy < h + 3))
            gx, gy = out[1].astype(np.float32), out[2].astype(np.float32)
            gx[far], gy[far] = 0, 0
            i1wx[b], i1wy[b], grad[b] = gx, gy, gx * gx + gy * gy
            rho_c[b] = np.where(far, -i0[b], out[0].astype(np.float32) - gx * u1[b] - gy * u2[b] - i0[b])

    @classmethod
    def primal(cls, grid, block, args):
        (i1wx, i1wy, grad, rho_c, u1, u2, p11, p12, p21, p22, h, w, lt, theta, floor, errs, stride, k, eps,
         partial) = args
        for b in range(grid[1]):
            if errs[b, k - 1] <= eps:
                continue
            g, ix, iy, a1, a2 = grad[b], i1wx[b], i1wy[b], u1[b].copy(), u2[b].copy()
            rho = rho_c[b] + (ix * a1 + iy * a2)
            big = g > floor
            fi = np.where(big, -rho / np.where(big, g, np.float32(1)), np.float32(0))
            fi = np.where(rho > lt * g, -lt, fi)
            fi = np.where(rho < -lt * g, lt, fi).astype(np.float32)
            div = []
            for pa, pb in ((p11[b], p12[b]), (p21[b], p22[b])):
                left = np.zeros_like(pa)
                left[:, 1:] = pa[:, :-1]
                up = np.zeros_like(pb)
                up[1:] = pb[:-1]
                div.append(pa - left + pb - up)
            n1 = a1 + fi * ix + theta * div[0]
            n2 = a2 + fi * iy + theta * div[1]
            e = ((n1 - a1) * (n1 - a1) + (n2 - a2) * (n2 - a2)).astype(np.float64).ravel()
            e = np.concatenate([e, np.zeros(grid[0] * cls.BLOCK - e.size)])
            partial[b] = e.reshape(grid[0], cls.BLOCK).sum(axis=1)
            u1[b], u2[b] = n1, n2

    @staticmethod
    def dual(grid, block, args):
        u1, u2, p11, p12, p21, p22, h, w, taut, errs, stride, k, eps, partial = args
        one = np.float32(1)
        for b in range(grid[1]):
            if errs[b, k - 1] <= eps:
                continue
            errs[b, k] = partial[b].sum()
            for u, pa, pb in ((u1[b], p11[b], p12[b]), (u2[b], p21[b], p22[b])):
                gx = np.zeros_like(u)
                gy = np.zeros_like(u)
                gx[:, :-1] = u[:, 1:] - u[:, :-1]
                gy[:-1] = u[1:] - u[:-1]
                r = one / (one + taut * np.sqrt(gx * gx + gy * gy))
                pa[...] = (pa + taut * gx) * r
                pb[...] = (pb + taut * gy) * r

    @staticmethod
    def median(grid, block, args):
        src, dst, h, w, ksize, errs, stride, k, eps = args
        for b in range(grid[1]):
            dst[b] = src[b] if errs[b, k - 1] <= eps else cv2.medianBlur(src[b], int(ksize))


def _fake_cupy():
    import types

    cp = types.ModuleType("cupy")
    for name in ("float32", "float64", "int32", "empty", "zeros", "empty_like", "ascontiguousarray", "stack", "inf"):
        setattr(cp, name, getattr(np, name))
    cp.asarray = np.asarray
    cp.asnumpy = np.asarray

    class RawModule:
        def __init__(self, code, options=()):
            self.code = code

        def get_function(self, name):
            assert f"__global__ void {name}(" in self.code
            return getattr(_FakeKernels, name)

    cp.RawModule = RawModule
    return cp


@pytest.mark.skipif(gpu_available(), reason="the real GPU tests above run instead")
def test_gpu_host_code_with_emulated_kernels_matches_cpu(monkeypatch):
    import importlib
    import sys

    monkeypatch.setitem(sys.modules, "cupy", _fake_cupy())
    monkeypatch.delitem(sys.modules, "idt.flow._tvl1_cupy", raising=False)
    gpu_mod = importlib.import_module("idt.flow._tvl1_cupy")
    try:
        pairs = [_planted(40, 52, seed=s)[:2] for s in (5, 6, 7)]
        pairs[2] = (pairs[2][1], pairs[2][1])  # identical frames: converges at once, the others keep going
        for params in (TVL1Params(), TVL1Params.fast()):
            batch = gpu_mod.tvl1_flow_gpu_batch([p[0] for p in pairs], [p[1] for p in pairs], params=params)
            assert batch.shape == (3, 40, 52, 2) and batch.dtype == np.float32
            for (a, b), got in zip(pairs, batch):
                np.testing.assert_allclose(got, estimate_flow(a, b, backend="cpu", params=params), atol=1e-5)
            assert np.all(batch[2] == 0)
    finally:
        monkeypatch.delitem(sys.modules, "idt.flow._tvl1_cupy")


@pytest.mark.skipif(__import__("shutil").which("nvcc") is None, reason="needs nvcc")
def test_cuda_source_compiles_with_nvcc(tmp_path):
    import ast
    import subprocess

    module = Path(__file__).resolve().parents[1] / "idt" / "flow" / "_tvl1_cupy.py"
    tree = ast.parse(module.read_text())
    (source,) = [n.value.value for n in tree.body
                 if isinstance(n, ast.Assign) and getattr(n.targets[0], "id", None) == "_SOURCE"]
    (tmp_path / "k.cu").write_text(source)
    res = subprocess.run(["nvcc", "-ptx", "--fmad=false", "-o", str(tmp_path / "k.ptx"), str(tmp_path / "k.cu")],
                         capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    ptx = (tmp_path / "k.ptx").read_text()
    for name in ("resize_linear", "centered_gradient", "warp_linearise", "primal", "dual", "median"):
        assert f".entry {name}(" in ptx
