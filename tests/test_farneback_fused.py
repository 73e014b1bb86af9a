"""The fused Farnebäck iteration kernel ``window_solve`` (idt/flow/_farneback_nb.py), which the extractor's level
loop runs instead of ``cv2.sepFilter2D`` + ``solve_flow`` + ``update_matrices`` (issue 12).

* Against an independent float64 reference (the window sum as a 2-D sum over replicated-border offsets, then the
  2x2 solve in NumPy): window sums within a few float32 roundings of the sum of the terms' magnitudes, flows
  within :data:`FLOW_TOL` where the system is well conditioned; every window size 1..15, both windows, sizes down
  to 2x2 and levels narrower or shorter than the window.
* Against OpenCV's ``sepFilter2D`` + ``solve_flow`` (the extractor's path before): on windows of 7 taps or more
  (the extractor's has 11) at least 98 % of the window sums and of the flow values bit for bit (OpenCV's vector
  loops do the same arithmetic; its scalar row tails and its symmetric kernels of 3 and 5 taps round
  differently), and every window sum within :data:`ULPS` roundings.
* Its own steps: the flow equals ``solve_flow`` of ``window_sum`` (the same window arithmetic over whole planes)
  and the next iteration's terms it writes into ``m`` equal ``update_matrices`` at the flow it solved, bit for bit.

The CUDA window kernels followed by ``solve_flow`` are checked against ``window_solve`` bit for bit in
``tests/test_farneback_cuda.py`` (through the CPU emulation of the CUDA C, ``fmaf`` from the C library).
"""

from __future__ import annotations

import cv2
import numpy as np
import pytest

import idtfv.idt.flow.farneback as fb
from idtfv.idt.flow import _farneback_nb as nb

#: Window sums agree with the float64 reference and with OpenCV to this many float32 roundings of the sum of the
#: terms' magnitudes under the window (each tap of each pass rounds once; up to 5.1 seen over the cases here).
ULPS = 8

#: Flows agree with the float64 reference to this (pixels) where the 2x2 system is well conditioned (see
#: :func:`_conditioned`; up to 2.2e-4 px seen on flows of up to 4 px).
FLOW_TOL = 1e-3

#: Sizes (h, w): pyramid levels, odd ones, and levels smaller than the 11-tap window in one or both directions.
SIZES = [(85, 113), (42, 57), (23, 17), (7, 9), (3, 40), (40, 3), (2, 9), (9, 2), (2, 2)]


def _texture(h, w, seed):
    rng = np.random.default_rng(seed)
    img = cv2.GaussianBlur(rng.random((h + 16, w + 16)).astype(np.float32), (0, 0), 1.5)
    return cv2.normalize(img, None, 0, 255, cv2.NORM_MINMAX)


def _level(h, w, seed=0, scale=2.0):
    """Expansions of a textured pair (the second moved by about (1.5, -1) px), a prior reaching outside the frame,
    and the terms ``m`` of ``update_matrices`` at it."""
    big = _texture(h, w, seed)
    yy, xx = np.mgrid[:h, :w].astype(np.float32)
    i1 = np.ascontiguousarray(big[8:8 + h, 8:8 + w])
    i2 = cv2.remap(big, xx + 8 - 1.5 + np.sin(yy / 5), yy + 8 + 1.0, cv2.INTER_CUBIC)
    r0, r1 = fb.poly_expansion(i1), fb.poly_expansion(i2)
    rng = np.random.default_rng(seed + 1)
    prior = (rng.normal(size=(2, h, w)) * scale).astype(np.float32)
    prior[:, ::4, ::3] = np.round(prior[:, ::4, ::3])  # exactly on the last row/column, and outside
    m = np.empty((h, w, 5), np.float32)
    nb.update_matrices(r0, r1, prior, nb.BORDER_WEIGHTS, m)
    assert np.abs(m).max() > 0
    return r0, r1, m


