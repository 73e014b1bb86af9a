"""k-means codebook for the bag-of-features and VLAD baselines (scikit-learn ``KMeans``, k-means++ seeding).

Hard assignment of a descriptor x: a(x) = argmin_k ||x - c_k||^2, computed blockwise as
argmin_k (||c_k||^2 - 2 x . c_k) with one float32 GEMM per block.
"""

from __future__ import annotations

import numpy as np
from sklearn.base import BaseEstimator

from idtfv.errors import ParameterError

__all__ = ["KMeansCodebook"]


class KMeansCodebook(BaseEstimator):
    """k-means codebook with hard assignment.

    Parameters
    ----------
    n_clusters : K (default 4000, as the iDT bag-of-features baseline).
    max_iter : Lloyd iterations (scikit-learn ``KMeans``).
    random_state : seed.

    Attributes
    ----------
    centers_ : (K, D) float32 cluster centres c_k.
    inertia_ : sum of squared distances of the training descriptors to their centres.
    """

    def __init__(self, n_clusters: int = 4000, *, max_iter: int = 50, random_state=None):
        self.n_clusters = n_clusters
        self.max_iter = max_iter
        self.random_state = random_state

    def fit(self, X, y=None):
        from sklearn.cluster import KMeans

        X = np.ascontiguousarray(X, np.float32)
        if X.ndim != 2 or X.shape[0] < self.n_clusters:
            raise ParameterError(f"k-means with n_clusters={self.n_clusters} needs at least that many descriptors, "
                                 f"got shape {X.shape}; lower the codebook size (--k)")
        km = KMeans(n_clusters=self.n_clusters, init="k-means++", n_init=1, max_iter=self.max_iter,
                    random_state=self.random_state).fit(X)
        self.centers_ = np.ascontiguousarray(km.cluster_centers_, np.float32)
        self.inertia_ = float(km.inertia_)
        return self

    def assign(self, X, *, block_rows: int = 8192) -> np.ndarray:
        """Nearest centre of every descriptor X (N, D) -> (N,) int64."""
        if not hasattr(self, "centers_"):
            raise ParameterError("this KMeansCodebook is not fitted yet; call fit(X) first")
        X = np.ascontiguousarray(X, np.float32)
        if X.ndim != 2 or X.shape[1] != self.centers_.shape[1]:
            raise ParameterError(f"descriptors must be (N, {self.centers_.shape[1]}), got shape {X.shape}")
        C = self.centers_
        cn = (C.astype(np.float64) ** 2).sum(1).astype(np.float32)
        out = np.empty(X.shape[0], np.int64)
        for s in range(0, X.shape[0], block_rows):
            d = cn[None, :] - 2.0 * (X[s:s + block_rows] @ C.T)
            out[s:s + block_rows] = d.argmin(1)
        return out

    def to_arrays(self) -> dict:
        return {"centers": self.centers_}

    def to_meta(self) -> dict:
        return {"class": "KMeansCodebook", "n_clusters": int(self.centers_.shape[0]),
                "dim": int(self.centers_.shape[1]), "inertia": getattr(self, "inertia_", None)}

    @classmethod
    def from_arrays(cls, arrays: dict, meta: dict) -> "KMeansCodebook":
        km = cls(n_clusters=int(meta["n_clusters"]))
        km.centers_ = np.ascontiguousarray(arrays["centers"], np.float32)
        return km
