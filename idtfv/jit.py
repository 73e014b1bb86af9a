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

A cached kernel is its machine code (an object file) and its optimised LLVM bitcode, kept for linking it into
code compiled later. Numba parses that bitcode on every load to list the names the kernel defines (about 4 ms a
kernel, ~0.07 s of CPU per extraction). For idtfv's kernels the loads take the names from the object file's ELF
symbol table instead and parse the bitcode only if a library links the kernel (:func:`elf_defined_symbols`, a
fourth and fifth internal: ``CPUCodeLibrary._unserialize`` and ``_get_module_for_linking``, wrapped only when they
are as expected; on a platform whose objects are not 64-bit little-endian ELF, macOS and Windows, Numba's load).
``IDTFV_PARSE_CACHED_BITCODE=1`` keeps Numba's parse (the tests and ``bench/bench_startup.py`` compare both).

Three imports a run needs none of, each 10-25 ms of CPU before the first frame (``extract-trajectories``):
:func:`import_numba` imports Numba without SciPy (``import numba`` imports it only to check that its version is
at least 1.0; idtfv requires a newer one) and without PyYAML (Numba reads a ``.numba_config.yaml`` in the
working directory with it: skipped only when there is no such file), both left importable afterwards; and
:func:`light_numba_init` types plain NumPy arrays for Numba's dispatchers without importing ``numpy.ma``
(``numba.core.typing.typeof``'s ``ndarray`` rule asks whether the array is a masked one, which imports
``numpy.ma`` at the first kernel call; an array of another class still takes Numba's rule, which refuses masked
arrays). ``IDTFV_PLAIN_NUMBA_INIT=1`` leaves all three as Numba does them.
"""

from __future__ import annotations

import importlib.util
import os
import sys

__all__ = ["light_numba_init", "import_numba"]

_done = False
_OURS = "idtfv."


def _blas_installed() -> None:
    """Numba's ``ensure_blas`` without the import: ImportError when SciPy is not installed."""
    if importlib.util.find_spec("scipy") is None:
        raise ImportError("scipy 0.16+ is required for linear algebra")


def elf_defined_symbols(data: bytes) -> set[str] | None:
    """The names of the symbols that a little-endian 64-bit ELF relocatable object (``data``) defines: every
    function and data object of its symbol table whose section is not undefined, local ones included. None when
    ``data`` is not such an object (another platform's format: the caller then does what Numba does)."""
    import struct

    if len(data) < 64 or data[:4] != b"\x7fELF" or data[4] != 2 or data[5] != 1:
        return None
    shoff, = struct.unpack_from("<Q", data, 0x28)
    shentsize, shnum = struct.unpack_from("<HH", data, 0x3A)
    if shentsize != 64 or shoff + shnum * 64 > len(data):
        return None
    sections = [struct.unpack_from("<IIQQQQIIQQ", data, shoff + 64 * i) for i in range(shnum)]
    names: set[str] = set()
    for _, sh_type, _, _, offset, size, link, _, _, entsize in sections:
        if sh_type != 2 or entsize != 24 or link >= shnum:  # SHT_SYMTAB of Elf64_Sym entries
            continue
        str_offset, str_size = sections[link][4], sections[link][5]
        strings = data[str_offset:str_offset + str_size]
        for at in range(offset, offset + size - size % 24, 24):
            st_name, st_info, _, st_shndx = struct.unpack_from("<IBBH", data, at)
            if st_shndx == 0 or (st_info & 0xF) not in (1, 2) or st_name == 0:  # defined STT_OBJECT / STT_FUNC
                continue
            end = strings.find(b"\0", st_name)
            names.add(strings[st_name:end if end >= 0 else len(strings)].decode("utf-8", "surrogateescape"))
    return names


def _lazy_linking_modules(codegen) -> bool:
    """Make Numba's load of an object-code cache entry (``CPUCodeLibrary._unserialize``, kind ``"object"``) for
    idtfv's kernels keep the entry's LLVM bitcode unparsed until a library links it (a kernel compiled later in the
    process that calls a cached one), taking the symbols it defines from the object's ELF symbol table instead.

    Numba parses that bitcode (the optimised IR of the kernel and every function inlined into it) on every load,
    only to list the defined names and to keep it for such linking: about 4 ms a kernel here, ~0.07 s of CPU per
    extraction (``bench/bench_startup.py``: start-up 0.55 -> 0.49 s). Returns whether the patch is in place
    (False: Numba's own load)."""
    import llvmlite.binding as ll

    library = getattr(codegen, "CPUCodeLibrary", None)
    unserialize = getattr(library, "__dict__", {}).get("_unserialize")
    for_linking = getattr(library, "_get_module_for_linking", None)
    if not isinstance(unserialize, classmethod) or not callable(for_linking) or not callable(
            getattr(library, "_set_compiled_object", None)) or not callable(
            getattr(library, "_finalize_final_module", None)):
        return False
    numbas_unserialize = unserialize.__func__

    def light_unserialize(cls, codegen_, state):
        name, kind, data = state
        engine = getattr(codegen_, "_engine", None)
        symbols = elf_defined_symbols(data[0]) if kind == "object" and _loading_ours[0] else None
        if symbols is None or not isinstance(getattr(engine, "_defined_symbols", None), set):
            return numbas_unserialize(cls, codegen_, state)
        object_code, shared_bitcode = data
        self = codegen_.create_library(name)
        self.enable_object_caching()
        self._set_compiled_object(object_code)
        self._idtfv_linking_bitcode = shared_bitcode
        self._finalize_final_module()
        engine._defined_symbols |= symbols
        return self

    def get_module_for_linking(self):
        bitcode = self.__dict__.pop("_idtfv_linking_bitcode", None)
        if bitcode is not None and self._shared_module is None:
            self._shared_module = ll.parse_bitcode(bitcode)
        return for_linking(self)

    light_unserialize.__wrapped__ = numbas_unserialize
    get_module_for_linking.__wrapped__ = for_linking
    library._unserialize = classmethod(light_unserialize)
    library._get_module_for_linking = get_module_for_linking
    return True


#: True while one of idtfv's kernels is being loaded from the cache (under Numba's compiler lock)
_loading_ours = [False]


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
        _loading_ours[0] = True
        try:
            with self._guard_against_spurious_io_errors():
                return self._load_overload(sig, target_context)
        finally:
            _loading_ours[0] = False

    load_overload.__wrapped__ = numbas_load
    cache.load_overload = load_overload
    if os.environ.get("IDTFV_PARSE_CACHED_BITCODE") != "1":
        from numba.core import codegen

        _lazy_linking_modules(codegen)


def import_numba() -> bool:
    """``import numba`` without importing SciPy or PyYAML (see the module's docstring); True when it took that
    path. Nothing differs once it is imported: both stay importable (neither is left in ``sys.modules``), and
    Numba's later SciPy uses import it as usual. Numba's own import when it is imported already, under
    ``IDTFV_PLAIN_NUMBA_INIT=1``, or (for PyYAML) when the working directory holds ``.numba_config.yaml``. For a
    process's start (``extract-trajectories``): while Numba imports, another thread's import of either fails."""
    if "numba" in sys.modules or os.environ.get("IDTFV_PLAIN_NUMBA_INIT") == "1":
        return False
    skipped = [name for name in ("scipy", "yaml") if name not in sys.modules]
    if "yaml" in skipped and os.path.exists(".numba_config.yaml"):
        skipped.remove("yaml")
    for name in skipped:
        sys.modules[name] = None  # import raises ImportError: Numba's own fallbacks (no check, no config file)
    try:
        import numba  # noqa: F401
    except ImportError:
        return False
    finally:
        for name in skipped:
            if sys.modules.get(name, False) is None:
                del sys.modules[name]
    return True


def _typeof_plain_arrays() -> bool:
    """Numba's typing of an argument of class ``numpy.ndarray`` exactly, without its masked-array check (which
    imports ``numpy.ma``): the same ``types.Array``. Other classes (subclasses, masked arrays) and dtypes Numba
    does not support take Numba's own rule. False (nothing changed) when Numba's rule is not where expected."""
    try:
        import numpy as np
        from numba.core import errors, types
        from numba.core.typing import typeof as typeof_module
        from numba.np import numpy_support
    except ImportError:
        return False
    registry = getattr(typeof_module.typeof_impl, "registry", None)
    numbas = registry.get(np.ndarray) if registry is not None else None
    if getattr(numbas, "__name__", None) != "_typeof_ndarray" or not callable(
            getattr(numpy_support, "map_layout", None)):
        return False

    def typeof_ndarray(val, c):
        if type(val) is not np.ndarray:
            return numbas(val, c)
        try:
            dtype = numpy_support.from_dtype(val.dtype)
        except errors.NumbaNotImplementedError:
            return numbas(val, c)  # its error
        return types.Array(dtype, val.ndim, numpy_support.map_layout(val), readonly=not val.flags.writeable)

    typeof_ndarray.__wrapped__ = numbas
    typeof_module.typeof_impl.register(np.ndarray)(typeof_ndarray)
    return True


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
    _typeof_plain_arrays()
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
