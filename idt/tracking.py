r"""Live tracks of one pyramid level: a fixed-capacity pool (no per-frame compaction) that grows when full.

Per track (pool row) the pool keeps its points at this level ``pos (L+1, 2)``, its camera-compensated steps
``disp (L, 2)``, the running sums of its per-frame descriptor blocks over each temporal cell ``desc (n_t, D)``
(HOG | HOF | MBHx | MBHy concatenated, D = 132 by default; the block of step :math:`i` goes to cell
:math:`\lfloor i / (L // n_t) \rfloor`, steps beyond :math:`n_t (L // n_t)` are dropped, as
:func:`idtfv.idt.descriptors.temporal_pool` does), the number of steps done ``index`` (-1 marks a free row) and a birth
number that orders the output as the reference does (older tracks first). Summing as the track goes instead of
keeping the L blocks divides the pool's memory by about L / n_t = 5.
"""

from __future__ import annotations

import numpy as np

from idtfv.idt import _tracking_nb as _nb

__all__ = ["TrackPool", "grown_capacity", "pool_capacity"]


def pool_capacity(capacity: int) -> int:
    """Rows a new pool starts with for a requested ``capacity`` (at least 16); :class:`TrackPool` and its device
    twin share it, so both take the same rows."""
    return max(16, int(capacity))


def grown_capacity(old: int, need: int) -> int:
    """Rows after growing a pool of ``old`` rows that lacks ``need`` free ones (1.5x, or enough); shared with the
    device twin for the same reason."""
    return max(int(old * 1.5) + 1, old + need)


