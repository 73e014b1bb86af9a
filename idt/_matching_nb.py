r"""Numba kernels: windowed nearest-descriptor matching of keypoints between two frames, and the camera's flow
matches (their corners, :func:`good_features`, ``cv2.goodFeaturesToTrack`` from a given corner response; their
pairs, :func:`flow_match_points`).

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

__all__ = ["nearest_hamming", "nearest_l2", "good_features", "flow_match_points"]


@njit(cache=True, inline="always")
def _popcount64(x):
    x = x - ((x >> np.uint64(1)) & np.uint64(0x5555555555555555))
    x = (x & np.uint64(0x3333333333333333)) + ((x >> np.uint64(2)) & np.uint64(0x3333333333333333))
    x = (x + (x >> np.uint64(4))) & np.uint64(0x0F0F0F0F0F0F0F0F)
    return (x * np.uint64(0x0101010101010101)) >> np.uint64(56)


@njit(cache=True, nogil=True)
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


@njit(cache=True, nogil=True)
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



@njit(cache=True, nogil=True)
def good_features(eig, maxv, mask, use_mask, quality, min_distance, max_corners, out):
    """``cv2.goodFeaturesToTrack(gray, max_corners, quality, min_distance, mask=mask)`` from its min-eigenvalue
    response ``eig`` (= ``cv2.cornerMinEigenVal(gray, 3, ksize=3)``): the same corners in the same order.

    As OpenCV: the threshold is ``quality`` times ``maxv`` (the response's maximum over the mask, 0 when the
    mask is empty), cast to float32; responses at or below it count as 0; a pixel ``(x, y)`` with
    ``1 <= x <= w-2``, ``1 <= y <= h-2`` is a candidate when its (thresholded) response is not 0, is the maximum
    of its 3x3 neighbourhood (``dilate``) and lies inside the mask. Candidates are taken strongest first (ties:
    the later pixel in raster order first, as OpenCV's sort), each kept unless a kept corner in its own or a
    neighbouring grid cell (cells of ``round(min_distance)`` px) is closer than ``min_distance``, until
    ``max_corners`` are kept (0: no limit).

    Parameters
    ----------
    eig : (h, w) float32, C-contiguous
    maxv : float
        The maximum of ``eig`` over the mask.
    mask : (h, w) uint8
        Non-zero where corners may lie (read only when ``use_mask``).
    use_mask : bool
    quality : float
    min_distance : float (>= 1)
    max_corners : int
    out : (m, 2) float32, m >= the number of corners kept
        Receives ``[x, y]`` of the corners.

    Returns
    -------
    int
        Number of corners kept.
    """
    h, w = eig.shape
    thr = np.float32(np.float64(maxv) * quality)
    zero = np.float32(0.0)
    t = np.empty((h, w), np.float32)  # thresholded response
    hm = np.empty((h, w), np.float32)  # its 1x3 maxima (interior columns)
    for y in range(h):
        for x in range(w):
            v = eig[y, x]
            t[y, x] = v if v > thr else zero
        for x in range(1, w - 1):
            hm[y, x] = max(max(t[y, x - 1], t[y, x]), t[y, x + 1])
    # candidates: per row, the flags in one branch-free pass (it vectorises), then the few set ones, each with its
    # sort key: response descending, then raster index descending (float32 bits made monotone as signed integers,
    # the index in the low 32 bits: the keys are distinct, so sorting them orders the candidates)
    flag = np.zeros(w, np.bool_)
    key = np.empty(max((h - 2) * (w - 2), 0), np.int64)
    n = 0
    for y in range(1, h - 1):
        row, above, here, below = t[y], hm[y - 1], hm[y], hm[y + 1]
        if use_mask:
            m_row = mask[y]
            for x in range(1, w - 1):
                v = row[x]
                flag[x] = (v != zero) & (v == max(max(above[x], here[x]), below[x])) & (m_row[x] != 0)
        else:
            for x in range(1, w - 1):
                v = row[x]
                flag[x] = (v != zero) & (v == max(max(above[x], here[x]), below[x]))
        bits = row.view(np.int32)
        for x in range(1, w - 1):
            if flag[x]:
                b = np.int64(bits[x])
                if b < 0:
                    b = b ^ np.int64(0x7FFFFFFF)
                key[n] = (b << 32) | (y * w + x)
                n += 1
    keys = np.sort(key[:n])
    low = np.int64(0xFFFFFFFF)
    cell = int(np.rint(min_distance))
    gw = (w + cell - 1) // cell
    gh = (h + cell - 1) // cell
    kept = np.zeros((h, w), np.bool_)
    md2 = min_distance * min_distance
    m = 0
    for i in range(n - 1, -1, -1):  # strongest first
        k = keys[i] & low
        y = k // w
        x = k - y * w
        xc = x // cell
        yc = y // cell
        x1 = max(xc - 1, 0) * cell
        y1 = max(yc - 1, 0) * cell
        x2 = min((min(xc + 1, gw - 1) + 1) * cell, w)
        y2 = min((min(yc + 1, gh - 1) + 1) * cell, h)
        good = True
        for yy in range(y1, y2):
            for xx in range(x1, x2):
                if kept[yy, xx]:
                    dx = np.float32(x - xx)
                    dy = np.float32(y - yy)
                    if dx * dx + dy * dy < md2:
                        good = False
                        break
            if not good:
                break
        if good:
            kept[y, x] = True
            out[m, 0] = x
            out[m, 1] = y
            m += 1
            if max_corners > 0 and m == max_corners:
                break
    return m


@njit(cache=True, nogil=True)
def flow_match_points(pts, flow, min_flow2, src, dst):
    """The flow matches of corners ``pts``: each corner's rounded pixel ``(xi, yi)`` (``rint``, clamped into the
    flow), its flow vector ``f`` there (as float32) and, when ``f_x^2 + f_y^2 > min_flow2`` (float32), the pair
    ``src = pts[k]``, ``dst = (xi, yi) + f`` (float32), in ``pts``' order.

    Parameters
    ----------
    pts : (n, 2) float32
    flow : (h, w, 2) float32 or float64
    min_flow2 : float32
        The squared threshold.
    src, dst : (n, 2) float32
        Outputs, their first ``m`` rows.

    Returns
    -------
    int
        ``m``, the pairs kept.
    """
    h = flow.shape[0]
    w = flow.shape[1]
    m = 0
    for k in range(pts.shape[0]):
        xi = min(max(int(np.rint(pts[k, 0])), 0), w - 1)
        yi = min(max(int(np.rint(pts[k, 1])), 0), h - 1)
        fx = np.float32(flow[yi, xi, 0])
        fy = np.float32(flow[yi, xi, 1])
        if fx * fx + fy * fy > min_flow2:
            src[m, 0] = pts[k, 0]
            src[m, 1] = pts[k, 1]
            dst[m, 0] = np.float32(xi) + fx
            dst[m, 1] = np.float32(yi) + fy
            m += 1
    return m
