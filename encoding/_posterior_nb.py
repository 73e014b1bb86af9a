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
def row_posteriors(X, i, screen, thr, thr_exact, means, inv_var, log_const, clamp, idx, q, ebuf, ibuf):
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
    ebuf, ibuf : (K,) float32 and int32 scratch.

    Returns
    -------
    n : int, number of kept posteriors (first n entries of idx, q).
    log_px : float, log p(x) = log sum_k exp(l_k(x)) (over the kept components).
    """
    # Branch-free compaction of the candidates (a data-dependent branch per component mispredicts often).
    n = 0
    for k in range(screen.shape[1]):
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
    # exp(l_j - best) in float32 (1e-7 relative, as libm's expf), in a loop LLVM vectorises: 2^m p(r) with
    # r = x - m ln 2 in [-ln2/2, ln2/2] and p the degree-7 Taylor polynomial (truncation below 6e-9); 2^m is built
    # from its exponent bits (x >= -80: m >= -116, a normal float32).
    for j in range(n):
        x = np.float32(max(q[j] - best, -80.0))
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
        ebuf[j] = p
        ibuf[j] = (np.int32(m) + 127) << 23
    two_m = ibuf.view(np.float32)
    tot = 0.0
    kept = 0
    for j in range(n):
        ok = q[j] - best >= -clamp
        e = np.float64(ebuf[j] * two_m[j])
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
    ibuf = np.empty(K, np.int32)
    x64 = np.empty(D, np.float64)
    ll = 0.0
    nnz = 0
    for i in range(n_rows):
        kept, lp = row_posteriors(X, i, screen, thr[i], thr_exact[i], means, inv_var, log_const, clamp, idx, q,
                                   ebuf, ibuf)
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
def fisher_accumulate(X, screen, thr, thr_exact, means, inv_var, log_const, clamp, hard, cells, small,
                      S0, S12, T12, counts):
    """Add one block's Fisher sufficient statistics into every pyramid cell that each descriptor falls in.

    Row r = c K + k: S0[r] += sum_i q_ik and S12[r] += sum_i q_ik [x_i, x_i^2] (S1 then S2, 2D wide); the driver
    turns them into sum_i q_ik z_ik = (S1 - mu S0) / sigma and sum_i q_ik (z_ik^2 - 1) = (S2 - 2 mu S1 + mu^2 S0) /
    sigma^2 - S0. That algebra cancels about log10(mu^2 / sigma^2) digits, so posteriors q >= ``small`` (~4 per
    descriptor at D=48, K=256) go into the float64 sums S12, and only the many tiny ones (q < small: ~15 per
    descriptor; a relative error even of 1e-2 on them is below 1e-8 of a descriptor's mass) into the float32 block
    sums T12. Measured: float32 for all fails the 1e-5 tests once mu^2 / sigma^2 is large, and float64 for all is no
    faster than the direct per-pair z_ik = (x_i - mu_k) / sigma_k form (memory traffic per pair); the split is
    ~10% faster at D=48. One contiguous 2D-wide multiply-add per kept (i, k) pair and grid.
    ``hard`` is VLFeat's ``Fast`` option: each descriptor is assigned to its most likely component only, with
    posterior 1 (ties go to the lowest component index).

    X (n, D) float32, screen (n, K), thr and thr_exact (n,) from the GEMM screen, cells (n, G) int64 cell ids
    (one per pyramid grid, -1 to skip), S0 (C K,) and S12 (C K, 2D) float64 totals, T12 (C K, 2D) float32 block
    sums, counts (C,) float64; all updated in place. Returns the number of kept (i, k) pairs.
    """
    n_rows, D = X.shape
    K = means.shape[0]
    G = cells.shape[1]
    idx = np.empty(K, np.int32)
    q = np.empty(K, np.float64)
    ebuf = np.empty(K, np.float32)
    ibuf = np.empty(K, np.int32)
    x12 = np.empty(2 * D, np.float64)
    y12 = np.empty(2 * D, np.float32)
    kb = np.empty(K, np.int32)  # large posteriors: component, weight
    wb = np.empty(K, np.float64)
    ks = np.empty(K, np.int32)  # small posteriors
    ws = np.empty(K, np.float32)
    nnz = 0
    for i in range(n_rows):
        kept, lp = row_posteriors(X, i, screen, thr[i], thr_exact[i], means, inv_var, log_const, clamp, idx, q,
                                   ebuf, ibuf)
        if hard:
            best = 0
            for j in range(1, kept):
                if q[j] > q[best] or (q[j] == q[best] and idx[j] < idx[best]):
                    best = j
            idx[0] = idx[best]
            q[0] = 1.0
            kept = 1
        nnz += kept
        for d in range(D):
            xd = np.float64(X[i, d])
            x12[d] = xd
            x12[D + d] = xd * xd
        for d in range(2 * D):
            y12[d] = np.float32(x12[d])
        # Branch-free split (large first, small after): a branch per pair mispredicts.
        nbig = 0
        for j in range(kept):
            k = idx[j]
            w = q[j]
            kb[nbig] = k
            wb[nbig] = w
            ks[j - nbig] = k
            ws[j - nbig] = np.float32(w)
            nbig += w >= small
        for g in range(G):
            cid = cells[i, g]
            if cid < 0:
                continue
            counts[cid] += 1.0
            base = cid * K
            for j in range(nbig):
                r = base + kb[j]
                w = wb[j]
                S0[r] += w
                for d in range(2 * D):
                    S12[r, d] += w * x12[d]
            for j in range(kept - nbig):
                r = base + ks[j]
                w32 = ws[j]
                S0[r] += w32
                for d in range(2 * D):
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
    ibuf = np.empty(K, np.int32)
    for i in range(n_rows):
        kept, lp = row_posteriors(X, i, screen, thr[i], thr_exact[i], means, inv_var, log_const, clamp, idx, q,
                                   ebuf, ibuf)
        log_px[i] = lp
        for k in range(K):
            out[i, k] = 0.0
        for j in range(kept):
            out[i, idx[j]] = q[j]
