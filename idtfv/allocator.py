"""The process's memory allocator: keep freed blocks for reuse instead of handing them back to the OS every frame.

The extractor allocates and frees the same arrays of a few hundred KB to a few MB every frame (pyramid levels,
flows, expansions, histograms; NumPy's, Numba's and OpenCV's buffers alike come from C ``malloc``). glibc's
``malloc`` serves blocks above its mmap threshold (128 KB, raised by itself as blocks are freed) with fresh
mappings and trims the top of its heap on ``free``, so each frame faults its pages in again: on vtest 320x240,
frames 0-200 (default preset, one core), 215,000-230,000 minor page faults and 0.46-0.51 s of system time in an
11 s process. With the mmap threshold at 32 MB (glibc's largest for ``mallopt``) and the trim threshold at 512 MB,
37,000 faults and 0.09-0.18 s; peak RSS 258 -> 262 MB, the output bytes the same. Both are needed: either alone
changed nothing (measured with ``GLIBC_TUNABLES``, 2026-12-03).

:func:`keep_freed_memory` applies this to the running process; the commands call it at start and the stage
runner in each worker. Other C libraries (musl, macOS) are left as they are, and so is a process whose user
chose glibc's malloc settings (``GLIBC_TUNABLES`` naming ``glibc.malloc``, or the ``MALLOC_*_`` variables).
"""

from __future__ import annotations

import os
import sys

__all__ = ["keep_freed_memory", "MMAP_THRESHOLD", "TRIM_THRESHOLD"]

#: Blocks up to this size come from the heap (glibc's ``M_MMAP_THRESHOLD`` maximum on 64-bit systems).
MMAP_THRESHOLD = 32 * 1024 * 1024
#: Free memory at the top of the heap is given back to the OS only beyond this (``M_TRIM_THRESHOLD``).
TRIM_THRESHOLD = 512 * 1024 * 1024

_M_TRIM_THRESHOLD = -1  # glibc's <malloc.h>
_M_MMAP_THRESHOLD = -3
_USER_VARIABLES = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "MALLOC_TOP_PAD_", "MALLOC_MMAP_MAX_")

_done: bool | None = None


def _user_chose() -> bool:
    return "glibc.malloc" in os.environ.get("GLIBC_TUNABLES", "") or any(v in os.environ for v in _USER_VARIABLES)


def keep_freed_memory() -> bool:
    """Raise glibc's mmap and trim thresholds in this process (once; see the module docstring).

    Returns
    -------
    bool
        True when the thresholds are set (now or by an earlier call); False on another C library, or when the
        user set glibc's malloc variables (theirs are kept).
    """
    global _done
    if _done is not None:
        return _done
    _done = False
    if not sys.platform.startswith("linux") or _user_chose():
        return False
    import ctypes  # here: the commands' --help need not load it

    try:
        libc = ctypes.CDLL(None)  # the process's own symbols: libc's on Linux (no ldconfig subprocess)
        mallopt = libc.mallopt
        libc.gnu_get_libc_version  # noqa: B018 - glibc only (musl has mallopt as a stub)
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    mallopt.restype = ctypes.c_int
    _done = bool(mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD))
    return _done
