r"""Numba kernels of the trajectory driver: dense-sampling cell occupancy, one tracking step, track validation.

They assume validated, C-contiguous inputs (float32 points and flows); :mod:`idtfv.idt.sampling` and
:mod:`idtfv.idt.tracking` validate and call them.

The extractor's per-frame path calls the pool kernels (:func:`step_tracks`, :func:`split_finished`,
:func:`pool_rows`, :func:`sample_pool_grid`, :func:`start_tracks`): each does in one call what the plain kernel
(:func:`track_step`, :func:`validate_tracks`, :func:`sample_grid`) and the NumPy indexing around it did, reading
and writing the pool's arrays in place, with the same arithmetic in the same order (the same bytes).
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

__all__ = ["sample_grid", "sample_pool_grid", "track_step", "step_tracks", "start_tracks", "split_finished",
           "validate_tracks", "pool_rows", "add_blocks", "compensate_flow", "compensate_flow_interior"]


@njit(cache=True, inline="always")
def _occupy(occupied, px, py, stride, gw, xmax, ymax):
    """Mark the grid cell holding the point ``(px, py)`` (by ``floor``), if it is one of the whole cells."""
    x = int(math.floor(px))
    y = int(math.floor(py))
    if x < 0 or y < 0 or x >= xmax or y >= ymax:
        return
    occupied[(y // stride) * gw + x // stride] = True


@njit(cache=True, inline="always")
def _select_cells(eig, threshold, stride, occupied, gh, gw, out):
    """Centres of the cells not ``occupied`` whose response exceeds ``threshold`` into ``out``; their number."""
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
    for k in range(pts.shape[0]):
        _occupy(occupied, pts[k, 0], pts[k, 1], stride, gw, gw * stride, gh * stride)
    return _select_cells(eig, threshold, stride, occupied, gh, gw, out)


@njit(cache=True, nogil=True)
def sample_pool_grid(eig, threshold, stride, live, index, pos, out):
    """:func:`sample_grid` with the existing points read from a track pool: the current point
    ``pos[r, index[r]]`` of each live row ``r`` (``live (n,) int64``, ``index (C,) int32``, ``pos (C, L+1, 2)``
    float32), the same cells and points."""
    h, w = eig.shape
    gw = w // stride
    gh = h // stride
    occupied = np.zeros(gh * gw, dtype=np.bool_)
    for k in range(live.shape[0]):
        r = live[k]
        i = index[r]
        _occupy(occupied, pos[r, i, 0], pos[r, i, 1], stride, gw, gw * stride, gh * stride)
    return _select_cells(eig, threshold, stride, occupied, gh, gw, out)


@njit(cache=True, nogil=True)
def start_tracks(free, n_free, points, first_birth, pos, desc, index, birth, rows):
    """Start a track at each of ``points`` ((k, 2) float32) in the top ``k`` rows of the free stack
    ``free[:n_free]`` (top first: ``rows[j] = free[n_free - 1 - j]``): its first point, zeroed descriptor sums,
    no step done and birth number ``first_birth + j`` (``TrackPool.add``).

    Parameters
    ----------
    free : (m,) int64
        The free-row stack, its top at ``n_free - 1`` (``n_free >= k``).
    pos, desc, index, birth
        The pool's arrays ``(C, L+1, 2)`` float32, ``(C, n_t, D)`` float32, ``(C,)`` int32, ``(C,)`` int64.
    rows : (k,) int64
        Output: the rows taken.
    """
    nt = desc.shape[1]
    dim = desc.shape[2]
    for j in range(points.shape[0]):
        r = free[n_free - 1 - j]
        rows[j] = r
        pos[r, 0, 0] = points[j, 0]
        pos[r, 0, 1] = points[j, 1]
        for c in range(nt):
            for d in range(dim):
                desc[r, c, d] = 0.0
        index[r] = 0
        birth[r] = first_birth + j


@njit(cache=True, inline="always")
def _round_clip(v, hi):
    # cvRound: nearest, ties to even (np.rint semantics)
    r = int(np.rint(v))
    if r < 0:
        return 0
    if r > hi:
        return hi
    return r


@njit(cache=True, inline="always")
def _step_one(r, index, pos, disp, flow, flow_w):
    """One tracking step of pool row ``r`` (see :func:`track_step`); False (and nothing changed) if it dies."""
    h = flow.shape[0]
    w = flow.shape[1]
    i = index[r]
    px = pos[r, i, 0]
    py = pos[r, i, 1]
    x = _round_clip(px, w - 1)
    y = _round_clip(py, h - 1)
    nx = px + flow[y, x, 0]
    ny = py + flow[y, x, 1]
    if nx <= 0 or nx >= w or ny <= 0 or ny >= h:
        return False
    disp[r, i, 0] = flow_w[y, x, 0]
    disp[r, i, 1] = flow_w[y, x, 1]
    pos[r, i + 1, 0] = nx
    pos[r, i + 1, 1] = ny
    index[r] = i + 1
    return True


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
    for k in range(slots.shape[0]):
        alive[k] = _step_one(slots[k], index, pos, disp, flow, flow_w)


@njit(cache=True, nogil=True)
def step_tracks(live, index, pos, disp, flow, flow_w, prev, kept, dead):
    """:func:`track_step` of a pool's live rows, with the rows' split and the points before the step.

    Parameters
    ----------
    live : (n,) int64
        The live rows, in birth order.
    index, pos, disp, flow, flow_w
        As :func:`track_step`.
    prev : (n, 2) float32
        Output: ``prev[:n_kept]``, the surviving tracks' points before the step.
    kept, dead : (n,) int64
        Output: ``kept[:n_kept]`` the surviving rows, ``dead[:n_dead]`` those that left the frame (their
        ``index`` set to -1, the rest of their state unchanged), each in ``live``'s order.

    Returns
    -------
    n_kept, n_dead : int
    """
    nk = 0
    nd = 0
    for k in range(live.shape[0]):
        r = live[k]
        i = index[r]
        px = pos[r, i, 0]
        py = pos[r, i, 1]
        if _step_one(r, index, pos, disp, flow, flow_w):
            kept[nk] = r
            prev[nk, 0] = px
            prev[nk, 1] = py
            nk += 1
        else:
            index[r] = -1
            dead[nd] = r
            nd += 1
    return nk, nd


@njit(cache=True, nogil=True)
def split_finished(live, index, length, done, rest):
    """Split a pool's live rows into those with ``length`` steps done (``done[:n_done]``, their ``index`` set to
    -1: freed) and the others (``rest[:n_rest]``), each in ``live``'s order. Returns ``(n_done, n_rest)``."""
    nd = 0
    nr = 0
    for k in range(live.shape[0]):
        r = live[k]
        if index[r] >= length:
            index[r] = -1
            done[nd] = r
            nd += 1
        else:
            rest[nr] = r
            nr += 1
    return nd, nr


