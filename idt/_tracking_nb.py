r"""Numba kernels of the trajectory driver: dense-sampling cell occupancy, one tracking step, track validation.

They assume validated, C-contiguous inputs (float32 points and flows); :mod:`idtfv.idt.sampling` and
:mod:`idtfv.idt.tracking` validate and call them.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

__all__ = ["sample_grid", "track_step", "validate_tracks"]


@njit(cache=True, nogil=True)
def sample_grid(eig, threshold, stride, pts, out):
    """Centres of empty grid cells whose corner response exceeds ``threshold``.

    Parameters
    ----------
    eig : (h, w) float32
        Min-eigenvalue response (``cv2.cornerMinEigenVal``).
    threshold : float
        ``quality * eig.max()``.
    stride : int
        W, the cell side; cell (i, j) covers rows ``[iW, (i+1)W)`` and columns ``[jW, (j+1)W)``; only the
        ``(h // W) x (w // W)`` whole cells are used.
    pts : (m, 2) float32
        Existing points ``[x, y]``; a cell holding one (by ``floor``) is not re-sampled.
    out : (cells, 2) float32
        Receives the new points (row-major over cells).

    Returns
    -------
    int
        Number of rows of ``out`` filled.
    """
    h, w = eig.shape
    gw = w // stride
    gh = h // stride
    occupied = np.zeros(gh * gw, dtype=np.bool_)
    xmax = gw * stride
    ymax = gh * stride
    for k in range(pts.shape[0]):
        x = int(math.floor(pts[k, 0]))
        y = int(math.floor(pts[k, 1]))
        if x < 0 or y < 0 or x >= xmax or y >= ymax:
            continue
        occupied[(y // stride) * gw + x // stride] = True
    off = stride // 2
    n = 0
    for i in range(gh):
        for j in range(gw):
            if occupied[i * gw + j]:
                continue
            x = j * stride + off
            y = i * stride + off
            if eig[y, x] > threshold:
                out[n, 0] = x
                out[n, 1] = y
                n += 1
    return n


@njit(cache=True, inline="always")
def _round_clip(v, hi):
    # cvRound: nearest, ties to even (np.rint semantics)
    r = int(np.rint(v))
    if r < 0:
        return 0
    if r > hi:
        return hi
    return r


@njit(cache=True, nogil=True)
def track_step(slots, index, pos, disp, flow, flow_w, alive):
    r"""Advance tracks by one frame at one scale.

    A point :math:`p` moves to :math:`p + f(\mathrm{round}(p))` (flow ``f`` read at the rounded, clamped
    position); the camera-compensated flow :math:`f_w` at the same pixel is stored as the step's displacement.
    A track whose new point is outside the open frame ``(0, w) x (0, h)`` dies (``alive[k] = False``) and its
    state is not changed.

    Parameters
    ----------
    slots : (n,) int64
        Pool rows of the live tracks.
    index : (C,) int32
        Steps done by each pool row (the current point is ``pos[row, index[row]]``).
    pos : (C, L+1, 2) float32
    disp : (C, L, 2) float32
    flow, flow_w : (h, w, 2) float32
        Original and camera-compensated flow of this scale.
    alive : (n,) bool
        Output.
    """
    h = flow.shape[0]
    w = flow.shape[1]
    for k in range(slots.shape[0]):
        r = slots[k]
        i = index[r]
        px = pos[r, i, 0]
        py = pos[r, i, 1]
        x = _round_clip(px, w - 1)
        y = _round_clip(py, h - 1)
        nx = px + flow[y, x, 0]
        ny = py + flow[y, x, 1]
        if nx <= 0 or nx >= w or ny <= 0 or ny >= h:
            alive[k] = False
            continue
        alive[k] = True
        disp[r, i, 0] = flow_w[y, x, 0]
        disp[r, i, 1] = flow_w[y, x, 1]
        pos[r, i + 1, 0] = nx
        pos[r, i + 1, 1] = ny
        index[r] = i + 1


@njit(cache=True, nogil=True)
def validate_tracks(pos, disp, scale, min_var, max_var, max_dis, max_dis_ratio, min_camera_disp, camera,
                    meta, traj, keep):
    """LEAR's pruning and the trajectory shape of finished tracks (original-frame pixels).

    Parameters
    ----------
    pos : (n, L+1, 2) float32
        Points at the track's scale; multiplied by ``scale`` to get original pixels.
    disp : (n, L, 2) float32
        Camera-compensated steps at the track's scale.
    scale : float
    min_var, max_var, max_dis, max_dis_ratio, min_camera_disp : float
        Thresholds (see :class:`idtfv.idt.IDTParams`).
    camera : bool
        Apply the camera-motion pruning (largest compensated step <= ``min_camera_disp`` -> drop).
    meta : (n, 6) float32
        Output ``mean_x, mean_y, std_x, std_y, length, scale``.
    traj : (n, 2L) float32
        Output: compensated steps divided by their summed magnitude.
    keep : (n,) bool
        Output.
    """
    n = pos.shape[0]
    npts = pos.shape[1]
    L = disp.shape[1]
    for k in range(n):
        mx = 0.0
        my = 0.0
        for i in range(npts):
            mx += np.float32(pos[k, i, 0] * scale)
            my += np.float32(pos[k, i, 1] * scale)
        mx /= npts
        my /= npts
        vx = 0.0
        vy = 0.0
        for i in range(npts):
            dx = pos[k, i, 0] * scale - mx
            dy = pos[k, i, 1] * scale - my
            vx += dx * dx
            vy += dy * dy
        vx = math.sqrt(vx / npts)
        vy = math.sqrt(vy / npts)
        keep[k] = False
        if vx < min_var and vy < min_var:
            continue
        if vx > max_var or vy > max_var:
            continue
        length = 0.0
        cur_max = 0.0
        for i in range(npts - 1):
            dx = (pos[k, i + 1, 0] - pos[k, i, 0]) * scale
            dy = (pos[k, i + 1, 1] - pos[k, i, 1]) * scale
            d = math.sqrt(dx * dx + dy * dy)
            length += d
            if d > cur_max:
                cur_max = d
        if cur_max > max_dis and cur_max > length * max_dis_ratio:
            continue
        dsum = 0.0
        dmax = 0.0
        for i in range(L):
            dx = disp[k, i, 0] * scale
            dy = disp[k, i, 1] * scale
            d = math.sqrt(dx * dx + dy * dy)
            dsum += d
            if d > dmax:
                dmax = d
        if camera and dmax <= min_camera_disp:
            continue
        keep[k] = True
        meta[k, 0] = mx
        meta[k, 1] = my
        meta[k, 2] = vx
        meta[k, 3] = vy
        meta[k, 4] = length
        meta[k, 5] = scale
        inv = 1.0 / dsum if dsum > 0.0 else 0.0
        for i in range(L):
            traj[k, 2 * i] = disp[k, i, 0] * scale * inv
            traj[k, 2 * i + 1] = disp[k, i, 1] * scale * inv


@njit(cache=True, nogil=True)
def add_blocks(desc, index, rows, per_cell, blocks):
    """The temporal-cell running sums: ``desc[r, c, :] += blocks[k, :]`` for ``r = rows[k]`` (distinct) and its
    cell ``c = (index[r] - 1) // per_cell`` (the step just taken), skipped when ``c >= n_t`` (steps beyond the
    last whole cell are dropped).

    Parameters
    ----------
    desc : (C, n_t, D) float32
    index : (C,) int32
        Steps done by each pool row.
    rows : (n,) int64
    per_cell : int
        Steps per temporal cell.
    blocks : (n, D) float32
    """
    nt = desc.shape[1]
    for k in range(rows.shape[0]):
        r = rows[k]
        c = (index[r] - 1) // per_cell
        if c >= nt:
            continue
        for j in range(blocks.shape[1]):
            desc[r, c, j] += blocks[k, j]


@njit(cache=True, nogil=True)
def compensate_flow(flow, Hi, out):
    r"""Camera-compensated flow :math:`f_w(x) = H^{-1}(x + f(x)) - x` (see :func:`idtfv.idt.camera.compensate_flow`).

    Parameters
    ----------
    flow : (h, w, 2) float32
    Hi : (3, 3) float64, the inverse homography at this level
    out : (h, w, 2) float32
    """
    h, w = flow.shape[0], flow.shape[1]
    for y in range(h):
        for x in range(w):
            px = x + np.float64(flow[y, x, 0])
            py = y + np.float64(flow[y, x, 1])
            den = Hi[2, 0] * px + Hi[2, 1] * py + Hi[2, 2]
            out[y, x, 0] = (Hi[0, 0] * px + Hi[0, 1] * py + Hi[0, 2]) / den - x
            out[y, x, 1] = (Hi[1, 0] * px + Hi[1, 1] * py + Hi[1, 2]) / den - y


@njit(cache=True, nogil=True)
def compensate_flow_interior(flow, Hi, H, lo, hix, hiy, out):
    r""":func:`compensate_flow` with the reference's border rule: zero where :math:`H x` leaves the interior.

    The reference fills the camera-compensated frame with the previous frame wherever :math:`H x` (the source
    pixel in frame t) is not inside ``(lo, hix) x (lo, hiy)``, so the flow there is (about) zero.

    Parameters
    ----------
    flow : (h, w, 2) float32
    Hi, H : (3, 3) float64, the inverse homography and the homography at this level
    lo, hix, hiy : float, the interior's bounds in this level's pixels
    out : (h, w, 2) float32
    """
    h, w = flow.shape[0], flow.shape[1]
    for y in range(h):
        for x in range(w):
            d = H[2, 0] * x + H[2, 1] * y + H[2, 2]
            sx = (H[0, 0] * x + H[0, 1] * y + H[0, 2]) / d
            sy = (H[1, 0] * x + H[1, 1] * y + H[1, 2]) / d
            if not (sx > lo and sx < hix and sy > lo and sy < hiy):
                out[y, x, 0] = 0.0
                out[y, x, 1] = 0.0
                continue
            px = x + np.float64(flow[y, x, 0])
            py = y + np.float64(flow[y, x, 1])
            den = Hi[2, 0] * px + Hi[2, 1] * py + Hi[2, 2]
            out[y, x, 0] = (Hi[0, 0] * px + Hi[0, 1] * py + Hi[0, 2]) / den - x
            out[y, x, 1] = (Hi[1, 0] * px + Hi[1, 1] * py + Hi[1, 2]) / den - y
