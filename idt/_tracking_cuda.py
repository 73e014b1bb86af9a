r"""CUDA kernels (CuPy ``RawModule``) of the tracking: one step of a batch of points, and the device track pool's.

``track_points`` is the twin of :func:`idtfv.idt._tracking_nb.track_step`: a point :math:`p` moves to
:math:`p + f(\mathrm{round}(p))` (the median-filtered flow read at the rounded, clamped pixel; ``rintf`` rounds half
to even as ``np.rint``); the camera-compensated flow :math:`f_w` at that pixel is the step's displacement; a point
that leaves the open frame ``(0, w) x (0, h)`` dies. One thread per point, float32 additions in the CPU's order, so
the result is **bit-identical** to the Numba kernel's.

:func:`track_step` keeps the Numba kernel's signature and in-place contract on host arrays (the host pool,
:class:`idtfv.idt.tracking.TrackPool` with ``step(device="cuda")``): it gathers the live tracks' current points, runs
the kernel, and writes the moved points, the displacements and the step counts back.

The other kernels serve :class:`idtfv.idt.tracking_cuda.DeviceTrackPool`, whose arrays stay on the device (one
thread per live track, per block value or per finished track; the order-keeping compactions take the prefix sums
CuPy computes, ``cumsum``):

- ``pool_step``: the same step (the shared ``idt_track_point``) on the pool's rows, in place; ``compact_step``
  then keeps the survivors in order and pushes the dead rows on the free stack as ``TrackPool.step`` does;
  ``pool_step_levels`` and ``compact_step_levels`` do both for up to 8 pools (the levels) in one launch each, with
  one prefix sum of the alive and finished flags over all of them;
- ``pool_add``: new tracks in the rows on top of the free stack (``pool_add_levels``: up to 8 pools in one
  launch); ``add_blocks``: a step's descriptor blocks into
  their temporal cells (the twin of :func:`idtfv.idt._tracking_nb.add_blocks`), ``add_blocks_levels`` the same
  for up to 8 pools (the levels) in one launch; (the patches' corners are computed by ``_histograms_cuda``'s
  ``gather_blocks``);
- ``flag_rows``, ``pop_done``, ``compact_keep``: finished (or released) tracks leave the live order;
  ``flag_rows_levels``, ``pop_done_levels``, ``validate_rows_levels``, ``pack_rows_levels``: the pop of up to 8
  pools (the levels) in one launch each, with one prefix sum of the flags and one of the kept tracks over all;
- ``validate_rows``: the pruning and trajectory shape, the float64 twin of
  :func:`idtfv.idt._tracking_nb.validate_tracks` (bit-identical: the same operations in the same order, no FMA);
  ``pack_rows``: the kept tracks' rows packed for one transfer.

Without a GPU the kernels run on the CPU through ``tests/_cuda_on_cpu.py`` (``tests/test_tracking_cuda.py``,
``tests/test_pool_cuda.py``). Importing this module needs CuPy.
"""

from __future__ import annotations

import functools

import cupy as cp
import numpy as np

from idtfv.raw_kernels import function

__all__ = ["track_step", "track_points", "module", "launch"]

_BLOCK = 128

