"""Start-up of ``extract-trajectories``: Numba's runtime starts without importing ``scipy.linalg`` and loads
idtfv's cached kernels without refreshing its whole target (:mod:`idtfv.jit`), with the same kernels' results;
other packages' cached functions load as Numba loads them; the imports run with the garbage collector paused
(:func:`idtfv.cli.imports_without_gc`); ``IDTFV_CPU_LOG`` records the process's CPU seconds
(``bench/bench_startup.py`` reads it)."""

from __future__ import annotations

import gc
import json
import os
import subprocess
import sys

import pytest

_PROBE = """import sys
import llvmlite.binding as ll
parsed = []
_parse = ll.parse_bitcode
ll.parse_bitcode = lambda *a: parsed.append(1) or _parse(*a)
import numpy as np
from idtfv.idt.extractor import extract
from conftest import tiny_frames
tr = extract(tiny_frames(frames=20, width=96, height=72))
print(len(tr), "scipy.linalg" in sys.modules, float(np.asarray(tr.hog, np.float64).sum()),
      _REFRESHED in sys.modules, len(parsed))
"""
# imported by Numba's target refresh (``BaseContext.refresh``) and by nothing an extraction runs
_REFRESHED = "numba.np.polynomial.polynomial_core"


def _probe(**env) -> list[str]:
    run_env = dict(os.environ, PYTHONPATH=os.path.dirname(__file__), **env)
    probe = f"_REFRESHED = {_REFRESHED!r}\n" + _PROBE
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, env=run_env, check=True)
    return out.stdout.split()


def test_numba_starts_without_scipy_linalg_and_the_kernels_give_the_same_rows():
    _probe()  # the kernels in Numba's cache (a fresh clone compiles them here)
    light = _probe()
    plain = _probe(IDTFV_PLAIN_NUMBA_INIT="1")
    assert light[1] == "False" and plain[1] == "True"  # the import Numba's own start makes, and ours skips
    assert light[3] == "False" and plain[3] == "True"  # the target refresh before each cache load, skipped
    assert int(light[0]) > 0 and light[0] == plain[0] and light[2] == plain[2]
    parsing = _probe(IDTFV_PARSE_CACHED_BITCODE="1")  # the light start, but the bitcode parsed as Numba does
    assert parsing[:4] == light[:4]
    assert light[4] == "0" and int(parsing[4]) >= 10 and int(plain[4]) >= 10  # one parse per kernel loaded


_SYMBOLS = """import json
import llvmlite.binding as ll
from numba.core import codegen
from idtfv.jit import elf_defined_symbols
states = []
numbas = codegen.CPUCodeLibrary.__dict__["_unserialize"].__func__
codegen.CPUCodeLibrary._unserialize = classmethod(lambda cls, cg, state: states.append(state) or numbas(cls, cg, state))
from idtfv.idt.extractor import extract
from conftest import tiny_frames
extract(tiny_frames(frames=20, width=96, height=72))
out = []
for name, kind, (objcode, bitcode) in states:
    module = ll.parse_bitcode(bitcode)
    defined = {f.name for f in module.functions if not f.is_declaration}
    defined |= {g.name for g in module.global_variables if not g.is_declaration}
    out.append([name, kind, sorted(defined), sorted(elf_defined_symbols(objcode))])
print(json.dumps(out))
"""


def test_the_object_codes_symbol_table_names_what_the_bitcode_defines():
    """The light load takes a cached kernel's defined names from its object code's ELF symbol table instead of
    parsing its LLVM bitcode: for every kernel an extraction loads (through Numba's own load, which parses the
    bitcode: the independent reference), the two sets are equal."""
    from idtfv.jit import elf_defined_symbols

    _probe()  # the kernels in Numba's cache
    env = dict(os.environ, PYTHONPATH=os.path.dirname(__file__), IDTFV_PARSE_CACHED_BITCODE="1")
    run = subprocess.run([sys.executable, "-c", _SYMBOLS], capture_output=True, text=True, env=env, check=True)
    libraries = json.loads(run.stdout)
    assert len(libraries) >= 10
    for name, kind, defined, from_elf in libraries:
        assert kind == "object" and defined and from_elf == defined, name
    assert sum(_every_cached_kernel_agrees()) >= len(libraries)
    assert elf_defined_symbols(b"\x7fELF\x01\x01" + bytes(100)) is None  # 32-bit: not read (Numba's load)
    assert elf_defined_symbols(b"\xcf\xfa\xed\xfe" + bytes(100)) is None  # Mach-O: likewise


