"""Benchmark: OpenCV's own thread pool inside idtfv's commands, on (one thread per core) or off (what the commands
do by default: ``idtfv.cli.sequential_opencv`` sets ``OPENCV_FOR_THREADS_NUM=1`` unless the user set it).

Two races, whole processes, the two settings alternating (A B A B) after one untimed run of each:

* **one extraction**: ``extract-trajectories VIDEO [--end N] -q -o X.npz`` alone on the machine: wall and CPU
  seconds (the child's user + sys, ``os.wait4``);
* **a 2-worker dataset run**: two such processes started together (as ``--jobs 2`` workers on a 2-core machine run
  two videos): the wall seconds until both ended, and their CPU seconds.

"On" sets ``OPENCV_FOR_THREADS_NUM`` to the number of CPUs this process may use (OpenCV's own default pool size);
"off" sets it to 1. ``NUMBA_NUM_THREADS=1`` for both. Wall times mean something only on an otherwise idle machine.

Usage: ``python bench/bench_opencv_pool.py [--video PATH] [--end N] [--repeat 3] [--no-write]``; updates the
``## opencv-pool`` section of ``bench/RESULTS.md`` (default video: ``../shared/reference/videos/vtest_320x240.avi``).
"""

from __future__ import annotations

import argparse
import datetime
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _results import machine, byte_compile_package, publish  # noqa: E402  (bench/ is the script's directory)

SECTION = "## opencv-pool"
SHARED = Path(__file__).resolve().parents[2] / "shared"
DEFAULT_VIDEO = SHARED / "reference" / "videos" / "vtest_320x240.avi"
CORES = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
SETTINGS = {"on": str(CORES), "off": "1"}


def _start(argv: list[str], pool: str, err) -> subprocess.Popen:
    env = dict(os.environ, NUMBA_NUM_THREADS="1", OMP_NUM_THREADS="1", OPENCV_FOR_THREADS_NUM=pool)
    return subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=err)


def race(argv_of, pool: str, n: int, tmp: Path) -> tuple[float, float]:
    """Wall seconds until ``n`` processes started together ended, and their CPU seconds; each must exit 0."""
    with open(tmp / "stderr.txt", "w") as err:
        t0 = time.perf_counter()
        procs = [_start(argv_of(i), pool, err) for i in range(n)]
        cpu = 0.0
        for proc in procs:
            _, status, usage = os.wait4(proc.pid, 0)
            cpu += usage.ru_utime + usage.ru_stime
            if os.waitstatus_to_exitcode(status) != 0:
                raise SystemExit(f"extract-trajectories exited with {status}: "
                                 f"{(tmp / 'stderr.txt').read_text().strip()[-300:]}")
        return time.perf_counter() - t0, cpu


def _stat(values: list[float], fmt: str = ".2f") -> str:
    return f"{statistics.median(values):{fmt}} ({min(values):{fmt}} - {max(values):{fmt}})"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--video", type=Path, default=DEFAULT_VIDEO)
    ap.add_argument("--end", type=int, default=0, help="stop before this frame (default 0: the whole video)")
    ap.add_argument("--repeat", type=int, default=3, help="counted rounds (median reported)")
    ap.add_argument("--no-write", action="store_true", help="print the section, do not update RESULTS.md")
    args = ap.parse_args()
    byte_compile_package()  # .pyc files, as an installed package has (see _results)
    if not args.video.is_file():
        raise SystemExit(f"error: {args.video}: no such video (needs ../shared beside the repository)")
    exe = Path(sys.executable).with_name("extract-trajectories")
    results = {(race_name, name): [] for race_name in ("one", "pair") for name in SETTINGS}
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)

        def argv_of(i):
            end = ["--end", str(args.end)] if args.end else []
            return [str(exe), str(args.video), *end, "-q", "-o", str(tmp / f"out{i}.npz")]

        for name, pool in SETTINGS.items():  # warm-up: Numba's kernel cache
            race(argv_of, pool, 1, tmp)
        for r in range(args.repeat):
            for race_name, n in (("one", 1), ("pair", 2)):
                for name, pool in SETTINGS.items():
                    results[race_name, name].append(race(argv_of, pool, n, tmp))
                    wall, cpu = results[race_name, name][-1]
                    print(f"round {r + 1} {race_name} pool {name}: {wall:.2f} s wall, {cpu:.2f} CPU-s", flush=True)
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    lines = [SECTION, "",
             f"`python bench/bench_opencv_pool.py{f' --end {args.end}' if args.end else ''} --repeat {args.repeat}` ({machine()}, "
             f"{CORES} CPUs, {stamp}, load average {load:.1f} at the end). `extract-trajectories "
             f"{args.video.name}{f' --end {args.end}' if args.end else ''} -q -o X.npz`, whole processes, OpenCV's pool on "
             f"(`OPENCV_FOR_THREADS_NUM={CORES}`, OpenCV's default size) and off (`=1`, the commands' default) "
             f"alternating, {args.repeat} rounds after a warm-up of each; median (min - max). \"2 at once\": two "
             "processes started together, as two `--jobs` workers run two videos; wall until both ended, CPU of both. "
             "Wall time is only meaningful on an otherwise idle machine.", "",
             "| run | OpenCV pool | wall s | CPU s | wall / pool off |", "|---|---|---|---|---|"]
    for race_name, label in (("one", "1 extraction"), ("pair", "2 at once")):
        off = [w for w, _ in results[race_name, "off"]]
        for name in SETTINGS:
            walls = [w for w, _ in results[race_name, name]]
            cpus = [c for _, c in results[race_name, name]]
            ratio = [w / o for w, o in zip(walls, off)]
            lines.append(f"| {label} | {name} | {_stat(walls)} | {_stat(cpus)} | {_stat(ratio)} |")
    publish(SECTION, "\n".join(lines) + "\n", write=not args.no_write)
    return 0


if __name__ == "__main__":
    sys.exit(main())
