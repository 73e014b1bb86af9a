r"""CUDA kernels (CuPy ``RawModule``): dense sampling and camera compensation of one frame on the device.

The device twins of the extractor's steps 3 and 7 that touch whole frames (:mod:`idtfv.idt.sampling`,
:mod:`idtfv.idt.camera`); the homography fit itself (keypoints, matching, RANSAC) stays on the CPU.

Kernels (one thread per pixel, per point or per grid cell):

- ``corner_min_eig``: ``cv2.cornerMinEigenVal(gray, 3, ksize=3)`` of a uint8 level (the extractor's
  pyramid levels are uint8). OpenCV scales the Sobel taps by :math:`1/(4 \cdot 3 \cdot 255)` for uint8 (the scale
  goes into the smoothing half of each separable Sobel: ``f1 = float(1/3060)``, ``f0 = float(2/3060)``), sums the
  structure tensor ``dx*dx, dx*dy, dy*dy`` (float32 products) over 3x3 in float64 (``boxFilter`` of float32 sums in
  double) and takes ``(a + c) - sqrt((a - c)^2 + b^2)`` with ``a, c`` half the diagonal, all with
  BORDER_REFLECT_101. The kernels do exactly that arithmetic. Two details follow OpenCV's AVX2 code, whose rounding
  they reproduce: the x derivative's column filter is ``fma(S0 + S2, f1, S1 * f0)``, and the y derivative's row
  filter ``fma(C, f1, fma(B, f0, A * f1))`` on the columns OpenCV's vector loop covers (whole blocks of
  :data:`OPENCV_ROW_BLOCK` columns) and ``(A * f1 + B * f0) + C * f1`` (its scalar remainder) beyond. The box sum is
  exact in float64 (products of float32 Sobel values of a uint8 image span fewer than 53 bits), so its order does
  not matter. Result: **bit-identical** to ``cv2.cornerMinEigenVal`` of an OpenCV build that dispatches AVX2 (the
  usual wheels on x86-64); elsewhere within a few float32 ulps.
- ``mark_cells`` then ``select_cells``: the grid selection of :func:`idtfv.idt._tracking_nb.sample_grid`
  (occupied cells by ``floor`` of the live points; an empty cell's centre is kept when its response exceeds
  ``quality * max`` compared in float64); the selected cells come back as one byte per cell, and their centres are
  listed in row-major order on the host, so the points are the CPU's, in the CPU's order. Bit-identical given the
  same response. ``corner_min_eig_levels``, ``level_max``, ``mark_cells_levels``, ``select_cells_levels``
  (:func:`dense_sample_levels`): the same for every level of a frame in one launch each and one download, the
  levels end to end in one buffer each with a device table (:func:`sampling_table`) from which a thread finds its
  level.
- ``warp_perspective``: frame t warped into frame t-1's camera, ``cv2.warpPerspective(gray, H, INTER_LINEAR |
  WARP_INVERSE_MAP)`` with a constant 0 border, as OpenCV (>= 4.11) computes it on its scalar path: the
  homography rounded to float32, the source point ``(x m0 + (y m1 + m2)) / (x m6 + (y m7 + m8))`` in float32, the
  bilinear blend ``v0 + beta (v1 - v0)`` of ``p00 + alpha (p01 - p00)`` rows, rounded half to even; then the
  reference's border rule of :func:`idtfv.idt._warp_nb.fill_border` (float64) takes frame t-1's pixel where
  :math:`Hx` is not ``margin`` px inside the frame. Bit-identical to ``warpPerspective`` with
  ``cv2.setUseOptimized(False)``; OpenCV's SIMD path rounds a few blends that land within 1e-4 of .5 the other way
  (measured: 17 of 76,800 pixels off by 1 grey level on a 320x240 frame).
- ``compensate_flow`` / ``compensate_flow_interior``: :math:`f_w(x) = H^{-1}(x + f(x)) - x`, with or without the
  border rule, in float64 as :func:`idtfv.idt._tracking_nb.compensate_flow` (no FMA: ``--fmad=false``), so
  **bit-identical** to the Numba kernels.

The driver functions take and return CuPy arrays (except :func:`dense_sample`, whose points go to the host track
pool). Without a GPU the kernels run on the CPU through ``tests/_cuda_on_cpu.py`` (``tests/test_frame_cuda.py``).
Importing this module needs CuPy; :mod:`idtfv.idt.sampling` and :mod:`idtfv.idt.camera` import it only for
``device="cuda"``.
"""

