"""Race ``extract-trajectories`` against the C++ reference (LEAR's ``DenseTrackStab``) as users run them.

Both are whole processes (start-up, imports, JIT cache load, decoding, writing the output file), pinned to the
same single core (``taskset -c CORE``; the reference's OpenCV/TBB threads and our Numba threads all share it),
run alternately A B A B after one warm-up run of each that is not counted. For each clip and preset the table
gives the median CPU seconds (user + system of the process, from ``wait4``) with min-max, the median of the
per-round ratios reference/ours with min-max, frames per CPU-second, and peak RSS. Our output is ``.npz`` (the
default format); the reference writes its text to a file, as its README runs it.

Fidelity: our output of the same run against the reference's output shipped in
``../shared/reference/lear-idt`` (trajectory-count ratio and the correlation of each descriptor block's
per-dimension mean profile; the same measures as ``tests/test_fidelity_lear.py``).

Rows marked for the README: the speed table (``speed:idt-*``) and the fidelity table (``fidelity:*``).

Usage: ``python bench/bench_reference.py [--repeat 3] [--core 0] [--clips vtest200,kth,vtest]
[--presets default,fast] [--no-write]``. Needs the reference's runtime libraries (see
``../shared/reference/bin/README.md``); skips cleanly without them or without ``../shared``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _results import (  # noqa: E402  (bench/ is the script's directory)
    byte_compile_package, machine, noise_lines, readme_row, spread, write_section)

SECTION = "## reference"
ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "reference"
BINARY = SHARED / "bin" / "DenseTrackStab"
OURS = Path(sys.executable).with_name("extract-trajectories")
BLOCKS = ("traj", "hog", "hof", "mbhx", "mbhy")
#: name -> (video file, last frame for the reference's -E (inclusive) or None, LEAR output, label)
CLIPS = {
    "vtest200": ("vtest_320x240.avi", 200, "vtest_320x240_frames0-200.txt.gz", "vtest 320x240, frames 0-200"),
    "vtest": ("vtest_320x240.avi", None, None, "vtest 320x240, whole clip (795 frames)"),
    "kth": ("person01_boxing_d1_uncomp.avi", None, "person01_boxing_d1_uncomp.txt.gz", "KTH boxing 160x120"),
    "tree": ("tree.avi", None, "tree.txt.gz", "tree 320x240"),
    "carphone": ("carphone_pristine.mp4", None, "carphone_pristine.txt.gz", "carphone 176x144 (moving camera)"),
    "bikes": ("bikes_320x240.avi", None, None, "bikes 320x240"),
}
#: (clip, preset) -> the speed-up over the reference issue 12 asks for (one core, whole process); printed beside
#: each measured ratio
GOALS = {("vtest", "default"): 4.0, ("vtest", "fast"): 8.0, ("vtest200", "default"): 4.0, ("vtest200", "fast"): 8.0,
         ("kth", "default"): 3.0}


def goal_cell(clip: str, preset: str, ratio: float) -> str:
    """``">= 4x: met"`` / ``">= 4x: not yet"`` for a clip and preset with a goal, ``"-"`` otherwise."""
    goal = GOALS.get((clip, preset))
    if goal is None:
        return "-"
    return f">= {goal:g}x: {'met' if ratio >= goal else 'not yet'}"


def timed(cmd: list[str], *, stdout=None, env=None) -> dict:
    """Run ``cmd``; return wall seconds, CPU seconds (user + sys of the child) and peak RSS (MiB)."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=stdout or subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    stderr = proc.stderr.read().decode(errors="replace")
    proc.stderr.close()
    code = os.waitstatus_to_exitcode(status)
    if code != 0:
        raise SystemExit(f"error: {' '.join(cmd)} exited with {code}: {stderr.strip()[-1000:]}")
    return {"wall": wall, "cpu": usage.ru_utime + usage.ru_stime, "rss": usage.ru_maxrss / 1024.0}


def reference_ready() -> str | None:
    if not BINARY.exists():
        return f"{BINARY} not found (needs ../shared)"
    ldd = subprocess.run(["ldd", str(BINARY)], capture_output=True, text=True)
    if "not found" in ldd.stdout:
        return "the reference's OpenCV 4.6 runtime libraries are missing (see ../shared/reference/bin/README.md)"
    if shutil.which("taskset") is None:
        return "taskset (util-linux) is missing"
    return None


def compare(ref, ours) -> dict:
    """Count ratio (ours / reference) and per-block mean-profile correlations."""
    import numpy as np

    out = {"ratio": len(ours) / max(len(ref), 1)}
    for block in BLOCKS:
        out[block] = float(np.corrcoef(getattr(ref, block).mean(0), getattr(ours, block).mean(0))[0, 1])
    return out


