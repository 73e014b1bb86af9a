r"""CUDA kernels (CuPy ``RawModule``): orientation integral histograms and per-point block gathering.

The device twins of :mod:`idtfv.idt._histograms_nb` (see its docstring for the binning and the integral
histogram). Each kernel does, per output value, the float32 operations of the Numba kernel in the same order (no
FMA: ``--fmad=false``; IEEE division and square root, CUDA's default; the same arctangent polynomial; running
sums taken in the same sequence), so the two give **bit-identical** histograms and blocks. That is a property of
the arithmetic, not a tolerance: the integral histogram is a row pass (one thread per row and bin adds the row's
weights left to right, as the CPU's ``rowsum``) followed by a column pass (one thread per column and bin adds
the rows top to bottom, as the CPU's ``prev + rowsum``), which is exactly the CPU's sequence of additions.

Kernels (one thread per pixel, per (histogram, row, bin), per (histogram, column, bin) or per (point,
histogram)); a frame's four histograms take three launches and their blocks at a batch of points one (issue 14's
launch budget, ``docs/GPU.md``):

- ``frame_bins``: each pixel's weight ``mag`` and angle in bins ``fbin`` for all four histograms (HOG from the
  frame, read as uint8 or float32; HOF from the flow, with the zero-motion bin ``nbins`` of weight 1 under
  ``min_flow``; MBHx and MBHy from the flow's channels), into ``(4, h, w)`` planes;
- ``hist_rows`` then ``hist_cols``: the four integral histograms ``(h+1, w+1, nb_j)`` from those planes, each
  thread's running sum the CPU's sequence of additions for its (histogram, row, bin) or (histogram, column, bin);
- ``gather_blocks``: per point and histogram, the patch's corner (``descriptors.patch_corners``' arithmetic) and
  the L1-normalised, square-rooted cell sums (RootSIFT) into that histogram's column range of the point's row, so
  the four descriptors of a batch of points are one array;
- ``frame_bins_levels``, ``hist_rows_levels``, ``hist_cols_levels``, ``gather_blocks_levels``: the same for every
  level of a frame in one launch each (:func:`level_histograms`, :func:`gather_levels`): the levels' planes,
  histograms and blocks end to end in one buffer each, and a device table (:func:`level_table`) from which a thread
  finds its level and its index in it, then runs the one-level kernel's body (shared ``__device__`` functions, so
  the same bits).

Without a GPU the kernels are still exercised: ``tests/_cuda_on_cpu.py`` compiles :data:`_SOURCE` for the CPU and
``tests/test_histograms_cuda.py`` checks them bit for bit against the Numba kernels, with broken kernels that
must fail. Importing this module needs CuPy; :mod:`idtfv.idt.descriptors` imports it only for ``device="cuda"``.
"""

from __future__ import annotations

import functools

import cupy as cp
import numpy as np

from idtfv.idt._histograms_nb import _ATAN_C
from idtfv.raw_kernels import function

__all__ = ["frame_histograms", "gather_blocks", "gather_all", "level_histograms", "gather_levels", "LevelHistograms",
           "level_table", "module"]

_BLOCK = 128


def _f32(c: float) -> str:
    """A C float literal that converts exactly to ``np.float32(c)`` (9 significant digits round-trip)."""
    return f"{float(np.float32(c)):.9e}f"


_CONSTANTS = "\n".join(
    [f"#define IDT_ATAN_C{i} {_f32(c)}" for i, c in enumerate(_ATAN_C)]
    + [f"#define IDT_INV_2PI {_f32(1.0 / (2.0 * np.pi))}"]
)

