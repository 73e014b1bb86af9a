"""VLAD (Jegou et al. 2010): per k-means centre, the sum of the residuals of the descriptors assigned to it.

v_k = sum_{i : a(x_i) = k} (x_i - c_k), VLAD = [v_1..v_K] (KD numbers); then optionally per-centre L2
("intra-normalisation", Arandjelovic & Zisserman 2013), signed power sign(z)|z|^alpha (alpha = 0.5) and L2.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from .kmeans import KMeansCodebook

__all__ = ["vlad_vectors"]

#: Floor on L2 norms (an empty cell stays zero).
NORM_FLOOR = 1e-12


def vlad_vectors(X, codebook: KMeansCodebook, cells=None, n_cells: int = 1, *, power: float = 0.5,
                 intra: bool = False, normalized: bool = True, norm_floor: float = NORM_FLOOR) -> np.ndarray:
    """VLAD vectors (C, K*D) float32 of descriptors X (N, D) per cell; ``cells`` (N, G) ids as in ``fisher``."""
    C = codebook.centers_.astype(np.float64)
    K, D = C.shape
    X = np.asarray(X, np.float32)
    N = X.shape[0]
    if cells is None:
        cells = np.zeros((N, 1), np.int64)
        n_cells = 1
    cells = np.asarray(cells, np.int64)
    cells = cells.reshape(len(cells), -1) if cells.ndim != 2 else cells
    V = np.zeros((n_cells * K, D), np.float64)
    if N:
        a = codebook.assign(X)
        Xd = X.astype(np.float64)
        for g in range(cells.shape[1]):
            ok = np.flatnonzero(cells[:, g] >= 0)
            rows = cells[ok, g] * K + a[ok]
            M = sp.csr_matrix((np.ones(ok.size), (rows, ok)), shape=(n_cells * K, N))
            counts = np.asarray(M.sum(1)).ravel()
            V += M @ Xd - counts[:, None] * np.tile(C, (n_cells, 1))
    V = V.reshape(n_cells, K, D)
    if intra:
        n = np.sqrt((V * V).sum(2, keepdims=True))
        V /= np.maximum(n, norm_floor)
    V = V.reshape(n_cells, K * D)
    if power != 1.0:
        V = np.sign(V) * np.abs(V) ** power
    if normalized:
        V /= np.maximum(np.sqrt((V * V).sum(1, keepdims=True)), norm_floor)
    return V.astype(np.float32)