def _every_cached_kernel_agrees():
    """Yield 1 for each of idtfv's kernels in Numba's cache on disk now (whatever the suite compiled so far: the
    encoder's and the writers' kernels too) after checking that its object code's ELF names equal its bitcode's
    definitions."""
    import pickle
    from pathlib import Path

    import llvmlite.binding as ll
    import numba.core.compiler  # noqa: F401  (the cache entries' classes)

    from idtfv.jit import elf_defined_symbols

    def entry(x, depth=0):  # the (name, "object", (object code, bitcode)) tuple inside a cache entry
        if isinstance(x, tuple):
            if len(x) == 3 and x[1] == "object" and isinstance(x[2], tuple):
                return x
            return next((e for y in x if depth < 3 and (e := entry(y, depth + 1))), None)
        return None

    root = Path(__file__).resolve().parents[1]
    paths = [path for folder in ("idt", "idtfv", "encoding", "classify")
             for path in (root / folder).rglob("__pycache__/*.nbc")]
    if os.environ.get("NUMBA_CACHE_DIR"):  # Numba's cache elsewhere (any package's kernels: the same check holds)
        paths += Path(os.environ["NUMBA_CACHE_DIR"]).rglob("*.nbc")
    for path in sorted(paths):
        _, _, (objcode, bitcode) = entry(pickle.loads(path.read_bytes()))
        module = ll.parse_bitcode(bitcode)
        defined = {f.name for f in module.functions if not f.is_declaration}
        defined |= {g.name for g in module.global_variables if not g.is_declaration}
        assert elf_defined_symbols(objcode) == defined, path
        yield 1


_LINKED = """import llvmlite.binding as ll
import numpy as np
from numba import njit
from idtfv.jit import light_numba_init

parsed = []
_parse = ll.parse_bitcode
ll.parse_bitcode = lambda *a: parsed.append(1) or _parse(*a)
light_numba_init()
from idtfv.idt.flow._median_nb import median5_flow  # cached: loaded without parsing its bitcode

src = np.random.default_rng(0).normal(size=(2, 9, 11)).astype(np.float32)
med, out = np.empty_like(src), np.empty((9, 11, 2), np.float32)
median5_flow(src, med, out)
direct = out.copy()
before = len(parsed)


@njit  # compiled in this process: Numba links the cached kernel's library into it (its bitcode, parsed then)
def calls_it(src, med, out):
    median5_flow(src, med, out)
    return out[4, 5, 1]


out[:] = 0
value = calls_it(src, med, out)
print(bool(np.array_equal(out, direct)), bool(value == direct[4, 5, 1]), before, len(parsed) > before)
"""


def test_a_kernel_compiled_later_links_a_kernel_loaded_without_its_bitcode():
    """A function compiled at run time that calls one of idtfv's cached kernels links that kernel's library: the
    bitcode the light load left unparsed is parsed then, and the call gives the kernel's numbers."""
    _probe()
    light = subprocess.run([sys.executable, "-c", _LINKED], capture_output=True, text=True, check=True)
    assert light.stdout.split() == ["True", "True", "0", "True"], light.stderr  # parsed only to link
    parsing = subprocess.run([sys.executable, "-c", _LINKED], capture_output=True, text=True, check=True,
                             env=dict(os.environ, IDTFV_PARSE_CACHED_BITCODE="1"))
    assert parsing.stdout.split()[:2] == ["True", "True"] and parsing.stdout.split()[2] != "0", parsing.stderr


