r"""LLVM intrinsics of the flow's 5x5 median filter: selection networks shared between neighbouring pixels,
eight columns at a time.

``cv2.medianBlur(ksize=5)`` on float32 runs, per pixel, a fixed network of 99 compare-exchanges over the 25
values of its window (vectorised across pixels). Neighbouring windows share most of their values, so most of that
work is repeated. Here, with :math:`S_r(x)` the five values of row :math:`r` at columns :math:`x-2 .. x+2`
sorted (:func:`sort5_row`: 9 compare-exchanges per row and column, each used by five output rows), the windows
of output rows :math:`y` and :math:`y+1` are rows :math:`y-2 .. y+2` and :math:`y-1 .. y+3`; they share rows
:math:`y-1 .. y+2`. :func:`median_pair` merges :math:`S_{y+1}` and :math:`S_{y+2}` into the sorted ten
:math:`M_{y+1}` (kept: the next pair of rows reuses it as its :math:`M_{y-1}`), takes ranks 8-13 of the twenty
shared values from :math:`M_{y-1}` and :math:`M_{y+1}` (Batcher's odd-even merge, the comparators no output
needs removed), and gives each output row its median, the 13th of 25, from those six ranks :math:`a_i` and its
own sorted row :math:`b` (:math:`S_{y-2}` or :math:`S_{y+3}`):

.. math:: \operatorname{med} = \min_{j=0}^{5} \max(a_{13-j}, b_j), \qquad b_0 = -\infty,

the identity :math:`k\text{-th}(A \cup B) = \min_{i+j=k} \max(a_i, b_j)` for sorted :math:`A, B`. About 59
minimum or maximum operations per pixel against the full network's 198.

A median is a selection: every correct network returns the same value, so the filtered flow equals OpenCV's
(tests compare every pixel with ``cv2.medianBlur`` and with NumPy's median of the replicated-border windows). The
only freedom is which of two equal values comes out, seen in the bits only for a window whose median is zero
and holds both +0.0 and -0.0 (OpenCV's network and this one may return different signs); NaN is not expected in
a flow (the solver regularises its determinant) and is not ordered the same way.

The networks are built here in Python when the module is imported (:class:`_Program`: symbolic wires, Batcher's
merge padded with +inf wires that cost nothing, dead operations removed) and emitted as ``fcmp`` + ``select``
pairs, which x86 compiles to ``vminps`` / ``vmaxps``.
"""

from __future__ import annotations

from llvmlite import ir
from numba import types
from numba.extending import intrinsic

from idtfv.llvm_ir import I64 as _I64
from idtfv.llvm_ir import I32 as _I32
from idtfv.llvm_ir import in_eights, is_array, load, store

__all__ = ["sort5_row", "median_pair", "interleave8"]

_INF = -1  # the wire of a +inf padding value: compare-exchanges with it emit nothing


class _Program:
    """A straight-line program of minima and maxima over numbered wires (inputs first)."""

    def __init__(self):
        self.ops: list[tuple[str, int, int, int]] = []  # (kind, out, a, b)
        self.size = 0

    def inputs(self, k: int) -> list[int]:
        ids = list(range(self.size, self.size + k))
        self.size += k
        return ids

    def op(self, kind: str, a: int, b: int) -> int:
        self.ops.append((kind, self.size, a, b))
        self.size += 1
        return self.size - 1

    def exchange(self, a: int, b: int) -> tuple[int, int]:
        """(min, max) of wires a and b; +inf wires pass without an operation."""
        if b == _INF:
            return a, b
        if a == _INF:
            return b, a
        return self.op("min", a, b), self.op("max", a, b)

    def prune(self, outputs: list[int]) -> None:
        """Drop every operation no output depends on."""
        live, kept = set(outputs), []
        for o in reversed(self.ops):
            if o[1] in live:
                kept.append(o)
                live.update(o[2:])
        self.ops = kept[::-1]


