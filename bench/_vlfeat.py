"""VLFeat's C Fisher-vector encoder called through :mod:`ctypes`: the baseline of ``bench_fisher.py``, no cyvlfeat.

The benchmark's baseline is ``../shared/reference/vlfeat/libvl.so.1`` (VLFeat 0.9.21 built with SSE2/AVX, see
``../shared/README.md``). :class:`VLFeat` loads a ``libvl`` by path (it needs only libc, libm and libgomp, so no
``LD_LIBRARY_PATH``, headers, compiler or Python binding) and calls::

    vl_size vl_fisher_encode(void *enc, vl_type dataType, void const *means, vl_size dimension,
                             vl_size numClusters, void const *covariances, void const *priors,
                             void const *data, vl_size numData, int flags)

with ``dataType = VL_TYPE_FLOAT`` (1), as cyvlfeat's ``fisher(..., improved=True)`` did. What the binding relies on
(VLFeat 0.9.21, ``vl/fisher.h`` and ``vl/fisher.c``):

* VLFeat stores one vector per column, so C-ordered ``(N, D)`` descriptors and ``(K, D)`` means and variances are
  passed as they are; ``priors`` is ``(K,)``;
* ``enc`` holds ``2 * D * K`` values of the data type, laid out ``[u_1..u_K, v_1..v_K]`` (the layout of
  ``idtfv.encoding.fisher_vector``); the function clears it before accumulating;
* the flags are ``SQUARE_ROOT = 1``, ``NORMALIZED = 2``, ``IMPROVED = 3`` (both) and ``FAST = 4``;
* the return value is the number of (descriptor, component) terms accumulated: posteriors of at least 1e-6, so at
  most ``N * K``, and exactly ``N`` with ``FAST``;
* ``numData = 0`` divides by zero, and ``K = 0`` or ``D = 0`` fails an ``assert`` (which aborts the process):
  :meth:`VLFeat.encode` refuses them, and non-positive variances or priors, before the call;
* ``vl_size`` is ``size_t``'s width on every platform VLFeat supports, ``vl_type`` a 32-bit unsigned integer.
"""

from __future__ import annotations

import ctypes
import os
from pathlib import Path

import numpy as np

#: The SIMD build the benchmarks race (``../shared`` beside the repository).
LIBRARY = Path(__file__).resolve().parents[1].parent / "shared" / "reference" / "vlfeat" / "libvl.so.1"

VL_TYPE_FLOAT = 1
FLAG_SQUARE_ROOT = 1 << 0
FLAG_NORMALIZED = 1 << 1
FLAG_IMPROVED = FLAG_NORMALIZED | FLAG_SQUARE_ROOT
FLAG_FAST = 1 << 2


def fisher_flags(*, improved: bool = False, normalized: bool = False, square_root: bool = False,
                 fast: bool = False) -> int:
    """VLFeat's ``flags`` for cyvlfeat's / MATLAB ``vl_fisher``'s options (``improved`` = normalized + square root)."""
    return ((FLAG_IMPROVED if improved else 0) | (FLAG_NORMALIZED if normalized else 0)
            | (FLAG_SQUARE_ROOT if square_root else 0) | (FLAG_FAST if fast else 0))


