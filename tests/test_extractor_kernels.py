"""The extractor's fused kernels against the plain ones they replace, bit for bit: the four integral histograms in
one pass, the four descriptor blocks of all points in one call, ``cv2.goodFeaturesToTrack`` from a remembered
corner response, and the track pool's birth order kept without sorting (naive references written here)."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from conftest import SHARED, requires_shared
from idtfv.idt import _histograms_nb as hnb
from idtfv.idt import descriptors as D
from idtfv.idt import sampling
from idtfv.idt.camera import good_features
from idtfv.idt.tracking import TrackPool


def _same_bits(a, b):
    a, b = np.asarray(a), np.asarray(b)
    return a.shape == b.shape and a.dtype == b.dtype and np.array_equal(a.view(np.uint32), b.view(np.uint32))


def _frame(h, w, seed):
    rng = np.random.default_rng(seed)
    gray = np.round(rng.random((h, w)) * 255).astype(np.float32)
    gray[: h // 2] = np.round(cv2.GaussianBlur(gray[: h // 2], (7, 7), 2))  # smooth half: runs of equal bins
    flow = (rng.normal(size=(h, w, 2)) * 1.5).astype(np.float32)
    flow[: h // 3, : w // 3] *= 0.1  # the HOF zero bin
    flow[h // 2] = 0.0  # exact zeros
    return gray, flow


# ------------------------------------------------------------------------------------------- integral histograms
@pytest.mark.parametrize("bins", [(8, 8, 8), (5, 1, 1), (3, 2, 7), (8, 8, 9)])
@pytest.mark.parametrize("h, w", [(61, 83), (2, 2), (3, 40)])
def test_fused_histograms_equal_the_per_channel_kernels(bins, h, w):
    hog_bins, hof_nbins, mbh_bins = bins
    gray, flow = _frame(h, w, h * w + hog_bins)
    min_flow = np.float32(0.4)
    want = [np.empty((h + 1, w + 1, n), np.float32) for n in (hog_bins, hof_nbins + 1, mbh_bins, mbh_bins)]
    hnb.gradient_integral_histogram(gray[:, :, None], 0, hog_bins, want[0])
    hnb.flow_integral_histogram(flow, hof_nbins, min_flow, want[1])
    hnb.gradient_integral_histogram(flow, 0, mbh_bins, want[2])
    hnb.gradient_integral_histogram(flow, 1, mbh_bins, want[3])
    for g in (gray, gray.astype(np.uint8)):  # uint8 frames are converted pixel by pixel, exactly
        got = [np.full_like(a, np.nan) for a in want]
        hnb.frame_integral_histograms(np.ascontiguousarray(g)[:, :, None], flow, hog_bins, hof_nbins, mbh_bins,
                                      min_flow, *got)
        assert all(_same_bits(a, b) for a, b in zip(want, got))
        halves = [np.full_like(a, np.nan) for a in want]  # the fused kernel's two halves (--threads' front thread)
        hnb.hog_integral_histogram(np.ascontiguousarray(g)[:, :, None], hog_bins, halves[0])
        hnb.motion_integral_histograms(flow, hof_nbins, mbh_bins, min_flow, *halves[1:])
        assert all(_same_bits(a, b) for a, b in zip(want, halves))
    assert want[1][-1, -1, -1] > 0  # not vacuous: zero-bin votes, and gradients unless the frame is all border
    assert want[0][-1, -1].sum() > 0 or min(h, w) == 2


def test_frame_histograms_of_a_uint8_frame_equal_those_of_its_float32_copy():
    gray, flow = _frame(40, 52, 3)
    a = D.frame_histograms(gray.astype(np.uint8).astype(np.float32), flow)
    b = D.frame_histograms(gray.astype(np.uint8), flow)
    assert all(_same_bits(x, y) for x, y in zip(a, b))


# ------------------------------------------------------------------------------------------- descriptor blocks
LAYOUTS = [D.DescriptorLayout(), D.DescriptorLayout(epsilon=0.0),
           D.DescriptorLayout(patch=16, nx_cells=4, ny_cells=2, hog_bins=5, hof_bins=2, mbh_bins=1)]


@pytest.mark.parametrize("layout", LAYOUTS, ids=["default", "eps0", "odd"])
def test_all_blocks_in_one_call_equal_one_gather_per_histogram(layout):
    h, w = 70, 90
    gray, flow = _frame(h, w, 11)
    hists = D.frame_histograms(gray, flow, layout=layout)
    rng = np.random.default_rng(5)
    pts = np.column_stack([rng.uniform(-2, w + 2, 300), rng.uniform(-2, h + 2, 300)]).astype(np.float32)
    pts[:4] = [[0.5, 0.5], [2.5, 3.5], [w - 0.5, h - 0.5], [w / 2, h / 2]]  # borders and rint's ties to even
    x0, y0 = D.patch_corners(pts, w, h, patch=layout.patch)
    want = []
    for hist in hists:  # the plain kernel, one histogram at a time, points in their given order
        block = np.empty((len(pts), layout.nx_cells * layout.ny_cells * hist.shape[2]), np.float32)
        hnb.gather_blocks(hist, x0, y0, layout.nx_cells, layout.ny_cells, layout.patch // layout.nx_cells,
                          layout.patch // layout.ny_cells, float(layout.epsilon), block)
        want.append(block)
    got = D.cell_descriptor_rows(hists, pts, layout=layout)
    assert _same_bits(np.concatenate(want, axis=1), got)
    split = D.cell_descriptors(hists, pts, layout=layout)
    assert all(_same_bits(a, split[k]) for a, k in zip(want, ("hog", "hof", "mbhx", "mbhy")))
    assert D.cell_descriptor_rows(hists, pts[:0], layout=layout).shape == (0, got.shape[1])


# ------------------------------------------------------------------------------------------- corners
def _gftt(gray, n, quality, distance, mask=None):
    pts = cv2.goodFeaturesToTrack(gray, n, quality, distance, mask=mask)
    return np.zeros((0, 2), np.float32) if pts is None else pts.reshape(-1, 2)


def _check_corners(gray, rng):
    mask = np.full(gray.shape, 255, np.uint8)
    h, w = gray.shape
    mask[h // 4: h // 2, w // 3: 2 * w // 3] = 0
    for n, distance in ((1000, 3.0), (50, 3.0), (400, 2.5), (30, 1.0), (200, 5.0)):
        for m in (None, mask):
            want = _gftt(gray, n, 0.001, distance, m)
            got = good_features(gray, n, 0.001, distance, mask=m)
            assert got.dtype == np.float32 and np.array_equal(want, got), (n, distance, m is None)


def test_good_features_equal_opencv_on_synthetic_frames():
    rng = np.random.default_rng(0)
    for seed in range(6):
        gray = (np.random.default_rng(seed).random((90, 120)) * 255).astype(np.uint8)
        gray = cv2.GaussianBlur(gray, (5, 5), 1.0 + seed % 3)  # many equal responses: the sort's ties
        gray[40:60, 50:90] = 200  # a flat box with corners
        _check_corners(gray, rng)
    tile = (np.random.default_rng(9).random((7, 9)) * 255).astype(np.uint8)
    _check_corners(np.tile(tile, (12, 14)), rng)  # a periodic image: equal responses, the order of the ties
    assert len(good_features(np.full((30, 40), 7, np.uint8), 100, 0.001, 3.0)) == 0  # flat: no corner
    empty = np.zeros((30, 40), np.uint8)
    assert len(good_features(gray[:30, :40], 100, 0.001, 3.0, mask=empty)) == 0


@requires_shared
def test_good_features_equal_opencv_on_reference_clips():
    rng = np.random.default_rng(1)
    for clip in ("vtest_320x240.avi", "carphone_pristine.mp4", "person01_boxing_d1_uncomp.avi"):
        cap = cv2.VideoCapture(str(SHARED / "reference" / "videos" / clip))
        for _ in range(12):
            ok, frame = cap.read()
            assert ok
            _check_corners(cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY), rng)
        cap.release()


def test_corner_response_is_remembered_only_for_the_same_pixels():
    gray = (np.random.default_rng(3).random((37, 45)) * 255).astype(np.uint8)
    first = sampling.corner_response(gray)
    np.testing.assert_array_equal(first, cv2.cornerMinEigenVal(gray, 3, ksize=3))
    assert sampling.corner_response(gray.copy()) is first and not first.flags.writeable
    gray[10, 10] ^= 0xFF  # changed in place: a new response
    second = sampling.corner_response(gray)
    assert second is not first
    np.testing.assert_array_equal(second, cv2.cornerMinEigenVal(gray, 3, ksize=3))
    as_float = sampling.corner_response(gray.astype(np.float32))  # another dtype is another entry
    np.testing.assert_array_equal(as_float, cv2.cornerMinEigenVal(gray.astype(np.float32), 3, ksize=3))
    for k in range(40):  # many sizes: the memory stays bounded
        sampling.corner_response(np.zeros((8 + k, 9), np.uint8))
    assert len(sampling._RESPONSES) <= sampling._RESPONSES_KEPT


def test_corner_response_remembers_the_last_few_frames_of_a_size():
    # --threads: the front thread asks for frames up to two ahead of the main thread's
    rng = np.random.default_rng(4)
    frames = [(rng.random((31, 29)) * 255).astype(np.uint8) for _ in range(sampling._RESPONSES_PER_SIZE + 1)]
    first = [sampling.corner_response(f) for f in frames]
    again = [sampling.corner_response(f.copy()) for f in frames[1:]]  # the newest few: remembered
    assert all(a is b for a, b in zip(again, first[1:]))
    oldest = sampling.corner_response(frames[0].copy())  # the oldest was dropped: made again, the same numbers
    assert oldest is not first[0]
    np.testing.assert_array_equal(oldest, cv2.cornerMinEigenVal(frames[0], 3, ksize=3))
    assert len(sampling._RESPONSES[((31, 29), frames[0].dtype.str)]) == sampling._RESPONSES_PER_SIZE


# ------------------------------------------------------------------------------------------- track pool
class NaivePool:
    """The pool's semantics spelled out: live rows sorted by birth on every call, a free list whose last item is
    taken first (released rows go on top in reverse, so they are reused in their order)."""

    def __init__(self, length, capacity):
        self.L = length
        self.pos = np.zeros((capacity, length + 1, 2), np.float32)
        self.disp = np.zeros((capacity, length, 2), np.float32)
        self.index = np.full(capacity, -1, np.int32)
        self.birth = np.zeros(capacity, np.int64)
        self.free = list(range(capacity - 1, -1, -1))
        self.births = 0

    def live(self):
        rows = [r for r in range(len(self.index)) if self.index[r] >= 0]
        return np.array(sorted(rows, key=lambda r: self.birth[r]), np.int64)

    def add(self, points):
        for p in points:
            r = self.free.pop()
            self.pos[r, 0] = p
            self.index[r] = 0
            self.birth[r] = self.births
            self.births += 1

    def release(self, rows):
        for r in rows:
            self.index[r] = -1
        self.free.extend(int(r) for r in rows[::-1])

    def step(self, flow):
        rows, h, w = self.live(), flow.shape[0], flow.shape[1]
        dead = []
        for r in rows:
            i = self.index[r]
            x, y = np.clip(np.rint(self.pos[r, i]).astype(int), 0, [w - 1, h - 1])
            q = self.pos[r, i] + flow[y, x]
            if 0 < q[0] < w and 0 < q[1] < h:
                self.pos[r, i + 1] = q
                self.disp[r, i] = flow[y, x]
                self.index[r] = i + 1
            else:
                dead.append(r)
        self.release(np.array(dead, np.int64))

    def pop_finished(self):
        rows = [r for r in self.live() if self.index[r] >= self.L]
        self.release(np.array(rows, np.int64))
        return rows


def test_track_pool_keeps_birth_order_and_reuses_rows_like_a_naive_pool():
    """Random adds, steps (tracks leaving the frame) and finished tracks: the same live rows in the same (birth)
    order, the same rows reused and the same points as the naive pool, which sorts by birth every time."""
    rng = np.random.default_rng(7)
    L, h, w = 4, 30, 40
    pool, naive = TrackPool(L, 5, 2, capacity=16), NaivePool(L, 16)
    for frame in range(25):
        flow = rng.normal(0, 4, (h, w, 2)).astype(np.float32)
        rows, prev = pool.step(flow, flow)
        naive.step(flow)
        np.testing.assert_array_equal(rows, naive.live())
        pos, disp, desc = pool.pop_finished()
        finished = naive.pop_finished()
        assert len(pos) == len(finished)
        np.testing.assert_array_equal(pos, naive.pos[finished])
        k = int(rng.integers(0, 12))
        if k > len(naive.free):  # the pool grows; the naive one only records the new rows (same growth rule)
            k = len(naive.free)
        points = rng.uniform(1, [w - 1, h - 1], (k, 2)).astype(np.float32)
        pool.add(points)
        naive.add(points)
        live = naive.live()
        np.testing.assert_array_equal(pool.live(), live)
        assert len(pool) == len(live) and np.count_nonzero(pool.index >= 0) == len(live)
        np.testing.assert_array_equal(pool.index, naive.index)
        np.testing.assert_array_equal(pool.current_points(), naive.pos[live, naive.index[live]])
    assert naive.births > 40  # not vacuous


# ------------------------------------------------------------------------------------------- the pool kernels
# The extractor's per-frame steps on the CPU call one kernel where the pool's methods and the plain kernels above
# made NumPy copies in between; each is checked here against that plain path, bit for bit.
def _live_pool(L, D, nt, rng, n=60, capacity=16):
    """A pool of ``n`` tracks at random points of a 50x40 level, some with ``L`` steps done (finished), the others
    fewer, with random steps, compensated steps (some all zero) and descriptor sums."""
    pool = TrackPool(L, D, nt, capacity=capacity)
    pool.add(rng.uniform(1, [49, 39], (n, 2)).astype(np.float32))
    rows = pool.live()
    motion = rng.choice([0.0, 0.05, 1.5, 30.0], n)  # static, jittering, moving, jumping: each pruning rule
    walk = rng.normal(0, 1, (n, L, 2)) * motion[:, None, None]
    pool.pos[rows, 1:] = (pool.pos[rows, :1] + np.cumsum(walk, axis=1)).astype(np.float32)
    disp = rng.normal(0, 1, (n, L, 2)) * motion[:, None, None]
    disp[::7] = 0.0  # no camera-compensated motion: the camera rule
    pool.disp[rows] = disp.astype(np.float32)
    pool.desc[rows] = rng.random((n, nt, D)).astype(np.float32) * 5
    pool.index[rows] = np.where(rng.random(n) < 0.6, L, rng.integers(0, L, n)).astype(np.int32)
    return pool


@pytest.mark.parametrize("camera, n_frames", [(True, 300), (False, None)])
def test_pool_rows_equal_the_popped_copies_pruned_and_made_into_rows(camera, n_frames):
    from idtfv.idt import extractor as ex
    from idtfv.idt._tracking_nb import validate_tracks
    from idtfv.idt.params import IDTParams

    params = IDTParams(track_length=6, nt_cells=3, camera_motion=camera, start=2)
    dims = {"hog": 5, "hof": 3, "mbhx": 2, "mbhy": 4}  # odd widths: the blocks' column offsets
    offsets, o = {}, 0
    for name, d in dims.items():
        offsets[name] = (o, o + d)
        o += d
    rng = np.random.default_rng(8)
    for scale in (1.0, 2.0 ** 0.5 * 2):
        pool = _live_pool(6, o, 3, rng)
        other = TrackPool(6, o, 3, capacity=16)
        for name in ("pos", "disp", "desc", "index", "birth", "_free", "_live", "_births"):
            setattr(other, name, getattr(pool, name).copy() if name != "_births" else pool._births)
        pos, disp, desc = other.pop_finished()  # the plain path: copies, the pruning, then the rows
        meta6 = np.zeros((len(pos), 6), np.float32)
        traj = np.zeros((len(pos), 12), np.float32)
        keep = np.zeros(len(pos), np.bool_)
        validate_tracks(pos, disp, scale, params.min_var, params.max_var, params.max_dis, params.max_dis_ratio,
                        params.min_camera_disp, camera, meta6, traj, keep)
        want = ex._kept_rows(meta6[keep], traj[keep], desc[keep], 40, 50, 40, n_frames, params, offsets)
        rows = pool.pop_finished_rows()
        got = ex._pool_rows([(pool, rows, scale)], 40, 50, 40, ex._t_pos(40, n_frames, params), params,
                            [d * 3 for d in dims.values()])
        assert 0 < keep.sum() < len(keep)  # not vacuous: tracks kept and pruned
        for name in ("meta", "traj", "hog", "hof", "mbhx", "mbhy"):
            assert _same_bits(getattr(want, name), getattr(got, name)), name
        np.testing.assert_array_equal(pool.live(), other.live())  # the same pool state after the pop
        np.testing.assert_array_equal(pool._free, other._free)
        np.testing.assert_array_equal(pool.index, other.index)


def test_pool_rows_of_several_levels_are_each_levels_rows_one_after_the_other():
    """One frame's levels in one call (the extractor's way): the rows kept on each level follow those of the levels
    before, as the levels' own calls concatenated; a level where every track is pruned adds nothing."""
    from idtfv.idt import extractor as ex
    from idtfv.idt.params import IDTParams

    params = IDTParams(track_length=6, nt_cells=3)
    widths = [5 * 3, 3 * 3, 2 * 3, 4 * 3]
    D = sum(widths) // 3
    rng = np.random.default_rng(3)
    pools = [_live_pool(6, D, 3, rng) for _ in range(3)]
    pools[1].pos[:] = 7.0  # a level whose tracks never move: all pruned (no variance)
    scales = (1.0, 2 ** 0.5, 2.0)
    rows = [pool.pop_finished_rows() for pool in pools]
    assert all(len(r) for r in rows)
    t_pos = ex._t_pos(40, 300, params)
    alone = [ex._pool_rows([(pool, r, s)], 40, 50, 40, t_pos, params, widths)
             for pool, r, s in zip(pools, rows, scales)]
    assert alone[1] is None and alone[0] is not None and alone[2] is not None
    got = ex._pool_rows(list(zip(pools, rows, scales)), 40, 50, 40, t_pos, params, widths)
    assert len(got) == len(alone[0]) + len(alone[2])
    for name in ("meta", "traj", "hog", "hof", "mbhx", "mbhy"):
        want = np.concatenate([getattr(alone[0], name), getattr(alone[2], name)])
        assert _same_bits(want, getattr(got, name)), name
    pools[0].pos[:] = 7.0
    pools[2].pos[:] = 7.0
    assert ex._pool_rows(list(zip(pools, rows, scales)), 40, 50, 40, t_pos, params, widths) is None


