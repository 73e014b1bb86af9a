r"""Numba kernels: orientation integral histograms and their per-point block look-ups.

These kernels assume validated, C-contiguous float32 inputs; :mod:`idtfv.idt.descriptors` validates once at the
public boundary and calls them.

Orientation binning (HOG, HOF, MBH; Wang & Schmid, IJCV 2013 / ICCV 2013)
-------------------------------------------------------------------------
For a vector :math:`(u, v)` (an image gradient or a flow vector) with magnitude :math:`m = \sqrt{u^2+v^2}` and
angle :math:`\theta = \operatorname{atan2}(v, u) \in [0, 360)` degrees (image axes: x right, y down),
with :math:`B` orientation bins over the full circle,

.. math::  f = \theta B / 360,\quad b_0 = \lfloor f \rfloor,\quad b_1 = (b_0 + 1) \bmod B,\quad
           h[b_0] \mathrel{+}= (1 - (f - b_0))\, m,\quad h[b_1] \mathrel{+}= (f - b_0)\, m.

HOF adds a zero-motion bin :math:`B` (the last one): a flow vector with :math:`m \le` ``min_flow`` adds weight 1
to it and nothing to the orientation bins.

Gradients are centred differences :math:`I(x+1) - I(x-1)` (``cv2.Sobel`` with ``ksize=1``), with the image
reflected without repeating the border pixel (``BORDER_REFLECT_101``), so the derivative across the first and
last column/row is 0.

Integral histogram
------------------
``H`` has shape ``(h+1, w+1, B)``; ``H[y+1, x+1, b]`` is the sum of bin ``b`` over rows ``<= y`` and columns
``<= x``; row 0 and column 0 are zero. The sum over the rectangle of rows ``[y0, y1)`` and columns ``[x0, x1)`` is
``H[y1, x1] - H[y0, x1] - H[y1, x0] + H[y0, x0]``.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

from idtfv.idt._histograms_simd_nb import add_sqrt_scaled, cell_bins8, cell_bins9, integral_row
from idtfv.llvm_ir import wide_vectors

#: SHA-256 of the kernel modules this one's cached kernels compile in. Numba keys a kernel's cache by the bytes of
#: its own file only: a change to a dependency must change this file too, or the old machine code stays in use
#: (``tests/test_kernel_caches.py`` checks the digests).
KERNEL_DEPENDENCIES = {"_histograms_simd_nb.py": "f0ef815027919a478f804e62e86333711b65cce4010f790246138841a6ac9c0a",
                       "llvm_ir.py": "c1aafaf28705aa778677439055f65b3deecf5aa9526143717849da068b96689b"}

__all__ = ["angle_fraction", "gradient_integral_histogram", "flow_integral_histogram", "frame_integral_histograms",
           "hog_integral_histogram", "motion_integral_histograms", "gather_blocks", "gather_all_blocks",
           "stream_sum_blocks"]


# atan(t) ~= t * P(t^2) on [0, 1]: least-squares fit on Chebyshev nodes, max error 4.1e-8 rad in exact arithmetic
# (evaluated in float32 here: about 1e-7 of a turn), far below the 0.3 degrees of OpenCV's fastAtan2 used by LEAR's
# code. Branch-free and in float32 so that the per-row pass vectorises; about 6x faster than math.atan2.
_ATAN_C = (
    0.9999994368431474,
    -0.3333010667768912,
    0.19948508985769264,
    -0.13915802260706234,
    0.096562564704893605,
    -0.056063176729480996,
    0.021946611032883895,
    -0.0040733094645510198,
)
_C0, _C1, _C2, _C3, _C4, _C5, _C6, _C7 = (np.float32(c) for c in _ATAN_C)
_INV_2PI = np.float32(1.0 / (2.0 * math.pi))
_F0 = np.float32(0.0)
_F025 = np.float32(0.25)
_F05 = np.float32(0.5)
_F1 = np.float32(1.0)


@njit(cache=True, inline="always")
def angle_fraction(u, v):
    """Angle of the float32 vector (u, v) as a fraction of a full turn, ``atan2(v, u) / 2 pi`` mod 1, in [0, 1]
    (1.0 can occur through rounding just below a full turn; (0, 0) gives 0)."""
    au = abs(u)
    av = abs(v)
    mx = max(au, av)
    mn = min(au, av)
    t = mn / mx if mx > _F0 else _F0
    t2 = t * t
    p = _C7
    p = p * t2 + _C6
    p = p * t2 + _C5
    p = p * t2 + _C4
    p = p * t2 + _C3
    p = p * t2 + _C2
    p = p * t2 + _C1
    p = p * t2 + _C0
    a = t * p * _INV_2PI  # in [0, 1/8]
    a = _F025 - a if av > au else a
    a = _F05 - a if u < _F0 else a
    a = _F1 - a if v < _F0 else a
    return a


@njit(cache=True, inline="always")
def _accumulate_row(mag, fbin, nbins, nb, rowsum, prev, cur):
    """Split each pixel's weight between its two bins, keep running row sums, write one integral row.

    ``mag``, ``fbin`` (w,): weight and angle in bins, ``0 <= fbin < nbins``, or ``fbin == nbins`` exactly for
    the HOF zero bin (then all the weight goes to bin ``nbins``). ``nb``: bins per pixel (``nbins``, or
    ``nbins + 1`` with the zero bin), ``rowsum`` (>= nb,) scratch. ``prev``/``cur``: rows y and y+1 of the
    integral histogram, flattened to ((w+1) * nb,). Callers pass ``nbins``/``nb`` as literals for the usual
    layouts (8 and 9 bins): the per-bin loops then unroll, about 1.5x faster than with run-time counts.
    """
    for b in range(nb):
        rowsum[b] = 0.0
        cur[b] = 0.0
    for x in range(mag.shape[0]):
        m = mag[x]
        f = fbin[x]
        b0 = int(f)  # f >= 0: truncation is floor
        m1 = (f - np.float32(b0)) * m
        b1 = b0 + 1
        if b1 >= nbins:
            b1 -= nbins
        rowsum[b0] += m - m1
        rowsum[b1] += m1
        base = (x + 1) * nb
        for b in range(nb):
            cur[base + b] = prev[base + b] + rowsum[b]


@njit(cache=True, inline="always")
def _accumulate_row_usual(mag, fbin, nb, prev, cur):
    """:func:`_accumulate_row` for 8 orientation bins and ``nb`` = 8 (HOG, MBH) or 9 (HOF, its zero bin last)
    bins per pixel (``nb`` a literal), in one pass with the 8 bins' running sums in a vector register
    (:func:`idtfv.idt._histograms_simd_nb.integral_row`).

    The same sums as :func:`_accumulate_row` in the same order, bit for bit: a bin that gets no weight from a
    pixel has 0 added, which leaves its sum (never -0: every weight is >= +0) unchanged.
    """
    integral_row(mag, fbin, nb, prev, cur)


@njit(cache=True, inline="always")
def _bin_of(u, v, nbf):
    """Angle of (u, v) in bins, in [0, nbins) (a full turn from rounding wraps to 0)."""
    f = angle_fraction(u, v) * nbf
    return f - nbf if f >= nbf else f


@njit(cache=True, inline="always")
def _gradient_row(img, channel, y, nbf, du, dv, mag, fbin):
    """Magnitudes and angles in bins of row ``y``'s centred-difference gradient of ``img[:, :, channel]``."""
    h, w = img.shape[0], img.shape[1]
    ym = y - 1 if y > 0 else 1  # BORDER_REFLECT_101: the derivative across the border row is 0
    yp = y + 1 if y < h - 1 else h - 2
    du[0] = 0.0
    du[w - 1] = 0.0
    for x in range(1, w - 1):
        du[x] = np.float32(img[y, x + 1, channel]) - np.float32(img[y, x - 1, channel])
    for x in range(w):
        dv[x] = np.float32(img[yp, x, channel]) - np.float32(img[ym, x, channel])
    for x in range(w):  # branch-free: vectorises
        u = du[x]
        v = dv[x]
        mag[x] = math.sqrt(u * u + v * v)
        fbin[x] = _bin_of(u, v, nbf)


