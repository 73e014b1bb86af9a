"""VLFeat's C Fisher-vector encoder and GMM trainer called through :mod:`ctypes`: the baselines of
``bench_fisher.py`` and ``bench_gmm.py``, no cyvlfeat.

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

:meth:`VLFeat.gmm` is VLFeat's GMM trainer, the baseline of ``bench_gmm.py`` (what cyvlfeat's ``gmm`` wraps), on
the ``VlGMM`` object of ``vl/gmm.h``::

    VlGMM * vl_gmm_new (vl_type dataType, vl_size dimension, vl_size numComponents)
    void vl_gmm_set_{verbosity (int), num_repetitions (vl_size), max_num_iterations (vl_size),
                     initialization (VlGMMInitialization: KMeans = 0, Rand = 1, Custom = 2),
                     covariance_lower_bound (double), covariance_lower_bounds (double const *, D values),
                     means, covariances, priors (void const *, copied)}
    double vl_gmm_cluster (VlGMM * self, void const * data, vl_size numData)
    void const * vl_gmm_get_{means, covariances, priors} (VlGMM const * self)
    void vl_gmm_delete (VlGMM * self)

What it relies on (VLFeat 0.9.21, ``vl/gmm.c``):

* data, means and covariances are one vector per column, so C-ordered ``(N, D)`` / ``(K, D)`` arrays pass as they
  are; float32 (``VL_TYPE_FLOAT``), the type VLFeat's MATLAB and Python front ends use for descriptors;
* EM with ``maxNumIterations = M`` runs at most M M-steps and M + 1 E-steps: the returned log-likelihood is that of
  the returned model, summed (not averaged) over the data and accumulated in double from float32 terms;
* EM also stops early when ``|LL - LL_prev| / |LL| < 1e-5`` (fixed in gmm.c; there is no setter), so a
  "tolerance 0" run is not available: :class:`GMMFit` says how many iterations ran and whether that test fired
  (counted from VLFeat's verbose progress lines, whose format strings reach a ctypes ``printf`` hook);
* the covariance lower bound defaults to ``1e-4`` on every dimension (absolute, whatever the data's scale), applied
  to the start and after every M-step; the M-step skips posteriors below ``1e-2 / K``;
* ``Rand`` seeds the means by k-means++ on all the data and sets uniform priors and the data's variance;
  ``KMeans`` runs 5 iterations of approximate (kd-forest) k-means; both draw from the calling thread's VLFeat
  generator (``vl_get_rand``, a Mersenne twister that a fresh thread seeds with 5489), which :meth:`VLFeat.gmm`
  reseeds (``vl_rand_seed``) so results do not depend on earlier calls;
* ``K > N``, ``K = 0`` or ``D = 0`` read out of bounds or fail an ``assert``: refused before the call, as are
  non-finite data and non-positive starting covariances or priors.

cyvlfeat 0.7.1's ``gmm`` wrapper cannot take a custom start (``any()`` of NumPy arrays raises), takes a scalar
covariance bound only as a 1-element array, and passes a ``(D,)`` float32 bound array where VLFeat reads doubles;
:meth:`VLFeat.gmm` has none of these problems.
"""

from __future__ import annotations

import ctypes
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

#: The SIMD build the benchmarks race (``../shared`` beside the repository).
LIBRARY = Path(__file__).resolve().parents[1].parent / "shared" / "reference" / "vlfeat" / "libvl.so.1"

VL_TYPE_FLOAT = 1
FLAG_SQUARE_ROOT = 1 << 0
FLAG_NORMALIZED = 1 << 1
FLAG_IMPROVED = FLAG_NORMALIZED | FLAG_SQUARE_ROOT
FLAG_FAST = 1 << 2