@njit(cache=True, inline="always")
def _validate_one(pos, disp, r, scale, min_var, max_var, max_dis, max_dis_ratio, min_camera_disp, camera,
                  meta, m, col, traj):
    """:func:`validate_tracks` of track ``r`` of ``pos``/``disp``: False if it is pruned, else True with its
    ``meta`` in ``meta[m, col:col + 6]`` and its shape in ``traj[m]``."""
    npts = pos.shape[1]
    L = disp.shape[1]
    mx = 0.0
    my = 0.0
    for i in range(npts):
        mx += np.float32(pos[r, i, 0] * scale)
        my += np.float32(pos[r, i, 1] * scale)
    mx /= npts
    my /= npts
    vx = 0.0
    vy = 0.0
    for i in range(npts):
        dx = pos[r, i, 0] * scale - mx
        dy = pos[r, i, 1] * scale - my
        vx += dx * dx
        vy += dy * dy
    vx = math.sqrt(vx / npts)
    vy = math.sqrt(vy / npts)
    if vx < min_var and vy < min_var:
        return False
    if vx > max_var or vy > max_var:
        return False
    length = 0.0
    cur_max = 0.0
    for i in range(npts - 1):
        dx = (pos[r, i + 1, 0] - pos[r, i, 0]) * scale
        dy = (pos[r, i + 1, 1] - pos[r, i, 1]) * scale
        d = math.sqrt(dx * dx + dy * dy)
        length += d
        if d > cur_max:
            cur_max = d
    if cur_max > max_dis and cur_max > length * max_dis_ratio:
        return False
    dsum = 0.0
    dmax = 0.0
    for i in range(L):
        dx = disp[r, i, 0] * scale
        dy = disp[r, i, 1] * scale
        d = math.sqrt(dx * dx + dy * dy)
        dsum += d
        if d > dmax:
            dmax = d
    if camera and dmax <= min_camera_disp:
        return False
    meta[m, col] = mx
    meta[m, col + 1] = my
    meta[m, col + 2] = vx
    meta[m, col + 3] = vy
    meta[m, col + 4] = length
    meta[m, col + 5] = scale
    inv = 1.0 / dsum if dsum > 0.0 else 0.0
    for i in range(L):
        traj[m, 2 * i] = disp[r, i, 0] * scale * inv
        traj[m, 2 * i + 1] = disp[r, i, 1] * scale * inv
    return True


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
    for k in range(pos.shape[0]):
        keep[k] = _validate_one(pos, disp, k, scale, min_var, max_var, max_dis, max_dis_ratio, min_camera_disp,
                                camera, meta, k, 0, traj)


