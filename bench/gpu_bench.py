"""Throughput and parity of the extractor on a GPU (``IDTParams(device="cuda")``, issue 14): one short run.

Needs CuPy and a CUDA device (or ``--emulate``, below). Measures, on the shared clips (``../shared``):

- ``kernels``: the integral histograms and the gathering of 6,000 points' blocks per 6-level 320x240 frame, CPU
  (Numba, one thread) against the device (synchronised);
- ``stages``: the per-stage split of one video on the device (``vtest_320x240.avi``, default preset): the
  extractor's stage timer synchronised with the device around every stage (``_Timer.sync``), so a stage's time is
  its device work, plus ``transfer``, the time spent in ``cupy.asarray`` of host arrays and ``cupy.asnumpy``
  (synchronised; counted inside its stage too) and the bytes moved. Synchronising slows the run: these are shares,
  the frames/s are the next item's;
- ``single``: frames/s of that video alone on one stream, unsynchronised (the issue's target: >= 500);
- ``video_threads``: the same for ``IDTParams.threads`` N in ``--video-threads`` (decoding and keypoints ahead on
  a decode thread and N - 1 host threads, every device call on the main thread; docs/GPU.md, "The host's share"),
  and whether each gives the bytes of N = 1; with the batch, the GPU worker's K = 4 streams with N = 3;
- ``launches``: kernel launches per frame of that video (counted by name) and, on the device, the host cost of one
  launch: their product bounds the frames/s of one Python thread however fast the GPU is;
- ``batch``: frames/s over a batch of short clips (``--clips`` windows of ``--clip-frames`` frames of vtest,
  written as MJPG files first, like a dataset's) run by the features stage's GPU worker
  (:mod:`idtfv.idt.gpu_worker`: the runner with one thread and CUDA stream per video, decoding included, atomic
  ``.npz`` outputs) for each ``--streams`` K (target: >= 2,000 aggregate), and the UCF101 projection (2.5 M
  frames at the best rate, a projection, not a run);
- ``fast_processes``: the P-process batch with the fast preset (no keypoints on the host: the device path's
  headroom once the camera's keypoints leave the CPU);
- ``cpu_batch``: the same clips through the features stage on the CPU path alone (``--cpu-jobs`` worker
  processes, default all CPUs; start-ups included): the alternative a user of that machine has;
- ``decode``: the decode rate that feeds it (grey frames at the working width, the extractor's reader) with
  OpenCV and PyAV on ``--decode-threads`` CPU threads;
- ``parity``: CPU against device on vtest frames 0-199, tree, carphone and KTH boxing (whole clips): trajectory
  counts and the correlation of the mean profiles of every descriptor (the issue's bar: counts within 1 %,
  correlation > 0.999), and whether the outputs are identical.

Usage: ``python bench/gpu_bench.py [--json OUT.json] [--results PATH] [--no-write]``: prints the JSON and, on a GPU
and without ``--no-write``, writes the ``## gpu`` section of ``bench/RESULTS.md`` (or of ``--results``;
``bench/gpu_check.sh`` points it into its output folder, which is what comes back from a lent machine).
``--emulate`` runs every code path on tiny synthetic clips over the CPU emulator of ``tests/_cuda_on_cpu.py``
(no GPU; its times mean nothing) and never writes RESULTS.md. Not named ``bench_*.py``: ``make bench`` runs those
on every machine, and this one needs a GPU.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import tempfile
import time
import types
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

os.environ.setdefault("NUMBA_NUM_THREADS", "1")

import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _results import RESULTS, readme_row, write_section  # noqa: E402

HERE = Path(__file__).resolve().parent
VIDEOS = HERE.parents[1] / "shared" / "reference" / "videos"
VIDEO = VIDEOS / "vtest_320x240.avi"
#: Clips of the parity check: (file, last frame + 1 or None for the whole clip).
PARITY_CLIPS = (("vtest_320x240.avi", 200), ("tree.avi", None), ("carphone_pristine.mp4", None),
                ("person01_boxing_d1_uncomp.avi", None))
KINDS = ("traj", "hog", "hof", "mbhx", "mbhy")
#: The parts of a run, in the order a GPU run takes them (``--parts`` picks some).
PARTS = ("single", "parity", "launches", "fast", "batch", "batch_processes", "cpu_batch", "fast_processes",
         "video_threads", "batch_threads", "decode", "kernels")
#: UCF101's frames (13,320 clips of 7.2 s on average at 25 frames/s, 320x240), for the projection.
UCF101_FRAMES = 2_500_000


def _install_emulator() -> None:
    """Make ``import cupy`` give the CPU emulator's stand-in (tests/_cuda_on_cpu.py)."""
    sys.path.insert(0, str(HERE.parent / "tests"))
    import _cuda_on_cpu

    if not _cuda_on_cpu.available():
        raise SystemExit("error: --emulate needs g++ on x86-64")
    build = Path(tempfile.gettempdir()) / "idtfv_gpu_bench_emulator"
    build.mkdir(exist_ok=True)
    sys.modules["cupy"] = _cuda_on_cpu.fake_cupy(build)


def _sync():
    import cupy

    cupy.cuda.Device().synchronize()


def _time(fn, repeat, sync=lambda: None):
    fn()
    sync()
    t0 = time.perf_counter()
    for _ in range(repeat):
        fn()
    sync()
    return (time.perf_counter() - t0) / repeat


# ---------------------------------------------------------------------------------------------- kernels
def _levels(rng, n=6, w=320, h=240):
    out = []
    for s in range(n):
        f = 2 ** (-s / 2)
        lw, lh = max(32, round(w * f)), max(32, round(h * f))
        out.append(((rng.random((lh, lw)) * 255).astype(np.float32),
                    (rng.normal(size=(lh, lw, 2)) * 2).astype(np.float32)))
    return out


