"""Start-up of ``extract-trajectories``: Numba's runtime starts without importing ``scipy.linalg`` and loads
idtfv's cached kernels without refreshing its whole target (:mod:`idtfv.jit`), with the same kernels' results;
other packages' cached functions load as Numba loads them; ``IDTFV_CPU_LOG`` records the process's CPU seconds
(``bench/bench_startup.py`` reads it)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

_PROBE = """import sys
import numpy as np
from idtfv.idt.extractor import extract
from conftest import tiny_frames
tr = extract(tiny_frames(frames=20, width=96, height=72))
print(len(tr), "scipy.linalg" in sys.modules, float(np.asarray(tr.hog, np.float64).sum()),
      _REFRESHED in sys.modules)
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
