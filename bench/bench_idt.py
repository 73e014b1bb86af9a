#!/usr/bin/env python3
"""Benchmark of the iDT extractor on ``vtest_320x240.avi`` (one core), with fidelity against LEAR's output.

Each configuration runs in its own child process (so peak RSS is its own), pinned to one thread
(``NUMBA_NUM_THREADS=1``, ``cv2.setNumThreads(1)``, BLAS threads 1):

* ``baseline``: the reference's two-pass scheme (camera-compensated flow recomputed on the warped frame,
  OpenCV Farnebäck) — the in-run baseline the others are compared with;
* ``default``: :class:`idtfv.idt.IDTParams` defaults;
* ``recompute``: the defaults with the second flow solve (``warp_flow="recompute"``);
* ``fast``: :meth:`idtfv.idt.IDTParams.fast`; ``dis``: the fast preset with DIS flow.

It prints frames/s (in-process: the child's extraction, no start-up) and the ratio to the in-run baseline, the
per-stage time breakdown, peak RSS, the ``.npz`` size against the LEAR text of the same trajectories, fidelity against
``../shared/reference/lear-idt/vtest_320x240_frames0-200.txt.gz`` and the drift of ``fast`` from ``default``;
then it replaces the ``## idt`` section of ``bench/RESULTS.md``.

Usage: ``python bench/bench_idt.py [--frames 201] [--configs baseline,default,recompute,orb,fast] [--clips]
[--no-write]`` (configs: baseline, default, every-pair, recompute, subtract, orb, fast, dis; ``--clips`` adds the
fidelity of the default and fast presets on the other reference clips, ~1-2 min more).
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
BLOCKS = ("traj", "hog", "hof", "mbhx", "mbhy")
CLIPS = (("tree", "tree.avi"), ("carphone_pristine", "carphone_pristine.mp4"),
         ("person01_boxing_d1_uncomp", "person01_boxing_d1_uncomp.avi"))  # vtest: from the main run


NOTES = """
Notes (how the defaults were chosen; figures from runs of `compare()` in this script on the reference clips).
- Carphone (moving camera, 176x144) was at traj/MBHx/MBHy 0.85/0.88/0.90. Hypotheses measured on carphone, with
  the other clips checked for regressions: (1) the compensated flow: `warp_flow="subtract"` (derived from the first
  flow and H) against `"recompute"` (solve again on frame t warped by H^-1, the reference); (2) the reference's
  border rule (its warp copies frame t-1 wherever H x is not > 5 px inside frame t, so the compensated flow is ~0
  there, also when H = I; `warp_margin=5`); (3) our Farneback's update step sampled the second frame clamped to
  the image where x + d leaves it, where OpenCV (and LEAR's copy of it) drops the second frame's terms there
  (b2 = 0, A = A1): fixed in `idtfv.idt.flow._farneback_nb`; (4) the homography: AKAZE vs SIFT vs flow-only
  matches, the reference's "> 50 matches" rule and its flow-match convention (rounded point + flow) — both
  adopted, no measurable effect; RANSAC seed: no effect. Carphone traj/MBHx/MBHy/count ratio: old default
  0.85/0.88/0.90/0.93; recompute without the border rule 0.94/0.93/0.86/0.94; recompute + border rule (before the
  Farneback fix) 0.88/0.99/0.97/0.93, but that cut tree's traj from 0.94 to 0.84; with the Farneback fix too
  0.86/0.99/0.97/0.92 and tree 0.93/1.0/1.0/1.0/0.99 with its count ratio 1.07 -> 1.03. (5) Our Farneback's
  border weights were 0.14/0.14/0.45/0.82/1.0 for the 5 pixels nearest the edge where OpenCV's (and LEAR's) are
  0.14/0.14/0.45/0.45/0.45: fixed; tree traj 0.93 -> 0.95, the others unchanged within 0.01 (the tables above are
  the final default). `subtract` with the border rule was worse (carphone MBHy 0.86). Matchers on carphone
  traj: SIFT 0.81, flow-only 0.82; on tree all keypoint types give 0.93-0.94 (AKAZE, SIFT, ORB, flow-only).
