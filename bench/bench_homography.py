"""Benchmark: what the camera's keypoints buy. The homography of each frame pair fitted from the flow matches plus
AKAZE keypoint matches (the default, SURF's stand-in), ORB or SIFT keypoint matches, or the flow matches alone
(``--matcher flow``, the fast preset's), against planted truth, with each matcher's cost.

Planted truth. Two static-camera clips of the shared set (vtest 320x240, KTH boxing 160x120; their people move)
are filmed again by a virtual camera: frame t is the source frame, upscaled 2x (bicubic), seen through the
homography :math:`A_t` (a view of 0.8 of the source, rotated, zoomed and moved along a smooth random walk, seeded),
so a background point at :math:`x_{t-1}` in frame t-1 is at :math:`A_t^{-1} A_{t-1} x_{t-1}` in frame t: that is
the camera homography each fit should find (the people's own motion is what RANSAC must reject). Three camera
speeds (the walk's step scale), 120 frames each. Error = mean distance, over a 5x5 grid of frame points, between
where the fitted and the true homography send them (px; a rejected fit is the identity). The flow is the
extractor's (``FarnebackPyramidFlow``, default options, finest level), the fit the extractor's
(:class:`idtfv.idt.camera.CameraMotion` with ``IDTParams(matcher=M).camera()``); cost = CPU ms per frame of the
camera step (keypoints of the new frame, matching, corners, RANSAC), in-process, one thread.

Real clips. The same comparison on the reference's output cannot use truth; the fidelity of the whole extraction
to LEAR's shipped trajectories (count ratio, per-block mean-profile correlation, as ``bench_reference.py``) per
matcher, on the four clips with LEAR output (carphone is the one with a moving camera).

Usage: ``python bench/bench_homography.py [--frames 120] [--no-write]``; updates the ``## homography`` section of
``bench/RESULTS.md``.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _results import byte_compile_package, publish, stamp  # noqa: E402  (bench/ is the script's directory)
from bench_reference import BLOCKS, compare  # noqa: E402

SECTION = "## homography"
SHARED = Path(__file__).resolve().parents[2] / "shared" / "reference"
SOURCES = {"vtest": "vtest_320x240.avi", "kth": "person01_boxing_d1_uncomp.avi"}
MATCHERS = ("akaze", "orb", "sift", "flow")
#: virtual camera: per-frame step scale of the walk's translation (source px) -> label
SPEEDS = {0.6: "slow", 3.0: "medium", 8.0: "fast"}
#: clips with LEAR output: name -> (video, frames to extract or None for all, LEAR file)
FIDELITY = {
    "vtest 0-200": ("vtest_320x240.avi", 201, "vtest_320x240_frames0-200.txt.gz"),
    "KTH boxing": ("person01_boxing_d1_uncomp.avi", None, "person01_boxing_d1_uncomp.txt.gz"),
    "tree": ("tree.avi", None, "tree.txt.gz"),
    "carphone (moving camera)": ("carphone_pristine.mp4", None, "carphone_pristine.txt.gz"),
}


def read_grey(path: Path, n: int) -> list[np.ndarray]:
    import cv2

    cap = cv2.VideoCapture(str(path))
    out = []
    while len(out) < n:
        ok, frame = cap.read()
        if not ok:
            break
        out.append(cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY))
    cap.release()
    return out


def camera_path(n: int, width: int, height: int, speed: float, seed: int) -> list[np.ndarray]:
    """Homographies ``A_t`` (3, 3) from view pixels to the 2x-upscaled source: a smooth random walk of translation
    (step scale ``speed`` source px), rotation and log-zoom, the view covering 0.8 of the source."""
    rng = np.random.default_rng(seed)
    vel = np.zeros(4)
    pos = np.zeros(4)
    out = []
    for _ in range(n):
        vel = 0.9 * vel + rng.normal(0.0, [speed, speed, 0.0012 * speed, 0.0015])
        pos = pos + vel
        tx, ty, theta, log_zoom = pos
        s = 2.0 * 0.8 * np.exp(log_zoom)
        c, si = np.cos(theta), np.sin(theta)
        # view centre -> source centre (width, height of the 2x source) + translation, rotated and scaled
        out.append(np.array([[s * c, -s * si, width + tx - s * (c * width / 2 - si * height / 2)],
                             [s * si, s * c, height + ty - s * (si * width / 2 + c * height / 2)],
                             [0.0, 0.0, 1.0]]))
    return out


def planted_clip(frames: list[np.ndarray], speed: float, seed: int):
    """The frames seen by the virtual camera and the true homographies from frame t-1 to t."""
    import cv2

    h, w = frames[0].shape
    path = camera_path(len(frames), w, h, speed, seed)
    clip = [cv2.warpPerspective(cv2.resize(f, (2 * w, 2 * h), interpolation=cv2.INTER_CUBIC), a, (w, h),
                                flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP, borderMode=cv2.BORDER_REFLECT)
            for f, a in zip(frames, path)]
    truth = [np.linalg.inv(path[t]) @ path[t - 1] for t in range(1, len(frames))]
    return clip, truth


def grid_error(fitted: np.ndarray, true: np.ndarray, width: int, height: int) -> float:
    xs, ys = np.meshgrid(np.linspace(0, width - 1, 5), np.linspace(0, height - 1, 5))
    pts = np.stack([xs.ravel(), ys.ravel(), np.ones(25)])
    a = fitted @ pts
    b = true @ pts
    return float(np.mean(np.hypot(*(a[:2] / a[2] - b[:2] / b[2]))))


def flows_of(clip: list[np.ndarray]) -> list[np.ndarray]:
    """The extractor's flow (finest level) from each frame to the next."""
    from idtfv.idt import IDTParams
    from idtfv.idt.flow import FarnebackPyramidFlow
    from idtfv.idt.flow.pyramid import build_pyramid
    from idtfv.idt.pyramid import pyramid_geometry

    p = IDTParams()
    h, w = clip[0].shape
    _, sizes = pyramid_geometry(w, h, scales=p.scales, scale_factor=p.scale_factor, patch=p.patch)
    solver = FarnebackPyramidFlow()
    out = []
    for gray in clip:
        flows = solver(build_pyramid(gray, sizes))
        if flows is not None:
            out.append(flows[0])
    return out


