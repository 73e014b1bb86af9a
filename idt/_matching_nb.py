r"""Numba kernels: windowed nearest-descriptor matching of keypoints between two frames.

For each keypoint :math:`i` of frame :math:`t` (query) the kernel returns the keypoint :math:`j` of frame
:math:`t-1` (train) with the smallest descriptor distance among those with :math:`|x_i - x_j| \le w` and
:math:`|y_i - y_j| \le w` (OpenCV 2's ``windowedMatchingMask``), or -1 if none; ties go to the lowest :math:`j`
(as ``cv2.BFMatcher``). Binary descriptors use the Hamming distance (popcount of XORed 64-bit words), float
descriptors the squared L2 distance accumulated in float64.

Inputs are validated by :mod:`idtfv.idt.camera`: C-contiguous float32 points ``(n, 2)``, descriptors as ``uint64``
words ``(n, k)`` or float32 ``(n, d)``.
"""

from __future__ import annotations

import numpy as np
from numba import njit

__all__ = ["nearest_hamming", "nearest_l2"]


@njit(cache=True, inline="always")
def _popcount64(x):
    x = x - ((x >> np.uint64(1)) & np.uint64(0x5555555555555555))
    x = (x & np.uint64(0x3333333333333333)) + ((x >> np.uint64(2)) & np.uint64(0x3333333333333333))
    x = (x + (x >> np.uint64(4))) & np.uint64(0x0F0F0F0F0F0F0F0F)
    return (x * np.uint64(0x0101010101010101)) >> np.uint64(56)


@njit(cache=True)
def nearest_hamming(q_pts, t_pts, q_words, t_words, window, out):
    """``out[i]`` = index of the nearest (Hamming) train descriptor within the window, or -1."""
    nw = q_words.shape[1]
    for i in range(q_pts.shape[0]):
        best = -1
        best_d = np.int64(1) << 62
        qx = q_pts[i, 0]
        qy = q_pts[i, 1]
        for j in range(t_pts.shape[0]):
            if abs(qx - t_pts[j, 0]) > window or abs(qy - t_pts[j, 1]) > window:
                continue
            d = np.int64(0)
            for k in range(nw):
                d += np.int64(_popcount64(q_words[i, k] ^ t_words[j, k]))
            if d < best_d:
                best_d = d
                best = j
        out[i] = best


@njit(cache=True)
def nearest_l2(q_pts, t_pts, q_desc, t_desc, window, out):
    """``out[i]`` = index of the nearest (squared L2) train descriptor within the window, or -1."""
    nd = q_desc.shape[1]
    for i in range(q_pts.shape[0]):
        best = -1
        best_d = np.inf
        qx = q_pts[i, 0]
        qy = q_pts[i, 1]
        for j in range(t_pts.shape[0]):
            if abs(qx - t_pts[j, 0]) > window or abs(qy - t_pts[j, 1]) > window:
                continue
            d = 0.0
            for k in range(nd):
                e = np.float64(q_desc[i, k]) - np.float64(t_desc[j, k])
                d += e * e
            if d < best_d:
                best_d = d
                best = j
        out[i] = best
