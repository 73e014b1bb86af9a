"""Camera motion: planted homographies recovered, compensated flow against a naive reference, determinism."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from idtfv.errors import ParameterError
from idtfv.idt.camera import (CameraMotion, CameraParams, compensate_flow, compensated_flows, estimate_homography,
                              resolve_matcher, scale_homographies, scale_homography, warp_to_previous)
from idtfv.idt.params import IDTParams


def _texture(h=120, w=160, seed=0):
    rng = np.random.default_rng(seed)
    img = cv2.GaussianBlur(rng.uniform(0, 255, (h, w)).astype(np.float32), (0, 0), 1.5)
    img = cv2.normalize(img, None, 0, 255, cv2.NORM_MINMAX)
    return img.astype(np.uint8)


def _planted(H, seed=0):
    """Frame t-1 and frame t = t-1 moved by H (a point p of t-1 is at H p in t), plus the exact flow."""
    big = _texture(200, 240, seed)
    prev = big[40:160, 40:200].copy()
    T = np.array([[1, 0, 40], [0, 1, 40], [0, 0, 1]], np.float64)
    # cur(x) = prev(H^-1 x), computed on the larger canvas to avoid borders
    Hc = T @ H @ np.linalg.inv(T)
    cur = cv2.warpPerspective(big, Hc, (240, 200), flags=cv2.INTER_LINEAR)[40:160, 40:200].copy()
    ys, xs = np.mgrid[0:120, 0:160].astype(np.float64)
    p = np.stack([xs, ys, np.ones_like(xs)], -1) @ H.T
    flow = (p[..., :2] / p[..., 2:] - np.stack([xs, ys], -1)).astype(np.float32)
    return prev, cur, flow


H_PLANTED = np.array([[1.01, 0.004, 2.5], [-0.003, 0.995, -1.5], [1e-5, -2e-5, 1.0]])


@pytest.mark.parametrize("matcher", ["orb", "flow", "akaze"])
def test_recovers_planted_homography(matcher):
    prev, cur, flow = _planted(H_PLANTED)
    H, n, name = estimate_homography(prev, cur, flow, matcher=matcher, params=CameraParams(),
                                     rng=np.random.default_rng(0))
    assert name == matcher and n > 25
    # compare where they send the frame's corners
    c = np.array([[0, 0, 1], [159, 0, 1], [0, 119, 1], [159, 119, 1]], np.float64).T
    a, b = H @ c, H_PLANTED @ c
    assert np.abs(a[:2] / a[2] - b[:2] / b[2]).max() < 0.5


def test_identical_frames_give_identity_like_h():
    img = _texture()
    H, n, _ = estimate_homography(img, img, np.zeros(img.shape + (2,), np.float32), matcher="orb")
    assert np.allclose(H, np.eye(3), atol=1e-3)


def test_flat_frames_reject_homography():
    img = np.full((60, 80), 128, np.uint8)
    H, n, _ = estimate_homography(img, img, np.zeros((60, 80, 2), np.float32), matcher="orb")
    assert n <= 25 and np.array_equal(H, np.eye(3))


def test_human_mask_excludes_points():
    prev, cur, flow = _planted(H_PLANTED)
    mask = np.zeros(prev.shape, np.uint8)  # everything masked: no matches -> identity
    H, n, _ = estimate_homography(prev, cur, flow, human_mask=mask, matcher="orb")
    assert n == 0 and np.array_equal(H, np.eye(3))


def test_warp_to_previous_aligns_frames():
    prev, cur, _ = _planted(H_PLANTED)
    back = warp_to_previous(cur, H_PLANTED).astype(np.float32)
    inner = (slice(15, -15), slice(15, -15))
    err = np.abs(back[inner] - prev[inner]).mean()
    assert err < 0.1 * np.abs(cur[inner].astype(np.float32) - prev[inner]).mean()


def test_compensate_flow_matches_naive_and_cancels_camera():
    _, _, flow = _planted(H_PLANTED)
    assert np.abs(compensate_flow(flow, H_PLANTED)).max() < 1e-3  # flow of the camera alone -> zero
    rng = np.random.default_rng(1)
    f = rng.normal(0, 2, (9, 11, 2)).astype(np.float32)
    out = compensate_flow(f, H_PLANTED)
    Hi = np.linalg.inv(H_PLANTED)
    for y in range(9):
        for x in range(11):
            q = Hi @ np.array([x + f[y, x, 0], y + f[y, x, 1], 1.0])
            np.testing.assert_allclose(out[y, x], q[:2] / q[2] - [x, y], atol=1e-3)
    assert compensate_flow(f, np.eye(3)) is f


def test_compensate_flow_is_the_float64_formula_bit_for_bit():
    """The kernel (its division loop vectorised) against NumPy's float64 evaluation of the same expression in the
    same order, then float32: the same bits, on a width with a remainder of the vector width; with and without the
    border rule."""
    rng = np.random.default_rng(2)
    h, w = 13, 37
    f = rng.normal(0, 3, (h, w, 2)).astype(np.float32)
    H = np.array([[1.02, 0.01, -3.5], [-0.02, 0.98, 2.25], [2e-4, -1e-4, 1.0]])
    Hi = np.linalg.inv(H)
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float64)
    px, py = xs + f[..., 0].astype(np.float64), ys + f[..., 1].astype(np.float64)
    den = Hi[2, 0] * px + Hi[2, 1] * py + Hi[2, 2]
    want = np.stack([(Hi[0, 0] * px + Hi[0, 1] * py + Hi[0, 2]) / den - xs,
                     (Hi[1, 0] * px + Hi[1, 1] * py + Hi[1, 2]) / den - ys], -1).astype(np.float32)
    np.testing.assert_array_equal(compensate_flow(f, H).view(np.uint32), want.view(np.uint32))
    d = H[2, 0] * xs + H[2, 1] * ys + H[2, 2]
    sx, sy = (H[0, 0] * xs + H[0, 1] * ys + H[0, 2]) / d, (H[1, 0] * xs + H[1, 1] * ys + H[1, 2]) / d
    inside = (sx > 5) & (sx < w - 6) & (sy > 5) & (sy < h - 6)
    assert inside.any() and not inside.all()
    got = compensate_flow(f, H, interior=(5, w - 6, h - 6))
    np.testing.assert_array_equal(got.view(np.uint32), np.where(inside[..., None], want, np.float32(0)).view(np.uint32))


def test_scale_homography_maps_scaled_points():
    s = 2.0 ** 0.5 * 2
    Hs = scale_homography(H_PLANTED, s)
    p = np.array([13.0, 7.0, 1.0])
    a = Hs @ p
    b = H_PLANTED @ np.array([p[0] * s, p[1] * s, 1.0])
    np.testing.assert_allclose(a[:2] / a[2] * s, b[:2] / b[2], rtol=1e-9)


def test_scale_homographies_are_scale_homography_bit_for_bit():
    """All levels at once (the extractor's way) against the matrix products of scale_homography level by level,
    on random homographies, some affine (zero last row terms), at the pyramid's factors and odd ones."""
    rng = np.random.default_rng(7)
    factors = [1.0, 2 ** 0.5, 2.0, 2 ** 1.5, 4.0, 1 / 3, 0.7]
    for k in range(300):
        H = np.eye(3) + rng.normal(0, 1, (3, 3)) * [[1e-2, 1e-3, 3], [1e-3, 1e-2, 3], [1e-5, 1e-5, 1e-3]]
        if k % 5 == 0:
            H[2, :2] = 0
        got = scale_homographies(H, factors)
        want = np.stack([scale_homography(H, s) for s in factors])
        assert got.shape == (len(factors), 3, 3) and got.tobytes() == want.tobytes()
        # and the inverses of the stack are those of each matrix (one LAPACK solve per matrix either way)
        assert np.linalg.inv(got).tobytes() == np.stack([np.linalg.inv(m) for m in want]).tobytes()


def test_compensate_flow_with_a_given_inverse_is_the_same():
    rng = np.random.default_rng(2)
    f = rng.normal(0, 1, (30, 40, 2)).astype(np.float32)
    for interior in (None, (5.0, 34.0, 24.0)):
        want = compensate_flow(f, H_PLANTED, interior=interior)
        got = compensate_flow(f, H_PLANTED, interior=interior, inverse=np.linalg.inv(H_PLANTED))
        assert got.tobytes() == want.tobytes()
        # the inverse given is the one used: a wrong one gives another flow
        other = compensate_flow(f, H_PLANTED, interior=interior, inverse=np.eye(3))
        assert not np.array_equal(other, want)


def test_deterministic_and_stateful_reuse():
    prev, cur, flow = _planted(H_PLANTED, seed=3)
    p = IDTParams(matcher="orb").camera()
    r1 = estimate_homography(prev, cur, flow, params=p, matcher="orb", rng=np.random.default_rng(5))
    r2 = estimate_homography(prev, cur, flow, params=p, matcher="orb", rng=np.random.default_rng(5))
    assert np.array_equal(r1[0], r2[0]) and r1[1] == r2[1]
    cm = CameraMotion(p, rng=np.random.default_rng(5))
    cm.features(prev)
    r3 = cm.estimate(prev, cur, flow)
    assert np.array_equal(r3[0], r1[0])


def test_matcher_resolution():
    assert resolve_matcher("orb") == "orb"
    assert resolve_matcher("auto") in ("surf", "akaze")
    if resolve_matcher("auto") == "akaze":
        with pytest.raises(ParameterError, match="SURF"):
            resolve_matcher("surf")
    with pytest.raises(ParameterError):
        resolve_matcher("brisk")


@pytest.mark.parametrize("name", ["orb", "sift"])
def test_windowed_matching_against_brute_force(name):
    from idtfv.idt.camera import _detect, _keypoint_matches, _make_detector

    prev, cur, _ = _planted(H_PLANTED, seed=4)
    det, norm = _make_detector(name, CameraParams())
    a, b = _detect(det, prev, None), _detect(det, cur, None)
    got_prev, got_cur = _keypoint_matches(a, b, norm, 25)
    # naive: for each keypoint of cur, the nearest descriptor among prev's keypoints inside the window
    want_prev, want_cur = [], []
    for i, p in enumerate(b.pts):
        ok = np.flatnonzero((np.abs(a.pts - p) <= 25).all(1))
        if len(ok) == 0:
            continue
        if norm == cv2.NORM_HAMMING:
            d = [int(np.unpackbits(np.bitwise_xor(b.desc[i], a.desc[j])).sum()) for j in ok]
        else:
            d = [float(((b.desc[i].astype(np.float64) - a.desc[j]) ** 2).sum()) for j in ok]
        want_prev.append(a.pts[ok[int(np.argmin(d))]])
        want_cur.append(p)
    np.testing.assert_array_equal(got_cur, np.array(want_cur, np.float32).reshape(-1, 2))
    np.testing.assert_array_equal(got_prev, np.array(want_prev, np.float32).reshape(-1, 2))
    assert len(got_cur) > 50


def test_border_rule_of_the_reference_warp():
    """warp_to_previous(prev=...) copies frame t-1 wherever H x is not > margin px inside frame t; compensate_flow
    with ``interior`` zeroes the flow there and equals the plain formula elsewhere (naive check)."""
    prev, cur, flow = _planted(H_PLANTED)
    h, w = prev.shape
    plain = warp_to_previous(cur, H_PLANTED)
    filled = warp_to_previous(cur, H_PLANTED, prev=prev, margin=5)
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float64)
    p = np.stack([xs, ys, np.ones_like(xs)], -1) @ H_PLANTED.T
    sx, sy = p[..., 0] / p[..., 2], p[..., 1] / p[..., 2]
    inside = (sx > 5) & (sx < w - 1 - 5) & (sy > 5) & (sy < h - 1 - 5)
    assert 0 < (~inside).sum() < inside.sum()
    np.testing.assert_array_equal(filled[inside], plain[inside])
    np.testing.assert_array_equal(filled[~inside], prev[~inside])
    rng = np.random.default_rng(1)
    f = (flow + rng.normal(0, 0.5, flow.shape)).astype(np.float32)
    out = compensate_flow(f, H_PLANTED, interior=(5, w - 1 - 5, h - 1 - 5))
    ref = compensate_flow(f, H_PLANTED)
    np.testing.assert_array_equal(out[~inside], 0)
    np.testing.assert_allclose(out[inside], ref[inside], atol=1e-5)
    # a border band even for H = I: the reference warps (and fills) every frame
    eye = compensate_flow(f, np.eye(3), interior=(5, w - 1 - 5, h - 1 - 5))
    assert not eye[:5].any() and not eye[:, -6:].any()
    np.testing.assert_allclose(eye[10:-10, 10:-10], f[10:-10, 10:-10], atol=1e-5)


