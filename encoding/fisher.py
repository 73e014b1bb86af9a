"""Fisher vectors in VLFeat's exact layout and normalisation (Perronnin et al. 2010; VLFeat ``vl_fisher``).

For N descriptors x_i (D dims) and a diagonal GMM (pi_k, mu_k, sigma_k^2), k = 1..K, with posteriors q_ik
(log-sum-exp over the joint log-likelihoods):

    u_k = 1 / (N sqrt(pi_k))   sum_i q_ik (x_i - mu_k) / sigma_k
    v_k = 1 / (N sqrt(2 pi_k)) sum_i q_ik [((x_i - mu_k) / sigma_k)^2 - 1]

The Fisher vector is ``[u_1, ..., u_K, v_1, ..., v_K]`` (2KD numbers, each u_k / v_k a block of D). "Improved"
(Perronnin et al. 2010) = signed square root sign(z) sqrt(|z|), then L2 normalisation with VLFeat's norm floor
``max(||z||, 1e-12)``.

Speed (``_gaussians``, ``_posterior_nb.fisher_block``): every l_k comes from one float32 GEMM screen (the one
BLAS call); one Numba pass per descriptor then finds its candidates (bit masks), and the components within
12 nats of a descriptor's best are recomputed exactly (direct Mahalanobis sums), the others down to ``clamp``
(30 nats, posterior ~1e-13 of the best) keep the screened value. For the kept posteriors the kernel accumulates
sufficient statistics S0 = sum q, S1 = sum q x, S2 = sum q x^2 (one contiguous 2D-wide multiply-add per pair;
float64 for q >= ``SMALL_POSTERIOR``, float32 per block of 2048 descriptors below it), and u_k, v_k follow by exact
algebra in float64:

    u_k ~ (S1 - mu_k S0) / sigma_k,   v_k ~ (S2 - 2 mu_k S1 + mu_k^2 S0) / sigma_k^2 - S0.

Tests compare every option with a naive float64 implementation at 1e-5, including means far from the origin
(mu^2 / sigma^2 ~ 1e4, where all-float32 statistics fail).
"""

from __future__ import annotations

import numpy as np

from idtfv.errors import ParameterError

from . import _posterior_nb as _nb
from ._gaussians import (EXACT_WINDOW, LOG_POSTERIOR_CLAMP, SCREEN_MARGIN_ABS, SCREEN_MARGIN_REL, PreparedGMM,
                         iter_screens)

__all__ = ["fisher_vector", "fisher_vectors_cells", "normalize_fisher", "NORM_FLOOR"]

#: VLFeat's floor on the L2 norm (``VL_MAX(n, 1e-12)``): an all-zero vector stays zero instead of NaN.
NORM_FLOOR = 1e-12
#: Posteriors below this are summed in float32 (per block), the others in float64 (see
#: ``_posterior_nb.fisher_block``): the small ones carry at most 1e-6 of a descriptor's mass each.
SMALL_POSTERIOR = 1e-6


def _check_descriptors(X, D: int, name: str = "X") -> np.ndarray:
    X = np.asarray(X)
    if X.ndim != 2 or X.shape[1] != D:
        raise ParameterError(f"{name}: expected an (N, {D}) array of descriptors matching the GMM, got shape "
                             f"{X.shape}; project the descriptors with the same PCA the GMM was fitted on")
    X = np.ascontiguousarray(X, dtype=np.float32)
    if X.size and not np.isfinite(X).all():
        raise ParameterError(f"{name}: descriptors contain NaN or infinity; drop those rows before encoding")
    return X


def _as_prepared(gmm) -> PreparedGMM:
    if isinstance(gmm, PreparedGMM):
        return gmm
    prepared = getattr(gmm, "prepared_", None)
    if prepared is not None:
        return prepared
    try:
        means, variances, weights = gmm
    except (TypeError, ValueError):  # an unfitted DiagGMM, None, ...: not "cannot unpack non-iterable"
        what = "an unfitted DiagGMM" if hasattr(gmm, "n_components") else type(gmm).__name__
        raise ParameterError(f"gmm: expected a fitted DiagGMM (or a (means, variances, weights) tuple), got {what}; "
                             "fit it first (DiagGMM(K).fit(X)) or load one (load_codebooks)") from None
    return PreparedGMM.from_params(means, variances, weights)


def normalize_fisher(F: np.ndarray, *, improved: bool = True, square_root: bool | None = None,
                     normalized: bool | None = None, norm_floor: float = NORM_FLOOR) -> np.ndarray:
    """Signed square root and/or L2 normalisation of Fisher vectors along the last axis (in place, returned).

    ``improved=True`` turns both on (VLFeat ``Improved``); ``square_root`` / ``normalized`` override each part.
    """
    sq = improved if square_root is None else square_root
    nz = improved if normalized is None else normalized
    if sq:
        np.copysign(np.sqrt(np.abs(F)), F, out=F)
    if nz:
        n = np.sqrt(np.einsum("...i,...i->...", F, F, dtype=np.float64))
        F /= np.maximum(n, norm_floor)[..., None].astype(F.dtype)
    return F


