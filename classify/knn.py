"""k-nearest-neighbour classifier: the second classical baseline next to the linear SVM.

Brute force on BLAS: similarities from ``X_test X_train^T`` (SGEMM over row blocks of the test set; no copy of the
training features).

- ``metric="cosine"``: rows L2-normalised, similarity = cos(x, x_j);
- ``metric="l2"``: similarity = -||x - x_j||^2 = 2 x.x_j - ||x||^2 - ||x_j||^2.

The k most similar training videos (ties: lower training index first) vote. Class score::

    s_c = sum_{r < k, c in labels(j_r)} [ w_r + 1e-6 (k - r) / k ]

with ``w_r = 1`` (``weights="uniform"``) or the cosine similarity / ``1 / (1 + distance)`` (``"distance"``).
The tiny rank term only breaks ties in favour of the class with the nearer neighbours; it changes no
non-tied order. Multi-label training videos vote for each of their classes.
"""

from __future__ import annotations

import numpy as np

from idtfv.errors import ParameterError

from ._checks import check_finite_rows, check_index, check_targets
from ._kernel_svm import _rows

__all__ = ["KNNClassifier", "nearest_neighbors"]

_METRICS = ("cosine", "l2")
_WEIGHTS = ("uniform", "distance")
_TIE = 1e-6


def nearest_neighbors(X_train, X_test, k: int, *, metric: str = "cosine", train_index=None, test_index=None,
                      block_rows: int = 1024):
    """Indices and similarities of the k most similar training rows of each test row.

    Parameters
    ----------
    X_train : ndarray (N, d)
    X_test : ndarray (M, d)
    k : int, 1 <= k <= n
    metric : {"cosine", "l2"}
    train_index, test_index : ndarray of int, optional
        Rows of ``X_train`` / ``X_test`` to use (n and m of them; default all). Only blocks are copied.
    block_rows : int
        Rows per SGEMM block (memory: two blocks of ``block_rows x d`` float32).

    Returns
    -------
    idx : ndarray (m, k) int64, positions among the training rows, most similar first (ties: lower first)
    sim : ndarray (m, k) float64, cosine similarity or ``-squared distance``
    """
    if metric not in _METRICS:
        raise ParameterError(f"metric must be one of {_METRICS}, got {metric!r}")
    n = X_train.shape[0] if train_index is None else len(train_index)
    m = X_test.shape[0] if test_index is None else len(test_index)
    if not 1 <= k <= n:
        raise ParameterError(f"n_neighbors must be in 1..{n} (the number of training videos), got {k}")
    G = np.empty((m, n), dtype=np.float64)  # Gram block X_test X_train^T
    a2, b2 = np.empty(n), np.empty(m)
    for j0 in range(0, n, block_rows):
        A = _rows(X_train, train_index, j0, j0 + block_rows)
        a2[j0:j0 + len(A)] = _sq_norms(A)
        for i0 in range(0, m, block_rows):
            B = _rows(X_test, test_index, i0, i0 + block_rows)
            if j0 == 0:
                b2[i0:i0 + len(B)] = _sq_norms(B)
            G[i0:i0 + len(B), j0:j0 + len(A)] = B @ A.T  # SGEMM
    if metric == "cosine":
        den = np.sqrt(b2)[:, None] * np.sqrt(a2)[None, :]
        S = np.divide(G, den, out=np.zeros_like(G), where=den > 0)
    else:
        S = 2.0 * G - a2[None, :] - b2[:, None]
    order = np.argsort(-S, axis=1, kind="stable")[:, :k]
    return order, np.take_along_axis(S, order, axis=1)


def _sq_norms(X, chunk: int = 128) -> np.ndarray:
    """Squared L2 norm of each row, accumulated in float64 (``chunk`` rows converted at a time)."""
    out = np.empty(X.shape[0])
    for i0 in range(0, X.shape[0], chunk):
        blk = X[i0:i0 + chunk].astype(np.float64)
        out[i0:i0 + len(blk)] = np.einsum("ij,ij->i", blk, blk)
    return out


class KNNClassifier:
    """k-NN voting classifier producing per-class scores.

    Parameters (keyword-only)
    ----------
    n_neighbors : int
        k (default 5).
    metric : {"cosine", "l2"}
    weights : {"uniform", "distance"}
    """

    def __init__(self, *, n_neighbors: int = 5, metric: str = "cosine", weights: str = "uniform"):
        self.n_neighbors = n_neighbors
        self.metric = metric
        self.weights = weights

    def fit(self, X, y, *, classes=None, index=None):
        """Store the training set (a reference, not a copy).

        Parameters
        ----------
        X : ndarray (N, d)
        y : ndarray (n,) class ids, or (n, C) 0/1 indicators (multi-label)
        classes : array_like of int, optional, keyword-only
            Score-column order (default: the ids present in y; multi-label: 0..C-1).
        index : ndarray of int (n,), optional
            Training rows of X (default all).
        """
        if self.metric not in _METRICS:
            raise ParameterError(f"metric must be one of {_METRICS}, got {self.metric!r}")
        if self.weights not in _WEIGHTS:
            raise ParameterError(f"weights must be one of {_WEIGHTS}, got {self.weights!r}")
        X = np.asarray(X)
        y = np.asarray(y)
        index = check_index(index, X.shape[0], "KNNClassifier.fit") if X.ndim == 2 else index
        n = X.shape[0] if index is None else len(index)
        if X.ndim != 2 or y.ndim == 0 or y.shape[0] != n:
            raise ParameterError(f"X must be (n, d) with one target per training row; got X {X.shape}, "
                                 f"{n} rows, y {y.shape}")
        check_targets(y, classes, "KNNClassifier.fit")
        check_finite_rows(X, index, "KNNClassifier.fit")
        if classes is None:
            classes = np.arange(y.shape[1]) if y.ndim == 2 else np.unique(y)
        self.classes_ = np.asarray(classes, dtype=np.int64)
        self._onehot = y.astype(bool) if y.ndim == 2 else y[:, None] == self.classes_[None, :]
        self._X = X
        self._index = None if index is None else np.asarray(index, dtype=np.int64)
        return self

    def decision_function(self, X, *, index=None) -> np.ndarray:
        """Vote scores, shape (m, C), float64 (see the module docstring); ``index``: rows of X to score."""
        k = int(self.n_neighbors)
        X = np.asarray(X)
        if X.ndim == 2:  # (nearest_neighbors words a wrong shape)
            index = check_index(index, X.shape[0], "KNNClassifier.decision_function")
            check_finite_rows(X, index, "KNNClassifier.decision_function")
        idx, sim = nearest_neighbors(self._X, X, k, metric=self.metric, train_index=self._index,
                                     test_index=index)
        if self.weights == "uniform":
            w = np.ones_like(sim)
        elif self.metric == "cosine":
            w = sim
        else:
            w = 1.0 / (1.0 + np.sqrt(np.maximum(-sim, 0.0)))
        w = w + _TIE * (k - np.arange(k))[None, :] / k
        votes = self._onehot[idx]  # (m, k, C)
        return np.einsum("mk,mkc->mc", w, votes.astype(np.float64))

    def predict(self, X, *, index=None) -> np.ndarray:
        return self.classes_[np.argmax(self.decision_function(X, index=index), axis=1)]
