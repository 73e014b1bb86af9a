"""Tests of the flow's 5x5 median filter (idtfv.idt.flow._median_nb, its networks in _median_simd_nb): the
selection networks on every sorted 0-1 input (the 0-1 principle), the kernel against ``cv2.medianBlur`` bit for bit
and against NumPy's median of the replicated-border windows, on sizes around the vector width and the row pairs,
with ties, and through the Farnebäck pyramid flow."""

from __future__ import annotations

import itertools

import cv2
import numpy as np
import pytest

from idtfv.idt.flow import _median_simd_nb as nets
from idtfv.idt.flow._median_nb import median5_flow


def _run(program, inputs: dict) -> dict:
    """A network program evaluated in NumPy (``a < b ? a : b`` and ``a > b ? a : b``, as the kernel's selects)."""
    values = dict(inputs)
    for kind, out, a, b in program.ops:
        x, y = values[a], values[b]
        values[out] = np.where(x < y, x, y) if kind == "min" else np.where(x > y, x, y)
    return values


def _numpy_median5(plane: np.ndarray) -> np.ndarray:
    h, w = plane.shape
    windows = np.lib.stride_tricks.sliding_window_view(np.pad(plane, 2, mode="edge"), (5, 5))
    return np.median(windows.reshape(h, w, 25), axis=2).astype(np.float32)


def test_sort5_network_sorts_every_binary_input():
    program, wires, outputs = nets._SORT5
    x = np.array(list(itertools.product([0, 1], repeat=5)), np.int8).T  # all 32 inputs as columns
    got = _run(program, {w: x[i] for i, w in enumerate(wires)})
    np.testing.assert_array_equal(np.array([got[w] for w in outputs]), np.sort(x, axis=0))


@pytest.mark.parametrize("na,nb", [(5, 5), (10, 10), (3, 7), (1, 1)])
def test_merge_network_merges_every_sorted_binary_pair(na, nb):
    p = nets._Program()
    a, b = p.inputs(na), p.inputs(nb)
    out = nets._merge(p, a, b)
    # sorted 0-1 lists are fixed by their count of ones: every pair of counts
    ka, kb = np.meshgrid(np.arange(na + 1), np.arange(nb + 1), indexing="ij")
    ka, kb = ka.ravel(), kb.ravel()
    inputs = {w: (i >= na - ka).astype(np.int8) for i, w in enumerate(a)}
    inputs |= {w: (i >= nb - kb).astype(np.int8) for i, w in enumerate(b)}
    got = _run(p, inputs)
    ones = ka + kb
    want = np.array([(i >= na + nb - ones) for i in range(na + nb)], np.int8)
    np.testing.assert_array_equal(np.array([got[w] for w in out]), want)


def test_pair_network_gives_both_medians_on_every_sorted_binary_window():
    """Six sorted rows of 5 (0-1 principle: each row is fixed by its count of ones, 6^6 windows); the merged
    rows y+1, y+2 come out sorted and the two outputs are the medians of rows 0-4 and 1-5."""
    program, (mp, sc, sd, b0, b1), outputs = nets._PAIR
    counts = np.array(list(itertools.product(range(6), repeat=6))).T  # (6 rows, 46656)
    rows = [np.array([(i >= 5 - counts[r]) for i in range(5)], np.int8) for r in range(6)]  # row r: (5, n)
    merged_prev = np.sort(np.concatenate([rows[1], rows[2]]), axis=0)
    inputs = {w: merged_prev[i] for i, w in enumerate(mp)}
    for group, r in ((sc, 3), (sd, 4), (b0, 0), (b1, 5)):
        inputs |= {w: rows[r][i] for i, w in enumerate(group)}
    got = _run(program, inputs)
    np.testing.assert_array_equal(np.array([got[w] for w in outputs[:10]]),
                                  np.sort(np.concatenate([rows[3], rows[4]]), axis=0))
    ones0, ones1 = counts[0:5].sum(axis=0), counts[1:6].sum(axis=0)
    np.testing.assert_array_equal(got[outputs[10]], (ones0 >= 13).astype(np.int8))
    np.testing.assert_array_equal(got[outputs[11]], (ones1 >= 13).astype(np.int8))


