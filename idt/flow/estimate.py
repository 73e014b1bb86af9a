"""Two-frame optical flow, the one entry point: :func:`estimate_flow` (and :func:`estimate_flow_batch`).

TV-L1 (ours: Numba on the CPU, CuPy on the GPU), Farnebäck and DIS (OpenCV); used by ``extract-flow``, the CNN
datasets and the extractor's ``flow="tvl1"``::

    flow = estimate_flow(prev_gray, gray, method="tvl1", params=TVL1Params.fast())   # (h, w, 2) float32

``flow[y, x] = (dx, dy)`` moves pixel ``(x, y)`` of ``prev`` to ``(x + dx, y + dy)`` in ``next``.
"""

from __future__ import annotations

import functools
import warnings

import numpy as np

from idtfv.errors import ParameterError
from idtfv.idt.flow.dis import DISParams, dis_flow
from idtfv.idt.flow.farneback import FarnebackParams, farneback_flow
from idtfv.idt.flow.tvl1 import TVL1Params, tvl1_flow

__all__ = ["estimate_flow", "estimate_flow_batch", "gpu_available", "FlowBackendWarning", "METHODS", "BACKENDS"]

#: Flow methods and their parameter classes.
METHODS = {"tvl1": TVL1Params, "farneback": FarnebackParams, "dis": DISParams}
BACKENDS = ("auto", "cpu", "gpu")

_warned: set[str] = set()
#: Largest value accepted in a float frame (0..1 plus room for interpolation overshoot).
_FLOAT_MAX = 2.0


class FlowBackendWarning(RuntimeWarning):
    """``backend="gpu"`` cannot run on a GPU here (no CuPy or device, or no GPU path for the method) and runs on the
    CPU (once per process and cause). An idtfv warning: the commands print it as one ``warning: ...`` line."""


def _warn_once(key: str, message: str) -> None:
    if key not in _warned:
        _warned.add(key)
        warnings.warn(message, FlowBackendWarning, stacklevel=3)


@functools.lru_cache(maxsize=1)
def gpu_available() -> bool:
    """True when CuPy imports, sees a CUDA device and compiles the TV-L1 kernels (checked once per process)."""
    try:
        import cupy

        if cupy.cuda.runtime.getDeviceCount() < 1:
            return False
        from idtfv.idt.flow import _tvl1_cupy

        _tvl1_cupy.module().get_function("primal")
        return True
    except Exception:
        return False


def _check_frames(prev, nxt, method: str):
    arrays = []
    for name, img in (("prev", prev), ("next", nxt)):
        img = np.asarray(img)
        if img.ndim != 2:
            raise ParameterError(
                f"estimate_flow: {name} must be a gray (h, w) image, got shape {img.shape}; convert colour frames "
                f"with cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY)"
            )
        if img.dtype not in (np.uint8, np.float32, np.float64):
            raise ParameterError(f"estimate_flow: {name} must be uint8 (0..255) or float (0..1), got {img.dtype}")
        arrays.append(np.ascontiguousarray(img))
    a, b = arrays
    if a.shape != b.shape:
        raise ParameterError(f"estimate_flow: prev and next differ in shape, {a.shape} vs {b.shape}")
    if min(a.shape) < 2:
        raise ParameterError(f"estimate_flow: frames must be at least 2x2 pixels, got {a.shape}")
    for name, img in (("prev", a), ("next", b)):
        # float frames are 0..1 (OpenCV's convention); 0..255 floats would weight the data term 255x
        if img.dtype != np.uint8 and not np.isfinite(img).all():
            raise ParameterError(f"estimate_flow: {name} has NaN or infinite values; expected gray levels in 0..1")
        if img.dtype != np.uint8 and img.size and float(np.abs(img).max()) > _FLOAT_MAX:
            raise ParameterError(
                f"estimate_flow: float frames must be in 0..1, but {name} reaches {float(np.abs(img).max()):g}; "
                f"pass uint8 frames or divide by 255"
            )
    if method == "dis" or a.dtype != b.dtype:
        a, b = (_to_uint8(x) for x in (a, b))
    elif a.dtype == np.float64:
        a, b = a.astype(np.float32), b.astype(np.float32)
    return a, b


def _to_uint8(img):
    if img.dtype == np.uint8:
        return img
    return np.clip(np.rint(img * 255.0), 0, 255).astype(np.uint8)


def _tvl1(a, b, params, backend, parallel):
    if backend in ("auto", "gpu"):
        if gpu_available():
            try:
                from idtfv.idt.flow._tvl1_cupy import tvl1_flow_gpu

                return tvl1_flow_gpu(a, b, params=params)
            except Exception as exc:  # a device that cannot run the kernels (memory, driver)
                _warn_once("gpu-failed", f"TV-L1 on the GPU failed ({type(exc).__name__}: {exc}); using the CPU")
        elif backend == "gpu":
            _warn_once("gpu-missing", "backend='gpu' asked for, but CuPy or a CUDA device is missing; using the CPU")
    return tvl1_flow(a, b, params=params, parallel=parallel)


