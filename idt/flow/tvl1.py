"""TV-L1 optical flow (Zach, Pock & Bischof 2007), the duality-based solver of Sánchez, Meinhardt-Llopis &
Facciolo (IPOL 2013) with OpenCV's outer loop (median filtering of the flow between groups of iterations).

Per pyramid level (see :mod:`idtfv.idt.flow.pyramid`) and for each of ``warps`` warps: warp :math:`I_1` and its
gradient by the current flow (bicubic), linearise the data term, then run up to ``outer_iterations`` x
``inner_iterations`` iterations of thresholding / primal step / dual projection (:mod:`idtfv.idt.flow._tvl1_nb`),
median-filtering :math:`\\mathbf u` before each group of ``inner_iterations``. A warp stops early once an
iteration changes the flow by :math:`\\sum_{\\mathbf x}\\|\\Delta\\mathbf u\\|^2 \\le \\varepsilon^2 h w`.

The structure, stopping rule, pyramid (bilinear ``resize`` by :math:`\\eta`, levels of at least 16 px) and
defaults follow OpenCV's ``cv2.optflow.DualTVL1OpticalFlow_create`` so the two can be compared at matched
parameters. Images are used in the 0..255 intensity range (float32 inputs in 0..1 are scaled by 255 first, as
OpenCV does).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import cv2
import numpy as np

from idtfv.errors import ParameterError
from idtfv.idt.flow.pyramid import coarse_to_fine

__all__ = ["TVL1Params", "tvl1_flow", "solve_level_cpu", "as_intensity"]


@dataclass(frozen=True)
class TVL1Params:
    """Parameters of the TV-L1 solver; the defaults are OpenCV ``DualTVL1``'s (checked against OpenCV 5.0).

    Attributes
    ----------
    tau : float
        Time step :math:`\\tau` of the dual projection; stable for :math:`\\tau \\le 1/4`.
    lambda_ : float
        Data-term weight :math:`\\lambda` (smaller = smoother flow).
    theta : float
        Coupling :math:`\\theta` between :math:`\\mathbf u` and the auxiliary :math:`\\mathbf v`.
    n_scales : int
        Pyramid levels :math:`N_{scales}`.
    scale_step : float
        Downsampling factor :math:`\\eta` between levels (OpenCV's default is 0.8).
    warps : int
        Warps per level :math:`N_{warps}` (re-linearisations of the data term).
    epsilon : float
        Stopping threshold :math:`\\varepsilon` on the RMS per-pixel flow change of one iteration.
    inner_iterations : int
        Iterations between two median filterings.
    outer_iterations : int
        Groups of ``inner_iterations`` per warp (each begins with a median filter).
    median_filtering : int
        Median filter size (0 or 1 = off, 3 or 5).
    gamma : float
        Weight of OpenCV's illumination-change term; only 0 is supported.
    """

    tau: float = 0.25
    lambda_: float = 0.15
    theta: float = 0.3
    n_scales: int = 5
    scale_step: float = 0.8
    warps: int = 5
    epsilon: float = 0.01
    inner_iterations: int = 30
    outer_iterations: int = 10
    median_filtering: int = 5
    gamma: float = 0.0

    @classmethod
    def fast(cls) -> "TVL1Params":
        """A preset about 7x cheaper than the defaults, for bulk extraction.

        Three levels at :math:`\\eta = 0.5` (the coarsest is 1/4 size, so it suits moderate motion), 2 warps,
        2 x 10 iterations per warp, :math:`\\varepsilon = 0.05`, median 5; :math:`\\tau, \\lambda, \\theta` are the
        defaults. Measured on 320x240 vtest pairs (``bench/bench_tvl1.py``, one core): ~35 ms/pair against ~245 ms
        for the defaults; mean EPE 0.067 px against a planted smooth flow (defaults: 0.029 px). OpenCV's DualTVL1
        given the same parameters (:meth:`to_opencv`) agrees with it to ~1e-5 px.
        """
        return cls(n_scales=3, scale_step=0.5, warps=2, epsilon=0.05, inner_iterations=10, outer_iterations=2)

    def validate(self) -> "TVL1Params":
        """Raise :class:`ParameterError` naming the first parameter out of range; return ``self``."""
        checks = [
            ("tau", 0 < self.tau <= 0.25, "in (0, 0.25] (the dual step is unstable above 1/4)"),
            ("lambda_", self.lambda_ > 0, "> 0"),
            ("theta", self.theta > 0, "> 0"),
            ("n_scales", isinstance(self.n_scales, int) and self.n_scales >= 1, "an int >= 1"),
            ("scale_step", 0 < self.scale_step < 1, "in (0, 1)"),
            ("warps", isinstance(self.warps, int) and self.warps >= 1, "an int >= 1"),
            ("epsilon", self.epsilon >= 0, ">= 0"),
            ("inner_iterations", isinstance(self.inner_iterations, int) and self.inner_iterations >= 1, "an int >= 1"),
            ("outer_iterations", isinstance(self.outer_iterations, int) and self.outer_iterations >= 1, "an int >= 1"),
            ("median_filtering", self.median_filtering in (0, 1, 3, 5),
             "0, 1, 3 or 5 (the float median sizes OpenCV supports)"),
            ("gamma", self.gamma == 0, "0 (the illumination term is not implemented)"),
        ]
        for name, ok, expected in checks:
            if not ok:
                raise ParameterError(
                    f"TVL1Params.{name} must be {expected}, got {getattr(self, name)!r}; "
                    f"fix the value or start from TVL1Params() / TVL1Params.fast()"
                )
        return self

    def replace(self, **changes) -> "TVL1Params":
        """Return a copy with ``changes`` applied (validated)."""
        return dataclasses.replace(self, **changes).validate()

    def to_opencv(self):
        """An OpenCV ``DualTVL1OpticalFlow`` with the same parameters (for comparisons)."""
        return cv2.optflow.DualTVL1OpticalFlow_create(
            tau=self.tau,
            lambda_=self.lambda_,
            theta=self.theta,
            nscales=self.n_scales,
            warps=self.warps,
            epsilon=self.epsilon,
            innnerIterations=self.inner_iterations,
            outerIterations=self.outer_iterations,
            scaleStep=self.scale_step,
            gamma=self.gamma,
            medianFiltering=self.median_filtering,
            useInitialFlow=False,
        )


def as_intensity(img) -> np.ndarray:
    """``img (h, w)`` uint8 (0..255) or float (0..1) -> C-contiguous float32 in 0..255 (OpenCV's convention)."""
    img = np.asarray(img)
    if img.dtype == np.uint8:
        return img.astype(np.float32)
    return np.ascontiguousarray(img, dtype=np.float32) * np.float32(255.0)


def solve_level_cpu(i0, i1, u, params: TVL1Params, *, parallel: bool = False):
    """Refine the flow ``u (2, h, w)`` at one pyramid level (NumPy/Numba).

    ``i0, i1 (h, w)`` float32 in 0..255. Returns the refined ``(2, h, w)`` float32 flow (``u`` is not modified).
    The dual variables :math:`\\mathbf p` start at zero on each level, as in OpenCV.
    """
    from idtfv.idt.flow import _tvl1_nb as nb  # loaded on first use: importing this module does not load Numba

    h, w = i0.shape
    iterate = nb.iterate_parallel if parallel else nb.iterate_serial
    u1 = np.ascontiguousarray(u[0], dtype=np.float32).copy()
    u2 = np.ascontiguousarray(u[1], dtype=np.float32).copy()
    i1x = np.empty((h, w), np.float32)
    i1y = np.empty((h, w), np.float32)
    nb.centered_gradient(i1, i1x, i1y)
    i1wx, i1wy, grad, rho_c = (np.empty((h, w), np.float32) for _ in range(4))
    p11, p12, p21, p22 = (np.zeros((h, w), np.float32) for _ in range(4))
    scratch = np.empty((h, w), np.float32)
    lt = np.float32(params.lambda_ * params.theta)
    theta = np.float32(params.theta)
    taut = np.float32(params.tau / params.theta)
    eps_scaled = float(np.float32(params.epsilon * params.epsilon * h * w))
    median = params.median_filtering
    for _ in range(params.warps):
        nb.warp_linearise(i0, i1, i1x, i1y, u1, u2, i1wx, i1wy, grad, rho_c)
        error = np.inf
        for _ in range(params.outer_iterations):
            if error <= eps_scaled:
                break
            if median > 1:
                u1 = cv2.medianBlur(u1, median)
                u2 = cv2.medianBlur(u2, median)
            error, _n = iterate(
                i1wx, i1wy, grad, rho_c, u1, u2, p11, p12, p21, p22,
                lt, theta, taut, params.inner_iterations, eps_scaled, scratch, not parallel,
            )  # fmt: skip
    return np.stack([u1, u2])


def tvl1_flow(i0, i1, *, params: TVL1Params | None = None, parallel: bool = False) -> np.ndarray:
    """TV-L1 flow from ``i0`` to ``i1`` on the CPU.

    Parameters
    ----------
    i0, i1 : (h, w) uint8 or float32 (0..1) arrays
        Gray frames :math:`I_0, I_1` of the same shape, at least 2x2.
    params : TVL1Params, optional
        Solver parameters (default: OpenCV's defaults).
    parallel : bool
        Use the ``prange`` kernels (all Numba threads) instead of the serial ones.

    Returns
    -------
    flow : (h, w, 2) float32
        ``flow[..., 0]`` = :math:`u_1` (x), ``flow[..., 1]`` = :math:`u_2` (y), with
        :math:`I_1(\\mathbf x + \\mathbf u) \\approx I_0(\\mathbf x)`.
    """
    params = (params or TVL1Params()).validate()
    a = as_intensity(i0)
    b = as_intensity(i1)

    def solve(x0, x1, u):
        return solve_level_cpu(x0, x1, u, params, parallel=parallel)

    u = coarse_to_fine(a, b, solve, n_scales=params.n_scales, scale_step=params.scale_step)
    return np.ascontiguousarray(np.moveaxis(u, 0, -1))
