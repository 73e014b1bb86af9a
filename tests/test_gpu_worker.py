"""The GPU worker of ``idtfv features --device cuda`` (:mod:`idtfv.idt.gpu_worker`): several videos at once, one
thread and CUDA stream each, on the emulated device (``tests/_cuda_on_cpu.py``).

The reference is the extraction of each video alone (``extract(path, IDTParams(device="cuda"))``, i.e. the
stage's per-video function run in the main thread): the files the worker writes must hold those bytes whatever
the other videos on the other streams do. Also: every emulated kernel launch of the run lands on a worker's own
stream (none on the default one), a bad video among good ones is recorded and the rest done, reruns resume and
``--force`` recomputes, and the CPU path does not use the worker.
"""

from __future__ import annotations

import json
import sys
import types

import numpy as np
import pytest

import _cuda_on_cpu
from conftest import write_tiny_video
from idtfv.errors import ParameterError
from idtfv.idt import IDTParams
from idtfv.idt import device as device_mod
from idtfv.idt import gpu_worker, stage
from idtfv.idt.gpu_worker import GpuWorkerOptions

#: Kernel modules imported over the stand-in cupy (removed again after each test).
PARAMS = IDTParams(track_length=9, scales=2, device="cuda")
ARRAYS = ("meta", "traj", "hog", "hof", "mbhx", "mbhy", "info_json")


@pytest.fixture(scope="session")
def build_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("cuda_on_cpu_worker")


@pytest.fixture
def emulated(build_dir, monkeypatch):
    """The stand-in cupy (returned) with every device kernel module imported afresh over it and forgotten
    afterwards (``_cuda_on_cpu.stand_in``)."""
    monkeypatch.setattr(device_mod, "_warned", False)
    with _cuda_on_cpu.stand_in(build_dir, monkeypatch) as cp:
        yield cp


def _entry(video_id, path):
    return types.SimpleNamespace(video_id=video_id, path=path)


def _videos(tmp_path, n=3):
    """``n`` tiny clips of different lengths, textures and motions (and so different trajectory counts)."""
    return [_entry(f"v{k}", write_tiny_video(tmp_path / f"v{k}.avi", frames=14 + 3 * k, width=96, height=72,
                                             seed=k, motion=(2 - k % 2, 1 + k % 2))) for k in range(n)]


def _bad(tmp_path):
    path = tmp_path / "bad.avi"
    path.write_bytes(b"this is not a video\n" * 50)
    return _entry("bad", path)


def _run(entries, tmp_path, *, streams=3, force=False, params=PARAMS, func=None):
    return stage.run_features(entries, {"idt": params.to_dict()}, cache_root=tmp_path / "cache", force=force,
                              gpu=GpuWorkerOptions(gpu_streams=streams), func=func)


def _alone(entry):
    """The reference: the video extracted by itself, in this thread, on the default stream."""
    return stage.features_item(entry, {"idt": PARAMS.to_dict()})


def _assert_same_bytes(path, reference):
    with np.load(path) as saved:
        for name in ARRAYS:
            a, b = saved[name], reference[name]
            assert a.dtype == b.dtype and a.shape == b.shape, name
            assert a.tobytes() == b.tobytes(), name


def test_each_video_equals_its_extraction_alone_and_a_bad_video_is_recorded(emulated, tmp_path, monkeypatch):
    entries = _videos(tmp_path)
    entries.insert(1, _bad(tmp_path))
    # no warm-up in this process first: the threads compile the kernels themselves (the emulator's lock)
    monkeypatch.setattr(stage, "warmup_features", lambda params: None)
    result = _run(entries, tmp_path, streams=3)

    good = [e.video_id for e in entries if e.video_id != "bad"]
    assert result.done == good and not result.skipped
    assert list(result.failed) == ["bad"] and "bad.avi" in result.failed["bad"]
    assert not result.path("bad").exists()
    index = (result.dir / "index.csv").read_text().splitlines()
    assert index[0] == "video_id,status,seconds,error" and sum(",failed," in row for row in index) == 1
    # every launch of the run went to a worker's own stream, and the videos ran on several of them
    launched = dict(emulated.launches)
    assert "null" not in launched and len(launched) >= 2, launched
    # the stage directory is the one of a CPU-less single-stream run: the number of streams is no parameter
    assert result.dir == stage.run_features([], {"idt": PARAMS.to_dict()}, cache_root=tmp_path / "cache",
                                            gpu=GpuWorkerOptions(gpu_streams=1)).dir

    emulated.launches.clear()
    counts = set()
    for entry in entries:
        if entry.video_id == "bad":
            continue
        reference = _alone(entry)
        counts.add(reference["meta"].shape[0])
        assert json.loads(str(reference["info_json"]))["device"] == "cuda"
        _assert_same_bytes(result.path(entry.video_id), reference)
    assert set(emulated.launches) == {"null"}  # the reference really ran on the (emulated) device
    assert len(counts) == len(good) and min(counts) > 20  # different videos, each with trajectories


