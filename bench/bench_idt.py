#!/usr/bin/env python3
"""Benchmark of the iDT extractor on ``vtest_320x240.avi`` (one core), with fidelity against LEAR's output.

Each configuration runs in its own child process (so peak RSS is its own), pinned to one thread
(``NUMBA_NUM_THREADS=1``, ``cv2.setNumThreads(1)``, BLAS threads 1):

* ``baseline``: the reference's two-pass scheme (camera-compensated flow recomputed on the warped frame,
  OpenCV Farnebäck) — the in-run baseline the others are compared with;
* ``default``: :class:`idt.IDTParams` defaults;
* ``recompute``: the defaults with the second flow solve (``warp_flow="recompute"``);
* ``fast``: :meth:`idt.IDTParams.fast`; ``dis``: the fast preset with DIS flow.

It prints frames/s, the ratio to the baseline and to the C++ reference's stated 5.35 frames/s, the per-stage time
breakdown, peak RSS, the ``.npz`` size against the LEAR text of the same trajectories, fidelity against
``../shared/reference/lear-idt/vtest_320x240_frames0-200.txt.gz`` and the drift of ``fast`` from ``default``;
then it replaces the ``## idt`` section of ``bench/RESULTS.md``.

Usage: ``python bench/bench_idt.py [--frames 201] [--configs baseline,default,recompute,orb,fast] [--clips]
[--no-write]`` (configs: baseline, default, recompute, subtract, orb, fast, dis) (``--clips`` adds the fidelity of the default settings on the other reference clips, ~1 min more).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
VIDEO = SHARED / "reference" / "videos" / "vtest_320x240.avi"
REFERENCE = SHARED / "reference" / "lear-idt" / "vtest_320x240_frames0-200.txt.gz"
LEAR_FPS = 5.35  # DenseTrackStab, one core, whole vtest_320x240 (shared/README.md)
BLOCKS = ("traj", "hog", "hof", "mbhx", "mbhy")
CLIPS = (("tree", "tree.avi"), ("carphone_pristine", "carphone_pristine.mp4"),
         ("person01_boxing_d1_uncomp", "person01_boxing_d1_uncomp.avi"))


NOTES = """
Notes (how the defaults were chosen). The figures for the matcher, the Farneback window and the flow-match floor
come from development runs of the same comparison (count ratio, mean-profile correlations) on the reference clips;
rerun a variant with e.g. `idt.extract(clip, IDTParams(matcher="orb"))` and `compare()` in this script.
- `default` derives the camera-compensated flow from the first flow and H (`warp_flow="subtract"`,
  f_w(x) = H^-1(x + f(x)) - x per scale) instead of a second Farneback solve on the frame warped by H^-1
  (`recompute`, what the reference does). Same fidelity on vtest, tree and KTH boxing (within 0.002); on
  carphone (moving camera) `recompute` is closer for traj/MBHx (0.94/0.93 vs 0.85/0.88) and further for MBHy
  (0.86 vs 0.90); `subtract` saves the whole second solve (~20 % of the frame time), so it is the default.
- Farneback uses a Gaussian window (`farneback_window="gaussian"`): with OpenCV's default box window the MBH mean
  profiles correlated only 0.64-0.88 with LEAR's (and HOF/traj also lower); the Gaussian window gives 0.99+. The
  project's Numba Farneback (`idt.farneback`, expansions reused across frames) is used when importable; OpenCV's
  gives the same fidelity (baseline row) at about twice the flow time.
- SURF is absent from this OpenCV build (nonfree): the homography uses AKAZE keypoints (windowed 25 px matching)
  plus flow matches of up to 1000 goodFeaturesToTrack points. On carphone, trajectory-shape correlation was 0.85
  with AKAZE, 0.81 with flow matches alone (`matcher="flow"`, ~10x cheaper), 0.60 with ORB, 0.83 with SIFT.
- Flow matches are all kept (`flow_match_min=0`): a 0.4 px floor kept only moving points on a static camera and
  cut the KTH boxing traj correlation from 0.90 to 0.39.
- `fast` = flow-only homography (`matcher="flow"`, 2 ms instead of ~13-25 ms for AKAZE) + one flow pass + a
  cheaper Farneback (poly_n 5, sigma 1.1, one iteration): its features stay within 0.98-1.00 of the default's
  profiles on vtest. DIS flow (`dis` row) is slightly cheaper than that Farneback but its features drift
  far (MBH 0.72-0.80 here, 0.0-0.3 on tree/carphone), so it is only an option.
- The machine was shared by several engineers during these runs (load 2-10 on 2 cores): absolute frames/s are
  pessimistic and noisy (the same histogram code took 24 to 43 ms per frame in different rows and runs); compare
  rows of one run, and re-measure on an idle core for the headline against the C++ 5.35 frames/s. At load ~2,
  in-process on frames 0-200: default 19.9 frames/s, fast 26.5 frames/s (histograms 16 ms, flow 8 ms per frame).
