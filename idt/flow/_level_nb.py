"""One level of :class:`~idtfv.idt.flow.farneback.FarnebackPyramidFlow`'s coarse-to-fine solve in one call.

:func:`level_flow` runs the kernels the Python driver called one by one (the prior's rescaling, the first
iteration's per-pixel terms :func:`~idtfv.idt.flow._farneback_nb.update_matrices`, ``iterations`` rounds of
:func:`~idtfv.idt.flow._farneback_nb.window_solve`, the 5x5 median
:func:`~idtfv.idt.flow._median_nb.median5_flow`), in their order, on the same arrays: the same numbers, with one
call (one release and one retake of the GIL) per level instead of five or more. With ``--threads`` the thread that
solves the flow then seldom waits for the GIL the other thread holds.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from idtfv.idt.flow._farneback_nb import update_matrices, window_solve
from idtfv.idt.flow._median_nb import median5_flow

#: SHA-256 of the kernel modules this one's cached kernels compile in (see ``_farneback_nb.KERNEL_DEPENDENCIES``).
KERNEL_DEPENDENCIES = {"_farneback_nb.py": "1509fd5656ab885935b75ce1d1291d8ec590908a12ced270ba109ec6ce15a2cc",
                       "_farneback_simd_nb.py": "8a423afd3f068837f4190c8dd8269a6345f9a7d0044f502c755fc877f8585d59",
                       "_median_nb.py": "684a7d668eb06e619a860632cfde01f2f6cb41944798b1587ff14b7bab650f3e",
                       "_median_simd_nb.py": "4dc52e9d419b46c708724f836f7c1d779f3ba6beb0ba140f10072f01c7ba52e7",
                       "llvm_ir.py": "c1aafaf28705aa778677439055f65b3deecf5aa9526143717849da068b96689b"}


@njit(cache=True, nogil=True)
def _rescale(init, ratio_x, ratio_y):
    """``init[0] *= ratio_x; init[1] *= ratio_y`` (float32 products, as NumPy's in-place multiply)."""
    h, w = init.shape[1], init.shape[2]
    for y in range(h):
        for x in range(w):
            init[0, y, x] = init[0, y, x] * ratio_x
            init[1, y, x] = init[1, y, x] * ratio_y


@njit(cache=True, nogil=True)
def level_flow(r0, r1, init, ratio_x, ratio_y, rescale, m, k, det_eps, flow, border, iterations, med, out):
    """Refine a level's flow from its prior and median-filter it.

    Parameters
    ----------
    r0, r1 : (h, w, 5) float32
        The two frames' polynomial expansions.
    init : (2, h, w) float32
        The prior :math:`\\tilde d` (planar x, y): the coarser level's filtered flow resized to this level, times
        ``(ratio_x, ratio_y)`` (float32) first when ``rescale``; or ``flow`` itself, zero-filled, on the coarsest
        level.
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
    if rescale:
        _rescale(init, ratio_x, ratio_y)
    update_matrices(r0, r1, init, border, m)
    for i in range(iterations):
        window_solve(m, k, det_eps, flow, r0, r1, border, i < iterations - 1)
    median5_flow(flow, med, out)