def test_reruns_resume_and_force_recomputes(emulated, tmp_path, monkeypatch):
    monkeypatch.setattr(stage, "warmup_features", lambda params: None)
    entries = _videos(tmp_path, n=2)
    first = _run(entries, tmp_path, streams=2)
    assert first.done == ["v0", "v1"]
    saved = {e.video_id: first.path(e.video_id).read_bytes() for e in entries}

    emulated.launches.clear()
    again = _run(entries, tmp_path, streams=2)
    assert again.done == [] and again.skipped == ["v0", "v1"] and not emulated.launches  # nothing recomputed

    first.path("v1").unlink()
    (first.dir / ".v1.npz.12345.tmp").write_bytes(b"partial")  # a write a killed run left behind
    resumed = _run(entries, tmp_path, streams=2)
    assert resumed.done == ["v1"] and resumed.skipped == ["v0"]
    assert not (first.dir / ".v1.npz.12345.tmp").exists()

    forced = _run(entries, tmp_path, streams=1, force=True)
    assert forced.done == ["v0", "v1"]
    for entry in entries:  # deterministic: the same bytes from 2 streams and from 1
        assert first.path(entry.video_id).read_bytes() == saved[entry.video_id]


def test_video_threads_with_host_threads_ahead_write_the_files_of_one_thread(emulated, tmp_path, monkeypatch):
    """``IDTParams.threads=2`` on the worker: each video thread runs its keypoints ahead on a host thread of its
    own, and every device call stays on the video threads (the runner's ``idtfv-stage`` threads, each on its own
    stream: none on the default stream, none from a decode or host thread)."""
    monkeypatch.setattr(stage, "warmup_features", lambda params: None)
    entries = _videos(tmp_path, n=3)
    emulated.device_calls.clear()
    result = _run(entries, tmp_path, streams=2, params=PARAMS.replace(threads=2))
    assert result.done == ["v0", "v1", "v2"] and not result.failed
    launched = dict(emulated.launches)
    assert "null" not in launched and len(launched) == 2, launched
    names = {emulated.thread_names[t] for t, calls in emulated.device_calls.items() if calls}
    assert names and all(name.startswith("idtfv-stage") for name in names), names
    for entry in entries:  # the bytes of the video extracted alone with one thread
        _assert_same_bytes(result.path(entry.video_id), _alone(entry))


def test_host_threads_reach_each_video_but_not_the_stage_directory(emulated, tmp_path, monkeypatch):
    """``GpuWorkerOptions.host_threads``: every video runs with ``IDTParams.threads`` = N, the files and the stage
    directory are those of one thread (N is no parameter of the results)."""
    monkeypatch.setattr(stage, "warmup_features", lambda params: None)
    entries = _videos(tmp_path, n=2)
    seen = []

    def recording(entry, params):
        seen.append(params["idt"].get("threads", 1))
        return stage.features_item(entry, params)

    def run(host, cache):
        return stage.run_features(entries, {"idt": PARAMS.to_dict()}, cache_root=tmp_path / cache, func=recording,
                                  gpu=GpuWorkerOptions(gpu_streams=2, host_threads=host))

    two = run(2, "two")
    assert seen == [2, 2] and two.done == ["v0", "v1"]
    seen.clear()
    one = run(1, "one")
    assert seen == [1, 1] and one.dir.name == two.dir.name
    for entry in entries:
        assert two.path(entry.video_id).read_bytes() == one.path(entry.video_id).read_bytes()


