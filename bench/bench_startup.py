"""Benchmark: start-up of the command-line tools, whole process, wall time.

* ``--help`` of every command: ``idtfv``, ``idtfv --version``, ``idtfv COMMAND --help`` for every subcommand, and
  every other console script (``extract-trajectories``, ``extract-flow``);
* ``extract-trajectories`` on a 20-frame 320x240 synthetic clip (default options, ``.npz`` output), after one
  untimed run that fills Numba's on-disk kernel cache: wall seconds, and the **CPU seconds** of the real process
  on one core (``taskset``-like affinity to CPU 0, ``NUMBA_NUM_THREADS=OMP_NUM_THREADS=1``). The process writes
  its own ``time.process_time()`` at ``main()``, after every frame and at the end (``IDTFV_CPU_LOG``, see
  ``idtfv.idt.cli``): "to the first frame" is the CPU spent when the first frame is done (interpreter, imports,
  Numba's runtime start, the kernels it loads, the first frame's pyramid, expansions, keypoints and points),
  "per frame" the median of frames 3 onwards, and "start-up" the whole process (its rusage, exit included) less
  the frames times the per-frame cost. The same runs alternate (A B A B) with Numba's own start
  (``IDTFV_PLAIN_NUMBA_INIT=1``, which refreshes Numba's whole target before each cache load and imports
  ``scipy.linalg``, PyYAML and ``numpy.ma``; see ``idtfv.jit``) and with the light start but each cached kernel's bitcode parsed as Numba
  does (``IDTFV_PARSE_CACHED_BITCODE=1``), before/after in one run. The package is byte-compiled first, as pip
  installs it.

Each command runs as its own process (the console script of this environment: ``bin/`` next to the Python
running this script), median (min, max) of ``--repeat`` runs (5). The "loads" column says which of torch,
Numba, scikit-learn and OpenCV the process imported (one extra run that lists ``sys.modules`` at exit). The goal
is every ``--help`` under 1 s; ``tests/test_cli_startup.py`` checks that none of them imports torch, Numba or
scikit-learn.

Usage: ``python bench/bench_startup.py [--repeat 5] [--no-write]``; updates the ``## startup`` section of
``bench/RESULTS.md``.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from importlib.metadata import distribution
from pathlib import Path

import cv2
import numpy as np

from idtfv.cli import command_table

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _results import machine, byte_compile_package, publish, readme_row  # noqa: E402  (bench/ is the script's directory)

SECTION = "## startup"
WATCHED = ("torch", "numba", "sklearn", "cv2")
HELP_BUDGET_S = 1.0
STARTUP_BUDGET_S = 0.5  # CPU seconds before the first frame (issue 12)
CLIP = {"frames": 20, "width": 320, "height": 240}

_LIST_MODULES = """import atexit, json, sys
def _dump(path=sys.argv[1]):
    with open(path, "w") as out:
        json.dump(sorted({m.split(".")[0] for m in sys.modules}), out)