def test_a_pool_step_equals_the_plain_tracking_kernel():
    from idtfv.idt._tracking_nb import track_step

    rng = np.random.default_rng(12)
    pool = _live_pool(5, 4, 1, rng, n=200)
    pool.index[pool.live()] = rng.integers(0, 5, len(pool)).astype(np.int32)  # every track can take a step
    flow = rng.normal(0, 6, (40, 50, 2)).astype(np.float32)  # some tracks leave the level
    flow_w = rng.normal(0, 1, (40, 50, 2)).astype(np.float32)
    live = pool.live().copy()
    index, pos, disp = pool.index.copy(), pool.pos.copy(), pool.disp.copy()
    want_prev = pos[live, index[live]]
    alive = np.empty(len(live), np.bool_)
    track_step(live, index, pos, disp, flow, flow_w, alive)
    index[live[~alive]] = -1
    rows, prev = pool.step(flow, flow_w)
    assert 0 < alive.sum() < len(live)
    np.testing.assert_array_equal(rows, live[alive])
    assert _same_bits(prev, want_prev[alive])
    assert _same_bits(pool.pos, pos) and _same_bits(pool.disp, disp)
    np.testing.assert_array_equal(pool.index, index)
    np.testing.assert_array_equal(pool._free[-(~alive).sum():], live[~alive][::-1])  # freed: reused in order


