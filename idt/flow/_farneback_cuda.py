r"""CUDA kernels (CuPy ``RawModule``) of the extractor's per-frame flow: the device twins of
:class:`idtfv.idt.flow.FarnebackPyramidFlow`'s steps and of :func:`idtfv.idt.flow.build_pyramid`.

One thread per output value (pixel, or pixel and channel), no shared memory, no atomics. The kernels, with the
CPU step each one mirrors:

- ``resize_u8`` / ``resize_f32``: ``cv2.resize(..., INTER_LINEAR)`` with OpenCV's pixel-centre mapping
  (``sx = (dx + 0.5) * scale - 0.5``, ``scale = 1 / (dst / src)`` in double, a source index under 0 or past the
  last column clamped with a zero fraction). ``uint8`` is OpenCV's fixed-point path (11-bit coefficients
  rounded to nearest even, integer row sums, the two rows combined as OpenCV's SIMD loop does,
  ``((b0 (S0 >> 4)) >> 16) + ((b1 (S1 >> 4)) >> 16) + 2) >> 2``); ``float32`` Intel IPP's float resize, which
  OpenCV's x86 builds use for sources of at least 2 x 2, bit for bit: positions ``(dx + 0.5) * (src / dst) -
  0.5`` in double, the fraction ``t`` rounded to float, each blend ``fma(b - a, t, a)``, along the row then down
  the column (OpenCV's own float code rounds the position first), the result times ``factor``; the
  coarse-to-fine loop's flow upscale (times the size ratio) is the same arithmetic inside ``update_matrices``;
- ``gauss3``: the 3x3 presmoothing ``cv2.GaussianBlur(img, (3, 3), 0)`` (kernel 1/4, 1/2, 1/4;
  ``BORDER_REFLECT_101``) of a uint8 or float32 level, both passes in one launch (each thread recomputes the
  three row-pass values it needs); ``u8_to_f32`` (a uint8 level without presmoothing);
- ``poly_rows`` / ``poly_cols``: :func:`idtfv.idt.flow._farneback_nb.poly_expand` (vertical moments per pixel,
  then horizontal moments and the coefficients; borders replicated);
- ``update_matrices``, ``solve_flow``, ``solve_and_update``: their Numba twins (``BORDER_WEIGHTS``, ``DET_EPS``,
  the 2x2 solve in float64); ``update_matrices`` takes its prior as none, an ``(h, w, 2)`` flow, or the coarser
  level's planar flow to upscale (so the upscale costs no launch of its own);
- ``window_rows`` / ``window_cols``: the window sums of :func:`idtfv.idt.flow._farneback_nb.window_solve` (the
  CPU's fused window sum and solve), which are ``cv2.sepFilter2D(m, -1, k, k, borderType=BORDER_REPLICATE)``'s
  in its vector loops, on the five channels of the normal-equation terms (rows: taps in order; columns: centre
  tap, then symmetric pairs, as OpenCV's symmetric column filter);
- ``median2``: ``cv2.medianBlur`` of both planes of a flow, 3x3 or 5x5, replicated border (exact: a selection),
  written planar (the next level's prior) and interleaved (the level's ``(h, w, 2)`` flow) in one launch;
- ``merge2``: two planes into an ``(h, w, 2)`` flow (no median filter).

Arithmetic: compiled with ``--fmad=false``; where the Numba kernels contract ``a * b + c`` into a fused
multiply-add (``fastmath={"contract"}``, LLVM's rules), the CUDA C writes ``fmaf`` (``fma`` for the float64
solve) at the same place, so that the expansion and the per-pixel terms follow the CPU's roundings; the CPU's
window sums (``window_solve``, as OpenCV's AVX2 loops) fuse too, so the window kernels do. Bit-identical to the
CPU: uint8 and float resize, presmoothing, expansion, window sums (every window), solve, median; to the last
bit: about 9 % of the ``h`` terms of ``update_matrices``. The measured figures (flows within 3e-5 px of
the CPU's on vtest) are in ``docs/GPU.md``.

Without a GPU the kernels are exercised by ``tests/test_farneback_cuda.py`` through ``tests/_cuda_on_cpu.py``.
Importing this module needs CuPy; :mod:`idtfv.idt.flow.farneback_cuda` imports it on first use.
"""