@njit(cache=True, inline="always")
def _flow_row(flow, y, nbf, min_flow, fu, fv, mag, fbin):
    """Magnitudes (1 for the zero-motion bin) and angles in bins (``nbins`` for that bin) of row ``y``'s flow."""
    w = flow.shape[1]
    for x in range(w):
        fu[x] = flow[y, x, 0]
        fv[x] = flow[y, x, 1]
    for x in range(w):  # branch-free: vectorises
        u = fu[x]
        v = fv[x]
        m = math.sqrt(u * u + v * v)
        zero = m <= min_flow  # zero-motion bin: weight 1 in bin nbins
        mag[x] = _F1 if zero else m
        fbin[x] = nbf if zero else _bin_of(u, v, nbf)


@njit(cache=True, nogil=True)
def gradient_integral_histogram(img, channel, nbins, out):
    """Integral histogram of the gradient orientations of one channel of an image.

    Parameters
    ----------
    img : (h, w, c) float32, C-contiguous, h, w >= 2
        Image; only channel ``channel`` is used (pass ``gray[:, :, None]`` for a plain image).
    channel : int
        Which channel to differentiate (0 for a grey image; 0/1 for the x/y flow component, MBHx/MBHy).
    nbins : int
        B, number of orientation bins over 360 degrees.
    out : (h+1, w+1, nbins) float32, C-contiguous
        Filled with the integral histogram (fully overwritten).
    """
    h, w = img.shape[0], img.shape[1]
    o = out.reshape(h + 1, (w + 1) * nbins)
    rowsum = np.zeros(nbins, dtype=np.float32)
    du = np.empty(w, np.float32)
    dv = np.empty(w, np.float32)
    mag = np.empty(w, np.float32)
    fbin = np.empty(w, np.float32)
    nbf = np.float32(nbins)
    o[0, :] = 0.0
    for y in range(h):
        _gradient_row(img, channel, y, nbf, du, dv, mag, fbin)
        _accumulate_row(mag, fbin, nbins, nbins, rowsum, o[y], o[y + 1])