- "LEAR text" is the same trajectories printed as LEAR prints them (6 significant digits). The float32 `.npz`
  misses the 1/4 target (~0.35: descriptor floats compress poorly); `save(..., compact=True)` / `--compact`
  stores the descriptor blocks as float16 (relative precision 5e-4) and meets it.
- Peak RSS is measured after extraction, before writing files; the pools keep per-track temporal-cell sums,
  not per-frame blocks. `idt.iter_trajectories` streams; `idt.extract` holds the video's output (~1.7 kB per
  trajectory).
"""


def _config(name: str):
    from idt import IDTParams

    return {
        "baseline": IDTParams(warp_flow="recompute", farneback_impl="opencv"),
        "default": IDTParams(),
        "recompute": IDTParams(warp_flow="recompute"),
        "subtract": IDTParams(warp_flow="subtract"),
        "orb": IDTParams(matcher="orb"),
        "fast": IDTParams.fast(),
        "dis": IDTParams.fast(flow="dis", matcher="orb", dis_preset=0, dis_finest_scale=1),
    }[name]


def run_one(name: str, frames: int, out: str) -> None:
    """Child process: extract, time, write the trajectories and a JSON summary."""
    import resource

    import cv2

    cv2.setNumThreads(1)
    import idt

    params = _config(name).replace(end=frames)
    # warm-up: compile/load the Numba kernels outside the timing
    idt.extract(VIDEO, params.replace(end=20))
    timings: dict = {}
    t0 = time.perf_counter()
    tr = idt.extract(VIDEO, params, timings=timings)
    wall = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # extraction only, before writing files
    tr.save(out + ".npz")
    tr.save(out + ".compact.npz", compact=True)
    tr.save(out + ".txt", format="lear")
    import io

    import numpy as np

    buf = io.StringIO()  # the text LEAR itself would print (6 significant digits)
    np.savetxt(buf, tr.to_lear(), fmt="%.6g", delimiter="\t")
    lear6 = len(buf.getvalue().encode())
    summary = {
        "name": name, "frames": tr.info["frames"], "wall": wall, "fps": tr.info["frames"] / wall,
        "n": len(tr), "timings": timings, "peak_rss_mb": peak,
        "npz_bytes": os.path.getsize(out + ".npz"), "txt_bytes": lear6,
        "compact_bytes": os.path.getsize(out + ".compact.npz"),
        "matcher": tr.info["matcher"], "flow_impl": tr.info["flow_impl"], "warp_flow": tr.info["warp_flow"],
    }
    Path(out + ".json").write_text(json.dumps(summary))


def compare(ref, oth) -> dict:
    import numpy as np

    out = {"ratio": len(oth) / max(len(ref), 1)}
    for b in BLOCKS:
        out[b] = float(np.corrcoef(getattr(ref, b).mean(0), getattr(oth, b).mean(0))[0, 1])
    scales = np.unique(np.round(np.concatenate([ref.meta[:, 6], oth.meta[:, 6]]), 4))
    hr = np.array([np.mean(np.isclose(ref.meta[:, 6], s, atol=1e-3)) for s in scales])
    ho = np.array([np.mean(np.isclose(oth.meta[:, 6], s, atol=1e-3)) for s in scales])
    out["scale_l1"] = float(np.abs(hr - ho).sum())
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, default=201, help="frames of vtest to process (795 = whole clip)")
    ap.add_argument("--configs", default="baseline,default,recompute,fast,dis")
    ap.add_argument("--no-write", action="store_true", help="do not update bench/RESULTS.md")
    ap.add_argument("--clips", action="store_true",
                    help="also extract the other reference clips (whole, default settings) and report fidelity")
    ap.add_argument("--one", help=argparse.SUPPRESS)
    ap.add_argument("--out", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.one:
        run_one(args.one, args.frames, args.out)
        return 0
    if not VIDEO.exists():
        print(f"skip: {VIDEO} not found (needs ../shared)")
        return 0
    env = dict(os.environ, NUMBA_NUM_THREADS="1", OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1",
               MKL_NUM_THREADS="1")
    tmp = Path(tempfile.mkdtemp(prefix="bench_idt_"))
    results = {}
    for name in args.configs.split(","):
        out = str(tmp / name)
        subprocess.run([sys.executable, __file__, "--one", name, "--frames", str(args.frames), "--out", out],
                       check=True, env=env)
        results[name] = json.loads(Path(out + ".json").read_text())

    from idt.trajectories import load_trajectories

    ref = load_trajectories(REFERENCE) if REFERENCE.exists() and args.frames == 201 else None
    trs = {name: load_trajectories(str(tmp / name) + ".npz") for name in results}
    base = results.get("baseline")
    lines = [f"vtest_320x240.avi, frames 0-{args.frames - 1} ({args.frames} frames), one thread; "
             f"C++ reference (stated): {LEAR_FPS} frames/s", ""]
    lines.append("| config | frames/s | vs baseline | vs C++ ref | trajectories | peak RSS MB | npz / LEAR text | "
                 "compact npz / LEAR text |")
    lines.append("|---|---|---|---|---|---|---|---|")
    for name, r in results.items():
        vs_base = f"{r['fps'] / base['fps']:.2f}x" if base else "-"
        lines.append(f"| {name} ({r['warp_flow']}, {r['matcher']}, {r['flow_impl']}) | {r['fps']:.2f} | {vs_base} | "
                     f"{r['fps'] / LEAR_FPS:.2f}x | {r['n']} | {r['peak_rss_mb']:.0f} | "
                     f"{r['npz_bytes'] / r['txt_bytes']:.3f} | {r['compact_bytes'] / r['txt_bytes']:.3f} |")
    lines += ["", "Per-stage time (ms per frame):", ""]
    stages = sorted({k for r in results.values() for k in r["timings"]})
    lines.append("| config | " + " | ".join(stages) + " | total |")
    lines.append("|---|" + "---|" * (len(stages) + 1))
    for name, r in results.items():
        ms = [1000 * r["timings"].get(s, 0.0) / r["frames"] for s in stages]
        lines.append(f"| {name} | " + " | ".join(f"{m:.1f}" for m in ms) + f" | {1000 * r['wall'] / r['frames']:.1f} |")
    if ref is not None:
        lines += ["", f"Fidelity vs LEAR on this excerpt ({len(ref)} reference trajectories): count ratio, "
                      "mean-profile correlation per block, scale-histogram L1 distance", "",
                  "| config | count ratio | " + " | ".join(BLOCKS) + " | scale L1 |",
                  "|---|---|" + "---|" * len(BLOCKS) + "---|"]
        for name, t in trs.items():
            c = compare(ref, t)
            lines.append(f"| {name} | {c['ratio']:.3f} | " + " | ".join(f"{c[b]:.3f}" for b in BLOCKS)
                         + f" | {c['scale_l1']:.3f} |")
    if "fast" in trs and "default" in trs:
        c = compare(trs["default"], trs["fast"])
        lines += ["", "Drift of `fast` from `default` (same measures, default as reference): count ratio "
                      f"{c['ratio']:.3f}, " + ", ".join(f"{b} {c[b]:.3f}" for b in BLOCKS)
                  + f", scale L1 {c['scale_l1']:.3f}"]
    if args.clips:
        lines += ["", "Fidelity of the default settings on every reference clip (whole clips; vtest: frames 0-200):",
                  "", "| clip | frames | LEAR trajectories | count ratio | " + " | ".join(BLOCKS) + " | scale L1 |",
                  "|---|---|---|---|" + "---|" * len(BLOCKS) + "---|"]
        import idt

        for clip, video in CLIPS:
            ref_c = load_trajectories(SHARED / "reference" / "lear-idt" / f"{clip}.txt.gz")
            t = idt.extract(SHARED / "reference" / "videos" / video, idt.IDTParams())
            c = compare(ref_c, t)
            lines.append(f"| {clip} | {t.info['frames']} | {len(ref_c)} | {c['ratio']:.3f} | "
                         + " | ".join(f"{c[b]:.3f}" for b in BLOCKS) + f" | {c['scale_l1']:.3f} |")
    text = "\n".join(lines)
    print(text)
    if not args.no_write:
        write_section(text, "NUMBA_NUM_THREADS=1 python bench/bench_idt.py" + (" --clips" if args.clips else ""))
    return 0


def write_section(body: str, command: str = "NUMBA_NUM_THREADS=1 python bench/bench_idt.py --clips") -> None:
    path = ROOT / "bench" / "RESULTS.md"
    old = path.read_text() if path.exists() else "# Benchmark results\n"
    head = "## idt"
    cmd = f"Command: `{command}` (" + time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()) + ")"
    section = f"{head}\n\n{cmd}\n\n{body}\n"
    section += "\n" + NOTES.strip() + "\n"
    lines = old.splitlines(keepends=True)
    start = next((i for i, l in enumerate(lines) if l.strip() == head), None)
    if start is None:
        new = old.rstrip("\n") + "\n\n" + section
    else:
        end = next((j for j in range(start + 1, len(lines)) if lines[j].startswith("## ")), len(lines))
        new = "".join(lines[:start]) + section + ("\n" if end < len(lines) else "") + "".join(lines[end:])
    tmp = path.with_suffix(".md.tmp")
    tmp.write_text(new)
    os.replace(tmp, path)


if __name__ == "__main__":
    sys.exit(main())
