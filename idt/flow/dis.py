"""DIS flow (Kroeger et al. 2016, dense inverse search): a thin wrapper over OpenCV's ``DISOpticalFlow``.

Much faster than TV-L1 and Farnebäck at some cost in accuracy; the extractor's ``flow="dis"`` option.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import cv2
import numpy as np

from idtfv.errors import ParameterError

__all__ = ["DISParams", "dis_flow", "PRESETS", "MIN_SIZE"]

#: DIS cannot run on frames smaller than this (either side, px) with its 8 px patches.
MIN_SIZE = 12

#: OpenCV's presets by name.
PRESETS = {
    "ultrafast": cv2.DISOPTICAL_FLOW_PRESET_ULTRAFAST,
    "fast": cv2.DISOPTICAL_FLOW_PRESET_FAST,
    "medium": cv2.DISOPTICAL_FLOW_PRESET_MEDIUM,
}


@dataclass(frozen=True)
class DISParams:
    """DIS options: an OpenCV preset, optionally with a few fields overridden.

    Attributes
    ----------
    preset : {"ultrafast", "fast", "medium"}
        OpenCV preset (patch size, stride, iterations, variational refinement).
    finest_scale : int or None
        Finest pyramid level processed (0 = full resolution); None keeps the preset's.
    variational_refinement_iterations : int or None
        Refinement iterations per level (0 = off); None keeps the preset's.
    """

    preset: str = "medium"
    finest_scale: int | None = None
    variational_refinement_iterations: int | None = None

    def validate(self) -> "DISParams":
        """Raise :class:`ParameterError` for an option out of range; return ``self``."""
        if self.preset not in PRESETS:
            raise ParameterError(f"DISParams.preset must be one of {', '.join(PRESETS)}, got {self.preset!r}")
        if self.finest_scale is not None and not (isinstance(self.finest_scale, int) and self.finest_scale >= 0):
            raise ParameterError(f"DISParams.finest_scale must be None or an int >= 0, got {self.finest_scale!r}")
        vri = self.variational_refinement_iterations
        if vri is not None and not (isinstance(vri, int) and vri >= 0):
            raise ParameterError(
                f"DISParams.variational_refinement_iterations must be None or an int >= 0, got {vri!r}"
            )
        return self

    def replace(self, **changes) -> "DISParams":
        """Return a validated copy with ``changes`` applied."""
        return dataclasses.replace(self, **changes).validate()

    def create(self):
        """A configured ``cv2.DISOpticalFlow``."""
        dis = cv2.DISOpticalFlow_create(PRESETS[self.preset])
        if self.finest_scale is not None:
            dis.setFinestScale(self.finest_scale)
        if self.variational_refinement_iterations is not None:
            dis.setVariationalRefinementIterations(self.variational_refinement_iterations)
        return dis


def _coarsest_scale(h: int, w: int, patch: int) -> int:
    """OpenCV's automatic coarsest level, also capped so the smaller side keeps one patch (OpenCV 5.0 omits the
    cap and crashes on thin frames such as 20x500)."""
    auto = int(math.log(max(w, h) / (4.0 * patch)) / math.log(2.0) + 0.5)
    cap = int(math.log(min(w, h) / patch) / math.log(2.0))
    return max(0, min(auto, cap))


def dis_flow(i0, i1, *, params: DISParams | None = None) -> np.ndarray:
    """Flow ``(h, w, 2)`` float32 from ``i0`` to ``i1``, both ``(h, w)`` uint8 of at least 12x12 pixels."""
    h, w = i0.shape
    if min(h, w) < MIN_SIZE:
        raise ParameterError(
            f"DIS flow needs frames of at least {MIN_SIZE}x{MIN_SIZE} pixels, got {w}x{h}; use method='tvl1' or "
            f"'farneback' for smaller images"
        )
    dis = (params or DISParams()).validate().create()
    coarsest = _coarsest_scale(h, w, dis.getPatchSize())
    dis.setCoarsestScale(coarsest)
    if dis.getFinestScale() > coarsest:
        dis.setFinestScale(coarsest)
    return np.ascontiguousarray(dis.calc(i0, i1, None), dtype=np.float32)