_OTHER = """
import numpy as np
from numba import njit


@njit(cache=True)
def other(x):
    return np.polynomial.polynomial.polyval(x, np.arange(3.0))
"""


def test_other_packages_cached_functions_load_as_numba_loads_them(tmp_path):
    """A cached function of another module, loaded after idtfv's light start: Numba's own load (with its target
    refresh), and its numbers."""
    (tmp_path / "other_pkg.py").write_text(_OTHER)
    script = ("import sys\nfrom idtfv.jit import light_numba_init\nlight_numba_init()\nimport other_pkg\n"
              f"print(other_pkg.other(2.0), {_REFRESHED!r} in sys.modules)")
    env = dict(os.environ, PYTHONPATH=str(tmp_path), NUMBA_CACHE_DIR=str(tmp_path / "cache"))
    runs = [subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, check=True)
            for _ in range(2)]  # compiled and saved, then loaded from the cache
    assert list((tmp_path / "cache").rglob("*.nbi")), "the function was not cached"
    for run in runs:
        assert run.stdout.split() == [str(0.0 + 1.0 * 2.0 + 2.0 * 4.0), "True"], run.stderr


def test_cpu_log_records_main_every_frame_and_the_end(tmp_path, tiny_video):
    video = tiny_video(frames=20, width=96, height=72)
    log = tmp_path / "cpu.json"
    env = dict(os.environ, IDTFV_CPU_LOG=str(log))
    script = "import sys; from idtfv.idt.cli import main; sys.exit(main(sys.argv[1:]))"
    subprocess.run([sys.executable, "-c", script, str(video), "-q", "-o", str(tmp_path / "x.npz")], env=env,
                   check=True, capture_output=True)
    stamps = json.loads(log.read_text())
    assert len(stamps["frames"]) == 20
    times = [stamps["main"], *stamps["frames"], stamps["end"]]
    assert all(b >= a for a, b in zip(times, times[1:])) and 0 < stamps["main"] < stamps["end"]


def test_imports_without_gc_pause_the_collector_and_restore_it():
    """No collection runs inside (while thresholds are crossed: planted by allocating containers), one does
    outside, and the collector's state comes back as it was, on an error too; what was alive on the way out is in
    the collector's permanent generation (never walked again), what is made after is collected as before."""
    from idtfv.cli import imports_without_gc

    runs = []
    gc.unfreeze()
    frozen_before = gc.get_freeze_count()

    def count(phase, info):
        if phase == "start":
            runs.append(info["generation"])

    def allocate():
        return [[i] for i in range(20 * gc.get_threshold()[0])]  # crosses generation 0's threshold many times

    was = gc.isenabled()
    gc.callbacks.append(count)
    try:
        gc.enable()
        with imports_without_gc():
            assert not gc.isenabled()
            kept = allocate()
        inside = len(runs)
        assert gc.isenabled()
        assert gc.get_freeze_count() >= frozen_before + len(kept)  # the lists made inside (and the outer one)
        made_after = allocate()
        assert inside == 0 and len(runs) > 0
        in_generations = {id(x) for generation in (0, 1, 2) for x in gc.get_objects(generation)}
        assert not any(id(x) in in_generations for x in kept)  # frozen: in none of the collector's generations
        assert all(id(x) in in_generations for x in made_after)  # made after: collected as before
        with pytest.raises(RuntimeError), imports_without_gc():
            raise RuntimeError("an import failed")
        assert gc.isenabled()
        gc.disable()
        with imports_without_gc():
            pass
        assert not gc.isenabled()  # a collector the caller had paused stays paused
    finally:
        gc.callbacks.remove(count)
        gc.unfreeze()  # (this test process's objects back in the collector's generations)
        (gc.enable if was else gc.disable)()


