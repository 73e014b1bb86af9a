"""TV-L1 on the GPU (CuPy) against the CPU (Numba) path; skipped without CuPy and a CUDA device."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from idtfv.idt.flow import TVL1Params, estimate_flow, estimate_flow_batch, gpu_available

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

    from idtfv.idt.flow._tvl1_cupy import GPU_OPS
    from idtfv.idt.flow.pyramid import CPU_OPS

    img = _texture(61, 83, 1)
    for eta in (0.8, 0.5):
        size = (round(83 * eta), round(61 * eta))
        gpu = cp.asnumpy(GPU_OPS.downscale(cp.asarray(img[None]), size, eta))[0]  # the GPU ops take batches
        np.testing.assert_allclose(gpu, CPU_OPS.downscale(img, size, eta), atol=1e-4)
    u = np.stack([_texture(20, 30, 2), _texture(20, 30, 3)]) / 255
    np.testing.assert_allclose(cp.asnumpy(GPU_OPS.upscale_flow(cp.asarray(u[None]), (25, 37), 1.25))[0],
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
@pytest.mark.skipif(not (VIDEOS / "bikes_320x240.avi").exists(), reason="needs ../shared/reference/videos")
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
def test_gpu_small_batch_for_the_sanitizer_matches_cpu():
    """Every TV-L1 kernel (resize, gradient, warp, primal, dual, median) on a batch small enough for
    compute-sanitizer's racecheck, which instruments each shared-memory access (the full batch above did not finish
    under it in 170 s on an H200): 2 pairs of 24x32, 2 scales, 2 warps, 3 inner x 2 outer iterations."""
    params = TVL1Params(n_scales=2, warps=2, inner_iterations=3, outer_iterations=2)
    pairs = [_planted(24, 32, seed=s)[:2] for s in (5, 6)]
    batch = estimate_flow_batch([p[0] for p in pairs], [p[1] for p in pairs], backend="gpu", params=params)
    for (a, b), got in zip(pairs, batch):
        want = estimate_flow(a, b, backend="cpu", params=params)
        assert np.abs(want).max() > 0.05  # the solver moved: the kernels ran on real work
        assert np.linalg.norm(got - want, axis=-1).mean() < 5e-3


@pytest.mark.gpu
@needs_gpu
def test_gpu_identical_frames_zero_flow():
    img = _texture(40, 56, 3).astype(np.uint8)
    assert np.all(estimate_flow(img, img, backend="gpu") == 0)


@pytest.mark.skipif(__import__("shutil").which("nvcc") is None, reason="needs nvcc")
def test_cuda_source_compiles_with_nvcc(tmp_path):
    import ast

    import _cuda_on_cpu

    module = Path(__file__).resolve().parents[1] / "idt" / "flow" / "_tvl1_cupy.py"
    tree = ast.parse(module.read_text())
    (source,) = [n.value.value for n in tree.body
                 if isinstance(n, ast.Assign) and getattr(n.targets[0], "id", None) == "_SOURCE"]
    ptx = _cuda_on_cpu.nvcc_ptx(source, tmp_path)
    for name in ("resize_linear", "centered_gradient", "warp_linearise", "primal", "dual", "median"):
        assert f".entry {name}(" in ptx


# ------------------------------------------------------------------------------------------------------------------
# Without a GPU, the CUDA C itself: the same source string, compiled for the CPU by tests/_cuda_on_cpu.py (threads
# of a block as fibers, __syncthreads as a barrier, IEEE float without FMA as --fmad=false asks), driven by the
# real host code. It runs the GPU's arithmetic in the GPU's order, so it checks the kernels' indexing, borders,
# reductions and convergence flags; not races or speed.
# ------------------------------------------------------------------------------------------------------------------
@pytest.mark.skipif(not __import__("_cuda_on_cpu").available(), reason="needs g++ on x86-64")
def test_cuda_kernels_run_on_cpu_match_cpu_solver(monkeypatch, tmp_path):
    import importlib
    import sys

    import _cuda_on_cpu

    monkeypatch.setitem(sys.modules, "cupy", _cuda_on_cpu.fake_cupy(tmp_path))
    monkeypatch.delitem(sys.modules, "idtfv.idt.flow._tvl1_cupy", raising=False)
    gpu_mod = importlib.import_module("idtfv.idt.flow._tvl1_cupy")
    try:
        pairs = [_planted(36, 44, seed=s) for s in (8, 9)]
        pairs.append((pairs[1][1], pairs[1][1], None))  # identical frames: converges at once, the others go on
        small = TVL1Params(n_scales=3, warps=3, inner_iterations=10, outer_iterations=3, epsilon=0.001)
        for params in (small, TVL1Params.fast(), TVL1Params()):
            batch = gpu_mod.tvl1_flow_gpu_batch([p[0] for p in pairs], [p[1] for p in pairs], params=params)
            assert batch.shape == (3, 36, 44, 2) and batch.dtype == np.float32
            for (a, b, _), got in zip(pairs[:2], batch):
                cpu = estimate_flow(a, b, backend="cpu", params=params)
                d = np.linalg.norm(got - cpu, axis=-1)
                assert d.mean() < 1e-4 and d.max() < 1e-2, (d.mean(), d.max())
            assert np.all(batch[2] == 0)
        # the kernels really moved the flow: the planted truth is recovered (away from the border)
        truth = pairs[0][2]
        assert np.linalg.norm(batch[0] - truth, axis=-1)[6:-6, 6:-6].mean() < 0.5
    finally:  # not left in sys.modules bound to the stand-in cupy (delitem above recorded nothing to restore)
        monkeypatch.delitem(sys.modules, "idtfv.idt.flow._tvl1_cupy")
