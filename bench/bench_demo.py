"""Benchmark: the built-in default dataset end to end, run as a user runs it, and its accuracy figures.

Runs the ``idtfv`` console script (whole processes: start-up, imports, JIT cache, decoding, writing) for
``dataset``, ``features``, ``encode``, ``train-svm`` — the steps of ``make demo`` with its default variables — then
the spatio-temporal pyramid encoding and the k-NN baseline on the same features, in a fresh cache under
``bench/out/demo`` (``--cache`` to change). Accuracy does not depend on the machine's load; the times do (they
are wall seconds of each command, with the machine's load average printed next to them).

Writes the ``## demo`` section of ``bench/RESULTS.md``; its marked rows are README.md's accuracy table
(``python bench/readme.py`` copies them).

Usage: ``python bench/bench_demo.py [--cache DIR] [--jobs 2] [--seed 0] [--no-write]``
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

from _results import machine, byte_compile_package, readme_row, write_section  # noqa: E402  (bench/ is the script's directory)

SECTION = "## demo"
HERE = Path(__file__).resolve().parent
IDTFV = Path(sys.executable).with_name("idtfv")
PYRAMID = "1x1x1,1x3x1,1x1x2"


def run(args: list, log: list) -> float:
    """Run ``idtfv ARGS`` as a separate process; return its wall seconds (and log the command)."""
    cmd = [str(IDTFV), *map(str, args)]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "CI": "true"})
    seconds = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"error: {' '.join(cmd)} exited with {proc.returncode}:\n{proc.stderr[-2000:]}")
    log.append((args[0], seconds))
    return seconds


def figures(report_path: Path) -> dict:
    report = json.loads(report_path.read_text())
    confusion = report["confusion"]
    correct = sum(confusion[i][i] for i in range(len(confusion)))
    return {"accuracy": report["accuracy"], "mAP": report["mAP"], "correct": correct, "n": report["n_videos"],
            "n_classes": report["n_classes"]}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cache", type=Path, default=HERE / "out" / "demo", help="fresh cache directory (removed first)")
    parser.add_argument("--jobs", type=int, default=2, help="worker processes (make demo's JOBS default: 2)")
    parser.add_argument("--seed", type=int, default=0, help="SEED (make demo's default: 0)")
    parser.add_argument("--no-deep", action="store_true",
                        help="skip the CNN rows (TSN on RGB differences, ~2 min; needs torch) and their fusion")
    parser.add_argument("--no-write", action="store_true", help="print only; do not touch RESULTS.md")
    args = parser.parse_args(argv)
    byte_compile_package()  # .pyc files, as an installed package has (see _results)
    if not IDTFV.exists():
        raise SystemExit(f"error: {IDTFV} not found; run this with the project's virtualenv python (make bench)")

    shutil.rmtree(args.cache, ignore_errors=True)
    data = args.cache / "default"
    manifest, stamp = data / "manifest.csv", data / "features.json"
    log: list = []
    start = time.perf_counter()
    run(["dataset", "--kind", "default", "--seed", args.seed, "--jobs", args.jobs, "--out", manifest], log)
    run(["features", "--manifest", manifest, "--cache", data, "--out", stamp, "--jobs", args.jobs,
         "--preset", "default", "--seed", args.seed], log)
    results = {}
    for name, extra in (("plain", []), ("pyramid", ["--pyramid", PYRAMID])):
        fv = data / f"fisher_{name}.npz"
        run(["encode", "--manifest", manifest, "--features", stamp, "--split", 1, "--cache", data, "--out", fv,
             "--jobs", args.jobs, "--seed", args.seed, *extra], log)
        run(["train-svm", "--manifest", manifest, "--features", fv, "--split", 1, "--out", data / f"svm_{name}",
             "--jobs", args.jobs, "--seed", args.seed], log)
        results[f"svm-{name}"] = figures(data / f"svm_{name}" / "report.json")
        if name == "plain":
            demo_seconds = time.perf_counter() - start
            run(["train-knn", "--manifest", manifest, "--features", fv, "--split", 1, "--out", data / "knn",
                 "--k", 5, "--metric", "cosine"], log)
            results["knn"] = figures(data / "knn" / "report.json")
    k = json.loads(next(data.glob("codebook-*/codebook.json")).read_text())["k"]
    deep = not args.no_deep
    if deep:
        try:
            import torch  # noqa: F401
        except ImportError:
            print("bench_demo: torch is not installed; skipping the CNN rows", file=sys.stderr)
            deep = False
    if deep:
        tsn = data / "tsn_rgbdiff"
        run(["train-deep", "--manifest", manifest, "--model", "tsn", "--modality", "rgbdiff", "--split", 1,
             "--out", tsn, "--seed", args.seed, "--no-progress"], log)
        results["tsn"] = figures(tsn / "report.json") if (tsn / "report.json").exists() else None
        run(["fuse", data / "svm_plain" / "scores.csv", tsn / "scores.csv", "--out", data / "fused.csv",
             "--report", data / "fused.json"], log)
        results["fuse"] = figures(data / "fused.json")

    def cells(label, f):
        return [label, f"**{100 * f['accuracy']:.1f}%**" if label.startswith("iDT →") else f"{100 * f['accuracy']:.1f}%",
                f"{100 * f['mAP']:.1f}%", f"{f['correct']} / {f['n']}"]

    plain = results["svm-plain"]
    rows = [
        readme_row("accuracy", "svm", cells(f"iDT → Fisher vectors (K={k}) → linear SVM (`make demo`)", plain)),
        readme_row("accuracy", "svm-pyramid", cells(
            f"same, spatio-temporal pyramid `{PYRAMID}` (`ENCODE_ARGS=\"--pyramid {PYRAMID}\"`)", results["svm-pyramid"])),
        readme_row("accuracy", "knn", cells("iDT Fisher vectors → k-NN, k=5, cosine (`idtfv train-knn`)",
                                            results["knn"])),
    ]
    if deep and results.get("tsn"):
        rows.append(readme_row("accuracy", "tsn-rgbdiff", cells(
            "TSN, RGB difference, small ResNet (`make train-deep`)", results["tsn"])))
    if deep:
        rows.append(readme_row("accuracy", "fuse-svm-tsn", cells(
            "late fusion, iDT SVM + TSN RGB diff, equal weights (`idtfv fuse`)", results["fuse"])))
    now = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    times = ", ".join(f"{name} {seconds:.1f} s" for name, seconds in log)
    text = "\n".join([
        SECTION, "",
        f"`python bench/bench_demo.py --jobs {args.jobs} --seed {args.seed}` ({machine()}, "
        f"{os.cpu_count()} CPUs, Python {platform.python_version()}, {now}; load average {load:.1f} at the end). "
        f"The built-in default dataset ({plain['n_classes']} classes), split 1: {plain['n']} test clips of unseen "
        f"actors (one clip = {100 / plain['n']:.1f} points; chance {100 / plain['n_classes']:.1f}%). Each command "
        "is a separate `idtfv` process, as `make demo` runs them.", "",
        "| pipeline | accuracy | mAP | correct clips |", "|---|---|---|---|", *rows, "",
        f"Wall seconds per command: {times}. The `make demo` steps (dataset, features, encode, train-svm) took "
        f"{demo_seconds:.0f} s in all.",
    ])
    print(text)
    if not args.no_write:
        write_section(SECTION, text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