def _window64(m, k):
    """The window sum in float64: the 2-D sum over offsets (dy, dx) of k[dy] k[dx] m(clamped), a different order
    and precision from the kernel's two passes."""
    h, w = m.shape[:2]
    r = len(k) // 2
    p = np.pad(m.astype(np.float64), ((r, r), (r, r), (0, 0)), mode="edge")
    k64 = k.astype(np.float64)
    out = np.zeros((h, w, 5))
    for dy in range(2 * r + 1):
        for dx in range(2 * r + 1):
            out += (k64[dy] * k64[dx]) * p[dy:dy + h, dx:dx + w]
    return out


def _solve64(s):
    g11, g12, g22, h1, h2 = np.moveaxis(s, -1, 0)
    det = g11 * g22 - g12 * g12 + nb.DET_EPS
    return np.stack([(g22 * h1 - g12 * h2) / det, (g11 * h2 - g12 * h1) / det]), det


def _conditioned(s, det):
    """Pixels whose 2x2 system is well conditioned enough for a float32-vs-float64 comparison of the flow."""
    scale = s[..., 0] * s[..., 2]
    return det > 1e-2 * np.maximum(scale, 1e-12)


def _fused(m, k, r0, r1, update=False):
    mm = m.copy()
    flow = np.full((2,) + m.shape[:2], np.nan, np.float32)
    nb.window_solve(mm, k, nb.DET_EPS, flow, r0, r1, nb.BORDER_WEIGHTS, update)
    return flow, mm


def _bits(a):
    return np.ascontiguousarray(a, np.float32).view(np.uint32)


def _ulps(a, b, mag):
    """|a - b| in float32 roundings of ``mag`` (the magnitude the roundings are relative to)."""
    return np.abs(a.astype(np.float64) - b) / np.spacing(np.maximum(mag, np.finfo(np.float32).tiny).astype(np.float32))


WINDOWS = [(ws, win) for ws in range(1, 16) for win in fb.WINDOWS]


@pytest.mark.parametrize("winsize, window", WINDOWS, ids=[f"{w}{s}" for s, w in WINDOWS])
def test_fused_kernel_against_a_float64_window_sum_and_solve(winsize, window):
    k = fb._window_kernel(winsize, window)
    largest = 0.0
    for h, w in SIZES:
        r0, r1, m = _level(h, w, seed=h * w)
        sums = np.empty_like(m)
        nb.window_sum(m, k, sums)
        want = _window64(m, k)
        assert _ulps(sums, want, _window64(np.abs(m), k)).max() <= ULPS, f"window sums {h}x{w}"
        flow, _ = _fused(m, k, r0, r1)
        assert np.isfinite(flow).all()
        d64, det = _solve64(want)
        ok = _conditioned(want, det)
        assert ok.mean() > 0.5, f"{h}x{w}: too few well-conditioned pixels for the check"
        err = np.abs(flow - d64)[:, ok]
        assert err.max() <= FLOW_TOL, f"flow {h}x{w}: max error {err.max()} px"
        largest = max(largest, float(np.abs(d64[:, ok]).max()))
    assert largest > 1.0  # the flows are not all (near) zero


@pytest.mark.parametrize("winsize, window", WINDOWS, ids=[f"{w}{s}" for s, w in WINDOWS])
@pytest.mark.parametrize("update", [False, True], ids=["last", "update"])
def test_fused_kernel_equals_its_steps_bit_for_bit(winsize, window, update):
    """The flow is solve_flow of window_sum; with ``update`` the terms left in m are update_matrices at that flow
    (written in place row by row, after each row was filtered)."""
    k = fb._window_kernel(winsize, window)
    for h, w in SIZES:
        r0, r1, m = _level(h, w, seed=h + w, scale=6.0)
        sums = np.empty_like(m)
        nb.window_sum(m, k, sums)
        want = np.empty((2, h, w), np.float32)
        nb.solve_flow(sums, nb.DET_EPS, want)
        flow, m_after = _fused(m, k, r0, r1, update)
        np.testing.assert_array_equal(_bits(flow), _bits(want), err_msg=f"flow {h}x{w}")
        if update:
            terms = np.full_like(m, np.nan)
            nb.update_matrices(r0, r1, flow, nb.BORDER_WEIGHTS, terms)
            np.testing.assert_array_equal(_bits(m_after), _bits(terms), err_msg=f"next terms {h}x{w}")
            assert not np.array_equal(m_after, m)  # the flow moved: new terms
        else:
            np.testing.assert_array_equal(_bits(m_after), _bits(m), err_msg=f"m kept {h}x{w}")


