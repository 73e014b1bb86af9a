#!/usr/bin/env python3
"""Peak memory of ``extract-trajectories``: flat in the video's length, bounded for any frame size.

Each run is one ``extract-trajectories`` child process; its peak RSS is the whole process's ``ru_maxrss`` from
``os.wait4`` (Python, NumPy, OpenCV and Numba included). Runs:

* ``vtest_320x240.avi`` (795 frames, ``../shared/reference/videos``) once and looped 4 times (3180 frames; the
  looped clip is written with OpenCV, MJPG, into a temporary directory), with the ``default`` and ``fast``
  presets, to ``.npz`` and to LEAR text (``.txt.gz``): trajectories stream to the file as they finish
  (:class:`idtfv.idt.trajectories.TrajectoryWriter`), so the 4x clip should peak where the 1x clip does;
* the dataset stage, ``idtfv features`` on a one-video manifest (the 1x and 4x vtest clips, bikes; the 4x one also
  with ``--store sample``), default preset,
  one job: the same streaming into the video's cache file;
* with ``--huge``: a synthetic 4000x3000 clip (20 frames: a band sliding over a still texture) at the default
  working width (:data:`idtfv.idt.params.WORKING_WIDTH`, 640 px) and, for reference, a 640x480 and a 1280x960
  one at full size (``--resize-width 0``), which shows the per-pixel cost the working width bounds.

Then it replaces the ``## memory`` section of ``bench/RESULTS.md``.

Usage: ``python bench/bench_memory.py [--presets default,fast] [--formats npz,lear] [--loops 1,4] [--huge]
[--no-write]``.
"""

from __future__ import annotations

import argparse
import datetime
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _clips import loop_video  # noqa: E402  (bench/ is the script's directory)
from _results import machine, byte_compile_package, readme_row, write_section  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
VIDEO = ROOT.parent / "shared" / "reference" / "videos" / "vtest_320x240.avi"
DENSE = VIDEO.parent / "bikes_320x240.avi"  # the shared clip with the most trajectories finishing per frame
SECTION = "## memory"
EXTRACT = [sys.executable, "-c", "import sys; from idtfv.idt.cli import main; sys.exit(main())"]
IDTFV = [sys.executable, "-c", "import sys; from idtfv.cli import main; sys.exit(main())"]
# reported in issue 11 before trajectories were streamed to the output (MB)
BEFORE = {("default", "npz", 1): 414, ("default", "npz", 4): 987, ("default", "lear-stdout", 1): 768,
          ("default", "lear-stdout", 4): 2460}
#: Issue 12's bound on a process's peak memory (MB), on the shared 320x240 clips
GOAL_MB = 300
# the features stage before it streamed (extract() whole, then the runner's save; commit 0d9fd4a), whole
# `idtfv features` processes as below, warm Numba caches, 2026-12-04 (MB)
STAGE_BEFORE = {"vtest_320x240 x1": 359, "vtest_320x240 x4": 759, "bikes_320x240 x1": 411,
                "vtest_320x240 x4 sample": 728}
# `idtfv flow --method farneback --format npz` before its flows were written as they came (every flow held, then
# stacked; commit 41f679d), whole processes as below, 2026-12-04 (MB)
FLOW_BEFORE = {"vtest_320x240 x1": 814, "vtest_320x240 x4": 2905}
# `idtfv encode` of one video's features (codebook already fitted) before it read the channels one at a time and
# centred them in place (commit 9ffeb91), vtest x4 (151,678 trajectories), K=16, 2026-12-04 (MB)
ENCODE_BEFORE = {"vtest_320x240 x4": 583}


def one_video_manifest(path: Path, clip: Path) -> Path:
    """A manifest of the one video ``clip`` (id ``v``, a training video of split 1) at ``path``."""
    path.write_text("video_id,path,label,label_name,group,split1,frames,fps,width,height\n"
                    f"v,{clip},0,a,,train,,,,\n", encoding="utf-8")
    return path


#: Runs the command given as its arguments and prints "<exit status> <ru_maxrss KB>" of it. Linux folds the
#: address space that a process exec()s away into its ru_maxrss, so a command started directly by this bench (whose
#: own memory holds a loaded clip's frames, ~235 MB) reported at least this bench's size; started from this small
#: interpreter, the command's figure is its own.
_MEASURE = ("import os, subprocess, sys\n"
            "p = subprocess.Popen(sys.argv[1:], stdout=subprocess.DEVNULL)\n"
            "_, status, usage = os.wait4(p.pid, 0)\n"
            "print(os.waitstatus_to_exitcode(status), usage.ru_maxrss)\n")


