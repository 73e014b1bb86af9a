"""Diagonal-covariance Gaussian mixture fitted by EM, fast enough for K=256 on 256,000 descriptors.

Model (K components, D dimensions): p(x) = sum_k pi_k N(x; mu_k, diag(sigma_k^2)).

EM iteration, with posteriors q_ik = pi_k N(x_i; mu_k, sigma_k^2) / p(x_i) (log-sum-exp):

    E:  S0_k = sum_i q_ik,   S1_k = sum_i q_ik x_i,   S2_k = sum_i q_ik x_i^2,   L = 1/N sum_i log p(x_i)
    M:  pi_k = S0_k / N,     mu_k = S1_k / S0_k,      sigma_k^2 = max(S2_k / S0_k - mu_k^2, var_floor)

The E-step screens all l_k with one float32 GEMM (``_gaussians.iter_candidates``) and turns the components within
``clamp`` nats of each descriptor's best into posteriors (``_posterior_nb.em_accumulate``); statistics are
accumulated in float64. Posteriors below exp(-clamp) ~ 1e-6 (relative to the best; EM_CLAMP) are zero, which
keeps float32 arithmetic out of denormal numbers and skips work that changes no result.

Floors, as in VLFeat's ``vl_gmm``: variances are floored at ``var_floor_ratio`` times the largest per-dimension
variance of the data; a component whose prior falls below ``prior_floor`` is *empty* and is restarted by splitting
the component with the largest mass-weighted variance along its widest dimension.
"""

from __future__ import annotations

import logging
import math

import numpy as np
from sklearn.base import BaseEstimator
from sklearn.utils import check_random_state

from idtfv.errors import ParameterError

from . import _posterior_nb as _nb
from ._gaussians import LOG_POSTERIOR_CLAMP, PreparedGMM, iter_candidates

__all__ = ["DiagGMM"]

log = logging.getLogger(__name__)

#: Variance floor relative to the largest per-dimension data variance (VLFeat's default lower bound scale).
VAR_FLOOR_RATIO = 1e-4
#: A component whose prior falls below this is empty and restarted.
PRIOR_FLOOR = 1e-6
#: EM drops posteriors below exp(-14) ~ 1e-6 of the descriptor's best component (3.5x fewer statistics to add
#: than at 30 nats; final log-likelihoods agree to 1e-5 nats in the benchmark). Scoring uses LOG_POSTERIOR_CLAMP.
EM_CLAMP = 14.0


#: Largest descriptor magnitude a GMM takes: D squared differences of 1e15 stay far inside float32's 3.4e38.
MAX_ABS = 1e15


def _check_data(X, name="X") -> np.ndarray:
    X = np.asarray(X)
    if X.ndim != 2 or X.shape[0] == 0 or X.shape[1] == 0:
        raise ParameterError(f"{name}: expected a non-empty (N, D) array of descriptors, got shape {X.shape}")
    X = np.ascontiguousarray(X, dtype=np.float32)
    if not np.isfinite(X).all():
        raise ParameterError(f"{name}: descriptors contain NaN or infinity; drop those rows before fitting")
    big = float(np.abs(X).max())
    if big > MAX_ABS:  # squared distances would overflow float32 (EM then divided by zero)
        raise ParameterError(f"{name}: descriptors reach |x| = {big:.3g}, beyond the {MAX_ABS:.0e} whose squares "
                             "float32 statistics hold; rescale them (e.g. PCA-project or standardise) first")
    return X


def _stats_from_labels(X, labels, K, var_floor):
    """Means, variances, priors of a hard partition (clusters without points get the global statistics)."""
    D = X.shape[1]
    counts = np.bincount(labels, minlength=K).astype(np.float64)
    S1 = np.zeros((K, D))
    S2 = np.zeros((K, D))
    Xd = X.astype(np.float64)
    np.add.at(S1, labels, Xd)
    np.add.at(S2, labels, Xd * Xd)
    glob_mean = Xd.mean(0)
    glob_var = Xd.var(0)
    with np.errstate(divide="ignore", invalid="ignore"):
        mu = S1 / counts[:, None]
        var = S2 / counts[:, None] - mu * mu
    empty = counts == 0
    mu[empty] = glob_mean
    var[empty] = glob_var
    single = counts == 1
    var[single] = glob_var
    var = np.maximum(var, var_floor)
    w = np.maximum(counts, 0.5)
    return mu, var, w / w.sum()