def _odd_even_merge(p: _Program, w: list[int], lo: int, n: int, r: int) -> None:
    """Batcher's odd-even merge of positions lo, lo + r, ... of ``w`` (n a power of two), in place."""
    m = 2 * r
    if m < n:
        _odd_even_merge(p, w, lo, n, m)
        _odd_even_merge(p, w, lo + r, n, m)
        for i in range(lo + r, lo + n - r, m):
            w[i], w[i + r] = p.exchange(w[i], w[i + r])
    else:
        w[lo], w[lo + r] = p.exchange(w[lo], w[lo + r])


def _merge(p: _Program, a: list[int], b: list[int]) -> list[int]:
    """The sorted union of two sorted wire lists (each padded with +inf wires to a power of two)."""
    q = 1
    while q < max(len(a), len(b)):
        q *= 2
    w = list(a) + [_INF] * (q - len(a)) + list(b) + [_INF] * (q - len(b))
    _odd_even_merge(p, w, 0, 2 * q, 1)
    return w[:len(a) + len(b)]


#: An optimal sorting network of five values (9 compare-exchanges).
_SORT5_PAIRS = ((0, 1), (3, 4), (2, 4), (2, 3), (0, 3), (0, 2), (1, 4), (1, 3), (1, 2))


def _sort5_program() -> tuple[_Program, list[int], list[int]]:
    p = _Program()
    wires = p.inputs(5)
    v = list(wires)
    for i, j in _SORT5_PAIRS:
        v[i], v[j] = p.exchange(v[i], v[j])
    return p, wires, v


def _pair_program() -> tuple[_Program, list[list[int]], list[int]]:
    """Inputs ``[M_{y-1} (10), S_{y+1}, S_{y+2}, S_{y-2}, S_{y+3} (5 each)]``; outputs ``M_{y+1} (10)`` and the
    medians of rows y and y + 1."""
    p = _Program()
    mp, sc, sd, b0, b1 = p.inputs(10), p.inputs(5), p.inputs(5), p.inputs(5), p.inputs(5)
    mn = _merge(p, sc, sd)
    shared = [None] + _merge(p, mp, mn)[:13]  # shared[i]: the i-th smallest of the 20 shared values

    def median(b):
        out = shared[13]
        for j in range(1, 6):
            out = p.op("min", out, p.op("max", shared[13 - j], b[j - 1]))
        return out

    outputs = mn + [median(b0), median(b1)]
    p.prune(outputs)
    return p, [mp, sc, sd, b0, b1], outputs


_SORT5 = _sort5_program()
_PAIR = _pair_program()


def _emit(builder, program: _Program, values: dict) -> None:
    """Run ``program`` on the 8-lane vectors ``values`` (wire -> vector), adding its outputs."""
    for kind, out, a, b in program.ops:
        x, y = values[a], values[b]
        values[out] = builder.select(builder.fcmp_ordered("<" if kind == "min" else ">", x, y), x, y)


def _rows(context, builder, ty, val):
    """Data pointer and row length of a (rows, w) C-contiguous float32 array."""
    arr = context.make_array(ty)(context, builder, val)
    return arr.data, builder.extract_value(arr.shape, 1)


def _is_rows(a) -> bool:
    return is_array(a, types.float32, 2)


@intrinsic
def sort5_row(typingctx, pad, out):
    """``out[k, x]`` = the k-th smallest of ``pad[x .. x + 4]``, for x < w: one row's horizontal runs sorted.
    ``pad`` (>= w + 4,) the row with two replicated values each side, ``out`` (5, w); C-contiguous float32."""
    if not (is_array(pad, types.float32, 1) and _is_rows(out)):
        return None
    sig = types.void(pad, out)

    def codegen(context, builder, signature, args):
        ppad = context.make_array(signature.args[0])(context, builder, args[0]).data
        pout, width = _rows(context, builder, signature.args[1], args[1])
        program, wires, outputs = _SORT5

        def emit(x, mask, rem):
            values = {w: load(builder, builder.gep(ppad, [builder.add(x, ir.Constant(_I64, k))]), mask)
                      for k, w in enumerate(wires)}
            _emit(builder, program, values)
            for k, w in enumerate(outputs):
                row = builder.mul(ir.Constant(_I64, k), width)
                store(builder, values[w], builder.gep(pout, [builder.add(row, x)]), mask)

        in_eights(builder, width, emit)
        return context.get_dummy_value()

    return sig, codegen