def _check(src: np.ndarray) -> None:
    med = np.full_like(src, np.nan)
    out = np.full(src.shape[1:] + (2,), np.nan, np.float32)
    median5_flow(src, med, out)
    for c in range(2):
        cv = cv2.medianBlur(src[c], 5)
        assert np.array_equal(med[c].view(np.uint32), cv.view(np.uint32)), ("plane", c, src.shape)
        np.testing.assert_array_equal(med[c], _numpy_median5(src[c]))
        assert np.array_equal(out[..., c].view(np.uint32), med[c].view(np.uint32))


@pytest.mark.parametrize("h", [1, 2, 3, 4, 5, 6, 7, 12, 31])
@pytest.mark.parametrize("w", [1, 2, 3, 5, 7, 8, 9, 15, 16, 17, 40])
def test_median5_flow_matches_opencv_bit_for_bit(h, w):
    rng = np.random.default_rng(h * 100 + w)
    _check(rng.standard_normal((2, h, w)).astype(np.float32))
    _check(rng.integers(-2, 3, (2, h, w)).astype(np.float32))  # many ties


def test_median5_flow_on_a_level_sized_flow():
    rng = np.random.default_rng(3)
    _check((rng.standard_normal((2, 120, 160)) * 50).astype(np.float32))


def test_median5_flow_values_with_signed_zeros():
    """A zero median may come out as +0 or -0 (the networks differ from OpenCV's in which of two equal values they
    return); the values are the median's."""
    rng = np.random.default_rng(4)
    src = rng.choice(np.array([0.0, -0.0, 1.0, -1.0], np.float32), size=(2, 20, 23))
    med = np.empty_like(src)
    out = np.empty(src.shape[1:] + (2,), np.float32)
    median5_flow(src, med, out)
    for c in range(2):
        np.testing.assert_array_equal(med[c], cv2.medianBlur(src[c], 5))


def test_pyramid_flow_uses_the_same_numbers_as_opencv_median():
    """FarnebackPyramidFlow's flows with our median kernel equal, on every level and bit for bit, its flows with
    ``cv2.medianBlur`` and ``cv2.merge`` in the kernel's place (each level's filtered flow is also the next finer
    level's prior, so a difference would spread)."""
    from idtfv.idt.flow import farneback as fb

    rng = np.random.default_rng(5)
    base = cv2.GaussianBlur(rng.random((90, 120)).astype(np.float32) * 255, (0, 0), 2.0)
    frames = [base, np.roll(base, (1, 2), axis=(0, 1))]
    sizes = [(120, 90), (85, 64), (60, 45)]
    pyrs = [[cv2.resize(f, s, interpolation=cv2.INTER_LINEAR) for s in sizes] for f in frames]

    def flows(median_kernels):
        saved = fb._median_kernels
        fb._median_kernels = median_kernels
        try:
            solver = fb.FarnebackPyramidFlow()
            solver(pyrs[0])
            return solver(pyrs[1])
        finally:
            fb._median_kernels = saved

    def opencv_median(src, med, out):
        for c in range(2):
            cv2.medianBlur(src[c], 5, dst=med[c])
        out[...] = cv2.merge((med[0], med[1]))

    ours_kernels = fb._median_kernels
    ours = flows(ours_kernels)
    theirs = flows(lambda: type("K", (), {"median5_flow": staticmethod(opencv_median)}))
    assert fb._median_kernels is ours_kernels  # restored
    assert len(ours) == len(theirs) == 3
    for a, b in zip(ours, theirs):
        assert a.shape == b.shape and a.dtype == np.float32
        assert np.array_equal(a.view(np.uint32), b.view(np.uint32))
    assert np.abs(ours[0]).max() > 0.5  # a real flow, not zeros
