"""The extractor on planted motion: known displacements, static scenes, camera pans; invariants; determinism."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import cv2
import numpy as np
import pytest

from idtfv import idt
from idtfv.idt import IDTParams, Trajectories
from idtfv.errors import ParameterError, VideoError
from idtfv.idt import _tracking_nb as nb
from idtfv.idt.extractor import STAGES
from idtfv.idt.flow import build_pyramid, make_pyramid_flow
from idtfv.idt.pyramid import pyramid_geometry
from idtfv.idt.sampling import dense_sample
from idtfv.idt.tracking import TrackPool

SIZE = 96
FRAMES = 20


def _canvas(seed=0, h=SIZE * 3, w=SIZE * 3):
    rng = np.random.default_rng(seed)
    img = cv2.GaussianBlur(rng.uniform(0, 255, (h, w)).astype(np.float32), (0, 0), 2.0)
    return cv2.normalize(img, None, 10, 245, cv2.NORM_MINMAX)


def _crop(canvas, x, y, size=SIZE):
    """The size x size window whose top-left corner is at (x, y) (sub-pixel, bilinear)."""
    M = np.float32([[1, 0, -x], [0, 1, -y]])
    return cv2.warpAffine(canvas, M, (size, size), flags=cv2.INTER_LINEAR)


def pan_frames(d=(1.5, -0.75), frames=FRAMES, seed=0):
    """The whole frame translates by d px per frame (a camera pan over a static textured scene)."""
    canvas = _canvas(seed)
    x0, y0 = SIZE, SIZE
    return [np.clip(_crop(canvas, x0 - d[0] * t, y0 - d[1] * t), 0, 255).astype(np.uint8) for t in range(frames)]


def object_frames(d=(2.0, 1.0), frames=FRAMES, seed=0):
    """A textured 40x40 square moving by d px per frame over a static textured background."""
    bg = _canvas(seed)[:SIZE, :SIZE]
    obj = _canvas(seed + 1, 60, 60)
    out = []
    for t in range(frames):
        img = bg.copy()
        x, y = 16 + d[0] * t, 16 + d[1] * t
        M = np.float32([[1, 0, x - 10], [0, 1, y - 10]])
        warped = cv2.warpAffine(obj, M, (SIZE, SIZE), flags=cv2.INTER_LINEAR)
        m = cv2.warpAffine(np.ones((60, 60), np.float32), M, (SIZE, SIZE), flags=cv2.INTER_LINEAR)
        m[:] = 0
        xi, yi = int(round(x)), int(round(y))
        m[yi:yi + 40, xi:xi + 40] = 1
        img = img * (1 - m) + warped * m
        out.append(np.clip(img, 0, 255).astype(np.uint8))
    return out


def _check_invariants(t: Trajectories, params: IDTParams, n_frames: int):
    assert t.meta.dtype == np.float32 and t.hog.shape[1] == 96 and t.hof.shape[1] == 108
    for name in ("hog", "hof", "mbhx", "mbhy"):
        a = getattr(t, name)
        assert (a >= 0).all()
        blocks = a.reshape(len(a), params.nt_cells, -1)
        sq = (blocks.astype(np.float64) ** 2).sum(-1)
        assert (sq <= 1 + 1e-4).all()  # each temporal cell: a mean of unit-norm blocks
    assert ((t.meta[:, 7:10] >= 0) & (t.meta[:, 7:10] <= 0.999)).all()
    assert (t.meta[:, 0] >= params.track_length).all() and (t.meta[:, 0] < n_frames).all()
    np.testing.assert_allclose(np.abs(t.traj).reshape(len(t), -1, 2).__pow__(2).sum(-1).__pow__(0.5).sum(1), 1,
                               rtol=1e-4)


def test_pan_without_compensation_tracks_known_displacement():
    d = (1.5, -0.75)
    p = IDTParams(camera_motion=False)
    t = idt.extract(pan_frames(d), p)
    assert len(t) > 100
    _check_invariants(t, p, FRAMES)
    L = p.track_length
    # traj = per-step displacement / summed magnitude: each step is d / (L |d|)
    norm = math.hypot(*d)
    np.testing.assert_allclose(np.median(t.traj[:, 0::2], 0), d[0] / (L * norm), rtol=0.05)
    np.testing.assert_allclose(np.median(t.traj[:, 1::2], 0), d[1] / (L * norm), rtol=0.05)
    # length (summed step length) and std of positions of a uniform motion over L+1 points
    np.testing.assert_allclose(np.median(t.meta[:, 5]), L * norm, rtol=0.03)
    sd = np.std(np.arange(L + 1))
    np.testing.assert_allclose(np.median(t.meta[:, 3]), abs(d[0]) * sd, rtol=0.03)
    np.testing.assert_allclose(np.median(t.meta[:, 4]), abs(d[1]) * sd, rtol=0.03)
    np.testing.assert_allclose(np.unique(t.meta[:, 6]), [math.sqrt(2) ** i for i in range(4)], rtol=1e-6)


def test_pan_is_removed_by_camera_compensation():
    frames = pan_frames((1.5, -0.75))
    without = idt.extract(frames, IDTParams(camera_motion=False))
    with_cm = idt.extract(frames, IDTParams(matcher="orb"))
    assert with_cm.info["homographies_accepted"] >= FRAMES - 3
    assert len(with_cm) <= 0.05 * len(without)


def test_static_scene_gives_nothing():
    frames = [pan_frames()[0]] * FRAMES
    assert len(idt.extract(frames, IDTParams())) == 0
    assert len(idt.extract(frames, IDTParams(camera_motion=False))) == 0


def test_moving_object_over_static_background():
    d = (2.0, 1.0)
    p = IDTParams()
    t = idt.extract(object_frames(d), p)
    assert len(t) > 5
    _check_invariants(t, p, FRAMES)
    L = p.track_length
    # tracks inside the object move with it (those on its border are dragged partly, as flow is smooth there)
    steps = (t.traj.reshape(len(t), L, 2) * t.meta[:, 5, None, None]).mean(1)  # traj * length = mean step
    close = np.linalg.norm(steps - d, axis=1) < 0.2
    assert close.mean() > 0.25
    long = t.meta[:, 5] > 0.8 * L * math.hypot(*d)
    np.testing.assert_allclose(np.median(steps[long], axis=0), d, atol=0.1)
    # the background does not move: no track moves against the object
    assert (steps @ np.array(d) > -0.5).all()


def test_deterministic_bytes_and_streaming(tmp_path):
    frames = object_frames()
    p = IDTParams(seed=3)
    a = idt.extract(frames, p)
    b = idt.extract(frames, p)
    pa, pb = a.save(tmp_path / "a.npz"), b.save(tmp_path / "b.npz")
    assert pa.read_bytes() == pb.read_bytes()
    parts = list(idt.iter_trajectories(iter(frames), p, batch_frames=2))
    c = idt.concatenate(parts)
    np.testing.assert_array_equal(c.hog, a.hog)
    np.testing.assert_array_equal(c.meta[:, :9], a.meta[:, :9])
    assert np.isnan(c.meta[:, 9]).all()  # a generator's length is unknown while streaming
    np.testing.assert_array_equal(idt.extract(iter(frames), p).meta, a.meta)  # extract fills t_pos in
    assert a.info["matcher"] in ("akaze", "surf") and a.info["frames"] == FRAMES
    json.dumps(a.info)


def test_batches_bounded_in_rows():
    """``batch_rows``: a batch is yielded once it holds that many trajectories (or ``batch_frames`` frames went by),
    so each batch but the last ends at the first frame where its count reached the bound; the rows, concatenated,
    are those of one batch per frame, in order."""
    frames = object_frames()
    p = IDTParams(seed=3)
    per_frame = [t for t in idt.iter_trajectories(iter(frames), p, batch_frames=1) if len(t)]  # (the last: empty)
    ends = [int(t.meta[0, 0]) for t in per_frame]  # each per-frame batch's frame (all its rows end there)
    assert all((t.meta[:, 0] == e).all() for t, e in zip(per_frame, ends))
    counts = dict(zip(ends, (len(t) for t in per_frame)))
    bound = 3 * max(1, int(np.median(list(counts.values()))))
    parts = list(idt.iter_trajectories(iter(frames), p, batch_frames=10_000, batch_rows=bound))
    assert 1 < len(parts) < len(per_frame)  # not vacuous: batches of several frames, more than one
    # planted truth from the per-frame counts: where each batch must end
    want_sizes, size = [], 0
    for e in ends:
        size += counts[e]
        if size >= bound:
            want_sizes.append(size)
            size = 0
    want_sizes.append(size)  # the last batch, yielded at the end whatever its size (it carries the final info)
    assert [len(t) for t in parts] == want_sizes
    assert all(len(t) >= bound for t in parts[:-1])
    whole, parted = idt.concatenate(per_frame), idt.concatenate(parts)
    np.testing.assert_array_equal(parted.meta, whole.meta)
    np.testing.assert_array_equal(parted.mbhy, whole.mbhy)
    with pytest.raises(ParameterError, match="batch_rows"):
        next(idt.iter_trajectories(iter(frames), p, batch_rows=0))


def test_colour_frames_and_video_file(tiny_video):
    path = tiny_video(frames=18, width=64, height=48)
    t = idt.extract(path, IDTParams(matcher="orb"))
    assert t.info["frames"] == 18 and t.info["width"] == 64
    from idtfv.video import iter_frames

    u = idt.extract(list(iter_frames(path)), IDTParams(matcher="orb"))
    np.testing.assert_array_equal(t.meta, u.meta)


def test_bad_inputs(tmp_path):
    with pytest.raises(VideoError):
        idt.extract([np.zeros((40, 40), np.uint8)])
    with pytest.raises(VideoError, match="uint8"):
        idt.extract([np.zeros((40, 40), np.float32)] * 3)
    with pytest.raises(VideoError):
        idt.extract(tmp_path / "missing.avi")
    with pytest.raises(ParameterError):
        idt.extract(pan_frames(), "not params")
    with pytest.raises(VideoError, match="smaller than the 32-px"):
        idt.extract([np.zeros((20, 40), np.uint8)] * 3)


def test_params_validation_and_serialisation():
    p = IDTParams()
    assert (p.track_length, p.stride, p.scales, p.patch, p.min_inliers) == (15, 5, 8, 32, 25)
    assert IDTParams.from_dict(json.loads(json.dumps(p.to_dict()))) == p
    f = IDTParams.fast()
    assert (f.flow, f.matcher, f.warp_flow, f.farneback_iterations) == ("farneback", "flow", "subtract", 1)
    for bad in [dict(track_length=0), dict(track_length=16), dict(flow="lk"), dict(quality=-1.0),
                dict(median_ksize=4), dict(end=0), dict(resize_width=3), dict(boxes="a", detect_humans=True),
                dict(scale_factor=1.0), dict(stride=2.5), dict(min_matches=-1), dict(warp_margin=-1.0),
                dict(detect_every=0), dict(humans_cache=3)]:
        with pytest.raises(ParameterError, match=next(iter(bad))):
            IDTParams(**bad)
    with pytest.raises(ParameterError, match="unknown"):
        IDTParams.from_dict({"bogus": 1})


@pytest.mark.parametrize("size,n", [((320, 240), 6), ((176, 144), 5), ((160, 120), 4), ((20, 20), 1)])
def test_pyramid_geometry_matches_reference_scale_counts(size, n):
    factors, sizes = pyramid_geometry(*size)
    assert len(factors) == n and sizes[0] == size
    np.testing.assert_allclose(factors, [math.sqrt(2) ** i for i in range(n)])
    img = np.zeros(size[::-1], np.uint8)
    assert [lvl.shape[::-1] for lvl in build_pyramid(img, sizes)] == sizes


def test_dense_sample_against_naive():
    rng = np.random.default_rng(0)
    img = cv2.GaussianBlur(rng.uniform(0, 255, (43, 57)).astype(np.float32), (0, 0), 1.0).astype(np.uint8)
    img[:, 30:] = 100  # a flat region gets no points
    existing = np.array([[7.2, 3.9], [22.0, 12.5], [56.5, 42.0]], np.float32)
    got = dense_sample(img, existing, stride=5, quality=0.001)
    eig = cv2.cornerMinEigenVal(img, 3, ksize=3)
    thr = eig.max() * 0.001
    occupied = {(int(y) // 5, int(x) // 5) for x, y in existing if x < 55 and y < 40}
    want = [(j * 5 + 2, i * 5 + 2) for i in range(43 // 5) for j in range(57 // 5)
            if (i, j) not in occupied and eig[i * 5 + 2, j * 5 + 2] > thr]
    np.testing.assert_array_equal(got, np.array(want, np.float32).reshape(-1, 2))
    assert (got[:, 0] < 30).all()


def test_track_pool_step_against_naive():
    rng = np.random.default_rng(0)
    h, w, L = 20, 30, 4
    flow = rng.normal(0, 3, (h, w, 2)).astype(np.float32)
    flow_w = rng.normal(0, 1, (h, w, 2)).astype(np.float32)
    pool = TrackPool(L, 3, capacity=4)
    pts = rng.uniform(0.5, [w - 0.5, h - 0.5], (10, 2)).astype(np.float32)
    pool.add(pts)  # grows past the capacity
    rows, prev = pool.step(flow, flow_w)
    np.testing.assert_array_equal(prev, pts[rows])
    for k, p in enumerate(pts):
        x, y = np.clip(np.rint(p).astype(int), 0, [w - 1, h - 1])
        q = p + flow[y, x]
        inside = 0 < q[0] < w and 0 < q[1] < h
        assert (k in rows) == inside
        if inside:
            np.testing.assert_array_equal(pool.pos[k, 1], q)
            np.testing.assert_array_equal(pool.disp[k, 0], flow_w[y, x])
    assert len(pool) == len(rows)


def test_validate_tracks_against_naive():
    rng = np.random.default_rng(1)
    L, n, scale = 15, 200, math.sqrt(2)
    steps = rng.normal(0, 1.5, (n, L, 2)) * rng.uniform(0, 3, (n, 1, 1))
    steps[:20, 7] = 30  # one big jump
    pos = np.concatenate([np.full((n, 1, 2), 50.0), 50 + np.cumsum(steps, 1)], 1).astype(np.float32)
    disp = (steps * rng.uniform(0, 1, (n, 1, 1))).astype(np.float32)
    meta = np.zeros((n, 6), np.float32)
    traj = np.zeros((n, 2 * L), np.float32)
    keep = np.zeros(n, bool)
    nb.validate_tracks(pos, disp, scale, math.sqrt(3), 50.0, 20.0, 0.7, 1.0, True, meta, traj, keep)
    for k in range(n):
        P = pos[k].astype(np.float64) * scale
        sd = P.std(0)
        st = np.linalg.norm(np.diff(P, axis=0), axis=1)
        D = disp[k].astype(np.float64) * scale
        dn = np.linalg.norm(D, axis=1)
        ok = (not (sd < math.sqrt(3)).all() and not (sd > 50).any()
              and not (st.max() > 20 and st.max() > 0.7 * st.sum()) and dn.max() > 1.0)
        assert keep[k] == ok
        if ok:
            np.testing.assert_allclose(meta[k], [*P.mean(0), *sd, st.sum(), scale], rtol=1e-4)
            np.testing.assert_allclose(traj[k], (D / dn.sum()).ravel(), rtol=1e-4, atol=1e-6)
    assert 0 < keep.sum() < n


@pytest.mark.parametrize("opts,name", [(dict(farneback_impl="opencv"), "OpenCVFarnebackPyramidFlow"),
                                       (dict(), "NumbaFarnebackPyramidFlow"),
                                       (dict(flow="dis", dis_per_level=True), "DISPyramidFlow"),
                                       (dict(flow="tvl1"), "TVL1PyramidFlow")])
def test_every_pyramid_flow_keeps_the_protocol(opts, name):
    """Every solver: None on the first frame, then each level's flow from the previous frame; for
    warp_flow='recompute' the second solve (flow_from_previous) starts from frame t-1, like the first."""
    p = IDTParams(**opts)
    frames = pan_frames((1.0, 0.5), frames=3)
    _, sizes = pyramid_geometry(SIZE, SIZE)
    fp = make_pyramid_flow(p.pyramid_flow())
    assert fp.name == name  # recorded as info["flow_impl"] (kept from before the package redesign)
    pyrs = [build_pyramid(f, sizes) for f in frames]
    with pytest.raises(ParameterError, match="needs two frames"):
        fp.flow_from_previous(pyrs[0])
    assert fp(pyrs[0]) is None
    fp(pyrs[1])
    f2 = fp(pyrs[2])
    assert [f.shape for f in f2] == [(h, w, 2) for w, h in sizes] and all(f.dtype == np.float32 for f in f2)
    again = fp.flow_from_previous(pyrs[2])
    for a, b in zip(f2, again):
        np.testing.assert_array_equal(a, b)
    for f, s in zip(f2, [math.sqrt(2) ** i for i in range(len(sizes))]):  # the pan, in each level's pixels
        inner = (slice(10, -10), slice(10, -10))
        np.testing.assert_allclose(np.median(f[inner].reshape(-1, 2), 0), np.array([1.0, 0.5]) / s, atol=0.06)
    with pytest.raises(ParameterError, match="differ from the previous frame"):
        fp(pyrs[2][:-1])


def test_pyramid_flow_params_are_the_extractors_fields():
    from idtfv.idt import params
    from idtfv.idt.flow import PyramidFlowParams, pyramid_flow

    assert IDTParams().pyramid_flow() == PyramidFlowParams()  # same defaults
    assert pyramid_flow.PYRAMID_FLOW_METHODS == params.FLOW_METHODS
    assert pyramid_flow.FARNEBACK_IMPLS == params.FARNEBACK_IMPLS
    q = IDTParams.fast(flow="dis", median_ksize=3, dis_per_level=True).pyramid_flow()
    assert (q.method, q.median_ksize, q.dis_per_level, q.farneback_poly_n) == ("dis", 3, True, 5)
    with pytest.raises(ParameterError, match="PyramidFlowParams.median_ksize"):
        PyramidFlowParams(median_ksize=7)  # cv2.medianBlur filters float flow with 3 or 5 only
    assert pyramid_flow.MEDIAN_KSIZES == params.MEDIAN_KSIZES
    with pytest.raises(ParameterError, match="IDTParams.median_ksize"):
        IDTParams(median_ksize=7)  # refused where the option is read, naming it
    with pytest.raises(TypeError):
        PyramidFlowParams("dis")  # keyword-only
    with pytest.raises(ParameterError, match="PyramidFlowParams"):
        make_pyramid_flow(IDTParams())


def test_new_points_only_every_init_gap_frames():
    """Tracks start only on sampling frames: with init_gap=3, every track started 0, 3, 6, ... frames after the
    first, so it ends L frames later on such a frame; with init_gap=1 tracks start on other frames too."""
    frames = object_frames(frames=30)
    L = 15
    gaps = idt.extract(frames, IDTParams(init_gap=3, camera_motion=False))
    born = gaps.meta[:, 0].astype(int) - L
    assert len(born) > 20 and len(set(born)) > 1 and (born % 3 == 0).all()
    every = idt.extract(frames, IDTParams(init_gap=1, camera_motion=False))
    assert (every.meta[:, 0].astype(int) % 3 != 0).any()


def test_timings_and_callbacks():
    frames = object_frames(frames=18)
    timings, seen, live = {}, [], []
    t = idt.extract(frames, IDTParams(), timings=timings, on_frame=lambda i, n: seen.append((i, n)),
                    on_tracks=lambda fn, gray, pos, index: live.append((fn, gray.shape, pos.shape, index.max())))
    assert set(timings) == set(STAGES) and all(v >= 0 for v in timings.values())
    assert seen == [(i, 18) for i in range(1, 19)]
    assert [fn for fn, *_ in live] == list(range(1, 18))
    assert all(shape == (SIZE, SIZE) and p[1:] == (16, 2) and 0 <= m <= 15 for _, shape, p, m in live)
    assert len(t) > 0


def test_track_pool_running_sums_equal_temporal_pool():
    """Summing blocks per temporal cell as tracks go = idtfv.idt.descriptors.temporal_pool of the stored blocks."""
    from idtfv.idt.descriptors import temporal_pool

    rng = np.random.default_rng(2)
    L, D, n = 15, 7, 5
    pool = TrackPool(L, D, 3, capacity=16)
    pool.add(rng.uniform(10, 20, (n, 2)).astype(np.float32))
    zero = np.zeros((40, 40, 2), np.float32)
    zero[..., 0] = 0.1
    blocks = rng.uniform(0, 1, (L, n, D)).astype(np.float32)
    for i in range(L):
        rows, _ = pool.step(zero, zero)
        pool.store_descriptors(rows, blocks[i][rows])
    pos, disp, desc = pool.pop_finished()
    assert len(pool) == 0 and desc.shape == (n, 3, D)
    np.testing.assert_allclose(desc.reshape(n, -1), temporal_pool(blocks.transpose(1, 0, 2), 3), rtol=1e-6)
    np.testing.assert_allclose(pos[:, -1, 0] - pos[:, 0, 0], 1.5, rtol=1e-5)


def test_frame_range_and_resize():
    frames = object_frames(frames=30)
    t = idt.extract(frames, IDTParams(start=5, end=27))
    assert t.info["frames"] == 22 and t.meta[:, 0].min() >= 5 + 15 and t.meta[:, 0].max() <= 26
    np.testing.assert_allclose(t.meta[:, 9], np.clip((t.meta[:, 0] - 5 - 7.5) / 22, 0, 0.999), rtol=1e-6)
    small = idt.extract(frames, IDTParams(resize_width=64, end=20))
    assert (small.info["width"], small.info["height"]) == (64, 64)
    assert (small.meta[:, 1] < 64).all()


def test_human_boxes_io_and_mask(tmp_path):
    from idtfv.idt.humans import HOGPeopleDetector, box_mask, load_boxes, save_boxes

    boxes = {0: np.array([[2, 3, 10, 12, 0.9]], np.float32), 4: np.array([[0, 0, 5, 5, 1], [20, 20, 30, 25, 1]],
                                                                         np.float32)}
    path = tmp_path / "b.txt"
    save_boxes(path, boxes)
    back = load_boxes(path)
    assert sorted(back) == [0, 4]
    np.testing.assert_allclose(back[4], boxes[4][:, :4])
    m = box_mask((30, 40), back[0])
    assert m.dtype == np.uint8 and m[3:13, 2:11].max() == 0 and m[20:, 20:].min() == 255
    assert m.sum() == 255 * (30 * 40 - 10 * 9)
    assert box_mask((30, 40), None) is None
    det = HOGPeopleDetector()
    out = det(np.full((120, 160), 128, np.uint8))  # a flat frame: no people
    assert out.shape == (0, 4)


@pytest.mark.parametrize("opts", [dict(flow="tvl1"), dict(flow="dis"), dict(farneback_impl="opencv"),
                                  dict(warp_flow="recompute"), dict(matcher="flow")])
def test_other_flow_and_camera_options_track_the_object(opts):
    d = (2.0, 1.0)
    t = idt.extract(object_frames(d, frames=17), IDTParams(**opts))
    assert len(t) > 5
    steps = (t.traj.reshape(len(t), 15, 2) * t.meta[:, 5, None, None]).mean(1)
    assert (np.linalg.norm(steps - d, axis=1) < 0.3).mean() > 0.2


def test_detect_humans_every_k_frames_and_cache_round_trip(tmp_path, monkeypatch):
    """Detection runs every k frames (boxes held in between), the boxes land in a LEAR box file keyed by the
    video, and a second run reads them instead of detecting; a changed video is detected again."""
    from idtfv.idt import humans as hm

    frames = np.asarray(object_frames(frames=17))
    video = tmp_path / "clip.avi"
    wr = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 10, (frames.shape[2], frames.shape[1]))
    for f in frames:
        wr.write(cv2.cvtColor(f, cv2.COLOR_GRAY2BGR) if f.ndim == 2 else f)
    wr.release()
    calls = []

    class FakeDetector:  # a planted "person": a box whose x grows with the frame it was detected on
        def __init__(self, *a, **k):
            pass

        def __call__(self, gray):
            calls.append(1)
            x = float(len(calls))
            return np.array([[x, 2.0, x + 10.0, 20.0]], np.float32)

    monkeypatch.setattr(hm, "HOGPeopleDetector", FakeDetector)
    import sys

    monkeypatch.setattr(sys.modules["idtfv.idt.extractor"], "HOGPeopleDetector", FakeDetector)
    cache = tmp_path / "cache"
    p = IDTParams(detect_humans=True, detect_every=4, humans_cache=str(cache))
    t1 = idt.extract(video, p)
    n = t1.info["frames"]
    assert len(calls) == len(range(0, n, 4))  # frames 0, 4, 8, ...
    det = t1.info["detected_humans"]
    assert sorted(int(k) for k in det) == list(range(n))  # every frame has (held) boxes
    for f in range(n):  # held: frame f carries the detection of frame 4 * (f // 4), the (f // 4 + 1)-th call
        np.testing.assert_allclose(det[str(f)][0][0], 1 + f // 4)
    path = Path(t1.info["humans_cache"]["path"])
    assert path.parent == cache and path.name.endswith(".boxes.txt") and not t1.info["humans_cache"]["hit"]
    from idtfv.idt.humans import load_boxes

    on_disk = load_boxes(path)
    assert sorted(on_disk) == list(range(n))
    np.testing.assert_allclose(on_disk[5], [[2.0, 2.0, 12.0, 20.0]])
    # second run: read from the cache, no detection, same boxes and identical trajectories
    t2 = idt.extract(video, p)
    assert len(calls) == len(range(0, n, 4)) and t2.info["humans_cache"]["hit"]
    assert t2.info["detected_humans"] == det
    np.testing.assert_array_equal(t1.hog, t2.hog)
    # the key follows the video (size/mtime) and the settings
    assert hm.boxes_cache_path(video, cache, start=0, end=None, resize_width=None, every=4) == path
    assert hm.boxes_cache_path(video, cache, start=0, end=None, resize_width=None, every=2) != path
    os.utime(video, ns=(1, 1))
    assert hm.boxes_cache_path(video, cache, start=0, end=None, resize_width=None, every=4) != path
    # no cache when disabled
    t3 = idt.extract(video, p.replace(humans_cache=""))
    assert "humans_cache" not in t3.info and len(calls) == 2 * len(range(0, n, 4))


def test_results_do_not_record_where_the_video_lives(tmp_path):
    """Identical videos in two directories give byte-identical info (issue 11, item 19)."""
    from conftest import write_tiny_video

    a = write_tiny_video(tmp_path / "one" / "clip.avi", frames=20, motion=(2, 1))
    b = tmp_path / "two" / "deeper" / "clip.avi"
    b.parent.mkdir(parents=True)
    b.write_bytes(a.read_bytes())
    params = IDTParams.fast()
    ia = idt.extract(a, params=params).as_arrays()["info_json"]
    ib = idt.extract(b, params=params).as_arrays()["info_json"]
    assert str(ia) == str(ib) and str(tmp_path) not in str(ia)
