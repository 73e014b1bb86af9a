"""Fisher vectors of many temporal windows of one video from prefix sums of per-bin statistics.

A Fisher vector (``fisher.py``) is a normalised function of per-component sums over the descriptors. Before the
normalisation it is **linear** in the sums

    U_k = sum_i q_ik (x_i - mu_k) / sigma_k,        V_k = sum_i q_ik [((x_i - mu_k) / sigma_k)^2 - 1],
    n   = number of descriptors,

namely ``u_k = U_k / (n sqrt(pi_k))``, ``v_k = V_k / (n sqrt(2 pi_k))``, then the signed square root and the L2
normalisation. So the vectors of many overlapping windows need the posteriors of every descriptor only once:

1. every trajectory falls in one time bin (rule below); the GMM posteriors of each descriptor are computed once
   and the sums U, V, n are accumulated per bin (and per spatial pyramid cell), in float64;
2. prefix sums over the bins: P[b] = sum of bins 0..b-1 (so ``P[0] = 0``);
3. a window of bins [a, b) gets ``U = P_U[b] - P_U[a]`` (same for V, n), then the formula above and the
   normalisation: O(2KD) per window, whatever its length.

Time rule: a trajectory belongs to the frame where it **ends** (meta column 0, ``frame_num``, 0-based), and to the
bin ``frame_num // bin_frames``. A window of bins [a, b) therefore holds exactly the trajectories ending in frames
``[a * bin_frames, b * bin_frames)`` (each of which spans its last L + 1 frames, L = the track length).

Pyramids: spatial cells (``nx x ny``) do not depend on the window (the trajectory's normalised ``x_pos, y_pos``);
a grid with ``nt > 1`` temporal cells splits the window's bins into ``nt`` parts, part ``it`` being bins
``[a + it (b - a) // nt, a + (it + 1) (b - a) // nt)`` (the video's ``t_pos`` is not used). Cells are numbered as
in :mod:`idtfv.encoding.pyramid`, so a window's vector has the layout of :func:`idtfv.encoding.stage.encode_arrays`
and a linear SVM trained on whole clips applies to it.

The posteriors are those of :func:`idtfv.encoding.fisher.fisher_vectors_cells` (the same screened Numba kernel,
the same float64 algebra); tests compare every window with ``fisher_vectors_cells`` run on the window's own
trajectories.

Memory per channel: ``(n_bins + 1) x S x 2KD`` float64 prefix sums (S = spatial cells of the pyramid, 1 for
``1x1x1``), which grow with the video; the per-bin sufficient statistics are held only for the bins still being
added to (:class:`_BinSums`: the descriptors come in time order), not for every bin (they were: ~0.7 MB per bin and
slot at K = 256, D = 54, three times the prefix sums). :func:`score_windows` takes one channel and one segment of
:data:`SEGMENT_BINS` window starts at a time, so the prefix sums it holds are those of a segment and of the bins its
windows reach, whatever the video's length.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from idtfv.errors import FormatError, ParameterError

from . import _posterior_nb as _nb
from ._gaussians import (EXACT_WINDOW, LOG_POSTERIOR_CLAMP, SCREEN_MARGIN_ABS, SCREEN_MARGIN_REL, iter_screens)
from .fisher import NORM_FLOOR, SMALL_POSTERIOR, _as_prepared, _check_descriptors, normalize_fisher
from .pyramid import POSITION_COLUMNS, n_cells, parse_pyramid
from .sampling import channel_descriptors

__all__ = ["TemporalFisher", "time_bins", "score_windows", "encode_windows", "WINDOW_BLOCK", "SEGMENT_BINS"]

#: Windows formed at once (bounds the temporary (block, cells, 2KD) arrays).
WINDOW_BLOCK = 256
#: :func:`score_windows` takes the windows starting in one run of this many bins at a time, with the prefix sums of
#: those bins and of the bins their windows reach past them: a long video's windows never need every bin's.
SEGMENT_BINS = 1024


def time_bins(meta, bin_frames: int) -> np.ndarray:
    """Time bin of every trajectory: ``frame_num // bin_frames`` (frame where it ends, meta column 0).

    Parameters
    ----------
    meta : (N, 10) extractor meta array.
    bin_frames : frames per bin (>= 1).

    Returns
    -------
    (N,) int64 bin ids (>= 0).
    """
    if not isinstance(bin_frames, (int, np.integer)) or bin_frames < 1:
        raise ParameterError(f"bin_frames must be a positive integer, got {bin_frames!r}")
    meta = np.asarray(meta)
    if meta.ndim != 2 or meta.shape[1] < 1:
        raise ParameterError(f"meta must be (N, 10), got shape {meta.shape}")
    frames = np.floor(meta[:, 0].astype(np.float64)).astype(np.int64)
    if frames.size and frames.min() < 0:
        raise ParameterError(f"meta frame_num must be >= 0, got {int(frames.min())}")
    return frames // int(bin_frames)


def _spatial_slots(positions, grids) -> tuple[np.ndarray, int]:
    """(N, G) slot ids (spatial cells of every grid, numbered one grid after the other) and the slot count S."""
    P = np.asarray(positions, np.float64)
    out = np.empty((P.shape[0], len(grids)), np.int64)
    offset = 0
    for g, (nx, ny, _nt) in enumerate(grids):
        ix = np.clip(np.floor(P[:, 0] * nx), 0, nx - 1).astype(np.int64)
        iy = np.clip(np.floor(P[:, 1] * ny), 0, ny - 1).astype(np.int64)
        out[:, g] = offset + iy * nx + ix
        offset += nx * ny
    return out, offset


class _BinSums:
    """The Fisher sufficient statistics of the cells (bin x spatial slot) not yet complete, in buffers that slide
    along the cells: complete cells are turned into their U, V rows of the prefix body and leave the buffers.

    The descriptors come in time order, so only the cells from the current block's first bin on are still being
    added to; holding those alone (instead of every cell's float64 sums and float32 block sums, ~0.7 MB per cell at
    K = 256, D = 54) leaves the prefix sums as the memory that grows with the video. Every value goes through the
    same additions in the same order as with whole arrays, and a row's U, V are elementwise in its sums: the same
    bits.
    """

    def __init__(self, body, counts, g, width: int):
        self.body, self.counts, self.g, self.width = body, counts, g, width
        self.K = g.means.shape[0]
        self.base = 0  # the cell of the buffers' first row
        self._alloc(64)

    def _alloc(self, cap: int, keep: int = 0) -> None:
        """Buffers of ``cap`` rows, the first ``keep`` rows of the old ones copied."""
        K, P = self.K, self.width
        S0, S12, cnt = np.zeros((cap, K), np.float64), np.zeros((cap, K, P), np.float64), np.zeros(cap, np.float64)
        if keep:
            S0[:keep], S12[:keep], cnt[:keep] = self.S0[:keep], self.S12[:keep], self.cnt[:keep]
        self.S0, self.S12, self.cnt = S0, S12, cnt
        self.T12 = np.empty((cap, K, P), np.float32)

    def sums(self, lo: int, hi: int):
        """Views of cells ``[lo, hi)`` (``lo >= base``): float64 S0 (n, K), S12 (n, K, P), float32 block sums T12,
        counts (n,)."""
        a, b = lo - self.base, hi - self.base
        if b > self.S0.shape[0]:  # a block spanning more cells than the buffers hold (sparse bins)
            self._alloc(max(b, 2 * self.S0.shape[0]), keep=self.S0.shape[0])
        return self.S0[a:b], self.S12[a:b], self.T12[a:b], self.cnt[a:b]

    def finish_below(self, cell: int) -> None:
        """Cells ``[base, cell)`` are complete: their U, V rows (``fisher_vectors_cells``' algebra) and counts go
        to the prefix body, and the buffers slide to start at ``cell``."""
        m = min(cell, self.base + self.S0.shape[0]) - self.base
        if m <= 0:
            if cell > self.base:  # cells past the buffers got nothing: they stay zero
                self.base = cell
            return
        g = self.g
        D = g.means.shape[1]
        mu = g.means.astype(np.float64)
        isd = g.sqrt_inv_var.astype(np.float64)
        s0 = self.S0[:m, :, None]
        S1, S2 = self.S12[:m, :, :D], self.S12[:m, :, D:2 * D]
        c1 = S1 - mu * s0
        rows = self.body[self.base:self.base + m]
        rows[:, 0] = c1 * isd
        rows[:, 1] = ((S2 - mu * S1) - mu * c1) * (isd * isd) - s0
        self.counts[self.base:self.base + m] = self.cnt[:m]
        rest = self.S0.shape[0] - m  # slide: the incomplete cells to the front, zeros behind them
        for buf in (self.S0, self.S12, self.cnt):
            buf[:rest] = buf[m:]
            buf[rest:] = 0.0
        self.base = cell


class TemporalFisher:
    """Prefix sums over time bins of one channel's Fisher statistics; Fisher vectors of any window of bins.

    Parameters
    ----------
    X : (N, D) descriptors, already projected (PCA) to the GMM's dimension D.
    gmm : a fitted :class:`idtfv.encoding.gmm.DiagGMM`, a ``PreparedGMM`` or ``(means, variances, weights)``.
    bins : (N,) int time bin of every descriptor (:func:`time_bins`); rows with a bin outside [0, n_bins) are
        left out.
    n_bins : number of bins B.
    pyramid : grids ``"NXxNYxNT,..."`` (default ``"1x1x1"``).
    positions : (N, 2) or (N, 3) normalised ``x_pos, y_pos[, t_pos]``; needed when a grid has nx or ny > 1.
    fast, clamp : as :func:`idtfv.encoding.fisher.fisher_vectors_cells`.

    Attributes
    ----------
    prefix_ : (B + 1, S, 2, K, D) float64, prefix sums of U (index 0) and V (index 1) per spatial slot.
    counts_ : (B + 1, S) float64, prefix sums of the descriptor counts.
    grids_ : the parsed pyramid; ``n_cells_`` its cell count C; ``dim_`` = 2KD per cell.
    """

    def __init__(self, X, gmm, bins, n_bins: int, *, pyramid="1x1x1", positions=None, fast: bool = False,
                 clamp: float = LOG_POSTERIOR_CLAMP):
        g = _as_prepared(gmm)
        K, D = g.means.shape
        X = _check_descriptors(X, D)
        N = X.shape[0]
        if not isinstance(n_bins, (int, np.integer)) or n_bins < 1:
            raise ParameterError(f"n_bins must be a positive integer, got {n_bins!r}")
        bins = np.asarray(bins, np.int64).reshape(-1)
        if bins.shape[0] != N:
            raise ParameterError(f"bins: expected {N} entries (one per descriptor), got {bins.shape[0]}")
        grids = parse_pyramid(pyramid)
        if positions is None:
            if any(nx > 1 or ny > 1 for nx, ny, _ in grids):
                raise ParameterError(f"pyramid {pyramid!r} has spatial cells: pass positions (x_pos, y_pos)")
            positions = np.zeros((N, 2))
        positions = np.asarray(positions, np.float64)
        if positions.ndim != 2 or positions.shape[0] != N or positions.shape[1] < 2:
            raise ParameterError(f"positions: expected ({N}, 2) x_pos, y_pos, got shape {positions.shape}")
        slots, S = _spatial_slots(positions[:, :2], grids)
        keep = (bins >= 0) & (bins < n_bins)
        # in time order, so that a block of descriptors touches a short range of cells (its float32 block sums
        # are cleared and added over that range only)
        order = np.argsort(np.where(keep, bins, n_bins), kind="stable")
        X = X[order]
        cells = np.where(keep[:, None], bins[:, None] * S + slots, -1)[order]
        cells = np.ascontiguousarray(cells, np.int64)
        n_c = int(n_bins) * S
        prefix = np.zeros((int(n_bins) + 1, S, 2, K, D), np.float64)
        counts = np.zeros(n_c, np.float64)
        P = _nb.stats_width(D)
        acc = _BinSums(prefix[1:].reshape(n_c, 2, K, D), counts, g, P)
        row_bins = np.where(keep, bins, n_bins)[order]
        for start, xb, screen in iter_screens(X, g):
            cb = cells[start:start + xb.shape[0]]
            valid = cb[cb >= 0]
            if not valid.size:
                continue
            # the bins before this block's first are complete (the rows come in time order): into the prefix body
            acc.finish_below(int(row_bins[start]) * S)
            lo, hi = int(valid.min()), int(valid.max()) + 1
            S0, S12, t12, counts_b = acc.sums(lo, hi)
            t12.fill(0.0)
            _nb.fisher_block(xb, screen, g.means, g.inv_var, g.log_const, g.a_max, g.b_max, g.c_max, float(clamp),
                             EXACT_WINDOW, SCREEN_MARGIN_ABS, SCREEN_MARGIN_REL, SMALL_POSTERIOR, bool(fast),
                             np.where(cb >= 0, cb - lo, -1), S0.reshape(-1), S12.reshape(-1, P),
                             t12.reshape(-1, P), counts_b)
            S12 += t12
        acc.finish_below(n_c)
        del acc
        np.cumsum(prefix, axis=0, out=prefix)
        cnt = np.zeros((int(n_bins) + 1, S), np.float64)
        cnt[1:] = counts.reshape(int(n_bins), S)
        np.cumsum(cnt, axis=0, out=cnt)
        self.prefix_ = prefix
        self.counts_ = cnt
        self.grids_ = grids
        self.n_bins_ = int(n_bins)
        self.n_cells_ = n_cells(grids)
        self.dim_ = 2 * K * D
        self.weights_ = np.asarray(g.weights, np.float64)

    def _cell_ranges(self, starts: np.ndarray, ends: np.ndarray):
        """Yield (cell, slot, first bin (n,), end bin (n,)) for every pyramid cell of the windows."""
        cell = 0
        slot0 = 0
        length = ends - starts
        for nx, ny, nt in self.grids_:
            for it in range(nt):
                a = starts + (it * length) // nt
                b = starts + ((it + 1) * length) // nt
                for iy in range(ny):
                    for ix in range(nx):
                        yield cell + (it * ny + iy) * nx + ix, slot0 + iy * nx + ix, a, b
            cell += nx * ny * nt
            slot0 += nx * ny

    def windows(self, starts, ends, *, improved: bool = True, square_root: bool | None = None,
                normalized: bool | None = None, norm_floor: float = NORM_FLOOR) -> np.ndarray:
        """Fisher vectors of the windows of bins ``[starts[j], ends[j])``.

        Parameters
        ----------
        starts, ends : (n,) int bin indices, ``0 <= start <= end <= n_bins``.
        improved, square_root, normalized, norm_floor : as :func:`idtfv.encoding.fisher.normalize_fisher`.

        Returns
        -------
        (n, C, 2KD) float32, per window and pyramid cell, layout ``[u_1..u_K, v_1..v_K]``; a cell without
        descriptors is all zeros (as :func:`~idtfv.encoding.fisher.fisher_vectors_cells`).
        """
        starts = np.asarray(starts, np.int64).reshape(-1)
        ends = np.asarray(ends, np.int64).reshape(-1)
        if starts.shape != ends.shape:
            raise ParameterError(f"starts and ends must have the same length, got {starts.shape[0]} and "
                                 f"{ends.shape[0]}")
        if starts.size and (starts.min() < 0 or ends.max() > self.n_bins_ or (ends < starts).any()):
            raise ParameterError(f"windows must satisfy 0 <= start <= end <= {self.n_bins_} (bins)")
        n = starts.shape[0]
        K, D = self.prefix_.shape[3:]
        w = self.weights_
        with np.errstate(divide="ignore"):
            scale_u = np.where(w > 0, 1.0 / np.sqrt(w), 0.0)[:, None]  # pi_k = 0: u_k = v_k = 0
            scale_v = np.where(w > 0, 1.0 / np.sqrt(2.0 * w), 0.0)[:, None]
        F = np.zeros((n, self.n_cells_, 2, K, D), np.float64)
        for cell, slot, a, b in self._cell_ranges(starts, ends):
            cnt = self.counts_[b, slot] - self.counts_[a, slot]
            nonempty = cnt > 0
            if not nonempty.any():
                continue
            sums = self.prefix_[b[nonempty], slot] - self.prefix_[a[nonempty], slot]  # (m, 2, K, D)
            inv = (1.0 / cnt[nonempty])[:, None, None]
            F[nonempty, cell, 0] = sums[:, 0] * inv * scale_u
            F[nonempty, cell, 1] = sums[:, 1] * inv * scale_v
        F = F.reshape(n, self.n_cells_, self.dim_).astype(np.float32)
        normalize_fisher(F, improved=improved, square_root=square_root, normalized=normalized, norm_floor=norm_floor)
        return F


def _channel_inputs(arrays: Mapping, models: Mapping, source):
    """The video's ``meta`` (n, 10), checked, and that every channel of ``models`` is there; the channels are read
    and checked by :func:`~idtfv.encoding.sampling.channel_descriptors` when they are used, one at a time
    (``arrays`` may be an open features archive, whose channels are then never in memory together)."""
    if "meta" not in arrays:
        raise FormatError(source, "no 'meta' array; expected the extractor's keys meta, traj, hog, hof, mbhx, mbhy")
    meta = np.asarray(arrays["meta"])
    if meta.ndim != 2 or meta.shape[1] < 10:
        raise FormatError(source, f"'meta' has shape {meta.shape}, expected (n, 10)")
    for ch in models:
        if ch not in arrays:
            raise FormatError(source, f"no {ch!r} array; expected keys meta and {', '.join(models)}")
    return meta


def _check_models(models: Mapping) -> None:
    for ch, (_pca, model) in models.items():
        if not hasattr(model, "means_"):
            raise ParameterError(f"temporal windows need a Fisher (GMM) codebook; channel {ch!r} has a "
                                 f"{type(model).__name__}")


def score_windows(arrays: Mapping[str, np.ndarray], models: Mapping, starts, ends, coef, intercept, *,
                  bin_frames: int, n_bins: int, pyramid="1x1x1", source="arrays",
                  block: int = WINDOW_BLOCK) -> np.ndarray:
    """Linear scores ``w_c . f(window) + b_c`` of windows of one video, one channel and one segment of
    :data:`SEGMENT_BINS` bins of window starts at a time (the prefix sums of that segment and of the bins its windows
    reach: memory bounded by the segment and the longest window, whatever the video's length).

    Parameters
    ----------
    arrays : the video's extractor arrays (``meta`` and the channels of ``models``): a dict, or an open features
        archive (:func:`idtfv.cache.open_npz`), from which each channel is read when it is used.
    models : {channel: (DescriptorPCA, DiagGMM)} of :func:`idtfv.encoding.stage.load_codebooks` (Fisher only).
    starts, ends : (n,) window bounds in bins (``[start, end)``).
    coef : (n_classes, d) weights over the video vector layout of :func:`idtfv.encoding.stage.encode_arrays`
        (channels in ``models`` order, each ``C`` cells of 2KD).
    intercept : (n_classes,) biases.
    bin_frames, n_bins : the time bins (:func:`time_bins`).
    pyramid : the pyramid the vectors (and the SVM) were made with.
    block : windows formed at once.

    Returns
    -------
    (n, n_classes) float64.
    """
    _check_models(models)
    meta = _channel_inputs(arrays, models, source)
    grids = parse_pyramid(pyramid)
    C = n_cells(grids)
    coef = np.asarray(coef, np.float64)
    dims = [C * 2 * m.means_.shape[0] * pca.components_.shape[0] for pca, m in models.values()]
    if coef.ndim != 2 or coef.shape[1] != sum(dims):
        raise ParameterError(f"coef: expected (n_classes, {sum(dims)}) weights for this codebook and pyramid "
                             f"{pyramid!r}, got shape {coef.shape}; use the SVM trained on these Fisher vectors")
    starts = np.asarray(starts, np.int64)
    ends = np.asarray(ends, np.int64)
    scores = np.tile(np.asarray(intercept, np.float64), (starts.shape[0], 1))
    bins = time_bins(meta, bin_frames)
    positions = meta[:, list(POSITION_COLUMNS[:2])]
    if starts.shape != ends.shape or (starts.size and (starts.min() < 0 or ends.max() > n_bins
                                                        or (ends < starts).any())):
        raise ParameterError(f"windows must satisfy 0 <= start <= end <= {n_bins} (bins), one end per start")
    # the windows by segment of SEGMENT_BINS bins of their start; a segment's TemporalFisher holds the prefix sums of
    # the bins from the segment's first to its windows' last end only (memory bounded by the segment and the longest
    # window, not by the video; the sums start at the segment, so the last bits are those of the segment's own)
    segments = []  # (windows, first bin, end bin, descriptor rows) of each segment: the same for every channel
    for seg in np.unique(starts // SEGMENT_BINS):
        idx = np.flatnonzero(starts // SEGMENT_BINS == seg)
        lo, hi = int(seg) * SEGMENT_BINS, int(ends[idx].max())
        segments.append((idx, lo, hi, (bins >= lo) & (bins < hi)))
    offset = 0
    for (ch, (pca, model)), dim in zip(models.items(), dims):
        Z = pca.transform(channel_descriptors(arrays, ch, pca.n_features_in_, meta.shape[0], source))
        W = coef[:, offset:offset + dim].T
        for idx, lo, hi, rows in segments:
            tf = TemporalFisher(Z[rows], model, bins[rows] - lo, max(hi - lo, 1), pyramid=grids,
                                positions=positions[rows])
            for j0 in range(0, idx.shape[0], block):
                j = idx[j0:j0 + block]
                F = tf.windows(starts[j] - lo, ends[j] - lo)
                scores[j] += F.reshape(F.shape[0], -1).astype(np.float64) @ W
            del tf
        offset += dim
        del Z
    return scores


def encode_windows(arrays: Mapping[str, np.ndarray], models: Mapping, starts, ends, *, bin_frames: int,
                   n_bins: int, pyramid="1x1x1", source="arrays") -> np.ndarray:
    """Full vectors (n, d) float32 of windows of one video, layout of ``encode_arrays`` (all in memory: small
    inputs and tests; :func:`score_windows` scores long videos without them)."""
    _check_models(models)
    meta = _channel_inputs(arrays, models, source)
    grids = parse_pyramid(pyramid)
    bins = time_bins(meta, bin_frames)
    positions = meta[:, list(POSITION_COLUMNS[:2])]
    parts = []
    for ch, (pca, model) in models.items():
        X = channel_descriptors(arrays, ch, pca.n_features_in_, meta.shape[0], source)
        tf = TemporalFisher(pca.transform(X), model, bins, n_bins, pyramid=grids, positions=positions)
        F = tf.windows(starts, ends)
        parts.append(F.reshape(F.shape[0], -1))
    return np.concatenate(parts, axis=1).astype(np.float32)
