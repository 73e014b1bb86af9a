"""Benchmark: where the encode stage's time goes, on real iDT features (in-process, one thread).

Dataset: excerpts of the shared clips (``../shared/reference/videos``, first 200 frames each, extracted with the
reference options and cached by ``bench/_clips.py``): each clip's trajectories are cut into ``--excerpt``-frame
windows by their end frame, one features ``.npz`` per window, written as the features stage writes them
(``idtfv.cache.atomic_savez``, DEFLATE level 1), with a manifest (one label per clip, every other excerpt in
split 1's training set) and a features stamp. Then :func:`idtfv.encoding.stage.run_encode` runs once, with the
default options (K=256, five channels, PCA to half, ``--pca-samples`` 256,000 capped at what the training
videos have, 30 EM iterations), ``jobs=1``, pinned to one CPU with one BLAS/Numba thread.

The split is taken by wrapping the stage's own functions for the run (CPU seconds, ``time.process_time``):
sampling (``load_training_sample``), PCA fits, GMM fits (per channel), per video: reading the features file,
PCA projections, Fisher vectors; writing (per-video results and the feature file) is the rest of the stage.

Usage: ``python bench/bench_encode.py [--excerpt 40] [--no-write]``; updates the ``bench_encode`` block of the
``## encoding`` section of ``bench/RESULTS.md`` (README row ``speed:encode-stage``).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import os
import shutil
import sys
import time
from collections import defaultdict
from pathlib import Path

os.environ["NUMBA_NUM_THREADS"] = "1"
os.environ["OMP_NUM_THREADS"] = "1"

import numpy as np  # noqa: E402
from threadpoolctl import threadpool_limits  # noqa: E402

from _clips import CHANNELS, clip_arrays  # noqa: E402  (bench/ is the script's directory)
from _results import machine, readme_row, write_block  # noqa: E402

SECTION = "## encoding"
BLOCK = "bench_encode"
WORK = Path(__file__).resolve().parent / "out" / "encode"


def make_dataset(root: Path, excerpt: int, log=print):
    """Features files, manifest and stamp of the clip excerpts under ``root``; returns (manifest, stamp, rows)."""
    from idtfv.cache import atomic_savez
    from idtfv.idt import IDTParams

    clips = clip_arrays(log=log)
    if not clips:
        return None
    feat = root / "features"
    feat.mkdir(parents=True)
    info = np.array(json.dumps({"params": IDTParams().to_dict()}))
    lines = ["video_id,path,label,label_name,group,split1,frames,fps,width,height"]
    done = []
    n_rows = 0
    for label, (clip, arrays) in enumerate(clips.items()):
        end = arrays["meta"][:, 0]
        for j, lo in enumerate(range(0, int(end.max()) + 1, excerpt)):
            rows = (end >= lo) & (end < lo + excerpt)
            if not rows.any():
                continue
            vid = f"{clip}_{j:02d}"
            atomic_savez(feat / f"{vid}.npz", {**{k: arrays[k][rows] for k in ("meta", *CHANNELS)},
                                                "info_json": info}, compresslevel=1)
            lines.append(f"{vid},videos/{vid}.avi,{label},{clip},{clip},{'train' if j % 2 == 0 else 'test'},,,,")
            done.append(vid)
            n_rows += int(rows.sum())
    (root / "manifest.csv").write_text("\n".join(lines) + "\n")
    stamp = {"stage": "features", "dir": str(feat), "params": {"idt": IDTParams().to_dict()}, "done": done,
             "failed": {}}
    (root / "features.json").write_text(json.dumps(stamp))
    return root / "manifest.csv", root / "features.json", len(done), n_rows


@contextlib.contextmanager
def timed(owner, name: str, label, totals: dict):
    """Wrap ``owner.name`` for the duration: its CPU seconds add to ``totals[label]`` (label may be a callable of
    the call's arguments)."""
    original = getattr(owner, name)

    def wrapper(*args, **kwargs):
        c = time.process_time()
        try:
            return original(*args, **kwargs)
        finally:
            key = label(*args, **kwargs) if callable(label) else label
            totals[key] += time.process_time() - c

    setattr(owner, name, wrapper)
    try:
        yield
    finally:
        setattr(owner, name, original)


def run(manifest, stamp, root: Path):
    from idtfv.encoding import stage
    from idtfv.encoding.gmm import DiagGMM
    from idtfv.encoding.params import EncodeParams
    from idtfv.encoding.pca import DescriptorPCA

    totals: dict = defaultdict(float)
    channel = {"name": "?"}
    original_fit_channel = stage._fit_channel

    def fit_channel(ch, X, **kwargs):
        channel["name"] = ch
        return original_fit_channel(ch, X, **kwargs)

    def gmm_label(self, X, *a, **k):
        return f"GMM fit {channel['name']} (D={X.shape[1]})"

    inside = {"encode": False}

    def encode_label(*a, **k):
        inside["encode"] = False
        return "per video: PCA + FV"

    def pca_label(*a, **k):
        return "per video: PCA" if inside["encode"] else "PCA projections of the samples"

    original_encode = stage.encode_arrays

    def mark_encode(*a, **k):
        inside["encode"] = True
        return original_encode(*a, **k)

    with contextlib.ExitStack() as stack:
        stage._fit_channel = fit_channel
        stack.callback(setattr, stage, "_fit_channel", original_fit_channel)
        stack.enter_context(timed(stage, "load_training_sample", "sampling", totals))
        stack.enter_context(timed(DescriptorPCA, "fit", "PCA fits", totals))
        stack.enter_context(timed(DiagGMM, "fit", gmm_label, totals))
        stack.enter_context(timed(DiagGMM, "_init_kmeans", lambda *a, **k: f"k-means init {channel['name']}",
                                  totals))
        stack.enter_context(timed(stage, "encode_item", "per video: total", totals))
        stage.encode_arrays = mark_encode
        stack.callback(setattr, stage, "encode_arrays", original_encode)
        stack.enter_context(timed(stage, "encode_arrays", encode_label, totals))
        stack.enter_context(timed(DescriptorPCA, "transform", pca_label, totals))
        stack.enter_context(timed(stage, "write_encoded", "feature file", totals))
        stack.enter_context(threadpool_limits(1))
        c = time.process_time()
        summary = stage.run_encode(manifest, stamp, EncodeParams(), split=1, cache=root / "cache",
                                   out=root / "fv.npz", jobs=1)
        total = time.process_time() - c
    return summary, total, dict(totals)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--excerpt", type=int, default=40, help="frames per excerpt (default 40)")
    ap.add_argument("--no-write", action="store_true", help="print only; leave bench/RESULTS.md alone")
    args = ap.parse_args(argv)
    cpu = min(os.sched_getaffinity(0))
    os.sched_setaffinity(0, {cpu})
    load = os.getloadavg()
    shutil.rmtree(WORK, ignore_errors=True)
    made = make_dataset(WORK, args.excerpt, log=lambda m: print(m, flush=True))
    if made is None:
        print("bench_encode: skipped: ../shared/reference/videos is absent (real features are needed)")
        return 0
    manifest, stamp, n_videos, n_rows = made
    from idtfv.encoding.fisher import fisher_vector
    from idtfv.encoding.gmm import DiagGMM

    with threadpool_limits(1):  # load the Numba kernels' cache outside the timed run
        fisher_vector(np.zeros((4, 2), np.float32),
                      DiagGMM(2, max_iter=2, random_state=0).fit(np.random.default_rng(0).random((40, 2))))
    summary, total, t = run(manifest, stamp, WORK)
    fv = t["per video: PCA + FV"] - t["per video: PCA"]
    reading = t["per video: total"] - t["per video: PCA + FV"]
    gmm = {k: v for ch in CHANNELS for k, v in t.items() if k.startswith(f"GMM fit {ch} ")}
    parts = [("sampling (reading the training videos' rows)", t["sampling"]), ("PCA fits", t["PCA fits"]),
             ("PCA projections of the samples", t["PCA projections of the samples"])]
    for ch in CHANNELS:
        fit = [(k, v) for k, v in gmm.items() if k.startswith(f"GMM fit {ch} ")]
        if fit:
            init = t.get(f"k-means init {ch}", 0.0)
            parts += [(f"GMM {fit[0][0][8:]}: k-means initialisation", init),
                      (f"GMM {fit[0][0][8:]}: EM iterations", fit[0][1] - init)]
    parts += [("per video: reading its features file, checks", reading),
              ("per video: PCA projections", t["per video: PCA"]),
              ("per video: Fisher vectors", fv)]
    parts.append(("the rest: runner, writing per-video results and the feature file",
                  total - sum(sec for _, sec in parts)))
    for name, sec in parts:
        print(f"{name:55s} {sec:7.2f} s  {100 * sec / total:5.1f}%")
    print(f"{'total':55s} {total:7.2f} s  ({n_videos} videos, {n_rows:,} trajectories, K={summary['k']})")
    now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    gmm_total = sum(gmm.values())
    lines = [f"### Encode stage split (`python bench/bench_encode.py --excerpt {args.excerpt}`, in-process, "
             f"{machine()}, {now})", "",
             f"`run_encode` with the default options (K={summary['k']}, channels {', '.join(CHANNELS)}, PCA to half, "
             f"30 EM iterations) on {n_videos} excerpts of the shared clips ({args.excerpt} frames each, "
             f"{n_rows:,} trajectories, every other excerpt a training video), `jobs=1`, one CPU, one thread; CPU "
             f"seconds from wrapping the stage's functions. Load average at the start: {load[0]:.1f}, {load[1]:.1f}, "
             f"{load[2]:.1f}.", "",
             "| what | ours | baseline | ratio |", "|---|---|---|---|",
             readme_row("speed", "encode-stage", [
                 f"`idtfv encode` stage, {n_videos} real excerpts ({n_rows:,} trajectories), K={summary['k']}, five "
                 "channels, one thread", f"{total:.1f} CPU-s, of which GMM fits {gmm_total:.1f} s "
                 f"({100 * gmm_total / total:.0f}%)", "-", "-"]),
             "", "| part | CPU s | share |", "|---|---:|---:|"]
    lines += [f"| {name} | {sec:.2f} | {100 * sec / total:.1f}% |" for name, sec in parts]
    lines += [f"| total | {total:.2f} | 100% |"]
    text = "\n".join(lines)
    print(text)
    if not args.no_write:
        write_block(SECTION, BLOCK, text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
