"""The process's heap: keep freed blocks for reuse, and back the heap with huge pages.

The extractor allocates and frees the same arrays of a few hundred KB to a few MB every frame (pyramid levels,
flows, expansions, histograms; NumPy's, Numba's and OpenCV's buffers alike come from C ``malloc``), and its
kernels sweep those arrays and gather from them. Two costs of glibc's defaults, measured on vtest 320x240 frames
0-200 (default preset, whole process, one core, 2026-12-03):

* ``malloc`` serves blocks above its mmap threshold (128 KB, raised by itself as blocks are freed) with fresh
  mappings and trims the top of its heap on ``free``, so each frame faults its pages in again: 215,000-230,000
  minor page faults, 0.46-0.51 s of system time in an 11 s process. With the mmap threshold at 32 MB (glibc's
  largest for ``mallopt``) and the trim threshold at 1 GB: 37,000 faults, 0.1-0.2 s (either setting alone changed
  nothing);
* the heap is made of 4 KB pages, so the kernels' sweeps and gathers over ~20 MB of arrays per frame miss the
  TLB: with the heap marked for transparent huge pages (``madvise(MADV_HUGEPAGE)``, what the kernel's default
  ``madvise`` mode asks for) the process's user time fell 6% (10.3-10.5 -> 9.7-9.8 s; fast preset 5.8 -> 5.3-5.4 s),
  system time rose 0.15 s, peak RSS 261 -> 265 MB.

:func:`tune_heap` does both in the running process: it sets the thresholds, grows the heap once by
:data:`HEAP_RESERVE` (address space only: pages are used when touched) so that the blocks of the coming frames
come from one region, and marks that region for huge pages. The commands call it at start and the stage runner
in each worker; the output bytes do not depend on it. It leaves alone other C libraries (musl, macOS), a process
with ``IDTFV_TUNE_HEAP=0`` in its environment (glibc's defaults; ``bench/bench_heap.py`` races the two), a
process whose user chose glibc's malloc settings (``GLIBC_TUNABLES`` naming ``glibc.malloc``, or the
``MALLOC_*_`` variables), and, for the huge pages, a system with them off or with strict overcommit accounting
(``vm.overcommit_memory = 2``, where the reserve would count against the commit limit). Other threads' blocks
come from glibc's other arenas, mapped by glibc in 64 MB reservations without the mark:
:func:`tune_thread_heap`, called by each of the extractor's own threads as it starts, grows its arena by
:data:`THREAD_RESERVE` once and marks it too (``--threads 2`` on vtest: the front thread's arena went from 4 KB pages
only to mostly huge pages; see its docstring).
"""

from __future__ import annotations

import os
import sys
import threading

__all__ = ["tune_heap", "tune_thread_heap", "THREAD_RESERVE", "MMAP_THRESHOLD", "TRIM_THRESHOLD", "HEAP_RESERVE",
           "OPT_OUT_ENV"]

#: ``IDTFV_TUNE_HEAP=0`` keeps glibc's defaults.
OPT_OUT_ENV = "IDTFV_TUNE_HEAP"

#: Blocks up to this size come from the heap (glibc's ``M_MMAP_THRESHOLD`` maximum on 64-bit systems).
MMAP_THRESHOLD = 32 * 1024 * 1024
#: Free memory at the top of the heap is given back to the OS only beyond this (``M_TRIM_THRESHOLD``).
TRIM_THRESHOLD = 1024 * 1024 * 1024
#: Address space the heap is grown by once, then marked for huge pages (the extractor's peak is ~270 MB).
HEAP_RESERVE = 512 * 1024 * 1024

#: Address space a thread's arena is grown by once (below :data:`MMAP_THRESHOLD`, so that it comes from the arena, and
#: within glibc's 64 MB arena reservation; the extractor's front thread on 320x240 frames holds ~30 MB).
THREAD_RESERVE = 31 * 1024 * 1024
_ARENA_SPAN = 64 * 1024 * 1024  # glibc's HEAP_MAX_SIZE on 64-bit systems: each arena heap is aligned to it

_M_TRIM_THRESHOLD = -1  # glibc's <malloc.h>
_M_TOP_PAD = -2
_M_MMAP_THRESHOLD = -3
_MADV_HUGEPAGE = 14  # <sys/mman.h> on Linux
_DEFAULT_TOP_PAD = 128 * 1024
_USER_VARIABLES = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "MALLOC_TOP_PAD_", "MALLOC_MMAP_MAX_")

_state: dict | None = None
_calls = None  # _libc()'s functions once made (False: not glibc)
_lock = threading.Lock()  # the GPU worker's video threads each call it from the stage runner


def _user_chose() -> bool:
    if os.environ.get(OPT_OUT_ENV, "").strip() == "0":
        return True
    return "glibc.malloc" in os.environ.get("GLIBC_TUNABLES", "") or any(v in os.environ for v in _USER_VARIABLES)


def _read(path: str) -> str:
    try:
        with open(path) as f:
            return f.read()
    except OSError:
        return ""