@njit(cache=True, nogil=True)
def pool_rows(rows, pos, disp, desc, per_cell, scale, min_var, max_var, max_dis, max_dis_ratio, min_camera_disp,
              camera, frame_num, width, height, t_pos, meta, traj, hog, hof, mbhx, mbhy):
    """The output rows of finished tracks read from their pool: :func:`validate_tracks`' pruning and the rows of
    the kept ones, in ``rows``' order, as the extractor's ``_kept_rows`` makes them from ``TrackPool.pop_finished``'s
    copies (the same numbers).

    Parameters
    ----------
    rows : (n,) int64
        Pool rows of the finished tracks.
    pos, disp : (C, L+1, 2), (C, L, 2) float32
        The pool's points and camera-compensated steps.
    desc : (C, n_t, D) float32
        The pool's temporal-cell sums (HOG | HOF | MBHx | MBHy side by side), divided by ``per_cell`` here.
    per_cell : int
    scale, min_var, max_var, max_dis, max_dis_ratio, min_camera_disp, camera
        As :func:`validate_tracks`.
    frame_num : int
        The frame where the tracks end (column 0).
    width, height : int
        The frame's size (``x_pos = clip(mean_x / width, 0, 0.999)``, ``y_pos`` the same).
    t_pos : float
        Column 9 (NaN when the number of frames is not known yet).
    meta : (n, 10) float32
    traj : (n, 2L) float32
    hog, hof, mbhx, mbhy : (n, n_t * d) float32
        Outputs: the first ``m`` rows (temporal cell outer: ``hog[j, c * d + b]``); each block's ``d`` is its
        width over ``n_t``, the blocks are ``desc``'s columns in this order.

    Returns
    -------
    int
        ``m``, the rows kept.
    """
    nt = desc.shape[1]
    d0 = hog.shape[1] // nt
    d1 = hof.shape[1] // nt
    d2 = mbhx.shape[1] // nt
    d3 = mbhy.shape[1] // nt
    pc = np.float32(per_cell)
    fw = np.float32(width)
    fh = np.float32(height)
    zero = np.float32(0.0)
    top = np.float32(0.999)
    m = 0
    for k in range(rows.shape[0]):
        r = rows[k]
        if not _validate_one(pos, disp, r, scale, min_var, max_var, max_dis, max_dis_ratio, min_camera_disp,
                             camera, meta, m, 1, traj):
            continue
        meta[m, 0] = frame_num
        meta[m, 7] = min(max(meta[m, 1] / fw, zero), top)
        meta[m, 8] = min(max(meta[m, 2] / fh, zero), top)
        meta[m, 9] = t_pos
        for c in range(nt):
            for j in range(d0):
                hog[m, c * d0 + j] = desc[r, c, j] / pc
            for j in range(d1):
                hof[m, c * d1 + j] = desc[r, c, d0 + j] / pc
            for j in range(d2):
                mbhx[m, c * d2 + j] = desc[r, c, d0 + d1 + j] / pc
            for j in range(d3):
                mbhy[m, c * d3 + j] = desc[r, c, d0 + d1 + d2 + j] / pc
        m += 1
    return m


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


