"""Optical flow: TV-L1 (ours: Numba on the CPU, CuPy on the GPU), Farnebäck (ours and OpenCV's) and DIS (OpenCV).

Two entry points::

    flow = estimate_flow(prev_gray, gray, method="tvl1", params=TVL1Params.fast())   # (h, w, 2) float32
    fp = make_pyramid_flow(IDTParams().pyramid_flow())   # the extractor's flow on every pyramid level
    flows = fp(build_pyramid(gray, sizes))                # per frame: flows from the previous frame

``flow[y, x] = (dx, dy)`` moves pixel ``(x, y)`` of ``prev`` to ``(x + dx, y + dy)`` in ``next``.

Modules: ``estimate`` (:func:`estimate_flow`), ``tvl1``, ``farneback``, ``dis`` (the solvers), ``pyramid``
(:func:`build_pyramid`, the coarse-to-fine driver, the :class:`PyramidFlow` protocol), ``pyramid_flow``
(:func:`make_pyramid_flow`), ``farneback_cuda`` (the extractor's Farnebäck flow and pyramid on a CUDA device,
CuPy arrays in and out); Numba kernels in ``_*_nb``, CUDA ones in ``_tvl1_cupy`` and ``_farneback_cuda``. The
names below load on first use (PEP 562), so importing this package loads no solver and no Numba.
"""

from idtfv.lazy import lazy_exports

__all__ = [
    "estimate_flow",
    "estimate_flow_batch",
    "TVL1Params",
    "FarnebackParams",
    "DISParams",
    "METHODS",
    "BACKENDS",
    "tvl1_flow",
    "farneback_flow",
    "dis_flow",
    "solve_level_cpu",
    "coarse_to_fine",
    "gpu_available",
    "build_pyramid",
    "PyramidFlow",
    "PyramidFlowParams",
    "make_pyramid_flow",
    "FarnebackPyramidFlow",
    "CudaFarnebackPyramidFlow",
    "build_pyramid_cuda",
]
_HOMES = {
    "estimate_flow": "estimate", "estimate_flow_batch": "estimate", "METHODS": "estimate", "BACKENDS": "estimate",
    "gpu_available": "estimate",
    "TVL1Params": "tvl1", "tvl1_flow": "tvl1", "solve_level_cpu": "tvl1",
    "FarnebackParams": "farneback", "farneback_flow": "farneback", "FarnebackPyramidFlow": "farneback",
    "DISParams": "dis", "dis_flow": "dis",
    "coarse_to_fine": "pyramid", "build_pyramid": "pyramid", "PyramidFlow": "pyramid",
    "PyramidFlowParams": "pyramid_flow", "make_pyramid_flow": "pyramid_flow",
    "CudaFarnebackPyramidFlow": "farneback_cuda", "build_pyramid_cuda": "farneback_cuda",
}


__getattr__, __dir__ = lazy_exports(__name__, _HOMES)
