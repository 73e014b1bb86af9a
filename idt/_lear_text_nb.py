"""LEAR text rows at compiled speed: float32 values formatted as Python's ``"%.9g" % float(v)``, byte for byte.

``"%.9g"`` is nine correctly rounded significant digits (round half to even on the exact binary value), in fixed
notation when the decimal exponent :math:`E` is in :math:`[-4, 9)`, else as ``d.dddddddde±XX``, trailing zeros
(and a bare ``.``) removed; ``nan``, ``inf``, ``-inf``, ``0`` and ``-0`` as Python writes them.

The nine digits come from the double :math:`s = |v| \\cdot 10^{8-E}` (at most three roundings: absolute error
below :math:`4 \\cdot 10^{-7}` for :math:`s < 10^9`). Where that error could decide the rounding (the fraction of
:math:`s` within :math:`10^{-6}` of one half: exact ties are common in float16-rounded descriptors) the rounding
is decided exactly in integers; the rare cases left (values of at least :math:`10^9` or below about
:math:`10^{-20}` near a tie, an exponent that does not settle) :func:`decimal9` hands back, and the caller takes
their digits from Python's own ``"%.8e"``. :func:`render` then writes the text.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

__all__ = ["decimal9", "render", "MAX_CHARS"]

#: Bytes a value takes at most, with its separator ("-1.23456789e-45" and a tab or newline).
MAX_CHARS = 16
_P10 = np.array([10.0 ** k for k in range(23)])  # exact doubles
_NAN, _INF, _ZERO, _FINITE, _HARD = 0, 1, 2, 3, 4


@njit(cache=True, inline="always")
def _round_up_exactly(a, p, k):
    r"""1 if :math:`t = a \cdot 10^p` (``a`` a float32 value, ``p >= 0``, :math:`\lfloor t \rfloor = k`) rounds
    up to nine digits (half to even), 0 if down, -1 when undecided here (``p < 0``, or the bit needed lies
    beyond 64 bits).

    With :math:`a = m 2^q`, ``m`` odd: :math:`t = m 5^p 2^{q+p}`, so ``t``'s fraction is exactly one half when
    :math:`q + p = -1` (a tie: round to the even ``k``), and otherwise above one half when bit :math:`-(q+p)-1` of
    the odd integer :math:`m 5^p` is set (read from :math:`m 5^p \bmod 2^{64}`, exact in wrapping uint64).
    """
    if p < 0:
        return -1
    mant, ex = math.frexp(a)
    m = np.int64(mant * 16777216.0)  # a = m * 2**q exactly (float32: 24 bits)
    q = ex - 24
    while m % 2 == 0:
        m //= 2
        q += 1
    r = q + p
    if r >= 0:  # an integer: never a near-tie
        return -1
    if r == -1:
        return 1 if k % 2 == 1 else 0
    if -r - 1 >= 64:
        return -1
    big = np.uint64(m)
    for _ in range(p):
        big = big * np.uint64(5)  # wraps modulo 2**64
    return np.int64((big >> np.uint64(-r - 1)) & np.uint64(1))


@njit(cache=True, nogil=True)
def decimal9(values, digits, exps, kinds):
    """Nine significant digits of each value.

    Parameters
    ----------
    values : (n,) float32
    digits : (n,) int64, out
        :math:`10^8 \\le` digits :math:`< 10^9` for finite non-zero values.
    exps : (n,) int64, out
        Decimal exponent :math:`E`: :math:`|v| \\approx` digits :math:`\\cdot 10^{E-8}`.
    kinds : (n,) int8, out
        0 nan, 1 inf, 2 zero, 3 finite, 4 finite whose digits the caller must take from ``"%.8e"``.

    Returns
    -------
    int
        How many values are of kind 4.
    """
    p10 = _P10
    hard = 0
    for i in range(values.shape[0]):
        x = np.float64(values[i])
        if x != x:
            kinds[i] = _NAN
            continue
        a = abs(x)
        if a == math.inf:
            kinds[i] = _INF
            continue
        if a == 0.0:
            kinds[i] = _ZERO
            continue
        e = np.int64(math.floor(math.log10(a)))
        s = 0.0
        settled = False
        for _ in range(4):
            p = 8 - e
            if p >= 0:
                s = a * p10[p] if p <= 22 else (a * p10[22]) * (10.0 ** (p - 22))
            else:
                s = a / p10[-p] if -p <= 22 else (a / p10[22]) / p10[-p - 22]
            if s < 1e8:
                e -= 1
            elif s >= 1e9:
                e += 1
            else:
                settled = True
                break
        floor_s = math.floor(s)
        frac = s - floor_s
        up = 1 if frac > 0.5 else 0
        if settled and abs(frac - 0.5) < 1e-6:
            up = _round_up_exactly(a, 8 - e, np.int64(floor_s))
        if not settled or up < 0:
            kinds[i] = _HARD
            hard += 1
            continue
        n = np.int64(floor_s) + up
        if n >= 1000000000:
            n = 100000000
            e += 1
        digits[i] = n
        exps[i] = e
        kinds[i] = _FINITE
    return hard


@njit(cache=True, nogil=True)
def render(values, digits, exps, kinds, n_columns, out):
    """Write the values as tab-separated lines of ``n_columns`` numbers into ``out`` (uint8, at least
    :data:`MAX_CHARS` bytes per value); returns the number of bytes written."""
    o = 0
    buf = np.empty(9, np.uint8)
    for i in range(values.shape[0]):
        kind = kinds[i]
        negative = np.signbit(values[i])
        if kind == _NAN:
            out[o] = 110  # n
            out[o + 1] = 97  # a
            out[o + 2] = 110
            o += 3
        elif kind == _INF:
            if negative:
                out[o] = 45  # -
                o += 1
            out[o] = 105  # i
            out[o + 1] = 110  # n
            out[o + 2] = 102  # f
            o += 3
        elif kind == _ZERO:
            if negative:
                out[o] = 45
                o += 1
            out[o] = 48
            o += 1
        else:
            if negative:
                out[o] = 45
                o += 1
            n = digits[i]
            e = exps[i]
            for k in range(8, -1, -1):
                buf[k] = 48 + n % 10
                n //= 10
            k = 9  # significant digits left once trailing zeros go
            while k > 1 and buf[k - 1] == 48:
                k -= 1
            if -4 <= e < 9:
                if e >= 0:
                    for j in range(e + 1):
                        out[o] = buf[j] if j < k else 48
                        o += 1
                    if k > e + 1:
                        out[o] = 46  # .
                        o += 1
                        for j in range(e + 1, k):
                            out[o] = buf[j]
                            o += 1
                else:
                    out[o] = 48
                    out[o + 1] = 46
                    o += 2
                    for _ in range(-e - 1):
                        out[o] = 48
                        o += 1
                    for j in range(k):
                        out[o] = buf[j]
                        o += 1
            else:
                out[o] = buf[0]
                o += 1
                if k > 1:
                    out[o] = 46
                    o += 1
                    for j in range(1, k):
                        out[o] = buf[j]
                        o += 1
                out[o] = 101  # e
                out[o + 1] = 45 if e < 0 else 43  # - or +
                o += 2
                ae = -e if e < 0 else e
                if ae >= 100:
                    out[o] = 48 + ae // 100
                    o += 1
                out[o] = 48 + (ae // 10) % 10
                out[o + 1] = 48 + ae % 10
                o += 2
        out[o] = 10 if (i + 1) % n_columns == 0 else 9  # newline or tab
        o += 1
    return o