def test_threads_per_video_shares_the_cores_out_over_the_streams():
    assert [GpuWorkerOptions(gpu_streams=k).threads_per_video(cores=c) for k, c in
            ((4, 16), (4, 2), (1, 64), (3, 16), (16, 16))] == [4, 1, 8, 5, 1]
    assert GpuWorkerOptions(host_threads=3).threads_per_video(cores=64) == 3
    assert GpuWorkerOptions().threads_per_video() >= 1
    for bad in (0, 33, 2.0, True, "2"):
        with pytest.raises(ParameterError, match="host_threads: expected an integer from 1 to 32"):
            GpuWorkerOptions(host_threads=bad)


def test_cli_features_device_cuda_runs_the_worker(emulated, tmp_path, monkeypatch, capsys):
    from idtfv.cli import main as idtfv_main

    seen = {}
    real = gpu_worker.video_stream

    def counted():
        seen["streams"] = seen.get("streams", 0) + 1
        return real()

    monkeypatch.setattr(gpu_worker, "video_stream", counted)
    entries = _videos(tmp_path, n=2)
    rows = ["video_id,path,label,label_name,group,split1,frames,fps,width,height"] + [
        f"{e.video_id},{e.path.name},0,a,g{k},{'train' if k else 'test'},,,," for k, e in enumerate(entries)]
    (tmp_path / "m.csv").write_text("\n".join(rows) + "\n")
    argv = ["features", "--manifest", str(tmp_path / "m.csv"), "--cache", str(tmp_path / "cache"),
            "--out", str(tmp_path / "f.json"), "--device", "cuda", "--gpu-streams", "2",
            "--track-length", "9", "--scales", "2"]
    assert idtfv_main(argv) == 0
    stamp = json.loads((tmp_path / "f.json").read_text())
    assert stamp["done"] == ["v0", "v1"] and stamp["params"] == {"idt": PARAMS.to_dict()}
    assert seen["streams"] == 2  # each video ran inside the worker's stream
    for entry in entries:
        _assert_same_bytes(tmp_path / "cache" / stamp["dir"].rsplit("/", 1)[1] / f"{entry.video_id}.npz",
                           _alone(entry))


def test_cli_gpu_streams_errors_exit_2_with_one_line(tmp_path, capsys):
    from idtfv.cli import main as idtfv_main

    base = ["features", "--manifest", str(tmp_path / "m.csv"), "--cache", str(tmp_path / "c"),
            "--out", str(tmp_path / "f.json")]
    for extra, message in ((["--gpu-streams", "2"], "error: --gpu-streams 2 needs --device cuda"),
                           (["--gpu-streams", "0"], "error: --gpu-streams: expected an integer from 1 to 64"),
                           (["--gpu-streams", "x"], "error: idtfv features: argument --gpu-streams: invalid int"),
                           (["--host-threads", "3"], "error: --host-threads 3 needs --device cuda"),
                           (["--host-threads", "0"], "error: --host-threads: expected an integer from 1 to 32")):
        assert idtfv_main(base + extra) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith(message), err
    assert not (tmp_path / "c").exists()


def test_options_are_validated():
    assert GpuWorkerOptions().gpu_streams == 4
    for bad in (0, 65, -1, 2.0, True, "4"):
        with pytest.raises(ParameterError, match="gpu_streams: expected an integer from 1 to 64"):
            GpuWorkerOptions(gpu_streams=bad)
    with pytest.raises(TypeError):
        GpuWorkerOptions(4)  # keyword-only


def _stub(entry, params):
    """A cheap stage function (module level, as the runner wants)."""
    return {"x": np.full(3, int(entry.video_id[1:]), np.int64)}


def test_the_cpu_path_does_not_use_the_worker(tmp_path, monkeypatch):
    import idtfv.runner as runner

    def refuse(*args, **kwargs):
        raise AssertionError("the threads engine ran on the CPU path")

    monkeypatch.setattr(runner, "_iter_threads", refuse)
    entries = [_entry(f"v{k}", tmp_path / f"v{k}.avi") for k in range(3)]
    result = _run(entries, tmp_path, params=PARAMS.replace(device="cpu"), func=_stub)
    assert result.done == ["v0", "v1", "v2"]
    assert not gpu_worker.uses_gpu_worker({"device": "cpu"})


