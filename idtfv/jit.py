"""A lighter start of Numba's compiled-code runtime, for commands that load cached kernels.

The first call of any ``@njit(cache=True)`` kernel in a process initialises Numba's CPU target: it imports every
implementation registry Numba has (0.22 s of CPU on this project's 2-core x86 test machine, several times the
dozen kernel cache loads of an extraction together, about 3 ms each). Half of that is one import:
``numba.np.arraymath`` asks at import time whether BLAS is available, by importing ``scipy.linalg`` (scipy's whole
linear-algebra package), although no idtfv kernel calls BLAS (``np.dot``, ``np.linalg``); without it the target
starts in 0.11 s.

:func:`light_numba_init` imports ``numba.np.arraymath`` with that check answered by whether SciPy is *installed*
(``importlib.util.find_spec``, no import): the answer Numba would get, without the import. Numba's own later BLAS
uses (a kernel that compiles ``np.dot``) still import SciPy as before, and compiled code resolves its BLAS
functions at run time. The kernels, their cache files and their results are unchanged; only the start-up is
shorter (``bench/bench_startup.py``).

The import touches two Numba internals (``numba.np.linalg.ensure_blas`` and ``numba.np.arraymath``'s binding of
it), restores both, and does nothing (Numba initialises as usual) when they are not as expected, when Numba's
target is already initialised, or when ``IDTFV_PLAIN_NUMBA_INIT=1``.

Loading a cached kernel needs none of those registries: its machine code is linked, not compiled. Numba's cache
still refreshes the whole target before every load (``Cache.load_overload``), and the first refresh of a process
is the 0.11 s above. :func:`light_numba_init` also makes the loads of *idtfv's* kernels (functions of ``idtfv.*``
modules) start only what linked code calls: Numba's runtime (NRT: allocation, reference counts; every other C
helper and the math library are registered when the target is created) and ``numba.cpython.hashing``'s symbols.
A kernel not in the cache compiles as before, and Numba's compiler refreshes the target itself; other packages'
cached functions load exactly as Numba loads them. This wraps a third internal, ``numba.core.caching.Cache``'s
``load_overload``, left as it is when Numba's cache class lacks the methods the wrapper calls and under
``IDTFV_PLAIN_NUMBA_INIT=1``; ``tests/test_startup_cost.py`` checks both loads.
"""

from __future__ import annotations

import importlib.util
import os
import sys

__all__ = ["light_numba_init"]

_done = False
_OURS = "idtfv."


def _blas_installed() -> None:
    """Numba's ``ensure_blas`` without the import: ImportError when SciPy is not installed."""
    if importlib.util.find_spec("scipy") is None:
        raise ImportError("scipy 0.16+ is required for linear algebra")


def _light_cache_loads() -> None:
    """Make Numba's cache load idtfv's kernels without refreshing its target (see the module's docstring)."""
    try:
        import numba.cpython.hashing  # noqa: F401  registers the hash secret's symbols (linked code reads them)
        from numba.core import caching
        from numba.core.runtime import rtsys
    except ImportError:
        return
    cache = caching.Cache
    numbas_load = cache.__dict__.get("load_overload")
    if not callable(numbas_load) or not all(
        callable(getattr(cache, name, None)) for name in ("_load_overload", "_guard_against_spurious_io_errors")
    ):
        return  # not the Numba this was written for: its own loads

    def load_overload(self, sig, target_context):
        if not getattr(getattr(self, "_py_func", None), "__module__", "").startswith(_OURS):
            return numbas_load(self, sig, target_context)
        rtsys.initialize(target_context)  # NRT's symbols (the first call only)
        with self._guard_against_spurious_io_errors():
            return self._load_overload(sig, target_context)

    load_overload.__wrapped__ = numbas_load
    cache.load_overload = load_overload


def light_numba_init() -> bool:
    """Import ``numba.np.arraymath`` without importing ``scipy.linalg``, and load idtfv's cached kernels without
    refreshing Numba's target (see the module's docstring).

    Call it before the process's first Numba kernel call; later calls do nothing. The light cache loads are set up
    on the first call (unless ``IDTFV_PLAIN_NUMBA_INIT=1``); returns True when the import took the light path
    (False as well when Numba's target was already initialised).
    """
    global _done
    if _done or os.environ.get("IDTFV_PLAIN_NUMBA_INIT") == "1":
        return False
    _done = True
    _light_cache_loads()
    if "numba.np.arraymath" in sys.modules or "scipy.linalg" in sys.modules:
        return False  # already paid for (or Numba's target already initialised)
    try:
        import numba.np.linalg as linalg
    except ImportError:  # no Numba: nothing to initialise
        return False
    original = getattr(linalg, "ensure_blas", None)
    if not callable(original):
        return False
    linalg.ensure_blas = _blas_installed
    try:
        import numba.np.arraymath as arraymath
    finally:
        linalg.ensure_blas = original
    if getattr(arraymath, "ensure_blas", None) is _blas_installed:
        arraymath.ensure_blas = original
    return True
