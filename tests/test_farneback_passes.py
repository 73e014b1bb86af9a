"""Faster Farnebäck steps with the same bytes (issue 12).

* The extractor's level loop (``idtfv.idt.flow.farneback._level``) runs each iteration as one row-streaming
  kernel (``window_solve``: window sum, solve, and ``update_matrices`` at the new flow row by row) instead of a
  window sum over the whole level and the fused ``solve_and_update``: the flows are checked bit for bit against
  the loop written with ``window_sum`` (the same window arithmetic over whole planes) and ``solve_and_update``, on
  planted shifts and a swirl that takes points out of the frame, for 1-3 iterations and both windows, and through
  the pyramid flow.
* ``update_matrices`` works in two passes per row (weights, then gathers and terms): checked bit for bit against
  the one-pass loop over ``_pixel_terms`` (written here), with displacements inside, on the last row/column and
  outside the frame, on sizes down to 2x2."""

from __future__ import annotations

import types

import cv2
import numpy as np
import pytest

from numba import njit

import idtfv.idt.flow.farneback as fb
from idtfv.idt.flow import _farneback_nb as nb
from idtfv.idt.flow._median_nb import median5_flow


@njit(cache=False, fastmath=nb._FM)
def _one_pass_update(r0, r1, flow, border, out):
    """The one-pass loop of earlier versions: ``_pixel_terms`` at every pixel (with the kernels' flags: inlined
    code is compiled with its caller's)."""
    h, w = r0.shape[0], r0.shape[1]
    wx = nb._column_weights(border, w)
    for y in range(h):
        wy = nb._row_weight(border, y, h)
        for x in range(w):
            nb._pixel_terms(r0, r1, y, x, flow[0, y, x], flow[1, y, x], wy * wx[x], out)


def _texture(h, w, seed):
    rng = np.random.default_rng(seed)
    img = cv2.GaussianBlur(rng.random((h, w)).astype(np.float32), (0, 0), 1.5)
    return cv2.normalize(img, None, 0, 255, cv2.NORM_MINMAX)


def _pair(h, w, seed, shift):
    """Frame 1 and frame 1 moved by ``shift`` px plus a swirl (large near the corners: points leave the frame)."""
    big = _texture(h + 40, w + 40, seed)
    yy, xx = np.mgrid[:h, :w].astype(np.float32)
    swirl = 4.0 * np.sin(xx / 9.0) * np.cos(yy / 7.0)
    i1 = big[20:20 + h, 20:20 + w].copy()
    i2 = cv2.remap(big, xx + 20 - shift[0] - swirl, yy + 20 - shift[1] + swirl, cv2.INTER_CUBIC)
    return i1, i2


def _fused_level(r0, r1, init, winsize, iterations, window, work):
    """The level loop with the fused kernel (the reference these tests hold the two-pass loop to)."""
    if init is None:
        init = work.flow
        init.fill(0.0)
    k = fb._window_kernel(winsize, window)
    m, flow = work.m, work.flow
    mb = np.empty_like(m)
    nb.update_matrices(r0, r1, init, nb.BORDER_WEIGHTS, m)
    for i in range(iterations):
        nb.window_sum(m, k, mb)  # the window sums of the fused window_solve (OpenCV's vector loops' numbers)
        if i < iterations - 1:
            nb.solve_and_update(mb, nb.DET_EPS, r0, r1, nb.BORDER_WEIGHTS, flow, m)
        else:
            nb.solve_flow(mb, nb.DET_EPS, flow)
    return flow


def _bits(a):
    return np.ascontiguousarray(a, np.float32).view(np.uint32)


@pytest.mark.parametrize("iterations", [1, 2, 3])
@pytest.mark.parametrize("window", ["gaussian", "box"])
@pytest.mark.parametrize("shift", [(0.0, 0.0), (2.6, -1.3), (9.5, 7.25)])
def test_two_pass_level_equals_the_fused_kernel_bit_for_bit(iterations, window, shift):
    h, w = 42, 57  # the coarsest level of a 160x120 (KTH) pyramid
    i1, i2 = _pair(h, w, seed=3, shift=shift)
    filters = fb._expansion_filters(7, 1.5)
    r0 = fb.poly_expansion(i1, _filters=filters)
    r1 = fb.poly_expansion(i2, _filters=filters)
    for prior in (None, np.float32(1.7) * np.stack([np.full((h, w), shift[0]), np.full((h, w), shift[1])])):
        init_a = None if prior is None else np.ascontiguousarray(prior, np.float32)
        init_b = None if prior is None else init_a.copy()
        got = fb._level(r0, r1, init_a, 10, iterations, window, fb._Workspace(h, w)).copy()
        want = _fused_level(r0, r1, init_b, 10, iterations, window, fb._Workspace(h, w)).copy()
        assert np.isfinite(want).all()
        if shift != (0.0, 0.0) or prior is not None:
            assert np.abs(want).max() > 0.5  # the case moves: the check is not on an all-zero flow
        np.testing.assert_array_equal(_bits(got), _bits(want))


