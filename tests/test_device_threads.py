"""``IDTParams(device="cuda", threads=N)`` on the emulated device (``tests/_cuda_on_cpu.py``): the host's work on
the frames runs ahead on host threads (``idtfv.idt.extractor._HostAhead``: decoding, human masks, keypoints) and
every device call stays on the main thread.

References: the one-thread extraction (the same bytes for N = 2, 3), the error one thread raises (the same, at the
same frame, nothing left running), and the invariant that no kernel launch, allocation or copy of the stand-in
``cupy`` happens on another thread than the one that called ``extract`` (the stand-in records the thread of each;
a deliberately moved device step must break it).
"""

from __future__ import annotations

import threading

import cv2
import numpy as np
import pytest

import _cuda_on_cpu
from conftest import SHARED, tiny_frames
from idtfv.idt import camera as camera_mod
from idtfv.idt import device as device_mod
from idtfv.idt.device import cuda_available
from idtfv.idt import extractor as ex
from idtfv.idt.extractor import extract, iter_trajectories
from idtfv.idt.params import IDTParams

PARAMS = IDTParams(track_length=9, scales=2, device="cuda")
BLOCKS = ("meta", "traj", "hog", "hof", "mbhx", "mbhy")
AHEAD_THREADS = ("idt-decode", "idt-host")
VTEST = SHARED / "reference" / "videos" / "vtest_320x240.avi"


@pytest.fixture(scope="session")
def build_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("cuda_on_cpu_threads")


@pytest.fixture
def emulated(build_dir, monkeypatch):
    monkeypatch.setattr(device_mod, "_warned", False)
    with _cuda_on_cpu.stand_in(build_dir, monkeypatch) as cp:
        yield cp


def _clip(frames=16):
    return tiny_frames(frames=frames, width=96, height=72, motion=(2, 1))


def _same(a, b) -> bool:
    return all(getattr(a, n).tobytes() == getattr(b, n).tobytes() for n in BLOCKS) and a.info == b.info


def _ahead_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith(AHEAD_THREADS)]


def _off_thread_calls(cp, ident: int) -> dict:
    """The device calls (``cupy.device_calls``) made by threads other than ``ident``: ``{thread name: calls}``."""
    return {cp.thread_names[t]: calls for t, calls in cp.device_calls.items() if t != ident}


def _extract_on_this_thread(cp, frames, params):
    """``extract`` with the stand-in's record of device calls cleared first; the run and the calls of other
    threads than this one."""
    cp.device_calls.clear()
    out = extract(frames, params)
    return out, _off_thread_calls(cp, threading.get_ident())


@pytest.mark.parametrize("options", [{}, {"camera_motion": False}, {"detect_humans": True, "detect_every": 2},
                                     {"matcher": "flow"}, {"farneback_impl": "opencv"}])
def test_threads_1_2_3_give_the_bytes_of_one_and_only_the_main_thread_drives_the_device(emulated, options):
    # {} is the default device path (pyramid, flows, warp, pools on the device); camera off: nothing to detect
    # ahead; human boxes: masks made in order on the decode thread; matcher=flow: no keypoints, only the flow
    # matches' corner response ahead; opencv's Farnebäck: a host flow, only the pools' kernels on the device
    params = PARAMS.replace(**options)
    one, off = _extract_on_this_thread(emulated, _clip(), params)
    assert not off
    launches = sum(n for calls in emulated.device_calls.values() for c, n in calls.items() if c.startswith("launch"))
    assert launches > 100 and len(one) > 20  # not vacuous: the run was on the device and tracks finished
    for n in (2, 3):
        run, off = _extract_on_this_thread(emulated, _clip(), params.replace(threads=n))
        assert _same(one, run), n
        assert not off, off  # no launch, allocation or copy on the decode thread or a host thread
    if options.get("camera_motion", True):
        assert one.info["homographies_accepted"] > 0
    assert not _ahead_threads()


