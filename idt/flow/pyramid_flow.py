r"""The extractor's flow: one :class:`~idtfv.idt.flow.pyramid.PyramidFlow` per video, chosen by its options.

:class:`PyramidFlowParams` holds the options (built from the extractor's by
:meth:`idtfv.idt.IDTParams.pyramid_flow`) and :func:`make_pyramid_flow` the solver for them. Every solver returns
each level's flow median-filtered (5x5 per channel, ``cv2.medianBlur``), the field tracking uses:

* Farnebäck (the reference): coarse to fine over the iDT pyramid itself (:mod:`idtfv.idt.flow.farneback`; ours,
  reusing each frame's expansions, or OpenCV's with ``farneback_impl="opencv"``);
* DIS (:class:`DISPyramidFlow`): OpenCV's ``DISOpticalFlow`` on level 0 (it has its own internal pyramid),
  coarser levels get that flow area-resized and divided by the scale factor; or solved on every level;
* TV-L1 (:class:`TVL1PyramidFlow`): :func:`idtfv.idt.flow.estimate_flow` on every level.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields

import cv2
import numpy as np

from idtfv.errors import ParameterError
from idtfv.idt.flow.estimate import estimate_flow
from idtfv.idt.flow.farneback import WINDOWS, FarnebackPyramidFlow, OpenCVFarnebackPyramidFlow
from idtfv.idt.flow.pyramid import PyramidFlow, median_filter_flow

__all__ = ["PyramidFlowParams", "make_pyramid_flow", "DISPyramidFlow", "TVL1PyramidFlow", "PYRAMID_FLOW_METHODS",
           "FARNEBACK_IMPLS"]

#: Solvers of the pyramid flow.
PYRAMID_FLOW_METHODS = ("farneback", "tvl1", "dis")
#: Farnebäck implementations: ``auto`` and ``numba`` are ours (:class:`FarnebackPyramidFlow`), ``opencv`` OpenCV's.
FARNEBACK_IMPLS = ("auto", "numba", "opencv")
#: Median filter sizes of the flow (OpenCV's medianBlur filters float images with 3 or 5; 1 = off).
MEDIAN_KSIZES = (1, 3, 5)


@dataclass(frozen=True, kw_only=True)
class PyramidFlowParams:
    """Options of the flow on every pyramid level (frozen, validated; keyword-only).

    The fields are :class:`idtfv.idt.IDTParams`'s of the same names (``method`` is its ``flow``), with the same
    defaults; :meth:`idtfv.idt.IDTParams.pyramid_flow` builds this from the extractor's options.

    Parameters
    ----------
    method : {"farneback", "tvl1", "dis"}
        The solver.
    scale_factor : float
        Ratio between consecutive pyramid levels (OpenCV Farnebäck's per-level anti-aliasing uses it).
    median_ksize : int
        Median filter applied to each level's flow (1 = off, 3 or 5: ``cv2.medianBlur``'s float sizes).
    farneback_impl : {"auto", "numba", "opencv"}
        Ours (``auto``, ``numba``) or OpenCV's Farnebäck.
    farneback_poly_n, farneback_poly_sigma, farneback_winsize, farneback_iterations
        Farnebäck's expansion (n 5 or 7, sigma > 0) and solver (window >= 1 px, iterations >= 1 per level).
    farneback_window : {"gaussian", "box"}
        Window weighting of Farnebäck's displacement estimate.
    dis_preset : int
        OpenCV ``DISOpticalFlow`` preset (0 ultrafast, 1 fast, 2 medium).
    dis_finest_scale : int
        DIS's finest internal level (0 = full resolution).
    dis_per_level : bool
        Solve DIS on every level instead of resizing level 0's flow.
    """

    method: str = "farneback"
    scale_factor: float = math.sqrt(2.0)
    median_ksize: int = 5
    farneback_impl: str = "auto"
    farneback_poly_n: int = 7
    farneback_poly_sigma: float = 1.5
    farneback_winsize: int = 10
    farneback_iterations: int = 2
    farneback_window: str = "gaussian"
    dis_preset: int = 1
    dis_finest_scale: int = 1
    dis_per_level: bool = False

    def __post_init__(self):
        def bad(name, expected):
            raise ParameterError(f"PyramidFlowParams.{name}: expected {expected}, got {getattr(self, name)!r}; "
                                 f"fix the option or use the default ({_DEFAULTS[name]!r})")

        def is_int(v):
            return isinstance(v, (int, np.integer)) and not isinstance(v, bool)

        def is_real(v):
            return isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool) and math.isfinite(v)

        choices = {"method": PYRAMID_FLOW_METHODS, "farneback_impl": FARNEBACK_IMPLS, "farneback_window": WINDOWS,
                   "median_ksize": MEDIAN_KSIZES, "farneback_poly_n": (5, 7), "dis_preset": (0, 1, 2)}
        for name, allowed in choices.items():
            value = getattr(self, name)
            if isinstance(value, bool) or value not in allowed:
                bad(name, "one of " + ", ".join(map(str, allowed)))
        for name, lo in (("farneback_winsize", 1), ("farneback_iterations", 1), ("dis_finest_scale", 0)):
            if not is_int(getattr(self, name)) or getattr(self, name) < lo:
                bad(name, f"an integer >= {lo}")
        if not is_real(self.scale_factor) or self.scale_factor <= 1:
            bad("scale_factor", "a finite number > 1")
        if not is_real(self.farneback_poly_sigma) or self.farneback_poly_sigma <= 0:
            bad("farneback_poly_sigma", "a finite number > 0")
        if not isinstance(self.dis_per_level, bool):
            bad("dis_per_level", "True or False")


_DEFAULTS = {f.name: f.default for f in fields(PyramidFlowParams)}


class DISPyramidFlow(PyramidFlow):
    """OpenCV DIS flow on level 0, resized to the other levels (or solved on every level with ``per_level``).

    Parameters
    ----------
    preset : int
        ``DISOpticalFlow`` preset (0 ultrafast, 1 fast, 2 medium).
    finest_scale : int
        DIS's finest internal level (0 = full resolution).
    per_level : bool
        Solve on every level instead of area-resizing level 0's flow (vectors scaled by the size ratio).
    median : int
        ``cv2.medianBlur`` size applied to each level's flow (1 = off).
    """

    name = "DISPyramidFlow"

    def __init__(self, *, preset: int = 1, finest_scale: int = 1, per_level: bool = False, median: int = 5):
        self._dis = cv2.DISOpticalFlow_create(int(preset))
        self._dis.setFinestScale(int(finest_scale))
        self.per_level = per_level
        self.median = median
        super().__init__()

    def solve(self, prev: list[np.ndarray], cur: list[np.ndarray]) -> list[np.ndarray]:
        if self.per_level:
            return [median_filter_flow(self._dis.calc(a, b, None), self.median) for a, b in zip(prev, cur)]
        f0 = self._dis.calc(prev[0], cur[0], None)
        flows = [median_filter_flow(f0, self.median)]
        h0, w0 = f0.shape[:2]
        for lvl in cur[1:]:
            h, w = lvl.shape[:2]
            f = cv2.resize(f0, (w, h), interpolation=cv2.INTER_AREA)
            f[..., 0] *= w / w0
            f[..., 1] *= h / h0
            flows.append(median_filter_flow(f, self.median))
        return flows


class TVL1PyramidFlow(PyramidFlow):
    """TV-L1 flow (:func:`idtfv.idt.flow.estimate_flow`, default :class:`~idtfv.idt.flow.TVL1Params`, on a GPU
    when there is one) on every level, each median-filtered with ``median``."""

    name = "TVL1PyramidFlow"

    def __init__(self, *, median: int = 5):
        self.median = median
        super().__init__()

    def solve(self, prev: list[np.ndarray], cur: list[np.ndarray]) -> list[np.ndarray]:
        return [median_filter_flow(np.ascontiguousarray(estimate_flow(a, b, method="tvl1"), np.float32), self.median)
                for a, b in zip(prev, cur)]


def make_pyramid_flow(params: PyramidFlowParams) -> PyramidFlow:
    """The pyramid flow of ``params`` (a fresh one per video)."""
    if not isinstance(params, PyramidFlowParams):
        raise ParameterError(f"make_pyramid_flow: expected PyramidFlowParams, got {type(params).__name__}; "
                             "build them with IDTParams.pyramid_flow()")
    p = params
    if p.method == "farneback":
        options = dict(poly_n=p.farneback_poly_n, poly_sigma=p.farneback_poly_sigma, winsize=p.farneback_winsize,
                       iterations=p.farneback_iterations, median=p.median_ksize, window=p.farneback_window)
        if p.farneback_impl == "opencv":
            return OpenCVFarnebackPyramidFlow(**options, scale_factor=p.scale_factor)
        return FarnebackPyramidFlow(**options)
    if p.method == "dis":
        return DISPyramidFlow(preset=p.dis_preset, finest_scale=p.dis_finest_scale, per_level=p.dis_per_level,
                              median=p.median_ksize)
    return TVL1PyramidFlow(median=p.median_ksize)
