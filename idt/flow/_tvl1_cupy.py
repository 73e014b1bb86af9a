r"""TV-L1 optical flow on the GPU: the CPU solver of :mod:`idtfv.idt.flow.tvl1` as CuPy ``RawKernel`` s, batched.

Same algorithm, same order of operations per pixel and the same stopping rule as :mod:`idtfv.idt.flow._tvl1_nb`
(float32 state, float64 bicubic weights and error sums, no FMA contraction, the same bilinear pyramid), so the
two give the same flow within float tolerance.

Throughput comes from batching: a batch of ``B`` frame pairs of one size is solved together (``blockIdx.y`` is the
pair), so each of the ~10^4 kernel launches of a default-parameter solve does ``B`` pairs' work. The iteration
schedule is launched without host synchronisation: the primal kernel of iteration *k* writes one partial sum of
:math:`\|\Delta\mathbf u\|^2` per block, block 0 of each pair in the following dual kernel adds them up in a fixed
order into ``errs[b, k]`` (deterministic, no atomics), and every kernel of iteration *k* (and the median filter
before a group of iterations) returns at once for pair ``b`` when ``errs[b, k-1] <= eps`` -- exactly the CPU's
"stop the warp once an iteration changes the flow by less than :math:`\varepsilon`", per pair.

Without a GPU the kernels are still exercised: ``tests/_cuda_on_cpu.py`` compiles ``_SOURCE`` for the CPU (threads
of a block as fibers, IEEE arithmetic without FMA) and the tests check that this host code with those kernels gives
flow bit-identical to the CPU solver.

Importing this module needs CuPy; :func:`idtfv.idt.flow.estimate_flow` imports it lazily and falls back to the CPU
with a one-time warning when CuPy or a device is missing.
"""

from __future__ import annotations

import functools

import cupy as cp
import numpy as np

from idtfv.idt.flow.pyramid import PyramidOps, coarse_to_fine
from idtfv.idt.flow.tvl1 import TVL1Params, as_intensity
from idtfv.raw_kernels import function

__all__ = ["tvl1_flow_gpu", "tvl1_flow_gpu_batch", "solve_level_gpu", "GPU_OPS", "module"]

_BLOCK = 256

#: Frame pairs solved together at most: every launch's grid has one row of blocks per pair, the flow upscale's two
#: (``(2 B, h, w)`` planes), and CUDA caps ``gridDim.y`` at 65535; a larger batch is solved in parts.
MAX_BATCH = 65535 // 2