@pytest.mark.parametrize("L, nt", [(15, 3), (7, 3)])  # with 7 steps the 7th falls beyond the last cell: dropped
def test_descriptors_summed_in_the_pool_equal_the_blocks_stored(L, nt):
    layout = D.DescriptorLayout(nt_cells=nt)
    gray, flow = _frame(60, 70, 21)
    hists = D.frame_histograms(gray.astype(np.uint8), flow, layout=layout)
    rng = np.random.default_rng(2)
    pool = _live_pool(L, sum(layout.dims().values()), nt, rng, n=150)
    pool.index[pool.live()] = rng.integers(1, L + 1, len(pool)).astype(np.int32)
    rows = pool.live()[rng.random(len(pool)) < 0.8]
    points = np.column_stack([rng.uniform(0, 70, len(rows)), rng.uniform(0, 60, len(rows))]).astype(np.float32)
    before = pool.desc.copy()
    reference = TrackPool(L, pool.D, nt)
    reference.desc, reference.index = before.copy(), pool.index
    reference.store_descriptors(rows, D.cell_descriptor_rows(hists, points, layout=layout))
    D.stream_cell_descriptors(pool, rows, gray.astype(np.uint8), flow, points, layout=layout)
    assert _same_bits(pool.desc, reference.desc) and not _same_bits(pool.desc, before)  # the same sums, added
    with pytest.raises(ValueError, match="points must be"):
        D.stream_cell_descriptors(pool, rows, gray.astype(np.uint8), flow, points.astype(np.float64), layout=layout)