def test_auto_uses_the_worker_only_where_cupy_sees_a_device(emulated, monkeypatch, tmp_path):
    assert gpu_worker.uses_gpu_worker({"device": "auto"})
    assert gpu_worker.uses_gpu_worker({"device": "cuda"})
    assert not gpu_worker.uses_gpu_worker({"device": "cuda"}, scheduler="tcp://127.0.0.1:8786")  # Dask as before
    monkeypatch.setitem(sys.modules, "cupy", None)
    with pytest.warns(RuntimeWarning, match="device 'auto': no usable CUDA device"):
        assert not gpu_worker.uses_gpu_worker({"device": "auto"})


def test_the_threads_engine_writes_what_a_serial_run_writes(tmp_path):
    from idtfv.runner import run_stage

    entries = [_entry(f"v{k}", tmp_path / f"v{k}.avi") for k in range(7)]
    entered = []

    class Context:
        def __enter__(self):
            import threading

            entered.append(threading.current_thread().name)

        def __exit__(self, *exc):
            return False

    serial = run_stage("s", _stub, entries, params={"a": 1}, cache_root=tmp_path / "serial")
    threaded = run_stage("s", _stub, entries, params={"a": 1}, cache_root=tmp_path / "threads", threads=3,
                         thread_context=Context)
    assert threaded.done == serial.done == [e.video_id for e in entries]
    for entry in entries:
        assert threaded.path(entry.video_id).read_bytes() == serial.path(entry.video_id).read_bytes()
    assert len(entered) == 7 and all(name.startswith("idtfv-stage") for name in entered)
    with pytest.raises(ParameterError, match="threads must be None or a positive integer"):
        run_stage("s", _stub, entries, params={"a": 1}, cache_root=tmp_path / "x", threads=0)


