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
  same response.
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

__all__ = ["corner_response", "dense_sample", "warp_to_previous", "compensate_flow", "module", "OPENCV_ROW_BLOCK"]

_BLOCK = 128

#: Columns per iteration of OpenCV's vectorised uint8 -> float32 row filter with AVX2 (4 vectors of 8 lanes, fused
#: multiply-adds); the remaining ``w % 32`` columns go through its scalar loop (separate multiply and add).
OPENCV_ROW_BLOCK = 32

#: ``cornerEigenValsVecs``' Sobel scale for uint8, block 3, aperture 3: 1 / (2^(3-1) * 3 * 255).
_EIG_SCALE = 1.0 / (4 * 3 * 255.0)

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
__global__ void corner_min_eig(const unsigned char* img, int h, int w, float f1, float f0, int simd_cols,
                               float* eig) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= h * w) return;
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
    eig[i] = (a + c) - sqrtf(t * t + b * b);
}

// One thread per point: the grid cell holding floor(point) is occupied (occ: gh * gw ints, zeroed).
__global__ void mark_cells(const float* pts, int n, int stride, int gw, int gh, int* occ) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n) return;
    float fx = floorf(pts[2 * i]);
    float fy = floorf(pts[2 * i + 1]);
    if (!(fx >= 0.0f) || !(fy >= 0.0f) || fx >= (float)(gw * stride) || fy >= (float)(gh * stride)) return;
    int x = (int)fx;
    int y = (int)fy;
    occ[(y / stride) * gw + x / stride] = 1;  // several points may write the same cell: same value
}

// One thread per grid cell: 1 where the cell is empty and its centre's response exceeds quality * max (float64).
__global__ void select_cells(const float* eig, int w, const float* maxv, double quality, int stride, int gw,
                             int gh, const int* occ, unsigned char* keep) {
    int c = blockIdx.x * blockDim.x + threadIdx.x;
    if (c >= gw * gh) return;
    int i = c / gw;
    int j = c - i * gw;
    int off = stride / 2;
    double threshold = (double)maxv[0] * quality;
    keep[c] = (!occ[c] && (double)eig[(long long)(i * stride + off) * w + j * stride + off] > threshold) ? 1 : 0;
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
        module().get_function(name)(((n + _BLOCK - 1) // _BLOCK,), (_BLOCK,), args)


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
