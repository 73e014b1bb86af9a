r"""The geometry of iDT's spatial scale pyramid.

Scale :math:`i` has factor :math:`s_i = \rho^i` (:math:`\rho = \sqrt 2`) and size
``(round(w / s_i), round(h / s_i))``. The number of scales is limited so that the smaller side of every level
stays >= the descriptor patch :math:`N` (at 320x240 with N = 32 and up to 8 scales this gives 6 scales). The
levels themselves are made by :func:`idtfv.idt.flow.pyramid.build_pyramid` (level :math:`i` resized bilinearly
from level :math:`i-1`), the one pyramid builder of the extractor and the flow solvers.
"""

from __future__ import annotations

import math

__all__ = ["pyramid_geometry"]


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
