"""PCA of one descriptor channel to half its dimensions (e.g. HOG 96 -> 48; the channels' widths follow the
extractor's options, :class:`idtfv.idt.DescriptorLayout`).

Fitted on a sample of training descriptors X (N, D): mean m, covariance C = (X - m)^T (X - m) / (N - 1) (float64),
eigen-decomposition C = P diag(lambda) P^T with lambda sorted in decreasing order. ``transform`` keeps the first
d = ``n_components`` eigenvectors: y = P_d^T (x - m), divided by sqrt(lambda + eps) when whitening.

Deterministic signs (as scikit-learn's ``svd_flip``): each eigenvector is flipped so that its entry of largest
absolute value is positive, so the same data always give the same projection bytes.
"""

from __future__ import annotations

import numpy as np
from sklearn.base import BaseEstimator, TransformerMixin

from idtfv.errors import ParameterError

__all__ = ["DescriptorPCA"]

#: Added to the eigenvalues before whitening so that a zero-variance direction does not blow up.
WHITEN_EPS = 1e-8


class DescriptorPCA(TransformerMixin, BaseEstimator):
    """PCA to ``n_components`` dimensions (default: half of D), optionally whitened.

    Parameters
    ----------
    n_components : d, output dimension (None: D // 2, as the iDT Fisher-vector papers).
    whiten : divide each output dimension by sqrt(lambda_j + whiten_eps).
    whiten_eps : added to the eigenvalues before whitening.
    block_rows : rows per block when accumulating the covariance (bounded memory for large samples).

    Attributes
    ----------
    mean_ : (D,) float64, m.
    components_ : (d, D) float64, the eigenvectors P_d^T (rows), signs fixed.
    explained_variance_ : (d,) float64, lambda_1..lambda_d.
    explained_variance_ratio_ : (d,) float64, lambda_j / sum(lambda).
    n_samples_ : number of descriptors fitted on.
    """

    def __init__(self, n_components: int | None = None, *, whiten: bool = False, whiten_eps: float = WHITEN_EPS,
                 block_rows: int = 65536):
        self.n_components = n_components
        self.whiten = whiten
        self.whiten_eps = whiten_eps
        self.block_rows = block_rows

    def fit(self, X, y=None):
        """Fit on descriptors X (N, D), N >= 2; returns self."""
        X = np.asarray(X)
        if X.ndim != 2 or X.shape[0] < 2:
            raise ParameterError(f"PCA needs an (N, D) array with N >= 2 descriptors, got shape {X.shape}")
        N, D = X.shape
        d = D // 2 if self.n_components is None else int(self.n_components)
        if not 1 <= d <= D:
            raise ParameterError(f"n_components must lie in [1, {D}] for {D}-dim descriptors, got {d}")
        if not np.isfinite(X).all():
            raise ParameterError("PCA input contains NaN or infinity; drop those rows before fitting")
        mean = np.zeros(D)
        for s in range(0, N, self.block_rows):
            mean += X[s:s + self.block_rows].sum(0, dtype=np.float64)
        mean /= N
        C = np.zeros((D, D))
        for s in range(0, N, self.block_rows):
            B = X[s:s + self.block_rows].astype(np.float64) - mean
            C += B.T @ B
        C /= N - 1
        lam, P = np.linalg.eigh(C)
        order = np.argsort(lam)[::-1]
        lam = np.maximum(lam[order], 0.0)
        P = P[:, order].T  # rows = eigenvectors
        signs = np.sign(P[np.arange(D), np.abs(P).argmax(1)])
        signs[signs == 0] = 1.0
        P *= signs[:, None]
        self.mean_ = mean
        self.components_ = np.ascontiguousarray(P[:d])
        self.explained_variance_ = lam[:d].copy()
        total = lam.sum()
        self.explained_variance_ratio_ = lam[:d] / total if total > 0 else np.zeros(d)
        self.n_samples_ = int(N)
        self.n_features_in_ = int(D)
        return self

    def _projection(self):
        """W (D, d) float32 with transform(x) = (x - m) @ W."""
        P = self.components_.T.copy()
        if self.whiten:
            P /= np.sqrt(self.explained_variance_ + self.whiten_eps)[None, :]
        return P.astype(np.float32)

    def transform(self, X, *, overwrite_input: bool = False) -> np.ndarray:
        """Project descriptors X (N, D) -> (N, d) float32.

        With ``overwrite_input`` a float32 ``X`` is centred in place (the same numbers, one (N, D) array less;
        ``X`` is left holding ``X - mean``): for callers whose ``X`` is a fresh copy, e.g. read from a file.
        Another dtype is converted into a copy, which is centred in place either way.
        """
        if not hasattr(self, "components_"):
            raise ParameterError("this DescriptorPCA is not fitted yet; call fit(X) first")
        X = np.asarray(X)
        if X.ndim != 2 or X.shape[1] != self.n_features_in_:
            raise ParameterError(f"PCA was fitted on {self.n_features_in_}-dim descriptors, got shape {X.shape}")
        given = X
        X = np.asarray(X, np.float32)
        if not np.isfinite(X).all():  # (a float64 beyond float32's range too): the projections would be NaN/inf
            bad = int(np.flatnonzero(~np.isfinite(X).all(axis=1))[0])
            raise ParameterError(f"PCA input row {bad} contains NaN or infinity (or a value beyond float32); drop "
                                 "those rows before projecting")
        W = self._projection()
        if X is given and not overwrite_input:  # the caller's own float32 array: left as it is
            return (X - self.mean_.astype(np.float32)) @ W
        X -= self.mean_.astype(np.float32)  # our float32 copy (of float16 descriptors): centred in place, the same
        return X @ W  # numbers as X - mean, without a second (N, D) array

    def to_arrays(self) -> dict:
        """Arrays for ``codebook_io.save_codebook``."""
        return {"mean": self.mean_, "components": self.components_, "explained_variance": self.explained_variance_,
                "explained_variance_ratio": self.explained_variance_ratio_}

    def to_meta(self) -> dict:
        return {"class": "DescriptorPCA", "n_components": int(self.components_.shape[0]),
                "n_features": int(self.n_features_in_), "whiten": bool(self.whiten),
                "whiten_eps": float(self.whiten_eps), "n_samples": int(self.n_samples_)}

    @classmethod
    def from_arrays(cls, arrays: dict, meta: dict) -> "DescriptorPCA":
        pca = cls(n_components=int(meta["n_components"]), whiten=bool(meta["whiten"]),
                  whiten_eps=float(meta.get("whiten_eps", WHITEN_EPS)))
        pca.mean_ = np.asarray(arrays["mean"], np.float64)
        pca.components_ = np.asarray(arrays["components"], np.float64)
        pca.explained_variance_ = np.asarray(arrays["explained_variance"], np.float64)
        pca.explained_variance_ratio_ = np.asarray(arrays["explained_variance_ratio"], np.float64)
        pca.n_features_in_ = int(meta["n_features"])
        pca.n_samples_ = int(meta.get("n_samples", 0))
        return pca
