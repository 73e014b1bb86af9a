"""The linear-kernel route to one-vs-rest linear SVMs at dataset scale.

With n training videos of d-dimensional Fisher vectors and n << d (UCF101: n = 9,537, d = 109,056), the dual
is the cheap side: compute the linear kernel ``K = X X^T`` once (float32 BLAS, blockwise over rows so that no
copy of X is made), solve each class's binary dual problem on K (:func:`idtfv.classify._svm_dcd_nb.dcd_binary`,
liblinear's dual coordinate descent with the same losses and bias), then recover the primal weights
``w_c = sum_i alpha_ci y_ci x_i`` with one pass over X. Classes run in parallel threads (the kernel releases
the GIL), all sharing one K.
"""

from __future__ import annotations

import numpy as np
from joblib import Parallel, delayed

from ._svm_dcd_nb import dcd_binary

__all__ = ["linear_kernel", "solve_ovr", "primal_weights", "LOSSES"]

#: loss name -> (upper bound U(C), diagonal D_ii(C)) of the dual problem
LOSSES = {
    "hinge": lambda C: (float(C), 0.0),
    "squared_hinge": lambda C: (np.inf, 0.5 / float(C)),
}


def _rows(X, index, start, stop):
    """Rows ``index[start:stop]`` of X (a view when ``index`` is None) as C-contiguous float32."""
    blk = X[start:stop] if index is None else X[index[start:stop]]
    return np.ascontiguousarray(blk, dtype=np.float32)


def linear_kernel(X, *, index=None, block_rows: int = 2048) -> np.ndarray:
    """Linear kernel ``K = X_s X_s^T`` of the selected rows, float32, exactly symmetric.

    Parameters
    ----------
    X : ndarray, shape (N, d)
        Features (float32 preferred; other dtypes are converted one block at a time).
    index : ndarray of int, shape (n,), optional, keyword-only
        Rows of X to use (default: all). Only blocks of selected rows are ever copied.
    block_rows : int
        Rows per block; each block product is one SGEMM of (block_rows, d) x (d, block_rows).

    Returns
    -------
    K : ndarray, shape (n, n), float32
        Upper-triangle blocks are computed, the lower triangle mirrors them.
    """
    n = X.shape[0] if index is None else len(index)
    K = np.empty((n, n), dtype=np.float32)
    starts = list(range(0, n, block_rows))
    for a, i0 in enumerate(starts):
        i1 = min(i0 + block_rows, n)
        Xi = _rows(X, index, i0, i1)
        for j0 in starts[a:]:
            j1 = min(j0 + block_rows, n)
            Xj = Xi if j0 == i0 else _rows(X, index, j0, j1)
            blk = Xi @ Xj.T
            K[i0:i1, j0:j1] = blk
            K[j0:j1, i0:i1] = blk.T
    # make the diagonal blocks exactly symmetric (SGEMM may round (p, q) and (q, p) differently)
    for i0 in starts:
        i1 = min(i0 + block_rows, n)
        D = K[i0:i1, i0:i1]
        lo = np.tril_indices(i1 - i0, -1)
        D[lo] = D.T[lo]
    return K


def _solve_one(K, ysign, C, loss, bias2, tol, max_iter, seed):
    upper, diag = LOSSES[loss](C)
    n = K.shape[0]
    alpha = np.zeros(n)
    h = np.zeros(n)
    passes, gap = dcd_binary(K, ysign, upper, diag, bias2, tol, max_iter, seed, alpha, h)
    return alpha * ysign, int(passes), float(gap)


def solve_ovr(K, Ysign, *, C: float, loss: str, intercept_scaling: float, tol: float, max_iter: int,
              random_state: int, n_jobs: int = 1):
    """Solve one binary dual SVM per column of ``Ysign`` on a shared kernel.

    Parameters
    ----------
    K : ndarray, shape (n, n), float32, C-contiguous
    Ysign : ndarray, shape (n, C), float64 of +-1
        Column c: +1 for the positives of class c.
    C, loss, intercept_scaling, tol, max_iter : see :class:`idtfv.classify.svm.LinearSVM`
    random_state : int
        Class c's visiting order is seeded with ``random_state * 1_000_003 + c``: results do not depend on
        ``n_jobs``.
    n_jobs : int
        Threads (the Numba kernel releases the GIL).

    Returns
    -------
    beta : ndarray, shape (C, n), float64
        ``alpha_ci * y_ci``; the weights are ``beta @ X`` and the bias ``B^2 * beta.sum(1)``.
    passes : ndarray, shape (C,), int
    gaps : ndarray, shape (C,)
        Final projected-gradient spread (converged when <= tol).
    """
    bias2 = float(intercept_scaling) ** 2
    base = int(random_state) * 1_000_003
    jobs = [
        delayed(_solve_one)(K, np.ascontiguousarray(Ysign[:, c]), C, loss, bias2, tol, max_iter, base + c)
        for c in range(Ysign.shape[1])
    ]
    out = Parallel(n_jobs=n_jobs, backend="threading")(jobs)
    beta = np.stack([o[0] for o in out]) if out else np.zeros((0, K.shape[0]))
    return beta, np.array([o[1] for o in out]), np.array([o[2] for o in out])


def primal_weights(X, beta, *, index=None, block_rows: int = 256) -> np.ndarray:
    """``W = beta @ X_s`` in float64, accumulated over row blocks of X (no full copy of X).

    Parameters
    ----------
    X : ndarray, shape (N, d)
    beta : ndarray, shape (C, n)
    index : ndarray of int, shape (n,), optional
        Rows of X matching beta's columns.
    block_rows : int
        Rows converted to float64 at a time (memory: ``block_rows * d * 8`` bytes).

    Returns
    -------
    W : ndarray, shape (C, d), float64
    """
    n = X.shape[0] if index is None else len(index)
    W = np.zeros((beta.shape[0], X.shape[1]), dtype=np.float64)
    for i0 in range(0, n, block_rows):
        i1 = min(i0 + block_rows, n)
        W += beta[:, i0:i1] @ _rows(X, index, i0, i1).astype(np.float64)
    return W