@intrinsic
def median_pair(typingctx, m_prev, s_next, s_after, s_above, s_below, m_next, out0, out1):
    """Medians of two output rows y, y + 1, and the merged rows y + 1, y + 2 for the next pair.

    ``m_prev`` (10, w): rows y - 1 and y sorted together per column; ``s_next``, ``s_after``, ``s_above``,
    ``s_below`` (5, w): rows y + 1, y + 2, y - 2, y + 3 (:func:`sort5_row`); writes ``m_next`` (10, w) (rows
    y + 1 and y + 2 together) and the medians ``out0``, ``out1`` (w,). C-contiguous float32, not overlapping."""
    ins = (m_prev, s_next, s_after, s_above, s_below, m_next)
    if not (all(_is_rows(a) for a in ins) and is_array(out0, types.float32, 1)
            and is_array(out1, types.float32, 1)):
        return None
    sig = types.void(m_prev, s_next, s_after, s_above, s_below, m_next, out0, out1)

    def codegen(context, builder, signature, args):
        aty = signature.args
        ptrs = [_rows(context, builder, aty[i], args[i])[0] for i in range(6)]
        width = _rows(context, builder, aty[5], args[5])[1]
        pouts = [context.make_array(aty[i])(context, builder, args[i]).data for i in (6, 7)]
        program, groups, outputs = _PAIR

        def at(ptr, k, x):
            return builder.gep(ptr, [builder.add(builder.mul(ir.Constant(_I64, k), width), x)])

        def emit(x, mask, rem):
            values = {}
            for ptr, wires in zip(ptrs[:5], groups):
                for k, w in enumerate(wires):
                    values[w] = load(builder, at(ptr, k, x), mask)
            _emit(builder, program, values)
            for k, w in enumerate(outputs[:10]):
                store(builder, values[w], at(ptrs[5], k, x), mask)
            for ptr, w in zip(pouts, outputs[10:]):
                store(builder, values[w], builder.gep(ptr, [x]), mask)

        in_eights(builder, width, emit)
        return context.get_dummy_value()

    return sig, codegen


@intrinsic
def interleave8(typingctx, u, v, out, x):
    """``out[x + i] = (u[x + i], v[x + i])`` for i < 8: two planes' rows interleaved, eight pixels (two shuffles,
    two stores). ``u``, ``v`` (w,), ``out`` (w, 2) C-contiguous float32; x + 8 <= w."""
    if not (is_array(u, types.float32, 1) and is_array(v, types.float32, 1) and _is_rows(out)):
        return None
    sig = types.void(u, v, out, types.intp)

    def codegen(context, builder, signature, args):
        pu, pv, po = (context.make_array(signature.args[i])(context, builder, args[i]).data for i in range(3))
        x = args[3]
        a = load(builder, builder.gep(pu, [x]))
        b = load(builder, builder.gep(pv, [x]))
        base = builder.mul(x, ir.Constant(_I64, 2))
        for half in range(2):
            idx = [j for i in range(4 * half, 4 * half + 4) for j in (i, i + 8)]
            lanes = ir.Constant(ir.VectorType(_I32, 8), [ir.Constant(_I32, k) for k in idx])
            pair = builder.shuffle_vector(a, b, lanes)
            store(builder, pair, builder.gep(po, [builder.add(base, ir.Constant(_I64, 8 * half))]))
        return context.get_dummy_value()

    return sig, codegen