_SOURCE = _CONSTANTS + r"""
extern "C" {

// atan2(v, u) / 2 pi mod 1 in float32: the twin of _histograms_nb.angle_fraction, operation for operation
__device__ __forceinline__ float idt_angle_fraction(float u, float v) {
    float au = fabsf(u);
    float av = fabsf(v);
    float mx = au >= av ? au : av;
    float mn = au <= av ? au : av;
    float t = mx > 0.0f ? mn / mx : 0.0f;
    float t2 = t * t;
    float p = IDT_ATAN_C7;
    p = p * t2 + IDT_ATAN_C6;
    p = p * t2 + IDT_ATAN_C5;
    p = p * t2 + IDT_ATAN_C4;
    p = p * t2 + IDT_ATAN_C3;
    p = p * t2 + IDT_ATAN_C2;
    p = p * t2 + IDT_ATAN_C1;
    p = p * t2 + IDT_ATAN_C0;
    float a = t * p * IDT_INV_2PI;
    a = av > au ? 0.25f - a : a;
    a = u < 0.0f ? 0.5f - a : a;
    a = v < 0.0f ? 1.0f - a : a;
    return a;
}

__device__ __forceinline__ float idt_bin_of(float u, float v, float nbf) {
    float f = idt_angle_fraction(u, v) * nbf;
    return f >= nbf ? f - nbf : f;
}

// Channel `channel` of pixel k of an (h, w, c) image of float32 or (u8) uint8 values; a uint8 value is converted
// on its own (exact), as the Numba kernel reads a uint8 frame.
__device__ __forceinline__ float idt_px(const void* img, int u8, int c, int channel, int k) {
    return u8 ? (float)((const unsigned char*)img)[k * c + channel] : ((const float*)img)[k * c + channel];
}

// Centred differences of channel `channel` of img (h, w, c) at (y, x), BORDER_REFLECT_101 (zero across the
// border): the gradient's weight *mag and bin position *fbin.
__device__ __forceinline__ void idt_gradient_bin(const void* img, int u8, int h, int w, int c, int channel, int y,
                                                 int x, int nbins, float* mag, float* fbin) {
    float u = 0.0f;
    if (x > 0 && x < w - 1) u = idt_px(img, u8, c, channel, y * w + x + 1) - idt_px(img, u8, c, channel, y * w + x - 1);
    int ym = y > 0 ? y - 1 : 1;
    int yp = y < h - 1 ? y + 1 : h - 2;
    float v = idt_px(img, u8, c, channel, yp * w + x) - idt_px(img, u8, c, channel, ym * w + x);
    *mag = sqrtf(u * u + v * v);
    *fbin = idt_bin_of(u, v, (float)nbins);
}

// One thread per pixel: the weight mag[j, y, x] and the bin position fbin[j, y, x] of the four histograms j =
// HOG (gradient of the frame gray (h, w), float32 or gray_u8 uint8), HOF (the flow (h, w, 2); magnitude <=
// min_flow: weight 1 in the zero-motion bin hof_bins), MBHx, MBHy (gradients of the flow's x and y channels);
// mag and fbin are (4, h, w).
__device__ __forceinline__ void idt_frame_bins_at(const void* gray, int gray_u8, const float* flow, int h, int w,
                                                  int hog_bins, int hof_bins, int mbh_bins, float min_flow,
                                                  float* mag, float* fbin, int i) {
    int y = i / w;
    int x = i - y * w;
    int hw = h * w;
    idt_gradient_bin(gray, gray_u8, h, w, 1, 0, y, x, hog_bins, mag + i, fbin + i);
    float u = flow[2 * i];
    float v = flow[2 * i + 1];
    float m = sqrtf(u * u + v * v);
    bool zero = m <= min_flow;
    mag[hw + i] = zero ? 1.0f : m;
    fbin[hw + i] = zero ? (float)hof_bins : idt_bin_of(u, v, (float)hof_bins);
    idt_gradient_bin(flow, 0, h, w, 2, 0, y, x, mbh_bins, mag + 2 * hw + i, fbin + 2 * hw + i);
    idt_gradient_bin(flow, 0, h, w, 2, 1, y, x, mbh_bins, mag + 3 * hw + i, fbin + 3 * hw + i);
}

__global__ void frame_bins(const void* gray, int gray_u8, const float* flow, int h, int w, int hog_bins,
                           int hof_bins, int mbh_bins, float min_flow, float* mag, float* fbin) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= h * w) return;
    idt_frame_bins_at(gray, gray_u8, flow, h, w, hog_bins, hof_bins, mbh_bins, min_flow, mag, fbin, i);
}

// Histogram j of the four, and the index r within its own range, of an index k over the ranges n0, n1, n2, n3
// laid end to end.
__device__ __forceinline__ int idt_which(int k, int n0, int n1, int n2, int* r) {
    if (k < n0) { *r = k; return 0; }
    k -= n0;
    if (k < n1) { *r = k; return 1; }
    k -= n1;
    if (k < n2) { *r = k; return 2; }
    *r = k - n2;
    return 3;
}

__device__ __forceinline__ float* idt_pick(int j, float* a, float* b, float* c, float* d) {
    return j == 0 ? a : (j == 1 ? b : (j == 2 ? c : d));
}

// Row pass of the four integral histograms, one thread per (histogram j, row y, bin b) (j outermost, h * nb_j threads
// for histogram j): out_j[y+1, x+1, b] = sum of row y's weights of bin b over columns <= x, added left to
// right with the CPU's two adds per pixel (bin b0 then bin b1); out_j[y+1, 0, b] = 0. Histogram j has nb_j bins
// and its angles span nbins_j of them (HOF: nb = nbins + 1, the zero-motion bin not wrapped).
__device__ __forceinline__ void idt_hist_row(const float* mag, const float* fbin, int h, int w, int nbins0,
                                             int nbins1, int nbins2, int nbins3, int nb0, int nb1, int nb2, int nb3,
                                             float* out0, float* out1, float* out2, float* out3, int i) {
    int k;
    int j = idt_which(i, h * nb0, h * nb1, h * nb2, &k);
    int nb = j == 0 ? nb0 : (j == 1 ? nb1 : (j == 2 ? nb2 : nb3));
    int nbins = j == 0 ? nbins0 : (j == 1 ? nbins1 : (j == 2 ? nbins2 : nbins3));
    int y = k / nb;
    int b = k - y * nb;
    long long plane = (long long)j * h * w;
    const float* m_row = mag + plane + (long long)y * w;
    const float* f_row = fbin + plane + (long long)y * w;
    float* o_row = idt_pick(j, out0, out1, out2, out3) + (long long)(y + 1) * (w + 1) * nb;
    float s = 0.0f;
    o_row[b] = 0.0f;
    for (int x = 0; x < w; ++x) {
        float m = m_row[x];
        float f = f_row[x];
        int b0 = (int)f;  // f >= 0: truncation is floor
        float m1 = (f - (float)b0) * m;
        int b1 = b0 + 1;
        if (b1 >= nbins) b1 -= nbins;
        if (b0 == b) s += m - m1;
        if (b1 == b) s += m1;
        o_row[(x + 1) * nb + b] = s;
    }
}

__global__ void hist_rows(const float* mag, const float* fbin, int h, int w, int nbins0, int nbins1, int nbins2,
                          int nbins3, int nb0, int nb1, int nb2, int nb3, float* out0, float* out1, float* out2,
                          float* out3) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= h * (nb0 + nb1 + nb2 + nb3)) return;
    idt_hist_row(mag, fbin, h, w, nbins0, nbins1, nbins2, nbins3, nb0, nb1, nb2, nb3, out0, out1, out2, out3, i);
}

// Column pass of the four, one thread per (histogram j, column-bin index of its (w+1) * nb_j): out_j[0] = 0,
// out_j[y+1] = out_j[y] + row sums.
__device__ __forceinline__ void idt_hist_col(int h, int w, int nb0, int nb1, int nb2, int nb3, float* out0,
                                             float* out1, float* out2, float* out3, int i) {
    int k;
    int j = idt_which(i, (w + 1) * nb0, (w + 1) * nb1, (w + 1) * nb2, &k);
    int row = (w + 1) * (j == 0 ? nb0 : (j == 1 ? nb1 : (j == 2 ? nb2 : nb3)));
    float* out = idt_pick(j, out0, out1, out2, out3);
    float acc = 0.0f;
    out[k] = 0.0f;
    for (int y = 1; y <= h; ++y) {
        long long q = (long long)y * row + k;
        acc = acc + out[q];
        out[q] = acc;
    }
}

__global__ void hist_cols(int h, int w, int nb0, int nb1, int nb2, int nb3, float* out0, float* out1, float* out2,
                          float* out3) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= (w + 1) * (nb0 + nb1 + nb2 + nb3)) return;
    idt_hist_col(h, w, nb0, nb1, nb2, nb3, out0, out1, out2, out3, i);
}

// The patch's first column (or row) of a point coordinate p: clamp(rint(p) - patch / 2, 0, size - patch), rint
// to nearest even (descriptors.patch_corners).
__device__ __forceinline__ long long idt_corner(float p, int size, int patch) {
    long long c = (long long)rintf(p) - patch / 2;
    c = c < 0 ? 0 : c;
    long long cm = size - patch;
    return c > cm ? cm : c;
}

// One thread per (point i, histogram j) (j fastest): the patch of point pts[i] = [x, y] on the (h, w) frame, its
// nx * ny cells of histogram j (h+1, w+1, nb_j) into out[i * out_stride + offset_j + k], offset_j = nx ny (nb_0 +
// ... + nb_{j-1}), k in [0, nx * ny * nb_j), x-cell outer, y-cell inner, bin fastest; + eps, L1-normalised
// (float64 sum), square-rooted (RootSIFT).
__device__ __forceinline__ void idt_gather_at(const float* hist0, const float* hist1, const float* hist2,
                                              const float* hist3, int nb0, int nb1, int nb2, int nb3,
                                              const float* pts, int i, int j, int h, int w, int patch, int nx, int ny,
                                              int cell_w, int cell_h, float eps, float* out, int out_stride) {
    const float* hist = j == 0 ? hist0 : (j == 1 ? hist1 : (j == 2 ? hist2 : hist3));
    int nb = j == 0 ? nb0 : (j == 1 ? nb1 : (j == 2 ? nb2 : nb3));
    int before = (j > 0 ? nb0 : 0) + (j > 1 ? nb1 : 0) + (j > 2 ? nb2 : 0);
    int w1 = w + 1;
    long long x0 = idt_corner(pts[2 * i], w, patch);
    long long y0 = idt_corner(pts[2 * i + 1], h, patch);
    float* o = out + (long long)i * out_stride + nx * ny * before;
    int dim = nx * ny * nb;
    int k = 0;
    for (int ix = 0; ix < nx; ++ix) {
        long long xa = x0 + (long long)ix * cell_w;
        long long xb = xa + cell_w;
        for (int iy = 0; iy < ny; ++iy) {
            long long ya = y0 + (long long)iy * cell_h;
            long long yb = ya + cell_h;
            const float* h_aa = hist + (ya * w1 + xa) * nb;
            const float* h_ab = hist + (ya * w1 + xb) * nb;
            const float* h_ba = hist + (yb * w1 + xa) * nb;
            const float* h_bb = hist + (yb * w1 + xb) * nb;
            for (int b = 0; b < nb; ++b) {
                float d = (h_bb[b] - h_ab[b]) - (h_ba[b] - h_aa[b]);
                o[k + b] = (d >= 0.0f ? d : 0.0f) + eps;  // clipped at 0: float32 cancellation
            }
            k += nb;
        }
    }
    double total = 0.0;
    for (k = 0; k < dim; ++k) total += (double)o[k];
    if (total > 0.0) {
        float inv = (float)(1.0 / total);
        for (k = 0; k < dim; ++k) o[k] = sqrtf(o[k] * inv);
    } else {
        for (k = 0; k < dim; ++k) o[k] = 0.0f;
    }
}

__global__ void gather_blocks(const float* hist0, const float* hist1, const float* hist2, const float* hist3,
                              int nb0, int nb1, int nb2, int nb3, const float* pts, int n, int h, int w, int patch,
                              int nx, int ny, int cell_w, int cell_h, float eps, float* out, int out_stride) {
    int t = blockIdx.x * blockDim.x + threadIdx.x;
    if (t >= 4 * n) return;
    idt_gather_at(hist0, hist1, hist2, hist3, nb0, nb1, nb2, nb3, pts, t >> 2, t & 3, h, w, patch, nx, ny, cell_w,
                  cell_h, eps, out, out_stride);
}

// ---- every level of a frame in one launch (issue 14's launch budget). The levels' pixel planes (mag, fbin),
// histograms and blocks lie end to end in one buffer each; `table` (n_levels, IDT_LT) int64 holds per level its h,
// w and where its pixels, its row-pass threads, its column-pass threads and its histograms start (counted over the
// levels before it, so the starts increase): a flat thread index finds its level by these starts, then does the
// one-level kernel's work at its index within the level. The inputs (each level's frame, flow, points) are
// arguments, IDT_MAXL levels per launch; a launch may take any run of consecutive rows of the table.
#define IDT_LT 6
#define IDT_MAXL 8

// The last level l < n_levels whose start table[l, col] <= i.
__device__ __forceinline__ int idt_level(const long long* table, int n_levels, int col, long long i) {
    int l = 0;
    while (l + 1 < n_levels && table[(l + 1) * IDT_LT + col] <= i) ++l;
    return l;
}

// Histogram j (h+1, w+1, nb_j) of the level of table row `row`: the level's four lie one after the other from
// hist + row[5].
__device__ __forceinline__ float* idt_level_hist(float* hist, const long long* row, int nb0, int nb1, int nb2,
                                                 int j) {
    long long plane = (row[0] + 1) * (row[1] + 1);
    long long before = (j > 0 ? nb0 : 0) + (j > 1 ? nb1 : 0) + (j > 2 ? nb2 : 0);
    return hist + row[5] + plane * before;
}

// frame_bins of every level: one thread per pixel of the levels, pixels from table[0, 2] to end.
__global__ void frame_bins_levels(const long long* table, int n_levels, long long end, int gray_u8, const void* g0,
                                  const void* g1, const void* g2, const void* g3, const void* g4, const void* g5,
                                  const void* g6, const void* g7, const float* f0, const float* f1,
                                  const float* f2, const float* f3, const float* f4, const float* f5,
                                  const float* f6, const float* f7, int hog_bins, int hof_bins, int mbh_bins,
                                  float min_flow, float* mag, float* fbin) {
    long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x + table[2];
    if (i >= end) return;
    int l = idt_level(table, n_levels, 2, i);
    const long long* row = table + l * IDT_LT;
    const void* grays[IDT_MAXL] = {g0, g1, g2, g3, g4, g5, g6, g7};
    const float* flows[IDT_MAXL] = {f0, f1, f2, f3, f4, f5, f6, f7};
    long long first = row[2];
    idt_frame_bins_at(grays[l], gray_u8, flows[l], (int)row[0], (int)row[1], hog_bins, hof_bins, mbh_bins, min_flow,
                      mag + 4 * first, fbin + 4 * first, (int)(i - first));
}

// hist_rows of every level: one thread per (level, histogram, row, bin), threads from table[0, 3] to end.
__global__ void hist_rows_levels(const long long* table, int n_levels, long long end, const float* mag,
                                 const float* fbin, int nbins0, int nbins1, int nbins2, int nbins3, int nb0, int nb1,
                                 int nb2, int nb3, float* hist) {
    long long t = (long long)blockIdx.x * blockDim.x + threadIdx.x + table[3];
    if (t >= end) return;
    int l = idt_level(table, n_levels, 3, t);
    const long long* row = table + l * IDT_LT;
    long long first = row[2];
    idt_hist_row(mag + 4 * first, fbin + 4 * first, (int)row[0], (int)row[1], nbins0, nbins1, nbins2, nbins3, nb0,
                 nb1, nb2, nb3, idt_level_hist(hist, row, nb0, nb1, nb2, 0),
                 idt_level_hist(hist, row, nb0, nb1, nb2, 1), idt_level_hist(hist, row, nb0, nb1, nb2, 2),
                 idt_level_hist(hist, row, nb0, nb1, nb2, 3), (int)(t - row[3]));
}

// hist_cols of every level: one thread per (level, histogram, column, bin), threads from table[0, 4] to end.
__global__ void hist_cols_levels(const long long* table, int n_levels, long long end, int nb0, int nb1, int nb2,
                                 int nb3, float* hist) {
    long long t = (long long)blockIdx.x * blockDim.x + threadIdx.x + table[4];
    if (t >= end) return;
    int l = idt_level(table, n_levels, 4, t);
    const long long* row = table + l * IDT_LT;
    idt_hist_col((int)row[0], (int)row[1], nb0, nb1, nb2, nb3, idt_level_hist(hist, row, nb0, nb1, nb2, 0),
                 idt_level_hist(hist, row, nb0, nb1, nb2, 1), idt_level_hist(hist, row, nb0, nb1, nb2, 2),
                 idt_level_hist(hist, row, nb0, nb1, nb2, 3), (int)(t - row[4]));
}

// gather_blocks of every level: one thread per (point, histogram) of the levels, level l's n_l points p_l [x, y]
// (its own pixels) into out's rows after the levels before it.
__global__ void gather_blocks_levels(const long long* table, int n_levels, float* hist, int nb0, int nb1, int nb2,
                                     int nb3, const float* p0, const float* p1, const float* p2, const float* p3,
                                     const float* p4, const float* p5, const float* p6, const float* p7, int n0,
                                     int n1, int n2, int n3, int n4, int n5, int n6, int n7, int patch, int nx,
                                     int ny, int cell_w, int cell_h, float eps, float* out, int out_stride) {
    int t = blockIdx.x * blockDim.x + threadIdx.x;
    const float* points[IDT_MAXL] = {p0, p1, p2, p3, p4, p5, p6, p7};
    int counts[IDT_MAXL] = {n0, n1, n2, n3, n4, n5, n6, n7};
    int l = 0;
    int first = 0;  // level l's first row of out
    while (l < n_levels && t >= 4 * (first + counts[l])) {
        first += counts[l];
        ++l;
    }
    if (l >= n_levels) return;
    const long long* row = table + l * IDT_LT;
    int local = t - 4 * first;
    idt_gather_at(idt_level_hist(hist, row, nb0, nb1, nb2, 0), idt_level_hist(hist, row, nb0, nb1, nb2, 1),
                  idt_level_hist(hist, row, nb0, nb1, nb2, 2), idt_level_hist(hist, row, nb0, nb1, nb2, 3), nb0, nb1,
                  nb2, nb3, points[l], local >> 2, local & 3, (int)row[0], (int)row[1], patch, nx, ny, cell_w, cell_h,
                  eps, out + (long long)first * out_stride, out_stride);
}

}
"""


