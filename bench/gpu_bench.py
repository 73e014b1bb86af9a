"""Benchmark and parity check of the extractor's CUDA kernels (``IDTParams(device="cuda")``) against the CPU.

Needs CuPy and a CUDA device. Measures, on a 6-level 320x240 pyramid of random frames, the integral histograms
(HOG, HOF, MBHx, MBHy) and the gathering of 6,000 points' blocks per frame on the CPU (Numba, one thread) and on
the device (synchronised); then runs ``extract`` on a reference clip with ``device="cpu"`` and ``"cuda"`` and
reports both runs' time, their trajectory counts and the correlation of their descriptor mean profiles (the
issue's parity bar: counts within 1 %, correlation > 0.999).

Usage: ``python bench/gpu_bench.py [--repeat 20] [--frames 100] [--json OUT.json]``. Prints one JSON object;
writes nothing else (``bench/gpu_check.sh`` keeps it). Not named ``bench_*.py``: ``make bench`` runs those on
every machine, and this one needs a GPU.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

os.environ.setdefault("NUMBA_NUM_THREADS", "1")

import numpy as np  # noqa: E402

from idtfv.idt import IDTParams, extract  # noqa: E402
from idtfv.idt.descriptors import DescriptorLayout, cell_descriptors, frame_histograms  # noqa: E402
from idtfv.idt.device import cuda_available  # noqa: E402

VIDEO = Path(__file__).resolve().parents[2] / "shared" / "reference" / "videos" / "vtest_320x240.avi"


def _levels(rng, n=6, w=320, h=240):
    out = []
    for s in range(n):
        f = 2 ** (-s / 2)
        lw, lh = max(32, round(w * f)), max(32, round(h * f))
        out.append(((rng.random((lh, lw)) * 255).astype(np.float32),
                    (rng.normal(size=(lh, lw, 2)) * 2).astype(np.float32)))
    return out


def _time(fn, repeat, sync=lambda: None):
    fn()
    sync()
    t0 = time.perf_counter()
    for _ in range(repeat):
        fn()
    sync()
    return (time.perf_counter() - t0) / repeat


def bench_kernels(repeat: int, n_points: int) -> dict:
    import cupy as cp

    rng = np.random.default_rng(0)
    levels = _levels(rng)
    layout = DescriptorLayout()
    pts = [np.column_stack([rng.uniform(0, g.shape[1], n_points // len(levels)),
                            rng.uniform(0, g.shape[0], n_points // len(levels))]).astype(np.float32)
           for g, _ in levels]
    sync = cp.cuda.Device().synchronize
    res = {}
    for device in ("cpu", "cuda"):
        hists = [frame_histograms(g, f, layout=layout, device=device) for g, f in levels]

        def hist(device=device):
            for s, (g, f) in enumerate(levels):
                hists[s] = frame_histograms(g, f, layout=layout, out=hists[s], device=device)

        def gather(device=device):
            for h, p in zip(hists, pts):
                cell_descriptors(h, p, layout=layout, device=device)

        res[device] = {"histograms_ms": 1e3 * _time(hist, repeat, sync), "gather_ms": 1e3 * _time(gather, repeat, sync)}
    cpu = [frame_histograms(g, f, layout=layout) for g, f in levels]
    gpu = [frame_histograms(g, f, layout=layout, device="cuda") for g, f in levels]
    res["histograms_bit_identical"] = all(np.array_equal(a.view(np.uint32), cp.asnumpy(b).view(np.uint32))
                                          for hc, hg in zip(cpu, gpu) for a, b in zip(hc, hg))
    return res


def bench_extract(frames: int) -> dict:
    if not VIDEO.exists():
        return {"skipped": f"{VIDEO} is absent"}
    params = IDTParams(end=frames)
    out = {}
    runs = {}
    for device in ("cpu", "cuda"):
        extract(VIDEO, params.replace(device=device, end=min(frames, 20)))  # warm-up: compilation
        t0 = time.perf_counter()
        runs[device] = extract(VIDEO, params.replace(device=device))
        out[f"{device}_s"] = time.perf_counter() - t0
        out[f"{device}_trajectories"] = len(runs[device])
    cpu, gpu = runs["cpu"], runs["cuda"]
    out["count_rel_diff"] = abs(len(gpu) - len(cpu)) / max(1, len(cpu))
    for kind in ("hog", "hof", "mbhx", "mbhy"):
        out[f"{kind}_profile_corr"] = float(np.corrcoef(getattr(cpu, kind).mean(0), getattr(gpu, kind).mean(0))[0, 1])
    out["identical"] = len(cpu) == len(gpu) and all(
        np.array_equal(getattr(cpu, k), getattr(gpu, k)) for k in ("meta", "traj", "hog", "hof", "mbhx", "mbhy"))
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=20)
    ap.add_argument("--points", type=int, default=6000)
    ap.add_argument("--frames", type=int, default=100, help="frames of vtest for the extract comparison")
    ap.add_argument("--json", type=Path, help="also write the result here")
    args = ap.parse_args(argv)
    if not cuda_available():
        print("error: gpu_bench needs CuPy and a CUDA device (pip install cupy-cuda12x)", file=sys.stderr)
        return 2
    import cupy as cp

    props = cp.cuda.runtime.getDeviceProperties(0)
    result = {"machine": platform.node(), "device": props["name"].decode() if isinstance(props["name"], bytes)
              else str(props["name"]), "cupy": cp.__version__,
              "kernels": bench_kernels(args.repeat, args.points), "extract": bench_extract(args.frames)}
    text = json.dumps(result, indent=2)
    print(text)
    if args.json:
        args.json.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
