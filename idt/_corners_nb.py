r"""Numba kernel of the corner response: the smaller eigenvalue of the 3x3 structure tensor of a uint8 image,
bit for bit ``cv2.cornerMinEigenVal(gray, 3, ksize=3)`` of an OpenCV build that dispatches AVX2 (the usual x86-64
wheels), in one pass over the rows at ~1.9x OpenCV's speed (no full-size float images of the derivatives and their
products between passes).

The arithmetic, OpenCV's (``cornerEigenValsVecs``; the same as the device kernel of :mod:`idtfv.idt._frame_cuda`,
which documents how each detail was matched), all with BORDER_REFLECT_101:

1. Sobel 3x3 with the scale :math:`1 / (4 \cdot 3 \cdot 255)` in the smoothing taps (:math:`f_1` = float32 of
   1/3060, :math:`f_0` = float32 of 2/3060). :math:`d_x`: the differences :math:`s_k = I(x+1) - I(x-1)` of rows
   y-1, y, y+1 (exact), then ``fma(s0 + s2, f1, s1 * f0)``. :math:`d_y`: each of rows y-1 and y+1 smoothed along
   x, ``fma(C, f1, fma(B, f0, A * f1))`` on the columns OpenCV's vector loop covers (whole blocks of
   :data:`OPENCV_ROW_BLOCK`) and ``(A * f1 + B * f0) + C * f1`` (its scalar remainder) beyond, then subtracted.
2. The products :math:`d_x^2, d_x d_y, d_y^2` in float32, summed over 3x3 in float64 as ``boxFilter`` does: along
   the row :math:`(p_{x-1} + p_x) + p_{x+1}`, then down the columns by a running sum, :math:`S \leftarrow S + r_{y+1}`
   (the output), :math:`S \leftarrow S - r_{y-1}` (whose rounding leaves the tiny residues, ~1e-21, that OpenCV's
   response has in flat areas; an exact sum would give 0 there).
3. :math:`a, c` half the float32 diagonal sums, :math:`b` the off-diagonal one: :math:`\lambda_{min} = (a + c) -
   \sqrt{(a - c)^2 + b^2}` in float32.

Checked against OpenCV on every level of frames of the five shared clips and random images of 1x1 to 65 columns
(``tests/test_corners.py``); on a machine whose OpenCV takes another vector path the two may differ by float32
ulps, and this kernel's numbers stay the same everywhere.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

from idtfv.idt.flow._farneback_simd_nb import fma32
from idtfv.llvm_ir import wide_vectors

#: SHA-256 of the kernel modules this one's cached kernels compile in (see ``_farneback_nb.KERNEL_DEPENDENCIES``).
KERNEL_DEPENDENCIES = {"_farneback_simd_nb.py": "8a423afd3f068837f4190c8dd8269a6345f9a7d0044f502c755fc877f8585d59",
                       "llvm_ir.py": "c1aafaf28705aa778677439055f65b3deecf5aa9526143717849da068b96689b"}

__all__ = ["min_eigen_response", "OPENCV_ROW_BLOCK", "SOBEL_SCALE"]

#: Columns per iteration of OpenCV's vectorised uint8 -> float32 row filter with AVX2 (4 vectors of 8 lanes, fused
#: multiply-adds); the remaining ``w % 32`` columns go through its scalar loop (separate multiply and add).
OPENCV_ROW_BLOCK = 32

#: ``cornerEigenValsVecs``' Sobel scale for uint8, block 3, aperture 3: 1 / (2^(3-1) * 3 * 255).
SOBEL_SCALE = 1.0 / (4 * 3 * 255.0)

_NO_REFCOUNTS = {"_nrt": False}  # the row passes index their buffers, they make no array views
_HALF = np.float32(0.5)


@njit(cache=True, inline="always")
def _reflect101(i, n):
    """BORDER_REFLECT_101 index: ... 2 1 | 0 1 ... n-1 | n-2 ...; 0 when n == 1."""
    if n == 1:
        return 0
    while i < 0 or i >= n:
        i = -i if i < 0 else 2 * n - 2 - i
    return i


@njit(cache=True, inline="always")
def _load_row(img, r, w, rows, slot):
    """Image row ``r`` as float32 into ``rows[slot, 1:w+1]``, one reflected column each side."""
    for x in range(w):
        rows[slot, x + 1] = np.float32(img[r, x])
    rows[slot, 0] = rows[slot, 2] if w > 1 else rows[slot, 1]
    rows[slot, w + 1] = rows[slot, w - 1] if w > 1 else rows[slot, 1]


@njit(cache=True, inline="always")
def _sobel_row(rows, a, b, c, w, f1, f0, simd_cols, grad):
    """:math:`d_x` (``grad[0]``) and :math:`d_y` (``grad[1]``) of one row from the padded rows above (``a``), at
    (``b``) and below (``c``) it, padded the same way (step 1 of the module docstring)."""
    for x in range(w):
        s0 = rows[a, x + 2] - rows[a, x]
        s1 = rows[b, x + 2] - rows[b, x]
        s2 = rows[c, x + 2] - rows[c, x]
        grad[0, x + 1] = fma32(s0 + s2, f1, s1 * f0)
    fused = min(simd_cols, w)
    for x in range(fused):
        t0 = fma32(rows[a, x + 2], f1, fma32(rows[a, x + 1], f0, rows[a, x] * f1))
        t2 = fma32(rows[c, x + 2], f1, fma32(rows[c, x + 1], f0, rows[c, x] * f1))
        grad[1, x + 1] = t2 - t0
    for x in range(fused, w):
        t0 = (rows[a, x] * f1 + rows[a, x + 1] * f0) + rows[a, x + 2] * f1
        t2 = (rows[c, x] * f1 + rows[c, x + 1] * f0) + rows[c, x + 2] * f1
        grad[1, x + 1] = t2 - t0
    for k in range(2):
        grad[k, 0] = grad[k, 2] if w > 1 else grad[k, 1]
        grad[k, w + 1] = grad[k, w - 1] if w > 1 else grad[k, 1]


@njit(cache=True, inline="always")
def _row_sums(grad, w, prod, sums, slot):
    """The float32 products of one row's derivatives, as float64, summed over each pixel's three columns into
    ``sums[slot]`` (3, w)."""
    for x in range(w + 2):
        u = grad[0, x]
        v = grad[1, x]
        prod[0, x] = np.float64(u * u)
        prod[1, x] = np.float64(u * v)
        prod[2, x] = np.float64(v * v)
    for k in range(3):
        for x in range(w):
            sums[slot, k, x] = (prod[k, x] + prod[k, x + 1]) + prod[k, x + 2]


@njit(cache=True, nogil=True, **_NO_REFCOUNTS)
def _response_rows(img, f1, f0, simd_cols, out, rows, grad, prod, sums, running):
    """:func:`min_eigen_response` with its buffers: ``rows`` (3, w+2) float32, ``grad`` (2, w+2) float32, ``prod``
    (3, w+2), ``sums`` (3, 3, w) and ``running`` (3, w) float64."""
    wide_vectors()
    h, w = img.shape
    loaded = -1
    # the column filter's rows: row sums of image rows reflect101(j - 1), j = 0 .. h + 1, kept by j mod 3
    for j in range(h + 2):
        r = _reflect101(j - 1, h)
        above = _reflect101(r - 1, h)
        below = _reflect101(r + 1, h)
        while loaded < max(above, r, below):
            loaded += 1
            _load_row(img, loaded, w, rows, loaded % 3)
        _sobel_row(rows, above % 3, r % 3, below % 3, w, f1, f0, simd_cols, grad)
        slot = j % 3
        _row_sums(grad, w, prod, sums, slot)
        if j == 1:
            for k in range(3):
                for x in range(w):
                    running[k, x] = (0.0 + sums[0, k, x]) + sums[1, k, x]
        elif j >= 2:
            y = j - 2
            gone = y % 3
            for x in range(w):
                sxx = running[0, x] + sums[slot, 0, x]
                sxy = running[1, x] + sums[slot, 1, x]
                syy = running[2, x] + sums[slot, 2, x]
                running[0, x] = sxx - sums[gone, 0, x]
                running[1, x] = sxy - sums[gone, 1, x]
                running[2, x] = syy - sums[gone, 2, x]
                a = np.float32(sxx) * _HALF
                b = np.float32(sxy)
                c = np.float32(syy) * _HALF
                t = a - c
                out[y, x] = (a + c) - np.float32(math.sqrt(t * t + b * b))


@njit(cache=True, nogil=True)
def min_eigen_response(img, out):
    """Smaller structure-tensor eigenvalue of every pixel of a uint8 image: ``cv2.cornerMinEigenVal(img, 3,
    ksize=3)`` (see the module docstring).

    Parameters
    ----------
    img : (h, w) uint8, C-contiguous, h, w >= 1
    out : (h, w) float32, C-contiguous
        Overwritten with :math:`\\lambda_{min}` per pixel.
    """
    h, w = img.shape
    f1 = np.float32(SOBEL_SCALE)
    f0 = np.float32(2.0 * SOBEL_SCALE)
    simd_cols = (w // OPENCV_ROW_BLOCK) * OPENCV_ROW_BLOCK
    _response_rows(img, f1, f0, simd_cols, out, np.empty((3, w + 2), np.float32), np.empty((2, w + 2), np.float32),
                   np.empty((3, w + 2)), np.empty((3, 3, w)), np.empty((3, w)))