@functools.lru_cache(maxsize=None)
def module():
    """The compiled ``cupy.RawModule`` (one per process; FMA contraction off to match the CPU)."""
    return cp.RawModule(code=_SOURCE, options=("--fmad=false",))


def _kernel(name):
    return function(module(), name)


def _grid(n):
    return (max(1, (n + _BLOCK - 1) // _BLOCK),)


def _usable(arrays, shapes) -> bool:
    return arrays is not None and all(
        isinstance(a, cp.ndarray) and a.shape == s and a.dtype == np.float32 and a.flags.c_contiguous
        for a, s in zip(arrays, shapes))


def frame_histograms(gray, flow, *, hog_bins: int, hof_bins: int, mbh_bins: int, min_flow: float, out=None):
    """The HOG, HOF, MBHx and MBHy integral histograms of one frame on the device, in three launches (the four
    histograms' per-pixel bins, their row pass, their column pass).

    Parameters
    ----------
    gray : (h, w) float32 or uint8, NumPy or CuPy
        The frame on a 0..255 scale (validated by :func:`idtfv.idt.descriptors.frame_histograms`); uint8 pixels
        are read as such (no float copy).
    flow : (h, w, 2) float32, NumPy or CuPy
        The camera-compensated flow.
    hog_bins, hof_bins, mbh_bins : int
        Bins of each histogram (``hof_bins`` counts the zero-motion bin).
    min_flow : float
        HOF's zero-motion threshold (px).
    out : tuple of 4 CuPy arrays, optional
        Overwritten when their shapes fit (the previous frame's histograms of this scale).

    Returns
    -------
    tuple of 4 CuPy arrays
        ``(hog, hof, mbhx, mbhy)``, each ``(h+1, w+1, B)`` float32, bit-identical to the Numba kernels'.
    """
    g = cp.asarray(gray)
    g = cp.ascontiguousarray(g if g.dtype == np.uint8 else g.astype(cp.float32, copy=False))
    f = cp.ascontiguousarray(cp.asarray(flow, dtype=cp.float32))
    h, w = g.shape
    nbins = (hog_bins, hof_bins - 1, mbh_bins, mbh_bins)  # the angles' bins (HOF's zero-motion bin apart)
    nbs = (hog_bins, hof_bins, mbh_bins, mbh_bins)
    shapes = [(h + 1, w + 1, b) for b in nbs]
    hists = tuple(out) if _usable(out, shapes) else tuple(cp.empty(s, cp.float32) for s in shapes)
    mag = cp.empty((4, h, w), cp.float32)
    fbin = cp.empty((4, h, w), cp.float32)
    ih, iw = np.int32(h), np.int32(w)
    _kernel("frame_bins")(_grid(h * w), (_BLOCK,),
                          (g, np.int32(g.dtype == np.uint8), f, ih, iw, np.int32(nbins[0]), np.int32(nbins[1]),
                           np.int32(nbins[2]), np.float32(min_flow), mag, fbin))
    _kernel("hist_rows")(_grid(h * sum(nbs)), (_BLOCK,),
                         (mag, fbin, ih, iw, *(np.int32(b) for b in nbins), *(np.int32(b) for b in nbs), *hists))
    _kernel("hist_cols")(_grid((w + 1) * sum(nbs)), (_BLOCK,), (ih, iw, *(np.int32(b) for b in nbs), *hists))
    return hists


def gather_blocks(hists, points, *, patch: int, nx_cells: int, ny_cells: int, epsilon: float):
    """Every point's blocks of the four histograms, side by side, in one launch (one thread per point and
    histogram; the patch corners computed in it), left on the device.

    Parameters
    ----------
    hists : sequence of 4 CuPy arrays ``(h+1, w+1, B_j)`` float32
        HOG, HOF, MBHx, MBHy of one frame and scale.
    points : (n, 2) float32 CuPy array
        ``[x, y]`` at this scale, finite; each patch's corner is
        :func:`idtfv.idt.descriptors.patch_corners`' (``clamp(rint(x) - patch // 2, 0, w - patch)``).
    patch, nx_cells, ny_cells : int
        Patch size and its cell grid (cells of ``patch // nx_cells`` by ``patch // ny_cells`` pixels).
    epsilon : float
        Added to every cell-bin sum before normalising.

    Returns
    -------
    (n, sum_j nx_cells * ny_cells * B_j) float32 CuPy array
        Histogram j's blocks in its own column range, in the order of ``hists``; bit-identical to
        :func:`idtfv.idt._histograms_nb.gather_all_blocks`.
    """
    if len(hists) != 4:
        raise ValueError(f"gather_blocks: expected the 4 histograms (hog, hof, mbhx, mbhy), got {len(hists)}")
    nbs = [int(hist.shape[2]) for hist in hists]
    stride = nx_cells * ny_cells * sum(nbs)
    n = int(len(points))
    out = cp.empty((n, stride), cp.float32)
    if n == 0:
        return out
    h, w = int(hists[0].shape[0]) - 1, int(hists[0].shape[1]) - 1
    pts = cp.ascontiguousarray(cp.asarray(points, dtype=cp.float32))
    _kernel("gather_blocks")(
        _grid(4 * n), (_BLOCK,),
        (*hists, *(np.int32(b) for b in nbs), pts, np.int32(n), np.int32(h), np.int32(w), np.int32(patch),
         np.int32(nx_cells), np.int32(ny_cells), np.int32(patch // nx_cells), np.int32(patch // ny_cells),
         np.float32(epsilon), out, np.int32(stride)),
    )  # fmt: skip
    return out


def gather_all(hists, points, *, patch: int, nx_cells: int, ny_cells: int, epsilon: float):
    """:func:`gather_blocks` of host points, copied back to the host once.

    Parameters
    ----------
    hists : sequence of 4 CuPy arrays ``(h+1, w+1, B_j)`` float32
    points : (n, 2) float32, NumPy
        ``[x, y]`` at this scale, finite.
    patch, nx_cells, ny_cells, epsilon
        As :func:`gather_blocks`.

    Returns
    -------
    (n, sum_j nx_cells * ny_cells * B_j) float32, NumPy
    """
    pts = np.ascontiguousarray(points, np.float32)
    if len(pts) == 0:
        return cp.asnumpy(gather_blocks(hists, cp.zeros((0, 2), cp.float32), patch=patch, nx_cells=nx_cells,
                                        ny_cells=ny_cells, epsilon=epsilon))
    return cp.asnumpy(gather_blocks(hists, cp.asarray(pts), patch=patch, nx_cells=nx_cells, ny_cells=ny_cells,
                                    epsilon=epsilon))


# ------------------------------------------------------------------------------------ every level in one launch
#: Levels one launch of the ``*_levels`` kernels takes (their frame, flow and point arguments); more levels take
#: one launch per run of this many.
MAX_LEVELS = 8
#: Columns of a level's row in :func:`level_table`.
TABLE_COLUMNS = ("h", "w", "first_pixel", "first_row_thread", "first_column_thread", "first_hist")


def level_table(shapes, nbs) -> np.ndarray:
    """The ``*_levels`` kernels' table: per level its ``h, w`` and where its pixels, row-pass threads, column-pass
    threads and histograms start in the runs laid end to end over the levels (:data:`TABLE_COLUMNS`).

    Parameters
    ----------
    shapes : sequence of (h, w)
        The levels' frame sizes, in order.
    nbs : sequence of 4 int
        Bins of HOG, HOF (with its zero-motion bin), MBHx, MBHy.

    Returns
    -------
    (n_levels + 1, 6) int64
        One row per level and a last row whose starts are the totals (its ``h, w`` are 0).
    """
    per = int(sum(nbs))
    table = np.zeros((len(shapes) + 1, len(TABLE_COLUMNS)), np.int64)
    for k, (h, w) in enumerate(shapes):
        table[k, :2] = h, w
        table[k + 1, 2:] = table[k, 2:] + (h * w, h * per, (w + 1) * per, (h + 1) * (w + 1) * per)
    return table


class LevelHistograms:
    """The HOG, HOF, MBHx and MBHy integral histograms of several levels of a frame, in one device buffer.

    Parameters
    ----------
    shapes : sequence of (h, w)
        The levels' frame sizes.
    nbs : sequence of 4 int
        Bins of each histogram (HOF's zero-motion bin counted).

    Attributes
    ----------
    levels : list of tuple of 4 CuPy arrays
        Level k's ``(hog, hof, mbhx, mbhy)``, each ``(h_k+1, w_k+1, B_j)`` float32: views of :attr:`buffer`.
    table : (n_levels + 1, 6) int64 CuPy array
        :func:`level_table` (uploaded once per instance).
    """

    def __init__(self, shapes, nbs):
        self.shapes = tuple((int(h), int(w)) for h, w in shapes)
        self.nbs = tuple(int(b) for b in nbs)
        host = level_table(self.shapes, self.nbs)
        self.ends = host[-1]  # the totals: pixels, row threads, column threads, histogram floats
        self.starts = host[:-1]
        self.table = cp.asarray(host)
        self.buffer = cp.empty(int(self.ends[5]), cp.float32)
        self.mag = cp.empty(4 * int(self.ends[2]), cp.float32)
        self.fbin = cp.empty(4 * int(self.ends[2]), cp.float32)
        self.levels = []
        for (h, w), start in zip(self.shapes, self.starts):
            o, views = int(start[5]), []
            for b in self.nbs:
                size = (h + 1) * (w + 1) * b
                views.append(self.buffer[o:o + size].reshape(h + 1, w + 1, b))
                o += size
            self.levels.append(tuple(views))

    def fits(self, shapes, nbs) -> bool:
        """Whether these are the histograms of levels of ``shapes`` with ``nbs`` bins (to be reused)."""
        return self.shapes == tuple((int(h), int(w)) for h, w in shapes) and self.nbs == tuple(int(b) for b in nbs)

    def runs(self):
        """``(first level, number of levels)`` of each launch (:data:`MAX_LEVELS` levels each)."""
        n = len(self.shapes)
        return [(a, min(MAX_LEVELS, n - a)) for a in range(0, n, MAX_LEVELS)]

    def end(self, first: int, count: int, column: int) -> int:
        """Where the run ``[first, first + count)`` ends in the table's ``column`` (the next level's start)."""
        last = first + count
        return int(self.ends[column] if last == len(self.shapes) else self.starts[last, column])


def _padded(arrays, filler):
    """``arrays`` followed by ``filler`` up to :data:`MAX_LEVELS` (the unused kernel arguments)."""
    return list(arrays) + [filler] * (MAX_LEVELS - len(arrays))


def level_histograms(grays, flows, *, hog_bins: int, hof_bins: int, mbh_bins: int, min_flow: float, out=None):
    """The four integral histograms of every level of a frame, in three launches for all levels (per
    :data:`MAX_LEVELS` levels): :func:`frame_histograms` of each level, bit for bit, with the levels in one buffer.

    Parameters
    ----------
    grays : sequence of (h_k, w_k) uint8 or float32 CuPy arrays
        The levels of the frame (0..255); all uint8 are read as such, otherwise all as float32.
    flows : sequence of (h_k, w_k, 2) float32 CuPy arrays
        The levels' camera-compensated flows.
    hog_bins, hof_bins, mbh_bins, min_flow
        As :func:`frame_histograms`.
    out : LevelHistograms, optional
        Overwritten when it :meth:`~LevelHistograms.fits` (the previous frame's).

    Returns
    -------
    LevelHistograms
        ``levels[k]`` is ``frame_histograms(grays[k], flows[k], ...)``.
    """
    if len(grays) != len(flows) or not grays:
        raise ValueError(f"level_histograms: expected one flow per level and at least one level, got "
                         f"{len(grays)} levels and {len(flows)} flows")
    u8 = all(g.dtype == np.uint8 for g in grays)
    gs = [cp.ascontiguousarray(g if u8 else g.astype(cp.float32, copy=False)) for g in grays]
    fs = [cp.ascontiguousarray(cp.asarray(f, dtype=cp.float32)) for f in flows]
    shapes = [g.shape for g in gs]
    for (h, w), f in zip(shapes, fs):
        if f.shape != (h, w, 2):
            raise ValueError(f"level_histograms: a level's flow must be (h, w, 2) = {(h, w, 2)}, got {f.shape}")
    nbins = (hog_bins, hof_bins - 1, mbh_bins, mbh_bins)
    nbs = (hog_bins, hof_bins, mbh_bins, mbh_bins)
    hists = out if isinstance(out, LevelHistograms) and out.fits(shapes, nbs) else LevelHistograms(shapes, nbs)
    ib = [np.int32(b) for b in nbins]
    inb = [np.int32(b) for b in nbs]
    for a, n in hists.runs():
        table, il = hists.table[a:], np.int32(n)
        start = hists.starts[a]
        end = [hists.end(a, n, c) for c in (2, 3, 4)]
        _kernel("frame_bins_levels")(
            _grid(end[0] - int(start[2])), (_BLOCK,),
            (table, il, np.int64(end[0]), np.int32(u8), *_padded(gs[a:a + n], gs[a]), *_padded(fs[a:a + n], fs[a]),
             *ib[:3], np.float32(min_flow), hists.mag, hists.fbin))
        _kernel("hist_rows_levels")(_grid(end[1] - int(start[3])), (_BLOCK,),
                                    (table, il, np.int64(end[1]), hists.mag, hists.fbin, *ib, *inb, hists.buffer))
        _kernel("hist_cols_levels")(_grid(end[2] - int(start[4])), (_BLOCK,),
                                    (table, il, np.int64(end[2]), *inb, hists.buffer))
    return hists


def gather_levels(hists: LevelHistograms, points, *, patch: int, nx_cells: int, ny_cells: int, epsilon: float):
    """Every level's points' blocks of its four histograms, in one launch for all levels (per :data:`MAX_LEVELS`
    levels): :func:`gather_blocks` of each level, bit for bit, into one device array.

    Parameters
    ----------
    hists : LevelHistograms
        The levels' histograms (:func:`level_histograms`).
    points : sequence of (n_k, 2) float32 CuPy arrays
        Level k's points ``[x, y]`` in its pixels, finite (``n_k`` may be 0).
    patch, nx_cells, ny_cells, epsilon
        As :func:`gather_blocks`.

    Returns
    -------
    (sum_k n_k, sum_j nx_cells * ny_cells * B_j) float32 CuPy array
        Level k's blocks in its rows, after the levels before it.
    """
    if len(points) != len(hists.shapes):
        raise ValueError(f"gather_levels: expected the points of the {len(hists.shapes)} levels, got "
                         f"{len(points)}")
    stride = nx_cells * ny_cells * sum(hists.nbs)
    counts = [int(len(p)) for p in points]
    out = cp.empty((sum(counts), stride), cp.float32)
    pts = [cp.ascontiguousarray(cp.asarray(p, dtype=cp.float32)) for p in points]
    rows = np.concatenate([[0], np.cumsum(counts)]).astype(int)
    for a, n in hists.runs():
        m = int(rows[a + n] - rows[a])
        if m == 0:
            continue
        _kernel("gather_blocks_levels")(
            _grid(4 * m), (_BLOCK,),
            (hists.table[a:], np.int32(n), hists.buffer, *(np.int32(b) for b in hists.nbs),
             *_padded(pts[a:a + n], pts[a]), *_padded([np.int32(c) for c in counts[a:a + n]], np.int32(0)),
             np.int32(patch), np.int32(nx_cells), np.int32(ny_cells), np.int32(patch // nx_cells),
             np.int32(patch // ny_cells), np.float32(epsilon), out[rows[a]:], np.int32(stride)))
    return out
