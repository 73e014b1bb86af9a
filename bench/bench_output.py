"""Benchmark: what the output format costs, whole process: ``extract-trajectories`` writing ``.npz`` vs LEAR text
``.txt`` vs ``.txt.gz`` (issue 12, item 4: LEAR text at most 1.2x the npz path, streamed).

Each format's run is its own process on one core (affinity CPU 0, ``NUMBA_NUM_THREADS=OMP_NUM_THREADS=1``), the
three alternating (A B C A B C), after one untimed run that fills Numba's kernel cache. Per format: CPU seconds
(the child's user + sys from ``os.wait4``) and peak RSS (its ``ru_maxrss``), median (min - max), and the CPU ratio
to the npz run of the same round. A second table times the LEAR formatter alone, in process, on the rows the
extraction wrote (read back from the ``.txt``: its float32 values exactly): Python's ``"%.9g"`` (the writer of earlier versions) against the compiled one
(``idtfv.idt._lear_text_nb``), which writes the same bytes. A third gzips that text in process: idtfv's encoder of
Huffman-coded literals (the ``.txt.gz`` default, ``idtfv.deflate.HuffmanDeflate``) against zlib's own
Huffman-only strategy and zlib's level 1 with string matching, CPU and size.

Usage: ``python bench/bench_output.py [--video PATH] [--end N] [--repeat 3] [--no-write]``; updates the
``## output`` section of ``bench/RESULTS.md`` (default video: ``../shared/reference/videos/bikes_320x240.avi``).
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _results import machine, byte_compile_package, publish, readme_row  # noqa: E402  (bench/ is the script's directory)

SECTION = "## output"
SHARED = Path(__file__).resolve().parents[2] / "shared"
DEFAULT_VIDEO = SHARED / "reference" / "videos" / "bikes_320x240.avi"
FORMATS = {"npz": "out.npz", "lear": "out.txt", "lear-gz": "out.txt.gz"}
GOAL = 1.2


def run(argv: list[str], cwd: Path) -> tuple[float, float]:
    """CPU seconds (user + sys) and peak RSS (MiB) of one process, pinned to CPU 0; it must exit 0."""
    env = dict(os.environ, NUMBA_NUM_THREADS="1", OMP_NUM_THREADS="1")
    with open(cwd / "stderr.txt", "w") as err:
        proc = subprocess.Popen(argv, cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=err,
                                preexec_fn=lambda: os.sched_setaffinity(0, {0}))
        _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} exited with {proc.returncode}: "
                         f"{(cwd / 'stderr.txt').read_text().strip()[-300:]}")
    return usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024.0


def _stat(values: list[float], fmt: str = ".2f") -> str:
    return f"{statistics.median(values):{fmt}} ({min(values):{fmt}} - {max(values):{fmt}})"


def gzip_race(text: bytes, repeat: int) -> dict[str, tuple[list[float], int]]:
    """CPU seconds and bytes of gzipping ``text`` in 1 MiB writes, in process: the writer's default (idtfv's
    Huffman-coded literals) against zlib's Huffman-only strategy and zlib's level 1 with its default strategy
    (string matching), alternating; each file is checked to decompress to ``text``."""
    import gzip
    import io
    import zlib

    from idtfv.idt.gzstream import GzipStream

    zlib_huffman = -1  # (GzipStream's own Z_HUFFMAN_ONLY is idtfv's encoder: zlib's is swapped in below)
    modes = {"Huffman-coded literals, idtfv's encoder (the default)": zlib.Z_HUFFMAN_ONLY,
             "zlib's Huffman-only strategy": zlib_huffman,
             "level 1 with string matching": zlib.Z_DEFAULT_STRATEGY}
    cpu: dict[str, list[float]] = {name: [] for name in modes}
    size: dict[str, int] = {}
    view = memoryview(text)
    for _ in range(repeat):
        for name, strategy in modes.items():
            buf = io.BytesIO()
            t0 = time.process_time()
            with GzipStream(buf, name="out.txt.gz", level=1,
                            strategy=zlib.Z_DEFAULT_STRATEGY if strategy == zlib_huffman else strategy) as g:
                if strategy == zlib_huffman:
                    g._z = zlib.compressobj(1, zlib.DEFLATED, -zlib.MAX_WBITS, zlib.DEF_MEM_LEVEL, zlib.Z_HUFFMAN_ONLY)
                for i in range(0, len(view), 1 << 20):
                    g.write(view[i:i + (1 << 20)])
            cpu[name].append(time.process_time() - t0)
            size[name] = buf.tell()
            if gzip.decompress(buf.getvalue()) != text:
                raise SystemExit(f"gzip race: {name} did not decompress to the text")
    return {name: (cpu[name], size[name]) for name in modes}


def formatter_race(rows: np.ndarray, repeat: int) -> tuple[list[float], list[float]]:
    """CPU seconds of Python's ``"%.9g"`` and of the compiled formatter on ``rows``, alternating; checks bytes."""
    from idtfv.idt.trajectories import _LearText

    def python(table):
        line = "\t".join(["%.9g"] * table.shape[1]) + "\n"
        return "".join([line % tuple(row) for row in table.tolist()]).encode()

    fast = _LearText()
    chunks = [rows[i:i + 256] for i in range(0, len(rows), 256)]  # the writer's chunks
    if b"".join(fast(c) for c in chunks[:4]) != b"".join(python(c) for c in chunks[:4]):
        raise SystemExit("the compiled LEAR formatter wrote other bytes than '%.9g'")
    times = {"python": [], "compiled": []}
    for _ in range(repeat):
        for name, fn in (("python", python), ("compiled", fast)):
            t0 = time.process_time()
            for c in chunks:
                fn(c)
            times[name].append(time.process_time() - t0)
    return times["python"], times["compiled"]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--video", type=Path, default=DEFAULT_VIDEO, help="input video (default: bikes_320x240)")
    ap.add_argument("--end", type=int, default=None, help="stop before this frame (default: the whole video)")
    ap.add_argument("--repeat", type=int, default=3, help="rounds of the three formats (median reported)")
    ap.add_argument("--no-write", action="store_true", help="print the section, do not update RESULTS.md")
    args = ap.parse_args(argv)
    byte_compile_package()  # .pyc files, as an installed package has (see _results)
    if not args.video.exists():
        raise SystemExit(f"{args.video}: no such video; give one with --video (the default needs ../shared)")
    script = Path(sys.executable).parent / "extract-trajectories"
    if not script.exists():
        raise SystemExit(f"{script} not found; install idtfv into this environment (pip install -e .)")
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        base = [str(script), str(args.video.resolve()), "-q"] + ([] if args.end is None else ["--end", str(args.end)])
        run(base + ["-o", "warm.npz"], tmp)  # fills Numba's kernel cache; not timed
        cpu = {k: [] for k in FORMATS}
        rss = {k: [] for k in FORMATS}
        for r in range(args.repeat):
            for name, out in FORMATS.items():
                c, m = run(base + ["-o", out], tmp)
                cpu[name].append(c)
                rss[name].append(m)
                print(f"round {r + 1} {name}: {c:.2f} CPU-s, {m:.0f} MiB", flush=True)
        sizes = {name: (tmp / out).stat().st_size / 2 ** 20 for name, out in FORMATS.items()}
        from idtfv.idt.trajectories import load_trajectories

        rows = load_trajectories(tmp / "out.txt").to_lear()  # the extractor's float32 values, exactly
        text_bytes = (tmp / "out.txt").read_bytes()
    py, fast = formatter_race(rows, args.repeat)
    gz = gzip_race(text_bytes, args.repeat)
    del text_bytes

    ratio = {name: [c / n for c, n in zip(cpu[name], cpu["npz"])] for name in FORMATS}
    lines = [f"| `-o {out}` | {_stat(cpu[name])} | {_stat(ratio[name])} | {_stat(rss[name], '.0f')} | "
             f"{sizes[name]:.1f} |" for name, out in FORMATS.items()]
    worst = max(statistics.median(ratio["lear"]), statistics.median(ratio["lear-gz"]))
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    shown = args.video.name + ("" if args.end is None else f" --end {args.end}")
    text = "\n".join([
        SECTION, "",
        f"`python bench/bench_output.py` ({machine()}, {os.cpu_count()} CPUs, Python "
        f"{platform.python_version()}, {stamp}, load average {load:.1f}). `extract-trajectories {shown} -q -o ...`, "
        f"whole process on one core (CPU 0, one Numba/OpenMP thread), the three formats alternating, "
        f"{args.repeat} rounds after a warm-up; median (min - max); {len(rows)} trajectories.",
        "",
        "| output | CPU s | CPU / npz of the round | peak RSS MiB | file MiB |",
        "|---|---|---|---|---|",
        *lines,
        "",
        f"In process, the LEAR formatter alone on those {len(rows)} rows in the writer's 256-row chunks: Python's "
        f"`'%.9g'` {_stat(py)} CPU-s, the compiled formatter {_stat(fast)} CPU-s (same bytes, checked).",
        "",
        f"In process, gzip of that text ({len(rows)} rows, {sizes['lear']:.1f} MiB) in 1 MiB writes "
        f"(`idtfv.idt.gzstream.GzipStream`, alternating, each checked to decompress to the text):",
        "",
        "| DEFLATE mode | CPU s | file MiB |", "|---|---|---|",
        *[f"| {name} | {_stat(c)} | {n / 2 ** 20:.1f} |" for name, (c, n) in gz.items()],
        "",
        "| what | ours | baseline | ratio |", "|---|---|---|---|",
        readme_row("speed", "output-lear", [
            f"`--format lear` (`.txt` / `.txt.gz`, Huffman-coded literals) vs `.npz`, whole process, {args.video.name}",
            f"{statistics.median(ratio['lear']):.2f}x / {statistics.median(ratio['lear-gz']):.2f}x the npz CPU",
            f"goal {GOAL:g}x", "met" if worst <= GOAL else "not met"]),
    ])
    publish(SECTION, text, write=not args.no_write)
    return 0


if __name__ == "__main__":
    sys.exit(main())
