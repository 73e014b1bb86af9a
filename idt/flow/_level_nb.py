"""One level of :class:`~idtfv.idt.flow.farneback.FarnebackPyramidFlow`'s coarse-to-fine solve in one call.

:func:`level_flow` runs the steps the Python driver called one by one (the coarser level's flow resized to this
level and rescaled, :func:`upscale_prior`; the first iteration's per-pixel terms
:func:`~idtfv.idt.flow._farneback_nb.update_matrices`, ``iterations`` rounds of
:func:`~idtfv.idt.flow._farneback_nb.window_solve`, the 5x5 median
:func:`~idtfv.idt.flow._median_nb.median5_flow`), in their order, on the same arrays: the same numbers, with one
call (one release and one retake of the GIL) per level instead of seven or more. With ``--threads`` the thread that
solves the flow then seldom waits for the GIL the other thread holds. :func:`smooth_expand` does the same for a
frame's level before it: the 3x3 presmoothing (:func:`presmooth3`) and the polynomial expansion
(:func:`~idtfv.idt.flow._farneback_nb.poly_expand`) in one call.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from idtfv.idt.flow._farneback_nb import poly_expand, update_matrices, window_solve
from idtfv.idt.flow._farneback_simd_nb import fma32
from idtfv.idt.flow._median_nb import median5_flow

#: SHA-256 of the kernel modules this one's cached kernels compile in (see ``_farneback_nb.KERNEL_DEPENDENCIES``).
KERNEL_DEPENDENCIES = {"_farneback_nb.py": "1509fd5656ab885935b75ce1d1291d8ec590908a12ced270ba109ec6ce15a2cc",
                       "_farneback_simd_nb.py": "8a423afd3f068837f4190c8dd8269a6345f9a7d0044f502c755fc877f8585d59",
                       "_median_nb.py": "684a7d668eb06e619a860632cfde01f2f6cb41944798b1587ff14b7bab650f3e",
                       "_median_simd_nb.py": "4dc52e9d419b46c708724f836f7c1d779f3ba6beb0ba140f10072f01c7ba52e7",
                       "llvm_ir.py": "c1aafaf28705aa778677439055f65b3deecf5aa9526143717849da068b96689b"}


@njit(cache=True, nogil=True)
def presmooth3(img, out):
    """``cv2.GaussianBlur(img.astype(np.float32), (3, 3), 0)``, bit for bit: the kernel (1/4, 1/2, 1/4) along the
    rows, then down the columns, each tap sum as OpenCV's symmetric filters form it, :math:`p/2 + (l + r)/4` in
    float32 (the halves and quarters are exact), with ``BORDER_REFLECT_101`` (a 1-pixel side reflects onto
    itself).

    Parameters
    ----------
    img : (h, w) uint8 or float32
        A pyramid level.
    out : (h, w) float32
        The smoothed level (out).
    """
    h, w = img.shape
    half, quarter = np.float32(0.5), np.float32(0.25)
    rows = np.empty((h, w), np.float32)
    for y in range(h):
        for x in range(w):
            left = x - 1 if x > 0 else min(1, w - 1)
            right = x + 1 if x < w - 1 else max(w - 2, 0)
            pair = np.float32(img[y, left]) + np.float32(img[y, right])
            rows[y, x] = np.float32(img[y, x]) * half + pair * quarter
    for y in range(h):
        up = y - 1 if y > 0 else min(1, h - 1)
        down = y + 1 if y < h - 1 else max(h - 2, 0)
        for x in range(w):
            out[y, x] = rows[y, x] * half + (rows[up, x] + rows[down, x]) * quarter


@njit(cache=True, nogil=True)
def smooth_expand(img, smooth, g, tg, ttg, inv_s0s2, inv_2s22, q10, q11, q12, q20, q21, q22, out):
    """A level's :func:`presmooth3` into ``smooth`` ((h, w) float32), then its polynomial expansion into ``out``
    ((h, w, 5) float32; the other arguments as :func:`~idtfv.idt.flow._farneback_nb.poly_expand`'s)."""
    presmooth3(img, smooth)
    poly_expand(smooth, g, tg, ttg, inv_s0s2, inv_2s22, q10, q11, q12, q20, q21, q22, out)


@njit(cache=True, nogil=True)
def upscale_prior(prior, init, ratio_x, ratio_y):
    r"""Both planes of the coarser level's flow resized to this level and scaled: ``cv2.resize(prior[c], (w, h),
    interpolation=cv2.INTER_LINEAR) * ratio`` (``ratio_x`` for plane 0, ``ratio_y`` for plane 1, float32 products as
    NumPy's in-place multiply) with the resize as OpenCV's x86 builds compute it (Intel IPP's float32 path), bit for bit
    but for the sign of a zero result (IPP returns -0 or +0 by rules of its own that no blend order reproduces;
    the extractor's output on the shared clips is the same bytes).

    IPP places destination pixel :math:`d` at the source position :math:`p = (d + 1/2) s - 1/2` in double, with
    :math:`s` = source / destination size (double), and blends its two neighbours with the fraction rounded to
    float32: :math:`\mathrm{fma}(b - a, t, a)`, along the row, then down the column. A column before the first or
    at or past the last source column takes that column alone; rows are clamped to the image (a row blended with
    itself). (OpenCV's own code, where it has no IPP, rounds the position to float32 first and
    blends :math:`a (1 - t) + b t`: up to ~1e-4 px apart on large images, a few ulp in the values.)

    Parameters
    ----------
    prior : (2, h0, w0) float32
        The coarser level's filtered flow, planar.
    init : (2, h, w) float32
        The resized, scaled planes (out).
    ratio_x, ratio_y : float32
        The planes' factors (1 for the resize alone).
    """
    h0, w0 = prior.shape[1], prior.shape[2]
    h, w = init.shape[1], init.shape[2]
    scale_x, scale_y = w0 / w, h0 / h
    xs = np.empty(w, np.int64)
    tx = np.empty(w, np.float32)
    last = np.empty(w, np.bool_)
    for x in range(w):
        p = (x + 0.5) * scale_x - 0.5
        sx = int(np.floor(p))
        t = np.float32(p - sx)
        if sx < 0:
            sx, t = 0, np.float32(0.0)
        last[x] = sx >= w0 - 1
        if last[x]:
            sx, t = w0 - 1, np.float32(0.0)
        xs[x], tx[x] = sx, t
    for c in range(2):
        ratio = ratio_x if c == 0 else ratio_y
        for y in range(h):
            p = (y + 0.5) * scale_y - 0.5
            sy = int(np.floor(p))
            ty = np.float32(p - sy)
            y0 = min(max(sy, 0), h0 - 1)
            y1 = min(max(sy + 1, 0), h0 - 1)
            for x in range(w):
                sx = xs[x]
                a, b = prior[c, y0, sx], prior[c, y1, sx]
                if not last[x]:
                    a = fma32(prior[c, y0, sx + 1] - a, tx[x], a)
                    b = fma32(prior[c, y1, sx + 1] - b, tx[x], b)
                init[c, y, x] = fma32(b - a, ty, a) * ratio


@njit(cache=True, nogil=True)
def level_flow(r0, r1, prior, init, m, k, det_eps, flow, border, iterations, med, out):
    """Refine a level's flow from its prior and median-filter it.

    Parameters
    ----------
    r0, r1 : (h, w, 5) float32
        The two frames' polynomial expansions.
    prior : (2, h0, w0) float32 or None
        The coarser level's filtered flow (planar x, y), or None on the coarsest level.
    init : (2, h, w) float32
        The level's prior :math:`\\tilde d` (out, planar): ``prior`` resized to this level
        (:func:`upscale_prior`), times the size ratios ``w / w0`` and ``h / h0`` (float32); with ``prior`` None,
        ``flow`` itself, zero-filled.
    m : (h, w, 5) float32
        Scratch of the per-pixel terms.
    k : (2 q + 1,) float32
        The window's 1-D weights.
    det_eps : float
        The 2x2 solve's determinant floor.
    flow : (2, h, w) float32
        The refined flow (out).
    border : float32 array
        The border weights of :func:`~idtfv.idt.flow._farneback_nb.update_matrices`.
    iterations : int
        Rounds of (window sum, 2x2 solve), the terms at the new flow between rounds.
    med : (2, h, w) float32
        The filtered flow, planar (out: the next finer level's prior).
    out : (h, w, 2) float32
        The filtered flow, interleaved (out: the level's output).
    """
    if prior is not None:
        h, w = init.shape[1], init.shape[2]
        upscale_prior(prior, init, np.float32(w / prior.shape[2]), np.float32(h / prior.shape[1]))
    update_matrices(r0, r1, init, border, m)
    for i in range(iterations):
        window_solve(m, k, det_eps, flow, r0, r1, border, i < iterations - 1)
    median5_flow(flow, med, out)