@njit(cache=True, nogil=True)
def flow_integral_histogram(flow, nbins, min_flow, out):
    """Integral histogram of flow orientations with a zero-motion bin (HOF).

    Parameters
    ----------
    flow : (h, w, 2) float32, C-contiguous
        Flow vectors (u, v) in pixels.
    nbins : int
        B, orientation bins; the output has ``nbins + 1`` bins, the last one counting vectors with
        magnitude ``<= min_flow`` (weight 1 each).
    min_flow : float32
        Zero-motion threshold in pixels.
    out : (h+1, w+1, nbins+1) float32, C-contiguous
        Filled with the integral histogram.
    """
    h, w = flow.shape[0], flow.shape[1]
    nb = nbins + 1
    o = out.reshape(h + 1, (w + 1) * nb)
    rowsum = np.zeros(nb, dtype=np.float32)
    mag = np.empty(w, np.float32)
    fbin = np.empty(w, np.float32)
    fu = np.empty(w, np.float32)
    fv = np.empty(w, np.float32)
    nbf = np.float32(nbins)
    o[0, :] = 0.0
    for y in range(h):
        _flow_row(flow, y, nbf, min_flow, fu, fv, mag, fbin)
        _accumulate_row(mag, fbin, nbins, nb, rowsum, o[y], o[y + 1])


@njit(cache=True, inline="always")
def _hog_row(gray, y, hog_bins, usual, rowsum, du, dv, mag, fbin, og):
    """Row ``y + 1`` of the HOG integral histogram ``og`` ((h+1, (w+1) * hog_bins)) of ``gray`` (h, w, 1)."""
    _hog_row_to(gray, y, hog_bins, usual, rowsum, du, dv, mag, fbin, og[y], og[y + 1])


@njit(cache=True, inline="always")
def _hog_row_to(gray, y, hog_bins, usual, rowsum, du, dv, mag, fbin, prev, cur):
    """:func:`_hog_row` with the integral rows y (``prev``) and y + 1 (``cur``, written), ((w+1) * hog_bins,)
    each, given apart (the rows of a whole histogram or of a ring of rows, :func:`stream_sum_blocks`)."""
    _gradient_row(gray, 0, y, np.float32(hog_bins), du, dv, mag, fbin)
    if usual:
        _accumulate_row_usual(mag, fbin, 8, prev, cur)
    else:
        _accumulate_row(mag, fbin, hog_bins, hog_bins, rowsum, prev, cur)


@njit(cache=True, inline="always")
def _motion_row(flow, y, hof_nbins, mbh_bins, min_flow, usual, rowsum, du, dv, mag, fbin, of, ox, oy):
    """Row ``y + 1`` of the HOF, MBHx and MBHy integral histograms (flattened as in :func:`_hog_row`)."""
    _motion_row_to(flow, y, hof_nbins, mbh_bins, min_flow, usual, rowsum, du, dv, mag, fbin, of[y], of[y + 1],
                   ox[y], ox[y + 1], oy[y], oy[y + 1])


@njit(cache=True, inline="always")
def _motion_row_to(flow, y, hof_nbins, mbh_bins, min_flow, usual, rowsum, du, dv, mag, fbin, f0, f1, x0, x1, y0, y1):
    """:func:`_motion_row` with each histogram's integral rows y (``f0``, ``x0``, ``y0``) and y + 1 (``f1``,
    ``x1``, ``y1``, written) given apart, as :func:`_hog_row_to`."""
    _flow_row(flow, y, np.float32(hof_nbins), min_flow, du, dv, mag, fbin)
    if usual:
        _accumulate_row_usual(mag, fbin, 9, f0, f1)
    else:
        _accumulate_row(mag, fbin, hof_nbins, hof_nbins + 1, rowsum, f0, f1)
    _gradient_row(flow, 0, y, np.float32(mbh_bins), du, dv, mag, fbin)
    if usual:
        _accumulate_row_usual(mag, fbin, 8, x0, x1)
    else:
        _accumulate_row(mag, fbin, mbh_bins, mbh_bins, rowsum, x0, x1)
    _gradient_row(flow, 1, y, np.float32(mbh_bins), du, dv, mag, fbin)
    if usual:
        _accumulate_row_usual(mag, fbin, 8, y0, y1)
    else:
        _accumulate_row(mag, fbin, mbh_bins, mbh_bins, rowsum, y0, y1)


