"""The camera-compensated ("warped") flow's pieces owned by the flow: the border rule of the warped frame
(:func:`idtfv.idt.camera.warp_to_previous` with ``prev``; the fused Numba kernel
:func:`idtfv.idt._warp_nb.fill_border` against the plain NumPy mask it replaced, ``_interior``, pixel for pixel,
including points exactly on the bound), and ``warp_flow="refine"`` (:meth:`FarnebackPyramidFlow.refine_from_previous`
level by level against :func:`farneback_level`; planted camera motion; the wiring in
:func:`idtfv.idt.camera.compensated_flows`)."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from idtfv.errors import ParameterError
from idtfv.idt.camera import (CameraParams, _interior, compensate_flow, compensated_flows, scale_homography,
                              warp_to_previous)
from idtfv.idt.flow.farneback import FarnebackPyramidFlow, farneback_level, poly_expansion
from idtfv.idt.flow.pyramid_flow import DISPyramidFlow


def naive(gray, H, prev, margin):
    h, w = gray.shape
    out = cv2.warpPerspective(gray, H, (w, h), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP)
    inside = _interior(H, w, h, margin)
    out[~inside] = prev[~inside]
    return out, inside


def homographies(n, seed=0):
    rng = np.random.default_rng(seed)
    yield np.eye(3)
    yield np.array([[1.0, 0.0, 2.0], [0.0, 1.0, -3.0], [0.0, 0.0, 1.0]])  # whole-pixel shift: ties on the bound
    for _ in range(n):
        yield np.eye(3) + rng.normal(size=(3, 3)) * np.array([[0.03, 0.03, 4.0], [0.03, 0.03, 4.0], [3e-4, 3e-4, 0]])


@pytest.mark.parametrize("dtype", [np.uint8, np.float32])
@pytest.mark.parametrize("margin", [0.0, 5.0, 2.5])
def test_fill_border_equals_the_numpy_mask(dtype, margin):
    rng = np.random.default_rng(7)
    h, w = 37, 53
    gray = rng.integers(0, 256, (h, w)).astype(dtype)
    prev = rng.integers(0, 256, (h, w)).astype(dtype)
    n_filled = 0
    for H in homographies(40):
        got = warp_to_previous(gray, H, prev=prev, margin=margin)
        ref, inside = naive(gray, H, prev, margin)
        assert got.dtype == dtype and got.shape == (h, w)
        np.testing.assert_array_equal(got, ref)
        n_filled += int((~inside).sum())
    assert n_filled > 0  # the rule did fill pixels


def test_fill_border_on_the_bound_is_outside():
    """With H = I the source is the pixel itself: x = margin and x = w - 1 - margin are not strictly inside."""
    from idtfv.idt import _warp_nb

    h, w = 20, 30
    out = np.zeros((h, w), np.uint8)
    prev = np.full((h, w), 9, np.uint8)
    n = _warp_nb.fill_border(out, prev, np.eye(3), 5.0)
    expected = np.ones((h, w), bool)
    expected[6:h - 6, 6:w - 6] = False  # strictly inside (5, w - 6) x (5, h - 6)
    np.testing.assert_array_equal(out == 9, expected)
    assert n == expected.sum()


# ------------------------------------------------------------------------------------- warp_flow="refine"
H_CAM = np.array([[1.01, 0.004, 2.5], [-0.003, 0.995, -1.5], [1e-5, -2e-5, 1.0]])
FACTORS = [1.0, 2 ** 0.5, 2.0]


def texture(h, w, seed=0):
    rng = np.random.default_rng(seed)
    img = cv2.GaussianBlur(rng.random((h, w)).astype(np.float32), (0, 0), 2.0)
    return cv2.normalize(img, None, 0, 255, cv2.NORM_MINMAX).astype(np.uint8)


def camera_pair(H, seed=0):
    """Frame t-1 and frame t = t-1 seen by a camera moved by H (a point p of t-1 is at H p in t), 96x128."""
    big = texture(176, 208, seed)
    T = np.array([[1, 0, 40], [0, 1, 40], [0, 0, 1]], np.float64)
    cur = cv2.warpPerspective(big, T @ H @ np.linalg.inv(T), (208, 176), flags=cv2.INTER_LINEAR)
    return big[40:136, 40:168].copy(), cur[40:136, 40:168].copy()


def pyr(img):
    h, w = img.shape
    return [img] + [cv2.resize(img, (int(round(w / f)), int(round(h / f))), interpolation=cv2.INTER_LINEAR)
                    for f in FACTORS[1:]]


def test_refine_is_farneback_level_on_each_level_from_its_prior():
    """Each level is refined on its own: the same as farneback_level from the prior on that level's
    presmoothed expansions (``iterations`` rounds), then the 5x5 median, bit for bit."""
    prev, cur = camera_pair(H_CAM, seed=1)
    fp = FarnebackPyramidFlow()
    fp(pyr(prev))
    fp(pyr(cur))
    rng = np.random.default_rng(2)
    target = pyr(cv2.GaussianBlur(cur, (0, 0), 1.0))
    priors = [rng.normal(0, 0.7, (lvl.shape[0], lvl.shape[1], 2)).astype(np.float32) for lvl in target]
    for iterations in (1, 2):
        got = fp.refine_from_previous(target, priors, iterations=iterations)
        for a, b, prior, out in zip(pyr(prev), target, priors, got):
            r0, r1 = (poly_expansion(cv2.GaussianBlur(x.astype(np.float32), (3, 3), 0)) for x in (a, b))
            f = farneback_level(r0, r1, prior, iterations=iterations)
            ref = np.dstack([cv2.medianBlur(np.ascontiguousarray(f[..., c]), 5) for c in range(2)])
            np.testing.assert_array_equal(out, ref)


def run_compensated(mode, priors_noise=0.0):
    prev, cur = camera_pair(H_CAM, seed=3)
    fp = FarnebackPyramidFlow()
    fp(pyr(prev))
    flows = fp(pyr(cur))
    if priors_noise:
        rng = np.random.default_rng(4)
        flows = [f + rng.normal(0, priors_noise, f.shape).astype(np.float32) for f in flows]
    return compensated_flows(H_CAM, flows, FACTORS, frame=cur, prev_frame=prev,
                             params=CameraParams(warp_flow=mode, warp_margin=5.0),
                             recompute=lambda w: fp.flow_from_previous(pyr(w)),
                             refine=lambda w, p: fp.refine_from_previous(pyr(w), p))


def test_refine_cancels_planted_camera_motion_like_recompute():
    """Pure camera motion: the compensated flow is about zero; refine is within a few hundredths of a pixel of
    recompute, and it corrects a prior that is off by 0.3 px (subtract keeps the error)."""
    inner = (slice(12, -12), slice(12, -12))
    recompute = run_compensated("recompute")
    refine = run_compensated("refine")
    assert np.abs(recompute[0][inner]).mean() < 0.05
    assert np.abs(refine[0][inner] - recompute[0][inner]).mean() < 0.02
    noisy_sub = run_compensated("subtract", priors_noise=0.3)
    noisy_ref = run_compensated("refine", priors_noise=0.3)
    err_sub = np.abs(noisy_sub[0][inner]).mean()
    err_ref = np.abs(noisy_ref[0][inner]).mean()
    assert err_sub > 0.15 and err_ref < 0.5 * err_sub, (err_sub, err_ref)


def test_refine_priors_are_the_subtract_flows():
    """compensated_flows hands refine the warped frame and exactly the flows "subtract" returns."""
    prev, cur = camera_pair(H_CAM, seed=5)
    fp = FarnebackPyramidFlow()
    fp(pyr(prev))
    flows = fp(pyr(cur))
    seen = {}
    params = CameraParams(warp_flow="refine", warp_margin=5.0)

    def refine(warped, priors):
        seen["warped"], seen["priors"] = warped, priors
        return priors

    compensated_flows(H_CAM, flows, FACTORS, frame=cur, prev_frame=prev, params=params, recompute=None,
                      refine=refine)
    np.testing.assert_array_equal(seen["warped"], warp_to_previous(cur, H_CAM, prev=prev, margin=5.0))
    h, w = cur.shape
    for f, s, p in zip(flows, FACTORS, seen["priors"]):
        ref = compensate_flow(f, scale_homography(H_CAM, s), interior=(5 / s, (w - 6) / s, (h - 6) / s))
        np.testing.assert_array_equal(p, ref)
    with pytest.raises(ParameterError, match="refine"):
        compensated_flows(H_CAM, flows, FACTORS, frame=cur, prev_frame=prev, params=params, recompute=None)


def test_refine_errors_and_fallback():
    prev, cur = camera_pair(H_CAM, seed=6)
    fp = FarnebackPyramidFlow()
    fp(pyr(prev))
    priors = [np.zeros((lvl.shape[0], lvl.shape[1], 2), np.float32) for lvl in pyr(cur)]
    with pytest.raises(ParameterError, match="needs two frames"):
        fp.refine_from_previous(pyr(cur), priors)
    fp(pyr(cur))
    with pytest.raises(ParameterError, match="one \\(h, w, 2\\) flow per level"):
        fp.refine_from_previous(pyr(cur), priors[:2])
    with pytest.raises(ParameterError, match="iterations"):
        fp.refine_from_previous(pyr(cur), priors, iterations=0)
    # a solver without a warm start (DIS) solves from scratch: the same as flow_from_previous
    dis = DISPyramidFlow()
    dis(pyr(prev))
    dis(pyr(cur))
    for a, b in zip(dis.refine_from_previous(pyr(cur), priors), dis.flow_from_previous(pyr(cur))):
        np.testing.assert_array_equal(a, b)


def test_extract_with_refine_agrees_with_recompute():
    """The extractor's ``warp_flow="refine"`` on a panning clip with a moving square: the same tracks as
    ``"recompute"`` within a few percent, the same HOF/MBH mean profiles, and the mode is recorded."""
    from idtfv import idt
    from idtfv.idt import IDTParams

    big = texture(220, 260, seed=7)
    square = texture(24, 24, seed=8)
    frames = []
    for t in range(20):
        f = big[40 + round(0.5 * t):136 + round(0.5 * t), 40 + t:168 + t].copy()  # the camera pans
        f[30:54, 20 + 2 * t:44 + 2 * t] = square  # an object moves across it
        frames.append(f)
    a = idt.extract(frames, IDTParams(warp_flow="recompute", matcher="flow"))
    b = idt.extract(frames, IDTParams(warp_flow="refine", matcher="flow"))
    assert len(a) > 50 and 0.9 < len(b) / len(a) < 1.1
    assert b.info["params"]["warp_flow"] == "refine"
    for name in ("hof", "mbhx", "mbhy"):
        pa, pb = getattr(a, name).mean(0), getattr(b, name).mean(0)
        assert np.corrcoef(pa, pb)[0, 1] > 0.98, name