class DiagGMM(BaseEstimator):
    """Diagonal Gaussian mixture with a fast EM (float32 BLAS screen + Numba statistics).

    Parameters
    ----------
    n_components : K, number of Gaussians (default 256, as the iDT papers).
    max_iter : maximum number of EM iterations.
    tol : stop when the mean log-likelihood per descriptor improves by less than this (nats).
    init : ``"kmeans"`` (k-means++ seeding then Lloyd iterations, scikit-learn ``KMeans``), ``"kmeans++"`` (seeding
        only) or ``"random"`` (K random descriptors). Initialisation runs on a random subsample of
        ``init_samples`` descriptors.
    init_samples : size of the initialisation subsample (default ``128 * K``).
    kmeans_iter : Lloyd iterations of the ``"kmeans"`` initialisation.
    kmeans_n_init : k-means runs of the ``"kmeans"`` initialisation (the one of lowest inertia is kept).
    var_floor_ratio : variance floor as a fraction of the largest per-dimension data variance.
    prior_floor : components whose prior falls below this are restarted.
    clamp : during EM, log-posteriors more than ``clamp`` nats below a descriptor's best component are zero
        (scoring and posteriors use ``max(clamp, 30)`` and exact log-likelihoods).
    means_init, variances_init, weights_init : start EM from these parameters ((K, D), (K, D), (K,)) instead of
        ``init`` (all three together).
    random_state : seed or ``np.random.Generator``-compatible state (``sklearn.utils.check_random_state``).
    verbose : log one line per iteration at INFO level.

    Attributes
    ----------
    means_ : (K, D) float32, mu_k.
    variances_ : (K, D) float32, sigma_k^2.
    weights_ : (K,) float64, pi_k.
    lower_bound_ : mean log-likelihood per descriptor at the last E-step (nats).
    history_ : list of the mean log-likelihood at every E-step.
    n_iter_, converged_, n_restarts_ : convergence report (see :meth:`report`). ``converged_`` is True when EM
        stopped because the mean log-likelihood changed by less than ``tol`` between two iterations (with no
        component restarted), False when it stopped at ``max_iter`` first. False is usual for large K on iDT
        descriptors and harmless: the encoding's accuracy hardly depends on the last iterations.
    """

    def __init__(self, n_components: int = 256, *, max_iter: int = 100, tol: float = 1e-3, init: str = "kmeans",
                 init_samples: int | None = None, kmeans_iter: int = 30, kmeans_n_init: int = 1,
                 var_floor_ratio: float = VAR_FLOOR_RATIO, prior_floor: float = PRIOR_FLOOR,
                 clamp: float = EM_CLAMP, means_init=None, variances_init=None, weights_init=None,
                 random_state=None, verbose: bool = False):
        self.n_components = n_components
        self.max_iter = max_iter
        self.tol = tol
        self.init = init
        self.init_samples = init_samples
        self.kmeans_iter = kmeans_iter
        self.kmeans_n_init = kmeans_n_init
        self.var_floor_ratio = var_floor_ratio
        self.prior_floor = prior_floor
        self.clamp = clamp
        self.means_init = means_init
        self.variances_init = variances_init
        self.weights_init = weights_init
        self.random_state = random_state
        self.verbose = verbose

    # ------------------------------------------------------------------ initialisation
    def _init_kmeans(self, Xs, rng, var_floor, *, lloyd: bool):
        from sklearn.cluster import KMeans, kmeans_plusplus

        K = self.n_components
        seed = int(rng.randint(2**31 - 1))
        if lloyd:
            from threadpoolctl import threadpool_limits

            # One OpenMP thread, set here after scikit-learn (and its OpenMP runtime) is loaded: Lloyd's sums are
            # taken in per-thread chunks, so with the machine's thread count the centres, then a few labels, and
            # so the codebook would depend on the number of cores (a caller's threadpool_limits entered before
            # the import does not reach a runtime loaded later).
            with threadpool_limits(limits=1, user_api="openmp"):
                km = KMeans(n_clusters=K, init="k-means++", n_init=max(1, int(self.kmeans_n_init)),
                            max_iter=max(1, self.kmeans_iter), random_state=seed).fit(Xs)
            labels = km.labels_
        else:
            centers, _ = kmeans_plusplus(Xs, K, random_state=seed)
            d = (Xs * Xs).sum(1)[:, None] - 2.0 * Xs @ centers.T + (centers * centers).sum(1)[None]
            labels = d.argmin(1)
        return _stats_from_labels(Xs, labels, K, var_floor)

    def _init_random(self, Xs, rng, var_floor):
        K = self.n_components
        pick = rng.choice(Xs.shape[0], K, replace=False)
        mu = Xs[pick].astype(np.float64)
        var = np.maximum(np.tile(Xs.astype(np.float64).var(0), (K, 1)), var_floor)
        return mu, var, np.full(K, 1.0 / K)

    def _given_init(self, D, var_floor):
        K = self.n_components
        if self.variances_init is None or self.weights_init is None:
            raise ParameterError("means_init needs variances_init and weights_init too")
        mu = np.asarray(self.means_init, np.float64)
        var = np.asarray(self.variances_init, np.float64)
        w = np.asarray(self.weights_init, np.float64)
        if mu.shape != (K, D) or var.shape != (K, D) or w.shape != (K,):
            raise ParameterError(f"initial parameters must be ({K}, {D}), ({K}, {D}), ({K},); got {mu.shape}, "
                                 f"{var.shape}, {w.shape}")
        return mu, np.maximum(var, var_floor), w / w.sum()

    # ------------------------------------------------------------------ EM
    def _validate(self, X):
        K = self.n_components
        if not isinstance(K, (int, np.integer)) or K < 1:
            raise ParameterError(f"n_components must be a positive integer, got {K!r}")
        if X.shape[0] < K:
            raise ParameterError(f"n_components={K} needs at least {K} descriptors to fit, got {X.shape[0]}; "
                                 f"lower n_components or give more data")
        if self.init not in ("kmeans", "kmeans++", "random"):
            raise ParameterError(f"init must be 'kmeans', 'kmeans++' or 'random', got {self.init!r}")
        if self.max_iter < 0:
            raise ParameterError(f"max_iter must be >= 0, got {self.max_iter}")
        if not self.clamp > 0:
            raise ParameterError(f"clamp must be > 0 nats, got {self.clamp}")

    def fit(self, X, y=None):
        """Fit the mixture to descriptors X (N, D); returns self."""
        X = _check_data(X)
        self._validate(X)
        N, D = X.shape
        K = self.n_components
        rng = check_random_state(self.random_state)
        data_var = X.astype(np.float64).var(0)
        var_floor = max(float(self.var_floor_ratio) * float(data_var.max()), np.finfo(np.float32).tiny * 1e3)
        n_init = min(N, int(self.init_samples) if self.init_samples else max(128 * K, 1000))
        Xs = X if n_init >= N else X[np.sort(rng.choice(N, n_init, replace=False))]
        if self.means_init is not None:
            mu, var, w = self._given_init(D, var_floor)
        elif self.init == "random":
            mu, var, w = self._init_random(Xs, rng, var_floor)
        else:
            mu, var, w = self._init_kmeans(Xs, rng, var_floor, lloyd=self.init == "kmeans")
        self.var_floor_ = var_floor
        self.history_ = []
        self.n_restarts_ = 0
        self.converged_ = False
        self.n_iter_ = 0
        self.nnz_per_row_ = float("nan")
        prev = -np.inf
        for it in range(self.max_iter):
            g = PreparedGMM.from_params(mu, var, w)
            S0 = np.zeros(K)
            S1 = np.zeros((K, D))
            S2 = np.zeros((K, D))
            ll = 0.0
            nnz = 0
            for _, xb, screen, thr, thr_exact in iter_candidates(X, g, clamp=self.clamp, exact_window=None):
                l, n = _nb.em_accumulate(xb, screen, thr, thr_exact, *g.kernel_args(self.clamp), S0, S1, S2)
                ll += l
                nnz += n
            ll /= N
            self.history_.append(ll)
            self.nnz_per_row_ = nnz / N
            mu, var, w, restarted = self._m_step(S0, S1, S2, N, var_floor)
            self.n_restarts_ += restarted
            self.n_iter_ = it + 1
            if self.verbose:
                log.info("GMM K=%d iter %d: mean log-likelihood %.6f (%.1f posteriors/descriptor, %d restarts)",
                         K, it + 1, ll, nnz / N, restarted)
            if abs(ll - prev) < self.tol and restarted == 0:
                self.converged_ = True
                break
            prev = ll
        self.lower_bound_ = self.history_[-1] if self.history_ else float("nan")
        self._set_params(mu, var, w)
        if not self.converged_ and self.max_iter > 0 and self.verbose:
            log.info("GMM K=%d: EM stopped at max_iter=%d iterations while the mean log-likelihood still changed "
                     "by %.3g nats per descriptor (more than tol=%g, or a component was restarted), so it is not "
                     "converged; that is usual for large K and harmless for encoding; raise max_iter to run longer",
                     K, self.max_iter, (self.history_[-1] - self.history_[-2]) if len(self.history_) > 1 else
                     float("nan"), self.tol)
        return self

    def _m_step(self, S0, S1, S2, N, var_floor):
        w = S0 / N
        safe = np.maximum(S0, 1e-300)[:, None]
        mu = S1 / safe
        var = np.maximum(S2 / safe - mu * mu, var_floor)
        empty = np.flatnonzero(w < self.prior_floor)
        for k in empty:
            # Split the component with the largest mass-weighted total variance along its widest dimension.
            j = int(np.argmax(w * var.sum(1)))
            d = int(np.argmax(var[j]))
            step = math.sqrt(var[j, d]) * 0.5
            mu[k] = mu[j]
            mu[k, d] += step
            mu[j, d] -= step
            var[k] = var[j]
            w[k] = w[j] = w[j] / 2.0
        w = np.maximum(w, self.prior_floor)
        return mu, var, w / w.sum(), len(empty)

    def _set_params(self, mu, var, w):
        self.means_ = np.ascontiguousarray(mu, np.float32)
        self.variances_ = np.ascontiguousarray(var, np.float32)
        self.weights_ = np.ascontiguousarray(w, np.float64)
        self.prepared_ = PreparedGMM.from_params(self.means_, self.variances_, self.weights_)

    # ------------------------------------------------------------------ use
    @classmethod
    def from_params(cls, means, variances, weights, **kwargs) -> "DiagGMM":
        """A fitted mixture from its parameters (means (K, D), variances (K, D), weights (K,))."""
        means = np.asarray(means)
        if means.ndim != 2:
            raise ParameterError(f"means must be (K, D), got shape {means.shape}")
        variances = np.asarray(variances)
        weights = np.asarray(weights, np.float64)
        if variances.shape != means.shape or weights.shape != (means.shape[0],):
            raise ParameterError(f"GMM parameters disagree: means {means.shape}, variances {variances.shape}, "
                                 f"weights {weights.shape}; expected (K, D), (K, D), (K,)")
        if not (variances > 0).all() or not (weights >= 0).all() or not np.isclose(weights.sum(), 1.0, atol=1e-4):
            raise ParameterError("GMM parameters invalid: variances must be > 0 and weights >= 0 summing to 1")
        gmm = cls(n_components=means.shape[0], **kwargs)
        gmm._set_params(means, variances, weights)
        return gmm

    def _check_fitted(self):
        if not hasattr(self, "means_"):
            raise ParameterError("this DiagGMM is not fitted yet; call fit(X) first")

    def _dense(self, X):
        self._check_fitted()
        X = _check_data(X)
        if X.shape[1] != self.means_.shape[1]:
            raise ParameterError(f"X has {X.shape[1]} dimensions, the GMM {self.means_.shape[1]}")
        g = self.prepared_
        clamp = max(float(self.clamp), LOG_POSTERIOR_CLAMP)
        Q = np.zeros((X.shape[0], self.means_.shape[0]), np.float32)
        lp = np.zeros(X.shape[0], np.float64)
        for start, xb, screen, thr, thr_exact in iter_candidates(X, g, clamp=clamp, exact_window=np.inf):
            n = xb.shape[0]
            _nb.dense_posteriors(xb, screen, thr, thr_exact, *g.kernel_args(clamp), Q[start:start + n],
                                 lp[start:start + n])
        return Q, lp

    def score_samples(self, X) -> np.ndarray:
        """log p(x_i) for every row of X (N, D); (N,) float64."""
        return self._dense(X)[1]

    def score(self, X, y=None) -> float:
        """Mean log-likelihood per descriptor (comparable with scikit-learn's ``GaussianMixture.score``)."""
        return float(self.score_samples(X).mean())

    def predict_proba(self, X) -> np.ndarray:
        """Posteriors q_ik, (N, K) float32 (zero below exp(-clamp) relative to the best component)."""
        return self._dense(X)[0]

    def predict(self, X) -> np.ndarray:
        """Most likely component of each descriptor, (N,) int64."""
        return self.predict_proba(X).argmax(1)

    def report(self) -> dict:
        """Convergence report: iterations, converged flag, restarts, final and per-iteration log-likelihoods."""
        self._check_fitted()
        return {
            "n_components": int(self.means_.shape[0]),
            "n_iter": int(getattr(self, "n_iter_", 0)),
            "converged": bool(getattr(self, "converged_", False)),
            "n_restarts": int(getattr(self, "n_restarts_", 0)),
            "lower_bound": float(getattr(self, "lower_bound_", float("nan"))),
            "history": [float(v) for v in getattr(self, "history_", [])],
        }