@njit(cache=True, nogil=True)
def frame_integral_histograms(gray, flow, hog_bins, hof_nbins, mbh_bins, min_flow, hog, hof, mbhx, mbhy):
    """The four integral histograms of one frame at one scale in one pass over its rows.

    The numbers of :func:`gradient_integral_histogram` of ``gray`` (HOG) and of each flow component (MBHx, MBHy)
    and of :func:`flow_integral_histogram` (HOF), bit for bit, in one call instead of four; with the usual bin
    counts (8, 8 + 1, 8) the per-bin loops get literal lengths and unroll (about 1.5x faster).
    :func:`hog_integral_histogram` and :func:`motion_integral_histograms` are its two halves (the same rows).

    Parameters
    ----------
    gray : (h, w, 1) float32 or uint8, C-contiguous, h, w >= 2
        The frame (uint8 is converted exactly, pixel by pixel).
    flow : (h, w, 2) float32, C-contiguous
    hog_bins, hof_nbins, mbh_bins : int
        Orientation bins; HOF gets ``hof_nbins + 1`` with its zero-motion bin.
    min_flow : float32
        HOF's zero-motion threshold.
    hog, hof, mbhx, mbhy : (h+1, w+1, B) float32, C-contiguous
        Overwritten with the integral histograms.
    """
    h, w = flow.shape[0], flow.shape[1]
    rowsum = np.zeros(max(hog_bins, hof_nbins + 1, mbh_bins), dtype=np.float32)
    du = np.empty(w, np.float32)
    dv = np.empty(w, np.float32)
    mag = np.empty(w, np.float32)
    fbin = np.empty(w, np.float32)
    og = hog.reshape(h + 1, (w + 1) * hog_bins)
    of = hof.reshape(h + 1, (w + 1) * (hof_nbins + 1))
    ox = mbhx.reshape(h + 1, (w + 1) * mbh_bins)
    oy = mbhy.reshape(h + 1, (w + 1) * mbh_bins)
    og[0, :] = 0.0
    of[0, :] = 0.0
    ox[0, :] = 0.0
    oy[0, :] = 0.0
    usual = hog_bins == 8 and hof_nbins == 8 and mbh_bins == 8
    for y in range(h):
        _hog_row(gray, y, hog_bins, usual, rowsum, du, dv, mag, fbin, og)
        _motion_row(flow, y, hof_nbins, mbh_bins, min_flow, usual, rowsum, du, dv, mag, fbin, of, ox, oy)


@njit(cache=True, nogil=True)
def hog_integral_histogram(gray, hog_bins, hog):
    """The HOG part of :func:`frame_integral_histograms`, bit for bit (it depends on the frame alone, so the
    extractor's front thread makes it ahead, ``threads > 1``). ``gray (h, w, 1)`` float32 or uint8, ``hog
    (h+1, w+1, hog_bins)`` float32, overwritten."""
    h, w = gray.shape[0], gray.shape[1]
    rowsum = np.zeros(hog_bins, dtype=np.float32)
    du = np.empty(w, np.float32)
    dv = np.empty(w, np.float32)
    mag = np.empty(w, np.float32)
    fbin = np.empty(w, np.float32)
    og = hog.reshape(h + 1, (w + 1) * hog_bins)
    og[0, :] = 0.0
    usual = hog_bins == 8
    for y in range(h):
        _hog_row(gray, y, hog_bins, usual, rowsum, du, dv, mag, fbin, og)


@njit(cache=True, nogil=True)
def motion_integral_histograms(flow, hof_nbins, mbh_bins, min_flow, hof, mbhx, mbhy):
    """The HOF, MBHx and MBHy part of :func:`frame_integral_histograms`, bit for bit (arguments as there)."""
    h, w = flow.shape[0], flow.shape[1]
    rowsum = np.zeros(max(hof_nbins + 1, mbh_bins), dtype=np.float32)
    du = np.empty(w, np.float32)
    dv = np.empty(w, np.float32)
    mag = np.empty(w, np.float32)
    fbin = np.empty(w, np.float32)
    of = hof.reshape(h + 1, (w + 1) * (hof_nbins + 1))
    ox = mbhx.reshape(h + 1, (w + 1) * mbh_bins)
    oy = mbhy.reshape(h + 1, (w + 1) * mbh_bins)
    of[0, :] = 0.0
    ox[0, :] = 0.0
    oy[0, :] = 0.0
    usual = hof_nbins == 8 and mbh_bins == 8
    for y in range(h):
        _motion_row(flow, y, hof_nbins, mbh_bins, min_flow, usual, rowsum, du, dv, mag, fbin, of, ox, oy)


@njit(cache=True, inline="always")
def _cell(hist, top, bottom, xa, xb, nb, eps, vec, k):
    """``vec[k:k + nb]``: the bins of the cell between integral rows ``top`` and ``bottom`` of ``hist`` ((n, w+1, B):
    a whole histogram or a ring of its rows) and columns ``xa``, ``xb``, clipped at 0, plus ``eps``. The rows are
    read by number, not as views (a view costs two atomic reference-count updates: ~30 per point were ~10% of the
    fast preset)."""
    if nb == 8:  # the usual layouts: the bins as one vector (_histograms_simd_nb)
        cell_bins8(hist, top, bottom, xa, xb, eps, vec, k)
        return
    if nb == 9:
        cell_bins9(hist, top, bottom, xa, xb, eps, vec, k)
        return
    zero = np.float32(0.0)
    for b in range(nb):
        # clipped at 0: float32 cancellation can leave tiny negatives
        d = (hist[bottom, xb, b] - hist[top, xb, b]) - (hist[bottom, xa, b] - hist[top, xa, b])
        vec[k + b] = max(d, zero) + eps


@njit(cache=True, inline="always")
def _cell_sums(hist, nb, x0, y0, nx_cells, ny_cells, cell_w, cell_h, eps, vec):
    """One point's cell-bin sums of ``hist`` (``nb`` bins), clipped at 0, plus ``eps``, into
    ``vec[:nx_cells * ny_cells * nb]``."""
    k = 0
    for ix in range(nx_cells):
        xa = x0 + ix * cell_w
        for iy in range(ny_cells):
            ya = y0 + iy * cell_h
            _cell(hist, ya, ya + cell_h, xa, xa + cell_w, nb, eps, vec, k)
            k += nb