_IMPORTS = """import importlib.util, json, sys
from idtfv.jit import import_numba
took = import_numba()
import numpy as np
from idtfv.idt.extractor import extract
from conftest import tiny_frames
tr = extract(tiny_frames(frames=20, width=96, height=72))
loaded = {name: name in sys.modules for name in ("scipy", "yaml", "numpy.ma")}
installed = {name: importlib.util.find_spec(name) is not None for name in ("scipy", "yaml")}
import scipy  # still importable, the real modules
import numpy.ma
yaml_ok = (not installed["yaml"]) or hasattr(__import__("yaml"), "safe_load")
print(json.dumps({"took": took, "loaded": loaded, "installed": installed, "rows": len(tr),
                  "hog": float(np.asarray(tr.hog, np.float64).sum()), "scipy": hasattr(scipy, "__version__"),
                  "yaml_ok": yaml_ok}))
"""


def _imports(cwd, **env) -> dict:
    run_env = dict(os.environ, PYTHONPATH=os.path.dirname(__file__), **env)
    if "IDTFV_PLAIN_NUMBA_INIT" not in env:
        run_env.pop("IDTFV_PLAIN_NUMBA_INIT", None)
    out = subprocess.run([sys.executable, "-c", _IMPORTS], capture_output=True, text=True, env=run_env, check=True,
                         cwd=cwd)
    return json.loads(out.stdout)


def test_numba_imports_and_types_arrays_without_scipy_yaml_or_numpy_ma(tmp_path):
    light = _imports(tmp_path)
    plain = _imports(tmp_path, IDTFV_PLAIN_NUMBA_INIT="1")  # Numba's own import and typing: the control
    assert light["took"] is True and plain["took"] is False
    assert light["loaded"] == {"scipy": False, "yaml": False, "numpy.ma": False}
    assert plain["loaded"] == {"scipy": True, "yaml": plain["installed"]["yaml"], "numpy.ma": True}
    assert light["rows"] > 0 and (light["rows"], light["hog"]) == (plain["rows"], plain["hog"])
    assert light["scipy"] and light["yaml_ok"]
    # a Numba config file in the working directory: PyYAML is imported to read it, as Numba does
    (tmp_path / ".numba_config.yaml").write_text("# no settings\n")
    configured = _imports(tmp_path)
    assert configured["loaded"]["yaml"] == configured["installed"]["yaml"] and not configured["loaded"]["scipy"]


def test_plain_arrays_are_typed_as_numba_types_them():
    import numpy as np
    from numba import njit
    from numba.core import errors
    from numba.core.typing.typeof import Purpose, typeof, typeof_impl

    from idtfv.jit import light_numba_init

    light_numba_init()
    ours = typeof_impl.registry[np.ndarray]
    numbas = getattr(ours, "__wrapped__", None)
    if numbas is None:  # IDTFV_PLAIN_NUMBA_INIT=1 in this environment, or another Numba: its own rule
        assert os.environ.get("IDTFV_PLAIN_NUMBA_INIT") == "1" or ours.__name__ != "_typeof_ndarray"
        pytest.skip("Numba's own array typing in this process")
    base = np.arange(2 * 3 * 4, dtype=np.float32).reshape(2, 3, 4)
    readonly = base.copy()
    readonly.flags.writeable = False
    arrays = [base, np.asfortranarray(base), base[:, ::2], base[0], readonly, np.zeros(0, np.uint8),
              np.zeros((), np.int64), np.ones((3, 2), np.complex64), np.zeros(4, np.bool_),
              np.zeros(3, [("a", np.int32), ("b", np.float64)])]
    for a in arrays:
        assert typeof(a, Purpose.argument) == numbas(a, None), a.dtype

    masked = np.ma.masked_array(base)
    with pytest.raises(errors.NumbaTypeError, match="MaskedArray"):  # a subclass: Numba's rule still refuses it
        typeof(masked, Purpose.argument)

    @njit
    def total(x):
        return x.sum()

    with pytest.raises(errors.NumbaTypeError, match="MaskedArray"):  # (first: Numba's dispatchers then cache the
        total(masked)                                              # type of any array of the same layout)
    assert total(base) == base.sum()