from __future__ import annotations

import functools

import cupy as cp

from idtfv.raw_kernels import function

__all__ = ["module", "launch", "BLOCK"]

#: Threads per block of every kernel (1-D grids over the output values).
BLOCK = 128

_SOURCE = r"""
// fused multiply-add where the Numba kernels contract (LLVM, fastmath={"contract"}); plain otherwise
#define FB_FMA(a, b, c) fmaf((a), (b), (c))
#define FB_DFMA(a, b, c) fma((a), (b), (c))
// OpenCV's window sums (sepFilter2D on float32): multiply-add as OpenCV's SIMD row / column loops
#define FB_ROW_MADD(a, b, c) fmaf((a), (b), (c))
#define FB_COL_MADD(a, b, c) fmaf((a), (b), (c))

extern "C" {

__device__ __forceinline__ int fb_clamp(int v, int lo, int hi) { return v < lo ? lo : (v > hi ? hi : v); }

// BORDER_REFLECT_101 index (n >= 2 and |overshoot| < n)
__device__ __forceinline__ int fb_reflect101(int i, int n) {
    if (i < 0) i = -i;
    if (i >= n) i = 2 * n - 2 - i;
    return i;
}

// OpenCV's INTER_LINEAR source index and fraction of destination index d (float fraction, as resize.cpp).
__device__ __forceinline__ void fb_coord(int d, double scale, int* s, float* f) {
    float fd = (float)((d + 0.5) * scale - 0.5);
    int sd = (int)floorf(fd);
    *s = sd;
    *f = fd - (float)sd;
}

// The same with the position kept in double and only the fraction rounded to float, scale = src / dst: Intel
// IPP's float resize, which OpenCV uses where it has IPP (sources of at least 2 x 2; OpenCV's own float code
// rounds the position to float first, which moves samples by up to ~1e-4 of a pixel on large images).
__device__ __forceinline__ void fb_coord_f64(int d, double scale, int* s, float* f) {
    double fd = (d + 0.5) * scale - 0.5;
    int sd = (int)floor(fd);
    *s = sd;
    *f = (float)(fd - (double)sd);
}

// ---- cv2.resize INTER_LINEAR, uint8 (fixed point, 11-bit coefficients) ----
__global__ void resize_u8(const unsigned char* src, int sh, int sw, unsigned char* dst, int dh, int dw,
                          double scale_x, double scale_y) {
    long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= (long long)dh * dw) return;
    int dy = (int)(i / dw), dx = (int)(i % dw);
    int sx, sy;
    float fx, fy;
    fb_coord(dx, scale_x, &sx, &fx);
    fb_coord(dy, scale_y, &sy, &fy);
    if (sx < 0) { fx = 0.0f; sx = 0; }
    bool last = sx >= sw - 1;
    if (last) { fx = 0.0f; sx = sw - 1; }
    int a0 = (int)rintf((1.0f - fx) * 2048.0f), a1 = (int)rintf(fx * 2048.0f);
    int b0 = (int)rintf((1.0f - fy) * 2048.0f), b1 = (int)rintf(fy * 2048.0f);
    int y0 = fb_clamp(sy, 0, sh - 1), y1 = fb_clamp(sy + 1, 0, sh - 1);
    const unsigned char* r0 = src + (long long)y0 * sw;
    const unsigned char* r1 = src + (long long)y1 * sw;
    int s0 = last ? r0[sx] * 2048 : r0[sx] * a0 + r0[sx + 1] * a1;
    int s1 = last ? r1[sx] * 2048 : r1[sx] * a0 + r1[sx + 1] * a1;
    int v = (((b0 * (s0 >> 4)) >> 16) + ((b1 * (s1 >> 4)) >> 16) + 2) >> 2;
    dst[i] = (unsigned char)(v < 0 ? 0 : (v > 255 ? 255 : v));
}

// ---- cv2.resize INTER_LINEAR, float32, at destination pixel (dy, dx) of a (sh, sw) -> (dh, dw) resize ----
__device__ __forceinline__ float fb_resize_f32_at(const float* src, int sh, int sw, int dy, int dx, double scale_x,
                                                  double scale_y) {
    int sx, sy;
    float fx, fy;
    fb_coord_f64(dx, scale_x, &sx, &fx);
    fb_coord_f64(dy, scale_y, &sy, &fy);
    if (sx < 0) { fx = 0.0f; sx = 0; }
    bool last = sx >= sw - 1;
    if (last) { fx = 0.0f; sx = sw - 1; }
    const float* r0 = src + (long long)fb_clamp(sy, 0, sh - 1) * sw;
    const float* r1 = src + (long long)fb_clamp(sy + 1, 0, sh - 1) * sw;
    // IPP's blends: along the row, then down the column, each fma(b - a, t, a)
    float s0 = last ? r0[sx] : fmaf(r0[sx + 1] - r0[sx], fx, r0[sx]);
    float s1 = last ? r1[sx] : fmaf(r1[sx + 1] - r1[sx], fx, r1[sx]);
    return fmaf(s1 - s0, fy, s0);
}

// The whole resize; the result times factor (1 for a pyramid level).
__global__ void resize_f32(const float* src, int sh, int sw, float* dst, int dh, int dw, double scale_x,
                           double scale_y, float factor) {
    long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= (long long)dh * dw) return;
    int dy = (int)(i / dw), dx = (int)(i % dw);
    float v = fb_resize_f32_at(src, sh, sw, dy, dx, scale_x, scale_y);
    dst[i] = v * factor;
}

__global__ void u8_to_f32(const unsigned char* src, float* dst, long long n) {
    long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) dst[i] = (float)src[i];
}

// ---- cv2.GaussianBlur(img, (3, 3), 0) on float32: kernel (1/4, 1/2, 1/4), BORDER_REFLECT_101 ----
// Pixel k of a float32 image, or of a uint8 one (u8) converted on its own (exact, as u8_to_f32).
__device__ __forceinline__ float fb_px(const void* src, int u8, long long k) {
    return u8 ? (float)((const unsigned char*)src)[k] : ((const float*)src)[k];
}

// The row pass at (y, x): OpenCV's horizontal 3-tap sum.
__device__ __forceinline__ float fb_gauss3_row(const void* src, int u8, int w, int y, int x) {
    long long r = (long long)y * w;
    return fb_px(src, u8, r + x) * 0.5f
           + (fb_px(src, u8, r + fb_reflect101(x - 1, w)) + fb_px(src, u8, r + fb_reflect101(x + 1, w))) * 0.25f;
}

// Both passes in one launch: each thread takes the row pass at its pixel and at the rows above and below (the
// values a row-pass launch would have stored: same operations, so the same bits), then the column pass.
__global__ void gauss3(const void* src, int u8, float* dst, int h, int w) {
    long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= (long long)h * w) return;
    int y = (int)(i / w), x = (int)(i % w);
    float mid = fb_gauss3_row(src, u8, w, y, x);
    float up = fb_gauss3_row(src, u8, w, fb_reflect101(y - 1, h), x);
    float down = fb_gauss3_row(src, u8, w, fb_reflect101(y + 1, h), x);
    dst[i] = mid * 0.5f + (up + down) * 0.25f;
}

// ---- polynomial expansion (_farneback_nb.poly_expand) ----
// Vertical moments v_j(y, x) = sum_t g(t) t^j img(y + t, x), rows replicated; v (3, h, w).
__global__ void poly_rows(const float* img, int h, int w, const float* g, const float* tg, const float* ttg, int n,
                          float* v) {
    long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    long long hw = (long long)h * w;
    if (i >= hw) return;
    int y = (int)(i / w), x = (int)(i % w);
    float c0 = g[0] * img[i];
    float c1 = 0.0f, c2 = 0.0f;
    for (int t = 1; t <= n; ++t) {
        float ra = img[(long long)min(y + t, h - 1) * w + x];
        float rb = img[(long long)max(y - t, 0) * w + x];
        float s = ra + rb;
        c0 = FB_FMA(g[t], s, c0);
        c2 = FB_FMA(ttg[t], s, c2);
        c1 = FB_FMA(tg[t], ra - rb, c1);
    }
    v[i] = c0;
    v[hw + i] = c1;
    v[2 * hw + i] = c2;
}

// Horizontal moments (columns replicated) and the coefficients [b_x, b_y, A_11, A_22, A_12] into out (h, w, 5).
__global__ void poly_cols(const float* v, int h, int w, const float* g, const float* tg, const float* ttg, int n,
                          float c0, float c1, float q10, float q11, float q12, float q20, float q21, float q22,
                          float* out) {
    long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    long long hw = (long long)h * w;
    if (i >= hw) return;
    int x = (int)(i % w);
    const float* v0 = v + (i - x);
    const float* v1 = v0 + hw;
    const float* v2 = v1 + hw;
    float g0 = g[0];
    float m00 = g0 * v0[x], m01 = g0 * v1[x], m02 = g0 * v2[x];
    float m10 = 0.0f, m20 = 0.0f, m11 = 0.0f;
    for (int t = 1; t <= n; ++t) {
        int xa = min(x + t, w - 1), xb = max(x - t, 0);
        float gt = g[t], tgt = tg[t], ttgt = ttg[t];
        float a = v0[xa], b = v0[xb];
        m00 = FB_FMA(gt, a + b, m00);
        m20 = FB_FMA(ttgt, a + b, m20);
        m10 = FB_FMA(tgt, a - b, m10);
        a = v1[xa]; b = v1[xb];
        m01 = FB_FMA(gt, a + b, m01);
        m11 = FB_FMA(tgt, a - b, m11);
        a = v2[xa]; b = v2[xb];
        m02 = FB_FMA(gt, a + b, m02);
    }
    float* o = out + 5 * i;
    o[0] = m10 * c0;
    o[1] = m01 * c0;
    o[2] = FB_FMA(q12, m02, FB_FMA(q10, m00, q11 * m20));
    o[3] = FB_FMA(q22, m02, FB_FMA(q20, m00, q21 * m20));
    o[4] = m11 * c1;
}

// ---- displacement: per-pixel terms, window sums, solve (_farneback_nb) ----
__device__ __forceinline__ float fb_weight(const float* border, int nb, int i, int n) {
    float wgt = 1.0f;
    if (i < nb) wgt *= border[i];
    if (n - 1 - i < nb) wgt *= border[n - 1 - i];
    return wgt;
}

// [G11, G12, G22, h1, h2] of pixel (y, x) for the prior displacement (dx, dy) into o (5,)
__device__ __forceinline__ void fb_pixel_terms(const float* r0, const float* r1, int h, int w, int y, int x,
                                               float dx, float dy, float wgt, float* o) {
    float fx = (float)x + dx;
    float fy = (float)y + dy;
    float inside = (fx >= 0.0f && fx <= (float)(w - 1) && fy >= 0.0f && fy <= (float)(h - 1)) ? 1.0f : 0.0f;
    float outside = 1.0f - inside;
    fx = fminf(fmaxf(fx, 0.0f), (float)(w - 1));
    fy = fminf(fmaxf(fy, 0.0f), (float)(h - 1));
    int x1 = min((int)fx, w - 2);
    int y1 = min((int)fy, h - 2);
    float ax = fx - (float)x1;
    float ay = fy - (float)y1;
    float w00 = (1.0f - ax) * (1.0f - ay) * inside;
    float w01 = ax * (1.0f - ay) * inside;
    float w10 = (1.0f - ax) * ay * inside;
    float w11 = ax * ay * inside;
    const float* p = r1 + 5 * ((long long)y1 * w + x1);
    const float* q = p + 5;
    const float* r = p + 5 * (long long)w;
    const float* s = r + 5;
    const float* c = r0 + 5 * ((long long)y * w + x);
    float t[5];
    for (int k = 0; k < 5; ++k)
        t[k] = FB_FMA(w11, s[k], FB_FMA(w10, r[k], FB_FMA(w00, p[k], w01 * q[k])));
    for (int k = 2; k < 5; ++k) t[k] = FB_FMA(outside, c[k], t[k]);
    float a11 = (c[2] + t[2]) * 0.5f;
    float a22 = (c[3] + t[3]) * 0.5f;
    float a12 = (c[4] + t[4]) * 0.5f;
    float db1 = FB_FMA(a12, dy, FB_FMA(a11, dx, (c[0] - t[0]) * 0.5f)) * wgt;
    float db2 = FB_FMA(a22, dy, FB_FMA(c[1] - t[1], 0.5f, a12 * dx)) * wgt;  // the CPU's order (_farneback_simd_nb)
    a11 *= wgt;
    a22 *= wgt;
    a12 *= wgt;
    o[0] = FB_FMA(a11, a11, a12 * a12);
    o[1] = a12 * (a11 + a22);
    o[2] = FB_FMA(a22, a22, a12 * a12);
    o[3] = FB_FMA(a11, db1, a12 * db2);
    o[4] = FB_FMA(a12, db1, a22 * db2);
}

// r0, r1 (h, w, 5) expansions; border (nb,) weights; out (h, w, 5). The prior displacement of pixel i by
// prior_kind: 0 none (zero flow; prior unread), 1 a flow (h, w, 2), 2 the next-coarser level's planar flow
// (2, ph, pw) brought up to (h, w) as the coarse-to-fine loop does (resize_f32 of each plane, times ratio_x or
// ratio_y: the same operations, so the bits resize_f32 would have stored), in this launch.
__global__ void update_matrices(const float* r0, const float* r1, const float* prior, int prior_kind, int ph,
                                int pw, double scale_x, double scale_y, float ratio_x, float ratio_y,
                                const float* border, int nb, int h, int w, float* out) {
    long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    long long hw = (long long)h * w;
    if (i >= hw) return;
    int y = (int)(i / w), x = (int)(i % w);
    float dx = 0.0f, dy = 0.0f;
    if (prior_kind == 1) {
        dx = prior[2 * i];
        dy = prior[2 * i + 1];
    } else if (prior_kind == 2) {
        dx = fb_resize_f32_at(prior, ph, pw, y, x, scale_x, scale_y) * ratio_x;
        dy = fb_resize_f32_at(prior + (long long)ph * pw, ph, pw, y, x, scale_x, scale_y) * ratio_y;
    }
    float wgt = fb_weight(border, nb, y, h) * fb_weight(border, nb, x, w);
    fb_pixel_terms(r0, r1, h, w, y, x, dx, dy, wgt, out + 5 * i);
}

__device__ __forceinline__ void fb_solve(const float* m, double det_eps, float* dx, float* dy) {
    double g11 = m[0], g12 = m[1], g22 = m[2], h1 = m[3], h2 = m[4];
    double idet = 1.0 / (FB_DFMA(g11, g22, -(g12 * g12)) + det_eps);
    *dx = (float)(FB_DFMA(g22, h1, -(g12 * h2)) * idet);
    *dy = (float)(FB_DFMA(g11, h2, -(g12 * h1)) * idet);
}

// m (h, w, 5) window-summed terms -> flow (2, h, w)
__global__ void solve_flow(const float* m, double det_eps, int h, int w, float* flow) {
    long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    long long hw = (long long)h * w;
    if (i >= hw) return;
    float dx, dy;
    fb_solve(m + 5 * i, det_eps, &dx, &dy);
    flow[i] = dx;
    flow[hw + i] = dy;
}

// solve_flow, then update_matrices at the new flow into out (not m)
__global__ void solve_and_update(const float* m, double det_eps, const float* r0, const float* r1,
                                 const float* border, int nb, int h, int w, float* flow, float* out) {
    long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    long long hw = (long long)h * w;
    if (i >= hw) return;
    int y = (int)(i / w), x = (int)(i % w);
    float dx, dy;
    fb_solve(m + 5 * i, det_eps, &dx, &dy);
    flow[i] = dx;
    flow[hw + i] = dy;
    float wgt = fb_weight(border, nb, y, h) * fb_weight(border, nb, x, w);
    fb_pixel_terms(r0, r1, h, w, y, x, dx, dy, wgt, out + 5 * i);
}

// sepFilter2D, BORDER_REPLICATE, on (h, w, c): rows with the taps k (2 r + 1,) in order ...
__global__ void window_rows(const float* src, float* dst, int h, int w, int c, const float* k, int r) {
    long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= (long long)h * w * c) return;
    int ch = (int)(i % c);
    long long p = i / c;
    int x = (int)(p % w);
    const float* row = src + (p - x) * c + ch;
    float s = 0.0f;
    for (int j = 0; j <= 2 * r; ++j) s = FB_ROW_MADD(row[(long long)fb_clamp(x + j - r, 0, w - 1) * c], k[j], s);
    dst[i] = s;
}

// ... then columns: the centre tap, then the symmetric pairs (k symmetric)
__global__ void window_cols(const float* src, float* dst, int h, int w, int c, const float* k, int r) {
    long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    long long rowlen = (long long)w * c;
    if (i >= (long long)h * rowlen) return;
    int y = (int)(i / rowlen);
    long long off = i - y * rowlen;
    float s = src[i] * k[r];
    for (int j = 1; j <= r; ++j) {
        float a = src[(long long)fb_clamp(y - j, 0, h - 1) * rowlen + off];
        float b = src[(long long)fb_clamp(y + j, 0, h - 1) * rowlen + off];
        s = FB_COL_MADD(a + b, k[r + j], s);
    }
    dst[i] = s;
}

// ---- cv2.medianBlur of a float32 plane (ksize 3 or 5, BORDER_REPLICATE) at (y, x) ----
__device__ __forceinline__ float fb_median_at(const float* src, int h, int w, int ksize, int y, int x) {
    int r = ksize / 2;
    float v[25];
    int n = 0;
    for (int j = -r; j <= r; ++j) {
        const float* row = src + (long long)fb_clamp(y + j, 0, h - 1) * w;
        for (int l = -r; l <= r; ++l) {
            float a = row[fb_clamp(x + l, 0, w - 1)];
            int k = n++;
            while (k > 0 && v[k - 1] > a) { v[k] = v[k - 1]; --k; }  // insertion sort
            v[k] = a;
        }
    }
    return v[n / 2];
}

// Both planes of a planar flow src (2, h, w) median-filtered in one launch, into med (2, h, w) (the next finer
// level's prior) and interleaved into out (h, w, 2) (the level's flow).
__global__ void median2(const float* src, int h, int w, int ksize, float* med, float* out) {
    long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    long long hw = (long long)h * w;
    if (i >= hw) return;
    int y = (int)(i / w), x = (int)(i % w);
    float a = fb_median_at(src, h, w, ksize, y, x);
    float b = fb_median_at(src + hw, h, w, ksize, y, x);
    med[i] = a;
    med[hw + i] = b;
    out[2 * i] = a;
    out[2 * i + 1] = b;
}

// two planes (2, h, w) -> (h, w, 2)
__global__ void merge2(const float* planes, long long hw, float* dst) {
    long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= hw) return;
    dst[2 * i] = planes[i];
    dst[2 * i + 1] = planes[hw + i];
}

}
"""


@functools.lru_cache(maxsize=None)
def module():
    """The compiled ``cupy.RawModule`` (one per process)."""
    return cp.RawModule(code=_SOURCE, options=("--fmad=false",))


def launch(name: str, n: int, *args) -> None:
    """Run kernel ``name`` over ``n`` output values (one thread each) with ``args`` (CuPy arrays, NumPy
    scalars)."""
    if n > 0:
        function(module(), name)(((n + BLOCK - 1) // BLOCK,), (BLOCK,), args)
