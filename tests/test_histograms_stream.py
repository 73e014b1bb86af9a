"""Tests of the one-pass integral rows and block gathering (:func:`idtfv.idt.descriptors.stream_cell_descriptors`,
:func:`idtfv.idt._histograms_nb.stream_sum_blocks`) against the calls it replaces in the extractor's step 5,
:func:`~idtfv.idt.descriptors.frame_histograms`, :func:`~idtfv.idt.descriptors.cell_descriptor_rows` and
``TrackPool.store_descriptors`` (whole integral histograms, the blocks read from them, added to the sums): the
same temporal-cell sums, bit for bit, on random frames and flows of several sizes and layouts, and on the real
frames, flows and points of the extractor on the shared clips."""

from __future__ import annotations

import numpy as np
import pytest

from conftest import SHARED, requires_shared
from idtfv.errors import ParameterError
from idtfv.idt import descriptors as D
from idtfv.idt.params import IDTParams
from idtfv.idt.tracking import TrackPool

ODD = (  # layouts off the usual bin counts (the kernels' run-time bin loops) and cell grids
    D.DescriptorLayout(patch=24, nx_cells=3, ny_cells=2, hog_bins=6, hof_bins=5, mbh_bins=7),
    D.DescriptorLayout(patch=16, nx_cells=1, ny_cells=4, hog_bins=8, hof_bins=10, mbh_bins=8, min_flow=0.0),
    D.DescriptorLayout(patch=12, nx_cells=2, ny_cells=3, hog_bins=9, hof_bins=9, mbh_bins=8, epsilon=0.0),
)


def _same_bits(a, b) -> bool:
    a, b = np.asarray(a), np.asarray(b)
    return a.shape == b.shape and a.dtype == b.dtype and np.array_equal(a.view(np.uint32), b.view(np.uint32))


def _pool(n_rows: int, layout: D.DescriptorLayout, rng, *, length: int = 15) -> TrackPool:
    """A pool of ``n_rows`` rows with random temporal-cell sums and steps done 1..length + 5 (a step past
    ``length`` has its temporal cell past n_t: nothing is added to it)."""
    pool = TrackPool(length, sum(layout.dims().values()), layout.nt_cells, capacity=n_rows)
    pool.desc[:] = rng.random(pool.desc.shape).astype(np.float32)
    pool.index[:] = rng.integers(1, length + 6, pool.index.shape).astype(np.int32)
    return pool


def _reference(pool, rows, gray, flow, points, layout, hog=None) -> np.ndarray:
    """The two calls the extractor made before: whole histograms, then the blocks added to a copy of the sums."""
    ref = TrackPool(pool.L, pool.D, pool.nt, capacity=len(pool.index))
    ref.desc, ref.index = pool.desc.copy(), pool.index.copy()
    hists = D.frame_histograms(gray, flow, layout=layout, hog=hog)
    ref.store_descriptors(rows, D.cell_descriptor_rows(hists, points, layout=layout))
    return ref.desc


def _check(gray, flow, points, rows, pool, layout, *, hog=None) -> np.ndarray:
    """The streamed sums equal the two calls' (bit for bit); returns the sums before."""
    before = pool.desc.copy()
    want = _reference(pool, rows, gray, flow, points, layout, hog=hog)
    D.stream_cell_descriptors(pool, rows, gray, flow, points, layout=layout, hog=hog)
    assert _same_bits(pool.desc, want)
    return before


def _frame(h, w, rng, *, dtype=np.uint8):
    gray = rng.integers(0, 256, (h, w)).astype(dtype)
    flow = (rng.normal(0, 1.5, (h, w, 2)) * (rng.random((h, w, 1)) < 0.8)).astype(np.float32)  # some zero flow
    return gray, flow


def _points(n, h, w, rng):
    """Points over and beyond the level (their patches clamped at the borders) as the tracks' points."""
    return np.column_stack([rng.uniform(-8, w + 8, n), rng.uniform(-8, h + 8, n)]).astype(np.float32)


