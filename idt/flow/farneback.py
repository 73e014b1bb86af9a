"""Farnebäck (2003) polynomial-expansion flow: a thin wrapper over OpenCV's ``calcOpticalFlowFarneback``.

The defaults are the ones LEAR's improved-trajectories code passes (pyramid factor :math:`1/\\sqrt 2`, 5 extra
levels, 10 px window, 2 iterations, :math:`n = 7`, :math:`\\sigma = 1.5`, Gaussian window), so trajectory
extraction with ``method="farneback"`` sees the same flow as the reference.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import cv2
import numpy as np

from idtfv.errors import ParameterError

__all__ = ["FarnebackParams", "farneback_flow", "solve_level"]


@dataclass(frozen=True)
class FarnebackParams:
    """OpenCV ``calcOpticalFlowFarneback`` options (LEAR's values by default).

    Attributes
    ----------
    pyr_scale : float
        Pyramid downsampling factor in (0, 1).
    levels : int
        Extra pyramid levels (0 = the original size only).
    winsize : int
        Averaging window (px).
    iterations : int
        Iterations per level.
    poly_n : int
        Neighbourhood of the polynomial expansion (5 or 7).
    poly_sigma : float
        Gaussian :math:`\\sigma` of the expansion (1.1 for ``poly_n=5``, 1.5 for 7).
    gaussian : bool
        Gaussian instead of box averaging window (``OPTFLOW_FARNEBACK_GAUSSIAN``).
    """

    pyr_scale: float = float(np.sqrt(2.0) / 2.0)
    levels: int = 5
    winsize: int = 10
    iterations: int = 2
    poly_n: int = 7
    poly_sigma: float = 1.5
    gaussian: bool = True

    def validate(self) -> "FarnebackParams":
        """Raise :class:`ParameterError` for the first option out of range; return ``self``."""
        checks = [
            ("pyr_scale", 0 < self.pyr_scale < 1, "in (0, 1)"),
            ("levels", isinstance(self.levels, int) and self.levels >= 0, "an int >= 0"),
            ("winsize", isinstance(self.winsize, int) and self.winsize >= 1, "an int >= 1"),
            ("iterations", isinstance(self.iterations, int) and self.iterations >= 1, "an int >= 1"),
            ("poly_n", self.poly_n in (5, 7), "5 or 7"),
            ("poly_sigma", self.poly_sigma > 0, "> 0"),
        ]
        for name, ok, expected in checks:
            if not ok:
                raise ParameterError(f"FarnebackParams.{name} must be {expected}, got {getattr(self, name)!r}")
        return self

    def replace(self, **changes) -> "FarnebackParams":
        """Return a validated copy with ``changes`` applied."""
        return dataclasses.replace(self, **changes).validate()

    def _flags(self, initial: bool) -> int:
        flags = cv2.OPTFLOW_FARNEBACK_GAUSSIAN if self.gaussian else 0
        return flags | (cv2.OPTFLOW_USE_INITIAL_FLOW if initial else 0)


def farneback_flow(i0, i1, *, params: FarnebackParams | None = None) -> np.ndarray:
    """Flow ``(h, w, 2)`` float32 from ``i0`` to ``i1`` (uint8 or float32 gray; see :func:`idtfv.idt.flow.estimate_flow`)."""
    p = (params or FarnebackParams()).validate()
    flow = cv2.calcOpticalFlowFarneback(
        i0, i1, None, p.pyr_scale, p.levels, p.winsize, p.iterations, p.poly_n, p.poly_sigma, p._flags(False)
    )
    return np.ascontiguousarray(flow, dtype=np.float32)


def solve_level(i0, i1, u, params: FarnebackParams | None = None):
    """Per-level solver for :func:`idtfv.idt.flow.pyramid.coarse_to_fine`: one Farnebäck level started from ``u``.

    ``i0, i1 (h, w)`` float32 in 0..255, ``u (2, h, w)``; returns the refined ``(2, h, w)`` flow.
    """
    p = (params or FarnebackParams()).validate()
    init = np.ascontiguousarray(np.moveaxis(np.asarray(u, np.float32), 0, -1))
    flow = cv2.calcOpticalFlowFarneback(
        i0, i1, init, p.pyr_scale, 0, p.winsize, p.iterations, p.poly_n, p.poly_sigma, p._flags(True)
    )
    return np.ascontiguousarray(np.moveaxis(flow, -1, 0))