@njit(cache=True, inline="always")
def _normalise(vec, total, dim, out, i, col):
    """``out[i, col:col + dim] = sqrt(vec / total)`` (RootSIFT), all zero when ``total`` is 0."""
    if total > 0.0:
        inv = np.float32(1.0 / total)
        for k in range(dim):
            out[i, col + k] = math.sqrt(vec[k] * inv)
    else:
        for k in range(dim):
            out[i, col + k] = np.float32(0.0)


@njit(cache=True, inline="always")
def _gather_point(hist, x0, y0, nx_cells, ny_cells, cell_w, cell_h, eps, vec, out, i, col):
    """One point's block of ``hist`` into ``out[i, col:col + dim]`` (see :func:`gather_blocks`)."""
    dim = nx_cells * ny_cells * hist.shape[2]
    _cell_sums(hist, hist.shape[2], x0, y0, nx_cells, ny_cells, cell_w, cell_h, eps, vec)
    total = np.float64(0.0)
    for k in range(dim):
        total += vec[k]
    _normalise(vec, total, dim, out, i, col)


@njit(cache=True, nogil=True)
def gather_blocks(hist, x0, y0, nx_cells, ny_cells, cell_w, cell_h, epsilon, out):
    """Per-point block of cell histograms, L1-normalised and square-rooted (RootSIFT).

    Parameters
    ----------
    hist : (h+1, w+1, B) float32
        Integral histogram.
    x0, y0 : (n,) int64
        Top-left corner of each point's patch (already clamped so that the patch lies inside the image).
    nx_cells, ny_cells : int
        Spatial cells per patch along x and y.
    cell_w, cell_h : int
        Cell size in pixels.
    epsilon : float
        Added to every (clipped at 0) cell-bin sum before normalising (LEAR uses 0.05).
    out : (n, nx_cells * ny_cells * B) float32
        Output; the layout is x-cell outer, y-cell inner, bin fastest:
        ``out[i, (ix * ny_cells + iy) * B + b]``.
    """
    eps = np.float32(epsilon)
    vec = np.empty(nx_cells * ny_cells * hist.shape[2], dtype=np.float32)
    for i in range(x0.shape[0]):
        _gather_point(hist, x0[i], y0[i], nx_cells, ny_cells, cell_w, cell_h, eps, vec, out, i, 0)


@njit(cache=True, inline="always")
def _four_totals(v0, v1, v2, v3, d0, d1, d2, d3):
    """The float64 sums of ``v0[:d0]``, ..., ``v3[:d3]`` (four blocks' L1 norms), each summed in index order (as
    :func:`gather_blocks`), side by side: four independent float64 chains instead of one four times as long (the
    sums' latency bounds the gathering)."""
    common = min(d0, d1, d2, d3)
    t0 = np.float64(0.0)
    t1 = np.float64(0.0)
    t2 = np.float64(0.0)
    t3 = np.float64(0.0)
    for k in range(common):
        t0 += v0[k]
        t1 += v1[k]
        t2 += v2[k]
        t3 += v3[k]
    for k in range(common, d0):
        t0 += v0[k]
    for k in range(common, d1):
        t1 += v1[k]
    for k in range(common, d2):
        t2 += v2[k]
    for k in range(common, d3):
        t3 += v3[k]
    return t0, t1, t2, t3