# ----------------------------------------------------------------------------------------------- random data
@pytest.mark.parametrize("h, w", [(32, 32), (33, 40), (40, 33), (57, 42), (120, 160)])
@pytest.mark.parametrize("dtype", [np.uint8, np.float32])
def test_streamed_sums_equal_whole_histograms_then_blocks(h, w, dtype):
    rng = np.random.default_rng(h * 1000 + w)
    layout = D.DescriptorLayout()
    gray, flow = _frame(h, w, rng, dtype=dtype)
    pool = _pool(300, layout, rng)
    rows = rng.permutation(300)[:200].astype(np.int64)
    before = _check(gray, flow, _points(200, h, w, rng), rows, pool, layout)
    cells = (pool.index[rows] - 1) // pool.per_cell
    assert 0 < np.count_nonzero(cells >= pool.nt) < len(rows)  # not vacuous: tracks past n_t, and others
    assert _same_bits(pool.desc[rows[cells >= pool.nt]], before[rows[cells >= pool.nt]])  # nothing added to those
    assert not _same_bits(pool.desc[rows[cells < pool.nt]], before[rows[cells < pool.nt]])  # added to these


@pytest.mark.parametrize("layout", ODD, ids=["3x2-cells-6-5-7-bins", "1x4-cells-hof10", "2x3-cells-9-bins-eps0"])
def test_streamed_sums_of_other_layouts(layout):
    rng = np.random.default_rng(layout.patch)
    for h, w in ((layout.patch, layout.patch), (layout.patch + 1, layout.patch + 9), (50, 70)):
        gray, flow = _frame(h, w, rng)
        pool = _pool(120, layout, rng)
        rows = rng.permutation(120)[:90].astype(np.int64)
        before = _check(gray, flow, _points(90, h, w, rng), rows, pool, layout)
        assert not _same_bits(pool.desc, before)


def test_points_at_the_corners_and_borders_and_sharing_rows():
    """Clamped patches at every corner and border, many points whose patches end on the same row (the first
    and the last rows a patch can end on included), repeated points."""
    rng = np.random.default_rng(3)
    layout = D.DescriptorLayout()
    h, w = 70, 90
    gray, flow = _frame(h, w, rng)
    xs = np.array([-50, -0.5, 0, 15.5, 16, 16.5, 45, 73.5, 74, 89, 89.9, 300], np.float32)
    ys = np.array([-50, 0, 15.5, 16, 35, 53.4, 54, 69.9, 200], np.float32)
    grid = np.stack(np.meshgrid(xs, ys), axis=-1).reshape(-1, 2)
    same_row = np.column_stack([rng.uniform(0, w, 30), np.full(30, 40.2)]).astype(np.float32)
    points = np.ascontiguousarray(np.concatenate([grid, same_row, grid[:5]]))
    n = len(points)
    pool = _pool(n + 10, layout, rng)
    pool.index[:] = rng.integers(1, 16, pool.index.shape).astype(np.int32)  # every track adds its block
    rows = rng.permutation(n + 10)[:n].astype(np.int64)
    before = _check(gray, flow, points, rows, pool, layout)
    assert not np.any(np.all(pool.desc[rows] == before[rows], axis=(1, 2)))  # every point added a block


def test_zero_points_and_no_cell_left_change_nothing():
    rng = np.random.default_rng(5)
    layout = D.DescriptorLayout()
    gray, flow = _frame(40, 50, rng)
    pool = _pool(20, layout, rng)
    before = pool.desc.copy()
    D.stream_cell_descriptors(pool, np.zeros(0, np.int64), gray, flow, np.zeros((0, 2), np.float32), layout=layout)
    assert _same_bits(pool.desc, before)
    pool.index[:] = 16  # every track's step past its last temporal cell
    _check(gray, flow, _points(20, 40, 50, rng), np.arange(20, dtype=np.int64), pool, layout)
    assert _same_bits(pool.desc, before)


@pytest.mark.parametrize("layout", (D.DescriptorLayout(),) + ODD[:1], ids=["default", "odd"])
def test_hog_made_ahead_is_read_instead(layout):
    """``hog=`` (the front thread's HOG, ``--threads``): the HOG blocks come from it; the others are streamed."""
    rng = np.random.default_rng(6)
    for h, w in ((layout.patch, layout.patch + 1), (61, 83)):
        gray, flow = _frame(h, w, rng)
        hog = D.hog_histogram(gray, layout=layout)
        pool = _pool(80, layout, rng)
        rows = rng.permutation(80)[:60].astype(np.int64)
        points = _points(60, h, w, rng)
        _check(gray, flow, points, rows, pool, layout, hog=hog)
        # another frame's HOG: read as given (a kernel making its own HOG rows would not match this)
        other = D.hog_histogram(_frame(h, w, rng)[0], layout=layout)
        _check(gray, flow, points, rows, pool, layout, hog=other)


