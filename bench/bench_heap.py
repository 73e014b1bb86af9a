"""Benchmark: the commands' heap tuning (:func:`idtfv.allocator.tune_heap`: glibc's mmap and trim thresholds
raised, the heap backed by transparent huge pages) against glibc's defaults (``IDTFV_TUNE_HEAP=0``).

``extract-trajectories VIDEO [--end N] -q -o X.npz [--preset P]``, whole processes pinned to one core
(``taskset``), the two settings alternating (A B A B) after one untimed run of each, per preset: CPU seconds
(user + system of the child, ``os.wait4``), system seconds, minor page faults and peak RSS. The output files of
the two settings are compared byte for byte.

Usage: ``python bench/bench_heap.py [--video PATH] [--end 200] [--repeat 3] [--core 0] [--no-write]``; updates
the ``## heap`` section of ``bench/RESULTS.md`` (default video: ``../shared/reference/videos/vtest_320x240.avi``).
"""

from __future__ import annotations

import argparse
import filecmp
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _results import byte_compile_package, publish, stamp  # noqa: E402  (bench/ is the script's directory)

SECTION = "## heap"
SHARED = Path(__file__).resolve().parents[2] / "shared"
DEFAULT_VIDEO = SHARED / "reference" / "videos" / "vtest_320x240.avi"
#: setting -> IDTFV_TUNE_HEAP (unset: the commands tune the heap)
SETTINGS = {"tuned": None, "glibc defaults": "0"}


def run(argv: list[str], setting: str | None) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("IDTFV_TUNE_HEAP", "GLIBC_TUNABLES")
           and not k.startswith("MALLOC_")}
    env.update(NUMBA_NUM_THREADS="1", OMP_NUM_THREADS="1")
    if setting is not None:
        env["IDTFV_TUNE_HEAP"] = setting
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    err = proc.stderr.read().decode(errors="replace")
    proc.stderr.close()
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"extract-trajectories failed: {err.strip()[-300:]}")
    return {"cpu": usage.ru_utime + usage.ru_stime, "sys": usage.ru_stime, "faults": usage.ru_minflt,
            "rss": usage.ru_maxrss / 1024}


def _stat(values, fmt: str = ".2f") -> str:
    return f"{statistics.median(values):{fmt}} ({min(values):{fmt}} - {max(values):{fmt}})"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--video", type=Path, default=DEFAULT_VIDEO)
    ap.add_argument("--end", type=int, default=200, help="stop before this frame (0: the whole video)")
    ap.add_argument("--presets", default="default,fast")
    ap.add_argument("--repeat", type=int, default=3, help="counted rounds (median reported)")
    ap.add_argument("--core", type=int, default=0, help="the CPU core every run is pinned to")
    ap.add_argument("--no-write", action="store_true", help="print the section, do not update RESULTS.md")
    args = ap.parse_args()
    byte_compile_package()  # .pyc files, as an installed package has (see _results)
    if not args.video.is_file():
        print(f"skipped: {args.video}: no such video (needs ../shared beside the repository)")
        return 0
    exe = Path(sys.executable).with_name("extract-trajectories")
    pin = ["taskset", "-c", str(args.core)] if shutil.which("taskset") else []
    presets = args.presets.split(",")
    results = {(p, s): [] for p in presets for s in SETTINGS}
    same = {}
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)

        def argv_of(preset, setting):
            end = ["--end", str(args.end)] if args.end else []
            out = tmp / f"{preset}-{'tuned' if setting is None else 'plain'}.npz"
            return [*pin, str(exe), str(args.video), *end, "-q", "-o", str(out), "--preset", preset]

        for preset in presets:
            for setting in SETTINGS.values():  # warm-up: Numba's kernel cache
                run(argv_of(preset, setting), setting)
            same[preset] = filecmp.cmp(tmp / f"{preset}-tuned.npz", tmp / f"{preset}-plain.npz", shallow=False)
        for r in range(args.repeat):
            for preset in presets:
                for name, setting in SETTINGS.items():
                    results[preset, name].append(run(argv_of(preset, setting), setting))
                    m = results[preset, name][-1]
                    print(f"round {r + 1} {preset} {name}: {m['cpu']:.2f} CPU-s, {m['faults']} faults", flush=True)
    what = f"{args.video.name}{f', frames 0-{args.end}' if args.end else ''}"
    lines = [SECTION, "",
             f"`python bench/bench_heap.py --end {args.end} --repeat {args.repeat}` ({stamp()} at the end). "
             f"`extract-trajectories` on {what}, whole processes pinned to core {args.core}, the commands' heap "
             "tuning (`idtfv.allocator.tune_heap`) and glibc's defaults (`IDTFV_TUNE_HEAP=0`) alternating, "
             f"{args.repeat} rounds after a warm-up of each; median (min - max). CPU = user + system seconds.", "",
             "| preset | heap | CPU s | of which system s | minor page faults | peak RSS MiB | CPU / defaults "
             "| same output bytes |",
             "|---|---|---|---|---|---|---|---|"]
    for preset in presets:
        base = [m["cpu"] for m in results[preset, "glibc defaults"]]
        for name in SETTINGS:
            ms = results[preset, name]
            ratio = [m["cpu"] / b for m, b in zip(ms, base)]
            lines.append(f"| {preset} | {name} | {_stat([m['cpu'] for m in ms])} | {_stat([m['sys'] for m in ms])} "
                         f"| {_stat([m['faults'] for m in ms], ',.0f')} | {_stat([m['rss'] for m in ms], '.0f')} "
                         f"| {_stat(ratio)} | {'yes' if same[preset] else 'NO'} |")
    publish(SECTION, "\n".join(lines) + "\n", write=not args.no_write)
    return 0


if __name__ == "__main__":
    sys.exit(main())