- What remains on carphone is the trajectory-shape block, and it is at the noise floor: its mean profile is
  tiny (|mean| ~0.01 per dim) next to the per-track spread, and two random halves of LEAR's *own* carphone output
  correlate 0.86 (median of 50 splits; 5th percentile 0.77) — so ~0.85 is as close as LEAR is to itself. The
  same split-half figure is 0.98 on tree, where ours (0.95) is a small real difference; it is not the keypoint
  type (see above; SURF itself is absent from this OpenCV build), and OpenCV's Farneback in the same pipeline
  gives 0.96 with 9 % more tracks, so the Farneback implementations are the remaining candidate.
  `tests/test_fidelity_lear.py` asserts these two traj bounds (carphone: LEAR's own split-half floor; tree: 0.93)
  with that justification, and 0.95 everywhere else.
- The default is now `warp_flow="recompute"` with the border rule: a second Farneback solve (expansions of
  frame t-1 reused), ~13 ms per 320x240 frame, on the pairs that are not still: a pair whose flow-only homography
  moves no frame corner by more than `still_camera` (0.25 px) takes that fit, detects no keypoints and derives
  its compensated flow (`every-pair` above is the default with `still_camera=0`; this excerpt's camera is still,
  so every pair of the default is). The fast preset keeps `subtract` without the band
  (`warp_margin=0`, closer to LEAR than with it: carphone MBHy 0.92 vs 0.85).
- Farneback uses a Gaussian window (`farneback_window="gaussian"`): with OpenCV's default box window the MBH mean
  profiles correlated only 0.64-0.88 with LEAR's; the project's Numba Farneback reuses expansions across frames.
- `fast` = flow-only homography (`matcher="flow"`) + one flow pass (`subtract`) + a cheaper Farneback (poly_n 5,
  sigma 1.1, one iteration). Its drift from the default is in the table above; on carphone its traj block is far
  (flow-only homographies), elsewhere within 0.98-1.00. The integral histograms now reuse each level's arrays
  (fresh ~10 MB per frame cost as much in page faults as the kernels): histograms 15.5 -> ~8 ms per frame.
- frames/s: "wall" depends on the other load of this shared 2-core machine (load 4-6 during these runs); "CPU
  time" is frames per CPU-second of the extracting process (one thread), a better estimate of an idle core.
- Output size: the `.npz` stores the descriptor blocks as float16 by default (`--full-precision` for float32).
  Effect on Fisher vectors (built-in default dataset, 96 clips, default preset, K=256, splits 1-3): encoding the
  float16-rounded descriptors with the *same* codebook changed the FVs by 0.12-0.15 % (median relative L2, max
  1.7 %) and gave identical accuracy and mAP on all three splits (87.5/71.9/84.4 %; mAP 89.1/83.9/91.4 %);
  refitting PCA+GMM on them moved accuracy by 0/0/+3.1 points, within the refit noise: encode seed 1 instead
  of 0 on the same float32 features moved it by -3.1/+6.2/+3.1 points (84.4/78.1/87.5 %). Descriptor means
  and stds moved by < 2e-5 relative, max abs error 2.4e-4. The pipeline's features stage still stores float32
  (its files are read directly by `idtfv.encoding.stage`).
- Peak RSS is measured after extraction, before writing files. "LEAR text" is the same trajectories printed as
  LEAR prints them (6 significant digits).
"""


def _config(name: str):
    from idtfv.idt import IDTParams

    return {
        # the reference's steps on every pair (still_camera=0) unless the name says otherwise
        "baseline": IDTParams(warp_flow="recompute", farneback_impl="opencv", still_camera=0),
        "default": IDTParams(),
        "every-pair": IDTParams(still_camera=0),
        "recompute": IDTParams(warp_flow="recompute", still_camera=0),
        "subtract": IDTParams(warp_flow="subtract", warp_margin=0.0, still_camera=0),
        "orb": IDTParams(matcher="orb", still_camera=0),
        "fast": IDTParams.fast(),
        "dis": IDTParams.fast(flow="dis", matcher="orb", dis_preset=0, dis_finest_scale=1),
    }[name]


def run_one(name: str, frames: int, out: str) -> None:
    """Child process: extract, time, write the trajectories and a JSON summary."""
    import resource

    import cv2

    cv2.setNumThreads(1)
    from idtfv import idt

    params = _config(name).replace(end=frames)
    # warm-up: compile/load the Numba kernels outside the timing
    idt.extract(VIDEO, params.replace(end=20))
    timings: dict = {}
    c0 = time.process_time()
    t0 = time.perf_counter()
    tr = idt.extract(VIDEO, params, timings=timings)
    wall = time.perf_counter() - t0
    cpu = time.process_time() - c0  # this process's CPU time: robust to other load on a shared machine
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # extraction only, before writing files
    tr.save(out + ".npz", compact=False)  # full precision (float32)
    tr.save(out + ".compact.npz")  # the default: float16 descriptors
    tr.save(out + ".txt", format="lear")
    import io

    import numpy as np

    buf = io.StringIO()  # the text LEAR itself would print (6 significant digits)
    np.savetxt(buf, tr.to_lear(), fmt="%.6g", delimiter="\t")
    lear6 = len(buf.getvalue().encode())
    summary = {
        "name": name, "frames": tr.info["frames"], "wall": wall, "fps": tr.info["frames"] / wall,
        "cpu_fps": tr.info["frames"] / cpu,
        "n": len(tr), "timings": timings, "peak_rss_mb": peak,
        "npz_bytes": os.path.getsize(out + ".npz"), "txt_bytes": lear6,
        "compact_bytes": os.path.getsize(out + ".compact.npz"),
        "matcher": tr.info["matcher"], "flow_impl": tr.info["flow_impl"], "warp_flow": tr.info["warp_flow"],
        "still": tr.info.get("still_pairs", 0),
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
    ap.add_argument("--configs", default="baseline,default,every-pair,subtract,fast,dis")
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

    from idtfv.idt.trajectories import load_trajectories

    ref = load_trajectories(REFERENCE) if REFERENCE.exists() and args.frames == 201 else None
    trs = {name: load_trajectories(str(tmp / name) + ".npz") for name in results}  # full precision
    base = results.get("baseline")
    lines = [f"vtest_320x240.avi, frames 0-{args.frames - 1} ({args.frames} frames), one thread, **in-process** "
             "(each configuration's extraction in its own child process, start-up not counted); the C++ "
             "reference is raced as users run both, whole processes, in `## reference` (`bench_reference.py`)", ""]
    lines.append("| config | frames/s (wall) | frames/s (CPU time) | vs baseline | trajectories | "
                 "peak RSS MB | full-precision npz / LEAR text | default (float16) npz / LEAR text |")
    lines.append("|---|---|---|---|---|---|---|---|")
    for name, r in results.items():
        vs_base = f"{r['fps'] / base['fps']:.2f}x" if base else "-"
        lines.append(f"| {name} ({r['warp_flow']}, {r['matcher']}, {r['flow_impl']}; {r['still']} still pairs) | "
                     f"{r['fps']:.2f} | "
                     f"{r['cpu_fps']:.2f} | {vs_base} | {r['n']} | "
                     f"{r['peak_rss_mb']:.0f} | {r['npz_bytes'] / r['txt_bytes']:.3f} | "
                     f"{r['compact_bytes'] / r['txt_bytes']:.3f} |")
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
        lines += ["", "Fidelity on every reference clip (whole clips; vtest: frames 0-200), default and fast presets:",
                  "", "| clip | preset | frames | LEAR trajectories | count ratio | " + " | ".join(BLOCKS)
                  + " | scale L1 |", "|---|---|---|---|---|" + "---|" * len(BLOCKS) + "---|"]
        from idtfv import idt

        for clip, video in CLIPS:
            ref_c = load_trajectories(SHARED / "reference" / "lear-idt" / f"{clip}.txt.gz")
            for preset, p in (("default", idt.IDTParams()), ("fast", idt.IDTParams.fast())):
                t = idt.extract(SHARED / "reference" / "videos" / video, p)
                c = compare(ref_c, t)
                lines.append(f"| {clip} | {preset} | {t.info['frames']} | {len(ref_c)} | {c['ratio']:.3f} | "
                             + " | ".join(f"{c[b]:.3f}" for b in BLOCKS) + f" | {c['scale_l1']:.3f} |")
        if ref is not None:
            for preset in ("default", "fast"):
                if preset in trs:
                    c = compare(ref, trs[preset])
                    lines.append(f"| vtest_320x240 | {preset} | {args.frames} | {len(ref)} | {c['ratio']:.3f} | "
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
