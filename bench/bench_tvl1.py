"""Benchmark: our TV-L1 (Numba, one thread) against OpenCV's ``DualTVL1`` (contrib, one thread) on real frame pairs.

In-process race, per clip: for each shared clip (``../shared/reference/videos``: vtest, bikes, KTH boxing, tree,
carphone) ``--pairs`` consecutive-frame pairs spread over the clip, at two parameter sets given to both sides
(``TVL1Params()`` = OpenCV's defaults, and ``TVL1Params.fast()``, passed to OpenCV through
:meth:`TVL1Params.to_opencv`). Each pair is solved by ours then OpenCV (alternating), pinned to one CPU with
``NUMBA_NUM_THREADS=1`` and ``cv2.setNumThreads(1)``; one warm-up pair per parameter set is not counted. Times
are CPU milliseconds (``time.process_time``) per pair, median (min-max) over the clip's pairs; the end-point
error (EPE) between the two flows of each pair shows both solve the same problem. A planted-flow check (a known
smooth flow warped into a vtest frame) gives each solver's error against the truth.

Usage: ``python bench/bench_tvl1.py [--pairs 3] [--no-write]``; updates the ``## tvl1`` section of
``bench/RESULTS.md`` with rows for README table ``speed`` (``tvl1-default``, ``tvl1-fast``).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

os.environ["NUMBA_NUM_THREADS"] = "1"

import cv2  # noqa: E402
import numpy as np  # noqa: E402

from idtfv.idt.flow import TVL1Params, estimate_flow, estimate_flow_batch, gpu_available  # noqa: E402

from _results import machine, readme_row, write_section  # noqa: E402  (bench/ is the script's directory)

SECTION = "## tvl1"
VIDEOS = Path(__file__).resolve().parents[1].parent / "shared" / "reference" / "videos"
VIDEO = VIDEOS / "vtest_320x240.avi"
CLIPS = ("vtest_320x240.avi", "bikes_320x240.avi", "person01_boxing_d1_uncomp.avi", "tree.avi",
         "carphone_pristine.mp4")
PARAM_SETS = (("default", "OpenCV's defaults", TVL1Params()), ("fast", "fast preset", TVL1Params.fast()))


def load_pairs(n_pairs: int, video: Path = VIDEO):
    """``n_pairs`` consecutive-frame gray pairs spread over the clip (uint8)."""
    cap = cv2.VideoCapture(str(video))
    frames = []
    while True:
        ok, f = cap.read()
        if not ok:
            break
        frames.append(cv2.cvtColor(f, cv2.COLOR_BGR2GRAY))
    cap.release()
    if len(frames) < 2:
        sys.exit(f"error: {video}: cannot read frames (is ../shared present?)")
    starts = np.linspace(min(10, len(frames) - 2), len(frames) - 2, n_pairs).astype(int)
    return [(frames[s], frames[s + 1]) for s in starts]


def time_one(fn, a, b):
    t = time.perf_counter()
    out = fn(a, b)
    return (time.perf_counter() - t) * 1e3, out


def planted_pair(frame):
    """(i0, i1, truth): ``frame`` as :math:`I_1` and :math:`I_0(x) = I_1(x + u(x))` for a smooth flow of <= 2.5 px."""
    h, w = frame.shape
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    u = 1.5 * np.sin(2 * np.pi * yy / h) + 0.8 * np.cos(2 * np.pi * xx / w)
    v = 1.2 * np.cos(2 * np.pi * (xx + yy) / (h + w)) - 0.5
    i1 = frame.astype(np.float32)
    i0 = cv2.remap(i1, xx + u, yy + v, cv2.INTER_CUBIC, borderMode=cv2.BORDER_REFLECT)
    return np.clip(np.rint(i0), 0, 255).astype(np.uint8), frame, np.stack([u, v], axis=-1)


def planted_epe(frame, params: TVL1Params, margin: int = 8):
    """Mean EPE against the planted truth (away from the border) for ours and OpenCV."""
    a, b, truth = planted_pair(frame)
    inner = (slice(margin, -margin), slice(margin, -margin))
    ours = estimate_flow(a, b, backend="cpu", params=params)
    theirs = params.to_opencv().calc(a, b, None)
    return (float(np.linalg.norm(ours - truth, axis=-1)[inner].mean()),
            float(np.linalg.norm(theirs - truth, axis=-1)[inner].mean()))


def race(pairs, params: TVL1Params):
    """Alternating ours / OpenCV on each pair: CPU ms lists and the per-pair mean EPE between the two flows."""
    cv = params.to_opencv()
    ours_ms, cv_ms, epes = [], [], []
    for a, b in pairs:
        c = time.process_time()
        f0 = estimate_flow(a, b, backend="cpu", params=params)
        ours_ms.append((time.process_time() - c) * 1e3)
        c = time.process_time()
        f1 = cv.calc(a, b, None)
        cv_ms.append((time.process_time() - c) * 1e3)
        epes.append(float(np.linalg.norm(f0 - f1, axis=-1).mean()))
    return np.array(ours_ms), np.array(cv_ms), np.array(epes)


def run_gpu(pairs, batch: int = 32):
    """GPU frames/s (batches of ``batch`` pairs) at 320x240 and 640x480, and the mean EPE to the CPU flow."""
    import cupy as cp

    rows = []
    for size in ((320, 240), (640, 480)):
        prevs = [cv2.resize(a, size, interpolation=cv2.INTER_LINEAR) for a, _ in pairs]
        nexts = [cv2.resize(b, size, interpolation=cv2.INTER_LINEAR) for _, b in pairs]
        reps = -(-batch // len(prevs))
        prevs, nexts = (prevs * reps)[:batch], (nexts * reps)[:batch]
        for name, params in (("default", TVL1Params()), ("fast", TVL1Params.fast())):
            estimate_flow_batch(prevs[:2], nexts[:2], backend="gpu", params=params)  # compile, warm up
            cp.cuda.Device().synchronize()
            t = time.perf_counter()
            flows = estimate_flow_batch(prevs, nexts, backend="gpu", params=params)
            fps = batch / (time.perf_counter() - t)
            cpu = estimate_flow(prevs[0], nexts[0], backend="cpu", params=params)
            epe = float(np.linalg.norm(flows[0] - cpu, axis=-1).mean())
            rows.append((f"{size[0]}x{size[1]}", name, batch, fps, epe))
            print(f"GPU {size[0]}x{size[1]} {name:8s} batch {batch}: {fps:8.1f} frames/s  EPE(GPU, CPU) {epe:.2g} px")
    return rows


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pairs", type=int, default=3, help="frame pairs per clip (default 3)")
    ap.add_argument("--no-write", action="store_true", help="do not update bench/RESULTS.md")
    args = ap.parse_args(argv)
    if not hasattr(cv2, "optflow"):
        print("bench_tvl1: skipped: OpenCV without contrib (cv2.optflow) is installed")
        return 0
    clips = [VIDEOS / c for c in CLIPS if (VIDEOS / c).is_file()]
    if not clips:
        print(f"bench_tvl1: skipped: no shared clips in {VIDEOS}")
        return 0
    cv2.setNumThreads(1)
    cpu = min(os.sched_getaffinity(0))
    os.sched_setaffinity(0, {cpu})
    load = os.getloadavg()
    pairs = {c.stem: load_pairs(args.pairs, c) for c in clips}
    t = time.perf_counter()
    estimate_flow(pairs[clips[0].stem][0][0], pairs[clips[0].stem][0][1], backend="cpu", params=TVL1Params.fast())
    warm = time.perf_counter() - t
    results = {}  # (set key, clip) -> (ours ms, OpenCV ms, EPE)
    for key, _, params in PARAM_SETS:
        a, b = pairs[clips[0].stem][0]
        race([(a, b)], params)  # warm-up, not counted
        for clip, ps in pairs.items():
            o, c, e = race(ps, params)
            results[key, clip] = (o, c, e)
            h, w = ps[0][0].shape
            print(f"{key:8s} {clip:28s} {w}x{h}: ours {np.median(o):8.1f} ms ({o.min():.1f}-{o.max():.1f})  OpenCV "
                  f"{np.median(c):8.1f} ms ({c.min():.1f}-{c.max():.1f})  ratio {np.median(c) / np.median(o):5.2f}x  "
                  f"EPE(ours, OpenCV) {e.mean():.2g} px (worst pair {e.max():.2g})", flush=True)
    planted = {key: planted_epe(pairs[clips[0].stem][len(pairs[clips[0].stem]) // 2][0], params)
               for key, _, params in PARAM_SETS}
    for key, (t_ours, t_cv) in planted.items():
        print(f"planted-truth EPE, {key}: ours {t_ours:.4f} OpenCV {t_cv:.4f} px")
    print(f"(first call incl. Numba compile/cache load: {warm:.2f} s)")
    gpu_rows = []
    if gpu_available():
        try:
            gpu_rows = run_gpu(pairs[clips[0].stem])
        except Exception as exc:  # report, keep the CPU results
            print(f"GPU benchmark failed: {type(exc).__name__}: {exc}")
    else:
        print("GPU: no CuPy/CUDA device here; GPU rows skipped")
    if not args.no_write:
        record_results(results, pairs, planted, args.pairs, cpu, load, gpu_rows)
    return 0


def record_results(results, pairs, planted, n_pairs: int, cpu: int, load, gpu_rows=()) -> None:
    clips = list(pairs)
    lines = [
        SECTION,
        "",
        f"`python bench/bench_tvl1.py --pairs {n_pairs}` (in-process race, {machine()}, "
        f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; one CPU (affinity {{{cpu}}}), one thread for both "
        f"(`NUMBA_NUM_THREADS=1`, `cv2.setNumThreads(1)`); load average at the start {load[0]:.1f}, {load[1]:.1f}, "
        f"{load[2]:.1f}). {n_pairs} consecutive-frame pairs spread over each shared clip, solved by ours then OpenCV "
        "`DualTVL1` (contrib) at the same parameters, one warm-up pair per parameter set not counted. CPU ms per "
        "pair, median (min-max) over the clip's pairs; EPE = mean endpoint error between the two flows (px).",
        "",
        "| what | ours | baseline | ratio |",
        "|---|---|---|---|",
    ]
    for key, label, _ in PARAM_SETS:
        o = np.concatenate([results[key, c][0] for c in clips])
        c_ = np.concatenate([results[key, c][1] for c in clips])
        per_clip = [np.median(results[key, c][1]) / np.median(results[key, c][0]) for c in clips]
        lines.append(readme_row("speed", f"tvl1-{key}", [
            f"TV-L1 optical flow, {label}, real frame pairs of {len(clips)} clips ({len(o)} pairs), one thread, "
            "in-process", f"{np.median(o):.1f} ms/pair", f"OpenCV DualTVL1 {np.median(c_):.1f} ms/pair",
            f"{np.median(c_) / np.median(o):.2f}x (per clip {min(per_clip):.2f}–{max(per_clip):.2f})"]))
    lines += ["", "| parameters | clip | size | ours ms | OpenCV DualTVL1 ms | ratio | EPE ours vs OpenCV (px), mean "
                  "(worst pair) |", "|---|---|---|---:|---:|---:|---:|"]
    for key, label, _ in PARAM_SETS:
        for clip in clips:
            o, c_, e = results[key, clip]
            h, w = pairs[clip][0][0].shape
            lines.append(f"| {label} | {clip} | {w}x{h} | {np.median(o):.1f} ({o.min():.1f}–{o.max():.1f}) | "
                         f"{np.median(c_):.1f} ({c_.min():.1f}–{c_.max():.1f}) | {np.median(c_) / np.median(o):.2f}x | "
                         f"{e.mean():.2g} ({e.max():.2g}) |")
    lines += ["", f"Planted flow (a smooth flow of <= 2.5 px warped into a frame of {clips[0]}), mean EPE against the "
                  "truth, "
                  "ours / OpenCV: " + "; ".join(f"{label} {planted[key][0]:.4f} / {planted[key][1]:.4f} px"
                                                for key, label, _ in PARAM_SETS) + "."]
    if gpu_rows:
        lines += ["", "GPU (CuPy, batches of frame pairs solved together):", "",
                  "| size | parameters | batch | frames/s | EPE GPU vs CPU (px) |", "|---|---|---:|---:|---:|"]
        lines += [f"| {size} | {name} | {batch} | {fps:.1f} | {epe:.2g} |" for size, name, batch, fps, epe in gpu_rows]
    else:
        lines += ["", "GPU: not measured (no CUDA device in the session that ran this). The CUDA kernels' results were "
                      "checked without one: `tests/test_tvl1_gpu.py` compiles the same CUDA C for the CPU "
                      "(`tests/_cuda_on_cpu.py`) and gets flow bit-identical to the Numba solver."]
    text = "\n".join(lines) + "\n"
    write_section(SECTION, text)


if __name__ == "__main__":
    sys.exit(main())