def test_homography_needs_more_than_min_matches():
    prev, cur, flow = _planted(H_PLANTED)
    p = CameraParams(matcher="flow", flow_matches=40)  # at most 40 flow matches, fewer than the reference's 50
    H, n, _ = estimate_homography(prev, cur, flow, params=p, matcher="flow", rng=np.random.default_rng(0))
    assert n == 0 and np.array_equal(H, np.eye(3))
    H, n, _ = estimate_homography(prev, cur, flow, params=p.replace(min_matches=30), matcher="flow",
                                  rng=np.random.default_rng(0))
    assert n > 25 and not np.array_equal(H, np.eye(3))


def test_flow_matches_start_from_the_rounded_point():
    from idtfv.idt.camera import _flow_matches

    img = _texture()
    flow = np.zeros(img.shape + (2,), np.float32)
    flow[..., 0], flow[..., 1] = 1.25, -0.5
    src, dst = _flow_matches(img, flow, None, CameraParams())
    assert len(src) > 50
    np.testing.assert_allclose(dst, np.rint(src) + np.float32([1.25, -0.5]), atol=1e-5)


# ------------------------------------------------------------------------------------- options, compensated flow
def test_camera_params_are_the_extractors_fields_of_the_same_names():
    assert IDTParams().camera() == CameraParams()  # same defaults
    fast = IDTParams.fast(min_inliers=7, seed=3).camera()
    assert (fast.matcher, fast.warp_flow, fast.warp_margin, fast.min_inliers, fast.seed) == ("flow", "subtract", 0.0,
                                                                                              7, 3)