_SOURCE = r"""
extern "C" {

// One point's step: the flow at its rounded, clamped pixel moves it to nxt; the compensated flow there is its
// displacement d. Returns 1 when nxt is inside the open frame (0, w) x (0, h).
// The pool of item g of a sequence of n_levels pools laid end to end from *first (counts[l] items in pool l): its
// index l (n_levels when g is past the last pool), with *first moved to where pool l's items start.
__device__ __forceinline__ int idt_level_of(long long g, const int* counts, int n_levels, long long* first) {
    int l = 0;
    while (l < n_levels && g >= *first + counts[l]) {
        *first += counts[l];
        ++l;
    }
    return l;
}

__device__ __forceinline__ int idt_track_point(float px, float py, const float* flow, const float* flow_w, int h,
                                               int w, float* nxt, float* d) {
    float rx = rintf(px);  // cvRound: nearest, ties to even
    float ry = rintf(py);
    int x = rx < 0.0f ? 0 : (rx > (float)(w - 1) ? w - 1 : (int)rx);
    int y = ry < 0.0f ? 0 : (ry > (float)(h - 1) ? h - 1 : (int)ry);
    long long k = 2 * ((long long)y * w + x);
    float nx = px + flow[k];
    float ny = py + flow[k + 1];
    nxt[0] = nx;
    nxt[1] = ny;
    d[0] = flow_w[k];
    d[1] = flow_w[k + 1];
    return (nx <= 0.0f || nx >= (float)w || ny <= 0.0f || ny >= (float)h) ? 0 : 1;
}

// One thread per point i: pts (n, 2) [x, y]; flow, flow_w (h, w, 2). Outputs nxt (n, 2), disp (n, 2), alive (n,).
__global__ void track_points(const float* pts, int n, const float* flow, const float* flow_w, int h, int w,
                             float* nxt, float* disp, int* alive) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n) return;
    alive[i] = idt_track_point(pts[2 * i], pts[2 * i + 1], flow, flow_w, h, w, nxt + 2 * i, disp + 2 * i);
}

// ---- the device pool: pos (C, L+1, 2), disp (C, L, 2), desc (C, nt, D) float32, index (C,) int32 (-1: free)

// One thread per live track k (row live[k]): prev[k] = its point; alive: the moved point's step is stored
// (pos[r, i+1], disp[r, i], index[r] = i+1), done[k] = 1 when that makes L steps; dead: index[r] = -1, the rest
// unchanged (as TrackPool.step).
__device__ __forceinline__ void idt_pool_step_at(const long long* live, int L, int* index, float* pos, float* disp,
                                                 const float* flow, const float* flow_w, int h, int w, float* prev,
                                                 int* alive, int* done, int k) {
    long long r = live[k];
    int i = index[r];
    float* p = pos + (r * (L + 1) + i) * 2;
    float px = p[0];
    float py = p[1];
    prev[2 * k] = px;
    prev[2 * k + 1] = py;
    float nxt[2];
    float d[2];
    int ok = idt_track_point(px, py, flow, flow_w, h, w, nxt, d);
    alive[k] = ok;
    done[k] = (ok && i + 1 >= L) ? 1 : 0;
    if (!ok) {
        index[r] = -1;
        return;
    }
    p[2] = nxt[0];
    p[3] = nxt[1];
    float* q = disp + (r * L + i) * 2;
    q[0] = d[0];
    q[1] = d[1];
    index[r] = i + 1;
}

__global__ void pool_step(const long long* live, int n, int L, int* index, float* pos, float* disp,
                          const float* flow, const float* flow_w, int h, int w, float* prev, int* alive, int* done) {
    int k = blockIdx.x * blockDim.x + threadIdx.x;
    if (k >= n) return;
    idt_pool_step_at(live, L, index, pos, disp, flow, flow_w, h, w, prev, alive, done, k);
}

// After pool_step, csum/dsum the inclusive prefix sums of alive/done: the survivors (and their prev points) in
// order into live_out/prev_out; the dead rows pushed on the free stack, last dead on the bottom (TrackPool's
// free + dead[::-1]); counts = [survivors, finished].
// (cbase, dbase: the prefix sums' values before this pool's first flag, when several pools' flags are summed as
// one array; 0 for one pool.)
__device__ __forceinline__ void idt_compact_at(const long long* live, int n, const int* alive, const long long* csum,
                                               const long long* dsum, long long cbase, long long dbase,
                                               const float* prev, long long* live_out, float* prev_out,
                                               long long* free_rows, long long n_free, long long* counts, int k) {
    long long a = csum[k] - cbase;
    if (alive[k]) {
        long long j = a - 1;
        live_out[j] = live[k];
        prev_out[2 * j] = prev[2 * k];
        prev_out[2 * j + 1] = prev[2 * k + 1];
    } else {
        long long n_dead = (long long)n - (csum[n - 1] - cbase);
        long long dead_rank = (long long)k - a;
        free_rows[n_free + n_dead - 1 - dead_rank] = live[k];
    }
    if (k == n - 1) {
        counts[0] = a;
        counts[1] = dsum[k] - dbase;
    }
}

__global__ void compact_step(const long long* live, int n, const int* alive, const long long* csum,
                             const long long* dsum, const float* prev, long long* live_out, float* prev_out,
                             long long* free_rows, long long n_free, long long* counts) {
    int k = blockIdx.x * blockDim.x + threadIdx.x;
    if (k >= n) return;
    idt_compact_at(live, n, alive, csum, dsum, 0, 0, prev, live_out, prev_out, free_rows, n_free, counts, k);
}

// ---- pool_step and compact_step of up to 8 pools (the levels) in one launch each: the pools' live tracks laid end
// to end (pool l's n_l after the pools before it; this launch's first at run_first of the whole sequence) in
// prev, alive, done and in alive's and done's prefix sums over the whole sequence; each pool's arrays and sizes are
// arguments. A thread finds its pool by the running counts, then does the one-pool kernel's work.
__global__ void pool_step_levels(int n_levels, long long run_first, int L, int n0, int n1, int n2, int n3, int n4,
                                 int n5, int n6, int n7, const long long* live0, const long long* live1,
                                 const long long* live2, const long long* live3, const long long* live4,
                                 const long long* live5, const long long* live6, const long long* live7, int* index0,
                                 int* index1, int* index2, int* index3, int* index4, int* index5, int* index6,
                                 int* index7, float* pos0, float* pos1, float* pos2, float* pos3, float* pos4,
                                 float* pos5, float* pos6, float* pos7, float* disp0, float* disp1, float* disp2,
                                 float* disp3, float* disp4, float* disp5, float* disp6, float* disp7,
                                 const float* flow0, const float* flow1, const float* flow2, const float* flow3,
                                 const float* flow4, const float* flow5, const float* flow6, const float* flow7,
                                 const float* fw0, const float* fw1, const float* fw2, const float* fw3,
                                 const float* fw4, const float* fw5, const float* fw6, const float* fw7, int h0,
                                 int h1, int h2, int h3, int h4, int h5, int h6, int h7, int w0, int w1, int w2,
                                 int w3, int w4, int w5, int w6, int w7, float* prev, int* alive, int* done) {
    long long g = run_first + (long long)blockIdx.x * blockDim.x + threadIdx.x;
    int counts[8] = {n0, n1, n2, n3, n4, n5, n6, n7};
    const long long* lives[8] = {live0, live1, live2, live3, live4, live5, live6, live7};
    int* indexes[8] = {index0, index1, index2, index3, index4, index5, index6, index7};
    float* poss[8] = {pos0, pos1, pos2, pos3, pos4, pos5, pos6, pos7};
    float* disps[8] = {disp0, disp1, disp2, disp3, disp4, disp5, disp6, disp7};
    const float* flows[8] = {flow0, flow1, flow2, flow3, flow4, flow5, flow6, flow7};
    const float* fws[8] = {fw0, fw1, fw2, fw3, fw4, fw5, fw6, fw7};
    int hs[8] = {h0, h1, h2, h3, h4, h5, h6, h7};
    int ws[8] = {w0, w1, w2, w3, w4, w5, w6, w7};
    long long first = run_first;  // pool l's first track in the sequence
    int l = idt_level_of(g, counts, n_levels, &first);
    if (l >= n_levels) return;
    idt_pool_step_at(lives[l], L, indexes[l], poss[l], disps[l], flows[l], fws[l], hs[l], ws[l], prev + 2 * first,
                     alive + first, done + first, (int)(g - first));
}

// counts gets [survivors, finished] of each pool of the launch, in order.
__global__ void compact_step_levels(int n_levels, long long run_first, int n0, int n1, int n2, int n3, int n4, int n5,
                                    int n6, int n7, const long long* live0, const long long* live1,
                                    const long long* live2, const long long* live3, const long long* live4,
                                    const long long* live5, const long long* live6, const long long* live7,
                                    long long* live_out0, long long* live_out1, long long* live_out2,
                                    long long* live_out3, long long* live_out4, long long* live_out5,
                                    long long* live_out6, long long* live_out7, float* prev_out0, float* prev_out1,
                                    float* prev_out2, float* prev_out3, float* prev_out4, float* prev_out5,
                                    float* prev_out6, float* prev_out7, long long* free0, long long* free1,
                                    long long* free2, long long* free3, long long* free4, long long* free5,
                                    long long* free6, long long* free7, long long n_free0, long long n_free1,
                                    long long n_free2, long long n_free3, long long n_free4, long long n_free5,
                                    long long n_free6, long long n_free7, const int* alive, const long long* csum,
                                    const long long* dsum, const float* prev, long long* counts) {
    long long g = run_first + (long long)blockIdx.x * blockDim.x + threadIdx.x;
    int counts_in[8] = {n0, n1, n2, n3, n4, n5, n6, n7};
    const long long* lives[8] = {live0, live1, live2, live3, live4, live5, live6, live7};
    long long* outs[8] = {live_out0, live_out1, live_out2, live_out3, live_out4, live_out5, live_out6, live_out7};
    float* prev_outs[8] = {prev_out0, prev_out1, prev_out2, prev_out3, prev_out4, prev_out5, prev_out6, prev_out7};
    long long* frees[8] = {free0, free1, free2, free3, free4, free5, free6, free7};
    long long n_frees[8] = {n_free0, n_free1, n_free2, n_free3, n_free4, n_free5, n_free6, n_free7};

    long long first = run_first;
    int l = idt_level_of(g, counts_in, n_levels, &first);
    if (l >= n_levels) return;
    long long cbase = first > 0 ? csum[first - 1] : 0;
    long long dbase = first > 0 ? dsum[first - 1] : 0;
    idt_compact_at(lives[l], counts_in[l], alive + first, csum + first, dsum + first, cbase, dbase, prev + 2 * first,
                   outs[l], prev_outs[l], frees[l], n_frees[l], counts + 2 * l, (int)(g - first));
}

// One thread per new point j: the row on top of the free stack but j (free_rows[n_free - 1 - j]) starts a track
// at pts[j] with zeroed cell sums, birth number births + j, appended to the live order.
__device__ __forceinline__ void idt_pool_add_at(const float* pts, const long long* free_rows, long long n_free,
                                                long long births, int L, int ntd, float* pos, float* desc, int* index,
                                                long long* birth, long long* live, long long n_live, int j) {
    long long r = free_rows[n_free - 1 - j];
    pos[r * (L + 1) * 2] = pts[2 * j];
    pos[r * (L + 1) * 2 + 1] = pts[2 * j + 1];
    float* o = desc + r * ntd;
    for (int m = 0; m < ntd; ++m) o[m] = 0.0f;
    index[r] = 0;
    birth[r] = births + j;
    live[n_live + j] = r;
}

__global__ void pool_add(const float* pts, int k, const long long* free_rows, long long n_free, long long births,
                         int L, int ntd, float* pos, float* desc, int* index, long long* birth, long long* live,
                         long long n_live) {
    int j = blockIdx.x * blockDim.x + threadIdx.x;
    if (j >= k) return;
    idt_pool_add_at(pts, free_rows, n_free, births, L, ntd, pos, desc, index, birth, live, n_live, j);
}

// pool_add of up to 8 pools (the levels) in one launch: pts holds pool l's k_l new points after the pools' before
// it; one thread per new point, its pool found by the running counts, then pool_add's work on that pool.
__global__ void pool_add_levels(int n_levels, int L, int ntd, const float* pts, int k0, int k1, int k2, int k3,
                                int k4, int k5, int k6, int k7, const long long* free0, const long long* free1,
                                const long long* free2, const long long* free3, const long long* free4,
                                const long long* free5, const long long* free6, const long long* free7,
                                long long n_free0, long long n_free1, long long n_free2, long long n_free3,
                                long long n_free4, long long n_free5, long long n_free6, long long n_free7,
                                long long births0, long long births1, long long births2, long long births3,
                                long long births4, long long births5, long long births6, long long births7,
                                float* pos0, float* pos1, float* pos2, float* pos3, float* pos4, float* pos5,
                                float* pos6, float* pos7, float* desc0, float* desc1, float* desc2, float* desc3,
                                float* desc4, float* desc5, float* desc6, float* desc7, int* index0, int* index1,
                                int* index2, int* index3, int* index4, int* index5, int* index6, int* index7,
                                long long* birth0, long long* birth1, long long* birth2, long long* birth3,
                                long long* birth4, long long* birth5, long long* birth6, long long* birth7,
                                long long* live0, long long* live1, long long* live2, long long* live3,
                                long long* live4, long long* live5, long long* live6, long long* live7,
                                long long n_live0, long long n_live1, long long n_live2, long long n_live3,
                                long long n_live4, long long n_live5, long long n_live6, long long n_live7) {
    int t = blockIdx.x * blockDim.x + threadIdx.x;
    int counts[8] = {k0, k1, k2, k3, k4, k5, k6, k7};
    const long long* frees[8] = {free0, free1, free2, free3, free4, free5, free6, free7};
    long long n_frees[8] = {n_free0, n_free1, n_free2, n_free3, n_free4, n_free5, n_free6, n_free7};
    long long birthss[8] = {births0, births1, births2, births3, births4, births5, births6, births7};
    float* poss[8] = {pos0, pos1, pos2, pos3, pos4, pos5, pos6, pos7};
    float* descs[8] = {desc0, desc1, desc2, desc3, desc4, desc5, desc6, desc7};
    int* indexes[8] = {index0, index1, index2, index3, index4, index5, index6, index7};
    long long* birth_rows[8] = {birth0, birth1, birth2, birth3, birth4, birth5, birth6, birth7};
    long long* lives[8] = {live0, live1, live2, live3, live4, live5, live6, live7};
    long long n_lives[8] = {n_live0, n_live1, n_live2, n_live3, n_live4, n_live5, n_live6, n_live7};
    int l = 0;
    int first = 0;  // pool l's first new point
    while (l < n_levels && t >= first + counts[l]) {
        first += counts[l];
        ++l;
    }
    if (l >= n_levels) return;
    idt_pool_add_at(pts + 2 * (long long)first, frees[l], n_frees[l], birthss[l], L, ntd, poss[l], descs[l],
                    indexes[l], birth_rows[l], lives[l], n_lives[l], t - first);
}

// One thread per value (k, j) of blocks (n, D): desc[r, c, j] += blocks[k, j], r = rows[k], c the cell of the step
// just taken, floor((index[r] - 1) / per_cell) (Python's floor division and negative index, as the Numba twin),
// skipped when c >= nt.
__device__ __forceinline__ void idt_add_block(const long long* rows, const int* index, int per_cell, int nt, int D,
                                              const float* blocks, float* desc, long long t) {
    long long k = t / D;
    int j = (int)(t - k * D);
    long long r = rows[k];
    int s = index[r] - 1;
    int c = s >= 0 ? s / per_cell : -((-s + per_cell - 1) / per_cell);
    if (c >= nt) return;
    if (c < 0) c += nt;
    desc[(r * nt + c) * D + j] += blocks[t];
}

__global__ void add_blocks(const long long* rows, int n, const int* index, int per_cell, int nt, int D,
                           const float* blocks, float* desc) {
    long long t = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (t >= (long long)n * D) return;
    idt_add_block(rows, index, per_cell, nt, D, blocks, desc, t);
}

// the current point of each of n rows: out[k] = pos[r, index[r]], r = rows[k] (an index of -1, a free row, reads
// the last point as NumPy's pos[r, -1] does); one thread per row: CuPy's advanced indexing took several launches
__global__ void current_points(const long long* rows, int n, const int* index, const float* pos, int L1,
                               float* out) {
    long long k = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (k >= n) return;
    long long r = rows[k];
    int i = index[r];
    if (i < 0) i += L1;
    out[2 * k] = pos[(r * L1 + i) * 2];
    out[2 * k + 1] = pos[(r * L1 + i) * 2 + 1];
}

// add_blocks of up to 8 pools (the pyramid's levels) in one launch: blocks holds level l's n_l rows after the
// levels before it; one thread per value, its level found by the running counts, then add_blocks' work on that
// level's pool (rows r_l, index i_l, sums d_l).
__global__ void add_blocks_levels(int n_levels, const long long* r0, const long long* r1, const long long* r2,
                                  const long long* r3, const long long* r4, const long long* r5,
                                  const long long* r6, const long long* r7, int n0, int n1, int n2, int n3, int n4,
                                  int n5, int n6, int n7, const int* i0, const int* i1, const int* i2,
                                  const int* i3, const int* i4, const int* i5, const int* i6, const int* i7,
                                  float* d0, float* d1, float* d2, float* d3, float* d4, float* d5, float* d6,
                                  float* d7, int per_cell, int nt, int D, const float* blocks) {
    long long t = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    const long long* rows[8] = {r0, r1, r2, r3, r4, r5, r6, r7};
    int counts[8] = {n0, n1, n2, n3, n4, n5, n6, n7};
    const int* index[8] = {i0, i1, i2, i3, i4, i5, i6, i7};
    float* desc[8] = {d0, d1, d2, d3, d4, d5, d6, d7};
    int l = 0;
    long long first = 0;  // level l's first value of blocks
    while (l < n_levels && t >= first + (long long)counts[l] * D) {
        first += (long long)counts[l] * D;
        ++l;
    }
    if (l >= n_levels) return;
    idt_add_block(rows[l], index[l], per_cell, nt, D, blocks + first, desc[l], t - first);
}

// flags[k] = index[live[k]] >= threshold.
__device__ __forceinline__ void idt_flag_at(const long long* live, const int* index, int threshold, int* flags,
                                            int k) {
    flags[k] = index[live[k]] >= threshold ? 1 : 0;
}

__global__ void flag_rows(const long long* live, int n, const int* index, int threshold, int* flags) {
    int k = blockIdx.x * blockDim.x + threadIdx.x;
    if (k >= n) return;
    idt_flag_at(live, index, threshold, flags, k);
}

// Finished tracks (flags, dsum its inclusive prefix sum, n_done in all) leave the live order: done_rows in live
// order, pushed on the free stack last on the bottom (TrackPool's free + rows[::-1]), index -1; the others in
// order into live_out. (dbase: dsum's value before this pool's first flag, when several pools' flags are summed as
// one array; 0 for one pool.)
__device__ __forceinline__ void idt_pop_done_at(const long long* live, const int* flags, const long long* dsum,
                                                long long dbase, int* index, long long* live_out,
                                                long long* done_rows, long long* free_rows, long long n_free,
                                                long long n_done, int k) {
    long long r = live[k];
    long long c = dsum[k] - dbase;
    if (flags[k]) {
        long long rank = c - 1;
        done_rows[rank] = r;
        free_rows[n_free + n_done - 1 - rank] = r;
        index[r] = -1;
    } else {
        live_out[k - c] = r;
    }
}

__global__ void pop_done(const long long* live, int n, const int* flags, const long long* dsum, int* index,
                         long long* live_out, long long* done_rows, long long* free_rows, long long n_free,
                         long long n_done) {
    int k = blockIdx.x * blockDim.x + threadIdx.x;
    if (k >= n) return;
    idt_pop_done_at(live, flags, dsum, 0, index, live_out, done_rows, free_rows, n_free, n_done, k);
}

// The flagged entries of live, in order (csum the inclusive prefix sum of flags).
__global__ void compact_keep(const long long* live, int n, const int* flags, const long long* csum,
                             long long* live_out) {
    int k = blockIdx.x * blockDim.x + threadIdx.x;
    if (k >= n) return;
    if (flags[k]) live_out[csum[k] - 1] = live[k];
}

// One thread per finished track rows[k]: LEAR's pruning and the trajectory shape in original-frame pixels, the
// float64 twin of _tracking_nb.validate_tracks operation for operation. meta (n, 6), traj (n, 2L), keep (n,).
__device__ __forceinline__ void idt_validate_at(const long long* rows, const float* pos, const float* disp, int L,
                                                double scale, double min_var, double max_var, double max_dis,
                                                double max_dis_ratio, double min_camera_disp, int camera,
                                                float* meta, float* traj, int* keep, long long k) {
    long long r = rows[k];
    const float* p = pos + r * (L + 1) * 2;
    const float* q = disp + r * L * 2;
    int npts = L + 1;
    double mx = 0.0;
    double my = 0.0;
    for (int i = 0; i < npts; ++i) {
        mx += (double)(float)((double)p[2 * i] * scale);
        my += (double)(float)((double)p[2 * i + 1] * scale);
    }
    mx /= (double)npts;
    my /= (double)npts;
    double vx = 0.0;
    double vy = 0.0;
    for (int i = 0; i < npts; ++i) {
        double dx = (double)p[2 * i] * scale - mx;
        double dy = (double)p[2 * i + 1] * scale - my;
        vx += dx * dx;
        vy += dy * dy;
    }
    vx = sqrt(vx / (double)npts);
    vy = sqrt(vy / (double)npts);
    keep[k] = 0;
    if (vx < min_var && vy < min_var) return;
    if (vx > max_var || vy > max_var) return;
    double length = 0.0;
    double cur_max = 0.0;
    for (int i = 0; i < npts - 1; ++i) {
        double dx = (double)(p[2 * i + 2] - p[2 * i]) * scale;  // the float32 difference, as the CPU's
        double dy = (double)(p[2 * i + 3] - p[2 * i + 1]) * scale;
        double d = sqrt(dx * dx + dy * dy);
        length += d;
        if (d > cur_max) cur_max = d;
    }
    if (cur_max > max_dis && cur_max > length * max_dis_ratio) return;
    double dsum = 0.0;
    double dmax = 0.0;
    for (int i = 0; i < L; ++i) {
        double dx = (double)q[2 * i] * scale;
        double dy = (double)q[2 * i + 1] * scale;
        double d = sqrt(dx * dx + dy * dy);
        dsum += d;
        if (d > dmax) dmax = d;
    }
    if (camera && dmax <= min_camera_disp) return;
    keep[k] = 1;
    float* m = meta + (long long)k * 6;
    m[0] = (float)mx;
    m[1] = (float)my;
    m[2] = (float)vx;
    m[3] = (float)vy;
    m[4] = (float)length;
    m[5] = (float)scale;
    double inv = dsum > 0.0 ? 1.0 / dsum : 0.0;
    float* t = traj + (long long)k * 2 * L;
    for (int i = 0; i < L; ++i) {
        t[2 * i] = (float)((double)q[2 * i] * scale * inv);
        t[2 * i + 1] = (float)((double)q[2 * i + 1] * scale * inv);
    }
}

__global__ void validate_rows(const long long* rows, int n, const float* pos, const float* disp, int L, double scale,
                              double min_var, double max_var, double max_dis, double max_dis_ratio,
                              double min_camera_disp, int camera, float* meta, float* traj, int* keep) {
    int k = blockIdx.x * blockDim.x + threadIdx.x;
    if (k >= n) return;
    idt_validate_at(rows, pos, disp, L, scale, min_var, max_var, max_dis, max_dis_ratio, min_camera_disp, camera, meta,
                    traj, keep, k);
}

// The kept tracks (keep, csum its inclusive prefix sum) packed in order, one row each: meta (6) | traj (2L) |
// the cell means desc[r] / per_cell (nt * D).
__device__ __forceinline__ void idt_pack_at(const long long* rows, const int* keep, const long long* csum,
                                            const float* meta, const float* traj, const float* desc, int L, int ntd,
                                            float per_cell, float* out, long long k) {
    if (!keep[k]) return;
    long long width = 6 + 2 * L + ntd;
    float* o = out + (csum[k] - 1) * width;
    for (int m = 0; m < 6; ++m) o[m] = meta[(long long)k * 6 + m];
    for (int m = 0; m < 2 * L; ++m) o[6 + m] = traj[(long long)k * 2 * L + m];
    const float* s = desc + rows[k] * ntd;
    for (int m = 0; m < ntd; ++m) o[6 + 2 * L + m] = s[m] / per_cell;
}

__global__ void pack_rows(const long long* rows, int n, const int* keep, const long long* csum, const float* meta,
                          const float* traj, const float* desc, int L, int ntd, float per_cell, float* out) {
    int k = blockIdx.x * blockDim.x + threadIdx.x;
    if (k >= n) return;
    idt_pack_at(rows, keep, csum, meta, traj, desc, L, ntd, per_cell, out, k);
}

// ---- the pop of finished tracks of up to 8 pools (the levels) in one launch per kernel: their live tracks end to
// end (pool l's n_l after the pools before it; this launch's first at run_first of the whole sequence) in the flags
// and in the flags' prefix sum over the whole sequence; their finished tracks end to end (pool l's k_l = n_done_l)
// in done_rows, meta, traj, keep and keep's prefix sum; each pool's arrays and sizes are arguments. A thread finds
// its pool by the running counts, then does the one-pool kernel's work.
__global__ void flag_rows_levels(int n_levels, long long run_first, int n0, int n1, int n2, int n3, int n4, int n5,
                                 int n6, int n7, const long long* live0, const long long* live1,
                                 const long long* live2, const long long* live3, const long long* live4,
                                 const long long* live5, const long long* live6, const long long* live7,
                                 const int* index0, const int* index1, const int* index2, const int* index3,
                                 const int* index4, const int* index5, const int* index6, const int* index7,
                                 int threshold, int* flags) {
    long long g = run_first + (long long)blockIdx.x * blockDim.x + threadIdx.x;
    int counts[8] = {n0, n1, n2, n3, n4, n5, n6, n7};
    const long long* lives[8] = {live0, live1, live2, live3, live4, live5, live6, live7};
    const int* indexes[8] = {index0, index1, index2, index3, index4, index5, index6, index7};
    long long first = run_first;  // pool l's first live track in the sequence
    int l = idt_level_of(g, counts, n_levels, &first);
    if (l >= n_levels) return;
    idt_flag_at(lives[l], indexes[l], threshold, flags + first, (int)(g - first));
}

// run_done: this launch's first finished track in the sequence of finished tracks (done_rows).
__global__ void pop_done_levels(int n_levels, long long run_first, long long run_done, int n0, int n1, int n2, int n3,
                                int n4, int n5, int n6, int n7, const long long* live0, const long long* live1,
                                const long long* live2, const long long* live3, const long long* live4,
                                const long long* live5, const long long* live6, const long long* live7, int* index0,
                                int* index1, int* index2, int* index3, int* index4, int* index5, int* index6,
                                int* index7, long long* live_out0, long long* live_out1, long long* live_out2,
                                long long* live_out3, long long* live_out4, long long* live_out5,
                                long long* live_out6, long long* live_out7, long long* free0, long long* free1,
                                long long* free2, long long* free3, long long* free4, long long* free5,
                                long long* free6, long long* free7, long long n_free0, long long n_free1,
                                long long n_free2, long long n_free3, long long n_free4, long long n_free5,
                                long long n_free6, long long n_free7, long long n_done0, long long n_done1,
                                long long n_done2, long long n_done3, long long n_done4, long long n_done5,
                                long long n_done6, long long n_done7, const int* flags, const long long* dsum,
                                long long* done_rows) {
    long long g = run_first + (long long)blockIdx.x * blockDim.x + threadIdx.x;
    int counts[8] = {n0, n1, n2, n3, n4, n5, n6, n7};
    const long long* lives[8] = {live0, live1, live2, live3, live4, live5, live6, live7};
    int* indexes[8] = {index0, index1, index2, index3, index4, index5, index6, index7};
    long long* outs[8] = {live_out0, live_out1, live_out2, live_out3, live_out4, live_out5, live_out6, live_out7};
    long long* frees[8] = {free0, free1, free2, free3, free4, free5, free6, free7};
    long long n_frees[8] = {n_free0, n_free1, n_free2, n_free3, n_free4, n_free5, n_free6, n_free7};
    long long n_dones[8] = {n_done0, n_done1, n_done2, n_done3, n_done4, n_done5, n_done6, n_done7};
    int l = 0;
    long long first = run_first;
    long long done_first = run_done;  // pool l's first finished track
    while (l < n_levels && g >= first + counts[l]) {
        first += counts[l];
        done_first += n_dones[l];
        ++l;
    }
    if (l >= n_levels) return;
    long long dbase = first > 0 ? dsum[first - 1] : 0;
    idt_pop_done_at(lives[l], flags + first, dsum + first, dbase, indexes[l], outs[l], done_rows + done_first,
                    frees[l], n_frees[l], n_dones[l], (int)(g - first));
}

// One thread per finished track of the pools (rows: their rows, pool l's k_l after the pools before it).
__global__ void validate_rows_levels(int n_levels, long long run_first, int k0, int k1, int k2, int k3, int k4,
                                     int k5, int k6, int k7, const float* pos0, const float* pos1, const float* pos2,
                                     const float* pos3, const float* pos4, const float* pos5, const float* pos6,
                                     const float* pos7, const float* disp0, const float* disp1, const float* disp2,
                                     const float* disp3, const float* disp4, const float* disp5, const float* disp6,
                                     const float* disp7, double scale0, double scale1, double scale2, double scale3,
                                     double scale4, double scale5, double scale6, double scale7,
                                     const long long* rows, int L, double min_var, double max_var, double max_dis,
                                     double max_dis_ratio, double min_camera_disp, int camera, float* meta,
                                     float* traj, int* keep) {
    long long g = run_first + (long long)blockIdx.x * blockDim.x + threadIdx.x;
    int counts[8] = {k0, k1, k2, k3, k4, k5, k6, k7};
    const float* poss[8] = {pos0, pos1, pos2, pos3, pos4, pos5, pos6, pos7};
    const float* disps[8] = {disp0, disp1, disp2, disp3, disp4, disp5, disp6, disp7};
    double scales[8] = {scale0, scale1, scale2, scale3, scale4, scale5, scale6, scale7};
    long long first = run_first;  // pool l's first finished track in the sequence
    int l = idt_level_of(g, counts, n_levels, &first);
    if (l >= n_levels) return;
    idt_validate_at(rows, poss[l], disps[l], L, scales[l], min_var, max_var, max_dis, max_dis_ratio,
                    min_camera_disp, camera, meta, traj, keep, g);
}

// The kept tracks of all the pools packed in order (csum: keep's prefix sum over the whole sequence), so pool l's
// kept rows follow the pools' before it in out.
__global__ void pack_rows_levels(int n_levels, long long run_first, int k0, int k1, int k2, int k3, int k4, int k5,
                                 int k6, int k7, const float* desc0, const float* desc1, const float* desc2,
                                 const float* desc3, const float* desc4, const float* desc5, const float* desc6,
                                 const float* desc7, const long long* rows, const int* keep, const long long* csum,
                                 const float* meta, const float* traj, int L, int ntd, float per_cell, float* out) {
    long long g = run_first + (long long)blockIdx.x * blockDim.x + threadIdx.x;
    int counts[8] = {k0, k1, k2, k3, k4, k5, k6, k7};
    const float* descs[8] = {desc0, desc1, desc2, desc3, desc4, desc5, desc6, desc7};
    long long first = run_first;
    int l = idt_level_of(g, counts, n_levels, &first);
    if (l >= n_levels) return;
    idt_pack_at(rows, keep, csum, meta, traj, descs[l], L, ntd, per_cell, out, g);
}

}
"""