def test_keypoints_run_on_the_host_threads_several_frames_ahead(emulated, monkeypatch):
    """The work that left the main thread: each frame's keypoints are detected on one of the N - 1 host threads
    (never on the main thread), and the decode thread runs ahead of the main thread by up to 2 N frames."""
    detected = []
    ahead_of_main = []
    real = ex._detect

    def detect(detector, gray, mask):
        detected.append(threading.current_thread().name)
        return real(detector, gray, mask)

    monkeypatch.setattr(ex, "_detect", detect)
    monkeypatch.setattr(camera_mod, "_detect", detect)  # (camera.detected_ahead's: still pairs possible)
    real_next = ex._HostAhead.__next__

    def next_(self):
        item = real_next(self)
        ahead_of_main.append(self._items.qsize())
        return item

    monkeypatch.setattr(ex._HostAhead, "__next__", next_)
    frames = _clip(24)
    run = extract(frames, PARAMS.replace(threads=3))
    assert len(detected) == len(frames) - 1  # every frame after the first (the first: on the main thread)
    assert set(detected) <= {"idt-host_0", "idt-host_1"}  # never the main thread
    assert max(ahead_of_main) > 1 and max(ahead_of_main) <= 2 * 3  # ahead, and bounded
    assert len(run) > 20


def test_stage_timings_synchronise_only_on_the_main_thread(emulated):
    """``timings`` on the device synchronise the current stream around each stage (``_Timer.sync``); the
    decode and host threads time their stages too, and must not (their current stream is not the video's)."""
    emulated.device_calls.clear()
    timings: dict = {}
    extract(_clip(), PARAMS.replace(threads=2), timings=timings)
    assert timings["decode"] > 0 and timings["camera"] > 0
    main = emulated.device_calls[threading.get_ident()]
    assert main.get("synchronize", 0) > 0  # the main thread's stages do synchronise
    assert not _off_thread_calls(emulated, threading.get_ident())


def _failing_frames(frames, at: int, error: BaseException):
    for k, f in enumerate(frames):
        if k == at:
            raise error
        yield f


def _failing_detection(monkeypatch, bad_gray):
    """The keypoint detector fails on one frame's pixels, on the main thread (one thread) or ahead."""
    def detect(detector, gray, mask, _real=camera_mod._detect):
        if np.array_equal(gray, bad_gray):
            raise cv2.error("detection failed on the bad frame")
        return _real(detector, gray, mask)

    monkeypatch.setattr(camera_mod, "_detect", detect)
    monkeypatch.setattr(ex, "_detect", detect)


@pytest.mark.parametrize("kind", ["decode", "size", "detection"])
def test_an_error_mid_video_is_the_one_of_one_thread_and_stops_the_threads_ahead(emulated, monkeypatch, kind):
    frames = _clip(20)
    if kind == "decode":
        def make():
            return _failing_frames(frames, 9, OSError("decode error at frame 9"))
    elif kind == "size":
        def make():
            return [f if k != 9 else f[:-8] for k, f in enumerate(frames)]
    else:
        _failing_detection(monkeypatch, cv2.cvtColor(frames[9], cv2.COLOR_RGB2GRAY))

        def make():
            return frames

    # still_camera=0: every frame's keypoints are needed (a still pair's are not: test_threads.py checks that)
    params = PARAMS.replace(still_camera=0)
    messages, seen = [], []
    for n in (1, 2, 3):
        done = []
        with pytest.raises(Exception) as caught:
            for part in iter_trajectories(make(), params.replace(threads=n), batch_frames=1,
                                          on_frame=lambda k, total: done.append(k)):
                pass
        messages.append((type(caught.value), str(caught.value)))
        seen.append(done)
        assert not _ahead_threads()  # stopped and joined, not left running
    assert messages[0] == messages[1] == messages[2]
    assert seen[0] == seen[1] == seen[2] == list(range(1, 10))  # raised at frame 9, after the frames before it
    if kind == "size":
        assert "frame 9 has size" in messages[0][1]