@pytest.mark.parametrize("field,value", [("matcher", "brisk"), ("warp_flow", "add"), ("min_inliers", 2),
                                         ("ransac_threshold", 0.0), ("warp_margin", float("nan")),
                                         ("flow_matches", True), ("orb_features", 1_000_001)])
def test_camera_params_validation_names_the_field(field, value):
    with pytest.raises(ParameterError, match=f"CameraParams.{field}: expected"):
        CameraParams(**{field: value})
    with pytest.raises(TypeError):
        CameraParams("orb")  # keyword-only
    with pytest.raises(ParameterError, match="IDTParams.camera"):
        CameraMotion(IDTParams())


def test_orb_features_bound_is_the_extractors():
    """One bound (ORB reserves room for that many keypoints up front): the largest value passes both objects, the
    next is refused by both."""
    from idtfv.idt.params import MAX_ORB_FEATURES

    top = MAX_ORB_FEATURES
    assert CameraParams(orb_features=top).orb_features == IDTParams(orb_features=top).orb_features == top
    for make in (CameraParams, IDTParams):
        with pytest.raises(ParameterError, match=f"orb_features: expected an integer in 1..{MAX_ORB_FEATURES}"):
            make(orb_features=MAX_ORB_FEATURES + 1)


def test_compensated_flows_subtract_removes_a_planted_pan_on_every_level():
    """A pan by d: the flow on level s is d / s everywhere; compensated by H (a translation by d), it is zero,
    including the border band, where the reference's rule sets it to zero anyway."""
    d = np.array([2.5, -1.5])
    H = np.array([[1, 0, d[0]], [0, 1, d[1]], [0, 0, 1]], np.float64)
    frame = _texture(60, 80)
    factors = [1.0, np.sqrt(2.0)]
    flows = [np.broadcast_to((d / s).astype(np.float32), (round(60 / s), round(80 / s), 2)).copy() for s in factors]
    for margin in (0.0, 5.0):
        p = CameraParams(warp_flow="subtract", warp_margin=margin)
        out = compensated_flows(H, flows, factors, frame=frame, prev_frame=frame, params=p, recompute=None)
        assert [f.shape for f in out] == [f.shape for f in flows]
        assert max(float(np.abs(f).max()) for f in out) < 1e-4


def test_compensated_flows_recompute_solves_on_the_reference_warp():
    prev, cur, flow = _planted(H_PLANTED)
    seen = []

    def recompute(warped):
        seen.append(warped)
        return ["solved"]

    p = CameraParams()  # recompute, margin 5
    assert compensated_flows(H_PLANTED, [flow], [1.0], frame=cur, prev_frame=prev, params=p,
                             recompute=recompute) == ["solved"]
    np.testing.assert_array_equal(seen[0], warp_to_previous(cur, H_PLANTED, prev=prev, margin=5.0))
    # without accepted camera motion and without a border band there is nothing to compensate
    flows = [flow]
    assert compensated_flows(np.eye(3), flows, [1.0], frame=cur, prev_frame=prev,
                             params=p.replace(warp_margin=0.0), recompute=recompute) is flows
    assert len(seen) == 1
