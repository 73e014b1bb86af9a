"""Benchmark: in-process CPU profile of the extractor on one core, per stage and per Farnebäck kernel.

``extract(vtest_320x240.avi, preset, end=200)`` once per preset (after a short warm-up that loads the Numba
kernels), with the stage timer of :func:`idtfv.idt.extract` (``timings=``) switched to CPU time
(``time.process_time``) so the split holds on a loaded machine, and every Farnebäck kernel wrapped with a CPU
timer, split into the plain flow (``flow`` stage: frame t-1 -> t) and the camera-compensated one (``warp_flow``
stage: the warp, the warped frame's pyramid, its expansion and the second solve). The numbers are in-process (no
start-up, no output file) in a process whose heap is tuned as the commands tune theirs
(:func:`idtfv.allocator.tune_heap`); compare with the reference's instrumented split in ``../shared/README.md`` (SURF 38%,
Farnebäck x2 33%, histograms 14%, tracking/output 9%).

Usage: ``python bench/bench_profile.py [--presets default fast] [--end 200] [--warp-flow MODE] [--no-write]``;
updates the
``## profile`` section of ``bench/RESULTS.md``.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import types
from collections import defaultdict
from pathlib import Path

os.environ["NUMBA_NUM_THREADS"] = "1"
os.environ["OMP_NUM_THREADS"] = "1"

import cv2  # noqa: E402

from _results import write_section  # noqa: E402  (bench/ is the script's directory)

cv2.setNumThreads(1)
VIDEO = Path(__file__).resolve().parents[2] / "shared" / "reference" / "videos" / "vtest_320x240.avi"
SECTION = "## profile"
#: (label, where) of the timed Farnebäck steps: a Numba kernel of idtfv.idt.flow._farneback_nb (nb), _median_nb
#: (med) or _level_nb (lvl), or an OpenCV call made by idtfv.idt.flow.farneback. With the 5x5 median (both presets)
#: a level's prior (upscale and rescale), update matrices, window solves and median are one call (lvl.level_flow),
#: timed as one step, and so are a frame level's presmoothing and expansion (lvl.smooth_expand);
#: the separate kernels' rows appear only where they are called one by one (``--warp-flow refine``'s levels).
KERNELS = [
    ("presmoothing (3x3 Gaussian) + polynomial expansion in one call (`smooth_expand`)", "lvl.smooth_expand"),
    ("polynomial expansion", "nb.poly_expand"),
    ("presmoothing (3x3 Gaussian)", "cv2.GaussianBlur"),
    ("one level in one call: prior upscale + rescale, update matrices, window sums + 2x2 solves, median 5x5 "
     "(`level_flow`)",
     "lvl.level_flow"),
    ("update matrices (first iteration of each level)", "nb.update_matrices"),
    ("window sum + 2x2 solve (+ next iteration's update matrices), fused", "nb.window_solve"),
    ("median filter 5x5, both planes, and the interleaved output", "med.median5_flow"),
    ("upsampling the coarser flow", "cv2.resize"),
]


class Profile:
    """CPU seconds per (stage, step), filled by the wrappers :meth:`install` puts around the flow's calls."""

    def __init__(self):
        self.t = defaultdict(float)
        self.where = "flow"

    def timed(self, key, fn):
        def wrapper(*args, **kwargs):
            t0 = time.process_time()
            try:
                return fn(*args, **kwargs)
            finally:
                self.t[self.where, key] += time.process_time() - t0

        return wrapper

    def in_warp(self, fn):
        def wrapper(*args, **kwargs):
            self.where = "warp"
            try:
                return fn(*args, **kwargs)
            finally:
                self.where = "flow"

        return wrapper

    def install(self):
        import idtfv.idt.camera as camera
        import idtfv.idt.extractor as extractor
        import idtfv.idt.flow.farneback as fb

        extractor.time = types.SimpleNamespace(perf_counter=time.process_time)  # the stage timer, in CPU time
        def proxy_of(module):
            return types.SimpleNamespace(**{k: getattr(module, k) for k in dir(module) if not k.startswith("__")})

        sources = {"nb": fb._kernels(), "med": fb._median_kernels(), "lvl": fb._level_kernels(), "cv2": cv2}
        proxies = {k: proxy_of(m) for k, m in sources.items()}
        for _, where in KERNELS:
            module, name = where.split(".")
            setattr(proxies[module], name, self.timed(where, getattr(sources[module], name)))
        fb._kernels = lambda: proxies["nb"]
        fb._median_kernels = lambda: proxies["med"]
        fb._level_kernels = lambda: proxies["lvl"]
        fake_cv2 = proxies["cv2"]
        fb.cv2 = fake_cv2
        cls = fb.FarnebackPyramidFlow
        for name in ("__call__", "flow_from_previous", "refine_from_previous"):
            setattr(cls, name, self.timed("total", getattr(cls, name)))
        for name in ("flow_from_previous", "refine_from_previous"):  # the second solve: in the warp_flow stage
            setattr(cls, name, self.in_warp(getattr(cls, name)))
        camera.warp_to_previous = self.timed("warp_to_previous", camera.warp_to_previous)