class VLFeat:
    """A loaded ``libvl``: :meth:`fisher` / :meth:`encode` (``vl_fisher_encode``, float32) and :meth:`report`.

    Parameters
    ----------
    path : str or Path
        The library: a path (loaded as it is), or a bare name such as ``"libvl.so.1"`` (the dynamic loader's search,
        which returns the copy already loaded in the process, e.g. cyvlfeat's).
    threads : int or None
        ``vl_set_num_threads(threads)`` (VLFeat's OpenMP loops) when given; None leaves VLFeat's default
        (``OMP_NUM_THREADS`` as libgomp read it).

    Raises
    ------
    OSError
        The library cannot be loaded.
    """

    def __init__(self, path: str | os.PathLike = LIBRARY, *, threads: int | None = None):
        self.path = str(path)
        lib = ctypes.CDLL(self.path)
        size = ctypes.c_size_t
        lib.vl_fisher_encode.restype = size
        lib.vl_fisher_encode.argtypes = [ctypes.c_void_p, ctypes.c_uint32, ctypes.c_void_p, size, size,
                                         ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p, size, ctypes.c_int]
        lib.vl_set_num_threads.argtypes = [size]
        lib.vl_set_num_threads.restype = None
        lib.vl_get_max_threads.restype = size
        lib.vl_configuration_to_string_copy.restype = ctypes.c_void_p
        lib.vl_free.argtypes = [ctypes.c_void_p]
        lib.vl_free.restype = None
        lib.vl_get_version_string.restype = ctypes.c_char_p
        self._lib = lib
        if threads is not None:
            if threads < 1:
                raise ValueError(f"threads: expected a positive count, got {threads}")
            lib.vl_set_num_threads(threads)

    def encode(self, X, means, covariances, priors, flags: int) -> tuple[np.ndarray, int]:
        """``vl_fisher_encode`` on float32 copies of the inputs (no copy when already float32 and C-ordered).

        Parameters
        ----------
        X : (N, D) array, N >= 1
            Descriptors.
        means, covariances : (K, D) arrays
            The GMM's means and diagonal variances (> 0).
        priors : (K,) array
            Its weights (> 0).
        flags : int
            ``FLAG_*`` bits (:func:`fisher_flags`).

        Returns
        -------
        enc : (2KD,) float32
            The Fisher vector, ``[u_1..u_K, v_1..v_K]``.
        terms : int
            VLFeat's count of (descriptor, component) terms it accumulated (posterior >= 1e-6).
        """
        X = np.ascontiguousarray(X, np.float32)
        means = np.ascontiguousarray(means, np.float32)
        covariances = np.ascontiguousarray(covariances, np.float32)
        priors = np.ascontiguousarray(priors, np.float32)
        if means.ndim != 2 or means.shape[0] < 1 or means.shape[1] < 1:
            raise ValueError(f"means: expected a (K, D) array with K, D >= 1, got shape {means.shape}")
        K, D = means.shape
        if X.ndim != 2 or X.shape[1] != D or X.shape[0] < 1:
            raise ValueError(f"X: expected (N, {D}) descriptors with N >= 1 (VLFeat divides by N), got shape "
                             f"{X.shape}")
        if covariances.shape != (K, D):
            raise ValueError(f"covariances: expected shape {(K, D)} (the means' shape), got {covariances.shape}")
        if priors.shape != (K,):
            raise ValueError(f"priors: expected shape {(K,)}, got {priors.shape}")
        for name, a in (("covariances", covariances), ("priors", priors)):
            if not (np.isfinite(a).all() and (a > 0).all()):
                raise ValueError(f"{name}: expected finite values > 0, got min {a.min():g}")
        enc = np.empty(2 * K * D, np.float32)
        terms = self._lib.vl_fisher_encode(enc.ctypes.data, VL_TYPE_FLOAT, means.ctypes.data, D, K,
                                           covariances.ctypes.data, priors.ctypes.data, X.ctypes.data,
                                           X.shape[0], int(flags))
        return enc, int(terms)

    def fisher(self, X, means, covariances, priors, *, improved: bool = False, normalized: bool = False,
               square_root: bool = False, fast: bool = False) -> np.ndarray:
        """The Fisher vector (2KD,) float32 of X (N, D), with cyvlfeat's ``fisher`` options (same defaults)."""
        return self.encode(X, means, covariances, priors,
                           fisher_flags(improved=improved, normalized=normalized, square_root=square_root,
                                        fast=fast))[0]

    def report(self) -> dict:
        """Which file this handle's ``vl_fisher_encode`` lives in, and VLFeat's own report of its build.

        Returns
        -------
        dict
            ``mapped`` (the file, from ``/proc/self/maps``; ``"?"`` where that cannot be read), ``version``,
            ``simd`` (``vl_get_simd_enabled``), ``avx`` / ``sse2`` (``vl_cpu_has_*``), ``threads``
            (``vl_get_max_threads``) and ``config`` (``vl_configuration_to_string_copy``, whitespace folded).
        """
        lib = self._lib
        ptr = lib.vl_configuration_to_string_copy()
        config = ""
        if ptr:
            config = " ".join(ctypes.string_at(ptr).decode(errors="replace").split())
            lib.vl_free(ptr)
        return {"mapped": _mapped_file(ctypes.cast(lib.vl_fisher_encode, ctypes.c_void_p).value),
                "version": (lib.vl_get_version_string() or b"?").decode(errors="replace"),
                "simd": bool(lib.vl_get_simd_enabled()), "avx": bool(lib.vl_cpu_has_avx()),
                "sse2": bool(lib.vl_cpu_has_sse2()), "threads": int(lib.vl_get_max_threads()), "config": config}


def _mapped_file(address: int) -> str:
    """The file mapped at ``address`` in this process (``/proc/self/maps``), or ``"?"``."""
    try:
        with open("/proc/self/maps") as f:
            for line in f:
                parts = line.split(maxsplit=5)
                lo, hi = (int(v, 16) for v in parts[0].split("-"))
                if lo <= address < hi and len(parts) == 6:
                    return parts[5].strip()
    except OSError:
        pass
    return "?"
