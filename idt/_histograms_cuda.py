r"""CUDA kernels (CuPy ``RawModule``): orientation integral histograms and per-point block gathering.

The device twins of :mod:`idtfv.idt._histograms_nb` (see its docstring for the binning and the integral
histogram). Each kernel does, per output value, the float32 operations of the Numba kernel in the same order (no
FMA: ``--fmad=false``; IEEE division and square root, CUDA's default; the same arctangent polynomial; running
sums taken in the same sequence), so the two give **bit-identical** histograms and blocks. That is a property of
the arithmetic, not a tolerance: the integral histogram is a row pass (one thread per row and bin adds the row's
weights left to right, as the CPU's ``rowsum``) followed by a column pass (one thread per column and bin adds
the rows top to bottom, as the CPU's ``prev + rowsum``), which is exactly the CPU's sequence of additions.

Kernels (one thread per pixel, per (row, bin), per (column, bin) or per point):

- ``gradient_bins`` / ``flow_bins``: each pixel's weight ``mag`` and its angle in bins ``fbin`` (HOF: the
  zero-motion bin ``nbins`` with weight 1 under ``min_flow``);
- ``hist_rows`` then ``hist_cols``: the integral histogram ``(h+1, w+1, nb)`` from ``mag`` and ``fbin``;
- ``gather_blocks``: per point, the L1-normalised, square-rooted cell sums (RootSIFT) into a column range of a
  shared output row, so the four descriptors of a batch of points come back in one transfer.

Without a GPU the kernels are still exercised: ``tests/_cuda_on_cpu.py`` compiles :data:`_SOURCE` for the CPU and
``tests/test_histograms_cuda.py`` checks them bit for bit against the Numba kernels, with broken kernels that
must fail. Importing this module needs CuPy; :mod:`idtfv.idt.descriptors` imports it only for ``device="cuda"``.
"""

from __future__ import annotations

import functools

import cupy as cp
import numpy as np

from idtfv.idt._histograms_nb import _ATAN_C

__all__ = ["frame_histograms", "gather_all", "module"]

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

// Centred differences of channel `channel` of img (h, w, c), BORDER_REFLECT_101 (zero across the border).
__global__ void gradient_bins(const float* img, int h, int w, int c, int channel, int nbins,
                              float* mag, float* fbin) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= h * w) return;
    int y = i / w;
    int x = i - y * w;
    float u = 0.0f;
    if (x > 0 && x < w - 1) u = img[(y * w + x + 1) * c + channel] - img[(y * w + x - 1) * c + channel];
    int ym = y > 0 ? y - 1 : 1;
    int yp = y < h - 1 ? y + 1 : h - 2;
    float v = img[(yp * w + x) * c + channel] - img[(ym * w + x) * c + channel];
    mag[i] = sqrtf(u * u + v * v);
    fbin[i] = idt_bin_of(u, v, (float)nbins);
}

// Flow vectors (h, w, 2); magnitude <= min_flow: weight 1 in the zero-motion bin nbins.
__global__ void flow_bins(const float* flow, int h, int w, int nbins, float min_flow, float* mag, float* fbin) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= h * w) return;
    float u = flow[2 * i];
    float v = flow[2 * i + 1];
    float m = sqrtf(u * u + v * v);
    bool zero = m <= min_flow;
    mag[i] = zero ? 1.0f : m;
    fbin[i] = zero ? (float)nbins : idt_bin_of(u, v, (float)nbins);
}

// Row pass, one thread per (row y, bin b): out[y+1, x+1, b] = sum of row y's weights of bin b over columns <= x,
// added left to right with the CPU's two adds per pixel (bin b0 then bin b1); out[y+1, 0, b] = 0.
__global__ void hist_rows(const float* mag, const float* fbin, int h, int w, int nbins, int nb, float* out) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= h * nb) return;
    int y = i / nb;
    int b = i - y * nb;
    const float* m_row = mag + (long long)y * w;
    const float* f_row = fbin + (long long)y * w;
    float* o_row = out + (long long)(y + 1) * (w + 1) * nb;
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

// Column pass, one thread per (column, bin) of the (w+1) * nb of a row: out[0] = 0, out[y+1] = out[y] + row sums.
__global__ void hist_cols(int h, int w, int nb, float* out) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    int row = (w + 1) * nb;
    if (i >= row) return;
    float acc = 0.0f;
    out[i] = 0.0f;
    for (int y = 1; y <= h; ++y) {
        long long k = (long long)y * row + i;
        acc = acc + out[k];
        out[k] = acc;
    }
}