class TrackPool:
    """Tracks of one level.

    Parameters
    ----------
    length : int
        L, steps per finished track.
    desc_dim : int
        D, per-frame descriptor width.
    nt_cells : int
        :math:`n_t`, temporal cells.
    capacity : int
        Initial number of rows (grows by 1.5x when needed).
    """

    def __init__(self, length: int, desc_dim: int, nt_cells: int = 3, capacity: int = 256):
        self.L = int(length)
        self.D = int(desc_dim)
        self.nt = int(nt_cells)
        self.per_cell = self.L // self.nt
        capacity = pool_capacity(capacity)
        self.pos = np.zeros((capacity, self.L + 1, 2), np.float32)
        self.disp = np.zeros((capacity, self.L, 2), np.float32)
        self.desc = np.zeros((capacity, self.nt, self.D), np.float32)
        self.index = np.full(capacity, -1, np.int32)
        self.birth = np.zeros(capacity, np.int64)
        # free rows as a stack whose top is the end (the lowest row is taken first), and the live rows in birth
        # order: new tracks are born last, so the order only ever loses rows or gains them at the end (no sort)
        self._free = np.arange(capacity - 1, -1, -1, dtype=np.int64)
        self._live = np.zeros(0, np.int64)
        self._live.flags.writeable = False  # as every later value (the kernels then see one array type)
        self._births = 0
        self._none = tuple(np.zeros(shape, np.float32) for shape in ((0, self.L + 1, 2), (0, self.L, 2),
                                                                       (0, self.nt, self.D)))
        for a in self._none:
            a.flags.writeable = False

    @property
    def capacity(self) -> int:
        return self.index.shape[0]

    def live(self) -> np.ndarray:
        """Rows of live tracks, in birth order, (n,) int64 (a read-only view: copy it to modify it)."""
        return self._live

    def __len__(self) -> int:
        return len(self._live)

    def current_points(self, rows: np.ndarray | None = None) -> np.ndarray:
        """(n, 2) float32 current point of each live track (or of ``rows``)."""
        rows = self._live if rows is None else rows
        return self.pos[rows, self.index[rows]]

    def _grow(self, need: int) -> None:
        old = self.capacity
        new = grown_capacity(old, need)
        for name in ("pos", "disp", "desc"):
            a = getattr(self, name)
            b = np.zeros((new,) + a.shape[1:], a.dtype)
            b[:old] = a
            setattr(self, name, b)
        index = np.full(new, -1, np.int32)
        index[:old] = self.index
        birth = np.zeros(new, np.int64)
        birth[:old] = self.birth
        self.index, self.birth = index, birth
        self._free = np.concatenate([np.arange(new - 1, old - 1, -1, dtype=np.int64), self._free])

    def add(self, points: np.ndarray) -> None:
        """Start a track at each of ``points`` ((k, 2) float32, this level's pixels)."""
        k = len(points)
        if k == 0:
            return
        if k > len(self._free):
            self._grow(k - len(self._free))
        points = np.asarray(points, np.float32)
        rows = np.empty(k, np.int64)  # the top k of the stack, top first
        _nb.start_tracks(self._free, len(self._free), points.reshape(k, 2), self._births, self.pos, self.desc,
                         self.index, self.birth, rows)
        self._free = self._free[:len(self._free) - k]
        self._births += k
        self._live = np.concatenate([self._live, rows])
        self._live.flags.writeable = False

    def release(self, rows: np.ndarray) -> None:
        """Free ``rows`` (live rows) for new tracks."""
        rows = np.asarray(rows, np.int64)
        if len(rows) == 0:
            return
        self.index[rows] = -1
        self._free = np.concatenate([self._free, rows[::-1]])
        self._live = self._live[self.index[self._live] >= 0]
        self._live.flags.writeable = False

    def step(self, flow: np.ndarray, flow_w: np.ndarray, *, device: str = "cpu") -> tuple[np.ndarray, np.ndarray]:
        """Move every live track by ``flow``; drop those that leave the frame (``device="cuda"``: the step's
        kernel runs on the GPU, :mod:`idtfv.idt._tracking_cuda`, bit-identical; the pool stays on the host).

        Returns
        -------
        rows : (n,) int64
            Surviving tracks.
        prev_points : (n, 2) float32
            Their points *before* the step (where this frame's descriptors are read).
        """
        rows = self._live
        n = len(rows)
        if n == 0:
            return rows, np.zeros((0, 2), np.float32)
        if device == "cuda":
            return self._step_on_device(rows, flow, flow_w)
        prev = np.empty((n, 2), np.float32)
        kept = np.empty(n, np.int64)
        dead = np.empty(n, np.int64)
        n_kept, n_dead = _nb.step_tracks(rows, self.index, self.pos, self.disp, flow, flow_w, prev, kept, dead)
        if n_dead == 0:
            return rows, prev
        self._free = np.concatenate([self._free, dead[n_dead - 1::-1]])
        self._live = kept[:n_kept]
        self._live.flags.writeable = False
        return self._live, prev[:n_kept]

    def _step_on_device(self, rows, flow, flow_w):
        from idtfv.idt import _tracking_cuda

        prev = self.pos[rows, self.index[rows]]
        alive = np.empty(len(rows), np.bool_)
        _tracking_cuda.track_step(rows, self.index, self.pos, self.disp, flow, flow_w, alive)
        if alive.all():
            return rows, prev
        dead = rows[~alive]
        self.index[dead] = -1
        self._free = np.concatenate([self._free, dead[::-1]])
        self._live = rows[alive]
        self._live.flags.writeable = False
        return self._live, prev[alive]

    def store_descriptors(self, rows: np.ndarray, blocks: np.ndarray) -> None:
        """Add the per-frame blocks ``(n, D)`` of the step just taken (``index - 1``) to its temporal cell's sum."""
        if len(rows):
            _nb.add_blocks(self.desc, self.index, np.ascontiguousarray(rows, np.int64), self.per_cell,
                           np.ascontiguousarray(blocks, np.float32))

    def pop_finished_rows(self) -> np.ndarray:
        """Remove the tracks that reached L steps and return their rows ``(k,) int64`` (in birth order).

        The rows are free again, but their ``pos``, ``disp`` and ``desc`` stay as they were until the next
        :meth:`add` (the extractor makes its output rows from them in place: ``_tracking_nb.pool_rows``).
        """
        live = self._live
        if len(live) == 0:
            return live
        done = np.empty(len(live), np.int64)
        rest = np.empty(len(live), np.int64)
        n_done, n_rest = _nb.split_finished(live, self.index, self.L, done, rest)
        if n_done == 0:
            return done[:0]
        self._free = np.concatenate([self._free, done[n_done - 1::-1]])
        self._live = rest[:n_rest]
        self._live.flags.writeable = False
        return done[:n_done]

    def pop_finished(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Remove the tracks that reached L steps.

        Returns
        -------
        pos (k, L+1, 2), disp (k, L, 2), desc (k, n_t, D)
            Copies; ``desc`` holds the temporal-cell *means* of the per-frame blocks.
        """
        rows = self.pop_finished_rows()
        if len(rows) == 0:
            return self._none
        return self.pos[rows], self.disp[rows], self.desc[rows] / np.float32(self.per_cell)
