"""``IDTParams.threads``: a front thread running ahead and the per-level steps shared out give the bytes of one
thread, errors stay those of one thread and stop it, and the option stays out of the results and (when 1) out of
the parameter dicts."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import threading

import numpy as np
import pytest

from conftest import SHARED, requires_shared, tiny_frames
from idtfv.idt.extractor import extract, iter_trajectories, level_groups
from idtfv.idt.params import IDTParams
from idtfv.idt.pyramid import pyramid_geometry


def test_threads_stay_out_of_the_parameter_dicts():
    assert "threads" not in IDTParams().to_dict()
    assert IDTParams(threads=3).to_dict()["threads"] == 3
    assert IDTParams.from_dict(IDTParams(threads=3).to_dict()) == IDTParams(threads=3)
    with pytest.raises(Exception, match="threads"):
        IDTParams(threads=0)


def test_level_groups_share_the_area_out():
    _, sizes = pyramid_geometry(320, 240, scales=8, scale_factor=2 ** 0.5, patch=32)
    assert level_groups(sizes, 1) == [tuple(range(len(sizes)))]
    two = level_groups(sizes, 2)
    assert sorted(s for g in two for s in g) == list(range(len(sizes)))
    area = [sum(sizes[s][0] * sizes[s][1] for s in g) for g in two]
    assert two[0] == (0,) and max(area) / min(area) < 1.1  # level 0 alone weighs about the others together
    assert level_groups(sizes[:2], 8) == [(0,), (1,)]


@pytest.mark.parametrize("preset, options", [("default", {"threads": 2}), ("fast", {"threads": 2}),
                                             ("default", {"threads": 3, "detect_humans": True, "detect_every": 2})])
def test_more_threads_give_the_bytes_of_one(preset, options):
    frames = tiny_frames(frames=24, width=160, height=120, motion=(2, 1))
    make = IDTParams if preset == "default" else IDTParams.fast
    one = extract(frames, make(**{k: v for k, v in options.items() if k != "threads"}))
    two = extract(frames, make(**options))
    assert len(one) > 0
    for name in ("meta", "traj", "hog", "hof", "mbhx", "mbhy"):
        assert getattr(one, name).tobytes() == getattr(two, name).tobytes(), name
    assert one.info == two.info and "threads" not in two.info["params"]


# ------------------------------------------------------------------------------------- the front thread
_BLOCKS = ("meta", "traj", "hog", "hof", "mbhx", "mbhy")
VTEST = SHARED / "reference" / "videos" / "vtest_320x240.avi"


def _same(a, b) -> bool:
    return all(getattr(a, n).tobytes() == getattr(b, n).tobytes() for n in _BLOCKS) and a.info == b.info


def _front_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "idt-front"]


@requires_shared
@pytest.mark.parametrize("preset, options", [("default", {}), ("default", {"still_camera": 0}), ("fast", {})])
def test_threads_1_2_3_give_the_same_bytes_on_a_real_clip(preset, options):
    make = IDTParams if preset == "default" else IDTParams.fast
    runs = [extract(VTEST, make(start=100, end=130, threads=n, **options)) for n in (1, 2, 3)]
    assert len(runs[0]) > 100  # not vacuous: tracks finished on the real clip's levels
    assert runs[0].info["homographies_accepted"] > 0
    assert _same(runs[0], runs[1]) and _same(runs[0], runs[2])


@pytest.mark.parametrize("options", [{"flow": "dis"}, {"farneback_impl": "opencv"}, {"warp_flow": "refine"},
                                     {"matcher": "flow"}, {"camera_motion": False}])
def test_the_front_thread_gives_the_bytes_of_one_with_other_options(options):
    # DIS cannot look ahead (the front thread keeps the one-thread order of its calls), OpenCV's Farnebäck can;
    # the others change what the front thread hands over (no keypoints, no homography)
    frames = tiny_frames(frames=16, width=160, height=120, motion=(2, 1))
    one = extract(frames, IDTParams(**options))
    two = extract(frames, IDTParams(threads=2, **options))
    assert len(one) > 0 and _same(one, two)


def _failing_frames(frames, at: int, error: BaseException):
    for k, f in enumerate(frames):
        if k == at:
            raise error
        yield f


@pytest.mark.parametrize("make_frames, error", [
    (lambda frames: _failing_frames(frames, 9, OSError("decode error at frame 9")), "decode error at frame 9"),
    (lambda frames: [f if k != 9 else f[:-8] for k, f in enumerate(frames)],
     r"frame 9 has size \(160, 112\), expected \(160, 120\)"),
])
def test_an_error_mid_video_is_the_one_of_one_thread_and_ends_the_front_thread(make_frames, error):
    frames = tiny_frames(frames=16, width=160, height=120, motion=(2, 1))
    messages = []
    for n in (1, 2, 3):
        with pytest.raises(Exception, match=error) as caught:
            extract(make_frames(frames), IDTParams(threads=n))
        messages.append((type(caught.value), str(caught.value)))
        for t in _front_threads():
            t.join(5)
        assert not _front_threads()  # stopped, not left hanging
    assert messages[0] == messages[1] == messages[2]


def test_a_consumer_that_stops_early_stops_the_front_thread():
    frames = tiny_frames(frames=40, width=160, height=120, motion=(2, 1))
    batches = iter_trajectories(list(frames), IDTParams(threads=2), batch_frames=1)
    next(batches)
    assert _front_threads()
    batches.close()  # the generator's finally closes the pipeline
    assert not _front_threads()


def test_the_front_thread_solves_the_next_flow_beside_the_warped_flow(monkeypatch):
    """The invariant behind the speed-up: frame t+1's flow starts while the main thread's warped flow of frame t
    is still running. The warped flow here waits (up to 10 s) for the next frame's flow to start; had the two
    solves stayed in order it would wait for nothing and time out."""
    from idtfv.idt.flow.farneback import FarnebackPyramidFlow

    started = []  # frames whose flow solve started (FarnebackPyramidFlow.step calls)
    seen = []  # for each warped flow: did the next frame's solve start while it ran?
    cond = threading.Condition()
    step, side = FarnebackPyramidFlow.step, FarnebackPyramidFlow.flow_from_previous

    def counting_step(self, pyramid, **kw):
        with cond:
            started.append(len(started))
            cond.notify_all()
        return step(self, pyramid, **kw)

    def waiting_side(self, pyramid, **kw):
        t = len(seen) + 1  # frame t's warped flow: frames 0..t have started; wait for t+1's
        with cond:
            seen.append(cond.wait_for(lambda: len(started) >= t + 2, timeout=10))
        return side(self, pyramid, **kw)

    monkeypatch.setattr(FarnebackPyramidFlow, "step", counting_step)
    monkeypatch.setattr(FarnebackPyramidFlow, "flow_from_previous", waiting_side)
    frames = tiny_frames(frames=10, width=160, height=120, motion=(3, 1))
    # still_camera=0: every pair solves its warped flow (this clip's camera is still: none would)
    two = extract(frames, IDTParams(threads=2, warp_margin=5, still_camera=0))
    assert len(seen) >= 6 and all(seen[:-1])  # every frame but the last has a next one to wait for
    monkeypatch.setattr(FarnebackPyramidFlow, "flow_from_previous", side)
    assert _same(extract(frames, IDTParams(warp_margin=5, still_camera=0)), two)


@pytest.mark.parametrize("pattern", ["always", "never", "alternate"])
def test_the_main_threads_share_made_ahead_or_not_gives_the_same_bytes(monkeypatch, pattern):
    """Whether the front thread makes a frame's HOG histograms and corner responses depends on who is ahead (a
    matter of timing); every mix of frames where it did and did not gives the bytes of one thread."""
    from idtfv.idt import extractor as ex

    made = []

    def ahead(self, k):
        made.append(pattern == "always" or (pattern == "alternate" and k % 2 == 0))
        return made[-1]

    monkeypatch.setattr(ex._FrontThread, "_ahead", ahead)
    frames = tiny_frames(frames=14, width=160, height=120, motion=(2, 1))
    one = extract(frames, IDTParams())
    assert _same(one, extract(frames, IDTParams(threads=2)))
    assert len(made) == 13 and sum(made) == {"always": 13, "never": 0, "alternate": 6}[pattern]


@pytest.mark.parametrize("pattern", ["always", "never", "alternate"])
def test_keypoints_made_by_the_main_thread_give_the_same_bytes(monkeypatch, pattern):
    """A frame's keypoint job (:class:`_KeypointJob`) run by another thread with its twin detector, for every mix
    of frames (the main thread takes jobs as timing allows), gives the bytes of one thread."""
    from idtfv.idt import extractor as ex

    ran_elsewhere = []
    keypoints = ex._FrontThread._keypoints

    def elsewhere(self, k, gray, job):
        if job is not None and (pattern == "always" or (pattern == "alternate" and k % 2 == 0)):
            assert job.claim()
            twin = ex._make_detector(self.steps.camera.matcher_name, self.steps.camera_params)[0]
            t = threading.Thread(target=job.run, args=(self.steps, twin))
            t.start()
            t.join()
            ran_elsewhere.append(k)
        return keypoints(self, k, gray, job)

    monkeypatch.setattr(ex._FrontThread, "_keypoints", elsewhere)
    monkeypatch.setattr(ex._FrontThread, "_help", lambda self: False)
    frames = tiny_frames(frames=14, width=160, height=120, motion=(2, 1))
    params = IDTParams(still_camera=0)  # every frame's keypoints detected ahead (no still pairs)
    assert _same(extract(frames, params), extract(frames, params.replace(threads=2)))
    assert len(ran_elsewhere) == {"always": 13, "never": 0, "alternate": 6}[pattern]


def _record_homographies(monkeypatch):
    """Record ``(frame, thread name, whether the frame before's was done)`` of every homography job run."""
    from idtfv.idt import extractor as ex

    runs = []
    run = ex._HomographyJob.run

    def recording(self, steps):
        runs.append((self._args[0], threading.current_thread().name, self.ready()))
        return run(self, steps)

    monkeypatch.setattr(ex._HomographyJob, "run", recording)
    return runs


@pytest.mark.parametrize("who", ["front", "main", "slow front", "slow main"])
def test_homographies_made_by_either_thread_give_the_same_bytes_in_frame_order(monkeypatch, who):
    """With keypoints, a frame's homography (:class:`_HomographyJob`) is made by the front thread while it is
    ahead and by the main thread otherwise: every mix gives the bytes of one thread, and the jobs run once each,
    in frame order, each after the frame before's is done (the camera's state and RANSAC's generator)."""
    import time

    from idtfv.idt import extractor as ex
    from idtfv.idt.flow.farneback import FarnebackPyramidFlow

    frames = tiny_frames(frames=16, width=160, height=120, motion=(2, 1))
    one = extract(frames, IDTParams())
    runs = _record_homographies(monkeypatch)
    if who == "front":  # whenever the frame before's is done
        monkeypatch.setattr(ex, "_HOMOGRAPHY_AHEAD", 0)
    elif who == "main":  # never ahead enough
        monkeypatch.setattr(ex, "_HOMOGRAPHY_AHEAD", 10**6)
    elif who == "slow front":
        step = FarnebackPyramidFlow.step
        monkeypatch.setattr(FarnebackPyramidFlow, "step",
                            lambda self, pyr, **kw: (time.sleep(0.03), step(self, pyr, **kw))[1])
    else:
        track = ex._Steps.track
        monkeypatch.setattr(ex._Steps, "track", lambda self, *a, **k: (time.sleep(0.03), track(self, *a, **k))[1])
    assert _same(one, extract(frames, IDTParams(threads=2)))
    assert [k for k, _, _ in runs] == list(range(1, 16)) and all(ready for _, _, ready in runs)
    by_main = sum(name == "MainThread" for _, name, _ in runs)
    if who == "main":
        assert by_main == 15
    elif who == "slow front":
        assert by_main >= 10  # the main thread waits for every frame: nobody is ahead
    elif who == "slow main":
        assert by_main <= 5  # the front thread is ahead (two items queued) nearly all the time


def test_without_keypoints_the_front_thread_makes_the_homographies(monkeypatch):
    """Flow matches only (the fast preset's camera): the front thread estimates each homography before it queues
    the frame, as it always did (handing them over slowed both threads there); no job is made."""
    runs = _record_homographies(monkeypatch)
    frames = tiny_frames(frames=12, width=160, height=120, motion=(2, 1))
    params = IDTParams.fast()
    assert params.camera_motion and params.matcher == "flow"
    assert _same(extract(frames, params), extract(frames, params.replace(threads=2)))
    assert runs == []


def test_the_main_thread_makes_each_frames_corner_response_as_it_takes_the_frame(monkeypatch):
    """The front thread's homography of frames (k-1, k) takes its flow matches' corners from frame k-1's corner
    response. Here it starts only once the main thread has taken frame k-1, and so before that thread's step 7
    (where the response was made before: then the front thread made it itself). The main thread has made it as it
    took the frame, so the front thread makes no full-size response at all, and the bytes are those of one
    thread."""
    from idtfv.idt import extractor as ex
    from idtfv.idt import sampling

    monkeypatch.setattr(sampling, "_RESPONSES", {})  # nothing remembered from other tests' frames
    made = []  # (thread name, shape) of every response computed
    min_eigen = sampling._min_eigen

    def recording(gray):
        made.append((threading.current_thread().name, gray.shape))
        return min_eigen(gray)

    monkeypatch.setattr(sampling, "_min_eigen", recording)
    monkeypatch.setattr(ex._FrontThread, "_ahead", lambda self, k: False)  # no responses made ahead of the main one
    taken = [0]  # the last frame the main thread took
    waited = []
    cond = threading.Condition()
    take, homography = ex._FrontThread.__next__, ex._Steps.homography

    def taking(self):
        item = take(self)
        with cond:
            taken[0] = self.frame_num
            cond.notify_all()
        return item

    def after_the_take(self, frame_num, *args):
        with cond:
            waited.append(cond.wait_for(lambda: taken[0] >= frame_num - 1, timeout=10))
        return homography(self, frame_num, *args)

    frames = tiny_frames(frames=12, width=160, height=120, motion=(2, 1))
    params = IDTParams.fast()
    assert params.camera_motion and params.flow_matches > 0
    one = extract(frames, params)
    made.clear()
    monkeypatch.setattr(sampling, "_RESPONSES", {})  # nor from that run's
    monkeypatch.setattr(ex._FrontThread, "__next__", taking)
    monkeypatch.setattr(ex._Steps, "homography", after_the_take)
    two = extract(frames, params.replace(threads=2))
    assert _same(one, two)
    assert len(waited) == 11 and all(waited)
    full = [name for name, shape in made if shape == (120, 160)]
    assert full.count("idt-front") == 0 and full.count("MainThread") == 12  # each frame's, once, all on this thread


@pytest.mark.parametrize("ahead", [0, 10**6])
def test_a_failed_homography_is_raised_at_its_frame_by_either_thread(monkeypatch, ahead):
    """A homography that raises (made by the front thread, or by the main one) stops the run at its frame with its
    own error, after the frames before it, as on one thread."""
    from idtfv.idt import extractor as ex

    homography = ex._Steps.homography

    def failing(self, frame_num, *args):
        if frame_num == 6:
            raise ValueError("homography of frame 6 failed")
        return homography(self, frame_num, *args)

    monkeypatch.setattr(ex._Steps, "homography", failing)
    monkeypatch.setattr(ex, "_HOMOGRAPHY_AHEAD", ahead)
    frames = tiny_frames(frames=12, width=160, height=120, motion=(2, 1))
    seen = {}
    for threads in (1, 2):
        done = []
        with pytest.raises(ValueError, match="frame 6 failed"):
            for _ in iter_trajectories(frames, IDTParams(threads=threads), batch_frames=1,
                                       on_frame=lambda i, total: done.append(i)):
                pass
        seen[threads] = done[-1]
        assert not [t for t in threading.enumerate() if t.name == "idt-front"]
    assert seen[1] == seen[2] == 6


def test_the_main_thread_makes_keypoints_while_it_waits(monkeypatch):
    """With a slow front thread (its flow solves made to sleep), the main thread, waiting for items, takes frames'
    keypoint jobs (``_help``), and the bytes stay those of one thread."""
    import time

    from idtfv.idt import extractor as ex
    from idtfv.idt.flow.farneback import FarnebackPyramidFlow

    helped = []
    help_, step = ex._FrontThread._help, FarnebackPyramidFlow.step

    def counting_help(self):
        done = help_(self)
        helped.append(done)
        return done

    def slow_step(self, pyramid, **kw):
        time.sleep(0.03)
        return step(self, pyramid, **kw)

    frames = tiny_frames(frames=14, width=160, height=120, motion=(2, 1))
    params = IDTParams(still_camera=0)  # every frame's keypoints detected ahead (no still pairs)
    one = extract(frames, params)
    monkeypatch.setattr(ex._FrontThread, "_help", counting_help)
    monkeypatch.setattr(FarnebackPyramidFlow, "step", slow_step)
    assert _same(one, extract(frames, params.replace(threads=2)))
    assert sum(helped) >= 3


@pytest.mark.parametrize("preset", ["default", "fast"])
def test_the_main_thread_prepares_frames_while_it_waits(monkeypatch, preset):
    """With a slow front thread (its flow solves made to sleep) the main thread, waiting for items, makes the next
    frames' pyramids and flow preparations (:class:`_PrepJob`, taken in ``_help``), and the bytes stay those of one
    thread; with ``_help`` off the front thread makes every one itself, the same bytes."""
    import time

    from idtfv.idt import extractor as ex
    from idtfv.idt.flow.farneback import FarnebackPyramidFlow

    ran = []
    run, step = ex._PrepJob.run, FarnebackPyramidFlow.step

    def recording(self, steps):
        ran.append((self.frame_num, threading.current_thread().name))
        return run(self, steps)

    def slow_step(self, pyramid, **kw):
        time.sleep(0.03)
        return step(self, pyramid, **kw)

    make = IDTParams if preset == "default" else IDTParams.fast
    frames = tiny_frames(frames=14, width=160, height=120, motion=(2, 1))
    one = extract(frames, make())
    monkeypatch.setattr(ex._PrepJob, "run", recording)
    monkeypatch.setattr(FarnebackPyramidFlow, "step", slow_step)
    assert _same(one, extract(frames, make(threads=2)))
    assert sum(name == "MainThread" for _, name in ran) >= 3  # the main thread took some
    assert len({k for k, _ in ran}) == len(ran)  # each frame's made once
    ran.clear()
    monkeypatch.setattr(ex._FrontThread, "_help", lambda self: False)
    assert _same(one, extract(frames, make(threads=2)))
    assert ran == []  # unclaimed: the front thread's step prepares each frame, as without the jobs


def test_the_front_thread_reuses_its_arrays_so_memory_does_not_grow_with_the_length(monkeypatch):
    from idtfv.idt import extractor as ex

    fresh, reused = [], []
    hogs_ahead = ex._Steps.hogs_ahead

    def counting(self, pyr, out=None):
        (fresh if out is None else reused).append(1)
        return hogs_ahead(self, pyr, out)

    monkeypatch.setattr(ex._FrontThread, "_ahead", lambda self, k: True)
    monkeypatch.setattr(ex._Steps, "hogs_ahead", counting)
    extract(tiny_frames(frames=40, width=96, height=72, motion=(1, 1)), IDTParams(threads=2))
    # frames in flight: the main thread's, one queued, one on the front thread (and the one being recycled)
    assert len(fresh) + len(reused) == 39 and len(fresh) <= 5


_POOL = textwrap.dedent("""
    import subprocess, sys
    import cv2
    from idtfv.cli import sequential_opencv
    before = cv2.getNumThreads()
    sequential_opencv()  # cv2 already imported: told directly; a new process: through the environment
    child = subprocess.run([sys.executable, "-c", "import cv2; print(cv2.getNumThreads())"], capture_output=True,
                           text=True, check=True)
    print(before, cv2.getNumThreads(), int(child.stdout))
""")


@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="OpenCV's pool has one thread on one core anyway")
@pytest.mark.parametrize("user", [None, "2"])
def test_commands_keep_opencvs_pool_off_in_themselves_and_their_workers_unless_the_user_sets_it(user):
    """--threads and --jobs are the one level of parallelism: OpenCV's own pool (a thread per core) stays off in
    the command's process and in the processes it starts, unless OPENCV_FOR_THREADS_NUM says otherwise."""
    env = {k: v for k, v in os.environ.items() if k != "OPENCV_FOR_THREADS_NUM"}
    if user is not None:
        env["OPENCV_FOR_THREADS_NUM"] = user
    out = subprocess.run([sys.executable, "-c", _POOL], capture_output=True, text=True, env=env, check=True)
    before, now, child = map(int, out.stdout.split())
    if user is None:
        assert before > 1 and now == child == 1
    else:
        assert before == now == child == 2


