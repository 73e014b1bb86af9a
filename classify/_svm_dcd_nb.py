"""Numba kernel: dual coordinate descent for a binary linear SVM on a precomputed linear kernel.

Problem (Hsieh et al., ICML 2008, "A dual coordinate descent method for large-scale linear SVM", the algorithm
of liblinear's dual solvers), written for a kernel instead of explicit features::

    min_alpha  f(alpha) = 1/2 alpha^T Qbar alpha - e^T alpha,   0 <= alpha_i <= U
    Qbar_ij    = y_i y_j (K_ij + B^2) + D_ii delta_ij

with K = X X^T the linear kernel, B the bias feature's value (liblinear's ``intercept_scaling``: the bias is
the weight of a constant feature B and is regularised like the other weights; B = 0 means no bias), and

- hinge loss (L1-SVM):          U = C,   D_ii = 0
- squared hinge loss (L2-SVM):  U = inf, D_ii = 1 / (2C)

The primal solution is w = sum_i alpha_i y_i x_i and, for the bias feature, w_B = B sum_i alpha_i y_i, so the
decision is ``w.x + b`` with ``b = B^2 sum_i alpha_i y_i``. The kernel keeps ``h = (K + B^2)(y * alpha)``
(the training decision values), so a coordinate's gradient ``G_i = y_i h_i - 1 + D_ii alpha_i`` costs O(1)
and a step costs one kernel row, O(n).
Stops when the spread of projected gradients over one pass, ``max PG - min PG``, falls below ``eps``
(liblinear's criterion). The visiting order is a fresh permutation per pass from an explicit 64-bit LCG seeded
by ``seed``.

Inputs are validated by the Python driver (:mod:`idtfv.classify.svm`): ``K`` C-contiguous float32 (n, n), symmetric;
``y`` float64 of +-1; ``alpha`` and ``h`` float64 (n,), consistent (``h = (K + B^2)(y * alpha)``), updated in place.
"""

from __future__ import annotations

import numpy as np
from numba import njit

__all__ = ["dcd_binary"]

_LCG_A = np.uint64(6364136223846793005)
_LCG_C = np.uint64(1442695040888963407)


@njit(cache=True, nogil=True)
def _lcg_next(state):
    return state * _LCG_A + _LCG_C


@njit(cache=True, nogil=True)
def dcd_binary(K, y, upper, diag, bias2, eps, max_iter, seed, alpha, h):
    """Run dual coordinate descent in place; return ``(passes, final_gap)``.

    No shrinking: a coordinate check costs O(1) here (``h`` is kept exact for every variable), and a step's
    contiguous, vectorised O(n) update of ``h`` measured ~4x faster than a shrunk, indexed O(active) update
    on UCF101-like kernels.

    Parameters
    ----------
    K : float32 (n, n)      linear kernel X X^T
    y : float64 (n,)        labels +-1
    upper : float           U (``np.inf`` for the squared hinge)
    diag : float            D_ii
    bias2 : float           B^2
    eps : float             stopping tolerance on ``max PG - min PG``
    max_iter : int          maximum number of passes
    seed : int              seed of the visiting order
    alpha, h : float64 (n,) dual variables and ``(K + B^2)(y * alpha)``, updated in place
    """
    n = K.shape[0]
    qii = np.empty(n)
    for i in range(n):
        qii[i] = np.float64(K[i, i]) + bias2 + diag
    perm = np.arange(n)
    state = np.uint64(seed) * _LCG_A + _LCG_C
    gap = np.inf
    it = 0
    while it < max_iter:
        it += 1
        # Fisher-Yates shuffle with the high bits of the LCG
        for s in range(n - 1, 0, -1):
            state = _lcg_next(state)
            r = np.int64((state >> np.uint64(33)) % np.uint64(s + 1))
            tmp = perm[s]
            perm[s] = perm[r]
            perm[r] = tmp
        pgmax = -np.inf
        pgmin = np.inf
        for s in range(n):
            i = perm[s]
            if qii[i] <= 0.0:
                continue
            a = alpha[i]
            g = y[i] * h[i] - 1.0 + diag * a
            pg = g
            if a <= 0.0:
                if g > 0.0:
                    pg = 0.0
            elif a >= upper:
                if g < 0.0:
                    pg = 0.0
            if pg > pgmax:
                pgmax = pg
            if pg < pgmin:
                pgmin = pg
            if pg != 0.0:
                a_new = a - g / qii[i]
                if a_new < 0.0:
                    a_new = 0.0
                elif a_new > upper:
                    a_new = upper
                d = (a_new - a) * y[i]
                if d != 0.0:
                    alpha[i] = a_new
                    row = K[i]
                    for j in range(n):
                        h[j] += d * (np.float64(row[j]) + bias2)
        gap = pgmax - pgmin
        if gap <= eps:
            break
    return it, gap