def fit_all(clip, truth, flows, matcher: str) -> dict:
    from idtfv.idt import IDTParams
    from idtfv.idt.camera import CameraMotion

    cm = CameraMotion(IDTParams(matcher=matcher).camera())
    h, w = clip[0].shape
    cm.features(clip[0])
    errors, rejected, cpu = [], 0, 0.0
    for t in range(1, len(clip)):
        c0 = time.process_time()
        fitted, inliers, _ = cm.estimate(clip[t - 1], clip[t], flows[t - 1])
        cpu += time.process_time() - c0
        rejected += inliers == 0 or np.array_equal(fitted, np.eye(3))
        errors.append(grid_error(fitted, truth[t - 1], w, h))
    e = np.asarray(errors)
    return {"median": float(np.median(e)), "p90": float(np.percentile(e, 90)), "rejected": int(rejected),
            "ms": 1e3 * cpu / (len(clip) - 1), "pairs": len(clip) - 1}


def fidelity(tmp: Path) -> list[str]:
    from idtfv.idt.trajectories import load_trajectories

    exe = Path(sys.executable).with_name("extract-trajectories")
    env = dict(os.environ, NUMBA_NUM_THREADS="1", OMP_NUM_THREADS="1", OPENCV_FOR_THREADS_NUM="1")
    rows = []
    for label, (video, frames, lear) in FIDELITY.items():
        ref = load_trajectories(SHARED / "lear-idt" / lear)
        for matcher in MATCHERS:
            out = tmp / f"{matcher}.npz"
            subprocess.run([str(exe), str(SHARED / "videos" / video), "-q", "-o", str(out), "--matcher", matcher,
                            *(["--end", str(frames)] if frames else [])], env=env, check=True,
                           stderr=subprocess.DEVNULL)
            c = compare(ref, load_trajectories(out))
            rows.append(f"| {label} | {matcher} | {c['ratio']:.3f} | " + " | ".join(f"{c[b]:.3f}" for b in BLOCKS)
                        + " |")
    return rows


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--frames", type=int, default=120, help="frames per planted clip")
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--no-write", action="store_true", help="print, do not update bench/RESULTS.md")
    args = ap.parse_args(argv)
    byte_compile_package()  # .pyc files, as an installed package has (see _results)
    if not (SHARED / "videos").is_dir():
        print(f"skipped: {SHARED / 'videos'} not found (the shared reference clips)")
        return 0
    os.environ.setdefault("OPENCV_FOR_THREADS_NUM", "1")
    import cv2

    cv2.setNumThreads(1)
    planted = []
    for name, video in SOURCES.items():
        frames = read_grey(SHARED / "videos" / video, args.frames)
        for speed, label in SPEEDS.items():
            clip, truth = planted_clip(frames, speed, args.seed)
            flows = flows_of(clip)
            still = float(np.median([grid_error(np.eye(3), t, clip[0].shape[1], clip[0].shape[0])
                                     for t in truth]))
            cells = []
            for matcher in MATCHERS:
                r = fit_all(clip, truth, flows, matcher)
                cells.append(f"{r['median']:.3f} / {r['p90']:.2f} / {r['rejected']} / {r['ms']:.1f}")
            planted.append(f"| {name} ({clip[0].shape[1]}x{clip[0].shape[0]}) | {label} | {still:.2f} | "
                           + " | ".join(cells) + " |")
            print(planted[-1], flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        real = fidelity(Path(tmp))
    for row in real:
        print(row)
    text = "\n".join([
        SECTION, "",
        f"`python bench/bench_homography.py --frames {args.frames}` ({stamp()}); one thread. What the camera's "
        f"keypoint matches add to the flow matches (module docstring: "
        f"static-camera clips re-filmed by a virtual camera with planted homographies, {args.frames} frames each, "
        f"seed {args.seed}; error = mean grid-point distance between the fitted and the true homography).", "",
        "Planted truth: each cell is median error px / 90th percentile px / fits rejected (identity) / camera step "
        "CPU ms per frame (in-process: keypoints of the new frame, matching, the flow matches' corners, RANSAC).", "",
        "| clip | camera speed | camera's own motion (error of the identity) px | "
        + " | ".join(f"{m}{' (default)' if m == 'akaze' else ''}" for m in MATCHERS) + " |",
        "|---|---|---|" + "---|" * len(MATCHERS),
        *planted, "",
        "Real clips, whole extraction with each `--matcher` against LEAR's shipped output (no truth: closeness to "
        "the reference, whose keypoints are SURF): count ratio ours / LEAR and per-block mean-profile correlation.",
        "",
        "| clip | matcher | count ratio | " + " | ".join(BLOCKS) + " |",
        "|---|---|---|" + "---|" * len(BLOCKS),
        *real,
    ])
    publish(SECTION, text, write=not args.no_write)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