def test_dense_sampling_of_a_pool_equals_sampling_its_current_points():
    rng = np.random.default_rng(4)
    gray, _ = _frame(40, 50, 5)
    gray = gray.astype(np.uint8)
    pool = _live_pool(4, 2, 2, rng, n=40)
    pool.index[pool.live()] = rng.integers(0, 5, len(pool)).astype(np.int32)
    pool.pos[pool.live(), 4] = [-3.0, 55.0]  # some current points outside the level: no cell
    want = sampling.dense_sample(gray, pool.current_points(), stride=5, quality=0.001)
    got = sampling.dense_sample_pool(gray, pool, stride=5, quality=0.001)
    assert 0 < len(got) < 80 and _same_bits(got, want)


def test_flow_matches_kernel_equals_the_numpy_pairs():
    from idtfv.idt.camera import CameraParams, _flow_matches

    rng = np.random.default_rng(6)
    gray, _ = _frame(50, 60, 9)
    gray = gray.astype(np.uint8)
    flow = rng.normal(0, 1, (50, 60, 2)).astype(np.float32)
    flow[::3] = 0.0  # zero flow: no match
    for min_flow in (0.0, 0.7):
        params = CameraParams(flow_match_min=min_flow)
        got = _flow_matches(gray, flow, None, params)
        want = _flow_matches(gray, flow.astype(np.float64), None, params)  # not float32: the NumPy path
        assert 0 < len(got[0]) < len(good_features(gray, 1000, 0.001, 3.0))
        assert _same_bits(got[0], want[0]) and _same_bits(got[1], want[1])


def test_identity_check_is_array_equal_to_the_identity():
    from idtfv.idt.camera import is_identity

    eye = np.eye(3)
    cases = [eye, eye.copy(), -0.0 * np.ones((3, 3)) + eye, eye + 1e-300, np.eye(3, dtype=np.float32), np.eye(4),
             np.full((3, 3), np.nan), eye.tolist(), np.eye(3, dtype=np.int64) * 2]
    assert [is_identity(H) for H in cases] == [bool(np.array_equal(H, eye)) for H in cases]
    assert is_identity(eye) and not is_identity(eye + np.diag([0, 0, 1e-15]))
