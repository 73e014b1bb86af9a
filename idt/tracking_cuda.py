r"""Live tracks of one pyramid level on the GPU: :class:`DeviceTrackPool`, the device twin of
:class:`idtfv.idt.tracking.TrackPool` (``IDTParams(device="cuda")`` with the device flow).

The pool's arrays stay on the device: points ``pos (C, L+1, 2)``, compensated steps ``disp (C, L, 2)``, the
temporal cells' block sums ``desc (C, n_t, D)``, steps done ``index (C,)`` (-1: free row), birth numbers
``birth (C,)``, the live rows in birth order and the free-row stack. Every operation has ``TrackPool``'s semantics,
row for row: the same rows are taken from the same free stack, live rows keep the same order, the same arithmetic
(the kernels of :mod:`idtfv.idt._tracking_cuda`), so after any sequence of ``add``, ``step``,
``store_descriptors``, ``release`` and ``pop_finished`` the two pools' arrays are bit-identical.

What crosses the bus:

- :meth:`step`: nothing per track; two counts come back (survivors, finished), 16 bytes;
- :meth:`add`: the new points go up (8 bytes each; the dense sampling's, every ``init_gap`` frames);
- :meth:`store_descriptors` / :func:`gather_blocks`: nothing (the blocks are gathered from the device
  histograms at the device points and added to the device sums);
- :meth:`pop_validated` (the extractor's): when tracks finished, the pruning runs on the device, the number
  kept comes back (8 bytes), then the kept tracks' rows in one transfer (``6 + 2L + n_t D`` float32 each);
  :meth:`pop_finished` (``TrackPool``'s contract) downloads every finished track unpruned;
- :meth:`current_points` is a device array (the device dense sampling's ``existing``).

The extractor drives all its levels' pools at once (issue 14's launch budget): :func:`step_levels`,
:func:`gather_levels` with :func:`store_levels`, :func:`pop_levels` and :func:`add_levels` do for up to 8 pools
per launch what :meth:`step`, :func:`gather_blocks` with :meth:`store_descriptors`, :meth:`pop_validated` and
:meth:`add` do for one (the same kernels' bodies, so the same bytes), with one download of every pool's counts,
one of their kept rows and one upload of their new points.

Call :meth:`pop_finished` or :meth:`pop_validated` after each :meth:`step` (as the extractor does): a step with
finished tracks not yet popped raises (``TrackPool`` would write past their ``L + 1`` points). The arrays
:meth:`step` returns are views of the pool's buffers: they hold until the next step and through one pop or
release (the extractor uses them in its describe step, before the pop).

Importing this module does not import CuPy; creating a pool does (the kernels' module is looked up at each call,
so a test may swap in the emulated ``cupy``).
"""

from __future__ import annotations

import numpy as np

from idtfv.idt.tracking import grown_capacity, pool_capacity

__all__ = ["DeviceTrackPool", "gather_blocks", "gather_levels", "store_levels", "step_levels", "pop_levels",
           "add_levels"]


def _dev():
    """(cupy, the kernels' module), imported on use."""
    import cupy

    from idtfv.idt import _tracking_cuda

    return cupy, _tracking_cuda


def _i32(v) -> np.int32:
    return np.int32(v)


def _i64(v) -> np.int64:
    return np.int64(v)


