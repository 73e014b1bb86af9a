"""Tests of :func:`idtfv.llvm_ir.wide_vectors`: the function attribute it sets reaches the compiled function, and a
kernel's results do not depend on it (lane-wise arithmetic: the same bits with 8 or 16 lanes)."""

import numpy as np
from numba import njit

from idtfv.llvm_ir import WIDE_VECTORS, wide_vectors
from idtfv.idt.flow._farneback_simd_nb import fma32


@njit
def _narrow(a, b, out):
    for i in range(a.shape[0]):
        out[i] = fma32(a[i], b[i], out[i]) * np.float32(0.5) + a[i]


@njit
def _wide(a, b, out):
    wide_vectors()
    for i in range(a.shape[0]):
        out[i] = fma32(a[i], b[i], out[i]) * np.float32(0.5) + a[i]


def test_the_attribute_is_on_the_compiled_function_only_where_asked():
    a = np.linspace(-3, 3, 1001, dtype=np.float32)
    _narrow(a, a, a.copy())
    _wide(a, a, a.copy())
    wide_ir = _wide.inspect_llvm(_wide.signatures[0])
    narrow_ir = _narrow.inspect_llvm(_narrow.signatures[0])
    assert WIDE_VECTORS in wide_ir
    assert WIDE_VECTORS not in narrow_ir


def test_the_same_bits_with_and_without_it():
    rng = np.random.default_rng(0)
    for n in (1, 7, 8, 15, 16, 17, 33, 1000):
        a = rng.standard_normal(n).astype(np.float32)
        b = rng.standard_normal(n).astype(np.float32)
        c = rng.standard_normal(n).astype(np.float32)
        x, y = c.copy(), c.copy()
        _narrow(a, b, x)
        _wide(a, b, y)
        # independent reference: float64 products are exact for float32 inputs, so fma = round(a*b + c)
        ref = (np.float32(a.astype(np.float64) * b + c) * np.float32(0.5) + a).astype(np.float32)
        assert x.tobytes() == ref.tobytes()
        assert y.tobytes() == ref.tobytes()
