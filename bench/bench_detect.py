"""Benchmark: temporal action detection end to end on the built-in data, and its cost next to feature extraction.

Runs the ``idtfv`` console script (whole processes, as ``make detect`` runs them) in a fresh cache under
``bench/out/detect`` (``--cache`` to change):

1. the trimmed default dataset: ``dataset``, ``features``, ``encode`` (split 1), ``train-svm`` (the SVMs of
   ``make demo``);
2. the untrimmed default set (``dataset-untrimmed``: 4 videos of split 1's unseen actors, 3 planted actions each):
   ``features``, ``detect --vectors`` (the codebook of the encode run above, from its record), ``evaluate
   --detections``: THUMOS'14 mAP at temporal IoU 0.1-0.5 with a bootstrap interval over videos;
3. one long synthetic untrimmed video (``--minutes``, default 10: 7 actions of 3 s, the rest background motion in
   8 equal stretches, at the generator's 25 fps and 160x120) through ``features`` and ``detect``, timed
   separately.

Times are CPU seconds (user + sys) of each ``features`` / ``detect`` process, run with one worker and one thread
(``--jobs 1``, ``NUMBA_NUM_THREADS=1``, ``OMP_NUM_THREADS=1``), so the detection / extraction ratio does not depend
on the machine's load; start-up and loading are included in both.

Writes the ``## detection`` section of ``bench/RESULTS.md``; its marked rows are README.md's ``detection`` and
``detection-cost`` tables (``python bench/readme.py`` copies them).

Usage: ``python bench/bench_detect.py [--cache DIR] [--jobs 2] [--seed 0] [--minutes 10] [--no-write]``
(about 8 minutes on two busy cores, 4-5 of them the 10-minute video; its features take about 0.3 GB under the
cache).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

from _results import machine, byte_compile_package, readme_row, write_section  # noqa: E402  (bench/ is the script's directory)

SECTION = "## detection"
HERE = Path(__file__).resolve().parent
IDTFV = Path(sys.executable).with_name("idtfv")
ONE_THREAD = {"NUMBA_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
#: The long video: 7 actions of ACTION s (the planted actions of the untrimmed set last 2-4 s), the rest background
#: motion in 8 equal stretches (before, between and after them): sparse actions, as in THUMOS'14.
ACTION, N_ACTIONS = 3.0, 7


def run(args: list, log: list, *, one_thread: bool = False) -> dict:
    """Run ``idtfv ARGS`` as a separate process; return its wall and CPU seconds (user + sys), and log them."""
    cmd = [str(IDTFV), *map(str, args)]
    env = {**os.environ, "CI": "true", **(ONE_THREAD if one_thread else {})}
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        raise SystemExit(f"error: {' '.join(cmd)} exited with {proc.returncode}:\n{proc.stderr[-2000:]}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    log.append((args[0], wall, cpu))
    return {"wall": wall, "cpu": cpu, "stdout": proc.stdout}


def long_video(directory: Path, minutes: float, seed: int) -> tuple[Path, dict]:
    """The long untrimmed video (one, 160x120 at 25 fps); returns its manifest and its size."""
    from idtfv.data.untrimmed import generate_untrimmed

    gap = (60.0 * minutes - N_ACTIONS * ACTION) / (N_ACTIONS + 1)
    if gap <= 0:
        raise SystemExit(f"error: --minutes {minutes:g} is too short for {N_ACTIONS} actions of {ACTION:g} s")
    manifest = generate_untrimmed(directory, n_videos=1, n_classes=8, actions_per_video=N_ACTIONS,
                                  action_seconds=(ACTION, ACTION), gap_seconds=(gap, gap), size=(160, 120), fps=25,
                                  random_state=seed)
    row = manifest.read_text().splitlines()[1].split(",")
    frames, fps = int(row[6]), float(row[7])
    return manifest, {"frames": frames, "fps": fps, "seconds": frames / fps, "size": "160x120"}


def detect_and_time(manifest: Path, data: Path, svm: Path, vectors: Path, log: list, tag: str) -> dict:
    """features (timed) -> detect --vectors (timed) -> evaluate --detections; the figures and the CPU seconds."""
    stamp, det = data / f"features_{tag}.json", data / f"detect_{tag}"
    feats = run(["features", "--manifest", manifest, "--cache", data, "--out", stamp, "--jobs", 1, "--preset",
                 "default", "--seed", 0], log, one_thread=True)
    detect = run(["detect", "--manifest", manifest, "--features", stamp, "--vectors", vectors, "--svm", svm,
                  "--out", det], log, one_thread=True)
    run(["evaluate", "--detections", det / "detections.csv", "--annotations", manifest.parent / "annotations.csv",
         "--manifest", manifest, "--out", det / "eval"], log)
    report = json.loads((det / "eval" / "report.json").read_text())
    n_traj = 0
    features_dir = Path(json.loads(stamp.read_text())["dir"])
    import numpy as np

    for path in features_dir.glob("*.npz"):
        with np.load(path) as z:
            n_traj += int(z["meta"].shape[0])
    return {"features_cpu": feats["cpu"], "detect_cpu": detect["cpu"], "report": report, "n_traj": n_traj}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cache", type=Path, default=HERE / "out" / "detect",
                        help="fresh cache directory (removed first)")
    parser.add_argument("--jobs", type=int, default=2, help="worker processes of the untimed steps (default 2)")
    parser.add_argument("--seed", type=int, default=0, help="SEED (make detect's default: 0)")
    parser.add_argument("--minutes", type=float, default=10.0, help="length of the long video (default 10)")
    parser.add_argument("--no-write", action="store_true", help="print only; do not touch RESULTS.md")
    args = parser.parse_args(argv)
    byte_compile_package()  # .pyc files, as an installed package has (see _results)
    if not IDTFV.exists():
        raise SystemExit(f"error: {IDTFV} not found; run this with the project's virtualenv python (make bench)")
    if not args.minutes > 0:
        raise SystemExit(f"error: --minutes must be > 0, got {args.minutes}")

    shutil.rmtree(args.cache, ignore_errors=True)
    data = args.cache / "default"
    manifest, stamp, fv, svm = data / "manifest.csv", data / "features.json", data / "fisher.npz", data / "svm"
    log: list = []
    start = time.perf_counter()
    run(["dataset", "--kind", "default", "--seed", args.seed, "--jobs", args.jobs, "--out", manifest], log)
    run(["features", "--manifest", manifest, "--cache", data, "--out", stamp, "--jobs", args.jobs, "--preset",
         "default", "--seed", args.seed], log)
    run(["encode", "--manifest", manifest, "--features", stamp, "--split", 1, "--cache", data, "--out", fv, "--jobs",
         args.jobs, "--seed", args.seed], log)
    run(["train-svm", "--manifest", manifest, "--features", fv, "--split", 1, "--out", svm, "--jobs", args.jobs,
         "--seed", args.seed], log)
    k = json.loads(next(data.glob("codebook-*/codebook.json")).read_text())["k"]

    untrimmed = args.cache / "untrimmed"
    run(["dataset-untrimmed", "--seed", args.seed, "--out", untrimmed / "manifest.csv"], log)
    short = detect_and_time(untrimmed / "manifest.csv", untrimmed, svm, fv, log, "set")
    lines = (untrimmed / "manifest.csv").read_text().splitlines()[1:]
    set_frames = sum(int(line.split(",")[6]) for line in lines)

    long_dir = args.cache / "long"
    long_manifest, size = long_video(long_dir, args.minutes, args.seed)
    long = detect_and_time(long_manifest, long_dir, svm, fv, log, "long")
    total = time.perf_counter() - start

    rep = short["report"]

    def pct(v):
        return "n/a" if v is None else f"{100 * v:.1f}%"

    ci = rep["average_mAP_ci"]
    map_row = readme_row("detection", "default-untrimmed", [
        f"`make detect`: {rep['n_videos']} untrimmed videos, {rep['n_ground_truth']} planted actions "
        f"(SVMs of `make demo`, K={k})",
        *[pct(rep["mAP"][key]) for key in ("0.1", "0.2", "0.3", "0.4", "0.5")],
        f"{pct(rep['average_mAP'])} ({pct(ci[0])}–{pct(ci[1])})" if ci else pct(rep["average_mAP"])])
    lrep = long["report"]
    long_row = readme_row("detection", "long-video", [
        f"one {size['seconds'] / 60:.1f}-minute video, {N_ACTIONS} actions of {ACTION:g} s in background motion",
        *[pct(lrep["mAP"][key]) for key in ("0.1", "0.2", "0.3", "0.4", "0.5")], pct(lrep["average_mAP"])])

    def cost(label, f, frames):
        return [label, f"{f['features_cpu']:.1f} s ({frames / f['features_cpu']:.0f} frames/CPU-s)",
                f"{f['detect_cpu']:.1f} s", f"{f['detect_cpu'] / f['features_cpu']:.2f}"]

    cost_rows = [
        readme_row("detection-cost", "default-untrimmed", cost(
            f"the untrimmed default set: {rep['n_videos']} videos, {set_frames} frames of 160x120, "
            f"{short['n_traj']} trajectories", short, set_frames)),
        readme_row("detection-cost", "long-video", cost(
            f"one {size['seconds'] / 60:.1f}-minute video: {size['frames']} frames of {size['size']} at "
            f"{size['fps']:g} fps, {long['n_traj']} trajectories", long, size["frames"])),
    ]
    now = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    times = ", ".join(f"{name} {wall:.1f} s wall / {cpu:.1f} s CPU" for name, wall, cpu in log)
    minutes = "" if args.minutes == 10 else f" --minutes {args.minutes:g}"
    text = "\n".join([
        SECTION, "",
        f"`python bench/bench_detect.py --jobs {args.jobs} --seed {args.seed}{minutes}` ({machine()}, "
        f"{os.cpu_count()} CPUs, Python {platform.python_version()}, {now}; load average {load:.1f} at the end). "
        "SVMs trained on split 1 of the trimmed default dataset (`make demo`), windows of 1, 2, 4 and 8 s every "
        "quarter of their length, temporal NMS at IoU 0.3; THUMOS'14 mAP by `idtfv evaluate --detections`, the "
        "average over IoU 0.1-0.5 with its 95% bootstrap interval over videos.", "",
        "| videos | IoU 0.1 | 0.2 | 0.3 | 0.4 | 0.5 | average (95% CI) |", "|---|---|---|---|---|---|---|",
        map_row, long_row, "",
        "Cost: CPU seconds (user + sys) of the `idtfv features` and `idtfv detect` processes, one worker and one "
        "thread each (start-up and loading included).", "",
        "| video | feature extraction | detection | detection / extraction |", "|---|---|---|---|",
        *cost_rows, "",
        f"Per command: {times}. {total:.0f} s in all.",
    ])
    print(text)
    if not args.no_write:
        write_section(SECTION, text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