@njit(cache=True, inline="always")
def _gather_all(hog, hof, mbhx, mbhy, points, patch, nx_cells, ny_cells, epsilon, out):
    """The body of :func:`gather_all_blocks`."""
    h, w = hog.shape[0] - 1, hog.shape[1] - 1
    cell_w = patch // nx_cells
    cell_h = patch // ny_cells
    half = patch // 2
    cells = nx_cells * ny_cells
    eps = np.float32(epsilon)
    c1 = cells * hog.shape[2]
    c2 = c1 + cells * hof.shape[2]
    c3 = c2 + cells * mbhx.shape[2]
    d0, d1, d2, d3 = c1, c2 - c1, c3 - c2, cells * mbhy.shape[2]
    v0 = np.empty(d0, dtype=np.float32)
    v1 = np.empty(d1, dtype=np.float32)
    v2 = np.empty(d2, dtype=np.float32)
    v3 = np.empty(d3, dtype=np.float32)
    usual = hog.shape[2] == 8 and hof.shape[2] == 9 and mbhx.shape[2] == 8 and mbhy.shape[2] == 8
    n = points.shape[0]
    xs = np.empty(n, np.int64)
    ys = np.empty(n, np.int64)
    count = np.zeros(h - patch + 2, np.int64)
    for i in range(n):
        xs[i] = min(max(int(np.rint(points[i, 0])) - half, 0), w - patch)
        ys[i] = min(max(int(np.rint(points[i, 1])) - half, 0), h - patch)
        count[ys[i] + 1] += 1
    # points taken by patch row (a counting sort): the histograms of a large level do not fit in the cache, and
    # patches read in raster order share their rows; each point's block does not depend on the order
    for y in range(1, count.shape[0]):
        count[y] += count[y - 1]
    order = np.empty(n, np.int64)
    for i in range(n):
        order[count[ys[i]]] = i
        count[ys[i]] += 1
    for j in range(n):
        i = order[j]
        xi = xs[i]
        yi = ys[i]
        if usual:  # literal bin counts: unrolled loops
            _cell_sums(hog, 8, xi, yi, nx_cells, ny_cells, cell_w, cell_h, eps, v0)
            _cell_sums(hof, 9, xi, yi, nx_cells, ny_cells, cell_w, cell_h, eps, v1)
            _cell_sums(mbhx, 8, xi, yi, nx_cells, ny_cells, cell_w, cell_h, eps, v2)
            _cell_sums(mbhy, 8, xi, yi, nx_cells, ny_cells, cell_w, cell_h, eps, v3)
        else:
            _cell_sums(hog, hog.shape[2], xi, yi, nx_cells, ny_cells, cell_w, cell_h, eps, v0)
            _cell_sums(hof, hof.shape[2], xi, yi, nx_cells, ny_cells, cell_w, cell_h, eps, v1)
            _cell_sums(mbhx, mbhx.shape[2], xi, yi, nx_cells, ny_cells, cell_w, cell_h, eps, v2)
            _cell_sums(mbhy, mbhy.shape[2], xi, yi, nx_cells, ny_cells, cell_w, cell_h, eps, v3)
        t0, t1, t2, t3 = _four_totals(v0, v1, v2, v3, d0, d1, d2, d3)
        _normalise(v0, t0, d0, out, i, 0)
        _normalise(v1, t1, d1, out, i, c1)
        _normalise(v2, t2, d2, out, i, c2)
        _normalise(v3, t3, d3, out, i, c3)


@njit(cache=True, nogil=True)
def gather_all_blocks(hog, hof, mbhx, mbhy, points, patch, nx_cells, ny_cells, epsilon, out):
    """:func:`gather_blocks` of the four histograms at once, with the patch corners computed here.

    Each point's patch corner is ``clamp(rint(p) - patch // 2, 0, size - patch)`` per axis (as
    :func:`idtfv.idt.descriptors.patch_corners`); each descriptor's block is normalised on its own, as by
    :func:`gather_blocks`, bit for bit.

    Parameters
    ----------
    hog, hof, mbhx, mbhy : (h+1, w+1, B) float32
        The frame's integral histograms (h, w >= ``patch``).
    points : (n, 2) float32
        ``[x, y]`` at this scale, finite.
    patch, nx_cells, ny_cells : int
        Patch side and cells (``patch`` divisible by both).
    epsilon : float
    out : (n, D) float32
        The HOG | HOF | MBHx | MBHy blocks side by side (D: the sum of their lengths).
    """
    _gather_all(hog, hof, mbhx, mbhy, points, patch, nx_cells, ny_cells, epsilon, out)


# ---------------------------------------------------------------------------- integral rows and blocks in one pass
# A point's block reads the integral rows y0, y0 + cell_h, ..., y0 + patch of its patch only. stream_sum_blocks
# makes the rows top to bottom as frame_integral_histograms does (the same float32 sums in the same order), keeps
# only the last patch + 1 of them in a ring (about 1.4 MB for a 320-px-wide level and 33 bins, against 10 MB for
# the whole histograms: it stays in the L2 cache) and gathers each point's block as soon as its patch's last row
# is made, adding it to its track's temporal-cell sum: the numbers of frame_integral_histograms, gather_all_blocks
# then _tracking_nb.add_blocks, bit for bit, without writing the histograms to memory and reading them back.
@njit(cache=True, inline="always")
def _ring_cell_sums(ring, nb, x0, slots, nx_cells, ny_cells, cell_w, eps, vec):
    """:func:`_cell_sums` of a point whose patch rows ``y0 + iy * cell_h`` (``iy`` = 0..``ny_cells``) are
    ``ring[slots[iy]]``: the same sums, in the same order, into ``vec[:nx_cells * ny_cells * nb]``."""
    k = 0
    for ix in range(nx_cells):
        xa = x0 + ix * cell_w
        for iy in range(ny_cells):
            _cell(ring, slots[iy], slots[iy + 1], xa, xa + cell_w, nb, eps, vec, k)
            k += nb


@njit(cache=True, inline="always")
def _add_normalised(vec, total, dim, acc, col):
    """``acc[col:col + dim] += sqrt(vec / total)``: :func:`_normalise`'s float32 values (0 when ``total`` is 0)
    added to a temporal-cell sum."""
    if total > 0.0:
        add_sqrt_scaled(vec, np.float32(1.0 / total), dim, acc, col)  # eight at a time (_histograms_simd_nb)
    else:
        for k in range(dim):
            acc[col + k] += np.float32(0.0)