def test_a_consumer_that_stops_early_leaves_no_thread_behind(emulated):
    batches = iter_trajectories(list(_clip(40)), PARAMS.replace(threads=3), batch_frames=1)
    next(batches)
    assert _ahead_threads()
    batches.close()  # the generator's finally closes the stage ahead
    assert not _ahead_threads()


def test_a_device_step_moved_onto_a_host_thread_breaks_the_invariant(emulated, monkeypatch):
    """The mutation check of the invariant above: build (and upload) each frame's pyramid on the host thread
    that detects its keypoints, and hand it to the main thread. The output bytes stay the same, so only the
    record of device calls can tell: it must name the host thread."""
    made = {}
    real_keypoints = ex._HostAhead._keypoints
    real_pyramid = ex._Steps.pyramid

    def keypoints(self, gray, mask):
        made[id(gray)] = real_pyramid(self.steps, gray)  # the device step, now ahead
        return real_keypoints(self, gray, mask)

    def pyramid(self, gray):
        return made.pop(id(gray), None) or real_pyramid(self, gray)

    one, off = _extract_on_this_thread(emulated, _clip(), PARAMS)
    assert not off
    monkeypatch.setattr(ex._HostAhead, "_keypoints", keypoints)
    monkeypatch.setattr(ex._Steps, "pyramid", pyramid)
    two, off = _extract_on_this_thread(emulated, _clip(), PARAMS.replace(threads=2))
    assert _same(one, two)
    assert set(off) == {"idt-host_0"}, off
    assert any(c.startswith("launch resize_u8") for c in off["idt-host_0"]) and "asarray" in off["idt-host_0"]


def test_gpu_bench_times_the_threads_and_checks_their_bytes(emulated, tmp_path):
    """bench/gpu_bench.py's ``video_threads`` item (the figure a GPU session reports): one run per N, each
    compared with the first N's bytes, and a changed output is reported as such."""
    import importlib
    import sys
    from pathlib import Path

    from conftest import write_tiny_video

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
    try:
        gpu_bench = importlib.import_module("gpu_bench")
    finally:
        sys.path.pop(0)
    video = write_tiny_video(tmp_path / "v.avi", frames=14, width=96, height=72)
    out = gpu_bench.bench_video_threads(video, PARAMS, [1, 2])
    assert [r["threads"] for r in out["runs"]] == [1, 2]
    assert all(r["same_as_first"] and r["frames"] == 14 and r["frames_per_s"] > 0 for r in out["runs"])
    assert "| 2 | 14 |" in gpu_bench.section({"device": "x", "cupy": "y", "machine": "z", "setting": "s",
                                               "video_threads": out})


@pytest.mark.slow
@pytest.mark.skipif(not VTEST.exists(), reason="needs the shared reference clips (../shared)")
def test_a_real_clip_gives_the_bytes_of_one_thread(emulated):
    params = IDTParams(device="cuda", track_length=9, start=100, end=114)
    one, off = _extract_on_this_thread(emulated, VTEST, params)
    two, off2 = _extract_on_this_thread(emulated, VTEST, params.replace(threads=3))
    assert len(one) > 50 and one.info["homographies_accepted"] > 0
    assert _same(one, two) and not off and not off2


# ---------------------------------------------------------------------------------------------- on a device
@pytest.mark.gpu
@pytest.mark.skipif(not cuda_available(), reason="needs CuPy and a CUDA device")
def test_gpu_threads_give_the_bytes_of_one_on_a_videos_own_stream():
    """On a real device, inside a non-blocking stream as on the GPU worker: threads 1 and 3 give the same bytes
    (a launch off the video's stream would race with it)."""
    from idtfv.idt.gpu_worker import video_stream

    runs = []
    for n in (1, 3):
        with video_stream():
            runs.append(extract(_clip(24), PARAMS.replace(threads=n)))
    assert len(runs[0]) > 20 and _same(runs[0], runs[1])
