"""Tests of idtfv.idt.descriptors against naive NumPy/OpenCV references written here, planted edges and flows, and
norm invariants."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from idtfv.idt.descriptors import (
    DescriptorLayout,
    FrameHistograms,
    cell_descriptors,
    frame_histograms,
    patch_corners,
    temporal_pool,
)
from idtfv.errors import ParameterError

LAYOUT = DescriptorLayout()


# ----------------------------------------------------------------------------------------- naive references
def naive_orientation_hist(u, v, nbins, *, zero_bin_threshold=None):
    """Per-pixel histogram (h, w, B[+1]) of vectors (u, v): linear split between the two nearest bins."""
    u = u.astype(np.float64)
    v = v.astype(np.float64)
    h, w = u.shape
    mag = np.hypot(u, v)
    ang = np.degrees(np.arctan2(v, u)) % 360.0
    f = ang * nbins / 360.0
    b0 = np.floor(f).astype(int) % nbins
    frac = f - np.floor(f)
    b1 = (b0 + 1) % nbins
    w0 = mag * (1 - frac)
    w1 = mag * frac
    extra = 0 if zero_bin_threshold is None else 1
    out = np.zeros((h, w, nbins + extra))
    yy, xx = np.mgrid[:h, :w]
    if zero_bin_threshold is not None:
        zero = mag <= zero_bin_threshold
        w0 = np.where(zero, 0.0, w0)
        w1 = np.where(zero, 0.0, w1)
        out[..., nbins] = zero
    np.add.at(out, (yy, xx, b0), w0)
    np.add.at(out, (yy, xx, b1), w1)
    return out


def naive_gradient_hist(img, nbins):
    img = img.astype(np.float32)
    gx = cv2.Sobel(img, cv2.CV_32F, 1, 0, ksize=1)
    gy = cv2.Sobel(img, cv2.CV_32F, 0, 1, ksize=1)
    return naive_orientation_hist(gx, gy, nbins)


def naive_channels(gray, flow, layout=LAYOUT):
    return {
        "hog": naive_gradient_hist(gray, layout.hog_bins),
        "hof": naive_orientation_hist(flow[..., 0], flow[..., 1], layout.hof_bins - 1,
                                      zero_bin_threshold=layout.min_flow),
        "mbhx": naive_gradient_hist(flow[..., 0], layout.mbh_bins),
        "mbhy": naive_gradient_hist(flow[..., 1], layout.mbh_bins),
    }


def naive_block(per_pixel, x, y, layout=LAYOUT):
    """The RootSIFT block of one point from a per-pixel histogram, written directly from the definition."""
    h, w, _ = per_pixel.shape
    n = layout.patch
    x0 = min(max(int(np.rint(x)) - n // 2, 0), w - n)
    y0 = min(max(int(np.rint(y)) - n // 2, 0), h - n)
    cw, ch = n // layout.nx_cells, n // layout.ny_cells
    parts = []
    for ix in range(layout.nx_cells):
        for iy in range(layout.ny_cells):
            cell = per_pixel[y0 + iy * ch: y0 + (iy + 1) * ch, x0 + ix * cw: x0 + (ix + 1) * cw]
            parts.append(cell.sum(axis=(0, 1)))
    vec = np.concatenate(parts) + layout.epsilon
    s = vec.sum()
    return np.sqrt(vec / s) if s > 0 else np.zeros_like(vec)


def rect_sum(H, x0, y0, x1, y1):
    H = H.astype(np.float64)
    return H[y1, x1] - H[y0, x1] - H[y1, x0] + H[y0, x0]


def textured(h, w, seed=0):
    rng = np.random.default_rng(seed)
    img = cv2.GaussianBlur(rng.random((h, w)).astype(np.float32) * 255, (0, 0), 1.5)
    flow = cv2.GaussianBlur(rng.normal(scale=1.5, size=(h, w, 2)).astype(np.float32), (0, 0), 2.0)
    return img, flow


# ----------------------------------------------------------------------------------------- integral histograms
def test_integral_histograms_match_naive_cell_sums():
    gray, flow = textured(45, 53, seed=1)
    hists = frame_histograms(gray, flow)
    ref = naive_channels(gray, flow)
    rng = np.random.default_rng(2)
    for name, per_pixel in ref.items():
        H = getattr(hists, name)
        assert H.shape == (46, 54, per_pixel.shape[2]) and H.dtype == np.float32
        assert np.all(H[0] == 0) and np.all(H[:, 0] == 0)
        # whole image and random rectangles
        np.testing.assert_allclose(H[-1, -1], per_pixel.sum(axis=(0, 1)), rtol=1e-5, atol=1e-3)
        scale = per_pixel.sum() + 1.0
        for _ in range(50):
            x0, x1 = sorted(rng.choice(54, 2, replace=False))
            y0, y1 = sorted(rng.choice(46, 2, replace=False))
            np.testing.assert_allclose(rect_sum(H, x0, y0, x1, y1), per_pixel[y0:y1, x0:x1].sum(axis=(0, 1)),
                                       rtol=1e-5, atol=1e-6 * scale)


@pytest.mark.parametrize("h, w, seed", [(45, 53, 3), (17, 9, 4), (64, 200, 5)])
def test_the_unrolled_8_bin_rows_match_the_run_time_loop_bit_for_bit(h, w, seed):
    """With the usual bin counts the kernels build the 8-bin rows (MBHx, MBHy) with their own loops (the running
    row sums as one vector recurrence); with ``hof_bins=10`` the same MBH rows go through the run-time loop of
    :func:`_accumulate_row`. The two must give the same bits (the same sums, in the same order)."""
    gray, flow = textured(h, w, seed=seed)
    flow[: h // 3] *= 40.0  # large magnitudes: float32 sums that round differently in another order
    flow[h // 2, :] = 0.0  # flat rows: zero weights added
    usual = frame_histograms(gray, flow)
    generic = frame_histograms(gray, flow, layout=DescriptorLayout(hof_bins=10))
    for name in ("mbhx", "mbhy"):
        a, b = getattr(usual, name), getattr(generic, name)
        assert a.shape == b.shape == (h + 1, w + 1, 8)
        assert np.array_equal(a.view(np.uint32), b.view(np.uint32)), name


def test_out_buffers_are_reused_and_give_the_same_result():
    gray, flow = textured(36, 44, seed=9)
    fresh = frame_histograms(gray, flow)
    stale = frame_histograms(np.flipud(gray).copy(), -flow)
    again = frame_histograms(gray, flow, out=stale)
    for a, b, c in zip(again, stale, fresh):
        assert a is b
        np.testing.assert_array_equal(a, c)
    # wrong-sized buffers are not used
    other = frame_histograms(gray, flow, out=frame_histograms(gray[:-1], flow[:-1]))
    for a, c in zip(other, fresh):
        np.testing.assert_array_equal(a, c)


def test_histograms_non_negative_increments():
    gray, flow = textured(40, 40, seed=3)
    for H in frame_histograms(gray, flow):
        # each pixel adds a non-negative amount: H is non-decreasing along both axes
        assert np.all(np.diff(H.astype(np.float64), axis=0) >= -1e-3)
        assert np.all(np.diff(H.astype(np.float64), axis=1) >= -1e-3)


@pytest.mark.parametrize(
    "direction, expected",
    [
        ((1.0, 0.0), {0: 1.0}),  # gradient along +x (dark left, bright right): bin 0
        ((-1.0, 0.0), {4: 1.0}),  # along -x: 180 degrees, bin 4
        ((0.0, 1.0), {2: 1.0}),  # along +y (image y points down): 90 degrees, bin 2
        ((1.0, 1.0), {1: 1.0}),  # 45 degrees: exactly bin 1
        ((np.cos(np.radians(22.5)), np.sin(np.radians(22.5))), {0: 0.5, 1: 0.5}),  # half-way: split evenly
        ((np.cos(np.radians(-30.0)), np.sin(np.radians(-30.0))), {7: 2 / 3, 0: 1 / 3}),  # 330 deg = 7.33 bins
    ],
)
def test_hog_step_edge_lands_in_predicted_bins(direction, expected):
    h = w = 64
    yy, xx = np.mgrid[:h, :w].astype(np.float64)
    ux, uy = direction
    # a sharp step across the line through the centre, normal (ux, uy): gradient points along (ux, uy)
    img = np.where((xx - 31.5) * ux + (yy - 31.5) * uy > 0, 200.0, 10.0).astype(np.float32)
    if len(expected) > 1 or ux * uy != 0:
        img = (xx * ux + yy * uy).astype(np.float32) * 3.0  # a ramp gives one exact gradient direction
    hog = frame_histograms(img, np.zeros((h, w, 2), np.float32)).hog
    # interior cell (avoid the reflected border where the derivative is 0)
    total = rect_sum(hog, 8, 8, 56, 56)
    assert total.sum() > 0
    frac = total / total.sum()
    want = np.zeros(8)
    for b, f in expected.items():
        want[b] = f
    np.testing.assert_allclose(frac, want, atol=1e-4)


def test_hog_border_derivative_is_zero_like_sobel_reflect101():
    img = np.tile(np.arange(40, dtype=np.float32) * 2.0, (40, 1))  # ramp in x: gradient 4 everywhere inside
    hog = frame_histograms(img, np.zeros((40, 40, 2), np.float32)).hog
    col0 = rect_sum(hog, 0, 0, 1, 40)
    col1 = rect_sum(hog, 1, 0, 2, 40)
    assert np.all(col0 == 0)  # first column reflected: I(1) - I(1)
    np.testing.assert_allclose(col1, [40 * 4.0, 0, 0, 0, 0, 0, 0, 0])


def test_hof_zero_bin_and_uniform_motion():
    h, w = 40, 48
    gray = np.zeros((h, w), np.float32)
    slow = np.broadcast_to(np.float32([0.3, -0.25]), (h, w, 2))  # |f| = 0.39 <= 0.4
    hof = frame_histograms(gray, slow).hof
    np.testing.assert_allclose(hof[-1, -1], [0] * 8 + [h * w])
    right = np.broadcast_to(np.float32([2.0, 0.0]), (h, w, 2))
    hof = frame_histograms(gray, right).hof
    np.testing.assert_allclose(hof[-1, -1], [2.0 * h * w] + [0] * 8)
    up = np.broadcast_to(np.float32([0.0, -2.0]), (h, w, 2))  # 270 degrees: bin 6
    hof = frame_histograms(gray, up).hof
    np.testing.assert_allclose(hof[-1, -1], [0] * 6 + [2.0 * h * w, 0, 0])


def test_mbh_of_uniform_flow_is_zero():
    gray, _ = textured(40, 40)
    flow = np.broadcast_to(np.float32([1.7, -0.6]), (40, 40, 2))
    hists = frame_histograms(gray, flow)
    assert not hists.mbhx.any() and not hists.mbhy.any()
    # a flow whose x component grows along x: MBHx in bin 0, MBHy empty
    ramp = np.zeros((40, 40, 2), np.float32)
    ramp[..., 0] = np.arange(40, dtype=np.float32)[None, :] * 0.1
    hists = frame_histograms(gray, ramp)
    assert not hists.mbhy.any()
    tot = rect_sum(hists.mbhx, 1, 0, 39, 40)
    np.testing.assert_allclose(tot / tot.sum(), np.eye(8)[0], atol=1e-6)


def test_fast_angle_matches_arctan2():
    from idtfv.idt._histograms_nb import angle_fraction

    rng = np.random.default_rng(10)
    vecs = rng.normal(size=(2000, 2)).astype(np.float32) * rng.choice([1e-3, 1.0, 300.0], size=(2000, 1))
    axes = np.float32([[1, 0], [0, 1], [-1, 0], [0, -1], [1, 1], [-1, 1], [-1, -1], [1, -1], [2, -1e-30]])
    vecs = np.concatenate([vecs, axes])
    got = np.array([angle_fraction(np.float32(u), np.float32(v)) for u, v in vecs], dtype=np.float64)
    want = np.arctan2(vecs[:, 1].astype(np.float64), vecs[:, 0]) / (2 * np.pi) % 1.0
    err = np.abs(got - want)
    err = np.minimum(err, 1 - err)  # 0 and 1 are the same direction
    assert err.max() < 2e-7
    assert np.all((got >= 0) & (got <= 1))


# ----------------------------------------------------------------------------------------- per-point blocks
def test_cell_descriptors_match_naive_blocks():
    gray, flow = textured(70, 90, seed=4)
    hists = frame_histograms(gray, flow)
    ref = naive_channels(gray, flow)
    rng = np.random.default_rng(5)
    pts = np.column_stack([rng.uniform(-3, 93, 40), rng.uniform(-3, 73, 40)]).astype(np.float32)
    pts[:4] = [[0, 0], [89, 69], [16.5, 15.5], [44.5, 30.49]]  # borders and rounding ties
    out = cell_descriptors(hists, pts)
    dims = LAYOUT.dims()
    for name, per_pixel in ref.items():
        assert out[name].shape == (40, dims[name]) and out[name].dtype == np.float32
        want = np.stack([naive_block(per_pixel, x, y) for x, y in pts])
        np.testing.assert_allclose(out[name], want, rtol=1e-4, atol=1e-5)
        assert np.all(out[name] >= 0)
        np.testing.assert_allclose((out[name].astype(np.float64) ** 2).sum(axis=1), 1.0, atol=1e-5)


def test_empty_patch_without_epsilon_is_zero_and_with_epsilon_uniform():
    gray = np.full((40, 40), 7.0, np.float32)
    flow = np.zeros((40, 40, 2), np.float32)
    pts = np.float32([[20, 20]])
    lay0 = DescriptorLayout(epsilon=0.0)
    d0 = cell_descriptors(frame_histograms(gray, flow, layout=lay0), pts, layout=lay0)
    assert not d0["hog"].any() and not d0["mbhx"].any()
    # HOF of zero motion: all mass in the four cells' zero bins
    hof = d0["hof"][0].reshape(4, 9)
    np.testing.assert_allclose(hof[:, 8], 0.5)
    assert not hof[:, :8].any()
    d1 = cell_descriptors(frame_histograms(gray, flow), pts)
    np.testing.assert_allclose(d1["hog"][0], np.full(32, np.sqrt(1 / 32)), rtol=1e-6)


def test_block_layout_is_x_cell_outer_y_cell_inner():
    # mass only in the bottom-left cell (ix=0, iy=1) of a 32x32 patch at the origin
    gray = np.zeros((32, 32), np.float32)
    gray[18:30, 2:14] = np.tile(np.arange(12, dtype=np.float32), (12, 1)) * 5.0
    lay = DescriptorLayout(epsilon=0.0)
    d = cell_descriptors(frame_histograms(gray, np.zeros((32, 32, 2), np.float32), layout=lay),
                         np.float32([[16, 16]]), layout=lay)["hog"][0].reshape(2, 2, 8)
    mass = (d ** 2).sum(axis=2)
    assert mass[0, 1] > 0.99 and mass.sum() == pytest.approx(1.0, abs=1e-6)


def test_patch_clamping_at_borders():
    pts = np.float32([[0, 0], [3.4, 100], [319, 239], [160.5, 120.5], [161.5, 119.5], [-7, 500]])
    x0, y0 = patch_corners(pts, 320, 240, patch=32)
    np.testing.assert_array_equal(x0, [0, 0, 288, 144, 146, 0])
    np.testing.assert_array_equal(y0, [0, 84, 208, 104, 104, 208])
    # points whose patches clamp to the same place get the same descriptor
    gray, flow = textured(48, 64, seed=6)
    hists = frame_histograms(gray, flow)
    d = cell_descriptors(hists, np.float32([[1, 2], [16, 16], [63, 47], [48, 32]]))
    for name in d:
        np.testing.assert_array_equal(d[name][0], d[name][1])
        np.testing.assert_array_equal(d[name][2], d[name][3])


# ----------------------------------------------------------------------------------------- temporal pooling
def test_temporal_pool_norms_and_mean():
    rng = np.random.default_rng(7)
    blocks = rng.random((5, 16, 32)).astype(np.float32)
    blocks /= np.linalg.norm(blocks, axis=2, keepdims=True)
    pooled = temporal_pool(blocks, nt_cells=3)
    assert pooled.shape == (5, 96) and pooled.dtype == np.float32
    want = np.concatenate([blocks[:, 5 * t:5 * t + 5].mean(axis=1) for t in range(3)], axis=1)  # frame 16 dropped
    np.testing.assert_allclose(pooled, want, rtol=1e-6)
    sq = (pooled.astype(np.float64) ** 2).reshape(5, 3, 32).sum(axis=2)
    assert np.all(sq <= 1 + 1e-6)
    # the same block on every frame: squared norm exactly 1 per cell, 3 in all
    same = np.repeat(blocks[:, :1], 15, axis=1)
    np.testing.assert_allclose((temporal_pool(same).astype(np.float64) ** 2).sum(axis=1), 3.0, rtol=1e-6)


def test_track_descriptor_of_static_patch_has_norm_three():
    gray, flow = textured(60, 60, seed=8)
    hists = frame_histograms(gray, flow)
    pts = np.float32([[30, 30], [20, 40]])
    per_frame = np.stack([cell_descriptors(hists, pts)["hog"] for _ in range(15)], axis=1)
    np.testing.assert_allclose((temporal_pool(per_frame).astype(np.float64) ** 2).sum(axis=1), 3.0, rtol=1e-5)


# ----------------------------------------------------------------------------------------- errors
def test_bad_inputs_raise_parameter_error():
    gray = np.zeros((40, 40), np.float32)
    with pytest.raises(ParameterError, match="flow must have shape"):
        frame_histograms(gray, np.zeros((40, 41, 2), np.float32))
    with pytest.raises(ParameterError, match="2-D"):
        frame_histograms(np.zeros((40, 40, 3), np.float32), np.zeros((40, 40, 2), np.float32))
    hists = frame_histograms(gray, np.zeros((40, 40, 2), np.float32))
    with pytest.raises(ParameterError, match="NaN"):
        cell_descriptors(hists, np.float32([[np.nan, 3]]))
    with pytest.raises(ParameterError, match=r"\(n, 2\)"):
        cell_descriptors(hists, np.float32([1, 2, 3]))
    small = frame_histograms(np.zeros((20, 40), np.float32), np.zeros((20, 40, 2), np.float32))
    with pytest.raises(ParameterError, match="smaller than"):
        cell_descriptors(small, np.float32([[1, 2]]))
    with pytest.raises(ParameterError, match="divisible"):
        DescriptorLayout(patch=30, nx_cells=4)
    with pytest.raises(ParameterError, match="cannot fill"):
        temporal_pool(np.zeros((1, 2, 8), np.float32), 3)
    assert isinstance(hists, FrameHistograms)


def test_hog_made_apart_gives_the_histograms_of_the_fused_call():
    """``hog_histogram`` then ``frame_histograms(..., hog=)`` (the extractor's front thread makes the HOG ahead):
    the four arrays of one ``frame_histograms`` call, bit for bit, reusing ``out``'s flow arrays."""
    from idtfv.idt.descriptors import hog_histogram

    rng = np.random.default_rng(5)
    gray = rng.integers(0, 256, (37, 53)).astype(np.uint8)
    flow = rng.normal(0, 2, (37, 53, 2)).astype(np.float32)
    want = frame_histograms(gray, flow)
    hog = hog_histogram(gray)
    assert hog.tobytes() == want.hog.tobytes() and want.hog.any()
    out = frame_histograms(gray, np.zeros_like(flow))
    got = frame_histograms(gray, flow, out=out, hog=hog)
    assert got.hog is hog and all(a is b for a, b in zip(got[1:], out[1:]))  # nothing fresh
    assert all(a.tobytes() == b.tobytes() for a, b in zip(want, got))
    with pytest.raises(ParameterError, match="hog must be gray's hog_histogram"):
        frame_histograms(gray, flow, hog=hog[1:])


@pytest.mark.parametrize("nb", [8, 9])
def test_the_vector_integral_rows_match_the_run_time_loop_bit_for_bit(nb):
    """``_accumulate_row_usual`` (one pass, 8 bins per vector: ``_histograms_simd_nb.integral_row``) against the
    run-time loop of ``_accumulate_row`` on the same weights: the same bits, row after row, for 8 bins (HOG,
    MBH) and for 9 (HOF with its zero-motion bin, ``fbin == 8`` exactly), with large and zero weights, angles on
    bin edges and just below a full turn, and widths with and without a remainder of 8."""
    from numba import njit

    from idtfv.idt import _histograms_nb as hnb

    @njit
    def both(mag, fbin, nb_literal_9, a, b):
        rowsum = np.zeros(9, np.float32)
        for y in range(mag.shape[0]):
            if nb_literal_9:
                hnb._accumulate_row_usual(mag[y], fbin[y], 9, a[y], a[y + 1])
                hnb._accumulate_row(mag[y], fbin[y], 8, 9, rowsum, b[y], b[y + 1])
            else:
                hnb._accumulate_row_usual(mag[y], fbin[y], 8, a[y], a[y + 1])
                hnb._accumulate_row(mag[y], fbin[y], 8, 8, rowsum, b[y], b[y + 1])

    rng = np.random.default_rng(nb)
    for w in (37, 64, 5):
        h = 30
        mag = (rng.random((h, w)) * rng.choice([1e-3, 1.0, 1e4], (h, w))).astype(np.float32)
        mag[::4, ::3] = 0.0
        fbin = (rng.random((h, w)) * 8).astype(np.float32)
        fbin[1, :] = np.floor(fbin[1, :])  # on bin edges
        fbin[2, :] = np.nextafter(np.float32(8), np.float32(0))  # just below a full turn
        if nb == 9:
            zero = rng.random((h, w)) < 0.3
            fbin[zero], mag[zero] = 8.0, 1.0  # the zero-motion bin
        a = np.zeros((h + 1, (w + 1) * nb), np.float32)
        b = np.zeros_like(a)
        both(mag, fbin, nb == 9, a, b)
        assert np.array_equal(a.view(np.uint32), b.view(np.uint32)), w
        assert a[-1].reshape(w + 1, nb)[-1].sum() > 0  # sums were made


@pytest.mark.parametrize("nb", [8, 9])
@pytest.mark.parametrize("eps", [0.0, 1e-10])
def test_vector_cells_and_root_sums_match_scalar_loops_bit_for_bit(nb, eps):
    """The per-point block steps of the streamed descriptors: a cell's bins (``_cell``: one vector for 8 or 9
    bins, ``_histograms_simd_nb.cell_bins8/9``) and a block's square roots added to a track's sum
    (``_add_normalised``: ``add_sqrt_scaled``, eight at a time with a masked tail) against plain loops of the
    same float32 operations, bit for bit; with corners whose differences cancel to tiny negatives (clipped to 0)
    and to exact zeros, and block sizes with and without a remainder of 8."""
    from numba import njit

    from idtfv.idt import _histograms_nb as hnb

    @njit
    def cells(top, bottom, xa, xb, eps, out_vec, out_loop):
        hist = np.stack((top, bottom))  # the two integral rows, read by number
        for i in range(xa.shape[0]):
            hnb._cell(hist, 0, 1, xa[i], xb[i], nb, np.float32(eps), out_vec[i], 0)
            for b in range(top.shape[1]):
                d = (bottom[xb[i], b] - top[xb[i], b]) - (bottom[xa[i], b] - top[xa[i], b])
                out_loop[i, b] = max(d, np.float32(0.0)) + np.float32(eps)

    @njit
    def roots(vec, total, dim, acc_vec, acc_loop):
        hnb._add_normalised(vec, total, dim, acc_vec, 3)
        inv = np.float32(1.0 / total)
        for k in range(dim):
            acc_loop[3 + k] += np.float32(np.sqrt(vec[k] * inv))

    rng = np.random.default_rng(nb)
    w = 50
    top = np.cumsum(rng.random((w + 1, nb)).astype(np.float32) * 100, axis=0, dtype=np.float32)
    bottom = top + np.cumsum(rng.random((w + 1, nb)).astype(np.float32), axis=0, dtype=np.float32)
    bottom[23] = top[23]  # cells from column 7 to 23: a difference of 0 minus a tiny positive one (clipped)
    bottom[7] = np.nextafter(top[7], np.float32(np.inf))
    bottom[7, 0] = top[7, 0]  # and one that cancels exactly
    xa = rng.integers(0, w - 16, 200)
    xa[:5] = 7
    xb = xa + 16
    got, want = np.zeros((200, 16), np.float32), np.zeros((200, 16), np.float32)
    cells(top, bottom, xa, xb, eps, got, want)
    assert np.array_equal(got[:, :nb].view(np.uint32), want[:, :nb].view(np.uint32))
    assert (got[:, :nb] == np.float32(eps)).any()  # clipped or cancelled cells were there
    for dim in (32, 36, 5, 8):
        vec = rng.random(40).astype(np.float32) * 3
        acc_vec = rng.random(60).astype(np.float32)
        acc_loop = acc_vec.copy()
        roots(vec, float(vec[:dim].astype(np.float64).sum()), dim, acc_vec, acc_loop)
        assert np.array_equal(acc_vec.view(np.uint32), acc_loop.view(np.uint32)), dim
        np.testing.assert_array_equal(acc_vec[3 + dim:], acc_loop[3 + dim:])  # nothing past the block written