def test_bad_inputs_raise_one_clear_error():
    rng = np.random.default_rng(7)
    layout = D.DescriptorLayout()
    gray, flow = _frame(40, 50, rng)
    pool = _pool(10, layout, rng)
    rows = np.arange(4, dtype=np.int64)
    points = _points(4, 40, 50, rng)
    bad = [
        dict(gray=gray[:, :, None]),
        dict(flow=flow[:, :-1]),
        dict(gray=gray[:20, :20], flow=flow[:20, :20]),
        dict(points=points.astype(np.float64)),
        dict(points=points[:3]),
        dict(rows=rows.astype(np.int32)),
        dict(hog=np.zeros((40, 51, 8), np.float32)),
    ]
    for change in bad:
        args = dict(gray=gray, flow=flow, points=points, rows=rows) | change
        with pytest.raises(ParameterError, match="stream_cell_descriptors: "):
            D.stream_cell_descriptors(pool, args["rows"], args["gray"], args["flow"], args["points"], layout=layout,
                                      hog=change.get("hog"))
    with pytest.raises(ParameterError, match=r"pool.desc must be a C-contiguous \(C, n_t, 132\)"):
        D.stream_cell_descriptors(_pool(10, ODD[0], rng), rows, gray, flow, points, layout=layout)
    strided = _pool(10, layout, rng)  # the kernel addresses the sums as one flat array
    strided.desc = np.zeros((10, 2 * strided.desc.shape[1], strided.desc.shape[2]), np.float32)[:, ::2]
    with pytest.raises(ParameterError, match=r"pool.desc must be a C-contiguous"):
        D.stream_cell_descriptors(strided, rows, gray, flow, points, layout=layout)


# ------------------------------------------------------------------------------- the extractor's real inputs
def _compare_in_extractor(monkeypatch, video, params) -> int:
    """Run the extractor with step 5's call checked against the two calls on a copy of the pool each time;
    returns how many level calls were checked."""
    from idtfv.idt import extract
    from idtfv.idt import extractor as ex

    stream = D.stream_cell_descriptors
    seen = []

    def checked(pool, rows, gray, flow, points, *, layout, hog=None):
        want = _reference(pool, rows, gray, flow, points, layout, hog=hog)
        # the made-ahead HOG path on these inputs too, whichever path the extractor took (with --threads the front
        # thread makes the HOG only while it is ahead: a matter of timing)
        other = TrackPool(pool.L, pool.D, pool.nt, capacity=len(pool.index))
        other.desc, other.index = pool.desc.copy(), pool.index.copy()
        stream(other, rows, gray, flow, points, layout=layout,
               hog=D.hog_histogram(gray, layout=layout) if hog is None else None)
        stream(pool, rows, gray, flow, points, layout=layout, hog=hog)
        seen.append((_same_bits(pool.desc, want) and _same_bits(other.desc, want), hog is not None))

    monkeypatch.setattr(ex._desc, "stream_cell_descriptors", checked)
    extract(str(video), params)
    assert seen and all(same for same, _ in seen)
    return seen


@requires_shared
@pytest.mark.parametrize("clip, params", [
    ("vtest_320x240.avi", IDTParams(end=8)),
    ("person01_boxing_d1_uncomp.avi", IDTParams.fast(end=12)),
    ("vtest_320x240.avi", IDTParams(end=6, threads=3)),
], ids=["vtest-default", "kth-fast", "vtest-threads3"])
def test_real_frames_flows_and_points_of_the_clips(monkeypatch, clip, params):
    seen = _compare_in_extractor(monkeypatch, SHARED / "reference" / "videos" / clip, params)
    assert len(seen) >= 3 * (params.end - 2)  # the levels of every frame after the first
    if params.threads == 1:
        assert not any(ahead for _, ahead in seen)  # no front thread: never a HOG made ahead