class DeviceTrackPool:
    """Tracks of one level, on the device.

    Parameters
    ----------
    length : int
        L, steps per finished track.
    desc_dim : int
        D, per-frame descriptor width.
    nt_cells : int
        :math:`n_t`, temporal cells.
    capacity : int
        Initial number of rows (grows by 1.5x when needed, as ``TrackPool``).
    """

    def __init__(self, length: int, desc_dim: int, nt_cells: int = 3, capacity: int = 256):
        cp, _ = _dev()
        self.L = int(length)
        self.D = int(desc_dim)
        self.nt = int(nt_cells)
        self.per_cell = self.L // self.nt
        capacity = pool_capacity(capacity)
        self.pos = cp.zeros((capacity, self.L + 1, 2), cp.float32)
        self.disp = cp.zeros((capacity, self.L, 2), cp.float32)
        self.desc = cp.zeros((capacity, self.nt, self.D), cp.float32)
        self.index = cp.empty(capacity, cp.int32)
        self.index.fill(-1)
        self.birth = cp.zeros(capacity, np.int64)
        # the free-row stack (top at the end: the lowest row is taken first) and the live rows in birth order, each
        # in a device buffer of the capacity with its length kept here (the live order in two, swapped by steps)
        self._free = cp.asarray(np.arange(capacity - 1, -1, -1, dtype=np.int64))
        self._n_free = capacity
        self._live = cp.empty(capacity, np.int64)
        self._live_next = cp.empty(capacity, np.int64)
        self._n = 0
        self._births = 0
        self._n_done = 0  # finished tracks (index == L) since the last step: the step's second count
        self._scratch = None
        self._empty = (cp.zeros(0, np.int64), cp.zeros((0, 2), cp.float32))

    # ---- state
    @property
    def capacity(self) -> int:
        return int(self.index.shape[0])

    def __len__(self) -> int:
        return self._n

    def live(self):
        """Rows of live tracks, in birth order, (n,) int64 (a device view)."""
        return self._live[:self._n]

    def free_rows(self):
        """The free-row stack, top at the end, (m,) int64 (a device view)."""
        return self._free[:self._n_free]

    def current_points(self, rows=None):
        """(n, 2) float32 device array: the current point of each live track (or of ``rows``); one launch."""
        cp, k_mod = _dev()
        rows = self.live() if rows is None else cp.ascontiguousarray(cp.asarray(rows, dtype=np.int64))
        n = int(rows.shape[0])
        out = cp.empty((n, 2), cp.float32)
        k_mod.launch("current_points", n, (rows, _i32(n), self.index, self.pos, _i32(self.L + 1), out))
        return out

    def live_tracks(self) -> tuple[np.ndarray, np.ndarray]:
        """Host copies of the live tracks' points ``(n, L+1, 2)`` and steps done ``(n,)`` (birth order; for
        ``--draw``: a download)."""
        cp, _ = _dev()
        rows = self.live()
        return cp.asnumpy(self.pos[rows]), cp.asnumpy(self.index[rows])

    # ---- changes
    def _grow(self, need: int) -> None:
        cp, _ = _dev()
        old = self.capacity
        new = grown_capacity(old, need)
        for name in ("pos", "disp", "desc"):
            a = getattr(self, name)
            b = cp.zeros((new,) + tuple(a.shape[1:]), a.dtype)
            b[:old] = a
            setattr(self, name, b)
        index = cp.empty(new, cp.int32)
        index.fill(-1)
        index[:old] = self.index
        birth = cp.zeros(new, np.int64)
        birth[:old] = self.birth
        self.index, self.birth = index, birth
        free = cp.empty(new, np.int64)
        free[:new - old] = cp.asarray(np.arange(new - 1, old - 1, -1, dtype=np.int64))  # new rows at the bottom
        free[new - old:new - old + self._n_free] = self._free[:self._n_free]
        self._free, self._n_free = free, self._n_free + new - old
        for name in ("_live", "_live_next"):
            a = cp.empty(new, np.int64)
            a[:self._n] = getattr(self, name)[:self._n]
            setattr(self, name, a)
        self._scratch = None

    def add(self, points) -> None:
        """Start a track at each of ``points`` ((k, 2) float32, this level's pixels; host arrays are uploaded)."""
        cp, k_mod = _dev()
        k = len(points)
        if k == 0:
            return
        if k > self._n_free:
            self._grow(k - self._n_free)
        pts = cp.ascontiguousarray(cp.asarray(points, dtype=cp.float32))
        k_mod.launch("pool_add", k, (pts, _i32(k), self._free, _i64(self._n_free), _i64(self._births),
                                     _i32(self.L), _i32(self.nt * self.D), self.pos, self.desc, self.index,
                                     self.birth, self._live, _i64(self._n)))
        self._n_free -= k
        self._n += k
        self._births += k

    def _buffers(self):
        """Per-step scratch arrays of the capacity (reallocated when the pool grows)."""
        cp, _ = _dev()
        c = self.capacity
        if self._scratch is None:
            self._scratch = {"prev": cp.empty((c, 2), cp.float32), "prev_out": cp.empty((c, 2), cp.float32),
                             "alive": cp.empty(c, cp.int32), "done": cp.empty(c, cp.int32),
                             "counts": cp.empty(2, np.int64)}
        return self._scratch

    def step(self, flow, flow_w):
        """Move every live track by ``flow`` (device ``(h, w, 2)`` float32); drop those that leave the frame.

        Returns
        -------
        rows : (n,) int64 device array
            Surviving tracks (the new live order).
        prev_points : (n, 2) float32 device array
            Their points *before* the step (where this frame's descriptors are read). Both are views of the pool's
            buffers (see the module's docstring for how long they hold).
        """
        cp, k_mod = _dev()
        self._check_popped()
        n = self._n
        if n == 0:
            return self._empty
        b = self._buffers()
        f = cp.ascontiguousarray(cp.asarray(flow, dtype=cp.float32))
        fw = cp.ascontiguousarray(cp.asarray(flow_w, dtype=cp.float32))
        h, w = int(f.shape[0]), int(f.shape[1])
        live = self._live
        k_mod.launch("pool_step", n, (live, _i32(n), _i32(self.L), self.index, self.pos, self.disp, f, fw, _i32(h),
                                      _i32(w), b["prev"], b["alive"], b["done"]))
        csum = b["alive"][:n].cumsum(dtype=np.int64)
        dsum = b["done"][:n].cumsum(dtype=np.int64)
        k_mod.launch("compact_step", n, (live, _i32(n), b["alive"], csum, dsum, b["prev"], self._live_next,
                                         b["prev_out"], self._free, _i64(self._n_free), b["counts"]))
        m, done = (int(v) for v in cp.asnumpy(b["counts"]))  # the step's one transfer: two counts
        return self._stepped(m, done)

    def _check_popped(self) -> None:
        if self._n_done:
            raise RuntimeError(f"DeviceTrackPool.step: {self._n_done} finished tracks were not popped; call "
                               "pop_finished() or pop_validated() after each step")

    def _stepped(self, m: int, done: int):
        """The host's record of a step that kept ``m`` of the live tracks, ``done`` of them finished (the swap of
        the live-order buffers included); returns the step's rows and points before the move."""
        self._live, self._live_next = self._live_next, self._live
        self._n_free += self._n - m
        self._n = m
        self._n_done = done
        return self._live[:m], self._buffers()["prev_out"][:m]

    def store_descriptors(self, rows, blocks) -> None:
        """Add the per-frame blocks ``(n, D)`` (device) of the step just taken (``index - 1``) to the temporal cell
        sums of ``rows`` ((n,) int64 device, distinct)."""
        cp, k_mod = _dev()
        n = len(rows)
        if n == 0:
            return
        blocks = cp.ascontiguousarray(cp.asarray(blocks, dtype=cp.float32))
        k_mod.launch("add_blocks", n * self.D, (cp.ascontiguousarray(cp.asarray(rows, dtype=np.int64)), _i32(n),
                                                self.index, _i32(self.per_cell), _i32(self.nt), _i32(self.D),
                                                blocks, self.desc))

    def release(self, rows) -> None:
        """Free ``rows`` (distinct live rows, host or device) for new tracks (a count comes back)."""
        cp, k_mod = _dev()
        k = len(rows)
        if k == 0:
            return
        rows = cp.ascontiguousarray(cp.asarray(rows, dtype=np.int64))
        self.index[rows] = -1
        self._free[self._n_free:self._n_free + k] = rows[::-1]
        self._n_free += k
        n = self._n
        flags = cp.empty(n, cp.int32)
        k_mod.launch("flag_rows", n, (self._live, _i32(n), self.index, _i32(0), flags))
        k_mod.launch("compact_keep", n, (self._live, _i32(n), flags, flags.cumsum(dtype=np.int64), self._live_next))
        self._live, self._live_next = self._live_next, self._live
        self._n = n - k
        if self._n_done:  # some of the released tracks may have been finished ones
            flags = cp.empty(self._n, cp.int32)
            k_mod.launch("flag_rows", self._n, (self._live, _i32(self._n), self.index, _i32(self.L), flags))
            self._n_done = int(cp.asnumpy(flags.sum(dtype=np.int64)))

    def _pop(self):
        """Finished tracks leave the live order (device work only: their number is known from the step);
        returns their rows in live order, (k,) int64 device."""
        cp, k_mod = _dev()
        k, n = self._n_done, self._n
        flags = cp.empty(n, cp.int32)
        k_mod.launch("flag_rows", n, (self._live, _i32(n), self.index, _i32(self.L), flags))
        done_rows = cp.empty(k, np.int64)
        k_mod.launch("pop_done", n, (self._live, _i32(n), flags, flags.cumsum(dtype=np.int64), self.index,
                                     self._live_next, done_rows, self._free, _i64(self._n_free), _i64(k)))
        self._popped()
        return done_rows

    def _popped(self) -> None:
        """The host's record of a pop of the finished tracks (the swap of the live-order buffers included)."""
        self._live, self._live_next = self._live_next, self._live
        self._n -= self._n_done
        self._n_free += self._n_done
        self._n_done = 0

    def pop_finished(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Remove the tracks that reached L steps (``TrackPool.pop_finished``: every finished track comes back).

        Returns
        -------
        pos (k, L+1, 2), disp (k, L, 2), desc (k, n_t, D)
            Host arrays, in live (birth) order; ``desc`` holds the temporal-cell *means* of the per-frame blocks.
        """
        cp, _ = _dev()
        if not self._n_done:
            return (np.zeros((0, self.L + 1, 2), np.float32), np.zeros((0, self.L, 2), np.float32),
                    np.zeros((0, self.nt, self.D), np.float32))
        rows = self._pop()
        return (cp.asnumpy(self.pos[rows]), cp.asnumpy(self.disp[rows]),
                cp.asnumpy(self.desc[rows] / np.float32(self.per_cell)))

    def pop_validated(self, scale: float, *, min_var: float, max_var: float, max_dis: float, max_dis_ratio: float,
                      min_camera_disp: float, camera: bool):
        """Remove the tracks that reached L steps, prune them on the device (LEAR's static / erratic / camera
        tests, :func:`idtfv.idt._tracking_nb.validate_tracks`' arithmetic) and download only the kept ones.

        Parameters
        ----------
        scale : float
            The level's factor to original-frame pixels.
        min_var, max_var, max_dis, max_dis_ratio, min_camera_disp, camera
            The pruning's thresholds (:class:`idtfv.idt.IDTParams`).

        Returns
        -------
        None when no track was kept, else host arrays in live (birth) order:
        meta (m, 6) float32
            ``mean_x, mean_y, std_x, std_y, length, scale``.
        traj (m, 2L) float32
            The compensated steps divided by their summed magnitude.
        desc (m, n_t, D) float32
            The temporal-cell means.
        """
        cp, k_mod = _dev()
        if not self._n_done:
            return None
        rows = self._pop()
        k, L, ntd = len(rows), self.L, self.nt * self.D
        meta = cp.empty((k, 6), cp.float32)
        traj = cp.empty((k, 2 * L), cp.float32)
        keep = cp.empty(k, cp.int32)
        k_mod.launch("validate_rows", k, (rows, _i32(k), self.pos, self.disp, _i32(L), np.float64(scale),
                                          np.float64(min_var), np.float64(max_var), np.float64(max_dis),
                                          np.float64(max_dis_ratio), np.float64(min_camera_disp), _i32(bool(camera)),
                                          meta, traj, keep))
        csum = keep.cumsum(dtype=np.int64)
        m = int(cp.asnumpy(csum[k - 1:])[0])  # the number kept (8 bytes)
        if m == 0:
            return None
        out = cp.empty((k, 6 + 2 * L + ntd), cp.float32)
        k_mod.launch("pack_rows", k, (rows, _i32(k), keep, csum, meta, traj, self.desc, _i32(L), _i32(ntd),
                                      np.float32(self.per_cell), out))
        packed = cp.asnumpy(out[:m])  # the kept rows, one transfer
        return _unpacked(packed, L, self.nt, self.D)


def _unpacked(packed: np.ndarray, L: int, nt: int, D: int):
    """``(meta, traj, desc)`` of packed kept rows ``(m, 6 + 2L + nt D)`` (``pack_rows``' layout)."""
    m = len(packed)
    return (np.ascontiguousarray(packed[:, :6]), np.ascontiguousarray(packed[:, 6:6 + 2 * L]),
            np.ascontiguousarray(packed[:, 6 + 2 * L:]).reshape(m, nt, D))


def gather_blocks(hists, points, *, layout):
    """Every point's per-frame blocks (HOG | HOF | MBHx | MBHy side by side) from one frame's device histograms,
    left on the device: :func:`idtfv.idt.descriptors.cell_descriptor_rows` with ``device="cuda"`` without the
    points' upload and the blocks' download (the same kernels, so bit-identical).

    Parameters
    ----------
    hists : FrameHistograms of CuPy arrays
        ``frame_histograms(..., device="cuda")`` of this level.
    points : (n, 2) float32 device array
        ``[x, y]`` at this level (finite: the pool's points).
    layout : DescriptorLayout
        The layout the histograms were built with.

    Returns
    -------
    (n, D) float32 device array
    """
    from idtfv.idt import _histograms_cuda

    return _histograms_cuda.gather_blocks([hists.hog, hists.hof, hists.mbhx, hists.mbhy], points,
                                          patch=layout.patch, nx_cells=layout.nx_cells, ny_cells=layout.ny_cells,
                                          epsilon=float(layout.epsilon))


def gather_levels(hists, points, *, layout):
    """:func:`gather_blocks` of every level in one launch: each level's points' blocks from
    :func:`idtfv.idt.descriptors.level_histograms`, left on the device (bit-identical to :func:`gather_blocks`).

    Parameters
    ----------
    hists : idtfv.idt._histograms_cuda.LevelHistograms
        The levels' device histograms.
    points : sequence of (n_k, 2) float32 device arrays
        Level k's points ``[x, y]`` in its pixels (finite: the pools' points; ``n_k`` may be 0).
    layout : DescriptorLayout
        The layout the histograms were built with.

    Returns
    -------
    (sum_k n_k, D) float32 device array
        Level k's blocks in its rows, after the levels before it (:func:`store_levels` takes them so).
    """
    from idtfv.idt import _histograms_cuda

    return _histograms_cuda.gather_levels(hists, points, patch=layout.patch, nx_cells=layout.nx_cells,
                                          ny_cells=layout.ny_cells, epsilon=float(layout.epsilon))


def store_levels(pools, rows, blocks) -> None:
    """:meth:`DeviceTrackPool.store_descriptors` of several pools (the levels) in one launch per 8 pools.

    Parameters
    ----------
    pools : sequence of DeviceTrackPool
        With the same ``length``, ``desc_dim`` and ``nt_cells``.
    rows : sequence of (n_k, ) int64 device arrays
        Each pool's rows of the step just taken (distinct; ``n_k`` may be 0).
    blocks : (sum_k n_k, D) float32 device array
        Pool k's blocks in its rows, after the pools before it (:func:`gather_levels`).
    """
    cp, k_mod = _dev()
    if len(pools) != len(rows):
        raise ValueError(f"store_levels: expected the rows of the {len(pools)} pools, got {len(rows)}")
    counts = [int(len(r)) for r in rows]
    if len(blocks) != sum(counts):
        raise ValueError(f"store_levels: expected {sum(counts)} blocks (the pools' rows), got {len(blocks)}")
    if not pools or not sum(counts):
        return
    p0 = pools[0]
    if any((p.L, p.D, p.nt) != (p0.L, p0.D, p0.nt) for p in pools):
        raise ValueError("store_levels: the pools must have the same length, desc_dim and nt_cells")
    blocks = cp.ascontiguousarray(cp.asarray(blocks, dtype=cp.float32))
    rows = [cp.ascontiguousarray(cp.asarray(r, dtype=np.int64)) for r in rows]
    first = 0
    for a in range(0, len(pools), 8):
        run = range(a, min(a + 8, len(pools)))
        n = sum(counts[k] for k in run)
        k_mod.launch("add_blocks_levels", n * p0.D, (
            _i32(len(run)), *_padded([rows[k] for k in run], rows[a]),
            *_padded([_i32(counts[k]) for k in run], _i32(0)), *_padded([pools[k].index for k in run], pools[a].index),
            *_padded([pools[k].desc for k in run], pools[a].desc), _i32(p0.per_cell), _i32(p0.nt), _i32(p0.D),
            blocks[first:]))
        first += n


def step_levels(pools, flows, flows_w):
    """:meth:`DeviceTrackPool.step` of several pools (the levels, each with its own flows) in two launches per 8
    pools, one prefix sum of each flag over all of them and one download of every pool's two counts.

    Parameters
    ----------
    pools : sequence of DeviceTrackPool
        With the same ``length``; each popped since its last step.
    flows, flows_w : sequences of (h_k, w_k, 2) float32 device arrays
        Each pool's median-filtered and camera-compensated flow.

    Returns
    -------
    list of (rows, prev_points)
        Each pool's :meth:`~DeviceTrackPool.step` result (views of its buffers), bit for bit.
    """
    cp, k_mod = _dev()
    if not len(pools) == len(flows) == len(flows_w):
        raise ValueError(f"step_levels: expected one flow and one compensated flow per pool, got {len(pools)} pools, "
                         f"{len(flows)} flows and {len(flows_w)} compensated flows")
    for pool in pools:
        pool._check_popped()
    out = [pool._empty for pool in pools]
    active = [k for k, pool in enumerate(pools) if pool._n]
    if not active:
        return out
    L = pools[active[0]].L
    if any(pools[k].L != L for k in active):
        raise ValueError("step_levels: the pools must have the same length")
    act = [pools[k] for k in active]
    fs = [cp.ascontiguousarray(cp.asarray(flows[k], dtype=cp.float32)) for k in active]
    fws = [cp.ascontiguousarray(cp.asarray(flows_w[k], dtype=cp.float32)) for k in active]
    counts = [pool._n for pool in act]
    total = sum(counts)
    prev = cp.empty((total, 2), cp.float32)
    alive = cp.empty(total, cp.int32)
    done = cp.empty(total, cp.int32)
    runs = [range(a, min(a + 8, len(act))) for a in range(0, len(act), 8)]

    first = 0
    for run in runs:
        ps = [act[k] for k in run]
        n = sum(counts[k] for k in run)
        k_mod.launch("pool_step_levels", n, (
            _i32(len(ps)), _i64(first), _i32(L), *_padded([_i32(p._n) for p in ps], _i32(0)),
            *_padded([p._live for p in ps], ps[0]._live), *_padded([p.index for p in ps], ps[0].index),
            *_padded([p.pos for p in ps], ps[0].pos), *_padded([p.disp for p in ps], ps[0].disp),
            *_padded([fs[k] for k in run], fs[run[0]]), *_padded([fws[k] for k in run], fws[run[0]]),
            *_padded([_i32(fs[k].shape[0]) for k in run], _i32(0)),
            *_padded([_i32(fs[k].shape[1]) for k in run], _i32(0)), prev, alive, done))
        first += n
    csum = alive.cumsum(dtype=np.int64)  # one prefix sum of each flag over every pool
    dsum = done.cumsum(dtype=np.int64)
    res = cp.empty(2 * len(act), np.int64)
    first = 0
    for run in runs:
        ps = [act[k] for k in run]
        n = sum(counts[k] for k in run)
        k_mod.launch("compact_step_levels", n, (
            _i32(len(ps)), _i64(first), *_padded([_i32(p._n) for p in ps], _i32(0)),
            *_padded([p._live for p in ps], ps[0]._live), *_padded([p._live_next for p in ps], ps[0]._live_next),
            *_padded([p._buffers()["prev_out"] for p in ps], ps[0]._buffers()["prev_out"]),
            *_padded([p._free for p in ps], ps[0]._free), *_padded([_i64(p._n_free) for p in ps], _i64(0)),
            alive, csum, dsum, prev, res[2 * run[0]:]))
        first += n
    both = cp.asnumpy(res)  # the steps' one transfer: two counts per pool
    for j, (k, pool) in enumerate(zip(active, act)):
        out[k] = pool._stepped(int(both[2 * j]), int(both[2 * j + 1]))
    return out


def _padded(items, filler):
    """``items`` and ``filler`` up to 8: the level kernels' 8 arguments of a kind."""
    return list(items) + [filler] * (8 - len(items))


def _kept_counts(csum, finished) -> list[int]:
    """Each pool's number of kept tracks, from ``csum`` (the kept flags' prefix sum over the pools' finished tracks,
    ``finished[j]`` of pool j after the pools before it): one download of ``8 sum(finished)`` bytes."""
    cp, _ = _dev()
    c = np.concatenate([[0], cp.asnumpy(csum)])
    ends = np.cumsum(finished)
    return [int(c[e] - c[e - k]) for e, k in zip(ends, finished)]


def pop_levels(pools, scales, *, min_var: float, max_var: float, max_dis: float, max_dis_ratio: float,
               min_camera_disp: float, camera: bool):
    """:meth:`DeviceTrackPool.pop_validated` of several pools (the levels) in four launches per 8 pools, one prefix
    sum of the finished flags and one of the kept flags over all of them, and two downloads in all: every pool's
    kept count, then every pool's kept rows.

    Parameters
    ----------
    pools : sequence of DeviceTrackPool
        With the same ``length``, ``desc_dim`` and ``nt_cells``.
    scales : sequence of float
        Each pool's factor to original-frame pixels.
    min_var, max_var, max_dis, max_dis_ratio, min_camera_disp, camera
        The pruning's thresholds (:class:`idtfv.idt.IDTParams`).

    Returns
    -------
    list
        Each pool's :meth:`~DeviceTrackPool.pop_validated` result (None, or host ``meta, traj, desc`` of its kept
        tracks in live order), bit for bit.
    """
    cp, k_mod = _dev()
    if len(pools) != len(scales):
        raise ValueError(f"pop_levels: expected one scale per pool, got {len(pools)} pools and {len(scales)} scales")
    out = [None] * len(pools)
    active = [j for j, pool in enumerate(pools) if pool._n_done]
    if not active:
        return out
    act = [pools[j] for j in active]
    p0 = act[0]
    if any((p.L, p.D, p.nt) != (p0.L, p0.D, p0.nt) for p in act):
        raise ValueError("pop_levels: the pools must have the same length, desc_dim and nt_cells")
    L, ntd = p0.L, p0.nt * p0.D
    ns = [p._n for p in act]
    ks = [p._n_done for p in act]
    runs = [range(a, min(a + 8, len(act))) for a in range(0, len(act), 8)]
    flags = cp.empty(sum(ns), cp.int32)
    first = 0
    for run in runs:
        ps = [act[j] for j in run]
        k_mod.launch("flag_rows_levels", sum(ns[j] for j in run), (
            _i32(len(ps)), _i64(first), *_padded([_i32(p._n) for p in ps], _i32(0)),
            *_padded([p._live for p in ps], ps[0]._live), *_padded([p.index for p in ps], ps[0].index), _i32(L),
            flags))
        first += sum(ns[j] for j in run)
    dsum = flags.cumsum(dtype=np.int64)  # one prefix sum over every pool's live tracks
    done_rows = cp.empty(sum(ks), np.int64)
    first = done_first = 0
    for run in runs:
        ps = [act[j] for j in run]
        k_mod.launch("pop_done_levels", sum(ns[j] for j in run), (
            _i32(len(ps)), _i64(first), _i64(done_first), *_padded([_i32(p._n) for p in ps], _i32(0)),
            *_padded([p._live for p in ps], ps[0]._live), *_padded([p.index for p in ps], ps[0].index),
            *_padded([p._live_next for p in ps], ps[0]._live_next), *_padded([p._free for p in ps], ps[0]._free),
            *_padded([_i64(p._n_free) for p in ps], _i64(0)), *_padded([_i64(p._n_done) for p in ps], _i64(0)),
            flags, dsum, done_rows))
        first += sum(ns[j] for j in run)
        done_first += sum(ks[j] for j in run)
    for p in act:
        p._popped()
    total = sum(ks)
    meta = cp.empty((total, 6), cp.float32)
    traj = cp.empty((total, 2 * L), cp.float32)
    keep = cp.empty(total, cp.int32)
    first = 0
    for run in runs:
        ps = [act[j] for j in run]
        k_mod.launch("validate_rows_levels", sum(ks[j] for j in run), (
            _i32(len(ps)), _i64(first), *_padded([_i32(ks[j]) for j in run], _i32(0)),
            *_padded([p.pos for p in ps], ps[0].pos), *_padded([p.disp for p in ps], ps[0].disp),
            *_padded([np.float64(scales[active[j]]) for j in run], np.float64(0.0)), done_rows, _i32(L),
            np.float64(min_var), np.float64(max_var), np.float64(max_dis), np.float64(max_dis_ratio),
            np.float64(min_camera_disp), _i32(bool(camera)), meta, traj, keep))
        first += sum(ks[j] for j in run)
    csum = keep.cumsum(dtype=np.int64)
    kept = _kept_counts(csum, ks)
    if not sum(kept):
        return out
    packed = cp.empty((total, 6 + 2 * L + ntd), cp.float32)
    first = 0
    for run in runs:
        ps = [act[j] for j in run]
        k_mod.launch("pack_rows_levels", sum(ks[j] for j in run), (
            _i32(len(ps)), _i64(first), *_padded([_i32(ks[j]) for j in run], _i32(0)),
            *_padded([p.desc for p in ps], ps[0].desc), done_rows, keep, csum, meta, traj, _i32(L), _i32(ntd),
            np.float32(p0.per_cell), packed))
        first += sum(ks[j] for j in run)
    rows = cp.asnumpy(packed[:sum(kept)])  # every pool's kept rows, one transfer
    start = 0
    for j, m in zip(active, kept):
        if m:
            out[j] = _unpacked(rows[start:start + m], L, p0.nt, p0.D)
        start += m
    return out


def add_levels(pools, points) -> None:
    """:meth:`DeviceTrackPool.add` of several pools (the levels) in one upload of all the new points and one launch
    per 8 pools with new points.

    Parameters
    ----------
    pools : sequence of DeviceTrackPool
        With the same ``length``, ``desc_dim`` and ``nt_cells``.
    points : sequence of (k_j, 2) float32 host arrays
        Each pool's new points (its level's pixels; ``k_j`` may be 0), e.g. the dense sampling's.
    """
    cp, k_mod = _dev()
    if len(pools) != len(points):
        raise ValueError(f"add_levels: expected the new points of the {len(pools)} pools, got {len(points)}")
    ks = [int(len(p)) for p in points]
    active = [j for j, k in enumerate(ks) if k]
    if not active:
        return
    p0 = pools[active[0]]
    if any((pools[j].L, pools[j].D, pools[j].nt) != (p0.L, p0.D, p0.nt) for j in active):
        raise ValueError("add_levels: the pools must have the same length, desc_dim and nt_cells")
    for j in active:
        if ks[j] > pools[j]._n_free:
            pools[j]._grow(ks[j] - pools[j]._n_free)
    pts = cp.asarray(np.ascontiguousarray(np.concatenate(
        [np.asarray(points[j], np.float32).reshape(-1, 2) for j in active])))  # one upload
    first = 0
    for a in range(0, len(active), 8):
        run = [pools[j] for j in active[a:a + 8]]
        n = sum(ks[j] for j in active[a:a + 8])
        k_mod.launch("pool_add_levels", n, (
            _i32(len(run)), _i32(p0.L), _i32(p0.nt * p0.D), pts[first:],
            *_padded([_i32(ks[j]) for j in active[a:a + 8]], _i32(0)), *_padded([p._free for p in run], run[0]._free),
            *_padded([_i64(p._n_free) for p in run], _i64(0)), *_padded([_i64(p._births) for p in run], _i64(0)),
            *_padded([p.pos for p in run], run[0].pos), *_padded([p.desc for p in run], run[0].desc),
            *_padded([p.index for p in run], run[0].index), *_padded([p.birth for p in run], run[0].birth),
            *_padded([p._live for p in run], run[0]._live), *_padded([_i64(p._n) for p in run], _i64(0))))
        first += n
    for j in active:
        pool, k = pools[j], ks[j]
        pool._n_free -= k
        pool._n += k
        pool._births += k