def test_pyramid_flow_equals_the_fused_path(monkeypatch):
    """Whole pyramid flows (plain and from the previous frame), default options: the same bytes either way."""
    frames = [_pair(120, 160, seed=s, shift=(1.5 * s, -0.5 * s))[1] for s in range(3)]
    sizes = [(160, 120), (113, 85), (80, 60), (57, 42)]

    def run():
        flow = fb.FarnebackPyramidFlow()
        out = []
        for f in frames:
            pyr = [cv2.resize(f, s, interpolation=cv2.INTER_AREA) for s in sizes]
            got = flow(pyr)
            if got is not None:
                out.append([g.copy() for g in got])
                out.append([g.copy() for g in flow.flow_from_previous(pyr[::1])])
        return out

    got = run()
    kernel_calls = []

    def fused(r0, r1, init, winsize, iterations, window, work, kernel=None):
        kernel_calls.append(iterations)
        return _fused_level(r0, r1, init, winsize, iterations, window, work)

    def one_call(r0, r1, prior, init, m, k, det_eps, flow, border, iterations, med, out):
        """_level_nb.level_flow's steps with the fused level loop (every level of both kinds of solve), the prior
        resized by OpenCV and scaled by NumPy."""
        if prior is not None:
            (h0, w0), (h, w) = prior.shape[1:], init.shape[1:]
            for c in range(2):
                cv2.resize(prior[c], (w, h), dst=init[c], interpolation=cv2.INTER_LINEAR)
            init[0] *= np.float32(w / w0)
            init[1] *= np.float32(h / h0)
        flow = fused(r0, r1, init, 10, iterations, "gaussian", types.SimpleNamespace(m=m, flow=flow))
        median5_flow(flow, med, out)

    level_kernels = fb._level_kernels()
    monkeypatch.setattr(fb, "_level_kernels", lambda: types.SimpleNamespace(level_flow=one_call,
                                                                            smooth_expand=level_kernels.smooth_expand))
    want = run()
    assert kernel_calls and set(kernel_calls) == {2}
    assert len(kernel_calls) == 4 * len(sizes)  # both kinds of solve went through the fused loop
    assert len(got) == len(want) == 4
    for a, b in zip(got, want):
        for x, y in zip(a, b):
            assert np.abs(y).max() > 0.5
            np.testing.assert_array_equal(_bits(x), _bits(y))


@pytest.mark.parametrize("h, w", [(2, 2), (3, 40), (40, 3), (42, 57), (120, 160)])
@pytest.mark.parametrize("scale", [0.0, 1.0, 6.0, 80.0])
def test_two_pass_update_matrices_equals_the_one_pass_loop(h, w, scale):
    rng = np.random.default_rng(h * w + int(scale))
    if min(h, w) >= 8:  # real expansions of a textured pair
        i1, i2 = _pair(h, w, seed=5, shift=(1.5, -2.0))
        r0, r1 = fb.poly_expansion(i1), fb.poly_expansion(i2)
    else:
        r0, r1 = (rng.normal(size=(h, w, 5)).astype(np.float32) for _ in range(2))
    flow = (rng.normal(size=(2, h, w)) * scale).astype(np.float32)
    flow[:, ::3, ::2] = np.round(flow[:, ::3, ::2])  # integer displacements: exactly on the last row/column
    flow[0, :, -1] = 0.0  # the last column itself
    want = np.full((h, w, 5), np.nan, np.float32)
    got = np.full((h, w, 5), np.nan, np.float32)
    _one_pass_update(r0, r1, flow, nb.BORDER_WEIGHTS, want)
    nb.update_matrices(r0, r1, flow, nb.BORDER_WEIGHTS, got)
    assert np.isfinite(want).all() and np.abs(want).max() > 0
    if scale >= 6.0:  # some points leave the frame: the "outside" branch is exercised
        yy, xx = np.mgrid[:h, :w]
        assert ((xx + flow[0] < 0) | (xx + flow[0] > w - 1) | (yy + flow[1] < 0) | (yy + flow[1] > h - 1)).any()
    np.testing.assert_array_equal(_bits(got), _bits(want))