_SOURCE = r"""
// Every kernel: blockIdx.y = pair b of the batch, blockIdx.x * blockDim.x + threadIdx.x = pixel of that pair.
extern "C" {

__device__ __forceinline__ int clampi(int v, int lo, int hi) { return v < lo ? lo : (v > hi ? hi : v); }

// cv2.resize(INTER_LINEAR) sampling: sx = (x + 0.5) * scale - 0.5, clamped taps at the border.
__global__ void resize_linear(const float* src, int sh, int sw, float* dst, int dh, int dw,
                              double scale_y, double scale_x, float factor) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= dh * dw) return;
    src += (long long)blockIdx.y * sh * sw;
    dst += (long long)blockIdx.y * dh * dw;
    int y = i / dw, x = i - y * dw;
    double fy = (y + 0.5) * scale_y - 0.5, fx = (x + 0.5) * scale_x - 0.5;
    int y0 = (int)floor(fy), x0 = (int)floor(fx);
    float ty = (float)(fy - y0), tx = (float)(fx - x0);
    if (y0 < 0) { y0 = 0; ty = 0.f; }
    if (y0 >= sh - 1) { y0 = sh - 1; ty = 0.f; }
    if (x0 < 0) { x0 = 0; tx = 0.f; }
    if (x0 >= sw - 1) { x0 = sw - 1; tx = 0.f; }
    int y1 = min(y0 + 1, sh - 1), x1 = min(x0 + 1, sw - 1);
    float top = src[y0 * sw + x0] * (1.f - tx) + src[y0 * sw + x1] * tx;
    float bot = src[y1 * sw + x0] * (1.f - tx) + src[y1 * sw + x1] * tx;
    dst[i] = (top * (1.f - ty) + bot * ty) * factor;
}

__global__ void centered_gradient(const float* src, int h, int w, float* dx, float* dy) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= h * w) return;
    long long off = (long long)blockIdx.y * h * w;
    src += off; dx += off; dy += off;
    int y = i / w, x = i - y * w;
    int ym = y > 0 ? y - 1 : 0, yp = y < h - 1 ? y + 1 : h - 1;
    int xm = x > 0 ? x - 1 : 0, xp = x < w - 1 ? x + 1 : w - 1;
    dx[i] = 0.5f * (src[y * w + xp] - src[y * w + xm]);
    dy[i] = 0.5f * (src[yp * w + x] - src[ym * w + x]);
}

__device__ __forceinline__ void cubic_weights(double t, double a, double* wt) {
    double t1 = t + 1.0, s = 1.0 - t;
    wt[0] = ((a * t1 - 5.0 * a) * t1 + 8.0 * a) * t1 - 4.0 * a;
    wt[1] = ((a + 2.0) * t - (a + 3.0)) * t * t + 1.0;
    wt[2] = ((a + 2.0) * s - (a + 3.0)) * s * s + 1.0;
    wt[3] = 1.0 - wt[0] - wt[1] - wt[2];
}

__global__ void warp_linearise(const float* i0, const float* i1, const float* i1x, const float* i1y,
                               const float* u1, const float* u2, int h, int w, double a,
                               float* i1wx, float* i1wy, float* grad, float* rho_c) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= h * w) return;
    long long off = (long long)blockIdx.y * h * w;
    i0 += off; i1 += off; i1x += off; i1y += off; u1 += off; u2 += off;
    i1wx += off; i1wy += off; grad += off; rho_c += off;
    int y = i / w, x = i - y * w;
    double fx = x + (double)u1[i], fy = y + (double)u2[i];
    if (!(fx > -4.0 && fx < w + 3.0 && fy > -4.0 && fy < h + 3.0)) {
        i1wx[i] = 0.f; i1wy[i] = 0.f; grad[i] = 0.f; rho_c[i] = -i0[i];
        return;
    }
    int ix = (int)floor(fx), iy = (int)floor(fy);
    double wx[4], wy[4];
    cubic_weights(fx - ix, a, wx);
    cubic_weights(fy - iy, a, wy);
    // taps outside the image read 0; sums in the CPU kernel's order (row sums left to right, rows top down)
    double s = 0.0, sx = 0.0, sy = 0.0;
    for (int j = 0; j < 4; ++j) {
        int yy = iy - 1 + j;
        double rs = 0.0, rsx = 0.0, rsy = 0.0;
        for (int k = 0; k < 4; ++k) {
            int xx = ix - 1 + k;
            bool in = yy >= 0 && yy < h && xx >= 0 && xx < w;
            int q = in ? yy * w + xx : 0;
            double v = in ? (double)i1[q] : 0.0, vx = in ? (double)i1x[q] : 0.0, vy = in ? (double)i1y[q] : 0.0;
            if (k == 0) { rs = wx[0] * v; rsx = wx[0] * vx; rsy = wx[0] * vy; }
            else { rs += wx[k] * v; rsx += wx[k] * vx; rsy += wx[k] * vy; }
        }
        if (j == 0) { s = wy[0] * rs; sx = wy[0] * rsx; sy = wy[0] * rsy; }
        else { s += wy[j] * rs; sx += wy[j] * rsx; sy += wy[j] * rsy; }
    }
    float gx = (float)sx, gy = (float)sy;
    i1wx[i] = gx; i1wy[i] = gy;
    grad[i] = gx * gx + gy * gy;
    rho_c[i] = (float)s - gx * u1[i] - gy * u2[i] - i0[i];
}

// Thresholding + primal step; one partial sum of |du|^2 per block into partial[b * gridDim.x + blockIdx.x].
__global__ void primal(const float* i1wx, const float* i1wy, const float* grad, const float* rho_c,
                       float* u1, float* u2, const float* p11, const float* p12, const float* p21,
                       const float* p22, int h, int w, float lt, float theta, float grad_floor,
                       const double* errs, int errs_stride, int k, double eps, double* partial) {
    __shared__ double acc[256];
    if (errs[(long long)blockIdx.y * errs_stride + k - 1] <= eps) return;
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    long long off = (long long)blockIdx.y * h * w;
    double e = 0.0;
    if (i < h * w) {
        i1wx += off; i1wy += off; grad += off; rho_c += off; u1 += off; u2 += off;
        p11 += off; p12 += off; p21 += off; p22 += off;
        int y = i / w, x = i - y * w;
        float g = grad[i], ix = i1wx[i], iy = i1wy[i], a1 = u1[i], a2 = u2[i];
        float rho = rho_c[i] + (ix * a1 + iy * a2);
        float ltg = lt * g;
        // OpenCV's branch order: rho < -lt g, then rho > lt g, then |grad|^2 > floor (as the CPU selects)
        float fi = g > grad_floor ? -rho / g : 0.f;
        if (rho > ltg) fi = -lt;
        if (rho < -ltg) fi = lt;
        // same operation order as the CPU kernel (idtfv.idt.flow._tvl1_nb._primal_row)
        float l1 = x > 0 ? p11[i - 1] : 0.f, l2 = x > 0 ? p21[i - 1] : 0.f;
        float t1 = y > 0 ? p12[i - w] : 0.f, t2 = y > 0 ? p22[i - w] : 0.f;
        float div1 = p11[i] - l1 + p12[i] - t1, div2 = p21[i] - l2 + p22[i] - t2;
        float n1 = a1 + fi * ix + theta * div1, n2 = a2 + fi * iy + theta * div2;
        u1[i] = n1; u2[i] = n2;
        float e1 = n1 - a1, e2 = n2 - a2;
        e = (double)(e1 * e1 + e2 * e2);
    }
    acc[threadIdx.x] = e;
    __syncthreads();
    for (int r = blockDim.x / 2; r > 0; r >>= 1) {
        if (threadIdx.x < r) acc[threadIdx.x] += acc[threadIdx.x + r];
        __syncthreads();
    }
    if (threadIdx.x == 0) partial[(long long)blockIdx.y * gridDim.x + blockIdx.x] = acc[0];
}

// Dual step; block 0 of each pair also reduces that pair's primal partial sums (fixed order) into errs[b, k].
__global__ void dual(const float* u1, const float* u2, float* p11, float* p12, float* p21, float* p22,
                     int h, int w, float taut, double* errs, int errs_stride, int k, double eps,
                     const double* partial) {
    __shared__ double acc[256];
    long long eb = (long long)blockIdx.y * errs_stride;
    if (errs[eb + k - 1] <= eps) return;
    if (blockIdx.x == 0) {
        const double* part = partial + (long long)blockIdx.y * gridDim.x;
        double s = 0.0;
        for (int j = threadIdx.x; j < gridDim.x; j += blockDim.x) s += part[j];
        acc[threadIdx.x] = s;
        __syncthreads();
        for (int r = blockDim.x / 2; r > 0; r >>= 1) {
            if (threadIdx.x < r) acc[threadIdx.x] += acc[threadIdx.x + r];
            __syncthreads();
        }
        if (threadIdx.x == 0) errs[eb + k] = acc[0];
    }
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= h * w) return;
    long long off = (long long)blockIdx.y * h * w;
    u1 += off; u2 += off; p11 += off; p12 += off; p21 += off; p22 += off;
    int y = i / w, x = i - y * w;
    float a1 = u1[i], a2 = u2[i];
    float u1x = 0.f, u2x = 0.f, u1y = 0.f, u2y = 0.f;
    if (x < w - 1) { u1x = u1[i + 1] - a1; u2x = u2[i + 1] - a2; }
    if (y < h - 1) { u1y = u1[i + w] - a1; u2y = u2[i + w] - a2; }
    float r1 = 1.f / (1.f + taut * sqrtf(u1x * u1x + u1y * u1y));
    float r2 = 1.f / (1.f + taut * sqrtf(u2x * u2x + u2y * u2y));
    p11[i] = (p11[i] + taut * u1x) * r1;
    p12[i] = (p12[i] + taut * u1y) * r1;
    p21[i] = (p21[i] + taut * u2x) * r2;
    p22[i] = (p22[i] + taut * u2y) * r2;
}

// ksize x ksize median (3 or 5), replicated border (as cv2.medianBlur); a plain copy once the pair has converged.
__global__ void median(const float* src, float* dst, int h, int w, int ksize,
                       const double* errs, int errs_stride, int k, double eps) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= h * w) return;
    long long off = (long long)blockIdx.y * h * w;
    src += off; dst += off;
    if (errs[(long long)blockIdx.y * errs_stride + k - 1] <= eps) { dst[i] = src[i]; return; }
    int y = i / w, x = i - y * w, r = ksize / 2, n = 0;
    float v[25];
    for (int dy = -r; dy <= r; ++dy) {
        int yy = clampi(y + dy, 0, h - 1);
        for (int dx = -r; dx <= r; ++dx) v[n++] = src[yy * w + clampi(x + dx, 0, w - 1)];
    }
    int m = n / 2;
    for (int a = 0; a <= m; ++a) {          // partial selection sort up to the median
        int best = a;
        for (int b = a + 1; b < n; ++b) if (v[b] < v[best]) best = b;
        float t = v[a]; v[a] = v[best]; v[best] = t;
    }
    dst[i] = v[m];
}

}
"""


