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
  the four descriptors of a batch of points are one array.

Without a GPU the kernels are still exercised: ``tests/_cuda_on_cpu.py`` compiles :data:`_SOURCE` for the CPU and
``tests/test_histograms_cuda.py`` checks them bit for bit against the Numba kernels, with broken kernels that
must fail. Importing this module needs CuPy; :mod:`idtfv.idt.descriptors` imports it only for ``device="cuda"``.
"""

from __future__ import annotations

import functools

import cupy as cp
import numpy as np

from idtfv.idt._histograms_nb import _ATAN_C

__all__ = ["frame_histograms", "gather_blocks", "gather_all", "module"]

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
__global__ void frame_bins(const void* gray, int gray_u8, const float* flow, int h, int w, int hog_bins,
                           int hof_bins, int mbh_bins, float min_flow, float* mag, float* fbin) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= h * w) return;
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
__global__ void hist_rows(const float* mag, const float* fbin, int h, int w, int nbins0, int nbins1, int nbins2,
                          int nbins3, int nb0, int nb1, int nb2, int nb3, float* out0, float* out1, float* out2,
                          float* out3) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    int per_row = nb0 + nb1 + nb2 + nb3;
    if (i >= h * per_row) return;
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

// Column pass of the four, one thread per (histogram j, column-bin index of its (w+1) * nb_j): out_j[0] = 0,
// out_j[y+1] = out_j[y] + row sums.
__global__ void hist_cols(int h, int w, int nb0, int nb1, int nb2, int nb3, float* out0, float* out1, float* out2,
                          float* out3) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= (w + 1) * (nb0 + nb1 + nb2 + nb3)) return;
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
__global__ void gather_blocks(const float* hist0, const float* hist1, const float* hist2, const float* hist3,
                              int nb0, int nb1, int nb2, int nb3, const float* pts, int n, int h, int w, int patch,
                              int nx, int ny, int cell_w, int cell_h, float eps, float* out, int out_stride) {
    int t = blockIdx.x * blockDim.x + threadIdx.x;
    if (t >= 4 * n) return;
    int i = t >> 2;
    int j = t & 3;
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

}
"""


@functools.lru_cache(maxsize=None)
def module():
    """The compiled ``cupy.RawModule`` (one per process; FMA contraction off to match the CPU)."""
    return cp.RawModule(code=_SOURCE, options=("--fmad=false",))


def _kernel(name):
    return module().get_function(name)


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