@functools.lru_cache(maxsize=None)
def module():
    """The compiled ``cupy.RawModule`` (one per process)."""
    return cp.RawModule(code=_SOURCE, options=("--fmad=false",))


def launch(name: str, n: int, args: tuple) -> None:
    """Run kernel ``name`` with one thread per item of ``n`` (nothing when ``n`` is 0); ``args`` as CuPy's call
    (CuPy arrays and NumPy scalars of the kernel's C types)."""
    if n > 0:
        function(module(), name)(((n + _BLOCK - 1) // _BLOCK,), (_BLOCK,), args)


def track_points(points, flow, flow_w):
    """Move points by one frame on the device.

    Parameters
    ----------
    points : (n, 2) float32
        Current points ``[x, y]`` (NumPy or CuPy).
    flow, flow_w : (h, w, 2) float32
        Median-filtered and camera-compensated flow of this scale (NumPy or CuPy).

    Returns
    -------
    nxt, disp : (n, 2) float32 CuPy arrays
        The moved points and the compensated displacement read at the rounded point (garbage where not alive).
    alive : (n,) int32 CuPy array
        1 where the moved point is inside the open frame.
    """
    pts = cp.ascontiguousarray(cp.asarray(points, dtype=cp.float32))
    f = cp.ascontiguousarray(cp.asarray(flow, dtype=cp.float32))
    fw = cp.ascontiguousarray(cp.asarray(flow_w, dtype=cp.float32))
    n = int(pts.shape[0])
    h, w = int(f.shape[0]), int(f.shape[1])
    nxt = cp.empty((n, 2), cp.float32)
    disp = cp.empty((n, 2), cp.float32)
    alive = cp.empty(n, cp.int32)
    launch("track_points", n, (pts, np.int32(n), f, fw, np.int32(h), np.int32(w), nxt, disp, alive))
    return nxt, disp, alive


def track_step(slots, index, pos, disp, flow, flow_w, alive):
    """The device twin of :func:`idtfv.idt._tracking_nb.track_step`, same arguments and in-place effects.

    ``slots (n,)`` int64 pool rows, ``index (C,)`` int32, ``pos (C, L+1, 2)``, ``disp (C, L, 2)`` float32 host
    arrays (updated for the tracks that stay alive), ``flow``, ``flow_w (h, w, 2)`` float32, ``alive (n,)`` bool
    (output).
    """
    steps = index[slots]
    nxt, d, ok = track_points(pos[slots, steps], flow, flow_w)
    ok = cp.asnumpy(ok).astype(bool)
    alive[:] = ok
    if ok.any():
        rows, i = slots[ok], steps[ok]
        pos[rows, i + 1] = cp.asnumpy(nxt)[ok]
        disp[rows, i] = cp.asnumpy(d)[ok]
        index[rows] = i + 1