from __future__ import annotations

import functools

import cupy as cp
import numpy as np

# OpenCV's constants of the response, one home with the CPU kernel's: the vector block of its Sobel row filter and
# cornerEigenValsVecs' Sobel scale for uint8, block 3, aperture 3 (1 / (2^(3-1) * 3 * 255))
from idtfv.idt._corners_nb import OPENCV_ROW_BLOCK
from idtfv.idt._corners_nb import SOBEL_SCALE as _EIG_SCALE
from idtfv.raw_kernels import function

__all__ = ["corner_response", "dense_sample", "dense_sample_levels", "warp_to_previous", "compensate_flow", "flow_at",
           "module", "OPENCV_ROW_BLOCK"]

_BLOCK = 128

_SOURCE = r"""
extern "C" {

// BORDER_REFLECT_101 index (cv::borderInterpolate): ... 2 1 | 0 1 2 ... n-1 | n-2 ...; n == 1 -> 0
__device__ __forceinline__ int idt_reflect101(int i, int n) {
    if (n == 1) return 0;
    while (i < 0 || i >= n) {
        if (i < 0) i = -i;
        else i = 2 * n - 2 - i;
    }
    return i;
}

// 3x3 Sobel of a uint8 image (BORDER_REFLECT_101) with OpenCV's scale in the smoothing taps, at (y, x): [dx, dy]
// float32. f1, f0: the smoothing taps 1 and 2 times the scale (float32). Row filter of the y derivative: fused
// multiply-adds on columns < simd_cols (OpenCV's vector loop), separate ones beyond (its scalar loop).
__device__ __forceinline__ void idt_sobel_at(const unsigned char* img, int h, int w, float f1, float f0,
                                             int simd_cols, int y, int x, float* gdx, float* gdy) {
    int xm = idt_reflect101(x - 1, w), xp = idt_reflect101(x + 1, w);
    int ym = idt_reflect101(y - 1, h), yp = idt_reflect101(y + 1, h);
    const unsigned char* r0 = img + (long long)ym * w;
    const unsigned char* r1 = img + (long long)y * w;
    const unsigned char* r2 = img + (long long)yp * w;
    // d/dx: row filter [-1 0 1] (exact), column filter [f1 f0 f1]
    float s0 = (float)r0[xp] - (float)r0[xm];
    float s1 = (float)r1[xp] - (float)r1[xm];
    float s2 = (float)r2[xp] - (float)r2[xm];
    float dx = fmaf(s0 + s2, f1, s1 * f0);
    // d/dy: row filter [f1 f0 f1] on rows y-1 and y+1, column filter [-1 0 1]
    float t0, t2;
    if (x < simd_cols) {
        t0 = fmaf((float)r0[xp], f1, fmaf((float)r0[x], f0, (float)r0[xm] * f1));
        t2 = fmaf((float)r2[xp], f1, fmaf((float)r2[x], f0, (float)r2[xm] * f1));
    } else {
        t0 = ((float)r0[xm] * f1 + (float)r0[x] * f0) + (float)r0[xp] * f1;
        t2 = ((float)r2[xm] * f1 + (float)r2[x] * f0) + (float)r2[xp] * f1;
    }
    *gdx = dx;
    *gdy = t2 - t0;
}

// Smaller eigenvalue of the 3x3 box-summed structure tensor (BORDER_REFLECT_101) of the uint8 image's Sobel
// derivatives: eig (h, w) float32, one launch (each thread takes the 9 Sobel values it needs: the same operations
// as a Sobel launch storing them, so the same bits).
__device__ __forceinline__ float idt_min_eig_at(const unsigned char* img, int h, int w, float f1, float f0,
                                               int simd_cols, int i) {
    int y = i / w;
    int x = i - y * w;
    double sxx = 0.0, sxy = 0.0, syy = 0.0;  // exact: products of these float32 values span < 53 bits
    for (int dy = -1; dy <= 1; ++dy) {
        int yy = idt_reflect101(y + dy, h);
        for (int dx = -1; dx <= 1; ++dx) {
            int xx = idt_reflect101(x + dx, w);
            float gx, gy;
            idt_sobel_at(img, h, w, f1, f0, simd_cols, yy, xx, &gx, &gy);
            sxx += (double)(gx * gx);
            sxy += (double)(gx * gy);
            syy += (double)(gy * gy);
        }
    }
    float a = (float)sxx * 0.5f;
    float b = (float)sxy;
    float c = (float)syy * 0.5f;
    float t = a - c;
    return (a + c) - sqrtf(t * t + b * b);
}

__global__ void corner_min_eig(const unsigned char* img, int h, int w, float f1, float f0, int simd_cols,
                               float* eig) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= h * w) return;
    eig[i] = idt_min_eig_at(img, h, w, f1, f0, simd_cols, i);
}

// One thread per point: the grid cell holding floor(point) is occupied (occ: gh * gw ints, zeroed).
__device__ __forceinline__ void idt_mark_cell(const float* pts, int i, int stride, int gw, int gh, int* occ) {
    float fx = floorf(pts[2 * i]);
    float fy = floorf(pts[2 * i + 1]);
    if (!(fx >= 0.0f) || !(fy >= 0.0f) || fx >= (float)(gw * stride) || fy >= (float)(gh * stride)) return;
    int x = (int)fx;
    int y = (int)fy;
    occ[(y / stride) * gw + x / stride] = 1;  // several points may write the same cell: same value
}

__global__ void mark_cells(const float* pts, int n, int stride, int gw, int gh, int* occ) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n) return;
    idt_mark_cell(pts, i, stride, gw, gh, occ);
}

// One thread per grid cell: 1 where the cell is empty and its centre's response exceeds quality * max (float64).
__device__ __forceinline__ unsigned char idt_select_cell(const float* eig, int w, float maxv, double quality,
                                                        int stride, int gw, const int* occ, int c) {
    int i = c / gw;
    int j = c - i * gw;
    int off = stride / 2;
    double threshold = (double)maxv * quality;
    return (!occ[c] && (double)eig[(long long)(i * stride + off) * w + j * stride + off] > threshold) ? 1 : 0;
}

__global__ void select_cells(const float* eig, int w, const float* maxv, double quality, int stride, int gw,
                             int gh, const int* occ, unsigned char* keep) {
    int c = blockIdx.x * blockDim.x + threadIdx.x;
    if (c >= gw * gh) return;
    keep[c] = idt_select_cell(eig, w, maxv[0], quality, stride, gw, occ, c);
}

// ---- the dense sampling of every level in one launch per step (issue 14's launch budget). The levels' responses,
// grid cells and selections lie end to end in one buffer each; `table` (n_levels, IDT_ST) int64 holds per level
// its h, w, first pixel, grid gw, gh, first cell and OpenCV's vector columns (w - w % 32): a flat thread index
// finds its level by these starts. The levels' images and points are arguments, IDT_MAXL levels per launch; a
// launch may take any run of consecutive rows of the table.
#define IDT_ST 7
#define IDT_MAXL 8
#define IDT_MAX_THREADS 128

// The last level l < n_levels whose start table[l, col] <= i (a level without cells shares the next one's start).
__device__ __forceinline__ int idt_level(const long long* table, int n_levels, int col, long long i) {
    int l = 0;
    while (l + 1 < n_levels && table[(l + 1) * IDT_ST + col] <= i) ++l;
    return l;
}

// corner_min_eig of every level: one thread per pixel of the levels, from table[0, 2] to end.
__global__ void corner_min_eig_levels(const long long* table, int n_levels, long long end, const unsigned char* g0,
                                      const unsigned char* g1, const unsigned char* g2, const unsigned char* g3,
                                      const unsigned char* g4, const unsigned char* g5, const unsigned char* g6,
                                      const unsigned char* g7, float f1, float f0, float* eig) {
    long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x + table[2];
    if (i >= end) return;
    int l = idt_level(table, n_levels, 2, i);
    const long long* row = table + l * IDT_ST;
    const unsigned char* imgs[IDT_MAXL] = {g0, g1, g2, g3, g4, g5, g6, g7};
    eig[i] = idt_min_eig_at(imgs[l], (int)row[0], (int)row[1], f1, f0, (int)row[6], (int)(i - row[2]));
}

// The largest response of each level: one block of IDT_MAX_THREADS threads per level (a strided maximum, then a
// tree in shared memory); the maximum of finite values does not depend on the order.
__global__ void level_max(const long long* table, int n_levels, const float* eig, float* maxv) {
    __shared__ float part[IDT_MAX_THREADS];
    int l = blockIdx.x;
    if (l >= n_levels) return;  // the whole block
    const long long* row = table + l * IDT_ST;
    const float* e = eig + row[2];
    long long n = row[0] * row[1];
    float m = e[0];
    for (long long k = threadIdx.x; k < n; k += blockDim.x) m = e[k] > m ? e[k] : m;
    part[threadIdx.x] = m;
    __syncthreads();
    for (int half = blockDim.x / 2; half > 0; half >>= 1) {
        if ((int)threadIdx.x < half && part[threadIdx.x + half] > part[threadIdx.x])
            part[threadIdx.x] = part[threadIdx.x + half];
        __syncthreads();
    }
    if (threadIdx.x == 0) maxv[l] = part[0];
}

// mark_cells of every level: one thread per point, level l's n_l points p_l after the levels before it.
__global__ void mark_cells_levels(const long long* table, int n_levels, const float* p0, const float* p1,
                                  const float* p2, const float* p3, const float* p4, const float* p5,
                                  const float* p6, const float* p7, int n0, int n1, int n2, int n3, int n4, int n5,
                                  int n6, int n7, int stride, int* occ) {
    int t = blockIdx.x * blockDim.x + threadIdx.x;
    const float* points[IDT_MAXL] = {p0, p1, p2, p3, p4, p5, p6, p7};
    int counts[IDT_MAXL] = {n0, n1, n2, n3, n4, n5, n6, n7};
    int l = 0;
    int first = 0;  // level l's first point
    while (l < n_levels && t >= first + counts[l]) {
        first += counts[l];
        ++l;
    }
    if (l >= n_levels) return;
    const long long* row = table + l * IDT_ST;
    idt_mark_cell(points[l], t - first, stride, (int)row[3], (int)row[4], occ + row[5]);
}

// select_cells of every level: one thread per grid cell of the levels, from table[0, 5] to end; maxv[l] is level
// l's largest response.
__global__ void select_cells_levels(const long long* table, int n_levels, long long end, const float* eig,
                                    const float* maxv, double quality, int stride, const int* occ,
                                    unsigned char* keep) {
    long long c = (long long)blockIdx.x * blockDim.x + threadIdx.x + table[5];
    if (c >= end) return;
    int l = idt_level(table, n_levels, 5, c);
    const long long* row = table + l * IDT_ST;
    keep[c] = idt_select_cell(eig + row[2], (int)row[1], maxv[l], quality, stride, (int)row[3], occ + row[5],
                              (int)(c - row[5]));
}

// out(x) = src(H x), bilinear with a constant 0 border (OpenCV's scalar warpPerspective: m is H in float32);
// where use_prev, pixels whose H x (float64, Hd) is not inside (margin, w-1-margin) x (margin, h-1-margin) take
// prev's pixel instead (the reference's border band).
__global__ void warp_perspective(const unsigned char* src, const unsigned char* prev, int use_prev, int h, int w,
                                 const float* m, const double* Hd, double margin, unsigned char* out) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= h * w) return;
    int y = i / w;
    int x = i - y * w;
    if (use_prev) {
        double xf = (double)x, yf = (double)y;
        double d = Hd[6] * xf + Hd[7] * yf + Hd[8];
        double sxd = (Hd[0] * xf + Hd[1] * yf + Hd[2]) / d;
        double syd = (Hd[3] * xf + Hd[4] * yf + Hd[5]) / d;
        if (!((sxd > margin) && (sxd < (double)(w - 1) - margin) && (syd > margin) &&
              (syd < (double)(h - 1) - margin))) {
            out[i] = prev[i];
            return;
        }
    }
    float xf = (float)x, yf = (float)y;
    float wv = xf * m[6] + (yf * m[7] + m[8]);
    float sx = (xf * m[0] + (yf * m[1] + m[2])) / wv;
    float sy = (xf * m[3] + (yf * m[4] + m[5])) / wv;
    // wholly outside (or not finite): every tap is the border's 0
    if (!(sx > -2.0f && sx < (float)(w + 1) && sy > -2.0f && sy < (float)(h + 1))) {
        out[i] = 0;
        return;
    }
    float fx = floorf(sx), fy = floorf(sy);
    int ix = (int)fx, iy = (int)fy;
    float alpha = sx - fx;
    float beta = sy - fy;
    float p00 = 0.0f, p01 = 0.0f, p10 = 0.0f, p11 = 0.0f;
    bool x0 = ix >= 0 && ix < w, x1 = ix + 1 >= 0 && ix + 1 < w;
    bool y0 = iy >= 0 && iy < h, y1 = iy + 1 >= 0 && iy + 1 < h;
    if (y0 && x0) p00 = (float)src[(long long)iy * w + ix];
    if (y0 && x1) p01 = (float)src[(long long)iy * w + ix + 1];
    if (y1 && x0) p10 = (float)src[(long long)(iy + 1) * w + ix];
    if (y1 && x1) p11 = (float)src[(long long)(iy + 1) * w + ix + 1];
    float v0 = p00 + alpha * (p01 - p00);
    float v1 = p10 + alpha * (p11 - p10);
    float v = v0 + beta * (v1 - v0);
    float r = rintf(v);  // saturate_cast<uchar>(float): nearest, ties to even, clamped
    out[i] = (unsigned char)(r < 0.0f ? 0.0f : (r > 255.0f ? 255.0f : r));
}

// f_w(x) = Hi (x + f(x)) - x per pixel, float64 (the twin of _tracking_nb.compensate_flow): flow, out (h, w, 2).
__global__ void compensate_flow(const float* flow, int h, int w, const double* Hi, float* out) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= h * w) return;
    int y = i / w;
    int x = i - y * w;
    double px = (double)x + (double)flow[2 * (long long)i];
    double py = (double)y + (double)flow[2 * (long long)i + 1];
    double den = Hi[6] * px + Hi[7] * py + Hi[8];
    out[2 * (long long)i] = (float)((Hi[0] * px + Hi[1] * py + Hi[2]) / den - (double)x);
    out[2 * (long long)i + 1] = (float)((Hi[3] * px + Hi[4] * py + Hi[5]) / den - (double)y);
}

// flow[y_k, x_k] of n pixels (the camera's flow matches read at their points): yx holds the n rows, then the n
// columns (in range: checked by the host); out (n, 2)
__global__ void flow_at(const float* flow, int w, const int* yx, int n, float* out) {
    int k = blockIdx.x * blockDim.x + threadIdx.x;
    if (k >= n) return;
    long long i = (long long)yx[k] * w + yx[n + k];
    out[2 * k] = flow[2 * i];
    out[2 * k + 1] = flow[2 * i + 1];
}

// The same with the border rule of _tracking_nb.compensate_flow_interior: 0 where H x leaves (lo, hix) x (lo, hiy).
__global__ void compensate_flow_interior(const float* flow, int h, int w, const double* Hi, const double* H,
                                         double lo, double hix, double hiy, float* out) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= h * w) return;
    int y = i / w;
    int x = i - y * w;
    double xd = (double)x, yd = (double)y;
    double d = H[6] * xd + H[7] * yd + H[8];
    double sx = (H[0] * xd + H[1] * yd + H[2]) / d;
    double sy = (H[3] * xd + H[4] * yd + H[5]) / d;
    if (!(sx > lo && sx < hix && sy > lo && sy < hiy)) {
        out[2 * (long long)i] = 0.0f;
        out[2 * (long long)i + 1] = 0.0f;
        return;
    }
    double px = xd + (double)flow[2 * (long long)i];
    double py = yd + (double)flow[2 * (long long)i + 1];
    double den = Hi[6] * px + Hi[7] * py + Hi[8];
    out[2 * (long long)i] = (float)((Hi[0] * px + Hi[1] * py + Hi[2]) / den - xd);
    out[2 * (long long)i + 1] = (float)((Hi[3] * px + Hi[4] * py + Hi[5]) / den - yd);
}

}
"""