_BLAS = textwrap.dedent("""
    import contextlib, io, os, sys
    from idtfv.idt.cli import main
    with contextlib.redirect_stdout(io.StringIO()):
        main(["--help"])
    import numpy  # noqa: F401  (OpenBLAS reads its variable here)
    from threadpoolctl import threadpool_info
    print(max([p["num_threads"] for p in threadpool_info() if p["internal_api"] == "openblas"] or [-1]))
""")


@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="OpenBLAS has one thread on one core anyway")
@pytest.mark.parametrize("user", [None, "2"])
def test_extract_trajectories_starts_no_idle_blas_threads_unless_the_user_asks(user):
    """One video's extraction makes only tiny BLAS calls: extract-trajectories sets OPENBLAS_NUM_THREADS=1 before
    NumPy's import (its threads spin after each call), unless the user set it."""
    pytest.importorskip("threadpoolctl")
    env = {k: v for k, v in os.environ.items() if k != "OPENBLAS_NUM_THREADS"}
    if user is not None:
        env["OPENBLAS_NUM_THREADS"] = user
    out = subprocess.run([sys.executable, "-c", _BLAS], capture_output=True, text=True, env=env, check=True)
    threads = int(out.stdout.split()[-1])
    if threads == -1:
        pytest.skip("NumPy here does not use OpenBLAS")
    assert threads == (1 if user is None else 2)


def test_the_extractors_own_threads_tune_their_heap_arenas(monkeypatch):
    """Every thread the extractor starts on the CPU (the front thread, the level workers of 3+ threads) backs its
    malloc arena with huge pages as it starts (:func:`idtfv.allocator.tune_thread_heap`); the bytes are those of
    one thread."""
    import idtfv.idt.extractor as extractor

    names = []
    monkeypatch.setattr(extractor, "tune_thread_heap", lambda: names.append(threading.current_thread().name))
    frames = tiny_frames(frames=20, width=160, height=120, motion=(2, 1))
    one = extract(frames, IDTParams())
    assert names == []
    three = extract(frames, IDTParams(threads=3))
    assert "idt-front" in names and any(n.startswith("idt-level") for n in names)
    assert threading.main_thread().name not in names
    np.testing.assert_array_equal(one.hog, three.hog)
    np.testing.assert_array_equal(one.traj, three.traj)
