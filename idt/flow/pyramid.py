"""The one coarse-to-fine driver shared by every two-frame flow solver.

A *level solver* refines a flow at one scale: ``solve_level(i0, i1, u) -> u`` with ``i0, i1 (h, w)`` float32
images and ``u (2, h, w)`` float32 (planes :math:`u_1` = x, :math:`u_2` = y, in pixels of that level). The driver
builds the two image pyramids by repeated resizing with factor :math:`\\eta` (``scale_step``), starts from zero
flow at the coarsest level, and between levels upsamples the flow bilinearly and multiplies it by
:math:`1/\\eta` (as OpenCV's ``DualTVL1`` does, so the two can be compared at matched parameters).

Array operations go through an ``ops`` object (:data:`CPU_OPS` here, Numba; :mod:`idtfv.idt.flow._tvl1_cupy` supplies
the GPU one with the same arithmetic), so the same driver runs on NumPy and CuPy arrays. The resampling is OpenCV's
``INTER_LINEAR`` grid (sizes ``round(size * eta)``), written out so both backends compute the same numbers.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

__all__ = ["PyramidOps", "CPU_OPS", "build_pyramid", "coarse_to_fine", "MIN_LEVEL_SIZE"]

#: A level smaller than this (either side, pixels) is not built; OpenCV's DualTVL1 uses the same floor.
MIN_LEVEL_SIZE = 16


@dataclass(frozen=True)
class PyramidOps:
    """The array operations the driver needs, for one backend.

    ``downscale(img (..., h, w), eta) -> (..., round(h*eta), round(w*eta))``; ``upscale_flow(u (..., 2, h, w),
    shape, factor) -> (..., 2, H, W)`` resized bilinearly to ``shape = (H, W)`` and multiplied by ``factor``;
    ``zeros_flow(img (..., h, w)) -> (..., 2, h, w)``. Leading axes (a batch of frame pairs) are optional.
    """

    downscale: Callable
    upscale_flow: Callable
    zeros_flow: Callable


def _cpu_downscale(img, eta):
    from idtfv.idt.flow._tvl1_nb import resize_linear

    h, w = img.shape
    # OpenCV's size rule for a factor: round(size * eta), half to even (Python's round); step 1/eta
    out = np.empty((int(round(h * eta)), int(round(w * eta))), np.float32)
    resize_linear(np.ascontiguousarray(img, np.float32), out, 1.0 / eta, 1.0 / eta, np.float32(1.0))
    return out


def _cpu_upscale_flow(u, shape, factor):
    from idtfv.idt.flow._tvl1_nb import resize_linear

    h, w = shape
    _, sh, sw = u.shape
    out = np.empty((2, h, w), np.float32)
    for d in range(2):
        resize_linear(np.ascontiguousarray(u[d], np.float32), out[d], sh / h, sw / w, np.float32(factor))
    return out


def _cpu_zeros_flow(img):
    return np.zeros((2, *img.shape), np.float32)


#: NumPy/OpenCV implementation of :class:`PyramidOps`.
CPU_OPS = PyramidOps(downscale=_cpu_downscale, upscale_flow=_cpu_upscale_flow, zeros_flow=_cpu_zeros_flow)


def build_pyramid(img, *, n_scales: int, scale_step: float, min_size: int = MIN_LEVEL_SIZE, ops: PyramidOps = CPU_OPS):
    """Return ``[img, img*eta, img*eta^2, ...]`` (finest first), at most ``n_scales`` levels, none smaller than
    ``min_size`` on either side (the level 0 image is always kept)."""
    levels = [img]
    for _ in range(1, n_scales):
        nxt = ops.downscale(levels[-1], scale_step)
        if nxt.shape[-2] < min_size or nxt.shape[-1] < min_size:
            break
        levels.append(nxt)
    return levels


def coarse_to_fine(
    i0,
    i1,
    solve_level: Callable,
    *,
    n_scales: int,
    scale_step: float,
    min_size: int = MIN_LEVEL_SIZE,
    ops: PyramidOps = CPU_OPS,
):
    """Estimate the flow from ``i0`` to ``i1`` coarse to fine.

    Parameters
    ----------
    i0, i1 : (h, w) float32 arrays (NumPy or the backend's type; ``(B, h, w)`` batches if ``ops`` supports them)
        First and second frame, :math:`I_0` and :math:`I_1`.
    solve_level : callable
        ``solve_level(i0_s, i1_s, u) -> u`` refining ``u (2, h_s, w_s)`` (``(B, 2, h_s, w_s)``) at one level.
    n_scales : int
        Number of pyramid levels :math:`N_{scales}` (fewer if the images get smaller than ``min_size``).
    scale_step : float
        Downsampling factor :math:`\\eta` in (0, 1) between consecutive levels.

    Returns
    -------
    u : (2, h, w) float32 (``(B, 2, h, w)`` for batches)
        Flow planes :math:`(u_1, u_2)` such that ``i1[y + u2, x + u1] ~ i0[y, x]``.
    """
    p0 = build_pyramid(i0, n_scales=n_scales, scale_step=scale_step, min_size=min_size, ops=ops)
    p1 = build_pyramid(i1, n_scales=len(p0), scale_step=scale_step, min_size=min_size, ops=ops)
    u = ops.zeros_flow(p0[-1])
    for s in range(len(p0) - 1, -1, -1):
        if s < len(p0) - 1:
            u = ops.upscale_flow(u, p0[s].shape[-2:], 1.0 / scale_step)
        u = solve_level(p0[s], p1[s], u)
    return u