#: ``VlGMMInitialization`` (vl/gmm.h).
GMM_INIT = {"kmeans": 0, "rand": 1, "custom": 2}
#: ``vl_gmm_new``'s lower bound on every covariance entry.
GMM_DEFAULT_COVARIANCE_BOUND = 1e-4
#: gmm.c stops EM when the log-likelihood's relative change falls below this (not settable).
GMM_RELATIVE_TOLERANCE = 1e-5
#: The Mersenne twister's default seed, which VLFeat's generator uses until it is seeded: a fresh thread's first
#: ``vl_gmm`` draws from this state.
VL_RAND_DEFAULT_SEED = 5489

_size = ctypes.c_size_t
_ptr = ctypes.c_void_p
#: VLFeat's ``printf_func_t`` (``int (*)(char const *format, ...)``) taken with its format argument only (the
#: variadic values are ignored, which the C calling conventions allow): enough to count EM's progress lines.
_PRINTF = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_char_p)


def _declare_gmm(lib) -> None:
    """Argument and return types of the ``vl_gmm_*``, ``vl_rand_*`` and printf-hook functions :meth:`VLFeat.gmm`
    calls (vl/gmm.h, vl/random.h, vl/generic.h of VLFeat 0.9.21)."""
    sigs = {
        "vl_gmm_new": ([ctypes.c_uint32, _size, _size], _ptr),
        "vl_gmm_delete": ([_ptr], None),
        "vl_gmm_set_verbosity": ([_ptr, ctypes.c_int], None),
        "vl_gmm_set_num_repetitions": ([_ptr, _size], None),
        "vl_gmm_set_max_num_iterations": ([_ptr, _size], None),
        "vl_gmm_set_initialization": ([_ptr, ctypes.c_int], None),
        "vl_gmm_set_covariance_lower_bound": ([_ptr, ctypes.c_double], None),
        "vl_gmm_set_covariance_lower_bounds": ([_ptr, _ptr], None),
        "vl_gmm_set_means": ([_ptr, _ptr], None),
        "vl_gmm_set_covariances": ([_ptr, _ptr], None),
        "vl_gmm_set_priors": ([_ptr, _ptr], None),
        "vl_gmm_cluster": ([_ptr, _ptr, _size], ctypes.c_double),
        "vl_gmm_get_means": ([_ptr], _ptr),
        "vl_gmm_get_covariances": ([_ptr], _ptr),
        "vl_gmm_get_priors": ([_ptr], _ptr),
        "vl_gmm_get_num_clusters": ([_ptr], _size),
        "vl_gmm_get_dimension": ([_ptr], _size),
        "vl_get_rand": ([], _ptr),
        "vl_rand_seed": ([_ptr, ctypes.c_uint32], None),
        "vl_get_printf_func": ([], _ptr),
        "vl_set_printf_func": ([_ptr], None),
    }
    for name, (args, res) in sigs.items():
        fn = getattr(lib, name)
        fn.argtypes = args
        fn.restype = res


@dataclass(frozen=True, eq=False)
class GMMFit:
    """What ``vl_gmm_cluster`` returned (see :meth:`VLFeat.gmm`).

    Attributes
    ----------
    means, covariances : (K, D) float32
        The components' means and diagonal variances.
    priors : (K,) float32
        Their weights (VLFeat normalises them to sum to 1 after every M-step).
    loglikelihood : float
        VLFeat's log-likelihood of the data under the returned model: the sum over the N descriptors of
        log p(x) (cyvlfeat returns it rounded to float32).
    num_data : int
        N.
    iterations : int
        EM iterations (M-steps) run: ``max_iterations`` unless VLFeat's own stopping test fired first.
    converged : bool
        True when EM stopped because the relative change of the log-likelihood fell below
        :data:`GMM_RELATIVE_TOLERANCE` (before ``max_iterations``).
    """

    means: np.ndarray
    covariances: np.ndarray
    priors: np.ndarray
    loglikelihood: float
    num_data: int
    iterations: int
    converged: bool

    @property
    def mean_loglikelihood(self) -> float:
        """Mean log p(x) per descriptor (nats), the figure ``DiagGMM.score`` gives."""
        return self.loglikelihood / self.num_data


