"""CUDA kernels of a compiled ``cupy.RawModule``, looked up once.

CuPy's ``RawModule.get_function(name)`` costs the host a few microseconds a call (2.6 us on the lent H200
machine's CPU, under cProfile), and the device extractor launches ~160 kernels a frame, each through a lookup:
0.4 ms a frame of a main thread that bounds the frame rate (``docs/GPU.md``). :func:`function` keeps the
functions by module and name. Importing this module imports nothing of CuPy.
"""

from __future__ import annotations

#: (id(module), name) -> (module, function); the module is kept so that its id is not reused while it is here.
_FUNCTIONS: dict = {}


def function(module, name: str):
    """``module.get_function(name)``, looked up once per module object and name.

    Parameters
    ----------
    module : cupy.RawModule (or any object with ``get_function``, e.g. a counting stand-in of a benchmark)
    name : str
        The kernel's ``extern "C"`` name.
    """
    key = (id(module), name)
    held = _FUNCTIONS.get(key)
    if held is None or held[0] is not module:
        held = _FUNCTIONS[key] = (module, module.get_function(name))
    return held[1]
