"""Numba kernels: exact diagonal-Gaussian posteriors of screened candidates, and their sufficient statistics.

For a diagonal GMM with priors pi_k, means mu_k and variances sigma_k^2 (k = 1..K, dimension D), the joint
log-likelihood of a descriptor x and component k is

    l_k(x) = log pi_k - 1/2 sum_d log sigma_kd^2 - D/2 log(2 pi) - 1/2 sum_d (x_d - mu_kd)^2 / sigma_kd^2

and the posterior is q_k(x) = exp(l_k - max_j l_j) / sum_j exp(l_j - max_j l_j) (log-sum-exp).

The driver (``_gaussians.iter_candidates``) screens every l_k with one float32 GEMM and passes the screen and two
per-descriptor thresholds below the screened maximum: ``clamp + margin`` (candidates) and ``exact_window + margin``
(candidates recomputed exactly: direct Mahalanobis sum, float64 accumulator; the others keep the screened value,
whose rounding only touches posteriors already below exp(-exact_window) of the best). The kernels drop candidates
more than ``clamp`` nats below the best (posterior below exp(-clamp) ~ 1e-13 at the default 30 for encoding,
~1e-6 at 14 for EM: no float32 result changes and no denormal number ever appears; denormals make float32 EM and
encoding 8-9x slower) and accumulate the statistics of the kept posteriors only.

All kernels assume validated, C-contiguous float32 data; the drivers in ``gmm.py`` and ``fisher.py`` check inputs.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

from ._bits_nb import cttz64, f32_from_bits, ge_mask64, max_row16

#: SHA-256 of the kernel modules this one's cached kernels compile in. Numba keys a kernel's cache by the bytes of
#: its own file only: a change to a dependency must change this file too, or the old machine code stays in use
#: (``tests/test_kernel_caches.py`` checks the digests).
KERNEL_DEPENDENCIES = {"_bits_nb.py": "b89f265ec87845b1bf2f30f54d98c4a0719d779d714ed6c01737ac49877564d4"}

# Reassociation only lets LLVM vectorise the Mahalanobis reduction (it changes the summation order, nothing else);
# tests compare against a naive float64 reference at 1e-5.
_FM = {"reassoc", "contract"}


@njit(cache=True, nogil=True, fastmath=_FM)
def _mahalanobis(X, i, means, inv_var, k):
    """sum_d (X[i, d] - means[k, d])^2 inv_var[k, d] in float64 (explicit 2-D indexing: no array views)."""
    s = 0.0
    for d in range(X.shape[1]):
        t = np.float64(X[i, d]) - np.float64(means[k, d])
        s += t * t * np.float64(inv_var[k, d])
    return s


@njit(cache=True, nogil=True)
def row_posteriors(X, i, screen, thr, thr_exact, means, inv_var, log_const, clamp, idx, q, ebuf):
    """Sparse posteriors of one descriptor from its screened joint log-likelihoods.

    Parameters
    ----------
    X, i : (n, D) float32 descriptors and the row of the one to process (kernels index 2-D arrays directly:
        array views in inner loops cost reference counting).
    screen : (n, K) float32 screened l_k(x_i); components with ``screen[i, k] >= thr`` are candidates.
    thr : float, screening threshold (screened maximum - clamp - margin).
    thr_exact : float, candidates with ``screen[i, k] >= thr_exact`` get l_k recomputed exactly (direct Mahalanobis
        sum, float64); the others keep the screened value, whose rounding error (~1e-4 nats at most) only
        touches posteriors already below exp(-window) of the best. ``+inf``: none (EM); ``thr``: all.
    means, inv_var : (K, D) float32, mu and 1 / sigma^2.
    log_const : (K,) float64, log pi_k - 1/2 sum_d log sigma_kd^2 - D/2 log(2 pi).
    clamp : float, posteriors below exp(-clamp) relative to the best component are set to zero.
    idx : (K,) int32 out, component ids of the kept posteriors.
    q : (K,) float64 out, kept posteriors (sum to 1).
    ebuf : (K,) float32 scratch.

    Returns
    -------
    n : int, number of kept posteriors (first n entries of idx, q).
    log_px : float, log p(x) = log sum_k exp(l_k(x)) (over the kept components).
    """
    # Compaction of the candidates: a 64-bit mask per 64 components (16-lane compares), walked with ``tzcnt``;
    # the tail is branch-free (a data-dependent branch per component mispredicts often).
    K = screen.shape[1]
    K64 = K - K % 64
    n = 0
    for kb in range(0, K64, 64):
        mask = ge_mask64(screen, i, kb, np.float32(thr))
        while mask:
            k = kb + np.int64(cttz64(mask))
            idx[n] = k
            q[n] = screen[i, k]
            n += 1
            mask &= mask - np.uint64(1)
    for k in range(K64, K):
        sk = screen[i, k]
        idx[n] = k
        q[n] = sk
        n += sk >= thr
    best = -np.inf
    for j in range(n):
        if q[j] >= thr_exact:
            q[j] = log_const[idx[j]] - 0.5 * _mahalanobis(X, i, means, inv_var, idx[j])
        if q[j] > best:
            best = q[j]
    for j in range(n):
        q[j] -= best
    _exp_nonpositive(q, n, ebuf)
    tot = 0.0
    kept = 0
    for j in range(n):
        ok = q[j] >= -clamp
        e = np.float64(ebuf[j])
        idx[kept] = idx[j]
        q[kept] = e
        tot += e if ok else 0.0
        kept += ok
    inv = 1.0 / tot
    for j in range(kept):
        q[j] *= inv
    return kept, best + math.log(tot)


@njit(cache=True, nogil=True)
def em_accumulate(X, screen, thr, thr_exact, means, inv_var, log_const, clamp, S0, S1, S2):
    """Add one block's EM sufficient statistics: S0_k += sum_i q_ik, S1_k += sum_i q_ik x_i, S2_k += sum_i q_ik x_i^2.

    X (n, D) float32; screen (n, K) float32, thr and thr_exact (n,) float32 from the GEMM screen; S0 (K,), S1 and
    S2 (K, D) float64, updated in place.
    Returns the block's sum of log p(x_i) and its number of kept (i, k) pairs.
    """
    n_rows, D = X.shape
    K = means.shape[0]
    idx = np.empty(K, np.int32)
    q = np.empty(K, np.float64)
    ebuf = np.empty(K, np.float32)
    x64 = np.empty(D, np.float64)
    ll = 0.0
    nnz = 0
    for i in range(n_rows):
        kept, lp = row_posteriors(X, i, screen, thr[i], thr_exact[i], means, inv_var, log_const, clamp, idx, q,
                                   ebuf)
        ll += lp
        nnz += kept
        for d in range(D):
            x64[d] = X[i, d]
        for j in range(kept):
            k = idx[j]
            w = q[j]
            S0[k] += w
            for d in range(D):
                wx = w * x64[d]
                S1[k, d] += wx
                S2[k, d] += wx * x64[d]
    return ll, nnz


@njit(cache=True, nogil=True)
def _row_max(screen, i):
    """max_k screen[i, k] of a C-contiguous float32 screen (16 lanes at a time, ``_bits_nb.max_row16``)."""
    K = screen.shape[1]
    K16 = K - K % 16
    m = max_row16(screen, i, K16) if K16 else screen[i, 0]
    for k in range(K16, K):
        v = screen[i, k]
        m = v if v > m else m
    return m


@njit(cache=True, nogil=True, fastmath=_FM)
def _screen_terms(X, i, a_max, b_max):
    """sum_d X[i, d]^2 a_max[d] + |X[i, d]| b_max[d] in float64 (vectorised; only sizes the screen's margin)."""
    s = 0.0
    for d in range(X.shape[1]):
        xd = np.float64(X[i, d])
        s += xd * xd * a_max[d] + abs(xd) * b_max[d]
    return s


def stats_width(D: int) -> int:
    """Columns of the S12 / T12 statistics of ``fisher_block`` for D dimensions: 2D rounded up to a multiple of 16
    (whole float32 and float64 SIMD vectors); the statistics are ``[:, :D]`` (x) and ``[:, D:2D]`` (x^2)."""
    return -(-2 * D // 16) * 16


@njit(cache=True, nogil=True)
def _exp_nonpositive(vals, n, out):
    """out[j] = exp(vals[j]) in float32 for vals[j] <= 0 (below -80 treated as -80), j < n.

    2^m p(r) with r = x - m ln 2 in [-ln2/2, ln2/2] and p the degree-7 Taylor polynomial (truncation below 6e-9,
    1e-7 relative as libm's expf); 2^m is built from its exponent bits (m >= -116: a normal float32). The loop has no
    branch, so LLVM vectorises it.
    """
    for j in range(n):
        x = np.float32(max(vals[j], -80.0))
        m = np.floor(x * np.float32(1.4426950408889634) + np.float32(0.5))
        r = (x - m * np.float32(0.693145751953125)) - m * np.float32(1.428606765330187e-06)
        p = np.float32(1.0 / 5040.0)
        p = p * r + np.float32(1.0 / 720.0)
        p = p * r + np.float32(1.0 / 120.0)
        p = p * r + np.float32(1.0 / 24.0)
        p = p * r + np.float32(1.0 / 6.0)
        p = p * r + np.float32(0.5)
        p = p * r + np.float32(1.0)
        p = p * r + np.float32(1.0)
        out[j] = p * f32_from_bits(np.int32((np.int32(m) + 127) << 23))


@njit(cache=True, nogil=True)
def fisher_block(X, screen, means, inv_var, log_const, a_max, b_max, c_max, clamp, window, margin_abs, margin_rel,
                 small, hard, cells, S0, S12, T12, counts):
    """Posteriors and Fisher sufficient statistics of one block, from its GEMM screen, in one pass per descriptor.

    For descriptor i (all in registers / L1 while it is processed):

    1. screened maximum m_i = max_k screen[i, k] and the rounding margin of its screen,
       margin_i = ``margin_abs`` + ``margin_rel`` (c_max + sum_d x_d^2 a_max_d + |x_d| b_max_d) (see ``_gaussians``);
    2. two candidate masks per 64 components, built 16 lanes at a time (``_bits_nb.ge_mask64``; the maximum too,
       ``max_row16``) and walked with ``tzcnt``: components within
       ``window`` + margin_i of m_i (recomputed exactly: direct Mahalanobis sum in float64) and those within
       ``clamp`` + margin_i (keep the screened value, whose error only touches posteriors below exp(-window) of the
       best);
    3. q_ik = exp(l_k - max_j l_j) / sum (float32 exponentials, float64 sums), zero below exp(-``clamp``);
    4. row r = c K + k of every pyramid cell c the descriptor falls in: S0[r] += q, and q [x, x^2] (2D wide, padded
       with zeros to whole SIMD vectors) goes
       into the float64 sums S12 when q >= ``small`` (~4 per descriptor at D=48, K=256) and into the float32 block
       sums T12 below it (~17 per descriptor, each at most ``small`` of its mass), whichever list q came from. The driver turns S1, S2 into
       sum_i q_ik z_ik = (S1 - mu S0) / sigma and sum_i q_ik (z_ik^2 - 1) = (S2 - 2 mu S1 + mu^2 S0) / sigma^2 - S0,
       which cancels about log10(mu^2 / sigma^2) digits: hence float64 for the posteriors that carry the mass.

    ``hard`` is VLFeat's ``Fast`` option: posterior 1 for the most likely component (ties: lowest index).

    Parameters
    ----------
    X : (n, D) float32 descriptors; screen : (n, K) float32 screened l_k(x_i).
    means, inv_var : (K, D) float32; log_const : (K,) float64 (see ``row_posteriors``).
    a_max, b_max : (D,) float64 and c_max : float, the bound on the screen's terms (``PreparedGMM``).
    clamp, window, margin_abs, margin_rel, small : floats as above; hard : bool.
    cells : (n, G) int64 cell ids per pyramid grid (-1: none). S0 (C K,), S12 (C K, P) float64 totals; T12
        (C K, P) float32 block sums, P = ``stats_width(D)`` >= 2D (columns past 2D stay zero); counts (C,) float64
        descriptors per cell; all updated in place.

    Returns
    -------
    nnz : int, number of kept (i, k) pairs.
    """
    n_rows, D = X.shape
    K = means.shape[0]
    G = cells.shape[1]
    k_ex = np.empty(K, np.int64)  # candidates: component, log-likelihood (- best), exp
    l_ex = np.empty(K, np.float64)
    q_ex = np.empty(K, np.float32)
    k_sc = np.empty(K, np.int64)  # screened-only candidates, until appended to the above
    l_sc = np.empty(K, np.float64)
    k_big = np.empty(K, np.int64)  # kept posteriors, split at ``small``
    w_big = np.empty(K, np.float64)
    k_small = np.empty(K, np.int64)
    w_small = np.empty(K, np.float64)
    P = S12.shape[1]  # 2D, or more: padding columns get zeros (whole SIMD vectors, no scalar remainder loop)
    x12 = np.zeros(P, np.float64)
    y12 = np.zeros(P, np.float32)
    K64 = K - K % 64
    nnz = 0
    for i in range(n_rows):
        m = _row_max(screen, i)
        for d in range(D):  # two simple loops: LLVM vectorises these, not one interleaved loop
            x12[d] = X[i, d]
            y12[d] = X[i, d]
        for d in range(D):
            xx = x12[d] * x12[d]
            x12[D + d] = xx
            y12[D + d] = np.float32(xx)
        bound = c_max + _screen_terms(X, i, a_max, b_max)
        margin = margin_abs + margin_rel * bound
        thr = np.float32(m - (clamp + margin))
        thr_ex = np.float32(m - (window + margin))
        n_ex = 0
        n_sc = 0
        for kb in range(0, K64, 64):
            mask_ex = ge_mask64(screen, i, kb, thr_ex)  # bit j: screen[i, kb + j] >= thr_ex
            mask_sc = ge_mask64(screen, i, kb, thr) & ~mask_ex
            while mask_ex:
                k_ex[n_ex] = kb + np.int64(cttz64(mask_ex))
                n_ex += 1
                mask_ex &= mask_ex - np.uint64(1)
            while mask_sc:
                k = kb + np.int64(cttz64(mask_sc))
                k_sc[n_sc] = k
                l_sc[n_sc] = screen[i, k]
                n_sc += 1
                mask_sc &= mask_sc - np.uint64(1)
        for k in range(K64, K):
            s = screen[i, k]
            if s >= thr_ex:
                k_ex[n_ex] = k
                n_ex += 1
            elif s >= thr:
                k_sc[n_sc] = k
                l_sc[n_sc] = s
                n_sc += 1
        # The screened maximum is an exact candidate, and a screened-only one lies below it by more than its error.
        best = -np.inf
        for j in range(n_ex):
            k = k_ex[j]
            lk = log_const[k] - 0.5 * _mahalanobis(X, i, means, inv_var, k)
            l_ex[j] = lk
            best = max(best, lk)
        # one list from here on: exact candidates [0, n_ex), then the screened-only ones
        n = n_ex + n_sc
        for j in range(n_sc):
            k_ex[n_ex + j] = k_sc[j]
            l_ex[n_ex + j] = l_sc[j]
        for j in range(n):
            l_ex[j] -= best
        _exp_nonpositive(l_ex, n, q_ex)
        tot = 0.0
        kept = 0
        for j in range(n):
            ok = l_ex[j] >= -clamp
            q_ex[j] = q_ex[j] if ok else np.float32(0.0)
            tot += q_ex[j]
            kept += ok
        inv = 1.0 / tot
        if hard:
            jb = 0
            for j in range(1, n_ex):
                if l_ex[j] > l_ex[jb]:
                    jb = j
            k_ex[0] = k_ex[jb]
            q_ex[0] = 1.0
            n = 1
            kept = 1
            inv = 1.0
        nnz += kept
        # Split the kept posteriors into the float64 list (w >= small) and the float32 one, without branches.
        # Any order within a descriptor gives the same sums: each row r of S0, S12, T12 gets one term from it.
        n_big = 0
        n_small = 0
        for j in range(n):
            w = np.float64(q_ex[j]) * inv
            big = w >= small
            k_big[n_big] = k_ex[j]
            w_big[n_big] = w
            k_small[n_small] = k_ex[j]
            w_small[n_small] = w
            n_big += big
            n_small += (not big) and w != 0.0
        for g in range(G):
            cid = cells[i, g]
            if cid < 0:
                continue
            counts[cid] += 1.0
            base = cid * K
            for j in range(n_big):
                w = w_big[j]
                r = base + k_big[j]
                S0[r] += w
                for d in range(P):
                    S12[r, d] += w * x12[d]
            for j in range(n_small):
                w = w_small[j]
                r = base + k_small[j]
                S0[r] += w
                w32 = np.float32(w)
                for d in range(P):
                    T12[r, d] += w32 * y12[d]
    return nnz


@njit(cache=True, nogil=True)
def dense_posteriors(X, screen, thr, thr_exact, means, inv_var, log_const, clamp, out, log_px):
    """Dense posterior matrix of one block: out (n, K) float32 (zeros where dropped), log_px (n,) float64."""
    n_rows = X.shape[0]
    K = means.shape[0]
    idx = np.empty(K, np.int32)
    q = np.empty(K, np.float64)
    ebuf = np.empty(K, np.float32)
    for i in range(n_rows):
        kept, lp = row_posteriors(X, i, screen, thr[i], thr_exact[i], means, inv_var, log_const, clamp, idx, q,
                                   ebuf)
        log_px[i] = lp
        for k in range(K):
            out[i, k] = 0.0
        for j in range(kept):
            out[i, idx[j]] = q[j]
