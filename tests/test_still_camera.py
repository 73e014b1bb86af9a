"""Still pairs (``IDTParams.still_camera``): a frame pair whose flow-only homography moves no frame corner by more
than ``still_camera`` px takes that fit, detects no keypoints and derives its compensated flow; every other pair
takes the reference's steps, and the bytes do not depend on the thread count.

Planted truth: frames cropped from one textured image, the crop window moved by a known translation (a panning
camera) or not at all (a still one), and flows that are the planted displacement exactly."""

from __future__ import annotations

import threading

import cv2
import numpy as np
import pytest

from idtfv.idt import camera
from idtfv.idt.camera import CameraMotion, compensate_flow, compensated_flows, corner_shift, scale_homography
from idtfv.idt.extractor import extract, iter_trajectories
from idtfv.idt.params import IDTParams

W, H = 160, 120
_BLOCKS = ("meta", "traj", "hog", "hof", "mbhx", "mbhy")


def _scene(seed: int = 0) -> np.ndarray:
    """A textured image (float32) larger than the frames, to crop them from."""
    rng = np.random.default_rng(seed)
    noise = rng.normal(0, 40, (H + 80, W + 120)).astype(np.float32)
    return np.clip(128 + cv2.GaussianBlur(noise, (0, 0), 1.5) * 2.5, 0, 255).astype(np.float32)


def _crop(scene: np.ndarray, x: float, y: float) -> np.ndarray:
    """The ``W`` x ``H`` frame whose pixel (0, 0) is the scene's point (x, y) (bilinear): a camera at (x, y)."""
    M = np.array([[1.0, 0.0, x], [0.0, 1.0, y]])
    return cv2.warpAffine(scene, M, (W, H), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP).round().astype(np.uint8)


def _translation(dx: float, dy: float) -> np.ndarray:
    return np.array([[1.0, 0.0, dx], [0.0, 1.0, dy], [0.0, 0.0, 1.0]])


def _pair(dx: float, dy: float):
    """Frames t-1 and t of a camera that moved by (-dx, -dy): the scene moves by (dx, dy) in the frame; the flow
    is that displacement everywhere (planted)."""
    scene = _scene()
    prev, cur = _crop(scene, 40.0, 30.0), _crop(scene, 40.0 - dx, 30.0 - dy)
    flow = np.empty((H, W, 2), np.float32)
    flow[..., 0], flow[..., 1] = dx, dy
    return prev, cur, flow


class _CountingDetector:
    """The camera's detector, counting its detections."""

    def __init__(self, detector):
        self.detector, self.calls = detector, 0

    def detectAndCompute(self, gray, mask):  # noqa: N802 (OpenCV's name)
        self.calls += 1
        return self.detector.detectAndCompute(gray, mask)


def _camera(**options) -> tuple[CameraMotion, _CountingDetector]:
    cm = CameraMotion(IDTParams(**options).camera(), rng=np.random.default_rng(3))
    counting = _CountingDetector(cm.detector)
    cm.detector = counting
    return cm, counting


# ------------------------------------------------------------------------------------------------ the rule
def test_corner_shift_is_the_largest_move_of_a_frame_corner():
    rng = np.random.default_rng(0)
    corners = np.array([[[0, 0]], [[W - 1, 0]], [[0, H - 1]], [[W - 1, H - 1]]], np.float64)
    for _ in range(50):
        Hm = np.eye(3) + rng.normal(0, [[1e-3, 1e-3, 1.0], [1e-3, 1e-3, 1.0], [1e-6, 1e-6, 0]])
        moved = cv2.perspectiveTransform(corners, Hm)  # the naive reference
        naive = float(np.max(np.hypot(*(moved - corners).reshape(-1, 2).T)))
        assert corner_shift(Hm, W, H) == pytest.approx(naive, rel=1e-9, abs=1e-12)
    assert corner_shift(np.eye(3), W, H) == 0.0
    # a corner sent through infinity (w <= 0) is not a small motion
    assert corner_shift(np.array([[1.0, 0, 0], [0, 1.0, 0], [-1.0 / (W - 1), 0, 1.0]]), W, H) == np.inf


