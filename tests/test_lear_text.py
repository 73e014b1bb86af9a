"""LEAR text rows from the compiled formatter are byte for byte Python's ``"%.9g" % float(v)`` (the writer of
earlier versions), on random bit patterns (nan, inf, subnormals, huge and tiny values), exact decimal ties,
descriptor-like values and real extracted rows."""

from __future__ import annotations

import numpy as np
import pytest

from conftest import SHARED
from idtfv.idt.trajectories import _format_lear, load_trajectories


def _reference(table: np.ndarray) -> bytes:
    """Today's writer before the kernels: Python's %-formatting of every value."""
    line = "\t".join(["%.9g"] * table.shape[1]) + "\n"
    return "".join([line % tuple(row) for row in table.tolist()]).encode()


def _check(table: np.ndarray) -> None:
    table = np.ascontiguousarray(table, np.float32)
    got, want = _format_lear(table), _reference(table)
    if got != want:
        pairs = [(a, b) for a, b in zip(got.split(b"\t"), want.split(b"\t")) if a != b][:5]
        pytest.fail(f"formatted differently from '%.9g' (got, want): {pairs}")


def test_random_bit_patterns():
    bits = np.random.default_rng(0).integers(0, 2 ** 32, 436 * 300, dtype=np.uint64).astype(np.uint32)
    table = bits.view(np.float32).reshape(-1, 436)
    assert np.isnan(table).any() and (np.abs(table[np.isfinite(table)]) < 1e-38).any()  # subnormals and nan
    _check(table)


def test_special_values():
    neg_nan = np.array([np.nan], np.float32)
    neg_nan.view(np.uint32)[0] |= np.uint32(0x80000000)
    values = [np.nan, neg_nan[0], np.inf, -np.inf, 0.0, -0.0, 1e-45, -1e-45, 1.1754944e-38, 3.4028235e38,
              -3.4028235e38, 1e-5, 9.9999997e-05, 1e-4, 123456789, 1234567890, 99999999.5, 999999995, 0.5, 1.5,
              2.5, 1e8, 1e9, 1e-10, 1e10, -1.25e-7, 0.1, 0.2, 0.3, 1.0 / 3.0, 65504.0, 16777216.0, 16777217.0]
    _check(np.array([values], np.float32))


def test_exact_ties_at_the_tenth_digit_round_half_to_even():
    rng = np.random.default_rng(1)
    values = []
    for k in range(3, 30):  # m / 2**k is exactly m * 5**k * 10**-k: a tie when m * 5**k has 10 digits
        lo, hi = int(np.ceil(1e9 / 5 ** k)), min(int(1e10 // 5 ** k), 2 ** 24)
        if lo < hi:
            values += [np.float32(m) / np.float32(2.0 ** k) for m in rng.integers(lo, hi, 100) | 1]
    values = np.array(values, np.float32)
    ties = [v for v in values if len(("%.10g" % v).replace(".", "").lstrip("0")) == 10
            and ("%.10g" % v).endswith("5")]
    assert len(ties) > 100  # the test really holds ties
    _check(np.concatenate([values, -values]).reshape(1, -1))


def test_descriptor_like_and_scaled_values():
    rng = np.random.default_rng(2)
    _check(rng.random((500, 436)).astype(np.float32))
    scaled = rng.standard_normal((200, 436)) * 10.0 ** rng.integers(-40, 38, (200, 436))
    _check(np.clip(scaled, -3e38, 3e38).astype(np.float32))
    _check(rng.integers(-2000, 2000, (50, 436)).astype(np.float32))  # frame numbers, integers


def test_float16_rounded_descriptors_full_of_exact_ties():
    # what a compact .npz holds: 11-bit mantissas, so many values end exactly in a 5 at the 10th digit
    rng = np.random.default_rng(3)
    table = rng.random((400, 436)).astype(np.float16).astype(np.float32)
    ties = sum(1 for v in table.ravel()[:20000] if len(("%.10g" % v).replace(".", "").lstrip("0")) == 10
               and ("%.10g" % v).endswith("5"))
    assert ties > 100
    _check(table)
    _check(-table * np.float32(1e-12))  # tiny values: the exact decision needs more than 64 bits for some


def test_empty_table():
    assert _format_lear(np.zeros((0, 436), np.float32)) == b""


@pytest.mark.skipif(not (SHARED / "reference" / "lear-idt" / "tree.txt.gz").exists(), reason="needs ../shared")
def test_real_rows_of_lear_and_of_the_extractor():
    _check(load_trajectories(SHARED / "reference" / "lear-idt" / "tree.txt.gz").to_lear()[:400])
