"""Benchmark: the decode rate that feeds the extractor, on the CPU (issue 14: on a GPU, decoding is host work).

Every shared clip (``../shared/reference/videos``) decoded as the extractor reads it (:func:`idtfv.video.open_video`:
grey frames at the working width), with OpenCV's and PyAV's backends: frames per CPU-second, and the wall rate of all clips decoded by 1 and by all CPU
threads at once (one clip per thread at a time), after one untimed pass that loads the libraries and warms the
page cache. The clips' codec and size are printed with them: the rate depends on both. Per clip, the CPU time is
the whole process's while that clip alone decodes (the reader keeps FFmpeg to one thread,
``idtfv.video.DECODER_THREADS``, since 2026-12-05; before, FFmpeg's own threads were counted in it too).

Usage: ``python bench/bench_decode.py [--repeat 3] [--no-write]``; updates the ``## decode`` section of
``bench/RESULTS.md``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _results import publish, stamp  # noqa: E402  (bench/ is the script's directory)

SECTION = "## decode"
VIDEOS = Path(__file__).resolve().parents[2] / "shared" / "reference" / "videos"
BACKENDS = ("opencv", "pyav")
CORES = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def decode(path: Path, backend: str, width: int) -> tuple[int, float]:
    """Frames decoded and the process's CPU seconds meanwhile (the per-clip rates are taken one clip at a time, so
    the process's time is this decode's, on whatever threads)."""
    from idtfv.video import open_video

    c0 = time.process_time()
    n = 0
    with open_video(path, gray=True, max_width=width, backend=backend) as reader:
        for _ in reader:
            n += 1
    return n, time.process_time() - c0


def codec(path: Path) -> str:
    import cv2

    cap = cv2.VideoCapture(str(path))
    fourcc = int(cap.get(cv2.CAP_PROP_FOURCC))
    size = f"{int(cap.get(cv2.CAP_PROP_FRAME_WIDTH))}x{int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT))}"
    cap.release()
    text = "".join(chr((fourcc >> (8 * i)) & 0xFF) for i in range(4)).strip("\x00 ") or "?"
    return f"{text}, {size}"


def _stat(values, fmt=".0f") -> str:
    return f"{statistics.median(values):{fmt}} ({min(values):{fmt}} - {max(values):{fmt}})"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=3, help="counted rounds (median reported)")
    ap.add_argument("--no-write", action="store_true", help="print the section, do not update RESULTS.md")
    args = ap.parse_args()
    clips = sorted(VIDEOS.glob("*")) if VIDEOS.is_dir() else []
    if not clips:
        print(f"skipped: {VIDEOS} not found (the shared reference clips)")
        return 0
    from idtfv.idt import IDTParams

    width = IDTParams().working_width
    threads = sorted({1, CORES})
    for path in clips:  # warm-up: libraries loaded, files in the page cache
        for backend in BACKENDS:
            decode(path, backend, width)
    per_clip = {(p.name, b): [] for p in clips for b in BACKENDS}
    together = {(b, t): [] for b in BACKENDS for t in threads}
    frames = {}
    for _ in range(args.repeat):
        for path in clips:
            for backend in BACKENDS:
                n, cpu = decode(path, backend, width)
                frames[path.name] = n
                per_clip[path.name, backend].append(n / cpu)
        for backend in BACKENDS:
            for t in threads:
                with ThreadPoolExecutor(max_workers=t) as ex:
                    t0 = time.perf_counter()
                    total = sum(n for n, _ in ex.map(lambda p: decode(p, backend, width), clips))
                    together[backend, t].append(total / (time.perf_counter() - t0))
    lines = [SECTION, "",
             f"`python bench/bench_decode.py --repeat {args.repeat}` ({stamp()}, {CORES} CPUs). The extractor's "
             f"reader (`idtfv.video.open_video`, grey, working width {width}) on the shared clips, {args.repeat} "
             "rounds after a warm-up; median (min - max). Per clip: frames per CPU-second of the process, one clip "
             "decoding at a time (one decoder thread: `idtfv.video.DECODER_THREADS`). "
             "All clips: frames per wall second, the clips spread over the threads.", "",
             "| clip | codec, size | frames | " + " | ".join(f"{b} frames/CPU-s" for b in BACKENDS) + " |",
             "|---|---|---|" + "---|" * len(BACKENDS)]
    for path in clips:
        lines.append(f"| {path.name} | {codec(path)} | {frames[path.name]} | "
                     + " | ".join(_stat(per_clip[path.name, b]) for b in BACKENDS) + " |")
    lines += ["", "| all clips | " + " | ".join(f"{b}, {t} thread{'s' if t > 1 else ''} frames/s" for b in BACKENDS
                                             for t in threads) + " |",
              "|---|" + "---|" * (len(BACKENDS) * len(threads)),
              "| together | " + " | ".join(_stat(together[b, t]) for b in BACKENDS for t in threads) + " |"]
    publish(SECTION, "\n".join(lines) + "\n", write=not args.no_write)
    return 0


if __name__ == "__main__":
    sys.exit(main())