// One thread per point: its nx * ny cells of hist (h1, w1, nb) into out[i * out_stride + out_offset + k], k in
// [0, nx * ny * nb), x-cell outer, y-cell inner, bin fastest; + eps, L1-normalised (float64 sum), square-rooted.
__global__ void gather_blocks(const float* hist, int w1, int nb, const long long* x0, const long long* y0, int n,
                              int nx, int ny, int cell_w, int cell_h, float eps,
                              float* out, int out_stride, int out_offset) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n) return;
    float* o = out + (long long)i * out_stride + out_offset;
    int dim = nx * ny * nb;
    int k = 0;
    for (int ix = 0; ix < nx; ++ix) {
        long long xa = x0[i] + (long long)ix * cell_w;
        long long xb = xa + cell_w;
        for (int iy = 0; iy < ny; ++iy) {
            long long ya = y0[i] + (long long)iy * cell_h;
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


def _integral(mag, fbin, h, w, nbins, nb, out):
    ih, iw = np.int32(h), np.int32(w)
    _kernel("hist_rows")(_grid(h * nb), (_BLOCK,), (mag, fbin, ih, iw, np.int32(nbins), np.int32(nb), out))
    _kernel("hist_cols")(_grid((w + 1) * nb), (_BLOCK,), (ih, iw, np.int32(nb), out))


def _gradient(img, channel, nbins, out, mag, fbin):
    h, w, c = img.shape
    _kernel("gradient_bins")(_grid(h * w), (_BLOCK,),
                             (img, np.int32(h), np.int32(w), np.int32(c), np.int32(channel), np.int32(nbins),
                              mag, fbin))
    _integral(mag, fbin, h, w, nbins, nbins, out)


def _usable(arrays, shapes) -> bool:
    return arrays is not None and all(
        isinstance(a, cp.ndarray) and a.shape == s and a.dtype == np.float32 and a.flags.c_contiguous
        for a, s in zip(arrays, shapes))


def frame_histograms(gray, flow, *, hog_bins: int, hof_bins: int, mbh_bins: int, min_flow: float, out=None):
    """The HOG, HOF, MBHx and MBHy integral histograms of one frame on the device.

    Parameters
    ----------
    gray : (h, w) float32, NumPy or CuPy
        The frame on a 0..255 scale (validated by :func:`idtfv.idt.descriptors.frame_histograms`).
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
    g = cp.ascontiguousarray(cp.asarray(gray, dtype=cp.float32))
    f = cp.ascontiguousarray(cp.asarray(flow, dtype=cp.float32))
    h, w = g.shape
    shapes = [(h + 1, w + 1, b) for b in (hog_bins, hof_bins, mbh_bins, mbh_bins)]
    hists = tuple(out) if _usable(out, shapes) else tuple(cp.empty(s, cp.float32) for s in shapes)
    mag = cp.empty((h, w), cp.float32)
    fbin = cp.empty((h, w), cp.float32)
    _gradient(g.reshape(h, w, 1), 0, hog_bins, hists[0], mag, fbin)
    _kernel("flow_bins")(_grid(h * w), (_BLOCK,),
                         (f, np.int32(h), np.int32(w), np.int32(hof_bins - 1), np.float32(min_flow), mag, fbin))
    _integral(mag, fbin, h, w, hof_bins - 1, hof_bins, hists[1])
    _gradient(f, 0, mbh_bins, hists[2], mag, fbin)
    _gradient(f, 1, mbh_bins, hists[3], mag, fbin)
    return hists


def gather_all(hists, x0, y0, *, nx_cells: int, ny_cells: int, cell_w: int, cell_h: int, epsilon: float):
    """Every histogram's per-point blocks, side by side in one array, copied back to the host once.

    Parameters
    ----------
    hists : sequence of CuPy arrays ``(h+1, w+1, B_j)`` float32
    x0, y0 : (n,) int64, NumPy
        The patches' top-left corners (:func:`idtfv.idt.descriptors.patch_corners`).
    nx_cells, ny_cells, cell_w, cell_h : int
        Cell grid of the patch.
    epsilon : float
        Added to every cell-bin sum before normalising.

    Returns
    -------
    (n, sum_j nx_cells * ny_cells * B_j) float32, NumPy
        Histogram j's blocks in its own column range, in the order of ``hists``.
    """
    n = int(len(x0))
    cells = nx_cells * ny_cells
    dims = [cells * int(hist.shape[2]) for hist in hists]
    stride = sum(dims)
    if n == 0:
        return np.zeros((0, stride), np.float32)
    out = cp.empty((n, stride), cp.float32)
    dx0 = cp.asarray(np.ascontiguousarray(x0, np.int64))
    dy0 = cp.asarray(np.ascontiguousarray(y0, np.int64))
    offset = 0
    for hist, dim in zip(hists, dims):
        _kernel("gather_blocks")(
            _grid(n), (_BLOCK,),
            (hist, np.int32(hist.shape[1]), np.int32(hist.shape[2]), dx0, dy0, np.int32(n), np.int32(nx_cells),
             np.int32(ny_cells), np.int32(cell_w), np.int32(cell_h), np.float32(epsilon), out, np.int32(stride),
             np.int32(offset)),
        )  # fmt: skip
        offset += dim
    return cp.asnumpy(out)