#: (h, w, winsize) of the OpenCV comparison: the extractor's window (10: 11 taps) on pyramid level sizes, every
#: other window on two of them.
CV_CASES = ([(h, w, 10) for h, w in [(240, 320), (120, 160), (85, 113), (42, 57)]]
            + [(h, w, ws) for h, w in [(85, 113), (42, 57)] for ws in range(1, 16) if ws not in (10,)])


@pytest.mark.parametrize("window", fb.WINDOWS)
@pytest.mark.parametrize("h, w, winsize", CV_CASES)
def test_fused_kernel_against_opencv(h, w, winsize, window):
    """Against cv2.sepFilter2D + solve_flow, the path it replaces. Windows of 7 taps or more (winsize 1 or >= 6):
    OpenCV's vector loops sum in the kernel's order, so at least 98 % of the values are the same bits (the rest:
    its scalar row tails); 3 and 5 taps: OpenCV's symmetric small-kernel code adds in another order, within
    :data:`ULPS` only."""
    k = fb._window_kernel(winsize, window)
    r0, r1, m = _level(h, w, seed=7, scale=1.0)
    cv = cv2.sepFilter2D(m, -1, k, k, borderType=cv2.BORDER_REPLICATE)
    sums = np.empty_like(m)
    nb.window_sum(m, k, sums)
    assert _ulps(sums, cv, _window64(np.abs(m), k)).max() <= ULPS
    want = np.empty((2, h, w), np.float32)
    nb.solve_flow(cv, nb.DET_EPS, want)
    flow, _ = _fused(m, k, r0, r1)
    assert np.abs(want).max() > 0.5
    if len(k) >= 7 or len(k) == 1:
        assert (sums == cv).mean() >= 0.98, f"{(sums != cv).mean():.2%} of the window sums differ"
        assert (flow == want).mean() >= 0.98, f"{(flow != want).mean():.2%} of the flow values differ"


def test_level_loop_runs_the_fused_kernel(monkeypatch):
    """farneback_level (the extractor's _level) calls window_solve once per iteration, updating but after the last."""
    h, w = 42, 57
    r0, r1, _ = _level(h, w)
    calls = []
    real = nb.window_solve

    def spy(m, k, det_eps, flow, a, b, border, update):
        calls.append(update)
        return real(m, k, det_eps, flow, a, b, border, update)

    monkeypatch.setattr(nb, "window_solve", spy)
    got = fb.farneback_level(r0, r1, winsize=10, iterations=3, window="gaussian")
    assert calls == [True, True, False]
    # the same flow as the old loop: OpenCV's window sums (bit-equal on this size's vector loops or not) then
    # solve_flow and update_matrices, to float rounding
    k = fb._window_kernel(10, "gaussian")
    m = np.empty((h, w, 5), np.float32)
    flow = np.zeros((2, h, w), np.float32)
    nb.update_matrices(r0, r1, flow, nb.BORDER_WEIGHTS, m)
    for i in range(3):
        nb.solve_flow(cv2.sepFilter2D(m, -1, k, k, borderType=cv2.BORDER_REPLICATE), nb.DET_EPS, flow)
        if i < 2:
            nb.update_matrices(r0, r1, flow, nb.BORDER_WEIGHTS, m)
    assert np.abs(flow).max() > 0.5
    np.testing.assert_allclose(got.transpose(2, 0, 1), flow, atol=1e-3)