def fisher_vectors_cells(X, gmm, cells=None, n_cells: int = 1, *, improved: bool = True,
                         square_root: bool | None = None, normalized: bool | None = None,
                         fast: bool = False, norm_floor: float = NORM_FLOOR,
                         clamp: float = LOG_POSTERIOR_CLAMP, return_stats: bool = False):
    """Fisher vectors of the descriptors falling in each of ``n_cells`` cells (spatio-temporal pyramid cells).

    Parameters
    ----------
    X : (N, D) array of descriptors (converted to float32).
    gmm : a fitted :class:`idtfv.encoding.gmm.DiagGMM`, a :class:`PreparedGMM`, or ``(means (K,D), variances (K,D),
        weights (K,))``.
    cells : (N, G) int array or None. Row i contributes to cells ``cells[i, g]`` for every g (one id per pyramid
        grid; -1 skips). None puts every descriptor in cell 0.
    n_cells : number C of cells.
    improved, square_root, normalized : normalisation, as :func:`normalize_fisher`.
    fast : VLFeat's ``Fast`` option: each descriptor counts only for its most likely component (posterior 1).
    norm_floor : floor on the L2 norm (VLFeat 1e-12).
    clamp : log-posteriors below ``-clamp`` (relative to the best component) are zero.

    Returns
    -------
    F : (C, 2KD) float32, layout ``[u_1..u_K, v_1..v_K]`` per cell; a cell without descriptors is all zeros.
    counts : (C,) int64 descriptors per cell (only with ``return_stats``).
    """
    g = _as_prepared(gmm)
    K, D = g.means.shape
    X = _check_descriptors(X, D)
    N = X.shape[0]
    if cells is None:
        cells = np.zeros((N, 1), np.int64)
        n_cells = 1
    else:
        cells = np.asarray(cells)
        if cells.ndim == 1:
            cells = cells[:, None]
        if cells.shape[0] != N:
            raise ParameterError(f"cells: expected {N} rows (one per descriptor), got {cells.shape[0]}")
        if cells.dtype.kind not in "biu" and not (cells.dtype.kind == "f" and np.all(cells == np.round(cells))):
            raise ParameterError(f"cells: expected integer cell ids (-1 skips), got dtype {cells.dtype} "
                                 f"(e.g. {cells.ravel()[:3].tolist()}); give the pyramid's integer ids")
        cells = np.ascontiguousarray(cells, np.int64)
        if cells.size and (cells.max() >= n_cells or cells.min() < -1):
            raise ParameterError(f"cells: ids must lie in [-1, {n_cells - 1}], got [{cells.min()}, {cells.max()}]")
    P = _nb.stats_width(D)
    S0 = np.zeros((n_cells, K), np.float64)
    S12 = np.zeros((n_cells, K, P), np.float64)
    counts = np.zeros(n_cells, np.float64)
    T12 = np.empty((n_cells, K, P), np.float32)
    for start, xb, screen in iter_screens(X, g):
        T12.fill(0.0)
        _nb.fisher_block(xb, screen, g.means, g.inv_var, g.log_const, g.a_max, g.b_max, g.c_max, float(clamp),
                         EXACT_WINDOW, SCREEN_MARGIN_ABS, SCREEN_MARGIN_REL, SMALL_POSTERIOR, bool(fast),
                         cells[start:start + xb.shape[0]], S0.reshape(-1), S12.reshape(-1, P),
                         T12.reshape(-1, P), counts)
        S12 += T12
    # sum_i q_ik z_ik = (S1 - mu S0) / sigma; sum_i q_ik (z_ik^2 - 1) = (S2 - 2 mu S1 + mu^2 S0) / sigma^2 - S0
    mu = g.means.astype(np.float64)
    isd = g.sqrt_inv_var.astype(np.float64)
    s0 = S0[:, :, None]
    S1, S2 = S12[:, :, :D], S12[:, :, D:2 * D]
    c1 = S1 - mu * s0
    U = c1 * isd
    V = ((S2 - mu * S1) - mu * c1) * (isd * isd) - s0
    w = g.weights
    F = np.zeros((n_cells, 2, K, D), np.float64)
    nonempty = counts > 0
    if nonempty.any():
        n = counts[nonempty][:, None, None]
        with np.errstate(divide="ignore", invalid="ignore"):  # pi_k = 0: u_k = v_k = 0 below
            F[nonempty, 0] = U[nonempty] / (n * np.sqrt(w)[None, :, None])
            F[nonempty, 1] = V[nonempty] / (n * np.sqrt(2.0 * w)[None, :, None])
    F = np.nan_to_num(F, nan=0.0, posinf=0.0, neginf=0.0).reshape(n_cells, 2 * K * D).astype(np.float32)
    normalize_fisher(F, improved=improved, square_root=square_root, normalized=normalized, norm_floor=norm_floor)
    if return_stats:
        return F, counts.astype(np.int64)
    return F


def fisher_vector(X, gmm, *, improved: bool = True, square_root: bool | None = None,
                  normalized: bool | None = None, fast: bool = False,
                  norm_floor: float = NORM_FLOOR, clamp: float = LOG_POSTERIOR_CLAMP) -> np.ndarray:
    """Fisher vector (2KD,) float32 of descriptors X (N, D), VLFeat layout ``[u_1..u_K, v_1..v_K]``.

    Same options as :func:`fisher_vectors_cells`; ``improved=False`` gives VLFeat's plain (unnormalised) FV.
    No descriptors gives the zero vector.
    """
    return fisher_vectors_cells(X, gmm, None, 1, improved=improved, square_root=square_root,
                                normalized=normalized, fast=fast, norm_floor=norm_floor,
                                clamp=clamp)[0]