@njit(cache=True, inline="always")
def _bucket_by_top_row(points, rows, index, per_cell, nt, patch, h, w, xs, ys):
    """Each point's clamped patch corner into ``xs``, ``ys`` (as :func:`_gather_all`), for the points whose
    track's temporal cell ``(index[rows[k]] - 1) // per_cell`` is below ``nt`` (the others add nothing), and those
    points ordered by their patch's top row (a counting sort, stable). Returns ``(order, start)``: the points of
    top row ``y`` are ``order[start[y]:start[y + 1]]``."""
    half = patch // 2
    n = points.shape[0]
    start = np.zeros(h - patch + 2, np.int64)
    for k in range(n):
        ys[k] = -1
        if (index[rows[k]] - 1) // per_cell >= nt:
            continue
        xs[k] = min(max(int(np.rint(points[k, 0])) - half, 0), w - patch)
        ys[k] = min(max(int(np.rint(points[k, 1])) - half, 0), h - patch)
        start[ys[k] + 1] += 1
    for y in range(1, start.shape[0]):
        start[y] += start[y - 1]
    fill = start.copy()
    order = np.empty(start[start.shape[0] - 1], np.int64)
    for k in range(n):
        if ys[k] >= 0:
            order[fill[ys[k]]] = k
            fill[ys[k]] += 1
    return order, start


#: Numba options of the compute passes that take every array from an allocating caller: no reference counting
#: (``_nrt=False``). Each array view and each array passed to an inlined helper otherwise costs two atomic
#: reference-count updates that Numba's pruning leaves in loops (about 10% of the fast preset, most of them in the
#: per-point gathers); these kernels allocate nothing and let no array escape, so the counts do nothing.
_NO_REFCOUNTS = {"_nrt": False}


