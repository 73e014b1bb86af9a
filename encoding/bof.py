"""Bag of features: hard assignment to a k-means codebook, one L1-normalised histogram per pyramid cell.

h_c[k] = #{i in cell c : a(x_i) = k} / #{i in cell c}, a(x) = argmin_k ||x - c_k||^2 (Wang et al. 2011 use K=4000).
"""

from __future__ import annotations

import numpy as np

from .kmeans import KMeansCodebook

__all__ = ["bof_histograms"]


def bof_histograms(X, codebook: KMeansCodebook, cells=None, n_cells: int = 1, *, normalize: str = "l1") -> np.ndarray:
    """Histograms (C, K) float32 of descriptors X (N, D) per cell; ``cells`` (N, G) ids as in ``fisher``.

    ``normalize``: ``"l1"`` (default, sums to 1; an empty cell stays zero) or ``"none"`` (counts).
    """
    K = codebook.centers_.shape[0]
    X = np.asarray(X, np.float32)
    if cells is None:
        cells = np.zeros((X.shape[0], 1), np.int64)
        n_cells = 1
    cells = np.asarray(cells, np.int64)
    cells = cells.reshape(len(cells), -1) if cells.ndim != 2 else cells
    H = np.zeros(n_cells * K, np.float64)
    if X.shape[0]:
        a = codebook.assign(X)
        for g in range(cells.shape[1]):
            ok = cells[:, g] >= 0
            H += np.bincount(cells[ok, g] * K + a[ok], minlength=n_cells * K)
    H = H.reshape(n_cells, K)
    if normalize == "l1":
        s = H.sum(1, keepdims=True)
        np.divide(H, s, out=H, where=s > 0)
    elif normalize != "none":
        raise ValueError(f"normalize must be 'l1' or 'none', got {normalize!r}")
    return H.astype(np.float32)