def test_a_still_pair_takes_the_flow_fit_and_detects_no_keypoints():
    prev, cur, flow = _pair(0.1, -0.05)
    cm, counting = _camera()
    cm.features(prev)
    step = cm.step(prev, cur, flow)
    assert step.still and step.inliers > 25
    np.testing.assert_allclose(step.H, _translation(0.1, -0.05), atol=1e-4)
    assert counting.calls == 0  # neither frame's keypoints
    twin, _ = _camera()  # estimate() gives step()'s first three fields
    twin.features(prev)
    H, n, name = twin.estimate(prev, cur, flow)
    assert np.array_equal(H, step.H) and (n, name) == (step.inliers, step.matcher)


def test_a_moving_pair_takes_the_reference_steps():
    prev, cur, flow = _pair(2.0, 1.0)
    cm, counting = _camera()
    cm.features(prev)
    step = cm.step(prev, cur, flow)
    assert not step.still
    assert counting.calls == 2  # frame t-1's keypoints (deferred) and frame t's
    np.testing.assert_allclose(step.H, _translation(2.0, 1.0), atol=0.05)
    # the same pair with still_camera=0 (every pair as the reference): the same keypoints and matches, but its
    # RANSAC draws the generator's first seed where the still test above drew it for the flow-only fit
    ref, ref_counting = _camera(still_camera=0)
    ref.features(prev)
    reference = ref.step(prev, cur, flow)
    assert not reference.still and ref_counting.calls == 2
    np.testing.assert_allclose(reference.H, step.H, atol=0.05)


def test_still_camera_0_never_takes_a_still_pair():
    prev, cur, flow = _pair(0.1, -0.05)
    cm, counting = _camera(still_camera=0)
    cm.features(prev)
    step = cm.step(prev, cur, flow)
    assert not step.still and counting.calls == 2
    np.testing.assert_allclose(step.H, _translation(0.1, -0.05), atol=0.05)


def test_a_rejected_flow_fit_is_not_still():
    """Too few flow matches to fit (the identity, no inliers): not a still camera's pair, the keypoints join."""
    prev, cur, flow = _pair(0.1, -0.05)
    cm, counting = _camera(flow_matches=10)  # <= min_matches (50): no fit from flow matches alone
    cm.features(prev)
    step = cm.step(prev, cur, flow)
    assert not step.still and counting.calls == 2


def test_without_a_detector_the_one_fit_serves_both(monkeypatch):
    """matcher="flow" (the fast preset's camera): one fit per pair, still or not, as before the rule existed."""
    prev, cur, flow = _pair(0.1, -0.05)
    calls = []
    fit = camera._fit
    monkeypatch.setattr(camera, "_fit", lambda *a, **k: (calls.append(1), fit(*a, **k))[1])
    for still_camera, still in ((0.25, True), (0.0, False)):
        cm = CameraMotion(IDTParams(matcher="flow", still_camera=still_camera).camera(), rng=np.random.default_rng(3))
        calls.clear()
        step = cm.step(prev, cur, flow)
        assert step.still is still and len(calls) == 1
        np.testing.assert_allclose(step.H, _translation(0.1, -0.05), atol=1e-4)


def test_a_still_pairs_compensated_flows_are_derived_without_the_band():
    rng = np.random.default_rng(1)
    factors = [1.0, 1.5]
    flows = [rng.normal(0, 1, (int(H / s), int(W / s), 2)).astype(np.float32) for s in factors]
    frame = _crop(_scene(), 40.0, 30.0)
    params = IDTParams().camera()  # recompute, with the 5-px band
    assert params.warp_flow == "recompute" and params.warp_margin == 5

    def no_solve(*args):
        raise AssertionError("a still pair solves no flow")

    Hm = _translation(0.2, 0.1)
    out = compensated_flows(Hm, flows, factors, frame=frame, prev_frame=frame, params=params, recompute=no_solve,
                            refine=no_solve, still=True)
    for got, f, s in zip(out, flows, factors):
        expected = f - np.array([0.2, 0.1], np.float32) / np.float32(s)  # H^-1(x + f) - x for a translation
        np.testing.assert_allclose(got, expected, atol=1e-5)
        np.testing.assert_array_equal(got, compensate_flow(f, scale_homography(Hm, s)))
    same = compensated_flows(np.eye(3), flows, factors, frame=frame, prev_frame=frame, params=params,
                             recompute=no_solve, still=True)
    assert all(a is b for a, b in zip(same, flows))  # H = I: the flows as they are