def _mappings():
    """``(start, end, permissions, is_heap)`` of this process's mappings in address order (``/proc/self/maps``),
    up to a line that is not a mapping's (none on Linux)."""
    for line in _read("/proc/self/maps").splitlines():
        fields = line.split()
        try:
            start, end = (int(x, 16) for x in fields[0].split("-"))
            permissions = fields[1]
        except (IndexError, ValueError):
            return
        yield start, end, permissions, line.rstrip().endswith("[heap]")


def _heap_range() -> tuple[int, int] | None:
    return next(((start, end) for start, end, _, is_heap in _mappings() if is_heap), None)


def _libc():
    """glibc's ``mallopt``, ``malloc``, ``free`` and ``madvise`` with their C types, or None on another C library
    (made once; ``ctypes`` imported here: the commands' ``--help`` need not load it)."""
    global _calls
    if _calls is None:
        import ctypes

        try:
            libc = ctypes.CDLL(None)  # the process's own symbols: libc's on Linux (no ldconfig subprocess)
            libc.gnu_get_libc_version  # noqa: B018 - glibc only (musl has mallopt as a stub)
            mallopt, malloc, free, madvise = libc.mallopt, libc.malloc, libc.free, libc.madvise
        except (OSError, AttributeError):
            _calls = False
            return None
        mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
        malloc.argtypes, malloc.restype = (ctypes.c_size_t,), ctypes.c_void_p
        free.argtypes, free.restype = (ctypes.c_void_p,), None
        madvise.argtypes, madvise.restype = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int), ctypes.c_int
        _calls = (mallopt, malloc, free, madvise)
    return _calls or None


def _huge_pages_possible() -> bool:
    mode = _read("/sys/kernel/mm/transparent_hugepage/enabled")
    return "[never]" not in mode and mode != "" and _read("/proc/sys/vm/overcommit_memory").strip() != "2"


def tune_heap() -> dict:
    """Set glibc's thresholds and back the heap with huge pages in this process (once; see the module docstring).

    Returns
    -------
    dict
        ``{"thresholds": bool, "huge_pages": bool}``: what was set (now or by an earlier call). Both False on
        another C library or when the user set glibc's malloc variables.
    """
    global _state
    with _lock:
        if _state is None:
            _state = _tune()
        return _state


def _tune() -> dict:
    """:func:`tune_heap`'s work, done once."""
    state = {"thresholds": False, "huge_pages": False}
    if not sys.platform.startswith("linux") or _user_chose():
        return state
    calls = _libc()
    if calls is None:
        return state
    mallopt, malloc, free, madvise = calls
    state["thresholds"] = bool(mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(
        mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD))
    if not state["thresholds"] or not _huge_pages_possible():
        return state
    # grow the heap once by the reserve (the top pad of one extension), then mark the whole heap
    if not mallopt(_M_TOP_PAD, HEAP_RESERVE):
        return state
    try:
        block = malloc(MMAP_THRESHOLD - 4096)  # more than the free top: the heap grows by it and the pad
        free(block)
    finally:
        mallopt(_M_TOP_PAD, _DEFAULT_TOP_PAD)
    heap = _heap_range()
    if heap is not None and heap[1] - heap[0] >= HEAP_RESERVE:
        state["huge_pages"] = madvise(heap[0], heap[1] - heap[0], _MADV_HUGEPAGE) == 0
    return state


def tune_thread_heap() -> bool:
    """Back the calling thread's malloc arena with huge pages, as :func:`tune_heap` backs the main heap.

    glibc serves a thread other than the main one from an arena of its own: a 64 MB reservation made readable as it
    grows, in small steps, and without the huge-page mark, so the arrays that thread makes (the front thread's
    pyramids, flows and HOG histograms) sit on 4 KB pages that the other thread's kernels read too. Here the
    calling thread allocates and frees one :data:`THREAD_RESERVE` block (its arena grows once; the trim threshold
    keeps the space, address space only until touched) and marks the arena's mapping and the rest of its
    reservation with ``madvise(MADV_HUGEPAGE)``.

    Does nothing unless :func:`tune_heap` marked the main heap in this process (the commands' runs; a library user's
    process keeps glibc's behaviour), or when the block came from the main heap (already marked). Arenas glibc adds
    beyond the first reservation (a thread holding more than ~64 MB) keep 4 KB pages.

    Returns
    -------
    bool
        Whether a mapping was marked.
    """
    state = _state
    if state is None or not state["huge_pages"]:
        return False
    _, malloc, free, madvise = _libc()  # (glibc's: tune_heap marked the heap with them)
    block = malloc(THREAD_RESERVE)
    if not block:
        return False
    try:
        start = end = None
        for lo, hi, permissions, is_heap in _mappings():
            if start is None:
                if lo <= block < hi:
                    if is_heap:
                        return False
                    start, end = lo, hi
            else:  # the arena's reservation beyond its readable part: the next mapping, inaccessible, same span
                if lo == end and permissions == "---p" and hi <= (start // _ARENA_SPAN + 1) * _ARENA_SPAN:
                    end = hi
                break
        return start is not None and madvise(start, end - start, _MADV_HUGEPAGE) == 0
    finally:
        free(block)