@functools.lru_cache(maxsize=None)
def module():
    """The compiled ``cupy.RawModule`` (one per process; FMA contraction off to match the CPU)."""
    return cp.RawModule(code=_SOURCE, options=("--fmad=false",))


def _kernel(name):
    return function(module(), name)


def _grid(n, batch):
    return ((n + _BLOCK - 1) // _BLOCK, batch)


def _resize(src, dh, dw, scale_y, scale_x, factor=1.0):
    """``src (B, sh, sw)`` -> ``(B, dh, dw)``."""
    b, sh, sw = src.shape
    dst = cp.empty((b, dh, dw), cp.float32)
    _kernel("resize_linear")(
        _grid(dh * dw, b), (_BLOCK,),
        (src, np.int32(sh), np.int32(sw), dst, np.int32(dh), np.int32(dw),
         np.float64(scale_y), np.float64(scale_x), np.float32(factor)),
    )  # fmt: skip
    return dst


def _gpu_downscale(img, size, eta):
    w, h = size  # OpenCV: dsize = round(size * eta) (half to even, see scaled_sizes), sampling step 1/eta
    return _resize(img, h, w, 1.0 / eta, 1.0 / eta)


def _gpu_upscale_flow(u, shape, factor):
    b, _, sh, sw = u.shape
    h, w = shape
    flat = cp.ascontiguousarray(u).reshape(b * 2, sh, sw)  # (B, 2, h, w) -> (2B, h, w)
    return _resize(flat, h, w, sh / h, sw / w, factor).reshape(b, 2, h, w)


#: CuPy implementation of :class:`idtfv.idt.flow.pyramid.PyramidOps` on batches: images ``(B, h, w)``, flows
#: ``(B, 2, h, w)``.
GPU_OPS = PyramidOps(
    downscale=_gpu_downscale,
    upscale_flow=_gpu_upscale_flow,
    zeros_flow=lambda img: cp.zeros((img.shape[0], 2, *img.shape[1:]), cp.float32),
)


def solve_level_gpu(i0, i1, u, params: TVL1Params):
    """GPU twin of :func:`idtfv.idt.flow.tvl1.solve_level_cpu` for a batch.

    ``i0, i1 (B, h, w)`` and ``u (B, 2, h, w)`` CuPy float32 (0..255 intensities); returns the refined
    ``(B, 2, h, w)`` flow. Each pair stops its warps on its own, as on the CPU.
    """
    from idtfv.idt.flow._tvl1_nb import CUBIC_A

    b, h, w = i0.shape
    grid = _grid(h * w, b)
    blk = (_BLOCK,)
    ih, iw = np.int32(h), np.int32(w)
    u1 = cp.ascontiguousarray(u[:, 0]).copy()
    u2 = cp.ascontiguousarray(u[:, 1]).copy()
    t1 = cp.empty_like(u1)
    t2 = cp.empty_like(u2)
    i1x = cp.empty((b, h, w), cp.float32)
    i1y = cp.empty((b, h, w), cp.float32)
    _kernel("centered_gradient")(grid, blk, (i1, ih, iw, i1x, i1y))
    i1wx, i1wy, grad, rho_c = (cp.empty((b, h, w), cp.float32) for _ in range(4))
    p11, p12, p21, p22 = (cp.zeros((b, h, w), cp.float32) for _ in range(4))
    partial = cp.zeros((b, grid[0]), cp.float64)
    lt = np.float32(params.lambda_ * params.theta)
    theta = np.float32(params.theta)
    taut = np.float32(params.tau / params.theta)
    eps = np.float64(np.float32(params.epsilon * params.epsilon * h * w))
    floor = np.float32(np.finfo(np.float32).eps)
    n_inner, n_outer = params.inner_iterations, params.outer_iterations
    stride = np.int32(n_inner * n_outer + 1)
    k_med = np.int32(params.median_filtering)
    warp_k, primal_k, dual_k, median_k = (_kernel(s) for s in ("warp_linearise", "primal", "dual", "median"))
    errs = cp.empty((b, int(stride)), cp.float64)
    for _ in range(params.warps):
        warp_k(grid, blk, (i0, i1, i1x, i1y, u1, u2, ih, iw, np.float64(CUBIC_A), i1wx, i1wy, grad, rho_c))
        # errs[:, k] = sum |du|^2 of iteration k; errs[:, 0] = inf starts the warp; 0 = not run (converged)
        errs.fill(0.0)
        errs[:, 0] = np.inf
        k = 1
        for _o in range(n_outer):
            kk = np.int32(k)
            if k_med > 1:
                median_k(grid, blk, (u1, t1, ih, iw, k_med, errs, stride, kk, eps))
                median_k(grid, blk, (u2, t2, ih, iw, k_med, errs, stride, kk, eps))
                u1, t1 = t1, u1
                u2, t2 = t2, u2
            for _i in range(n_inner):
                kk = np.int32(k)
                primal_k(grid, blk, (i1wx, i1wy, grad, rho_c, u1, u2, p11, p12, p21, p22, ih, iw,
                                     lt, theta, floor, errs, stride, kk, eps, partial))  # fmt: skip
                dual_k(grid, blk, (u1, u2, p11, p12, p21, p22, ih, iw, taut, errs, stride, kk, eps, partial))
                k += 1
    return cp.stack([u1, u2], axis=1)


def tvl1_flow_gpu_batch(prevs, nexts, *, params: TVL1Params | None = None) -> np.ndarray:
    """TV-L1 flows ``(B, h, w, 2)`` float32 (NumPy) of ``B`` frame pairs of one size, solved together on the GPU.

    ``prevs, nexts`` are ``(B, h, w)`` uint8 (0..255) or float32 (0..1) arrays (or sequences of ``(h, w)``); more
    than :data:`MAX_BATCH` pairs are solved :data:`MAX_BATCH` at a time.
    """
    params = (params or TVL1Params()).validate()
    prevs, nexts = list(prevs), list(nexts)
    if len(prevs) > MAX_BATCH:  # the pairs are independent: the same bytes as one batch
        return np.concatenate([tvl1_flow_gpu_batch(prevs[i:i + MAX_BATCH], nexts[i:i + MAX_BATCH], params=params)
                               for i in range(0, len(prevs), MAX_BATCH)])
    a = cp.asarray(np.stack([as_intensity(x) for x in prevs]))
    b = cp.asarray(np.stack([as_intensity(x) for x in nexts]))
    u = coarse_to_fine(
        a, b, lambda x0, x1, v: solve_level_gpu(x0, x1, v, params),
        n_scales=params.n_scales, scale_step=params.scale_step, ops=GPU_OPS,
    )  # fmt: skip
    return np.ascontiguousarray(np.moveaxis(cp.asnumpy(u), 1, -1))


def tvl1_flow_gpu(i0, i1, *, params: TVL1Params | None = None) -> np.ndarray:
    """TV-L1 flow ``(h, w, 2)`` float32 (NumPy) from ``i0`` to ``i1`` on the current CUDA device."""
    return tvl1_flow_gpu_batch([i0], [i1], params=params)[0]
