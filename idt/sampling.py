r"""Dense sampling of feature points on one pyramid level (Wang & Schmid, IJCV 2013, Sec. 3.1).

The level is divided into ``W x W`` cells; a cell's centre :math:`(jW + \lfloor W/2 \rfloor, iW + \lfloor W/2
\rfloor)` becomes a new point if no tracked point lies in the cell and its smaller structure-tensor eigenvalue
(``cv2.cornerMinEigenVal``, block 3, Sobel 3) exceeds ``quality`` times the level's maximum, so homogeneous areas
(which cannot be tracked) get no points.
"""

from __future__ import annotations

import cv2
import numpy as np

from idtfv.idt import _tracking_nb as _nb

__all__ = ["dense_sample"]


def dense_sample(gray: np.ndarray, existing: np.ndarray | None = None, *, stride: int = 5,
                 quality: float = 0.001) -> np.ndarray:
    """New points in the empty grid cells of one level.

    Parameters
    ----------
    gray : (h, w) uint8 or float32
        The level's image.
    existing : (m, 2) float32 or None
        Current points ``[x, y]`` of live tracks at this level.
    stride : int
        W, the grid step.
    quality : float
        Relative threshold on the min-eigenvalue response.

    Returns
    -------
    (k, 2) float32
        ``[x, y]`` of the new points, row-major over the grid.
    """
    eig = cv2.cornerMinEigenVal(gray, 3, ksize=3)
    threshold = float(eig.max()) * quality
    pts = np.zeros((0, 2), np.float32) if existing is None else np.ascontiguousarray(existing, np.float32)
    h, w = gray.shape
    out = np.empty(((h // stride) * (w // stride), 2), np.float32)
    n = _nb.sample_grid(np.ascontiguousarray(eig, np.float32), threshold, int(stride), pts, out)
    return out[:n].copy()
