"""Benchmark: our TV-L1 (Numba, one thread) against OpenCV's ``DualTVL1`` (one thread) on 320x240 frame pairs.

Both run in the same process on the same pairs of ``../shared/reference/videos/vtest_320x240.avi``: OpenCV's
default parameters on both sides (``TVL1Params()`` = OpenCV's defaults), then the fast preset on both sides
(``TVL1Params.fast()`` given to OpenCV too). Prints ms/pair (median over pairs), the speed ratio and the mean
endpoint error between the two flows.

Usage: ``python bench/bench_tvl1.py [--pairs 5] [--no-write]``; appends/updates the ``## tvl1`` section of
``bench/RESULTS.md``.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path

os.environ["NUMBA_NUM_THREADS"] = "1"

import cv2  # noqa: E402
import numpy as np  # noqa: E402

from idtfv.idt.flow import TVL1Params, estimate_flow, estimate_flow_batch, gpu_available  # noqa: E402

from _results import write_section  # noqa: E402  (bench/ is the script's directory)

SECTION = "## tvl1"
VIDEO = Path(__file__).resolve().parents[1].parent / "shared" / "reference" / "videos" / "vtest_320x240.avi"


def load_pairs(n_pairs: int):
    """``n_pairs`` consecutive-frame gray pairs spread over the clip (320x240 uint8)."""
    cap = cv2.VideoCapture(str(VIDEO))
    frames = []
    while True:
        ok, f = cap.read()
        if not ok:
            break
        frames.append(cv2.cvtColor(f, cv2.COLOR_BGR2GRAY))
    cap.release()
    if len(frames) < 2:
        sys.exit(f"error: {VIDEO}: cannot read frames (is ../shared present?)")
    starts = np.linspace(10, len(frames) - 2, n_pairs).astype(int)
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


def run(pairs, params: TVL1Params):
    cv = params.to_opencv()
    ours_ms, cv_ms, epes = [], [], []
    for a, b in pairs:
        t0, f0 = time_one(lambda x, y: estimate_flow(x, y, backend="cpu", params=params), a, b)
        t1, f1 = time_one(lambda x, y: cv.calc(x, y, None), a, b)
        ours_ms.append(t0)
        cv_ms.append(t1)
        epes.append(float(np.linalg.norm(f0 - f1, axis=-1).mean()))
    return float(np.median(ours_ms)), float(np.median(cv_ms)), float(np.mean(epes)), float(np.max(epes))


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
    ap.add_argument("--pairs", type=int, default=5, help="frame pairs (default 5)")
    ap.add_argument("--no-write", action="store_true", help="do not update bench/RESULTS.md")
    args = ap.parse_args(argv)
    cv2.setNumThreads(1)
    pairs = load_pairs(args.pairs)
    t = time.perf_counter()
    estimate_flow(pairs[0][0], pairs[0][1], backend="cpu", params=TVL1Params.fast())  # compile / load cache
    warm = time.perf_counter() - t
    rows = []
    for name, params in (("default (OpenCV defaults)", TVL1Params()), ("fast preset", TVL1Params.fast())):
        ours, theirs, epe, epe_max = run(pairs, params)
        t_ours, t_cv = planted_epe(pairs[len(pairs) // 2][0], params)
        rows.append((name, ours, theirs, theirs / ours, epe, epe_max, t_ours, t_cv))
        print(f"{name:28s} ours {ours:8.1f} ms/pair  OpenCV {theirs:8.1f} ms/pair  speed-up {theirs / ours:5.2f}x  "
              f"EPE(ours, OpenCV) mean {epe:.2g} px (worst pair {epe_max:.2g}); planted-truth EPE ours "
              f"{t_ours:.4f} OpenCV {t_cv:.4f} px")
    print(f"(first call incl. Numba compile/cache load: {warm:.2f} s)")
    gpu_rows = []
    if gpu_available():
        try:
            gpu_rows = run_gpu(pairs)
        except Exception as exc:  # report, keep the CPU results
            print(f"GPU benchmark failed: {type(exc).__name__}: {exc}")
    else:
        print("GPU: no CuPy/CUDA device here; GPU rows skipped")
    if not args.no_write:
        record_results(rows, len(pairs), gpu_rows)
    return 0


def record_results(rows, n_pairs: int, gpu_rows=()) -> None:
    lines = [
        SECTION,
        "",
        f"`python bench/bench_tvl1.py` ({platform.processor() or platform.machine()}, one thread for both "
        f"(NUMBA_NUM_THREADS=1, cv2.setNumThreads(1)), {n_pairs} pairs of vtest_320x240, "
        f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}). Median ms per 320x240 pair; EPE = mean endpoint "
        "error between our flow and OpenCV's at the same parameters; planted = mean EPE against a known smooth flow "
        "(<= 2.5 px) planted into a vtest frame, ours / OpenCV.",
        "",
        "| parameters | ours ms | OpenCV DualTVL1 ms | speed-up | EPE ours vs OpenCV (px) "
        "| planted EPE ours / OpenCV (px) |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for name, ours, theirs, ratio, epe, epe_max, t_ours, t_cv in rows:
        lines.append(f"| {name} | {ours:.1f} | {theirs:.1f} | {ratio:.2f}x | {epe:.2g} (worst pair {epe_max:.2g}) "
                     f"| {t_ours:.4f} / {t_cv:.4f} |")
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