@functools.lru_cache(maxsize=None)
def module():
    """The compiled ``cupy.RawModule`` (one per process)."""
    return cp.RawModule(code=_SOURCE, options=("--fmad=false",))


def _launch(name: str, n: int, args: tuple) -> None:
    if n > 0:
        function(module(), name)(((n + _BLOCK - 1) // _BLOCK,), (_BLOCK,), args)


def _gray_u8(gray, where: str):
    g = cp.asarray(gray)
    if g.dtype != np.uint8 or g.ndim != 2:
        raise TypeError(f"{where}: expected a (h, w) uint8 image (an extractor pyramid level), got "
                        f"{g.dtype} {tuple(g.shape)}; convert with .astype(uint8)")
    return cp.ascontiguousarray(g)


def corner_response(gray):
    """``cv2.cornerMinEigenVal(gray, 3, ksize=3)`` on the device, in one launch.

    Parameters
    ----------
    gray : (h, w) uint8
        CuPy (or NumPy, uploaded) image.

    Returns
    -------
    (h, w) float32 CuPy array
    """
    g = _gray_u8(gray, "corner_response")
    h, w = int(g.shape[0]), int(g.shape[1])
    eig = cp.empty((h, w), cp.float32)
    simd_cols = (w // OPENCV_ROW_BLOCK) * OPENCV_ROW_BLOCK
    _launch("corner_min_eig", h * w, (g, np.int32(h), np.int32(w), np.float32(_EIG_SCALE),
                                      np.float32(2 * _EIG_SCALE), np.int32(simd_cols), eig))
    return eig


def dense_sample(gray, existing=None, *, stride: int = 5, quality: float = 0.001, eig=None) -> np.ndarray:
    """The device twin of :func:`idtfv.idt.sampling.dense_sample`: new points in the empty grid cells of a level.

    Parameters
    ----------
    gray : (h, w) uint8
        The level (CuPy, or NumPy uploaded).
    existing : (m, 2) float32 or None
        Current points ``[x, y]`` of the level's live tracks (host or device).
    stride, quality
        As :func:`idtfv.idt.sampling.dense_sample`.
    eig : (h, w) float32 CuPy array or None
        The level's response when already computed (:func:`corner_response`).

    Returns
    -------
    (k, 2) float32 NumPy array
        ``[x, y]`` of the new points, row-major over the grid (the CPU's points, in its order).
    """
    g = _gray_u8(gray, "dense_sample")
    h, w = int(g.shape[0]), int(g.shape[1])
    stride = int(stride)
    gw, gh = w // stride, h // stride
    if gw * gh == 0:
        return np.zeros((0, 2), np.float32)
    eig = corner_response(g) if eig is None else cp.ascontiguousarray(cp.asarray(eig, dtype=cp.float32))
    occ = cp.zeros(gh * gw, cp.int32)
    if existing is not None and len(existing):
        pts = cp.ascontiguousarray(cp.asarray(existing, dtype=cp.float32))
        n = int(pts.shape[0])
        _launch("mark_cells", n, (pts, np.int32(n), np.int32(stride), np.int32(gw), np.int32(gh), occ))
    maxv = cp.ascontiguousarray(eig.reshape(-1).max(keepdims=True))
    keep = cp.empty(gh * gw, np.uint8)
    _launch("select_cells", gh * gw, (eig, np.int32(w), maxv, np.float64(quality), np.int32(stride), np.int32(gw),
                                      np.int32(gh), occ, keep))
    cells = np.flatnonzero(cp.asnumpy(keep))  # one byte per cell comes back; row-major, as the CPU's loop
    out = np.empty((len(cells), 2), np.float32)
    off = stride // 2
    out[:, 0] = (cells % gw) * stride + off
    out[:, 1] = (cells // gw) * stride + off
    return out


def warp_to_previous(gray, H, *, prev=None, margin: float = 5.0):
    """The device twin of :func:`idtfv.idt.camera.warp_to_previous` for uint8 frames: ``out(x) = gray(H x)``, and
    frame t-1's pixel where :math:`Hx` is not ``margin`` px inside the frame when ``prev`` is given.

    Parameters
    ----------
    gray : (h, w) uint8
        Frame t (CuPy, or NumPy uploaded).
    H : (3, 3) float64
        Homography t-1 -> t (host).
    prev : (h, w) uint8 or None
        Frame t-1; None: the band is 0 (the warp's border).
    margin : float

    Returns
    -------
    (h, w) uint8 CuPy array
    """
    g = _gray_u8(gray, "warp_to_previous")
    h, w = int(g.shape[0]), int(g.shape[1])
    use_prev = prev is not None
    if use_prev:
        p = _gray_u8(prev, "warp_to_previous (prev)")
        if tuple(p.shape) != (h, w):
            raise ValueError(f"warp_to_previous: prev has shape {tuple(p.shape)}, expected {(h, w)} like gray")
    else:
        p = g
    Hd = np.ascontiguousarray(H, np.float64).reshape(9)
    out = cp.empty((h, w), np.uint8)
    _launch("warp_perspective", h * w, (g, p, np.int32(use_prev), np.int32(h), np.int32(w),
                                        cp.asarray(Hd.astype(np.float32)), cp.asarray(Hd), np.float64(margin), out))
    return out


def compensate_flow(flow, H, *, interior=None):
    """The device twin of :func:`idtfv.idt.camera.compensate_flow`: :math:`f_w(x) = H^{-1}(x + f(x)) - x`.

    Parameters
    ----------
    flow : (h, w, 2) float32
        Flow of this level (CuPy, or NumPy uploaded).
    H : (3, 3) float64
        Homography t-1 -> t in this level's pixels (host).
    interior : (lo, hi_x, hi_y) or None
        The border rule: 0 where :math:`Hx` is not inside ``(lo, hi_x) x (lo, hi_y)``.

    Returns
    -------
    (h, w, 2) float32 CuPy array (``flow`` itself when ``interior`` is None and ``H`` is the identity, as the CPU)
    """
    H = np.ascontiguousarray(H, np.float64)
    if interior is None and np.array_equal(H, np.eye(3)):
        return flow
    f = cp.ascontiguousarray(cp.asarray(flow, dtype=cp.float32))
    h, w = int(f.shape[0]), int(f.shape[1])
    Hi = cp.asarray(np.ascontiguousarray(np.linalg.inv(H)).reshape(9))
    out = cp.empty((h, w, 2), cp.float32)
    if interior is None:
        _launch("compensate_flow", h * w, (f, np.int32(h), np.int32(w), Hi, out))
    else:
        lo, hix, hiy = (np.float64(v) for v in interior)
        _launch("compensate_flow_interior", h * w, (f, np.int32(h), np.int32(w), Hi, cp.asarray(H.reshape(9)),
                                                    lo, hix, hiy, out))
    return out


def flow_at(flow, yi, xi) -> np.ndarray:
    """``flow[yi, xi]`` of a device flow ``(h, w, 2)`` at host pixel indices ``yi, xi`` (n,) as a host ``(n, 2)``
    float32 array: one upload of the indices, one launch, one download (CuPy's advanced indexing took two uploads
    and several launches). Indices outside the flow raise ``IndexError`` as NumPy's indexing does (no wrap-around
    of negative ones: the camera's points are clipped into the frame)."""
    f = cp.ascontiguousarray(cp.asarray(flow, dtype=cp.float32))
    h, w = int(f.shape[0]), int(f.shape[1])
    yi, xi = np.asarray(yi).reshape(-1), np.asarray(xi).reshape(-1)
    n = yi.shape[0]
    if xi.shape[0] != n:
        raise ValueError(f"flow_at: {n} rows and {xi.shape[0]} columns; expected one column per row")
    if n == 0:
        return np.zeros((0, 2), np.float32)
    if min(int(yi.min()), int(xi.min())) < 0 or int(yi.max()) >= h or int(xi.max()) >= w:
        raise IndexError(f"flow_at: pixel indices outside the {h}x{w} flow")
    yx = cp.asarray(np.concatenate([yi, xi]).astype(np.int32))
    out = cp.empty((n, 2), cp.float32)
    _launch("flow_at", n, (f, np.int32(w), yx, np.int32(n), out))
    return cp.asnumpy(out)


# ------------------------------------------------------------------------------ the sampling of every level at once
#: Levels one launch of the ``*_levels`` sampling kernels takes; more take one launch per run of this many.
MAX_LEVELS = 8
#: Columns of a level's row in :func:`sampling_table`.
SAMPLING_COLUMNS = ("h", "w", "first_pixel", "gw", "gh", "first_cell", "simd_cols")
_MAX_THREADS = 128  # level_max's block (IDT_MAX_THREADS)


def sampling_table(shapes, stride: int) -> np.ndarray:
    """The sampling kernels' table: per level ``h, w``, its first pixel, its grid ``gw, gh`` (``w // stride``,
    ``h // stride``), its first cell and OpenCV's vector columns, starts counted over the levels before it.

    Returns
    -------
    (n_levels + 1, 7) int64
        One row per level (:data:`SAMPLING_COLUMNS`) and a last row holding the totals of pixels and cells.
    """
    table = np.zeros((len(shapes) + 1, len(SAMPLING_COLUMNS)), np.int64)
    for k, (h, w) in enumerate(shapes):
        gw, gh = w // stride, h // stride
        table[k, [0, 1, 3, 4, 6]] = h, w, gw, gh, (w // OPENCV_ROW_BLOCK) * OPENCV_ROW_BLOCK
        table[k + 1, 2] = table[k, 2] + h * w
        table[k + 1, 5] = table[k, 5] + gw * gh
    return table


class LevelSampling:
    """The device buffers of :func:`dense_sample_levels` for levels of ``shapes`` and a grid ``stride``: the
    table (uploaded once), the levels' responses, cell marks and selections end to end, their maxima."""

    def __init__(self, shapes, stride: int):
        self.shapes = tuple((int(h), int(w)) for h, w in shapes)
        self.stride = int(stride)
        host = sampling_table(self.shapes, self.stride)
        self.starts, self.ends = host[:-1], host[-1]
        self.table = cp.asarray(host)
        self.eig = cp.empty(int(self.ends[2]), cp.float32)
        self.occ = cp.empty(int(self.ends[5]), cp.int32)
        self.keep = cp.empty(int(self.ends[5]), np.uint8)
        self.maxv = cp.empty(len(self.shapes), cp.float32)

    def fits(self, shapes, stride: int) -> bool:
        return self.shapes == tuple((int(h), int(w)) for h, w in shapes) and self.stride == int(stride)

    def end(self, last: int, column: int) -> int:
        """Where the levels before ``last`` end in ``column`` (level ``last``'s start, or the total)."""
        return int(self.ends[column] if last == len(self.shapes) else self.starts[last, column])


def dense_sample_levels(grays, existing, *, stride: int = 5, quality: float = 0.001, scratch=None):
    """:func:`dense_sample` of every level of a frame in four launches for all levels (per :data:`MAX_LEVELS`
    levels: responses, maxima, occupied cells, selection) and one download of every level's cell bytes.

    Parameters
    ----------
    grays : sequence of (h_k, w_k) uint8 CuPy arrays
        The levels.
    existing : sequence of (m_k, 2) float32 arrays
        Each level's live points (host or device; ``m_k`` may be 0).
    stride, quality
        As :func:`dense_sample`.
    scratch : LevelSampling, optional
        The previous call's buffers, reused when they fit.

    Returns
    -------
    points : list of (k_l, 2) float32 NumPy arrays
        ``dense_sample(grays[l], existing[l], ...)`` of each level, bit for bit.
    scratch : LevelSampling
        The buffers (pass them to the next call).
    """
    if len(grays) != len(existing) or not grays:
        raise ValueError(f"dense_sample_levels: expected the live points of each level and at least one level, got "
                         f"{len(grays)} levels and {len(existing)} point sets")
    gs = [_gray_u8(g, "dense_sample_levels") for g in grays]
    shapes = [g.shape for g in gs]
    stride = int(stride)
    s = scratch if isinstance(scratch, LevelSampling) and scratch.fits(shapes, stride) else LevelSampling(shapes,
                                                                                                         stride)
    pts = [cp.ascontiguousarray(cp.asarray(p, dtype=cp.float32)) for p in existing]
    counts = [int(p.shape[0]) for p in pts]
    s.occ.fill(0)
    f1, f0 = np.float32(_EIG_SCALE), np.float32(2 * _EIG_SCALE)
    for a in range(0, len(gs), MAX_LEVELS):
        n = min(MAX_LEVELS, len(gs) - a)
        table, il = s.table[a:], np.int32(n)

        def padded(items, filler):  # the kernel's MAX_LEVELS arguments of a kind
            return list(items) + [filler] * (MAX_LEVELS - len(items))

        px0, px1 = int(s.starts[a, 2]), s.end(a + n, 2)
        _launch("corner_min_eig_levels", px1 - px0,
                (table, il, np.int64(px1), *padded(gs[a:a + n], gs[a]), f1, f0, s.eig))
        function(module(), "level_max")((n,), (_MAX_THREADS,), (table, il, s.eig, s.maxv[a:]))
        _launch("mark_cells_levels", sum(counts[a:a + n]),
                (table, il, *padded(pts[a:a + n], pts[a]), *padded([np.int32(c) for c in counts[a:a + n]],
                                                                    np.int32(0)), np.int32(stride), s.occ))
        c0, c1 = int(s.starts[a, 5]), s.end(a + n, 5)
        _launch("select_cells_levels", c1 - c0, (table, il, np.int64(c1), s.eig, s.maxv[a:], np.float64(quality),
                                                 np.int32(stride), s.occ, s.keep))
    keep = cp.asnumpy(s.keep)  # one byte per cell of every level: the sampling's one transfer
    out = []
    off = stride // 2
    for (h, w), start in zip(s.shapes, s.starts):
        gw, gh, first = int(start[3]), int(start[4]), int(start[5])
        cells = np.flatnonzero(keep[first:first + gw * gh])  # row-major, as the CPU's loop
        p = np.empty((len(cells), 2), np.float32)
        p[:, 0] = (cells % max(gw, 1)) * stride + off
        p[:, 1] = (cells // max(gw, 1)) * stride + off
        out.append(p)
    return out, s