def run(preset: str, end: int, prof: Profile, warp_flow: str | None = None):
    from idtfv.idt import IDTParams, extract

    make = IDTParams.fast if preset == "fast" else IDTParams
    extra = {} if warp_flow is None else {"warp_flow": warp_flow}
    extract(VIDEO, make(end=3, **extra))  # warm-up: the Numba kernels load from their cache
    prof.t.clear()
    stages = {}
    t0 = time.process_time()
    extract(VIDEO, make(end=end, **extra), timings=stages)
    return time.process_time() - t0, stages, dict(prof.t)


def table(preset, end, total, stages, kernels, warp_flow=None):
    pct = lambda v: f"{100 * v / total:.1f}%"  # noqa: E731
    mode = "" if warp_flow is None else f", `warp_flow={warp_flow!r}`"
    lines = [f"### {preset} preset{mode} (`vtest_320x240.avi`, frames 0-{end}): {total:.2f} CPU s in-process", "",
             "| stage | CPU s | share |", "|---|---|---|"]
    for name, v in sorted(stages.items(), key=lambda kv: -kv[1]):
        lines.append(f"| {name} | {v:.2f} | {pct(v)} |")
    lines += ["", "| Farnebäck step | flow (t-1 -> t) CPU s | warp_flow CPU s | share of total |", "|---|---|---|---|"]
    for label, where in KERNELS:
        a, b = kernels.get(("flow", where), 0.0), kernels.get(("warp", where), 0.0)
        if a or b:
            lines.append(f"| {label} | {a:.3f} | {b:.3f} | {pct(a + b)} |")
    for where_, stage in (("flow", "flow"), ("warp", "warp_flow")):
        steps = sum(v for (w, k), v in kernels.items() if w == where_ and k not in ("total", "warp_to_previous"))
        kernels[where_, "rest"] = kernels.get((where_, "total"), 0.0) - steps
    warp = kernels.get(("flow", "warp_to_previous"), 0.0)  # warp_to_previous runs outside flow_from_previous
    rest_w = stages.get("warp_flow", 0.0) - kernels.get(("warp", "total"), 0.0) - warp
    lines.append(f"| Python driver, buffers (rest of the flow object) | {kernels['flow', 'rest']:.3f} | "
                 f"{kernels['warp', 'rest']:.3f} | {pct(kernels['flow', 'rest'] + kernels['warp', 'rest'])} |")
    lines.append(f"| warp by H^-1 + border fill (`warp_to_previous`) | - | {warp:.3f} | {pct(warp)} |")
    lines.append(f"| rest of the stage (warped frame's pyramid; `subtract`: `compensate_flow`) | - | {rest_w:.3f} | "
                 f"{pct(rest_w)} |")
    return lines


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--presets", nargs="+", default=["default", "fast"], choices=["default", "fast"])
    ap.add_argument("--end", type=int, default=200, help="last frame (default 200)")
    ap.add_argument("--warp-flow", choices=["recompute", "subtract", "refine"], default=None,
                    help="override the presets' warp_flow (e.g. refine: one Farneback round per level)")
    ap.add_argument("--no-write", action="store_true", help="print only, leave bench/RESULTS.md alone")
    args = ap.parse_args(argv)
    if not VIDEO.exists():
        print(f"error: {VIDEO} is missing (../shared is needed for this benchmark)", file=sys.stderr)
        return 2
    from idtfv.allocator import tune_heap

    heap = tune_heap()  # as extract-trajectories does at start
    prof = Profile()
    prof.install()
    lines = [SECTION, "",
             f"`python bench/bench_profile.py` ({time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, one core, "
             f"one thread, heap tuned as the commands do: {heap}): **in-process** CPU time (`time.process_time`) of "
             "`extract()` per stage, and of each "
             "Farnebäck step in the plain flow and in the camera-compensated one (`warp_flow`). No start-up or "
             "output file. The reference's instrumented split on vtest: SURF 38%, Farnebäck x2 33%, integral "
             "histograms 14%, tracking/output 9%.", ""]
    for preset in args.presets:
        total, stages, kernels = run(preset, args.end, prof, args.warp_flow)
        lines += table(preset, args.end, total, stages, kernels, args.warp_flow) + [""]
    text = "\n".join(lines)
    print(text)
    if not args.no_write:
        write_section(SECTION, text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