def fmt(values, digits=1) -> str:
    if not values:
        return "-"
    return f"{statistics.median(values):.{digits}f} ({min(values):.{digits}f}–{max(values):.{digits}f})"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3, help="counted rounds per clip and preset (default 3)")
    parser.add_argument("--core", type=int, default=0, help="the CPU core both run on (default 0)")
    parser.add_argument("--clips", default="vtest200,kth,vtest", help=f"comma list of {','.join(CLIPS)}")
    parser.add_argument("--presets", default="default,fast", help="our presets (the reference has one)")
    parser.add_argument("--fidelity-clips", default="vtest200,kth,tree,carphone",
                        help="clips whose fidelity (default preset) is computed from one more run of ours")
    parser.add_argument("--no-write", action="store_true", help="print only; do not touch RESULTS.md")
    args = parser.parse_args(argv)
    byte_compile_package()  # .pyc files, as an installed package has (see _results)
    why = reference_ready()
    if why:
        print(f"skip: {why}")
        return 0
    if not OURS.exists():
        raise SystemExit(f"error: {OURS} not found; run with the project's virtualenv python (make bench)")
    from idtfv.idt.trajectories import load_trajectories

    tmp = Path(tempfile.mkdtemp(prefix="bench_reference_"))
    env = {**os.environ, "NUMBA_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}
    pin = ["taskset", "-c", str(args.core)]
    rows, speed_rows, fidelity_rows, noise = [], [], [], {}
    for clip in args.clips.split(","):
        video, last, _lear, label = CLIPS[clip]
        path = SHARED / "videos" / video
        ref_cmd = [*pin, str(BINARY), str(path), *(["-E", str(last)] if last is not None else [])]
        ref_out = tmp / f"{clip}.ref.txt"
        runs = {"ref": []}
        for preset in args.presets.split(","):
            runs[preset] = []
        ours_cmd = {preset: [*pin, str(OURS), str(path), "-q", "-o", str(tmp / f"{clip}.{preset}.npz"),
                             *(["--end", str(last + 1)] if last is not None else []),
                             *(["--preset", "fast"] if preset == "fast" else [])] for preset in runs if preset != "ref"}
        for round_ in range(args.repeat + 1):  # round 0 is the warm-up
            for name in runs:
                if name == "ref":
                    with open(ref_out, "wb") as sink:
                        r = timed(ref_cmd, stdout=sink, env=env)
                else:
                    r = timed(ours_cmd[name], env=env)
                if round_ > 0:
                    runs[name].append(r)
        ours_first = next(p for p in runs if p != "ref")  # any of our outputs says how many frames were read
        n_frames = load_trajectories(tmp / f"{clip}.{ours_first}.npz").info.get("frames")
        ref_cpu = [r["cpu"] for r in runs["ref"]]
        noise[label] = spread(ref_cpu)
        for preset in (p for p in runs if p != "ref"):
            cpu = [r["cpu"] for r in runs[preset]]
            ratios = [a / b for a, b in zip(ref_cpu, cpu)]
            fps = [n_frames / c for c in cpu] if n_frames else []
            ref_fps = [n_frames / c for c in ref_cpu] if n_frames else []
            rows.append(f"| {label} | {preset} | {fmt(cpu)} | {fmt(ref_cpu)} | **{fmt(ratios, 2)}x** | "
                        f"{fmt(fps)} | {fmt(ref_fps)} | {statistics.median(r['rss'] for r in runs[preset]):.0f} / "
                        f"{statistics.median(r['rss'] for r in runs['ref']):.0f} | "
                        f"{goal_cell(clip, preset, statistics.median(ratios))} |")
            speed_rows.append(readme_row("speed", f"idt-{clip}-{preset}", [
                f"iDT extraction, {label}, `{'--preset fast' if preset == 'fast' else 'default'}` (whole process)",
                f"{statistics.median(fps):.1f} frames/CPU-s" if fps else f"{statistics.median(cpu):.1f} CPU-s",
                f"C++ reference {statistics.median(ref_fps):.1f} frames/CPU-s" if ref_fps else
                f"C++ reference {statistics.median(ref_cpu):.1f} CPU-s",
                f"{statistics.median(ratios):.2f}x ({min(ratios):.2f}–{max(ratios):.2f})"
                + (f"; goal {GOALS[clip, preset]:g}x" if (clip, preset) in GOALS else "")]))
    for clip in filter(None, args.fidelity_clips.split(",")):  # (--fidelity-clips "": none)
        video, last, lear, label = CLIPS[clip]
        if lear is None:
            continue
        out = tmp / f"{clip}.default.npz"
        if not out.exists():
            timed([*pin, str(OURS), str(SHARED / "videos" / video), "-q", "-o", str(out),
                   *(["--end", str(last + 1)] if last is not None else [])], env=env)
        c = compare(load_trajectories(SHARED / "lear-idt" / lear), load_trajectories(out))
        fidelity_rows.append(readme_row("fidelity", clip, [label, f"{c['ratio']:.3f}",
                                                           *(f"{c[b]:.3f}" for b in BLOCKS)]))
    now = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    load = os.getloadavg()[0]
    text = "\n".join([
        SECTION, "",
        f"`python bench/bench_reference.py --repeat {args.repeat} --clips {args.clips} --presets {args.presets}` "
        f"({machine()}, {os.cpu_count()} CPUs, {now}; load average {load:.1f} at the end). Whole "
        f"processes pinned to core {args.core} (`taskset`), alternating ours and the reference, {args.repeat} "
        "counted rounds after one warm-up round; CPU seconds = user + system of the process; median (min–max). "
        "Ours writes `.npz`, the reference its text to a file.", "",
        *noise_lines(noise, "the reference's own CPU time"),
        "| clip | preset (ours) | ours CPU s | reference CPU s | reference / ours | ours frames/CPU-s | "
        "reference frames/CPU-s | peak RSS MiB ours / reference | goal (issue 12) |",
        "|---|---|---|---|---|---|---|---|---|", *rows, "",
        "README rows (speed):", "", "| what | ours | baseline | ratio |", "|---|---|---|---|", *speed_rows, "",
        "Fidelity of the default preset against the reference's shipped output (`../shared/reference/lear-idt`): "
        "trajectory-count ratio ours / reference and per-block mean-profile correlation.", "",
        "| clip | count ratio | Traj | HOG | HOF | MBHx | MBHy |", "|---|---|---|---|---|---|---|", *fidelity_rows,
    ])
    print(text)
    if not args.no_write:
        write_section(SECTION, text)
    shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
