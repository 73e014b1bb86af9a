"""Precomputed terms of a diagonal GMM for the screened posterior kernels (see ``_posterior_nb``).

The screen of the joint log-likelihood is one float32 GEMM per block of descriptors:

    l_k(x) ~ [x^2, x] @ W + c,   W = [-1/2 sigma_k^-2 ; mu_k sigma_k^-2]  (2D x K),
    c_k = log pi_k - 1/2 sum_d log sigma_kd^2 - D/2 log(2 pi) - 1/2 sum_d mu_kd^2 sigma_kd^-2.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

#: Log-posteriors more than this many nats below a row's best component are set to zero (exp(-30) ~ 1e-13,
#: relative to the best posterior): keeps float32 arithmetic away from denormal numbers (8-9x slowdowns) and
#: changes Fisher vectors by far less than 1e-5 after normalisation; set 60 or more to keep everything float32 holds.
LOG_POSTERIOR_CLAMP = 30.0
#: Extra nats kept by the float32 screen: an absolute part, plus a part relative to the sum S of |terms| of the
#: expansion. A float32 dot product of length 2D+1 errs by at most (2D+1) u S (u = 2^-24) and typically by about
#: sqrt(2D+1) u S; 1e-5 S covers the strict bound up to D = 80 and is ~8x the typical error at D = 213 (measured:
#: screens agree with exact float64 values to 1e-4 nats in median; the benchmark compares with float64 FVs).
SCREEN_MARGIN_ABS = 1.0
SCREEN_MARGIN_REL = 1e-5
#: Candidates within this many nats (plus the margin) of the screened best get their log-likelihood recomputed
#: exactly; the others keep the float32 screen, whose error only touches posteriors below exp(-12) ~ 6e-6 of the
#: best (an absolute posterior error below 1e-9).
EXACT_WINDOW = 12.0
#: Rows per GEMM block: the (block, K) screen stays cache-sized (2048 x 256 float32 = 2 MiB).
BLOCK_ROWS = 2048


@dataclass(frozen=True)
class PreparedGMM:
    """Diagonal GMM in the form the kernels use. Shapes: K components, D dimensions."""

    means: np.ndarray  # (K, D) float32, mu
    inv_var: np.ndarray  # (K, D) float32, 1 / sigma^2
    sqrt_inv_var: np.ndarray  # (K, D) float32, 1 / sigma
    weights: np.ndarray  # (K,) float64, pi
    log_const: np.ndarray  # (K,) float64
    W: np.ndarray  # (2D+1, K) float32 screen weights (last row: the constant c)
    a_max: np.ndarray  # (D,) float64
    b_max: np.ndarray  # (D,) float64
    c_max: float

    @classmethod
    def from_params(cls, means, variances, weights) -> "PreparedGMM":
        mu = np.asarray(means, np.float64)
        var = np.asarray(variances, np.float64)
        w = np.asarray(weights, np.float64)
        K, D = mu.shape
        inv_var = 1.0 / var
        with np.errstate(divide="ignore"):
            log_w = np.log(w)
        log_const = log_w - 0.5 * np.log(var).sum(1) - 0.5 * D * np.log(2.0 * np.pi)
        c = log_const - 0.5 * (mu * mu * inv_var).sum(1)
        finite_c = np.where(np.isfinite(c), c, 0.0)
        W = np.empty((2 * D + 1, K), np.float32)
        W[:D] = (-0.5 * inv_var).T
        W[D:2 * D] = (mu * inv_var).T
        W[2 * D] = np.where(np.isfinite(c), c, -np.finfo(np.float32).max)
        return cls(
            means=np.ascontiguousarray(mu, np.float32),
            inv_var=np.ascontiguousarray(inv_var, np.float32),
            sqrt_inv_var=np.ascontiguousarray(np.sqrt(inv_var), np.float32),
            weights=np.ascontiguousarray(w),
            log_const=np.ascontiguousarray(log_const),
            W=W,
            a_max=np.ascontiguousarray((0.5 * inv_var).max(0)),
            b_max=np.ascontiguousarray(np.abs(mu * inv_var).max(0)),
            c_max=float(np.abs(finite_c).max()),
        )

    def kernel_args(self, clamp: float = LOG_POSTERIOR_CLAMP):
        """Arguments shared by every kernel of ``_posterior_nb`` after (X, screen, thr)."""
        return (self.means, self.inv_var, self.log_const, float(clamp))


def iter_screens(X: np.ndarray, g: PreparedGMM, *, block_rows: int = BLOCK_ROWS):
    """Yield ``(start, X_block, screen)``: the float32 GEMM screen ``[x^2, x, 1] @ W`` of each block of rows.

    X (N, D) C-contiguous float32; ``screen`` (n, K) float32 is a buffer reused by the next block.
    """
    N, D = X.shape
    K = g.W.shape[1]
    rows = min(block_rows, max(N, 1))
    A = np.empty((rows, 2 * D + 1), np.float32)
    A[:, 2 * D] = 1.0
    S = np.empty((rows, K), np.float32)
    for start in range(0, N, rows):
        xb = X[start:start + rows]
        nb = xb.shape[0]
        a = A[:nb]
        np.multiply(xb, xb, out=a[:, :D])
        a[:, D:2 * D] = xb
        s = S[:nb]
        np.matmul(a, g.W, out=s)
        yield start, xb, s


def iter_candidates(X: np.ndarray, g: PreparedGMM, *, clamp: float = LOG_POSTERIOR_CLAMP,
                    exact_window: float | None = EXACT_WINDOW, block_rows: int = BLOCK_ROWS):
    """Yield ``(start, X_block, screen, thr, thr_exact)`` for the kernels of ``_posterior_nb``.

    Components with ``screen[i, k] >= thr[i]`` are candidates; those with ``screen[i, k] >= thr_exact[i]`` (within
    ``exact_window`` nats + margin of the screened best) are recomputed exactly. ``exact_window=None``: none
    (EM), ``np.inf``: all.

    The screen is ``[x^2, x, 1] @ W`` (float32 GEMM, (n, K) per block, :func:`iter_screens`); a component is a
    candidate when its screened l_k is within ``clamp + margin_i`` of the row's screened maximum, margin_i =
    SCREEN_MARGIN_ABS + SCREEN_MARGIN_REL * S_i with
    S_i = sum_d (x_d^2 max_k sigma_kd^-2 / 2 + |x_d| max_k |mu_kd| sigma_kd^-2) + max_k |c_k|, a bound on the float32
    rounding of the terms that cancel. (``_posterior_nb.fisher_block`` computes the same thresholds itself.)
    """
    a_max = g.a_max.astype(np.float32)
    b_max = g.b_max.astype(np.float32)
    for start, xb, s in iter_screens(X, g, block_rows=block_rows):
        nb = xb.shape[0]
        scale = (xb * xb) @ a_max  # x^2 >= 0: only the x part needs |.|
        scale += np.abs(xb) @ b_max
        smax = s.max(axis=1)
        margin = SCREEN_MARGIN_ABS + SCREEN_MARGIN_REL * (scale + g.c_max)
        thr = (smax - (clamp + margin)).astype(np.float32)
        if exact_window is None:
            thr_exact = np.full(nb, np.inf, np.float32)
        elif np.isinf(exact_window):
            thr_exact = thr
        else:
            thr_exact = (smax - (exact_window + margin)).astype(np.float32)
        yield start, xb, s, thr, thr_exact
