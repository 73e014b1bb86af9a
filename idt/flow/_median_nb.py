r"""Numba kernel of the flow's 5x5 median filter (``cv2.medianBlur(ksize=5)``'s values, replicated border).

:func:`median5_flow` filters both planes of a planar flow with the shared selection networks of
:mod:`idtfv.idt.flow._median_simd_nb`: per plane, every source row (clamped at the top and bottom) is copied with
two replicated values each side and its five-value runs sorted once (:func:`~._median_simd_nb.sort5_row`, a ring
of eight sorted rows per plane), then the output rows are made two at a time
(:func:`~._median_simd_nb.median_pair`), each pair keeping its merged shared rows for the next, and written
both planar (the next finer level's prior) and interleaved (the level's ``(h, w, 2)`` flow, the second plane's
rows as they are made: ``cv2.merge``'s pass over the planes saved).
"""

from __future__ import annotations

import numpy as np
from numba import njit

from idtfv.idt.flow._median_simd_nb import interleave8, median_pair, sort5_row

#: SHA-256 of the kernel modules this one's cached kernels compile in (see ``_farneback_nb.KERNEL_DEPENDENCIES``).
KERNEL_DEPENDENCIES = {"_median_simd_nb.py": "4dc52e9d419b46c708724f836f7c1d779f3ba6beb0ba140f10072f01c7ba52e7",
                       "llvm_ir.py": "c1aafaf28705aa778677439055f65b3deecf5aa9526143717849da068b96689b"}

__all__ = ["median5_flow"]

_RING = 8  # sorted rows kept: a pair of output rows reads six, and writes two new ones


@njit(cache=True, nogil=True)
def _sorted_row(plane, r, pad, ring):
    """Row ``r`` of ``plane (h, w)`` (clamped to 0 .. h - 1) with its 5-value runs sorted into its ring slot."""
    h, w = plane.shape
    src = plane[min(max(r, 0), h - 1)]
    for x in range(w):  # (a loop: the slice assignment's checks cost more than the copy)
        pad[x + 2] = src[x]
    pad[0] = pad[1] = src[0]
    pad[w + 2] = pad[w + 3] = src[w - 1]
    sort5_row(pad, ring[(r + _RING) % _RING])


@njit(cache=True, nogil=True)
def median5_flow(src, med, out):
    """5x5 median of both planes of a planar flow ``src (2, h, w)`` into ``med (2, h, w)`` and, interleaved, into
    ``out (h, w, 2)`` (float32, C-contiguous, not overlapping), the border replicated: ``cv2.medianBlur(src[i],
    5)``'s values. The second plane's rows are interleaved with the first's as they are made."""
    h, w = src.shape[1], src.shape[2]
    pad = np.empty(w + 4, np.float32)
    ring = np.empty((_RING, 5, w), np.float32)
    merged = np.zeros((2, 10, w), np.float32)
    spare = np.empty(w, np.float32)
    whole = w - w % 8
    for ch in range(2):
        plane, dst = src[ch], med[ch]
        for r in range(-2, 2):
            _sorted_row(plane, r, pad, ring)
        # rows -1 and 0 merged into merged[0] (this call's medians go to the spare row)
        median_pair(merged[1], ring[_RING - 1], ring[0], ring[0], ring[0], merged[0], spare, spare)
        cur = 0
        for y in range(0, h, 2):
            _sorted_row(plane, y + 2, pad, ring)
            _sorted_row(plane, y + 3, pad, ring)
            second = dst[y + 1] if y + 1 < h else spare
            median_pair(merged[cur], ring[(y + 1) % _RING], ring[(y + 2) % _RING], ring[(y - 2 + _RING) % _RING],
                        ring[(y + 3) % _RING], merged[1 - cur], dst[y], second)
            cur = 1 - cur
            if ch == 1:
                for yy in range(y, min(y + 2, h)):
                    u, v, o = med[0, yy], dst[yy], out[yy]
                    for x in range(0, whole, 8):
                        interleave8(u, v, o, x)
                    for x in range(whole, w):
                        o[x, 0] = u[x]
                        o[x, 1] = v[x]
