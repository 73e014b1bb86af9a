r"""The spatial scale pyramid of iDT.

Scale :math:`i` has factor :math:`s_i = \rho^i` (:math:`\rho = \sqrt 2`) and size
``(round(w / s_i), round(h / s_i))``; level :math:`i` is resized (bilinear) from level :math:`i-1`. The number
of scales is limited so that the smaller side of every level stays >= the descriptor patch :math:`N` (at 320x240
with N = 32 and up to 8 scales this gives 6 scales).
"""

from __future__ import annotations

import math

import cv2
import numpy as np

__all__ = ["pyramid_geometry", "build_pyramid"]


def pyramid_geometry(width: int, height: int, *, scales: int = 8, scale_factor: float = math.sqrt(2.0),
                     patch: int = 32) -> tuple[list[float], list[tuple[int, int]]]:
    """Scale factors and level sizes.

    Parameters
    ----------
    width, height : int
        Frame size in pixels.
    scales : int
        Maximum number of levels.
    scale_factor : float
        :math:`\rho`.
    patch : int
        :math:`N`; levels whose smaller side would drop below it are not used (at least one level is kept).

    Returns
    -------
    factors : list of float
        :math:`s_i = \rho^i`; a level-i pixel ``x`` is ``s_i * x`` in the original frame.
    sizes : list of (w_i, h_i)
    """
    side = float(min(width, height))
    n = 0
    while side >= patch:
        side /= scale_factor
        n += 1
    n = max(1, min(scales, n))
    factors = [1.0]
    sizes = [(int(width), int(height))]
    for _ in range(1, n):
        factors.append(factors[-1] * scale_factor)
        f = factors[-1]
        sizes.append((int(round(width / f)), int(round(height / f))))
    return factors, sizes


def build_pyramid(gray: np.ndarray, sizes: list[tuple[int, int]]) -> list[np.ndarray]:
    """Levels of ``gray`` at ``sizes``; level 0 is ``gray`` itself, level i is bilinearly resized from level i-1.

    Parameters
    ----------
    gray : (h, w) uint8 or float32
    sizes : list of (w_i, h_i) from :func:`pyramid_geometry`

    Returns
    -------
    list of (h_i, w_i) arrays of ``gray``'s dtype
    """
    levels = [gray]
    for w, h in sizes[1:]:
        levels.append(cv2.resize(levels[-1], (w, h), interpolation=cv2.INTER_LINEAR))
    return levels
