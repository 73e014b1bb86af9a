"""Where the extractor's per-frame kernels run: ``IDTParams.device`` resolved to ``"cpu"`` or ``"cuda"``.

``"cpu"`` (the default) runs the Numba kernels. ``"cuda"`` runs the steps that have CUDA kernels on the current
CUDA device through CuPy (see ``docs/GPU.md`` for which) and is an error when CuPy cannot see a device.
``"auto"`` is ``"cuda"`` when CuPy sees a device, else ``"cpu"`` with one :class:`DeviceFallbackWarning` (a
:class:`RuntimeWarning`) per process; the commands print it as one ``warning: ...`` line.

Importing this module imports neither CuPy nor Numba; :func:`cuda_available` imports CuPy when called.
"""

from __future__ import annotations

import warnings

from idtfv.errors import ParameterError

__all__ = ["DEVICES", "DeviceFallbackWarning", "cuda_available", "resolve_device"]

#: Values of ``IDTParams.device``.
DEVICES = ("cpu", "cuda", "auto")

_warned = False


class DeviceFallbackWarning(RuntimeWarning):
    """``device="auto"`` found no usable CUDA device and runs on the CPU (once per process)."""


def _cuda_problem() -> str | None:
    """None when CuPy imports and sees at least one CUDA device, else why not (one line)."""
    try:
        import cupy

        count = int(cupy.cuda.runtime.getDeviceCount())
    except Exception as exc:  # noqa: BLE001 - ImportError, CUDARuntimeError (no driver), ...
        text = str(exc).splitlines()[0] if str(exc) else ""
        return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
    return None if count >= 1 else "CuPy sees no CUDA device"


def cuda_available() -> bool:
    """True when CuPy imports and sees a CUDA device (checked on every call; cheap once CuPy is imported)."""
    return _cuda_problem() is None


def resolve_device(device: str) -> str:
    """``"cpu"`` or ``"cuda"``: where ``device`` (one of :data:`DEVICES`) runs on this machine.

    Raises
    ------
    ParameterError
        ``device="cuda"`` and CuPy cannot see a CUDA device, or ``device`` is not one of :data:`DEVICES`.
    """
    global _warned
    if device not in DEVICES:
        raise ParameterError(f"device: expected one of {', '.join(DEVICES)}, got {device!r}")
    if device == "cpu":
        return "cpu"
    problem = _cuda_problem()
    if problem is None:
        return "cuda"
    if device == "cuda":
        raise ParameterError(
            f"device 'cuda' (--device cuda) needs CuPy and a CUDA device, but {problem}; install cupy-cuda12x "
            "on a machine with an NVIDIA GPU, or use --device cpu (or auto: the GPU when there is one)"
        )
    if not _warned:
        _warned = True
        warnings.warn(f"device 'auto': no usable CUDA device ({problem}); running on the CPU",
                      DeviceFallbackWarning, stacklevel=2)
    return "cpu"
