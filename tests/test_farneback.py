"""Tests of idtfv.idt.flow.farneback (ours): planted polynomials, a brute-force weighted least-squares expansion,
planted translations and smooth flows (compared with OpenCV's Farnebäck with the same parameters), identical
frames, the pyramid API."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from idtfv.errors import ParameterError
from idtfv.idt.flow.farneback import FarnebackPyramidFlow, OpenCVFarnebackPyramidFlow, farneback_level, poly_expansion
from idtfv.idt.pyramid import pyramid_geometry

H, W = 96, 128
SHARED = Path(__file__).resolve().parents[1].parent / "shared"
VIDEO = SHARED / "reference" / "videos" / "vtest_320x240.avi"


def texture(h=H + 40, w=W + 40, seed=0):
    rng = np.random.default_rng(seed)
    img = cv2.GaussianBlur(rng.random((h, w)).astype(np.float32), (0, 0), 2.0)
    return cv2.normalize(img, None, 0, 255, cv2.NORM_MINMAX)


def shifted_pair(flow, seed=0):
    """Frame 1 and frame 2 = frame 1 moved by ``flow`` (I2(x) = I1(x - d)), both (H, W) float32."""
    big = texture(seed=seed)
    yy, xx = np.mgrid[:H, :W].astype(np.float32)
    i1 = big[20:20 + H, 20:20 + W].copy()
    i2 = cv2.remap(big, xx + 20 - flow[..., 0], yy + 20 - flow[..., 1], cv2.INTER_CUBIC)
    return i1, i2


def pyramid(img, n=3):
    levels = [img]
    for i in range(1, n):
        f = np.sqrt(2.0) ** i
        levels.append(cv2.resize(levels[-1], (int(round(W / f)), int(round(H / f))), interpolation=cv2.INTER_LINEAR))
    return levels


def epe(f, d, margin=12):
    return float(np.sqrt(((f - d) ** 2).sum(-1))[margin:-margin, margin:-margin].mean())


def opencv_pyramid(levels1, levels2, *, gaussian=True):
    """OpenCV Farnebäck per level, coarse to fine, median-filtered, as the reference pipeline computes it."""
    flags = cv2.OPTFLOW_USE_INITIAL_FLOW | (cv2.OPTFLOW_FARNEBACK_GAUSSIAN if gaussian else 0)
    init = None
    for a, b in zip(levels1[::-1], levels2[::-1]):
        h, w = a.shape
        f = np.zeros((h, w, 2), np.float32)
        if init is not None:
            f = cv2.resize(init, (w, h)) * np.float32([w / init.shape[1], h / init.shape[0]])
        f = cv2.calcOpticalFlowFarneback(a, b, np.ascontiguousarray(f, np.float32), 0.5, 0, 10, 2, 7, 1.5, flags)
        f = np.dstack([cv2.medianBlur(np.ascontiguousarray(f[..., c]), 5) for c in range(2)])
        init = f
    return init


# --------------------------------------------------------------------------------------- polynomial expansion
def test_expansion_recovers_planted_quadratic():
    yy, xx = np.mgrid[:60, :70].astype(np.float64)
    c, bx, by, a11, a22, a12 = 40.0, 0.8, -1.1, 0.02, -0.015, 0.01
    # f(x) in absolute coordinates; around (x0, y0) the local gradient is b + 2 A x0
    f = c + bx * xx + by * yy + a11 * xx**2 + a22 * yy**2 + 2 * a12 * xx * yy
    r = poly_expansion(f.astype(np.float32))
    inner = (slice(10, -10), slice(10, -10))
    x0, y0 = xx[inner], yy[inner]
    np.testing.assert_allclose(r[inner][..., 2], a11, atol=2e-4)
    np.testing.assert_allclose(r[inner][..., 3], a22, atol=2e-4)
    np.testing.assert_allclose(r[inner][..., 4], a12, atol=2e-4)
    np.testing.assert_allclose(r[inner][..., 0], bx + 2 * a11 * x0 + 2 * a12 * y0, atol=5e-3)
    np.testing.assert_allclose(r[inner][..., 1], by + 2 * a22 * y0 + 2 * a12 * x0, atol=5e-3)


def test_expansion_matches_brute_force_weighted_least_squares():
    img = texture(40, 44, seed=3)
    r = poly_expansion(img, poly_n=7, poly_sigma=1.5)
    t = np.arange(-7, 8, dtype=np.float64)
    g = np.exp(-t**2 / (2 * 1.5**2))
    ty, tx = np.meshgrid(t, t, indexing="ij")
    wts = np.sqrt(np.outer(g, g)).ravel()
    basis = np.stack([np.ones_like(tx), tx, ty, tx**2, ty**2, tx * ty], -1).reshape(-1, 6)
    for y, x in [(10, 10), (20, 30), (7, 36), (25, 12)]:
        patch = img[y - 7:y + 8, x - 7:x + 8].astype(np.float64).ravel()
        coef, *_ = np.linalg.lstsq(basis * wts[:, None], patch * wts, rcond=None)
        want = [coef[1], coef[2], coef[3], coef[4], coef[5] / 2]
        np.testing.assert_allclose(r[y, x], want, rtol=2e-3, atol=2e-3)


# --------------------------------------------------------------------------------------- displacement
def test_identical_frames_give_exactly_zero_flow():
    img = texture(H, W, seed=1)
    fp = FarnebackPyramidFlow()
    assert fp(pyramid(img)) is None
    flows = fp(pyramid(img.copy()))
    assert all(not f.any() for f in flows)


@pytest.mark.parametrize("window", ["gaussian", "box"])
def test_one_pixel_window_is_the_per_pixel_solve(window):
    """winsize 1 (accepted by the options) is a one-tap window for both weightings: finite flow equal to the box
    window's (the Gaussian's sigma is 0 there; its weights were 0 / 0 = NaN before)."""
    a, b = texture(seed=3), np.roll(texture(seed=3), 1, axis=1)
    flows = {}
    for w in ("gaussian", "box"):
        fp = FarnebackPyramidFlow(winsize=1, window=w)
        fp(pyramid(a))
        flows[w] = fp(pyramid(b))
    assert all(np.isfinite(f).all() for f in flows[window])
    for g, x in zip(flows["gaussian"], flows["box"]):
        np.testing.assert_array_equal(g, x)


@pytest.mark.parametrize("kind", ["translation", "smooth"])
def test_planted_flow_recovered_and_close_to_opencv(kind):
    yy, xx = np.mgrid[:H, :W].astype(np.float32)
    if kind == "translation":
        d = np.broadcast_to(np.float32([1.3, -0.7]), (H, W, 2)).copy()
    else:
        d = np.stack([1.5 * np.sin(xx / 25) + 0.4 * np.cos(yy / 20), 1.2 * np.cos(xx / 30 + yy / 35)], -1)
        d = d.astype(np.float32)
    i1, i2 = shifted_pair(d, seed=2)
    p1, p2 = pyramid(i1), pyramid(i2)
    for window, gaussian in [("gaussian", True), ("box", False)]:
        fp = FarnebackPyramidFlow(window=window)
        fp(p1)
        flows = fp(p2)
        assert [f.shape for f in flows] == [(lvl.shape[0], lvl.shape[1], 2) for lvl in p1]
        assert all(f.dtype == np.float32 for f in flows)
        ours = epe(flows[0], d)
        theirs = epe(opencv_pyramid(p1, p2, gaussian=gaussian), d)
        assert ours < 0.2, (window, ours)
        assert ours <= 1.15 * theirs + 0.01, (window, ours, theirs)


def test_single_level_equals_opencv_with_its_presmoothing():
    # OpenCV smooths its finest level with a 3x3 Gaussian (sigma 0.8) before expanding it; with the same input
    # the two implementations of the same equations agree to float rounding away from the borders
    d = np.broadcast_to(np.float32([0.6, 0.9]), (H, W, 2))
    i1, i2 = shifted_pair(d, seed=4)
    s1, s2 = cv2.GaussianBlur(i1, (3, 3), 0), cv2.GaussianBlur(i2, (3, 3), 0)
    for window, flags in [("gaussian", cv2.OPTFLOW_FARNEBACK_GAUSSIAN), ("box", 0)]:
        ours = farneback_level(poly_expansion(s1), poly_expansion(s2), window=window)
        theirs = cv2.calcOpticalFlowFarneback(i1, i2, None, 0.5, 0, 10, 2, 7, 1.5, flags)
        assert np.abs(ours - theirs)[12:-12, 12:-12].max() < 2e-3, window


def test_pyramid_agrees_with_opencv_per_level():
    yy, xx = np.mgrid[:H, :W].astype(np.float32)
    d = np.stack([1.5 * np.sin(xx / 25), 1.2 * np.cos(yy / 30)], -1).astype(np.float32)
    i1, i2 = shifted_pair(d, seed=7)
    p1, p2 = pyramid(i1), pyramid(i2)
    fp = FarnebackPyramidFlow()
    fp(p1)
    ours = fp(p2)[0]
    theirs = opencv_pyramid(p1, p2, gaussian=True)
    assert np.sqrt(((ours - theirs) ** 2).sum(-1))[12:-12, 12:-12].mean() < 2e-3


@pytest.mark.skipif(not VIDEO.exists(), reason="needs ../shared reference videos")
def test_real_video_agrees_with_opencv():
    cap = cv2.VideoCapture(str(VIDEO))
    frames = []
    for _ in range(3):
        ok, frame = cap.read()
        assert ok
        frames.append(cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY).astype(np.float32))
    h, w = frames[0].shape

    def pyr(img):
        levels = [img]
        for i in range(1, 4):
            f = np.sqrt(2.0) ** i
            levels.append(cv2.resize(levels[-1], (int(round(w / f)), int(round(h / f))),
                                     interpolation=cv2.INTER_LINEAR))
        return levels

    fp = FarnebackPyramidFlow()
    fp(pyr(frames[0]))
    for a, b in zip(frames[:-1], frames[1:]):
        ours = fp(pyr(b))[0]
        theirs = opencv_pyramid(pyr(a), pyr(b), gaussian=True)
        diff = np.sqrt(((ours - theirs) ** 2).sum(-1))
        assert diff.mean() < 0.01
        assert np.median(diff) < 1e-3


def test_coarser_levels_carry_scaled_flow():
    d = np.broadcast_to(np.float32([1.0, 0.5]), (H, W, 2))
    i1, i2 = shifted_pair(d, seed=5)
    fp = FarnebackPyramidFlow()
    fp(pyramid(i1))
    flows = fp(pyramid(i2))
    for i, f in enumerate(flows):
        s = np.sqrt(2.0) ** i
        inner = f[8:-8, 8:-8].reshape(-1, 2)
        np.testing.assert_allclose(np.median(inner, axis=0), [1.0 / s, 0.5 / s], atol=0.08)


def test_opencv_pyramid_flow_is_opencv_per_level():
    """The OpenCV twin: on one level exactly OpenCV's call from zero flow, median-filtered; on a pyramid it
    recovers a planted translation as well as ours."""
    d = np.broadcast_to(np.float32([1.3, -0.7]), (H, W, 2)).copy()
    i1, i2 = shifted_pair(d, seed=8)
    fp = OpenCVFarnebackPyramidFlow()
    assert fp([i1]) is None
    (got,) = fp([i2])
    flags = cv2.OPTFLOW_USE_INITIAL_FLOW | cv2.OPTFLOW_FARNEBACK_GAUSSIAN
    raw = cv2.calcOpticalFlowFarneback(i1, i2, np.zeros((H, W, 2), np.float32), 0.5, 0, 10, 2, 7, 1.5, flags)
    np.testing.assert_array_equal(got, np.dstack([cv2.medianBlur(np.ascontiguousarray(raw[..., c]), 5)
                                                  for c in range(2)]))
    fp = OpenCVFarnebackPyramidFlow()
    fp(pyramid(i1))
    flows = fp(pyramid(i2))
    assert [f.shape for f in flows] == [(lvl.shape[0], lvl.shape[1], 2) for lvl in pyramid(i1)]
    assert epe(flows[0], d) < 0.2


# --------------------------------------------------------------------------------------- state and errors
def test_state_reset_and_flow_from_previous():
    d = np.broadcast_to(np.float32([0.8, 0.0]), (H, W, 2))
    i1, i2 = shifted_pair(d, seed=6)
    fp = FarnebackPyramidFlow()
    fp(pyramid(i1))
    with pytest.raises(ParameterError, match="needs two frames"):
        fp.flow_from_previous(pyramid(i2))
    flows = fp(pyramid(i2))
    kept = [f.copy() for f in flows]
    side = fp.flow_from_previous(pyramid(i1))  # from frame 1 again (identical frames): zero, state kept
    assert all(not f.any() for f in side)
    for a, b in zip(flows, kept):  # the returned flows are the caller's, not scratch the next solve overwrites
        assert a.dtype == np.float32 and a.flags.c_contiguous and a.shape[2] == 2
        np.testing.assert_array_equal(a, b)
    again = fp.flow_from_previous(pyramid(i2))  # the expansions of frame 1 are still intact
    for a, b in zip(flows, again):
        np.testing.assert_array_equal(a, b)
    fp.reset()
    assert fp(pyramid(i2)) is None
    with pytest.raises(ParameterError, match="differ from the previous frame"):
        fp(pyramid(i2, n=2))


def test_looking_ahead_gives_the_flows_of_the_one_thread_order():
    """With look_ahead() frame t+1's solve may come before frame t's side solves (the extractor's front thread):
    given step()'s source they start from frame t-1 still, and every flow equals the one-thread order's, bit for
    bit (the solves keep separate scratch)."""
    rng = np.random.default_rng(9)
    frames = [texture(seed=s)[:H, :W] for s in range(5)]
    warped = [np.clip(f.astype(np.int16) + rng.integers(-3, 4, f.shape), 0, 255).astype(np.uint8) for f in frames]
    priors = [[np.zeros((lvl.shape[0], lvl.shape[1], 2), np.float32) + 0.3 for lvl in pyramid(f)] for f in frames]
    one = FarnebackPyramidFlow()
    one(pyramid(frames[0]))
    want = []
    for t in range(1, 5):
        want.append((one(pyramid(frames[t])), one.flow_from_previous(pyramid(warped[t])),
                     one.refine_from_previous(pyramid(warped[t]), priors[t])))
    ahead = FarnebackPyramidFlow()
    assert ahead.look_ahead() and ahead.frame_slots == 3
    ahead(pyramid(frames[0]))
    with pytest.raises(ParameterError, match="before the first frame"):
        ahead.look_ahead()
    steps = [None] + [ahead.step(pyramid(frames[1]))]
    got = []
    for t in range(1, 5):
        if t + 1 < 5:
            steps.append(ahead.step(pyramid(frames[t + 1])))  # frame t+1 first: the object has moved on
        flows, source = steps[t]
        got.append((flows, ahead.flow_from_previous(pyramid(warped[t]), source=source),
                    ahead.refine_from_previous(pyramid(warped[t]), priors[t], source=source)))
    for w, g in zip(want, got):
        for a, b in zip(w, g):
            assert all(x.tobytes() == y.tobytes() for x, y in zip(a, b))
    assert any(f.any() for f in want[-1][1])  # not vacuous: non-zero flows


def test_frames_prepared_ahead_give_the_flows_of_the_one_thread_order():
    """prepare_ahead() of frame t+1 (into slot_after(1), with its own presmoothing scratch) made while frame t's
    step prepares and solves (another thread's work, here interleaved by hand), handed to frame t+1's step: every
    flow and side solve is the plain order's, bit for bit; a preparation for another slot is refused."""
    rng = np.random.default_rng(4)
    frames = [texture(seed=s)[:H, :W] for s in range(6)]
    warped = [np.clip(f.astype(np.int16) + rng.integers(-3, 4, f.shape), 0, 255).astype(np.uint8) for f in frames]
    one = FarnebackPyramidFlow()
    one(pyramid(frames[0]))
    want = [(one(pyramid(f)), one.flow_from_previous(pyramid(w))) for f, w in zip(frames[1:], warped[1:])]
    ahead = FarnebackPyramidFlow()
    assert ahead.look_ahead(2) and ahead.frame_slots == 4
    with pytest.raises(ParameterError, match="first frame"):
        ahead.prepare_ahead(pyramid(frames[1]), 1)  # no buffers before the first frame
    ahead(pyramid(frames[0]))
    prepared = ahead.prepare_ahead(pyramid(frames[1]), ahead.slot_after(0))
    got = []
    for t in range(1, 6):
        following = None
        if t + 1 < 6:  # frame t+1 prepared before frame t's step (its slot is not frame t's nor t-1's)
            following = ahead.prepare_ahead(pyramid(frames[t + 1]), ahead.slot_after(1))
        flows, source = ahead.step(pyramid(frames[t]), prepared=prepared)
        got.append((flows, ahead.flow_from_previous(pyramid(warped[t]), source=source)))
        prepared = following
    for w, g in zip(want, got):
        for a, b in zip(w, g):
            assert all(x.tobytes() == y.tobytes() for x, y in zip(a, b))
    assert any(f.any() for f in want[-1][0])  # not vacuous: non-zero flows
    with pytest.raises(ParameterError, match="takes slot"):
        ahead.step(pyramid(frames[1]), prepared=ahead.prepare_ahead(pyramid(frames[1]), ahead.slot_after(1)))


@pytest.mark.parametrize("poly_n, sigma, iterations", [(7, 1.5, 2), (5, 1.1, 1), (7, 1.5, 3)])
def test_pyramid_flow_is_the_level_by_level_solve(poly_n, sigma, iterations):
    """With the 5x5 median each level is one kernel call (``_level_nb.level_flow``: the prior's rescaling, the
    terms, the rounds, the median): the flows equal, bit for bit, a coarse-to-fine loop written out here from the
    public pieces: the 3x3 presmoothing, :func:`poly_expansion`, :func:`farneback_level` (kernel by kernel),
    ``cv2.medianBlur`` per plane, and the prior resized by OpenCV and scaled by NumPy."""
    d = np.broadcast_to(np.float32([1.3, -0.6]), (H, W, 2))
    i1, i2 = shifted_pair(d, seed=11)
    levels1, levels2 = pyramid(i1, 4), pyramid(i2, 4)
    fp = FarnebackPyramidFlow(poly_n=poly_n, poly_sigma=sigma, iterations=iterations)
    fp(levels1)
    got = fp(levels2)

    def expand(lvl):
        return poly_expansion(cv2.GaussianBlur(lvl, (3, 3), 0), poly_n=poly_n, poly_sigma=sigma)

    want = [None] * len(levels1)
    prior = None
    for s in range(len(levels1) - 1, -1, -1):
        h, w = levels1[s].shape
        if prior is not None:
            h0, w0 = prior.shape[:2]
            prior = np.dstack([cv2.resize(np.ascontiguousarray(prior[..., c]), (w, h), interpolation=cv2.INTER_LINEAR)
                               for c in range(2)])
            prior[..., 0] *= np.float32(w / w0)
            prior[..., 1] *= np.float32(h / h0)
        flow = farneback_level(expand(levels1[s]), expand(levels2[s]), prior, iterations=iterations)
        want[s] = prior = np.dstack([cv2.medianBlur(np.ascontiguousarray(flow[..., c]), 5) for c in range(2)])
    for a, b in zip(got, want):
        assert a.shape == b.shape and a.tobytes() == b.tobytes()
    np.testing.assert_allclose(np.median(got[0][12:-12, 12:-12].reshape(-1, 2), axis=0), [1.3, -0.6], atol=0.1)


def _bilinear_f64(src, h, w):
    """The bilinear resize of ``src`` to ``(h, w)`` written out in float64 (OpenCV's pixel-centre mapping,
    neighbours clamped to the image): an independent reference for :func:`upscale_prior`."""
    h0, w0 = src.shape
    py = np.clip((np.arange(h) + 0.5) * (h0 / h) - 0.5, 0, h0 - 1)
    px = np.clip((np.arange(w) + 0.5) * (w0 / w) - 0.5, 0, w0 - 1)
    y0, x0 = np.floor(py).astype(int), np.floor(px).astype(int)
    y1, x1 = np.minimum(y0 + 1, h0 - 1), np.minimum(x0 + 1, w0 - 1)
    ty, tx = (py - y0)[:, None], (px - x0)[None, :]
    s = src.astype(np.float64)
    top = s[y0][:, x0] * (1 - tx) + s[y0][:, x1] * tx
    bottom = s[y1][:, x0] * (1 - tx) + s[y1][:, x1] * tx
    return top * (1 - ty) + bottom * ty


def test_the_level_kernels_upscale_is_opencvs_resize():
    """``_level_nb.upscale_prior`` (the coarser level's flow resized inside the level's one kernel call) against
    ``cv2.resize(INTER_LINEAR)`` of each plane: bit for bit where OpenCV resizes float32 with Intel IPP (its x86
    builds), on the pyramid chains of several frame sizes (factor sqrt(2) and 2) and odd steps, and within float32
    rounding of the bilinear resize written out in float64 everywhere."""
    from idtfv.idt.flow._level_nb import upscale_prior

    rng = np.random.default_rng(7)
    steps = 0
    for fh, fw in ((240, 320), (120, 160), (101, 77), (540, 960), (9, 7)):
        for factor in (np.sqrt(2.0), 2.0):
            _, sizes = pyramid_geometry(fw, fh, scale_factor=factor, patch=4)
            chain = [(h, w) for w, h in sizes]
            for (h, w), (h0, w0) in zip(chain, chain[1:]):
                for scale in (1.0, 40.0):
                    prior = (rng.normal(size=(2, h0, w0)) * scale).astype(np.float32)
                    got = np.full((2, h, w), np.nan, np.float32)
                    upscale_prior(prior, got, np.float32(1.0), np.float32(1.0))
                    for c in range(2):
                        want = _bilinear_f64(prior[c], h, w)
                        np.testing.assert_allclose(got[c], want, rtol=2e-6, atol=4e-6 * scale)
                        if cv2.ipp.useIPP():
                            cv = cv2.resize(prior[c], (w, h), interpolation=cv2.INTER_LINEAR)
                            assert got[c].tobytes() == cv.tobytes(), ((h0, w0), (h, w))
                    steps += 1
    for (h0, w0), (h, w) in (((2, 2), (170, 226)), ((5, 3), (12, 7)), ((42, 57), (61, 80))):  # other ratios
        prior = rng.normal(size=(2, h0, w0)).astype(np.float32)
        got = np.empty((2, h, w), np.float32)
        upscale_prior(prior, got, np.float32(1.0), np.float32(1.0))
        np.testing.assert_allclose(got[0], _bilinear_f64(prior[0], h, w), rtol=2e-6, atol=4e-6)
        if cv2.ipp.useIPP():
            assert got[1].tobytes() == cv2.resize(prior[1], (w, h), interpolation=cv2.INTER_LINEAR).tobytes()
    assert steps > 40  # not vacuous: every chain had levels


@pytest.mark.parametrize("h, w", [(240, 320), (85, 113), (2, 2), (2, 9), (9, 2), (1, 6), (6, 1), (1, 1)])
def test_the_level_kernels_presmoothing_is_opencvs_gaussian_blur(h, w):
    """``_level_nb.presmooth3`` (the 3x3 presmoothing inside the level's expansion call) against
    ``cv2.GaussianBlur(level as float32, (3, 3), 0)``, bit for bit, for uint8 levels and float32 ones of three
    magnitudes, on sizes down to 1 pixel; and ``smooth_expand`` against the blur then ``poly_expand``."""
    from idtfv.idt.flow import _farneback_nb
    from idtfv.idt.flow._level_nb import presmooth3, smooth_expand

    rng = np.random.default_rng(h * 1000 + w)
    levels = [(rng.random((h, w)) * 256).astype(np.uint8)]
    levels += [(rng.random((h, w)) * scale).astype(np.float32) for scale in (1e-3, 1.0, 255.0)]
    for lvl in levels:
        got = np.full((h, w), np.nan, np.float32)
        presmooth3(lvl, got)
        want = cv2.GaussianBlur(lvl.astype(np.float32), (3, 3), 0)
        assert got.tobytes() == want.tobytes(), lvl.dtype
    assert len(np.unique(levels[0])) > min(h * w, 100) // 2  # not vacuous: textured levels
    if min(h, w) >= 2:
        fp = FarnebackPyramidFlow(poly_n=5, poly_sigma=1.1)
        kernels, consts = fp._filters
        smooth, out, want = np.empty((h, w), np.float32), np.empty((h, w, 5), np.float32), np.empty((h, w, 5),
                                                                                                    np.float32)
        smooth_expand(levels[0], smooth, *kernels, *consts, out)
        _farneback_nb.poly_expand(cv2.GaussianBlur(levels[0].astype(np.float32), (3, 3), 0), *kernels, *consts, want)
        assert out.tobytes() == want.tobytes()


def test_bad_parameters():
    with pytest.raises(ParameterError, match="median"):
        FarnebackPyramidFlow(median=4)
    with pytest.raises(ParameterError, match="window"):
        FarnebackPyramidFlow(window="triangle")
    with pytest.raises(ParameterError, match="2-D"):
        FarnebackPyramidFlow()([np.zeros((10, 10, 3), np.float32)])
    with pytest.raises(ParameterError, match="empty"):
        FarnebackPyramidFlow()([])
    with pytest.raises(ParameterError, match="2-D"):
        poly_expansion(np.zeros((5, 5, 2), np.float32))
    r = poly_expansion(np.zeros((8, 9), np.float32))
    with pytest.raises(ParameterError, match="flow must have shape"):
        farneback_level(r, r, np.zeros((8, 8, 2), np.float32))


def test_update_terms_where_the_displaced_point_leaves_the_image():
    """Where x + d falls outside the image the second frame contributes nothing (b2 = 0, A = A1), as OpenCV's
    update step: checked against a naive evaluation of the terms, inside and outside."""
    from idtfv.idt.flow import _farneback_nb as knb

    rng = np.random.default_rng(3)
    h, w = 12, 16
    r0 = rng.normal(size=(h, w, 5)).astype(np.float32)
    r1 = rng.normal(size=(h, w, 5)).astype(np.float32)
    flow = np.zeros((2, h, w), np.float32)
    flow[0, :, :] = 0.25
    flow[0, :, -3:] = 5.0  # the last columns point out of the image
    flow[1, 0, :] = -2.0  # so does the first row
    border = np.ones(1, np.float32)  # no border weighting
    out = np.empty((h, w, 5), np.float32)
    knb.update_matrices(r0, r1, flow, border, out)

    def naive(y, x):
        dx, dy = float(flow[0, y, x]), float(flow[1, y, x])
        fx, fy = x + dx, y + dy
        c = r0[y, x].astype(np.float64)
        if 0 <= fx <= w - 1 and 0 <= fy <= h - 1:
            x1, y1 = min(int(fx), w - 2), min(int(fy), h - 2)
            ax, ay = fx - x1, fy - y1
            s = ((1 - ax) * (1 - ay) * r1[y1, x1] + ax * (1 - ay) * r1[y1, x1 + 1]
                 + (1 - ax) * ay * r1[y1 + 1, x1] + ax * ay * r1[y1 + 1, x1 + 1]).astype(np.float64)
        else:
            s = np.array([0.0, 0.0, c[2], c[3], c[4]])
        a11, a22, a12 = (c[2] + s[2]) / 2, (c[3] + s[3]) / 2, (c[4] + s[4]) / 2
        db1 = (c[0] - s[0]) / 2 + a11 * dx + a12 * dy
        db2 = (c[1] - s[1]) / 2 + a12 * dx + a22 * dy
        return [a11 * a11 + a12 * a12, a12 * (a11 + a22), a22 * a22 + a12 * a12,
                a11 * db1 + a12 * db2, a12 * db1 + a22 * db2]

    for y, x in [(5, 5), (5, w - 1), (5, w - 3), (0, 4), (0, w - 1), (h - 1, 2)]:
        np.testing.assert_allclose(out[y, x], naive(y, x), rtol=1e-4, atol=1e-5)


def _fma32(a, b, c):
    """float32 a * b + c rounded once, emulated in float64 (the product of two float32 is exact there)."""
    return (np.float64(a) * np.float64(b) + np.float64(c)).astype(np.float32)


def _terms_emulated(r0, r1, flow, border):
    """The update step's terms at every pixel in NumPy, with the kernel's operations in its order and rounding:
    the bilinear blend and Delta b as chains of fused multiply-adds (``_farneback_simd_nb``'s docstring), the rest
    float32 products and sums. An independent, whole-array evaluation of what each pixel's lanes compute."""
    f32 = np.float32
    h, w = r0.shape[:2]
    yy, xx = np.mgrid[0:h, 0:w]
    fx, fy = xx.astype(f32) + flow[0], yy.astype(f32) + flow[1]
    inside = ((fx >= 0) & (fx <= w - 1) & (fy >= 0) & (fy <= h - 1)).astype(f32)
    fx, fy = np.clip(fx, 0, f32(w - 1)), np.clip(fy, 0, f32(h - 1))
    x1, y1 = np.minimum(fx.astype(np.int64), w - 2), np.minimum(fy.astype(np.int64), h - 2)
    ax, ay = fx - x1.astype(f32), fy - y1.astype(f32)
    one = f32(1.0)
    w00, w01 = (one - ax) * (one - ay) * inside, ax * (one - ay) * inside
    w10, w11 = (one - ax) * ay * inside, ax * ay * inside
    outside = one - inside
    p, q, r, s = r1[y1, x1], r1[y1, x1 + 1], r1[y1 + 1, x1], r1[y1 + 1, x1 + 1]
    blend = []
    for k in range(5):
        t = _fma32(w00, p[..., k], w01 * q[..., k])
        t = _fma32(w10, r[..., k], t)
        t = _fma32(w11, s[..., k], t)
        blend.append(_fma32(outside, r0[..., k], t) if k >= 2 else t)
    half = f32(0.5)
    a11, a22, a12 = ((r0[..., k] + blend[k]) * half for k in (2, 3, 4))
    d0, d1 = r0[..., 0] - blend[0], r0[..., 1] - blend[1]
    wx, wy = np.ones(w, f32), np.ones(h, f32)
    for i in range(min(len(border), w)):
        wx[i] *= border[i]
        wx[w - 1 - i] *= border[i]
    for i in range(min(len(border), h)):
        wy[i] *= border[i]
        wy[h - 1 - i] *= border[i]
    wgt = wy[:, None] * wx[None, :]
    dx, dy = flow[0], flow[1]
    db1 = _fma32(a12, dy, _fma32(a11, dx, d0 * half)) * wgt
    db2 = _fma32(a22, dy, _fma32(d1, half, a12 * dx)) * wgt
    a11, a22, a12 = a11 * wgt, a22 * wgt, a12 * wgt
    return np.stack([_fma32(a11, a11, a12 * a12), a12 * (a11 + a22), _fma32(a22, a22, a12 * a12),
                     _fma32(a11, db1, a12 * db2), _fma32(a12, db1, a22 * db2)], axis=-1)


@pytest.mark.parametrize("h, w", [(48, 64), (23, 57), (9, 13), (6, 5)])
def test_update_terms_eight_at_a_time_match_the_emulated_arithmetic(h, w):
    """``update_matrices`` (eight pixels per vector step, ``_farneback_simd_nb.update_terms8``, and a scalar tail
    for the last w mod 8) and the fused ``window_solve``'s next-iteration terms: bit for bit the NumPy emulation of
    the same operations, on every pixel, with priors leaving the image on every side and points exactly on the
    last row and column; and within float rounding of the float64 formulas."""
    from idtfv.idt.flow import _farneback_nb as knb

    rng = np.random.default_rng(h * w)
    r0 = rng.normal(size=(h, w, 5)).astype(np.float32)
    r1 = rng.normal(size=(h, w, 5)).astype(np.float32)
    flow = (rng.normal(size=(2, h, w)) * 3).astype(np.float32)
    flow[:, ::4, ::3] = 0.0
    flow[0, :, -1] = 0.0  # exactly on the last column
    flow[1, -1, :] = 0.0
    want = _terms_emulated(r0, r1, flow, knb.BORDER_WEIGHTS)
    assert not np.isnan(want).any()
    got = np.full((h, w, 5), np.nan, np.float32)
    knb.update_matrices(r0, r1, flow, knb.BORDER_WEIGHTS, got)
    np.testing.assert_array_equal(got.view(np.uint32), want.view(np.uint32))
    # window_solve writes the terms at the flow it solved: the emulation at that flow
    m = want.copy()
    solved = np.empty((2, h, w), np.float32)
    knb.window_solve(m, np.full(3, 1 / 3, np.float32), knb.DET_EPS, solved, r0, r1, knb.BORDER_WEIGHTS, True)
    np.testing.assert_array_equal(m.view(np.uint32),
                                  _terms_emulated(r0, r1, solved, knb.BORDER_WEIGHTS).view(np.uint32))


@pytest.mark.parametrize("poly_n, sigma", [(5, 1.1), (7, 1.5)])
@pytest.mark.parametrize("h, w", [(37, 61), (16, 8), (9, 5), (2, 3)])
def test_expansion_eight_at_a_time_matches_the_scalar_passes(poly_n, sigma, h, w):
    """``poly_expand`` for the extractor's n (5, 7: ``_poly_expand8``, the taps unrolled in vector registers) is bit
    for bit the scalar form of the same sums (``_poly_expand_rows``: one pass over the row per tap), including
    widths with a remainder of 8, rows narrower than 8 and images smaller than the filter (replicated borders)."""
    from idtfv.idt.flow import _farneback_nb as knb
    from idtfv.idt.flow.farneback import _expansion_filters

    kernels, consts = _expansion_filters(poly_n, sigma)
    assert kernels[0].shape[0] - 1 == poly_n
    img = texture(h, w, seed=h * w).astype(np.float32)
    img[::3, ::2] = -img[::3, ::2]  # negative values and sign changes
    want = np.empty((h, w, 5), np.float32)
    knb._poly_expand_rows(img, *kernels, *consts, want)
    got = np.full((h, w, 5), np.nan, np.float32)
    knb.poly_expand(img, *kernels, *consts, got)
    np.testing.assert_array_equal(got.view(np.uint32), want.view(np.uint32))