def bench_kernels(repeat: int, n_points: int, size=(320, 240)) -> dict:
    import cupy as cp

    from idtfv.idt.descriptors import DescriptorLayout, cell_descriptors, frame_histograms, level_histograms

    rng = np.random.default_rng(0)
    levels = _levels(rng, w=size[0], h=size[1])
    layout = DescriptorLayout()
    pts = [np.column_stack([rng.uniform(0, g.shape[1], n_points // len(levels)),
                            rng.uniform(0, g.shape[0], n_points // len(levels))]).astype(np.float32)
           for g, _ in levels]
    res = {"frame": f"6-level {size[0]}x{size[1]}", "points": n_points}
    for device in ("cpu", "cuda"):
        hists = [frame_histograms(g, f, layout=layout, device=device) for g, f in levels]

        def hist(device=device):
            for s, (g, f) in enumerate(levels):
                hists[s] = frame_histograms(g, f, layout=layout, out=hists[s], device=device)

        def gather(device=device):
            for h, p in zip(hists, pts):
                cell_descriptors(h, p, layout=layout, device=device)

        res[device] = {"histograms_ms": 1e3 * _time(hist, repeat, _sync),
                       "gather_ms": 1e3 * _time(gather, repeat, _sync)}
    # the extractor's device path: every level's histograms in 3 launches and their blocks in 1 (issue 14's budget)
    from idtfv.idt.tracking_cuda import gather_levels

    grays, flows = [cp.asarray(g) for g, _ in levels], [cp.asarray(f) for _, f in levels]
    dev_pts = [cp.asarray(p) for p in pts]
    batched = level_histograms(grays, flows, layout=layout)

    def hist_levels():
        level_histograms(grays, flows, layout=layout, out=batched)

    res["cuda"]["histograms_levels_ms"] = 1e3 * _time(hist_levels, repeat, _sync)
    res["cuda"]["gather_levels_ms"] = 1e3 * _time(lambda: gather_levels(batched, dev_pts, layout=layout), repeat,
                                                  _sync)
    cpu = [frame_histograms(g, f, layout=layout) for g, f in levels]
    gpu = [frame_histograms(g, f, layout=layout, device="cuda") for g, f in levels]
    res["histograms_bit_identical"] = all(np.array_equal(a.view(np.uint32), cp.asnumpy(b).view(np.uint32))
                                          for hc, hg in zip(cpu, gpu) for a, b in zip(hc, hg))
    return res


# ---------------------------------------------------------------------------------------------- one video
class _Transfers:
    """Times (synchronised) and sizes the host<->device copies of the extractor's device code: ``cupy.asarray`` of
    a host array and ``cupy.asnumpy``, which is how every one of them is made (patched on the cupy module)."""

    def __init__(self):
        import cupy

        self.cupy, self.seconds, self.up, self.down, self.calls = cupy, 0.0, 0, 0, 0
        self._real = (cupy.asarray, cupy.asnumpy)

    def __enter__(self):
        real_up, real_down = self._real

        def up(a, *args, **kwargs):
            if not isinstance(a, np.ndarray) or isinstance(a, self._device_type()):
                return real_up(a, *args, **kwargs)
            _sync()
            t0 = time.perf_counter()
            out = real_up(a, *args, **kwargs)
            _sync()
            self.seconds += time.perf_counter() - t0
            self.up += a.nbytes
            self.calls += 1
            return out

        def down(a, *args, **kwargs):
            _sync()
            t0 = time.perf_counter()
            out = real_down(a, *args, **kwargs)
            self.seconds += time.perf_counter() - t0
            self.down += np.asarray(out).nbytes
            self.calls += 1
            return out

        self.cupy.asarray, self.cupy.asnumpy = up, down
        return self

    def _device_type(self):
        kind = getattr(self.cupy, "ndarray", None)
        return () if kind is np.ndarray else (kind,)  # the emulator's device arrays are NumPy arrays

    def __exit__(self, *exc):
        self.cupy.asarray, self.cupy.asnumpy = self._real


def bench_video_threads(video, params, threads) -> dict:
    """Frames/s (unsynchronised) of one video on one stream for each ``IDTParams.threads`` N, and whether the
    output is the bytes of the first N's."""
    from idtfv.idt import extract

    runs, reference = [], None
    for n in threads:
        p = params.replace(threads=n)
        extract(video, p.replace(end=min(20, params.end or 20)))  # warm-up
        t0 = time.perf_counter()
        tr = extract(video, p)
        wall = time.perf_counter() - t0
        out = b"".join(getattr(tr, k).tobytes() for k in ("meta",) + KINDS)
        reference = out if reference is None else reference
        frames = int(tr.info["frames"])
        runs.append({"threads": n, "frames": frames, "seconds": wall, "frames_per_s": frames / wall,
                     "same_as_first": out == reference})
    return {"video": Path(video).name, "runs": runs}


def bench_single(video, params) -> dict:
    """The per-stage split (synchronised) and the frames/s (unsynchronised) of one video on one stream."""
    from idtfv.idt import extract

    extract(video, params.replace(end=min(20, params.end or 20)))  # warm-up: compilation, the memory pool
    timings: dict = {}
    with _Transfers() as moved:
        t0 = time.perf_counter()
        tr = extract(video, params, timings=timings)
        synced = time.perf_counter() - t0
    frames = int(tr.info["frames"])
    t0 = time.perf_counter()
    extract(video, params)
    wall = time.perf_counter() - t0
    return {
        "video": Path(video).name, "frames": frames, "trajectories": len(tr),
        "frames_per_s": frames / wall, "seconds": wall,
        "stages_ms_per_frame": {k: 1e3 * v / frames for k, v in sorted(timings.items(), key=lambda kv: -kv[1])},
        "synchronised_seconds": synced,
        "transfer_ms_per_frame": 1e3 * moved.seconds / frames, "transfers_per_frame": moved.calls / frames,
        "bytes_up_per_frame": moved.up / frames, "bytes_down_per_frame": moved.down / frames,
    }


# ---------------------------------------------------------------------------------------------- kernel launches
#: The modules whose ``module()`` gives the compiled ``cupy.RawModule`` every device kernel is launched from.
KERNEL_MODULES = ("idtfv.idt._frame_cuda", "idtfv.idt._histograms_cuda", "idtfv.idt._tracking_cuda",
                  "idtfv.idt.flow._farneback_cuda")
_NOOP = r'''
extern "C" __global__ void noop(const float* a, float* b, int n) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) b[i] = a[i];
}
'''


class _CountingModule:
    """A ``RawModule`` whose kernels count their launches by name into ``counts``."""

    def __init__(self, real, counts):
        self._real, self._counts = real, counts

    def get_function(self, name):
        fn, counts = self._real.get_function(name), self._counts

        def launch(*args, **kwargs):
            counts[name] += 1
            return fn(*args, **kwargs)

        return launch


def bench_launches(video, params, frames: int = 40, repeat: int = 2000) -> dict:
    """Kernel launches per frame of the device extractor (every ``module().get_function(name)(...)`` counted,
    frames 2.. of ``video``), and on the device the host cost of one launch (``repeat`` launches of a one-element
    copy kernel, then one synchronisation): their product is the time per frame that launching alone takes on one
    thread, whatever the GPU's speed; the Python launches of all streams of one process share one GIL."""
    import collections
    import importlib

    import cupy as cp

    from idtfv.idt import extract

    counts: collections.Counter = collections.Counter()
    saved = {}
    for name in KERNEL_MODULES:
        mod = importlib.import_module(name)
        saved[mod] = mod.module
        proxy = _CountingModule(mod.module(), counts)
        mod.module = lambda proxy=proxy: proxy
    try:
        short = extract(video, params.replace(end=2))
        first = collections.Counter(counts)
        counts.clear()
        tr = extract(video, params.replace(end=frames))
    finally:
        for mod, fn in saved.items():
            mod.module = fn
    n = int(tr.info["frames"]) - int(short.info["frames"])
    counts.subtract(first)  # per name: the frames after the first two
    per_frame = {k: v / n for k, v in sorted(counts.items(), key=lambda kv: -kv[1])}
    total, base = sum(counts.values()), sum(first.values())
    out = {"video": Path(video).name, "frames": n, "launches_per_frame": total / n, "by_kernel": per_frame,
           "launches_first_two_frames": base, "noop_launches": repeat + 1}
    noop = cp.RawModule(code=_NOOP).get_function("noop")
    a, b = cp.zeros(1, cp.float32), cp.zeros(1, cp.float32)
    one = np.int32(1)
    noop((1,), (32,), (a, b, one))
    _sync()
    t0 = time.perf_counter()
    for _ in range(repeat):
        noop((1,), (32,), (a, b, one))
    _sync()
    out["launch_us"] = 1e6 * (time.perf_counter() - t0) / repeat
    out["launch_bound_ms_per_frame"] = 1e-3 * out["launch_us"] * out["launches_per_frame"]
    out["launch_bound_frames_per_s"] = 1e3 / out["launch_bound_ms_per_frame"]
    return out


# ---------------------------------------------------------------------------------------------- a batch of clips
def make_clips(video, out_dir: Path, n: int, frames: int) -> list:
    """``n`` windows of ``frames`` frames of ``video`` (spread over it), each written as an MJPG ``.avi``."""
    import cv2

    from idtfv.video import iter_frames

    everything = list(iter_frames(video))
    span = max(1, len(everything) - frames)
    entries = []
    for k in range(n):
        start = (k * 97) % span
        path = out_dir / f"clip{k:03d}.avi"
        h, w = everything[0].shape[:2]
        writer = cv2.VideoWriter(str(path), cv2.CAP_FFMPEG, cv2.VideoWriter_fourcc(*"MJPG"), 25.0, (w, h))
        if not writer.isOpened():
            raise RuntimeError(f"cv2.VideoWriter (FFmpeg, MJPG) cannot write {path}")
        for rgb in everything[start:start + frames]:
            writer.write(cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
        writer.release()
        entries.append(types.SimpleNamespace(video_id=path.stem, path=path))
    return entries


def _frames_written(result) -> int:
    """The frames of the videos a features stage run wrote (done or empty), from their files' ``info_json``."""
    frames = 0
    for vid in result.done + list(result.empty):
        with np.load(result.path(vid)) as z:
            frames += int(json.loads(str(z["info_json"]))["frames"])
    return frames


def _timed_features(entries, stage_params: dict, cache_root: Path, **run) -> tuple:
    """One features-stage run over ``entries`` (``force``: every video extracted again) with the runner's options
    ``run`` (``threads`` and ``thread_context`` for the GPU worker, ``jobs`` for CPU workers): ``(result, wall
    seconds, frames written)``."""
    from idtfv.idt.stage import features_item
    from idtfv.runner import run_stage

    t0 = time.perf_counter()
    result = run_stage("features", features_item, entries, params=stage_params, cache_root=cache_root, force=True,
                       **run)
    wall = time.perf_counter() - t0
    return result, wall, _frames_written(result)


def bench_batch(entries, params, streams, cache: Path, source: str) -> dict:
    """Frames/s of the features stage's GPU worker over ``entries`` for each K in ``streams``."""
    import cupy

    from idtfv.idt.gpu_worker import video_stream
    from idtfv.idt.stage import warmup_features

    stage_params = {"idt": params.to_dict()}
    warmup_features(stage_params)
    rows = []
    reference = None
    for k in streams:
        pool = getattr(cupy, "get_default_memory_pool", None)
        result, wall, frames = _timed_features(entries, stage_params, cache / f"k{k}", threads=k,
                                               thread_context=video_stream)
        outputs = {}
        for vid in result.done + list(result.empty):
            with np.load(result.path(vid)) as z:
                outputs[vid] = z["meta"].tobytes() + z["hog"].tobytes() + z["mbhy"].tobytes()
        if reference is None:
            reference = outputs
        rows.append({"streams": k, "videos": len(result.done), "empty": len(result.empty),
                     "failed": len(result.failed), "frames": frames,
                     "seconds": wall, "frames_per_s": frames / wall,
                     "same_outputs_as_first_k": outputs == reference,
                     "pool_bytes": int(pool().total_bytes()) if pool is not None else None})
    best = max(rows, key=lambda r: r["frames_per_s"])
    return {"clips": len(entries), "source": source, "runs": rows, "best_streams": best["streams"],
            "best_frames_per_s": best["frames_per_s"],
            "ucf101_projection_hours": UCF101_FRAMES / best["frames_per_s"] / 3600}


def bench_cpu_batch(entries, params, jobs, cache: Path) -> dict:
    """Frames/s of the same batch on this machine's CPUs alone: the features stage with ``jobs`` worker processes
    (``idtfv features --device cpu --jobs N``: one process per core, one thread each, decoding, extraction and
    ``.npz`` writing), timed as a user runs it (the workers' start-ups and kernel-cache loads included; the caches
    were filled first), so that the GPU's rates above have the alternative on the same machine beside them."""
    from idtfv.idt.stage import warmup_features

    stage_params = {"idt": params.replace(device="cpu").to_dict()}
    warmup_features(stage_params)
    rows = []
    for n in jobs:
        result, wall, frames = _timed_features(entries, stage_params, cache / f"j{n}", jobs=n, progress=False)
        rows.append({"jobs": n, "videos": len(result.done), "failed": len(result.failed), "frames": frames,
                     "seconds": wall, "frames_per_s": frames / wall})
    best = max(rows, key=lambda r: r["frames_per_s"])
    return {"runs": rows, "best_jobs": best["jobs"], "best_frames_per_s": best["frames_per_s"],
            "ucf101_projection_hours": UCF101_FRAMES / best["frames_per_s"] / 3600}


def _batch_worker(clip_dir: Path, cache: Path, streams: int, idt_params: dict, share: tuple[int, int]) -> int:
    """One process of :func:`bench_batch_processes`: warm up, say ``ready``, wait for ``go`` on stdin, run the GPU
    worker over its ``share`` (i, P: every P-th clip from the i-th) of ``clip_dir``'s clips with ``streams`` K,
    print one JSON line (frames, seconds)."""
    from idtfv.idt.gpu_worker import video_stream
    from idtfv.idt.stage import warmup_features

    entries = [types.SimpleNamespace(video_id=p.stem, path=p) for p in sorted(clip_dir.glob("*.avi"))]
    entries = entries[share[0]::share[1]]  # this process's share of the clips
    params = {"idt": idt_params}
    warmup_features(params)
    print("ready", flush=True)
    if sys.stdin.readline().strip() != "go":
        return 1
    result, wall, frames = _timed_features(entries, params, cache, threads=streams, thread_context=video_stream,
                                           progress=False)
    print(json.dumps({"frames": frames, "seconds": wall, "videos": len(result.done),
                      "failed": len(result.failed)}), flush=True)
    return 0


def _line(proc, wanted) -> str:
    """The first line of ``proc``'s output that ``wanted`` accepts (others, a library's chatter, are skipped)."""
    for line in proc.stdout:
        if wanted(line.strip()):
            return line.strip()
    raise RuntimeError(f"a batch worker ended (exit status {proc.wait()}) before saying what was expected")


def bench_batch_processes(clip_dir: Path, params, processes, streams: int, cache: Path, extra=()) -> dict:
    """Aggregate frames/s of P processes at once on the one device, each running the GPU worker (K streams) over
    its share of the clips of ``clip_dir`` (every P-th: the batch's frames, split as a dataset run would split
    them): the launches of one process share one GIL, P processes have P. Each process
    warms up (imports, kernel caches, CUDA context) and waits; the clock runs from the common start to the last
    process's end; ``whole_seconds`` adds the start-ups (process start to last end)."""
    import subprocess

    rows = []
    for p in processes:
        threads = max(1, (os.cpu_count() or 1) // (p * streams))
        worker_params = json.dumps(params.replace(threads=threads).to_dict())
        t_spawn = time.perf_counter()
        procs = [subprocess.Popen([sys.executable, __file__, "--batch-worker", str(clip_dir), "--worker-cache",
                                   str(cache / f"p{p}_{i}"), "--streams", str(streams), "--worker-params",
                                   worker_params, "--worker-share", f"{i}/{p}", *extra],
                                  stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
                 for i in range(p)]
        try:
            for proc in procs:
                _line(proc, lambda t: t == "ready")
            t0 = time.perf_counter()
            for proc in procs:
                proc.stdin.write("go\n")
                proc.stdin.flush()
            reports = [json.loads(_line(proc, lambda t: t.startswith("{"))) for proc in procs]
            wall = time.perf_counter() - t0
        finally:
            for proc in procs:  # a worker still waiting for "go" reads the end of its input and stops
                proc.stdin.close()
                try:
                    proc.wait(timeout=120)
                except subprocess.TimeoutExpired:
                    proc.kill()
        frames = sum(r["frames"] for r in reports)
        rows.append({"processes": p, "streams": streams, "video_threads": threads, "frames": frames,
                     "failed": sum(r["failed"] for r in reports), "seconds": wall, "frames_per_s": frames / wall,
                     "whole_seconds": time.perf_counter() - t_spawn,
                     "per_process_frames_per_s": [r["frames"] / r["seconds"] for r in reports]})
    best = max(rows, key=lambda r: r["frames_per_s"])
    return {"runs": rows, "best_frames_per_s": best["frames_per_s"], "best_processes": best["processes"],
            "ucf101_projection_hours": UCF101_FRAMES / best["frames_per_s"] / 3600, "clips_each": "share"}


def bench_decode(entries, params, threads) -> dict:
    """Frames/s of decoding ``entries`` (grey, working width) with each backend on each thread count."""
    from bench_decode import decode as decode_clip  # the extractor's reader, as bench_decode.py times it

    from idtfv.video import probe_video

    def decode(entry, backend):
        return decode_clip(entry.path, backend, params.working_width)[0]

    out = {}
    for backend in ("opencv", "pyav"):
        try:
            decode(entries[0], backend)  # warm-up: the backend's libraries loaded
        except Exception as exc:  # noqa: BLE001 - PyAV may be absent (the lent GPU machine has none)
            out[f"{backend}: not measured ({type(exc).__name__}: {' '.join(str(exc).split())[:120]})"] = float("nan")
            continue
        for t in threads:
            with ThreadPoolExecutor(max_workers=t) as ex:
                t0 = time.perf_counter()
                frames = sum(ex.map(lambda e: decode(e, backend), entries))
                wall = time.perf_counter() - t0
            out[f"{backend}, {t} thread{'s' if t > 1 else ''}"] = frames / wall

    def count_then_decode(entry):  # LEAR text output's frame-count pass, then the decode (extract(path) and an
        probe_video(entry.path, count_frames=True)  # npz output decode once: the rows above)
        return decode(entry, "auto")

    t = max(threads)
    with ThreadPoolExecutor(max_workers=t) as ex:
        t0 = time.perf_counter()
        frames = sum(ex.map(count_then_decode, entries))
        wall = time.perf_counter() - t0
    out[f"count pass + decode (as LEAR text output reads; extract(path) decodes once), "
        f"{t} thread{'s' if t > 1 else ''}"] = frames / wall
    return out


# ---------------------------------------------------------------------------------------------- parity
def parity(video, params) -> dict:
    from idtfv.idt import extract

    t0 = time.process_time()
    cpu = extract(video, params)
    cpu_s = time.process_time() - t0
    gpu = extract(video, params.replace(device="cuda"))
    out = {"video": Path(video).name if not isinstance(video, list) else "<frames>", "frames": cpu.info["frames"],
           "cpu_trajectories": len(cpu), "gpu_trajectories": len(gpu), "cpu_process_s": cpu_s,
           "count_rel_diff": abs(len(gpu) - len(cpu)) / max(1, len(cpu))}
    for kind in KINDS:
        a, b = getattr(cpu, kind).mean(0), getattr(gpu, kind).mean(0)
        out[f"{kind}_1_minus_corr"] = float(1 - np.corrcoef(a, b)[0, 1]) if len(cpu) and len(gpu) else None
    out["identical"] = len(cpu) == len(gpu) and all(
        np.array_equal(getattr(cpu, k), getattr(gpu, k)) for k in ("meta",) + KINDS)
    corr_ok = all(out[f"{k}_1_minus_corr"] is not None and out[f"{k}_1_minus_corr"] < 1e-3 for k in KINDS)
    out["meets_bar"] = out["count_rel_diff"] <= 0.01 and corr_ok
    return out


# ---------------------------------------------------------------------------------------------- report
def _processes_lines(processes: dict, preset: str) -> list[str]:
    """The section's table of a P-process batch (``batch_processes``, ``fast_processes``)."""
    if "runs" not in processes:
        return []
    each = ("its share of the clips above" if processes.get("clips_each") == "share" else
            "all the clips above")  # the first GPU run's processes each ran every clip
    lines = [f"Several processes on the one device{preset} (each the GPU worker over {each}, its own GIL "
             "and launches; the clock from a common start after each process warmed up; with the start-ups: "
             "process start to the last end):", "",
             "| processes P | streams K each | host threads per video | frames | s | frames/s | "
             "s with start-ups | failed |", "|---:|---:|---:|---:|---:|---:|---:|---:|"]
    lines += [f"| {r['processes']} | {r['streams']} | {r['video_threads']} | {r['frames']} | "
              f"{r['seconds']:.2f} | **{r['frames_per_s']:.0f}** | {r['whole_seconds']:.2f} | {r['failed']} |"
              for r in processes["runs"]]
    lines += ["", f"UCF101 projection at the best of these ({processes['best_frames_per_s']:.0f} frames/s, "
                  f"P={processes['best_processes']}; a projection, not a run): "
                  f"**{processes['ucf101_projection_hours']:.2f} h**.", ""]
    return lines


def section(result: dict) -> str:
    """The ``## gpu`` section of RESULTS.md."""
    lines = ["## gpu", "",
             f"`python bench/gpu_bench.py` (run by `bench/gpu_check.sh`) on **{result['device']}** "
             f"(CuPy {result['cupy']}, host `{result['machine']}`, {result.get('cpus', os.cpu_count())} CPUs"
             + (f"; {result['versions']}" if result.get("versions") else "")
             + (f"; {result['when']}" if result.get("when") else "") + f"), {result['setting']}. "
             "Issue 14's targets: >= 500 frames/s one stream, >= 2,000 frames/s over a batch of short "
             "clips; parity counts within 1 %, descriptor mean profiles correlating > 0.999.", ""]
    if result.get("runs_note"):
        lines += [result["runs_note"], ""]
    lines += _summary(result)
    lines += [f"**{key}: not measured** ({message})" for key, message in result.get("errors", {}).items()]
    if result.get("errors"):
        lines.append("")
    single = result.get("single") or {}
    if "frames_per_s" in single:
        lines += [f"One stream, `{single['video']}` ({single['frames']} frames): **{single['frames_per_s']:.0f} "
                  f"frames/s** ({single['trajectories']} trajectories).", "",
                  "Per-stage split of that run on the device (stage timer synchronised with the device around each "
                  "stage; the synchronised run took "
                  f"{single['synchronised_seconds']:.2f} s against {single['seconds']:.2f} s):", "",
                  "| stage | ms/frame |", "|---|---:|"]
        lines += [f"| {k} | {v:.3f} |" for k, v in single["stages_ms_per_frame"].items()]
        lines += [f"| (transfers, inside the stages above: {single['transfers_per_frame']:.1f} per frame, "
                  f"{single['bytes_up_per_frame'] / 1e3:.0f} kB up, {single['bytes_down_per_frame'] / 1e3:.0f} kB "
                  f"down) | {single['transfer_ms_per_frame']:.3f} |", ""]
    fast = result.get("fast") or {}
    if "frames_per_s" in fast:
        split = ", ".join(f"{k} {v:.2f}" for k, v in list(fast["stages_ms_per_frame"].items())[:5])
        lines += [f"The fast preset (`--preset fast`: the homography from flow matches, no keypoints; one flow "
                  f"solve), one stream, same video: **{fast['frames_per_s']:.0f} frames/s** ({fast['trajectories']} "
                  f"trajectories; synchronised split, ms per frame: {split}).", ""]
    launches = result.get("launches") or {}
    if "launches_per_frame" in launches:
        top = ", ".join(f"{k} {v:.0f}" for k, v in list(launches["by_kernel"].items())[:8])
        lines += [f"Kernel launches: **{launches['launches_per_frame']:.0f} per frame** (`{launches['video']}`, "
                  f"{launches['frames']} frames; most: {top}); one launch costs the host "
                  f"{launches['launch_us']:.1f} us (a one-element kernel, {launches['launches_per_frame']:.0f} of "
                  f"them: {launches['launch_bound_ms_per_frame']:.2f} ms per frame), so launching alone caps one "
                  f"Python thread at **{launches['launch_bound_frames_per_s']:.0f} frames/s**, and all streams of "
                  "one process together (one GIL) near that too.", ""]
    video_threads = result.get("video_threads") or {}
    if "runs" in video_threads:
        lines += [f"One stream, `{video_threads['video']}`, by `IDTParams.threads` N (decoding and keypoints "
                  "ahead on N - 1 host threads, every device call on the main thread):", "",
                  "| N | frames | s | frames/s | bytes of the first N |", "|---:|---:|---:|---:|---|"]
        lines += [f"| {r['threads']} | {r['frames']} | {r['seconds']:.2f} | {r['frames_per_s']:.0f} | "
                  f"{'yes' if r['same_as_first'] else 'NO'} |" for r in video_threads["runs"]]
        lines += [""]
    batch_threads = result.get("batch_threads") or {}
    if "runs" in batch_threads:
        lines += [f"GPU worker with `IDTParams.threads={batch_threads['video_threads']}` per video: " + ", ".join(
            f"K={r['streams']}: **{r['frames_per_s']:.0f} frames/s**" for r in batch_threads["runs"]), ""]
    batch = result.get("batch") or {}
    if "runs" in batch:
        lines += [f"Batch: {batch['clips']} clips ({batch['source']}) through the features stage's GPU worker "
                  "(`idtfv features --device cuda --gpu-streams K`: decoding, extraction, `.npz` writing):", "",
                  "| streams K | videos | frames | s | frames/s | outputs equal K's first run |",
                  "|---:|---:|---:|---:|---:|---|"]
        lines += [f"| {r['streams']} | {r['videos']} | {r['frames']} | {r['seconds']:.2f} | {r['frames_per_s']:.0f} | "
                  f"{'yes' if r['same_outputs_as_first_k'] else 'NO'} |" for r in batch["runs"]]
        lines += ["", f"UCF101 projection (2.5 M frames at the best rate, {batch['best_frames_per_s']:.0f} "
                      f"frames/s with K={batch['best_streams']}; a projection, not a run): "
                      f"**{batch['ucf101_projection_hours']:.1f} "
                      "h** on this GPU.", ""]
    for key, preset in (("batch_processes", ""), ("fast_processes", ", `--preset fast` (no keypoints on the host)")):
        lines += _processes_lines(result.get(key) or {}, preset)
    cpu = result.get("cpu_batch") or {}
    if "runs" in cpu:
        lines += ["The same clips on this machine's CPUs alone, no GPU (the features stage as `idtfv features --device "
                  "cpu --jobs N` runs it: N worker processes of one thread, the clock from the call to the end, "
                  "workers' start-ups and kernel-cache loads included):", "",
                  "| jobs N | videos | frames | s | frames/s | failed |", "|---:|---:|---:|---:|---:|---:|"]
        lines += [f"| {r['jobs']} | {r['videos']} | {r['frames']} | {r['seconds']:.2f} | **{r['frames_per_s']:.0f}** | "
                  f"{r['failed']} |" for r in cpu["runs"]]
        lines += ["", f"UCF101 projection at {cpu['best_frames_per_s']:.0f} frames/s (a projection, not a run): "
                      f"**{cpu['ucf101_projection_hours']:.2f} h** on this machine's CPUs.", ""]
    decode = result.get("decode") or {}
    if decode:
        lines += ["Decode rate feeding it (grey, working width, the extractor's reader; the clips above):", "",
                  "| backend, threads | frames/s |", "|---|---:|"]
        lines += [f"| {k} | {v:.0f} |" for k, v in decode.items()]
        lines += [""]
    if result.get("parity"):
        lines += ["Parity, CPU against device (1 - correlation of the mean profiles):", "",
                  "| clip | frames | trajectories CPU / GPU | traj | hog | hof | mbhx | mbhy | bar | identical |",
                  "|---|---:|---:|---:|---:|---:|---:|---:|---|---|"]
        for p in result["parity"]:
            cells = " | ".join("-" if p[f"{k}_1_minus_corr"] is None else f"{p[f'{k}_1_minus_corr']:.1e}"
                               for k in KINDS)
            lines.append(f"| {p['video']} | {p['frames']} | {p['cpu_trajectories']} / {p['gpu_trajectories']} | "
                         f"{cells} | {'met' if p['meets_bar'] else 'MISSED'} | {'yes' if p['identical'] else 'no'} |")
        lines += [""]
    kernels = result.get("kernels") or {}
    if "cpu" in kernels:
        lines += [f"Kernels per {kernels['frame']} frame: histograms {kernels['cpu']['histograms_ms']:.2f} ms CPU / "
                  f"{kernels['cuda']['histograms_ms']:.3f} ms GPU, gathering {kernels['points']:,} points "
                  f"{kernels['cpu']['gather_ms']:.2f} / {kernels['cuda']['gather_ms']:.3f} ms (bit-identical: "
                  f"{kernels['histograms_bit_identical']}); all levels at once on the GPU (the extractor's "
                  f"launches): histograms {kernels['cuda'].get('histograms_levels_ms', float('nan')):.3f} ms, "
                  f"gathering {kernels['cuda'].get('gather_levels_ms', float('nan')):.3f} ms.", ""]
    return "\n".join(lines)


def _summary(result: dict) -> list[str]:
    """The issue's four figures against their targets, as README rows (``bench/readme.py``'s ``gpu`` table)."""
    device = result["device"]
    rows = []
    single = result.get("single") or {}
    if "frames_per_s" in single:
        rows.append(readme_row("gpu", "one-stream", (
            f"one stream, `{single['video']}` ({single['frames']} frames, {device})",
            f"**{single['frames_per_s']:.0f} frames/s**", ">= 500 frames/s")))
    fast = result.get("fast") or {}
    if "frames_per_s" in fast:
        rows.append(readme_row("gpu", "one-stream-fast", (
            f"one stream, `--preset fast` (no keypoints), `{fast['video']}` ({fast['frames']} frames)",
            f"**{fast['frames_per_s']:.0f} frames/s**", "-")))
    best = [(r["frames_per_s"], f"K={r['streams']} streams") for r in (result.get("batch") or {}).get("runs", [])]
    best += [(r["frames_per_s"], f"{r['processes']} processes x K={r['streams']}")
             for r in (result.get("batch_processes") or {}).get("runs", [])]
    if best:
        rate, how = max(best)
        batch = result.get("batch") or {}
        rows.append(readme_row("gpu", "batch", (f"batch of {batch.get('clips', '?')} clips "
                                                f"({batch.get('source', '?')}), best of the runs ({how})",
                                                f"**{rate:.0f} frames/s**", ">= 2,000 frames/s")))
        rows.append(readme_row("gpu", "ucf101", ("UCF101 (2.5 M frames) at that rate: a projection",
                                                 f"{2.5e6 / rate / 3600:.1f} h", "< 0.5 h")))
    fast_p = result.get("fast_processes") or {}
    if "best_frames_per_s" in fast_p:
        top = max(fast_p["runs"], key=lambda r: r["frames_per_s"])
        rows.append(readme_row("gpu", "batch-fast", (
            f"the same batch, `--preset fast` (no keypoints), {top['processes']} processes x K={top['streams']}",
            f"**{fast_p['best_frames_per_s']:.0f} frames/s**", "-")))
    cpu = result.get("cpu_batch") or {}
    if "best_frames_per_s" in cpu:
        rows.append(readme_row("gpu", "cpu-batch", (
            f"the same batch on that machine's CPUs alone (`--device cpu --jobs {cpu['best_jobs']}`, "
            f"{result.get('cpus', '?')} CPUs; whole stage, start-ups included)",
            f"**{cpu['best_frames_per_s']:.0f} frames/s**", "- (the alternative to the GPU path)")))
    parity = result.get("parity") or []
    if parity:
        worst = max(p[f"{k}_1_minus_corr"] or 0.0 for p in parity for k in KINDS)
        counts = max(p["count_rel_diff"] for p in parity)
        rows.append(readme_row("gpu", "parity", (
            f"parity with the CPU path, {len(parity)} clips", f"counts within {100 * counts:.2f} %, mean profiles "
            f"1 - corr <= {worst:.1e}", "counts within 1 %, 1 - corr < 1e-3")))
    if not rows:
        return []
    return ["| what | measured | target |", "|---|---|---|", *rows, ""]


def _synthetic_clips(out_dir: Path, n: int, frames: int) -> list:
    """Tiny moving-texture MJPG clips (96x72) for ``--emulate``."""
    import cv2

    entries = []
    rng = np.random.default_rng(0)
    for k in range(n):  # a textured square moving over a still textured background (a static camera)
        background = cv2.GaussianBlur(rng.normal(128, 40, (72, 96)).astype(np.float32), (0, 0), 1.0)
        patch = cv2.GaussianBlur(rng.normal(200, 40, (24, 24)).astype(np.float32), (0, 0), 1.0)
        path = out_dir / f"synthetic{k:02d}.avi"
        writer = cv2.VideoWriter(str(path), cv2.CAP_FFMPEG, cv2.VideoWriter_fourcc(*"MJPG"), 25.0, (96, 72))
        for t in range(frames):
            img = background.copy()
            x0, y0 = 10 + ((2 + k % 2) * t) % 50, 10 + ((1 + k % 3) * t) % 30
            img[y0:y0 + 24, x0:x0 + 24] = patch
            writer.write(cv2.cvtColor(np.clip(img, 0, 255).astype(np.uint8), cv2.COLOR_GRAY2BGR))
        writer.release()
        entries.append(types.SimpleNamespace(video_id=path.stem, path=path))
    return entries


def _ints(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x.strip()]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=20, help="kernel timing repeats")
    ap.add_argument("--points", type=int, default=6000, help="points gathered per frame in the kernel timing")
    ap.add_argument("--frames", type=int, default=None, help="frames of vtest for the single-stream run (all)")
    ap.add_argument("--clips", type=int, default=32, help="short clips in the batch")
    ap.add_argument("--clip-frames", type=int, default=100, help="frames per short clip")
    ap.add_argument("--streams", type=_ints, default=[4, 8],
                    help="K values of the batch (comma-separated; K=1 is the one-stream rate, measured apart)")
    ap.add_argument("--video-threads", type=_ints, default=[1, 3, 5],
                    help="IDTParams.threads values of the one-stream runs (comma-separated)")
    ap.add_argument("--decode-threads", type=_ints, default=None, help="CPU threads of the decode rates "
                                                                         "(default 1,4,all CPUs)")
    ap.add_argument("--processes", type=_ints, default=[2, 4],
                    help="P values of the multi-process batch (P processes of 4 streams each; comma-separated)")
    ap.add_argument("--fast-processes", type=_ints, default=[4],
                    help="P values of the fast preset's multi-process batch (P processes of 4 streams each)")
    ap.add_argument("--cpu-jobs", type=_ints, default=None,
                    help="worker processes of the CPU-only batch (comma-separated; default: all CPUs)")
    ap.add_argument("--parts", type=lambda t: set(t.split(",")), default=None,
                    help="run only these parts (comma-separated: " + ",".join(PARTS) + "); default all")
    ap.add_argument("--no-parity", action="store_true", help="skip the CPU-against-device parity runs")
    ap.add_argument("--render", type=Path, nargs="+", metavar="JSON",
                    help="no run: merge these JSON results (a later file's parts replace an earlier's) and write "
                         "the section from them (the parts of several short runs on a lent GPU)")
    ap.add_argument("--batch-worker", type=Path, help=argparse.SUPPRESS)  # one process of batch_processes
    ap.add_argument("--worker-cache", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--worker-params", type=json.loads, help=argparse.SUPPRESS)  # IDTParams.to_dict() as JSON
    ap.add_argument("--worker-share", default="0/1", help=argparse.SUPPRESS)  # i/P: every P-th clip from the i-th
    ap.add_argument("--json", type=Path, help="also write the result here")
    ap.add_argument("--results", type=Path, default=RESULTS, help="the RESULTS.md whose ## gpu section is written")
    ap.add_argument("--no-write", action="store_true", help="print the section instead of writing it")
    ap.add_argument("--emulate", action="store_true",
                    help="no GPU: every code path on tiny synthetic clips over tests/_cuda_on_cpu.py (times mean "
                         "nothing; never writes RESULTS.md)")
    args = ap.parse_args(argv)
    if args.emulate:
        _install_emulator()
    if args.render:
        merged: dict = {}
        for path in args.render:
            part_result = json.loads(path.read_text())
            errors = {**merged.get("errors", {}), **part_result.get("errors", {})}
            merged.update(part_result)
            merged["errors"] = {k: v for k, v in errors.items() if k not in merged or k == "errors"}
        report = section(merged)
        if args.no_write:
            print(report)
        else:
            write_section("## gpu", report, path=args.results)
            print(f"updated ## gpu of {args.results}")
        return 0
    from idtfv.cli import sequential_opencv

    sequential_opencv()  # OpenCV's own thread pool off, as extract-trajectories and idtfv features run it
    if args.batch_worker is not None:
        share = tuple(int(x) for x in args.worker_share.split("/"))
        return _batch_worker(args.batch_worker, args.worker_cache, args.streams[0], args.worker_params, share)
    from idtfv.idt import IDTParams
    from idtfv.idt.device import cuda_available

    if not cuda_available():
        print("error: gpu_bench needs CuPy and a CUDA device (pip install cupy-cuda12x), or --emulate",
              file=sys.stderr)
        return 2
    import cupy as cp

    if args.emulate:
        device_name = "emulated on the CPU (tests/_cuda_on_cpu.py)"
    else:
        props = cp.cuda.runtime.getDeviceProperties(0)
        device_name = props["name"].decode() if isinstance(props["name"], bytes) else str(props["name"])
    import cv2
    import numba

    from _results import stamp

    result = {"machine": platform.node(), "device": device_name, "cupy": getattr(cp, "__version__", "stand-in"),
              "emulated": args.emulate, "cpus": os.cpu_count(), "when": stamp(),
              "versions": f"Python {platform.python_version()}, NumPy {np.__version__}, Numba {numba.__version__}, "
                          f"OpenCV {cv2.__version__}"}
    params = IDTParams(device="cuda")
    work = Path(tempfile.mkdtemp(prefix="idtfv_gpu_bench_"))
    errors = result["errors"] = {}

    def part(key, fn):  # one part failing (a missing codec, ...) must not lose the others' figures
        if args.parts is not None and key not in args.parts | {"clips"}:
            return
        t0 = time.perf_counter()
        print(f"-- {key}", file=sys.stderr, flush=True)
        try:
            result[key] = fn()
        except Exception as exc:  # noqa: BLE001
            errors[key] = f"{type(exc).__name__}: {' '.join(str(exc).split())[:300]}"
        result.setdefault("part_seconds", {})[key] = time.perf_counter() - t0
        if args.json:  # after every part: a run stopped by its time limit keeps what it measured
            args.json.write_text(json.dumps(result, indent=2, default=str) + "\n")

    try:
        if args.emulate:  # tiny: the emulator runs the kernels one thread at a time
            small = IDTParams(device="cuda", track_length=9, scales=2)
            result["setting"] = "emulated: tiny synthetic 96x72 clips, track_length 9, 2 scales"
            clips = _synthetic_clips(work, 4, 20)
            part("kernels", lambda: bench_kernels(1, 300, size=(64, 48)))
            part("single", lambda: bench_single(clips[0].path, small))
            part("fast", lambda: bench_single(clips[0].path, IDTParams.fast(device="cuda", track_length=9, scales=2)))
            part("video_threads", lambda: bench_video_threads(clips[0].path, small, [1, 3]))
            part("launches", lambda: bench_launches(clips[0].path, small, frames=6, repeat=20))
            part("batch", lambda: bench_batch(clips, small, [1, 2], work / "cache", "synthetic, 20 frames"))
            part("batch_threads", lambda: dict(bench_batch(clips, small.replace(threads=2), [2], work / "cache_t",
                                                           "synthetic, 20 frames"), video_threads=2))
            part("decode", lambda: bench_decode(clips, small, [1, 2]))
            part("parity", lambda: [parity(clips[1].path, small.replace(device="cpu"))])
            part("batch_processes", lambda: bench_batch_processes(work, small, [2], 2, work / "cache_p",
                                                                  extra=["--emulate"]))
            part("cpu_batch", lambda: bench_cpu_batch(clips, small, [1, 2], work / "cache_c"))
            part("fast_processes", lambda: bench_batch_processes(
                work, IDTParams.fast(device="cuda", track_length=9, scales=2), [2], 2, work / "cache_fp",
                extra=["--emulate"]))
        else:
            result["setting"] = "default preset (LEAR's settings), 320x240"
            if not VIDEO.exists():
                errors["clips"] = f"{VIDEO} is absent: no single-stream, batch, decode or parity figures"
            else:
                # the parts in the order of what a short run must not lose: the one-stream rate, parity, the batch
                single = params if args.frames is None else params.replace(end=args.frames)
                part("single", lambda: bench_single(VIDEO, single))
                if not args.no_parity:
                    part("parity", lambda: [parity(VIDEOS / name, IDTParams(end=end)) for name, end in PARITY_CLIPS
                                            if (VIDEOS / name).exists()])
                part("launches", lambda: bench_launches(VIDEO, params))
                fast = IDTParams.fast(device="cuda", end=args.frames)  # no keypoints: the camera from flow matches
                part("fast", lambda: bench_single(VIDEO, fast))
                try:
                    clips = make_clips(VIDEO, work, args.clips, args.clip_frames)
                except Exception as exc:  # noqa: BLE001
                    clips = None
                    errors["clips"] = f"{type(exc).__name__}: {' '.join(str(exc).split())[:300]}"
                if clips:
                    source = f"windows of {args.clip_frames} frames of {VIDEO.name}"
                    part("batch", lambda: bench_batch(clips, params, args.streams, work / "cache", source))
                    part("batch_processes", lambda: bench_batch_processes(work, params, args.processes, 4,
                                                                          work / "cache_p"))
                    part("cpu_batch", lambda: bench_cpu_batch(clips, params, args.cpu_jobs or [os.cpu_count() or 1],
                                                              work / "cache_c"))
                    part("fast_processes", lambda: bench_batch_processes(
                        work, IDTParams.fast(device="cuda"), args.fast_processes, 4, work / "cache_fp"))
                part("video_threads", lambda: bench_video_threads(VIDEO, single, args.video_threads))
                if clips:
                    part("batch_threads", lambda: dict(bench_batch(clips, params.replace(threads=3), [4],
                                                                   work / "cache_t", source), video_threads=3))
                    threads = args.decode_threads or sorted({1, 4, os.cpu_count() or 1})
                    part("decode", lambda: bench_decode(clips, params, threads))
                part("kernels", lambda: bench_kernels(args.repeat, args.points))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    text = json.dumps(result, indent=2, default=float)
    print(text)
    if args.json:
        args.json.write_text(text + "\n")
    report = section(result)
    if args.emulate or args.no_write:
        print(report)
    else:
        write_section("## gpu", report, path=args.results)
        print(f"updated ## gpu of {args.results}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