atexit.register(_dump)
module, function = sys.argv[2].split(":")
sys.argv = sys.argv[3:]
sys.exit(getattr(__import__(module, fromlist=[function]), function)())
"""


def scripts() -> dict[str, str]:
    """``{console script: "module:function"}`` of the installed idtfv."""
    return {ep.name: ep.value for ep in distribution("idtfv").entry_points if ep.group == "console_scripts"}


def commands() -> list[list[str]]:
    """Every command line whose start-up is timed (``--help`` of each command, and ``idtfv --version``)."""
    out = [["idtfv", "--help"], ["idtfv", "--version"]]
    out += [["idtfv", name, "--help"] for name in command_table()]
    out += [[name, "--help"] for name in sorted(scripts()) if name != "idtfv"]
    return out


def write_clip(path: Path, *, frames: int, width: int, height: int, seed: int = 0) -> Path:
    """A textured background with a bright square moving 2 px right and 1 px down per frame (MJPG ``.avi``)."""
    rng = np.random.default_rng(seed)
    background = cv2.GaussianBlur(rng.normal(128, 40, (height, width)).astype(np.float32), (0, 0), 2.0)
    patch = np.clip(rng.normal(220, 20, (48, 48)), 0, 255).astype(np.float32)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 25.0, (width, height))
    for t in range(frames):
        img = background.copy()
        img[60 + t: 108 + t, 80 + 2 * t: 128 + 2 * t] = patch
        writer.write(cv2.cvtColor(np.clip(img, 0, 255).astype(np.uint8), cv2.COLOR_GRAY2BGR))
    writer.release()
    return path


def script_path(name: str) -> Path:
    return Path(sys.executable).parent / name


def wall(argv: list[str], repeat: int, cwd: Path) -> list[float]:
    """Wall seconds of ``repeat`` runs of the console script ``argv[0]`` in ``cwd`` (output discarded; must exit
    0)."""
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        proc = subprocess.run([str(script_path(argv[0])), *argv[1:]], stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE, text=True, cwd=cwd)
        times.append(time.perf_counter() - t0)
        if proc.returncode != 0:
            raise SystemExit(f"{' '.join(argv)} exited with {proc.returncode}: {proc.stderr.strip()[-300:]}")
    return times


def cpu_runs(argv: list[str], repeat: int, cwd: Path) -> dict[str, list[dict]]:
    """CPU figures of ``repeat`` runs of each start-up variant (light; parse: light but every cache load parses the
    kernel's bitcode as Numba does; plain: Numba's own), alternating A B C A B C, on one core:
    ``{variant: [{"first": s, "frame": s, "startup": s, "total": s}, ...]}``."""
    out = {"light": [], "parse": [], "plain": []}
    log = cwd / "cpu.json"
    for _ in range(repeat):
        for variant in out:
            env = dict(os.environ, IDTFV_CPU_LOG=str(log), NUMBA_NUM_THREADS="1", OMP_NUM_THREADS="1",
                       IDTFV_PLAIN_NUMBA_INIT="1" if variant == "plain" else "0",
                       IDTFV_PARSE_CACHED_BITCODE="1" if variant == "parse" else "0")
            before = resource.getrusage(resource.RUSAGE_CHILDREN)
            proc = subprocess.run([str(script_path(argv[0])), *argv[1:]], stdout=subprocess.DEVNULL,
                                  stderr=subprocess.PIPE, text=True, cwd=cwd, env=env,
                                  preexec_fn=lambda: os.sched_setaffinity(0, {0}))
            after = resource.getrusage(resource.RUSAGE_CHILDREN)
            if proc.returncode != 0:
                raise SystemExit(f"{' '.join(argv)} exited with {proc.returncode}: {proc.stderr.strip()[-300:]}")
            stamps = json.loads(log.read_text())
            frames = stamps["frames"]
            per_frame = statistics.median(b - a for a, b in zip(frames[2:], frames[3:]))
            total = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
            out[variant].append({"first": frames[0], "frame": per_frame, "total": total,
                                 "startup": total - len(frames) * per_frame})
    return out


def _stat(runs: list[dict], key: str) -> str:
    values = [r[key] for r in runs]
    return f"{statistics.median(values):.3f} ({min(values):.3f} - {max(values):.3f})"


def loads(argv: list[str], tmp: Path) -> str:
    """Which of :data:`WATCHED` a run of ``argv`` imports."""
    listing = tmp / "modules.json"
    subprocess.run([sys.executable, "-c", _LIST_MODULES, str(listing), scripts()[argv[0]], *argv],
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True, cwd=tmp)
    top = set(json.loads(listing.read_text()))
    return ", ".join(m for m in WATCHED if m in top) or "-"


def row(argv: list[str], times: list[float], loaded: str) -> tuple[str, float]:
    med = statistics.median(times)
    return (f"| `{' '.join(argv)}` | {med:.3f} | {min(times):.3f} - {max(times):.3f} | {loaded} |", med)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=5, help="timed runs per command (median reported)")
    ap.add_argument("--no-write", action="store_true", help="print the section, do not update RESULTS.md")
    args = ap.parse_args(argv)
    byte_compile_package()  # .pyc files, as an installed package has (see _results)
    missing = [name for name in scripts() if not script_path(name).exists()]
    if missing:
        raise SystemExit(f"console script(s) {', '.join(missing)} not found next to {sys.executable}; "
                         "install idtfv into this environment (pip install -e .)")

    rows, slow, medians = [], [], {}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        for command in commands():
            text, med = row(command, wall(command, args.repeat, tmp), loads(command, tmp))
            rows.append(text)
            medians[" ".join(command)] = med
            if med >= HELP_BUDGET_S:
                slow.append(" ".join(command))
            print(text, flush=True)
        clip = write_clip(tmp / "clip.avi", **CLIP)
        extract = ["extract-trajectories", str(clip), "-o", str(tmp / "clip.npz"), "-q"]
        wall(extract, 1, tmp)  # fills Numba's kernel cache; not timed
        times = wall(extract, args.repeat, tmp)
        shown = ["extract-trajectories", f"clip.avi ({CLIP['frames']} frames, {CLIP['width']}x{CLIP['height']})",
                 "-o", "clip.npz", "-q"]
        text, extract_med = row(shown, times, loads(extract, tmp))
        rows.append(text)
        print(text, flush=True)
        cpu = cpu_runs(extract, args.repeat, tmp)
        cpu_rows = [f"| {name} | {_stat(cpu[key], 'first')} | {_stat(cpu[key], 'frame')} | "
                    f"{_stat(cpu[key], 'startup')} | {_stat(cpu[key], 'total')} |"
                    for key, name in (
                        ("light", "this version (`idtfv.jit`: cache loads without the target refresh or parsing "
                                  "the kernels' bitcode, no SciPy, PyYAML or `numpy.ma`)"),
                        ("parse", "the same, the bitcode parsed on every cache load as Numba does "
                                  "(`IDTFV_PARSE_CACHED_BITCODE=1`)"),
                        ("plain", "Numba's own start (`IDTFV_PLAIN_NUMBA_INIT=1`)"))]
        print("\n".join(cpu_rows), flush=True)
        first_med = statistics.median(r["first"] for r in cpu["light"])
        startup_med = statistics.median(r["startup"] for r in cpu["light"])

    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    verdict = (f"Every `--help` under {HELP_BUDGET_S:g} s." if not slow else
               f"Over {HELP_BUDGET_S:g} s: {', '.join(f'`{c}`' for c in slow)}.")
    text = "\n".join([
        SECTION, "",
        f"`python bench/bench_startup.py` ({machine()}, {os.cpu_count()} CPUs, Python "
        f"{platform.python_version()}, {stamp}, load average {load:.1f}). Whole process, wall seconds, median "
        f"(min - max) of {args.repeat} runs of this environment's console scripts; \"loads\": which of "
        f"{', '.join(WATCHED)} the process imported.",
        "",
        "| command | median s | range s | loads |",
        "|---|---|---|---|",
        *rows,
        "",
        f"{verdict} The extraction row is timed after one untimed run that fills Numba's kernel cache.",
        "",
        f"CPU seconds of the same `extract-trajectories` process on one core (affinity CPU 0, one Numba/OpenMP "
        f"thread), median (min - max) of {args.repeat} runs per variant, alternating: \"to the first frame\" "
        "from the process's own clock when its first frame is done, \"start-up\" = the whole process (rusage, "
        f"exit included) less {CLIP['frames']} x the per-frame cost (goal {STARTUP_BUDGET_S:g} s).",
        "",
        "| variant | to the first frame s | per frame s | start-up s | whole process s |",
        "|---|---|---|---|---|",
        *cpu_rows,
        "",
        "| what | ours | baseline | ratio |", "|---|---|---|---|",
        readme_row("speed", "startup-help", [
            f"start-up: the slowest `--help` / `--version` of {len(medians)} commands (whole process, wall)",
            f"{max(medians.values()):.2f} s (`{max(medians, key=medians.get)}`)", f"goal {HELP_BUDGET_S:g} s",
            "-"]),
        readme_row("speed", "startup-first-frame", [
            f"`extract-trajectories`: CPU to the end of the first frame, and start-up (whole process less "
            f"{CLIP['frames']} frames' work), one core", f"{first_med:.2f} s; {startup_med:.2f} s",
            f"goal {STARTUP_BUDGET_S:g} s", "-"]),
        readme_row("speed", "startup-extract", [
            f"`extract-trajectories` on a {CLIP['frames']}-frame {CLIP['width']}x{CLIP['height']} clip "
            "(whole process, wall, Numba cache warm)", f"{extract_med:.2f} s", "-", "-"]),
    ])
    publish(SECTION, text, write=not args.no_write)
    return 0


if __name__ == "__main__":
    sys.exit(main())
