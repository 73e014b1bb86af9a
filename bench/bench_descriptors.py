"""Benchmark: descriptor integral histograms (HOG, HOF, MBHx, MBHy) over a 6-scale 320x240 pyramid, Numba vs a
plain vectorised NumPy version measured in the same run, the per-point block look-ups for 6,000 points, and the
camera's flow-match corners (``cv2.goodFeaturesToTrack`` against :func:`idtfv.idt.camera.good_features`, which
reuses the dense sampling's corner response of the frame).

Usage: ``python bench/bench_descriptors.py [--repeat 20] [--no-write]``; appends/updates the ``## descriptors``
section of ``bench/RESULTS.md``.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

os.environ.setdefault("NUMBA_NUM_THREADS", "1")

import cv2  # noqa: E402
import numpy as np  # noqa: E402

from idtfv.idt.camera import good_features  # noqa: E402
from idtfv.idt.descriptors import (DescriptorLayout, cell_descriptor_rows, cell_descriptors,  # noqa: E402
                                   frame_histograms)
from idtfv.idt.sampling import corner_response  # noqa: E402

from _results import machine, write_section  # noqa: E402  (bench/ is the script's directory)

SECTION = "## descriptors"


# ------------------------------------------------------------------------------------------- NumPy baseline
def _np_orient_integral(u, v, nbins, zero_thr=None):
    h, w = u.shape
    mag = np.sqrt(u.astype(np.float32) ** 2 + v.astype(np.float32) ** 2)
    f = (np.degrees(np.arctan2(v, u)) % 360.0) * (nbins / 360.0)
    b0 = np.floor(f).astype(np.int64) % nbins
    frac = (f - np.floor(f)).astype(np.float32)
    nb = nbins + (zero_thr is not None)
    w0, w1 = mag * (1 - frac), mag * frac
    if zero_thr is not None:
        zero = mag <= zero_thr
        w0 = np.where(zero, 1.0, w0)
        w1 = np.where(zero, 0.0, w1)
        b0 = np.where(zero, nbins, b0)
    base = np.arange(h * w) * nb
    hist = np.bincount((base + b0.ravel()), w0.ravel(), minlength=h * w * nb)
    hist += np.bincount((base + (b0.ravel() + 1) % nbins), w1.ravel(), minlength=h * w * nb)
    out = np.zeros((h + 1, w + 1, nb), np.float32)
    out[1:, 1:] = hist.reshape(h, w, nb).cumsum(0).cumsum(1)
    return out


def numpy_frame_histograms(gray, flow, layout=DescriptorLayout()):
    def grad(img):
        return cv2.Sobel(img, cv2.CV_32F, 1, 0, ksize=1), cv2.Sobel(img, cv2.CV_32F, 0, 1, ksize=1)

    fx, fy = np.ascontiguousarray(flow[..., 0]), np.ascontiguousarray(flow[..., 1])
    return (
        _np_orient_integral(*grad(gray), layout.hog_bins),
        _np_orient_integral(fx, fy, layout.hof_bins - 1, layout.min_flow),
        _np_orient_integral(*grad(fx), layout.mbh_bins),
        _np_orient_integral(*grad(fy), layout.mbh_bins),
    )


# ------------------------------------------------------------------------------------------- inputs
def make_pyramid(seed=0, w=320, h=240, patch=32):
    rng = np.random.default_rng(seed)
    gray = cv2.GaussianBlur(rng.random((h, w)).astype(np.float32) * 255, (0, 0), 1.0)
    flow = cv2.GaussianBlur(rng.normal(scale=10.0, size=(h, w, 2)).astype(np.float32), (0, 0), 3.0)
    levels = []
    s = 1.0
    while min(h * s, w * s) >= patch:
        size = (int(round(w * s)), int(round(h * s)))
        levels.append((cv2.resize(gray, size, interpolation=cv2.INTER_AREA),
                       (cv2.resize(flow, size, interpolation=cv2.INTER_AREA) * s).astype(np.float32)))
        s /= np.sqrt(2.0)
    return levels


def best_ms(fn, repeat):
    fn()
    times = []
    for _ in range(repeat):
        t = time.process_time()
        fn()
        times.append(time.process_time() - t)
    return 1e3 * float(np.median(times)), 1e3 * min(times)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=20)
    ap.add_argument("--points", type=int, default=6000)
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args(argv)

    levels = make_pyramid()
    ours = best_ms(lambda: [frame_histograms(g, f) for g, f in levels], args.repeat)
    bufs = [frame_histograms(g, f) for g, f in levels]
    reuse = best_ms(lambda: [frame_histograms(g, f, out=b) for (g, f), b in zip(levels, bufs)], args.repeat)
    base = best_ms(lambda: [numpy_frame_histograms(g, f) for g, f in levels], max(3, args.repeat // 4))
    # correctness guard: both versions agree on the finest level
    a, b = frame_histograms(*levels[0]), numpy_frame_histograms(*levels[0])
    err = max(float(np.abs(x[-1, -1].astype(np.float64) - y[-1, -1]).max() / (np.abs(y[-1, -1]).max() + 1))
              for x, y in zip(a, b))

    rng = np.random.default_rng(1)
    hists = frame_histograms(*levels[0])
    pts = (rng.random((args.points, 2)) * [320, 240]).astype(np.float32)
    gather = best_ms(lambda: cell_descriptors(hists, pts), args.repeat)
    rows = best_ms(lambda: cell_descriptor_rows(hists, pts), args.repeat)

    frame = np.clip(levels[0][0], 0, 255).astype(np.uint8)
    corner_response(frame)  # as the dense sampling of this frame did
    cv_corners = best_ms(lambda: cv2.goodFeaturesToTrack(frame, 1000, 0.001, 3), args.repeat)
    our_corners = best_ms(lambda: good_features(frame, 1000, 0.001, 3.0), args.repeat)
    same = np.array_equal(cv2.goodFeaturesToTrack(frame, 1000, 0.001, 3).reshape(-1, 2),
                          good_features(frame, 1000, 0.001, 3.0))

    lines = [
        SECTION,
        "",
        f"`python bench/bench_descriptors.py` ({machine()}, one thread, CPU time, "
        f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}). Median (min) ms.",
        "",
        "| what | Numba | NumPy baseline | speed-up |",
        "|---|---|---|---|",
        f"| 4 integral histograms, {len(levels)}-scale 320x240 pyramid | {ours[0]:.1f} ({ours[1]:.1f}) | "
        f"{base[0]:.1f} ({base[1]:.1f}) | {base[0] / ours[0]:.1f}x |",
        f"| same, reusing the previous frame's arrays (`out=`) | {reuse[0]:.1f} ({reuse[1]:.1f}) | "
        f"{base[0]:.1f} ({base[1]:.1f}) | {base[0] / reuse[0]:.1f}x |",
        f"| `cell_descriptors`, {args.points} points, 4 descriptors | {gather[0]:.1f} ({gather[1]:.1f}) | | |",
        f"| `cell_descriptor_rows` (one array), same points | {rows[0]:.1f} ({rows[1]:.1f}) | | |",
        f"| flow-match corners of the 320x240 frame, response remembered (`cv2.goodFeaturesToTrack` in the "
        f"baseline column) | {our_corners[0]:.2f} ({our_corners[1]:.2f}) | {cv_corners[0]:.2f} ({cv_corners[1]:.2f}) "
        f"| {cv_corners[0] / our_corners[0]:.1f}x |",
        "",
        f"Largest relative difference of whole-image totals, Numba vs NumPy: {err:.1e}. Corners identical to "
        f"OpenCV's (same points, same order): {same}.",
        "",
    ]
    text = "\n".join(lines)
    print(text)
    if not args.no_write:
        write_section(SECTION, text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