def peak_rss(cmd: list[str], env=None) -> tuple[int, float, int]:
    """Run ``cmd``; return (exit status, seconds, peak RSS in MB of the command's process), measured by a small
    intermediate process (:data:`_MEASURE`)."""
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", _MEASURE, *cmd], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          env=env)
    seconds = time.perf_counter() - t0
    try:
        code, kb = (int(x) for x in proc.stdout.decode().split()[-2:])
    except ValueError:  # the intermediate itself failed
        code, kb = proc.returncode or 1, 0
    err = proc.stderr.decode(errors="replace").strip()
    if code:
        print(f"  failed ({code}): {err.splitlines()[-1] if err else ''}", file=sys.stderr)
    return code, seconds, kb // 1024  # KB on Linux


def synthetic_video(dst: Path, width: int, height: int, frames: int = 20) -> None:
    """A still smoothed-noise texture of ``width x height`` with a band across it that slides 2 % of the width
    per frame (a still camera: the band's tracks survive the camera-motion pruning), MJPG."""
    import cv2
    import numpy as np

    rng = np.random.default_rng(0)
    w, h = width // 10, height // 10  # texture at 1/10, scaled up: the same image content at every size
    texture = cv2.GaussianBlur(rng.integers(0, 256, (h, w + 2 * frames), dtype=np.uint8), (0, 0), 1)
    out = cv2.VideoWriter(str(dst), cv2.VideoWriter_fourcc(*"MJPG"), 25.0, (width, height))
    for t in range(frames):
        small = texture[:, :w].copy()
        small[h // 4: 3 * h // 4] = texture[h // 4: 3 * h // 4, 2 * t:2 * t + w]
        frame = cv2.resize(small, (width, height), interpolation=cv2.INTER_CUBIC)
        out.write(cv2.cvtColor(frame, cv2.COLOR_GRAY2BGR))
    out.release()


def count_rows(path: Path) -> int:
    import numpy as np

    if path.suffix == ".npz":
        with np.load(path) as z:
            return int(z["meta"].shape[0])
    import gzip

    with gzip.open(path, "rb") as f:
        return sum(1 for _ in f)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--presets", default="default,fast")
    ap.add_argument("--formats", default="npz,lear")
    ap.add_argument("--loops", default="1,4")
    ap.add_argument("--huge", action="store_true", help="also the 4000x3000 clip and two full-size ones")
    ap.add_argument("--no-write", action="store_true", help="do not update bench/RESULTS.md")
    args = ap.parse_args(argv)
    byte_compile_package()  # .pyc files, as an installed package has (see _results)
    if not VIDEO.exists():
        print(f"error: {VIDEO}: missing (the shared reference data); nothing measured", file=sys.stderr)
        return 2
    env = dict(os.environ, NUMBA_NUM_THREADS="1", OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1")
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench_memory_") as tmp:
        tmp = Path(tmp)
        clips = {}
        for loops in (int(x) for x in args.loops.split(",")):
            if loops == 1:
                clips[1] = (VIDEO, 795)
            else:
                dst = tmp / f"vtest_x{loops}.avi"
                clips[loops] = (dst, loop_video(VIDEO, dst, loops))

        def measure(clip: Path, fmt: str, options: list[str]) -> tuple[int, int, float]:
            """Trajectories written, peak RSS (MB) and seconds of one extraction of ``clip`` to ``fmt``."""
            out = tmp / ("out.npz" if fmt == "npz" else "out.txt.gz")
            rc, seconds, mb = peak_rss(EXTRACT + [str(clip), *options, "-q", "-o", str(out)], env)
            n = count_rows(out) if rc == 0 else 0
            out.unlink(missing_ok=True)
            return n, mb, seconds

        for preset in args.presets.split(","):
            for fmt in args.formats.split(","):
                for loops, (clip, n_frames) in clips.items():
                    n, mb, seconds = measure(clip, fmt, ["--preset", preset])
                    rows.append((f"vtest_320x240 x{loops}", f"{n_frames}", preset, fmt, "320", n, mb, seconds,
                                 BEFORE.get((preset, fmt if fmt == "npz" else "lear-stdout", loops))))
                    print(f"{rows[-1][0]:>20} {preset:>8} {fmt:>5}: {n:7d} trajectories, peak {mb:5d} MB, "
                          f"{seconds:6.1f} s", flush=True)
                    report(rows, args.no_write)
        if DENSE.exists():  # dense footage: the most trajectories finishing per frame among the shared clips
            runs = [(preset, fmt, []) for preset in args.presets.split(",") for fmt in args.formats.split(",")]
            for preset, fmt, extra in runs + [("default", "npz", ["--threads", "2"])]:
                n, mb, seconds = measure(DENSE, fmt, ["--preset", preset, *extra])
                name = "bikes_320x240 x1" + (" `" + " ".join(extra) + "`" if extra else "")
                rows.append((name, "250", preset, fmt, "320", n, mb, seconds, None))
                print(f"{name:>20} {preset:>8} {fmt:>5}: {n:7d} trajectories, peak {mb:5d} MB, {seconds:6.1f} s",
                      flush=True)
                report(rows, args.no_write)
        # the dataset stage (`idtfv features`, one job): each video's trajectories go to its cache file as they
        # finish (features_item writes it), so a worker's peak does not grow with the video's length either
        stage_clips = [(f"vtest_320x240 x{loops}", clip, n_frames, []) for loops, (clip, n_frames) in clips.items()]
        if DENSE.exists():
            stage_clips.append(("bikes_320x240 x1", DENSE, 250, []))
        longest = max(clips.items())[1]  # the sampled (streaming) mode reads its rows back from a scratch file
        stage_clips.append((f"vtest_320x240 x{max(clips)}", longest[0], longest[1], ["--store", "sample"]))
        for name, clip, n_frames, extra in stage_clips:
            manifest = one_video_manifest(tmp / "manifest.csv", clip)
            cache = tmp / "cache"
            rc, seconds, mb = peak_rss(IDTFV + ["features", "--manifest", str(manifest), "--cache", str(cache),
                                                "--out", str(tmp / "stamp.json"), "--force", *extra], env)
            files = sorted(cache.glob("features-*/v.npz"), key=lambda f: f.stat().st_mtime)
            n = count_rows(files[-1]) if rc == 0 and files and not extra else 0
            command = " ".join(["idtfv features", *extra])
            rows.append((f"{name}, `{command}`", f"{n_frames}", "default",
                         "sample (stage cache)" if extra else "npz (stage cache)", "320", n if not extra else "-",
                         mb, seconds, STAGE_BEFORE.get(name + (" sample" if extra else ""))))
            print(f"{rows[-1][0]:>20}: {n:7d} trajectories, peak {mb:5d} MB, {seconds:6.1f} s", flush=True)
            report(rows, args.no_write)
        # the flow stage's .npz (`idtfv flow --format npz`): each flow is compressed into the file as it comes
        for loops, (clip, n_frames) in clips.items():
            name = f"vtest_320x240 x{loops}"
            manifest = one_video_manifest(tmp / "manifest.csv", clip)
            rc, seconds, mb = peak_rss(IDTFV + ["flow", "--manifest", str(manifest), "--out", str(tmp / "flow"),
                                                "--cache", str(tmp / "flow_cache"), "--method", "farneback",
                                                "--format", "npz", "--force"], env)
            rows.append((f"{name}, `idtfv flow --method farneback --format npz`", f"{n_frames}", "-",
                         "flow npz" if rc == 0 else "FAILED", "320", "-", mb, seconds, FLOW_BEFORE.get(name)))
            print(f"{rows[-1][0]:>20}: peak {mb:5d} MB, {seconds:6.1f} s", flush=True)
            report(rows, args.no_write)
        # the encode stage: one video's vector from its features file, one channel at a time (the codebook, fitted
        # by a first run, is reused: the measured run encodes only)
        loops = max(clips)
        clip, n_frames = clips[loops]
        name = f"vtest_320x240 x{loops}"
        manifest = one_video_manifest(tmp / "manifest.csv", clip)
        enc_cache, stamp = tmp / "enc_cache", tmp / "enc_stamp.json"
        rc, _, _ = peak_rss(IDTFV + ["features", "--manifest", str(manifest), "--cache", str(enc_cache), "--out",
                                     str(stamp)], env)
        encode = IDTFV + ["encode", "--manifest", str(manifest), "--features", str(stamp), "--cache", str(enc_cache),
                          "--out", str(tmp / "fv.npz"), "--k", "16", "--pca-samples", "20000"]
        rc = rc or peak_rss(encode, env)[0]  # fits the codebook
        for done in enc_cache.glob("encode-*"):
            shutil.rmtree(done)
        rc, seconds, mb = peak_rss(encode, env) if rc == 0 else (rc, 0.0, 0)
        n = count_rows(next(enc_cache.glob("features-*/v.npz"))) if rc == 0 else 0
        rows.append((f"{name}, `idtfv encode --k 16` (codebook fitted before)", f"{n_frames}", "default",
                     "vector" if rc == 0 else "FAILED", "320", n, mb, seconds, ENCODE_BEFORE.get(name)))
        print(f"{rows[-1][0]:>20}: {n:7d} trajectories, peak {mb:5d} MB, {seconds:6.1f} s", flush=True)
        report(rows, args.no_write)
        if args.huge:
            for width, height, resize in ((4000, 3000, None), (640, 480, "0"), (1280, 960, "0")):
                clip = tmp / f"synthetic_{width}x{height}.avi"
                synthetic_video(clip, width, height)
                n, mb, seconds = measure(clip, "npz", ["--resize-width", resize] if resize else [])
                working = "640 (default)" if resize is None else f"{width} (--resize-width 0)"
                rows.append((f"synthetic {width}x{height}", "20", "default", "npz", working, n, mb, seconds, None))
                report(rows, args.no_write)
                print(f"{rows[-1][0]:>20} working {working}: {n} trajectories, peak {mb} MB, {seconds:.1f} s",
                      flush=True)
    print(report(rows, args.no_write))
    return 0


def report(rows, no_write: bool) -> str:
    """The section's text for the rows measured so far (written to bench/RESULTS.md unless ``no_write``)."""
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    lines = [SECTION, "",
             f"`python bench/bench_memory.py {' '.join(sys.argv[1:])}`".replace(" `", "`") +
             f" ({machine()}, {os.cpu_count()} CPUs, {stamp}, load average {load:.1f} when written)"
             ": peak RSS of one `extract-trajectories` (or `idtfv features`) process (`os.wait4` "
             "`ru_maxrss`: interpreter, NumPy, OpenCV and Numba included), one thread. Trajectories stream to the "
             "output as they finish (`TrajectoryWriter`), so the peak does not grow with the video's length; frames "
             "wider than the working width (640 px by default, `--resize-width`) are shrunk first, so it does not "
             "grow with the frame size either; what it does grow with is how many trajectories finish per frame "
             "(the bikes rows: dense texture, ~200 a frame). \"Before\": issue 11's measurements of the version "
             "that kept every "
             "trajectory until the end (LEAR text to stdout); for the `idtfv features` rows, the stage before it "
             "streamed (commit 0d9fd4a); for the `idtfv flow` rows (flows compressed into the `.npz` as they come), "
             "the stage that held every flow and stacked them (commit 41f679d); for the `idtfv encode` row (a video's "
             "vector from its features file, the codebook fitted by an earlier run: the peak grows with the video's "
             "trajectories, ~0.7 KB each with the reference options, one channel at a time), the stage that read all "
             "five channels and centred a copy (commit 9ffeb91). Seconds are wall time on the "
             "machine as it was (other jobs "
             "may run alongside), not a speed measure.", "",
             "| clip | frames | preset | output | working width | trajectories | peak RSS (MB) | before (MB) | "
             "seconds |", "|---|---:|---|---|---|---:|---:|---:|---:|"]
    for clip, frames, preset, fmt, working, n, mb, seconds, before in rows:
        lines.append(f"| {clip} | {frames} | {preset} | {fmt} | {working} | {n} | {mb} | "
                     f"{before if before else ''} | {seconds:.0f} |")
    at_320 = [r for r in rows if r[4] == "320"]  # the shared clips (the goal's footage), not --huge's sizes
    if at_320:
        cli = [r[6] for r in at_320 if "`idtfv " not in r[0]]
        stage = [r[6] for r in at_320 if "idtfv features" in r[0]]
        flow = [r[6] for r in at_320 if "idtfv flow" in r[0]]
        parts = ([f"`extract-trajectories` {max(cli)} MB"] if cli else []) + \
                ([f"`idtfv features` {max(stage)} MB"] if stage else []) + \
                ([f"`idtfv flow --format npz` {max(flow)} MB"] if flow else [])
        worst = max(r[6] for r in at_320 if "idtfv encode" not in r[0])  # the goal is the extraction's
        lines += ["", "| what | ours | baseline | ratio |", "|---|---|---|---|",
                  readme_row("speed", "memory", [
                      "peak RSS, the largest of the runs above on the 320x240 shared clips (1x and 4x length, both "
                      "presets and formats, `--threads 2`, the features and flow stages), whole process",
                      "; ".join(parts), f"goal {GOAL_MB} MB", "met" if worst <= GOAL_MB else "not met"])]
    text = "\n".join(lines) + "\n"
    if not no_write:
        write_section(SECTION, text)
    return text


if __name__ == "__main__":
    sys.exit(main())