def fisher_flags(*, improved: bool = False, normalized: bool = False, square_root: bool = False,
                 fast: bool = False) -> int:
    """VLFeat's ``flags`` for cyvlfeat's / MATLAB ``vl_fisher``'s options (``improved`` = normalized + square root)."""
    return ((FLAG_IMPROVED if improved else 0) | (FLAG_NORMALIZED if normalized else 0)
            | (FLAG_SQUARE_ROOT if square_root else 0) | (FLAG_FAST if fast else 0))


class VLFeat:
    """A loaded ``libvl``: :meth:`fisher` / :meth:`encode` (``vl_fisher_encode``, float32), :meth:`gmm`
    (``vl_gmm_cluster``, float32) and :meth:`report`.

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
        _declare_gmm(lib)
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

    def seed_generator(self, seed: int) -> None:
        """``vl_rand_seed`` on the calling thread's VLFeat generator (``vl_get_rand``), 0 <= seed < 2**32: what
        :meth:`gmm`'s random starts (and cyvlfeat's, on the same library copy and thread) draw from next."""
        _check_seed(seed)
        self._lib.vl_rand_seed(self._lib.vl_get_rand(), int(seed))

    def gmm(self, X, n_clusters: int, *, max_iterations: int = 100, init="rand", covariance_bound=None,
            seed: int | None = VL_RAND_DEFAULT_SEED) -> GMMFit:
        """Fit a diagonal GMM with ``vl_gmm_cluster`` on float32 data (one repetition), as cyvlfeat's ``gmm`` does.

        VLFeat runs as many OpenMP threads as this handle allows (``threads=1`` at construction for one).

        Parameters
        ----------
        X : (N, D) array
            Data, finite (copied to float32 unless it is already C-ordered float32).
        n_clusters : int
            K, 1 <= K <= N.
        max_iterations : int
            The most EM iterations (M-steps), >= 0 (cyvlfeat's default 100; 0 returns the start, bounded).
        init : ``"rand"``, ``"kmeans"`` or (means (K, D), covariances (K, D), priors (K,))
            VLFeat's ``Rand`` (k-means++ means, the data's variance, uniform priors; cyvlfeat's default) or
            ``KMeans`` start, or a given start (``Custom``; covariances and priors > 0).
        covariance_bound : None, float or (D,) array
            Lower bound on the covariances (per dimension for an array); None keeps VLFeat's
            :data:`GMM_DEFAULT_COVARIANCE_BOUND`.
        seed : int or None
            Seed of VLFeat's generator (``vl_rand_seed`` on the calling thread's) before the fit, 0 <= seed < 2**32;
            the default is the state a fresh thread starts from, so the result equals cyvlfeat's first call in a
            new process. None continues from the generator's current state. A custom start draws nothing.

        Returns
        -------
        GMMFit
            Means, covariances, priors, VLFeat's log-likelihood (sum over the data), iterations run and whether its
            relative-change test stopped EM.

        Raises
        ------
        ValueError
            Input VLFeat would crash on or silently misread (see the module docstring).
        """
        X = np.ascontiguousarray(X, np.float32)
        if X.ndim != 2 or X.shape[0] < 1 or X.shape[1] < 1:
            raise ValueError(f"X: expected an (N, D) array with N, D >= 1, got shape {X.shape}")
        if not np.isfinite(X).all():
            raise ValueError("X: expected finite values, got NaN or infinity; drop those rows first")
        N, D = X.shape
        K = int(n_clusters)
        if not 1 <= K <= N:
            raise ValueError(f"n_clusters: expected 1 <= K <= N = {N} (VLFeat reads past the data otherwise), got {K}")
        if int(max_iterations) != max_iterations or max_iterations < 0:
            raise ValueError(f"max_iterations: expected an integer >= 0, got {max_iterations!r}")
        if seed is not None:
            _check_seed(seed)
        start = None
        if isinstance(init, str):
            if init not in ("rand", "kmeans"):
                raise ValueError(f"init: expected 'rand', 'kmeans' or (means, covariances, priors), got {init!r}")
            mode = GMM_INIT[init]
        else:
            if len(init) != 3:
                raise ValueError(f"init: expected 'rand', 'kmeans' or (means, covariances, priors), got "
                                 f"{len(init)} arrays")
            start = [np.ascontiguousarray(a, np.float32) for a in init]
            for name, a, shape in zip(("means", "covariances", "priors"), start, ((K, D), (K, D), (K,))):
                if a.shape != shape:
                    raise ValueError(f"init {name}: expected shape {shape} (K={K}, D={D}), got {a.shape}")
                if not np.isfinite(a).all() or (name != "means" and not (a > 0).all()):
                    raise ValueError(f"init {name}: expected finite values{' > 0' if name != 'means' else ''}, "
                                     f"got min {a.min():g}")
            mode = GMM_INIT["custom"]
        bounds = None
        if covariance_bound is not None:
            bounds = np.asarray(covariance_bound, np.float64)
            if bounds.shape not in ((), (D,)) or not (np.isfinite(bounds).all() and (bounds >= 0).all()):
                raise ValueError(f"covariance_bound: expected a float or ({D},) array of finite values >= 0, got "
                                 f"{covariance_bound!r}")
            bounds = np.ascontiguousarray(np.broadcast_to(bounds, (D,)))

        lib = self._lib
        g = lib.vl_gmm_new(VL_TYPE_FLOAT, D, K)
        if not g:
            raise MemoryError(f"vl_gmm_new failed for K={K}, D={D}")
        lines: list[bytes] = []

        def hook(fmt):
            lines.append(fmt or b"")
            return 0

        printf = _PRINTF(hook)  # referenced until the hook is removed below
        try:
            lib.vl_gmm_set_verbosity(g, 1)  # the EM progress lines: iteration count and stopping reason
            lib.vl_gmm_set_num_repetitions(g, 1)
            lib.vl_gmm_set_max_num_iterations(g, int(max_iterations))
            lib.vl_gmm_set_initialization(g, mode)
            if bounds is not None:
                lib.vl_gmm_set_covariance_lower_bounds(g, bounds.ctypes.data)
            if start is not None:
                lib.vl_gmm_set_means(g, start[0].ctypes.data)
                lib.vl_gmm_set_covariances(g, start[1].ctypes.data)
                lib.vl_gmm_set_priors(g, start[2].ctypes.data)
            if seed is not None:
                self.seed_generator(seed)
            previous = lib.vl_get_printf_func()
            lib.vl_set_printf_func(ctypes.cast(printf, _ptr))
            try:
                ll = float(lib.vl_gmm_cluster(g, X.ctypes.data, N))
            finally:
                lib.vl_set_printf_func(previous)
            means = _copy_out(lib.vl_gmm_get_means(g), (K, D))
            covariances = _copy_out(lib.vl_gmm_get_covariances(g), (K, D))
            priors = _copy_out(lib.vl_gmm_get_priors(g), (K,))
        finally:
            lib.vl_gmm_delete(g)
        e_steps = sum(f.startswith(b"gmm: em: iteration") for f in lines)
        if e_steps < 1:
            raise RuntimeError("vl_gmm_cluster printed no EM progress line; cannot tell how many iterations ran")
        return GMMFit(means, covariances, priors, ll, N, e_steps - 1, any(b"fully converged" in f for f in lines))

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


def _check_seed(seed) -> None:
    if not (int(seed) == seed and 0 <= seed < 2 ** 32):
        raise ValueError(f"seed: expected None or an integer in [0, 2**32), got {seed!r}")


def _copy_out(address: int, shape: tuple) -> np.ndarray:
    """A float32 copy of the ``shape`` array VLFeat holds at ``address``."""
    if not address:
        raise RuntimeError("VLFeat returned a null parameter array")
    n = int(np.prod(shape))
    return np.ctypeslib.as_array((ctypes.c_float * n).from_address(address)).reshape(shape).copy()


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