def estimate_flow(
    prev,
    next,  # noqa: A002 - the name the contract uses
    *,
    method: str = "tvl1",
    backend: str = "auto",
    params=None,
    parallel: bool = False,
) -> np.ndarray:
    """Dense optical flow from ``prev`` to ``next``.

    Parameters
    ----------
    prev, next : (h, w) uint8 (0..255) or float32 (0..1) arrays
        Gray frames of the same shape.
    method : {"tvl1", "farneback", "dis"}
        TV-L1 (ours), Farnebäck or DIS (OpenCV).
    backend : {"auto", "cpu", "gpu"}
        Where TV-L1 runs: ``"auto"`` uses a GPU when CuPy and a device are present, ``"gpu"`` asks for one (a
        one-time warning and the CPU if it cannot run). Farnebäck and DIS always run on the CPU.
    params : TVL1Params, FarnebackParams or DISParams, optional
        Options of ``method`` (its defaults if None).
    parallel : bool
        CPU TV-L1 only: use the multi-threaded kernels (Numba's threads). Leave False inside worker processes.

    Returns
    -------
    flow : (h, w, 2) float32
        ``flow[..., 0]`` horizontal, ``flow[..., 1]`` vertical displacement in pixels.

    Raises
    ------
    idtfv.errors.ParameterError
        Unknown method/backend, params of the wrong class, frames that are not 2-D, differ in shape, or too small.
    """
    if method not in METHODS:
        raise ParameterError(f"estimate_flow: method must be one of {', '.join(METHODS)}, got {method!r}")
    if backend not in BACKENDS:
        raise ParameterError(f"estimate_flow: backend must be one of {', '.join(BACKENDS)}, got {backend!r}")
    cls = METHODS[method]
    if params is None:
        params = cls()
    elif not isinstance(params, cls):
        raise ParameterError(
            f"estimate_flow: method={method!r} takes {cls.__name__} params, got {type(params).__name__}"
        )
    a, b = _check_frames(prev, next, method)
    if method == "tvl1":
        return _tvl1(a, b, params, backend, parallel)
    if backend == "gpu":
        _warn_once(f"gpu-{method}", f"method={method!r} has no GPU path; running it on the CPU")
    if method == "farneback":
        if a.dtype != np.uint8:
            a, b = a * np.float32(255.0), b * np.float32(255.0)
        return farneback_flow(a, b, params=params)
    return dis_flow(a, b, params=params)


def estimate_flow_batch(
    prevs,
    nexts,
    *,
    method: str = "tvl1",
    backend: str = "auto",
    params=None,
    parallel: bool = False,
) -> np.ndarray:
    """Flows of several frame pairs of one size: ``(B, h, w, 2)`` float32.

    Same arguments and result per pair as :func:`estimate_flow`. On the GPU (TV-L1, ``backend`` "auto"/"gpu" with
    a device) the ``B`` pairs are solved together, which is how the GPU reaches its throughput; otherwise this is
    a loop over :func:`estimate_flow`.
    """
    prevs, nexts = list(prevs), list(nexts)
    if len(prevs) != len(nexts):
        raise ParameterError(f"estimate_flow_batch: {len(prevs)} first frames but {len(nexts)} second frames")
    if not prevs:
        raise ParameterError("estimate_flow_batch: no frame pairs given")
    if method not in METHODS:
        raise ParameterError(f"estimate_flow_batch: method must be one of {', '.join(METHODS)}, got {method!r}")
    if backend not in BACKENDS:
        raise ParameterError(f"estimate_flow_batch: backend must be one of {', '.join(BACKENDS)}, got {backend!r}")
    if method == "tvl1" and backend in ("auto", "gpu") and len(prevs) > 1 and gpu_available():
        params = params if params is not None else TVL1Params()
        if not isinstance(params, TVL1Params):
            raise ParameterError(f"estimate_flow_batch: method='tvl1' takes TVL1Params, got {type(params).__name__}")
        pairs = [_check_frames(a, b, method) for a, b in zip(prevs, nexts)]
        if len({a.shape for a, _ in pairs}) == 1 and len({a.dtype for a, _ in pairs}) == 1:
            try:
                from idtfv.idt.flow._tvl1_cupy import tvl1_flow_gpu_batch

                return tvl1_flow_gpu_batch([a for a, _ in pairs], [b for _, b in pairs], params=params)
            except Exception as exc:
                _warn_once("gpu-failed", f"TV-L1 on the GPU failed ({type(exc).__name__}: {exc}); using the CPU")
    return np.stack([estimate_flow(a, b, method=method, backend=backend, params=params, parallel=parallel)
                     for a, b in zip(prevs, nexts)])