@njit(cache=True, inline="always")
def _compensated_row(flow, y, Hi, xs, u, v, ou, ov):
    """Row ``y`` of :math:`f_w` into ``ou``, ``ov`` (w,) float32 (float64 arithmetic); ``xs`` (w,) float64 the
    column numbers, ``u``, ``v`` (w,) float64 scratch. Three loops with one job each, so that LLVM vectorises the
    one with the divisions."""
    w = flow.shape[1]
    fr = flow[y]
    for x in range(w):
        u[x] = np.float64(fr[x, 0])
        v[x] = np.float64(fr[x, 1])
    a0, a1, a2 = Hi[0, 0], Hi[0, 1], Hi[0, 2]
    b0, b1, b2 = Hi[1, 0], Hi[1, 1], Hi[1, 2]
    c0, c1, c2 = Hi[2, 0], Hi[2, 1], Hi[2, 2]
    yf = np.float64(y)
    for x in range(w):
        xf = xs[x]
        px = xf + u[x]
        py = yf + v[x]
        den = c0 * px + c1 * py + c2
        ou[x] = (a0 * px + a1 * py + a2) / den - xf
        ov[x] = (b0 * px + b1 * py + b2) / den - yf


# NumPy's error model: a division by zero gives inf (Python's raises), which lets the division loop vectorise
# (4-8 divisions per instruction; 224 -> 136 us for a 320x240 level); no finite value changes.
@njit(cache=True, nogil=True, error_model="numpy")
def compensate_flow(flow, Hi, out):
    r"""Camera-compensated flow :math:`f_w(x) = H^{-1}(x + f(x)) - x` (see :func:`idtfv.idt.camera.compensate_flow`).

    Parameters
    ----------
    flow : (h, w, 2) float32
    Hi : (3, 3) float64, the inverse homography at this level
    out : (h, w, 2) float32
    """
    h, w = flow.shape[0], flow.shape[1]
    xs = np.arange(w).astype(np.float64)
    u, v = np.empty(w, np.float64), np.empty(w, np.float64)
    ou, ov = np.empty(w, np.float32), np.empty(w, np.float32)
    for y in range(h):
        _compensated_row(flow, y, Hi, xs, u, v, ou, ov)
        orow = out[y]
        for x in range(w):
            orow[x, 0] = ou[x]
            orow[x, 1] = ov[x]


@njit(cache=True, nogil=True, error_model="numpy")
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
    xs = np.arange(w).astype(np.float64)
    u, v = np.empty(w, np.float64), np.empty(w, np.float64)
    ou, ov = np.empty(w, np.float32), np.empty(w, np.float32)
    inside = np.empty(w, np.bool_)
    a0, a1, a2 = H[0, 0], H[0, 1], H[0, 2]
    b0, b1, b2 = H[1, 0], H[1, 1], H[1, 2]
    c0, c1, c2 = H[2, 0], H[2, 1], H[2, 2]
    for y in range(h):
        for x in range(w):
            d = c0 * x + c1 * y + c2
            sx = (a0 * x + a1 * y + a2) / d
            sy = (b0 * x + b1 * y + b2) / d
            inside[x] = (sx > lo) & (sx < hix) & (sy > lo) & (sy < hiy)  # (no branch: vectorises)
        _compensated_row(flow, y, Hi, xs, u, v, ou, ov)
        orow = out[y]
        for x in range(w):
            orow[x, 0] = ou[x] if inside[x] else np.float32(0.0)
            orow[x, 1] = ov[x] if inside[x] else np.float32(0.0)
