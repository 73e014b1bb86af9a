"""Benchmark: Farnebäck flow over a 6-level 320x240 sqrt(2) pyramid, idtfv.idt.flow.FarnebackPyramidFlow (expansions
reused across frames) vs OpenCV's calcOpticalFlowFarneback called per level coarse to fine, in the same run, one
thread; plus the end-point error of both on planted flows.

Usage: ``python bench/bench_farneback.py [--frames 20] [--no-write]``; updates the ``## farneback`` section of
``bench/RESULTS.md``.
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

from idtfv.idt.flow import FarnebackPyramidFlow  # noqa: E402

from _results import write_section  # noqa: E402  (bench/ is the script's directory)

cv2.setNumThreads(1)
REAL_VIDEO = Path(__file__).resolve().parents[2] / "shared" / "reference" / "videos" / "vtest_320x240.avi"
SECTION = "## farneback"
H, W, LEVELS = 240, 320, 6
PARAMS = dict(pyr_scale=0.5, levels=0, winsize=10, iterations=2, poly_n=7, poly_sigma=1.5)


def pyramid(img):
    levels = [img]
    for i in range(1, LEVELS):
        f = np.sqrt(2.0) ** i
        levels.append(cv2.resize(levels[-1], (int(round(W / f)), int(round(H / f))), interpolation=cv2.INTER_LINEAR))
    return levels


def opencv_flows(p1, p2, gaussian):
    flags = cv2.OPTFLOW_USE_INITIAL_FLOW | (cv2.OPTFLOW_FARNEBACK_GAUSSIAN if gaussian else 0)
    out, init = [None] * len(p1), None
    for i in range(len(p1) - 1, -1, -1):
        h, w = p1[i].shape
        f = np.zeros((h, w, 2), np.float32)
        if init is not None:
            f = np.ascontiguousarray(cv2.resize(init, (w, h)) * np.float32([w / init.shape[1], h / init.shape[0]]))
        f = cv2.calcOpticalFlowFarneback(p1[i], p2[i], f, flags=flags, **PARAMS)
        f = np.dstack([cv2.medianBlur(np.ascontiguousarray(f[..., c]), 5) for c in range(2)])
        out[i] = init = f
    return out


def video(n, seed=0):
    """A textured scene under a slowly varying smooth motion: frames and the true flow of each pair."""
    rng = np.random.default_rng(seed)
    big = cv2.GaussianBlur(rng.random((H + 80, W + 80)).astype(np.float32), (0, 0), 2.0)
    big = cv2.normalize(big, None, 0, 255, cv2.NORM_MINMAX)
    yy, xx = np.mgrid[:H, :W].astype(np.float32)
    frames, truths = [big[40:40 + H, 40:40 + W].copy()], []
    for k in range(n):
        d = np.stack([2.0 * np.sin(xx / 40 + 0.3 * k) + 0.5, 1.5 * np.cos(yy / 50 - 0.2 * k)], -1).astype(np.float32)
        frames.append(cv2.remap(big, xx + 40 - d[..., 0], yy + 40 - d[..., 1], cv2.INTER_CUBIC))
        truths.append(d)
    return frames, truths


def real_video_check(n):
    """On the first n frames of vtest_320x240.avi (if ../shared is present): time per frame and agreement with
    OpenCV (Gaussian window both), mean |ours - OpenCV| at level 0 over all pixels and over moving ones."""
    if not REAL_VIDEO.exists():
        return None
    cap = cv2.VideoCapture(str(REAL_VIDEO))
    pyrs = []
    while len(pyrs) < n + 1:
        ok, frame = cap.read()
        if not ok:
            break
        pyrs.append(pyramid(cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY).astype(np.float32)))
    fp = FarnebackPyramidFlow()
    fp(pyrs[0])
    t_o, t_c, diff, diff_moving, mag = [], [], [], [], []
    for k in range(1, len(pyrs)):
        t = time.process_time()
        fo = fp(pyrs[k])
        t_o.append(time.process_time() - t)
        t = time.process_time()
        fc = opencv_flows(pyrs[k - 1], pyrs[k], True)
        t_c.append(time.process_time() - t)
        e = np.sqrt(((fo[0] - fc[0]) ** 2).sum(-1))
        m = np.sqrt((fc[0] ** 2).sum(-1))
        diff.append(e.mean())
        if (m > 0.5).any():
            diff_moving.append(e[m > 0.5].mean())
        mag.append(m.mean())
    return (len(pyrs) - 1, 1e3 * np.median(t_o), 1e3 * np.median(t_c), float(np.mean(diff)),
            float(np.mean(diff_moving)), float(np.mean(mag)))


def epe(f, d, m=16):
    return float(np.sqrt(((f - d) ** 2).sum(-1))[m:-m, m:-m].mean())


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, default=20)
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args(argv)

    frames, truths = video(args.frames)
    # planted pairs are all against frame 0: pair k = (frame 0, frame k+1)
    pyrs = [pyramid(f) for f in frames]
    rows = []
    for window, gaussian in [("gaussian", True), ("box", False)]:
        fp = FarnebackPyramidFlow(window=window)
        fp(pyrs[0])  # warm-up: compile, expand frames 0 and 1, solve
        fp(pyrs[1])
        t_ours, t_ours2, t_cv, e_ours, e_cv = [], [], [], [], []
        for k in range(args.frames):
            # "one flow per frame": expand the new frame, solve (previous frame's expansion reused)
            fp.reset()
            fp(pyrs[0])
            t = time.process_time()
            fo = fp(pyrs[k + 1])
            t_ours.append(time.process_time() - t)
            # "two flows per frame" (original + camera-compensated): expand 2 frames, solve twice (from frame 0,
            # the frame the last flows started from)
            t = time.process_time()
            fp.flow_from_previous(pyrs[k + 1])
            fp.flow_from_previous(pyrs[k + 1])
            t_ours2.append(time.process_time() - t)
            t = time.process_time()
            fc = opencv_flows(pyrs[0], pyrs[k + 1], gaussian)
            t_cv.append(time.process_time() - t)
            e_ours.append(epe(fo[0], truths[k]))
            e_cv.append(epe(fc[0], truths[k]))
        ms = lambda v: 1e3 * float(np.median(v))  # noqa: E731
        rows.append((window, ms(t_ours), ms(t_ours2), ms(t_cv), float(np.mean(e_ours)), float(np.mean(e_cv))))

    lines = [
        SECTION,
        "",
        f"`python bench/bench_farneback.py` (one thread, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}): "
        f"{LEVELS}-level 320x240 pyramid, poly_n 7, poly_sigma 1.5, winsize 10, 2 iterations, 5x5 median; "
        f"median CPU ms (process time) over {args.frames} frame pairs; EPE (px) at level 0 on planted smooth flows (|d| up to 2.5 px), "
        "16-px margin excluded.",
        "",
        "| window | ours, 1 flow/frame | ours, 2 flows/frame | OpenCV per level, 1 flow | speed-up (1 flow) | "
        "speed-up (2 flows vs 2x OpenCV) | EPE ours | EPE OpenCV |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for window, o1, o2, cv, eo, ec in rows:
        lines.append(f"| {window} | {o1:.1f} | {o2:.1f} | {cv:.1f} | {cv / o1:.2f}x | {2 * cv / o2:.2f}x | "
                     f"{eo:.3f} | {ec:.3f} |")
    real = real_video_check(args.frames)
    if real is not None:
        n, o, c, d_all, d_mov, mag = real
        lines += ["", f"Real video (`vtest_320x240.avi`, first {n} frame pairs, Gaussian window): ours {o:.1f} ms, "
                  f"OpenCV {c:.1f} ms per frame ({c / o:.2f}x); mean |ours - OpenCV| at level 0 = {d_all:.3f} px over "
                  f"all pixels, {d_mov:.3f} px where OpenCV's |flow| > 0.5 px (mean |flow| {mag:.3f} px)."]
    lines += ["", "\"1 flow/frame\" counts one new expansion per frame (the previous frame's is cached); \"2 flows\" "
              "adds the camera-compensated frame's expansion and solve.", ""]
    text = "\n".join(lines)
    print(text)
    if not args.no_write:
        write_section(SECTION, text)
    return 0



if __name__ == "__main__":
    sys.exit(main())
