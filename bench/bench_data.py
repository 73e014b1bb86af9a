"""Benchmark: the video reader and the synthetic default dataset.

* decode: ``idtfv.video.iter_frames`` (grey, RGB, and grey with ``max_width``) against a bare ``cv2.VideoCapture`` loop
  doing the same conversions, on the same file in the same run (ratio = ours / bare; ~1.0 means no overhead);
* probe: ``probe_video`` (counts decodable frames) per video;
* generator: ``generate_dataset`` with the default parameters (96 clips of 40 frames at 160x120), seconds.

Usage: ``python bench/bench_data.py [--repeat 3] [--no-write]``; updates the ``## data`` section of
``bench/RESULTS.md``. Uses ``../shared/reference/videos/vtest_320x240.avi`` when present, else a synthetic clip.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import cv2

from idtfv.data.synthetic import generate_dataset
from idtfv.video import iter_frames, probe_video

from _results import machine, write_section  # noqa: E402  (bench/ is the script's directory)

SECTION = "## data"
SHARED_CLIP = Path(__file__).resolve().parents[1].parent / "shared" / "reference" / "videos" / "vtest_320x240.avi"


def bare_cv2(path, gray, max_width=None):
    cap = cv2.VideoCapture(str(path), cv2.CAP_FFMPEG)
    n = 0
    while True:
        ok, f = cap.read()
        if not ok:
            break
        f = cv2.cvtColor(f, cv2.COLOR_BGR2GRAY if gray else cv2.COLOR_BGR2RGB)
        if max_width is not None and f.shape[1] > max_width:
            h = int(round(f.shape[0] * max_width / f.shape[1]))
            f = cv2.resize(f, (max_width, h), interpolation=cv2.INTER_AREA)
        n += 1
    cap.release()
    return n


def ours(path, gray, max_width=None):
    return sum(1 for _ in iter_frames(path, gray=gray, max_width=max_width))


def best_of(fn, repeat):
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args(argv)
    cv2.setNumThreads(1)
    with tempfile.TemporaryDirectory() as tmp:
        t = time.perf_counter()
        manifest = generate_dataset(Path(tmp) / "default", force=True)
        gen_s = time.perf_counter() - t
        clip = SHARED_CLIP if SHARED_CLIP.exists() else next((Path(tmp) / "default" / "videos" / "walk").glob("*.avi"))
        n = probe_video(clip).frames
        rows = []
        for label, gray, mw in (("grey", True, None), ("RGB", False, None), ("grey, max_width=160", True, 160)):
            base = best_of(lambda: bare_cv2(clip, gray, mw), args.repeat)
            mine = best_of(lambda: ours(clip, gray, mw), args.repeat)
            rows.append((label, n / base, n / mine, mine / base))
        probe_s = best_of(lambda: probe_video(clip), args.repeat)
        videos = sorted((Path(tmp) / "default" / "videos").rglob("*.avi"))
        t = time.perf_counter()
        for v in videos:
            probe_video(v)
        probe_all = time.perf_counter() - t
        assert manifest.exists()
    lines = [SECTION, "",
             f"`python bench/bench_data.py` on {machine()}, {os.cpu_count()} CPUs, OpenCV {cv2.__version__}, "
             f"one OpenCV thread, best of {args.repeat}. Clip: `{clip.name}` ({n} frames).", "",
             "| decode | bare cv2 loop (frames/s) | idtfv.video (frames/s) | time ratio ours/bare |",
             "|---|---|---|---|"]
    lines += [f"| {a} | {b:,.0f} | {c:,.0f} | {d:.2f} |" for a, b, c, d in rows]
    lines += ["", f"- `probe_video` (decodes every frame to count): {probe_s * 1000:.1f} ms for {n} frames; "
                  f"{len(videos)} default-dataset clips probed in {probe_all:.2f} s.",
              f"- `generate_dataset` default (96 clips x 40 frames, 160x120, render + MJPG write + probe + manifest): "
              f"{gen_s:.1f} s.", ""]
    text = "\n".join(lines)
    print(text)
    if not args.no_write:
        write_section(SECTION, text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