# ------------------------------------------------------------------------------------------------ extraction
def _pan_then_still(frames: int = 24, moving: int = 10) -> list[np.ndarray]:
    """Frames 0..moving pan (the scene moves 2 px right and 1 px down per frame), the others stand still; a
    textured square moves across the frame the whole time (the action); each frame has its own sensor noise
    (RGB)."""
    scene = _scene(5)
    rng = np.random.default_rng(6)
    square = _scene(7)[:30, :30]
    out = []
    for t in range(frames):
        k = min(t, moving)
        g = _crop(scene, 60.0 - 2.0 * k, 40.0 - 1.0 * k).astype(np.float32) + rng.normal(0, 2.0, (H, W))
        x, y = 20 + 4 * t, 70 - 2 * t
        g[y:y + 30, x:x + 30] = square
        out.append(cv2.cvtColor(np.clip(g, 0, 255).round().astype(np.uint8), cv2.COLOR_GRAY2RGB))
    return out


def _same(a, b) -> bool:
    return all(getattr(a, n).tobytes() == getattr(b, n).tobytes() for n in _BLOCKS) and a.info == b.info


def _count_detections(monkeypatch) -> list:
    seen = []
    detect = camera._detect

    def counting(detector, gray, mask):
        if detector is not None:
            seen.append(threading.current_thread().name)
        return detect(detector, gray, mask)

    monkeypatch.setattr(camera, "_detect", counting)
    return seen


@pytest.mark.parametrize("threads", [1, 2])
def test_a_video_detects_keypoints_only_for_its_moving_pairs(monkeypatch, threads):
    frames = _pan_then_still()
    seen = _count_detections(monkeypatch)
    out = extract(frames, IDTParams(track_length=9, threads=threads))
    # pairs 1..10 pan (2.2 px per frame): the reference's steps, keypoints of frames 0..10; pairs 11..23 are still
    assert out.info["still_pairs"] == 13
    assert len(seen) == 11
    assert out.info["homographies_accepted"] == 23 and len(out) > 50
    reference = extract(frames, IDTParams(track_length=9, still_camera=0))
    assert reference.info["still_pairs"] == 0 and len(seen) == 11 + 24
    # the moving pairs' tracks are the reference steps' (same fits, same flows); the still ones' differ a little
    assert abs(len(out) - len(reference)) <= 0.05 * len(reference)


def test_the_bytes_do_not_depend_on_the_thread_count_with_still_and_moving_pairs():
    frames = _pan_then_still()
    runs = [extract(frames, IDTParams(track_length=9, threads=n)) for n in (1, 2, 3)]
    assert 0 < runs[0].info["still_pairs"] < len(frames) - 1
    assert _same(runs[0], runs[1]) and _same(runs[0], runs[2])


@pytest.mark.parametrize("bad_frame, raises", [(5, True), (15, False)])
def test_a_failed_detection_raises_only_where_a_pair_needs_the_keypoints(monkeypatch, bad_frame, raises):
    """A detection that fails on frame 5 (a panning pair's) stops the run at that frame, with one thread or two;
    on frame 15 (between still pairs) its keypoints are never needed, and the run ends as without the failure."""
    frames = _pan_then_still()
    bad = cv2.cvtColor(frames[bad_frame], cv2.COLOR_RGB2GRAY)
    detect = camera._detect

    def failing(detector, gray, mask):
        if detector is not None and np.array_equal(gray, bad):
            raise cv2.error(f"detection failed on frame {bad_frame}")
        return detect(detector, gray, mask)

    monkeypatch.setattr(camera, "_detect", failing)
    params = IDTParams(track_length=9)
    for threads in (1, 2):
        done = []
        run = iter_trajectories(frames, params.replace(threads=threads), batch_frames=1,
                                on_frame=lambda k, total: done.append(k))
        if raises:
            with pytest.raises(cv2.error, match="frame 5"):
                for _ in run:
                    pass
            assert done[-1] == 5  # after frames 0..4, at its frame
        else:
            assert sum(len(part) for part in run) > 0 and done[-1] == len(frames)
        assert not [t for t in threading.enumerate() if t.name == "idt-front"]
