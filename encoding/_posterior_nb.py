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
def row_posteriors(X, i, screen, thr, thr_exact, means, inv_var, log_const, clamp, idx, q):
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
    tot = 0.0
    kept = 0
    for j in range(n):
        dl = q[j] - best
        ok = dl >= -clamp
        e = np.float64(math.exp(np.float32(max(dl, -80.0))))  # float32 exp: 2x faster, 1e-7 relative
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
    x64 = np.empty(D, np.float64)
    ll = 0.0
    nnz = 0
    for i in range(n_rows):
        kept, lp = row_posteriors(X, i, screen, thr[i], thr_exact[i], means, inv_var, log_const, clamp, idx, q)
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
def fisher_accumulate(X, screen, thr, thr_exact, means, inv_var, log_const, clamp, hard, sqrt_inv_var,
                      cells, U, V, counts):
    """Add one block's Fisher statistics into every pyramid cell that each descriptor falls in.

    U[c, k] += sum_i q_ik z_ik and V[c, k] += sum_i q_ik (z_ik^2 - 1) with z_ik = (x_i - mu_k) / sigma_k.
    ``hard`` is VLFeat's ``Fast`` option: each descriptor is assigned to its most likely component only, with
    posterior 1 (ties go to the lowest component index).

    X (n, D) float32, screen (n, K), thr and thr_exact (n,) from the GEMM screen, sqrt_inv_var (K, D) float32
    (1 / sigma), cells (n, G) int64 cell ids (one per pyramid grid, -1 to skip), U and V (C, K, D) float32 block
    accumulators (a block holds a few thousand descriptors: float32 sums stay exact to ~1e-6; the driver adds
    them into float64 totals), counts (C,) float64; all updated in place. Returns the number of kept (i, k) pairs.
    """
    n_rows, D = X.shape
    K = means.shape[0]
    G = cells.shape[1]
    idx = np.empty(K, np.int32)
    q = np.empty(K, np.float64)
    nnz = 0
    for i in range(n_rows):
        kept, lp = row_posteriors(X, i, screen, thr[i], thr_exact[i], means, inv_var, log_const, clamp, idx, q)
        if hard:
            best = 0
            for j in range(1, kept):
                if q[j] > q[best] or (q[j] == q[best] and idx[j] < idx[best]):
                    best = j
            idx[0] = idx[best]
            q[0] = 1.0
            kept = 1
        nnz += kept
        for g in range(G):
            cid = cells[i, g]
            if cid >= 0:
                counts[cid] += 1.0
        for j in range(kept):
            k = idx[j]
            w = np.float32(q[j])
            for g in range(G):
                cid = cells[i, g]
                if cid < 0:
                    continue
                for d in range(D):  # z recomputed per grid: cheaper than a round trip through a buffer
                    zd = (X[i, d] - means[k, d]) * sqrt_inv_var[k, d]
                    wz = w * zd
                    U[cid, k, d] += wz
                    V[cid, k, d] += wz * zd - w
    return nnz


@njit(cache=True, nogil=True)
def dense_posteriors(X, screen, thr, thr_exact, means, inv_var, log_const, clamp, out, log_px):
    """Dense posterior matrix of one block: out (n, K) float32 (zeros where dropped), log_px (n,) float64."""
    n_rows = X.shape[0]
    K = means.shape[0]
    idx = np.empty(K, np.int32)
    q = np.empty(K, np.float64)
    for i in range(n_rows):
        kept, lp = row_posteriors(X, i, screen, thr[i], thr_exact[i], means, inv_var, log_const, clamp, idx, q)
        log_px[i] = lp
        for k in range(K):
            out[i, k] = 0.0
        for j in range(kept):
            out[i, idx[j]] = q[j]