@njit(cache=True, nogil=True, **_NO_REFCOUNTS)
def _stream_rows_and_blocks(gray, flow, min_flow, hog_bins, hof_nbins, mbh_bins, made, last, period, period_g,
                            patch, og, of, ox, oy, src_g, ring_f, ring_x, ring_y, rowsum, du, dv, mag, fbin,
                            slots, slots_g, start, order, xs, nx_cells, ny_cells, cell_w, cell_h, eps,
                            v0, v1, v2, v3, rows, index, per_cell, nt, flat_sums):
    """:func:`stream_sum_blocks`' pass over the rows with its scratch arrays (see there); allocates nothing."""
    wide_vectors()
    hof_nb = hof_nbins + 1
    usual_g = hog_bins == 8
    usual_m = hof_nbins == 8 and mbh_bins == 8
    usual = usual_g and usual_m
    d0, d1, d2, d3 = v0.shape[0], v1.shape[0], v2.shape[0], v3.shape[0]
    c1, c2, c3 = d0, d0 + d1, d0 + d1 + d2
    dim = d0 + d1 + d2 + d3
    for y in range(last):
        p, q = y % period, (y + 1) % period
        if made:
            _hog_row_to(gray, y, hog_bins, usual_g, rowsum, du, dv, mag, fbin, og[p], og[q])
        _motion_row_to(flow, y, hof_nbins, mbh_bins, min_flow, usual_m, rowsum, du, dv, mag, fbin, of[p], of[q],
                       ox[p], ox[q], oy[p], oy[q])
        top = y + 1 - patch  # the patches that end at the row just made
        if top < 0:
            continue
        for iy in range(ny_cells + 1):  # where the rows of the patches that start at row `top` are
            slots[iy] = (top + iy * cell_h) % period
            slots_g[iy] = (top + iy * cell_h) % period_g
        for j in range(start[top], start[top + 1]):
            k = order[j]
            xk = xs[k]
            if usual:  # literal bin counts: unrolled loops
                _ring_cell_sums(src_g, 8, xk, slots_g, nx_cells, ny_cells, cell_w, eps, v0)
                _ring_cell_sums(ring_f, 9, xk, slots, nx_cells, ny_cells, cell_w, eps, v1)
                _ring_cell_sums(ring_x, 8, xk, slots, nx_cells, ny_cells, cell_w, eps, v2)
                _ring_cell_sums(ring_y, 8, xk, slots, nx_cells, ny_cells, cell_w, eps, v3)
            else:
                _ring_cell_sums(src_g, hog_bins, xk, slots_g, nx_cells, ny_cells, cell_w, eps, v0)
                _ring_cell_sums(ring_f, hof_nb, xk, slots, nx_cells, ny_cells, cell_w, eps, v1)
                _ring_cell_sums(ring_x, mbh_bins, xk, slots, nx_cells, ny_cells, cell_w, eps, v2)
                _ring_cell_sums(ring_y, mbh_bins, xk, slots, nx_cells, ny_cells, cell_w, eps, v3)
            t0, t1, t2, t3 = _four_totals(v0, v1, v2, v3, d0, d1, d2, d3)
            r = rows[k]
            at = (r * nt + (index[r] - 1) // per_cell) * dim  # the track's temporal-cell sum in flat_sums (no view)
            _add_normalised(v0, t0, d0, flat_sums, at)
            _add_normalised(v1, t1, d1, flat_sums, at + c1)
            _add_normalised(v2, t2, d2, flat_sums, at + c2)
            _add_normalised(v3, t3, d3, flat_sums, at + c3)


@njit(cache=True, nogil=True)
def stream_sum_blocks(gray, flow, hog, hog_bins, hof_nbins, mbh_bins, min_flow, points, patch, nx_cells, ny_cells,
                      epsilon, sums, index, rows, per_cell):
    """:func:`frame_integral_histograms`, :func:`gather_all_blocks` and the blocks added to their tracks' sums
    (:func:`idtfv.idt._tracking_nb.add_blocks`) in one pass over the rows, without the histograms: the same
    temporal-cell sums, bit for bit.

    The integral rows are made top to bottom (the same float32 arithmetic, in the same order), into a ring of the
    last ``patch + 1`` rows of each histogram; once row ``y0 + patch`` is made, every point whose patch starts at
    row ``y0`` has its block read from the ring (the same cell sums, L1 norms and square roots) and added to its
    track's temporal-cell sum. The rows below the last patch are not made. Tracks whose cell is ``>= n_t`` add
    nothing and are not gathered.

    Parameters
    ----------
    gray : (h, w, 1) float32 or uint8, C-contiguous
        The frame (its HOG; not read when ``hog`` is given).
    flow : (h, w, 2) float32, C-contiguous
        Its compensated flow (HOF, MBHx, MBHy); h, w >= ``patch``.
    hog : (h+1, w+1, hog_bins) or (0, w+1, hog_bins) float32, C-contiguous
        ``gray``'s HOG integral histogram made already (:func:`hog_integral_histogram`), read where the blocks
        need it; with 0 rows, the HOG rows are made here, in the ring, as the others.
    hog_bins, hof_nbins, mbh_bins : int
        Orientation bins; HOF gets ``hof_nbins + 1`` with its zero-motion bin.
    min_flow : float32
        HOF's zero-motion threshold.
    points : (n, 2) float32
        ``[x, y]`` at this scale, finite: the points of ``rows``' tracks.
    patch, nx_cells, ny_cells : int
        Patch side and cells (``patch`` divisible by both).
    epsilon : float
    sums : (C, n_t, D) float32
        A track pool's temporal-cell sums (HOG | HOF | MBHx | MBHy side by side), added to.
    index : (C,) int32
        Steps done by each pool row; ``sums[r, (index[r] - 1) // per_cell]`` gets row ``r``'s block.
    rows : (n,) int64
        Pool rows, distinct.
    per_cell : int
        Steps per temporal cell.
    """
    h, w = flow.shape[0], flow.shape[1]
    n = rows.shape[0]
    xs = np.empty(n, np.int64)
    ys = np.empty(n, np.int64)
    order, start = _bucket_by_top_row(points, rows, index, per_cell, sums.shape[1], patch, h, w, xs, ys)
    if order.shape[0] == 0:
        return
    last = 0  # the last integral row a patch reads
    for k in order:
        last = max(last, ys[k] + patch)
    period = patch + 1
    made = hog.shape[0] == 0  # the HOG rows made here, or read from the one made ahead
    hof_nb = hof_nbins + 1
    ring_g = np.empty((period if made else 0, w + 1, hog_bins), np.float32)
    ring_f = np.empty((period, w + 1, hof_nb), np.float32)
    ring_x = np.empty((period, w + 1, mbh_bins), np.float32)
    ring_y = np.empty((period, w + 1, mbh_bins), np.float32)
    og = ring_g.reshape(ring_g.shape[0], (w + 1) * hog_bins)
    of = ring_f.reshape(period, (w + 1) * hof_nb)
    ox = ring_x.reshape(period, (w + 1) * mbh_bins)
    oy = ring_y.reshape(period, (w + 1) * mbh_bins)
    if made:
        og[0, :] = 0.0
    of[0, :] = 0.0
    ox[0, :] = 0.0
    oy[0, :] = 0.0
    src_g = ring_g if made else hog
    period_g = period if made else h + 1
    rowsum = np.zeros(max(hog_bins, hof_nb, mbh_bins), dtype=np.float32)
    du = np.empty(w, np.float32)
    dv = np.empty(w, np.float32)
    mag = np.empty(w, np.float32)
    fbin = np.empty(w, np.float32)
    cell_w = patch // nx_cells
    cell_h = patch // ny_cells
    cells = nx_cells * ny_cells
    eps = np.float32(epsilon)
    d0, d1, d2, d3 = cells * hog_bins, cells * hof_nb, cells * mbh_bins, cells * mbh_bins
    v0 = np.empty(d0, dtype=np.float32)
    v1 = np.empty(d1, dtype=np.float32)
    v2 = np.empty(d2, dtype=np.float32)
    v3 = np.empty(d3, dtype=np.float32)
    slots = np.empty(ny_cells + 1, np.int64)
    slots_g = np.empty(ny_cells + 1, np.int64)
    flat_sums = sums.reshape(sums.size)  # the temporal-cell sums as one row: no view per point
    _stream_rows_and_blocks(gray, flow, min_flow, hog_bins, hof_nbins, mbh_bins, made, last, period, period_g,
                            patch, og, of, ox, oy, src_g, ring_f, ring_x, ring_y, rowsum, du, dv, mag, fbin,
                            slots, slots_g, start, order, xs, nx_cells, ny_cells, cell_w, cell_h, eps,
                            v0, v1, v2, v3, rows, index, per_cell, sums.shape[1], flat_sums)