def test_video_stream_makes_one_stream_per_thread_current(emulated):
    import threading

    labels = {}

    def work(name):
        with gpu_worker.video_stream() as first:
            assert emulated.cuda.get_current_stream() is first and first.non_blocking
        with gpu_worker.video_stream() as second:  # the thread's stream is reused for its next video
            labels[name] = (first.label, second.label)
        assert emulated.cuda.get_current_stream().label == "null"  # restored after the video

    threads = [threading.Thread(target=work, args=(k,)) for k in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert all(a == b for a, b in labels.values()) and len({a for a, _ in labels.values()}) == 3


def test_stage_timer_synchronises_the_stream_only_on_the_device_with_timings(emulated, monkeypatch):
    """bench/gpu_bench.py's per-stage split: on cuda each timed stage waits for the stream before its clock starts
    and stops (two waits per timed stage); untimed runs and the CPU path never wait."""
    from conftest import tiny_frames
    from idtfv.idt import extract

    waits = []
    real = emulated.cuda.get_current_stream

    def current():
        stream = real()
        return types.SimpleNamespace(label=stream.label, synchronize=lambda: waits.append(stream.label))

    monkeypatch.setattr(emulated.cuda, "get_current_stream", current)
    frames = tiny_frames(frames=12, width=96, height=72)
    params = IDTParams(track_length=6, scales=2)
    timed: dict = {}
    plain = extract(frames, params.replace(device="cuda"))
    assert waits == []
    on_device = extract(frames, params.replace(device="cuda"), timings=timed)
    n_timed = len(waits)
    assert n_timed > 0 and n_timed % 2 == 0 and {"flow", "histograms", "tracking", "decode"} <= set(timed)
    assert len(plain) > 0 and on_device.meta.tobytes() == plain.meta.tobytes()  # timing changes no byte
    extract(frames, params, timings={})
    assert len(waits) == n_timed  # the CPU path's timer has no sync


# ---------------------------------------------------------------------------------------------- on a device
@pytest.mark.gpu
@pytest.mark.skipif(not device_mod.cuda_available(), reason="needs CuPy and a CUDA device")
def test_gpu_worker_on_a_device_equals_each_video_alone(tmp_path):
    """Real streams overlap on a real device: each video's file must still hold its bytes alone (no race between
    the streams, no work left behind on a stream when its thread takes the next video)."""
    entries = _videos(tmp_path, n=6)
    entries.insert(2, _bad(tmp_path))
    result = _run(entries, tmp_path, streams=4)
    assert list(result.failed) == ["bad"] and len(result.done) == 6
    for entry in entries:
        if entry.video_id != "bad":
            _assert_same_bytes(result.path(entry.video_id), _alone(entry))


def test_gpu_bench_counts_every_kernel_launch(emulated, tmp_path):
    """bench/gpu_bench.py's launch count (a proxy around each kernel module's ``module()``) must see every launch
    the emulated device runs (its own per-stream counter, an independent count), and leave the modules as found."""
    import importlib
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
    try:
        gpu_bench = importlib.import_module("gpu_bench")
    finally:
        sys.path.pop(0)
    (entry,) = _videos(tmp_path, n=1)
    params = IDTParams(device="cuda", track_length=6, scales=2)
    before = sum(emulated.launches.values())
    out = gpu_bench.bench_launches(entry.path, params, frames=6, repeat=5)
    ran = sum(emulated.launches.values()) - before
    # the 2-frame run, the 6-frame run (its first 2 frames cost what the 2-frame run did) and the timed no-ops
    first_two = out["launches_first_two_frames"]
    counted = first_two + (first_two + out["launches_per_frame"] * out["frames"]) + out["noop_launches"]
    assert out["frames"] == 4 and out["launches_per_frame"] > 10
    assert round(counted) == ran
    assert abs(sum(out["by_kernel"].values()) - out["launches_per_frame"]) < 1e-9
    for name in gpu_bench.KERNEL_MODULES:  # the proxies are gone: module() is the real cached function again
        assert not isinstance(importlib.import_module(name).module(), gpu_bench._CountingModule)


def test_gpu_bench_cpu_batch_counts_the_frames_it_extracted(tmp_path):
    """bench/gpu_bench.py's ``cpu_batch`` (the CPU-only alternative timed on the GPU machine): it needs no device;
    its frame count is the clips' frames (planted: 3 clips of 20 frames), every video is done, and the section and
    the README row report the rate it measured."""
    import importlib
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
    try:
        gpu_bench = importlib.import_module("gpu_bench")
    finally:
        sys.path.pop(0)
    clips = gpu_bench._synthetic_clips(tmp_path, 3, 20)
    out = gpu_bench.bench_cpu_batch(clips, IDTParams(track_length=9, scales=2), [1], tmp_path / "cache")
    (run,) = out["runs"]
    assert run["jobs"] == 1 and run["videos"] == 3 and run["failed"] == 0
    assert run["frames"] == 60
    assert run["frames_per_s"] == pytest.approx(60 / run["seconds"])
    assert out["best_frames_per_s"] == run["frames_per_s"]
    text = gpu_bench.section({"device": "x", "cupy": "y", "machine": "z", "setting": "s", "cpus": 2,
                              "cpu_batch": out})
    rate = f"**{run['frames_per_s']:.0f} frames/s**"
    assert "<!-- readme:gpu:cpu-batch -->" in text and rate in text and "--jobs 1" in text


def test_gpu_bench_section_reports_the_fast_preset_batch_apart():
    """The fast preset's P-process batch (planted figures) gets its own table and README row, and does not enter
    the default preset's batch row (the issue's target is for the default settings)."""
    import importlib
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
    try:
        gpu_bench = importlib.import_module("gpu_bench")
    finally:
        sys.path.pop(0)

    def runs(rate):
        return {"runs": [{"processes": 4, "streams": 2, "video_threads": 1, "frames": 3200, "failed": 0,
                          "seconds": 3200 / rate, "frames_per_s": rate, "whole_seconds": 9.0}],
                "best_frames_per_s": rate, "best_processes": 4, "ucf101_projection_hours": 2.5e6 / rate / 3600,
                "clips_each": "share"}

    text = gpu_bench.section({"device": "x", "cupy": "y", "machine": "z", "setting": "s",
                              "batch_processes": runs(217.0), "fast_processes": runs(812.0)})
    (batch,) = [line for line in text.splitlines() if "readme:gpu:batch -->" in line]
    (fast,) = [line for line in text.splitlines() if "readme:gpu:batch-fast -->" in line]
    assert "**217 frames/s**" in batch and "**812 frames/s**" in fast and "4 processes x K=2" in fast
    assert text.count("Several processes on the one device") == 2 and "`--preset fast`" in text
