"""Start-up of ``extract-trajectories``: Numba's runtime starts without importing ``scipy.linalg``
(:mod:`idtfv.jit`) and with the same kernels' results, and ``IDTFV_CPU_LOG`` records the process's CPU seconds
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
print(len(tr), "scipy.linalg" in sys.modules, float(np.asarray(tr.hog, np.float64).sum()))
"""


def _probe(**env) -> list[str]:
    run_env = dict(os.environ, PYTHONPATH=os.path.dirname(__file__), **env)
    out = subprocess.run([sys.executable, "-c", _PROBE], capture_output=True, text=True, env=run_env, check=True)
    return out.stdout.split()


def test_numba_starts_without_scipy_linalg_and_the_kernels_give_the_same_rows():
    light = _probe()
    plain = _probe(IDTFV_PLAIN_NUMBA_INIT="1")
    assert light[1] == "False" and plain[1] == "True"  # the import Numba's own start makes, and ours skips
    assert int(light[0]) > 0 and light[0] == plain[0] and light[2] == plain[2]


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
