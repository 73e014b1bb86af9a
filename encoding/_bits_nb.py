"""LLVM intrinsics for the Numba kernels: bit tricks and 16-lane float32 vector operations Numba does not emit.

``cttz64`` walks the set bits of a candidate mask (one instruction, ``tzcnt``) and ``f32_from_bits`` builds 2^m for
the float32 ``exp`` polynomial. ``ge_mask64`` and ``max_row`` read a row of the (n, K) float32 screen 16 lanes at a
time: LLVM does not vectorise the scalar loops (a select-based maximum and a shift-or of compare bits), which cost
~8x more per row (measured: 165 vs 19 ns for a 256-wide maximum, 73 vs 21 ns for one 256-wide mask). Both give
exactly the scalar loops' results on NaN-free data (a maximum and a comparison do not depend on evaluation order).
"""

from __future__ import annotations

from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic


@intrinsic
def cttz64(typingctx, x):
    """Index of the lowest set bit of a non-zero uint64 (undefined for 0: callers test the mask first)."""
    sig = types.uint64(types.uint64)

    def codegen(context, builder, signature, args):
        return builder.cttz(args[0], ir.Constant(ir.IntType(1), 1))

    return sig, codegen


@intrinsic
def f32_from_bits(typingctx, bits):
    """The float32 whose IEEE-754 bit pattern is the int32 ``bits``."""
    sig = types.float32(types.int32)

    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], ir.FloatType())

    return sig, codegen


_LANES = 16


def _is_f32_matrix(a) -> bool:
    return isinstance(a, types.Array) and a.dtype == types.float32 and a.ndim == 2 and a.layout == "C"


def _vector_ptr(context, builder, aryty, ary, i, k):
    """Pointer to ``ary[i, k]`` as a pointer to <16 x float>."""
    arr = context.make_array(aryty)(context, builder, ary)
    ptr = cgutils.get_item_pointer(context, builder, aryty, arr, [i, k])
    return builder.bitcast(ptr, ir.VectorType(ir.FloatType(), _LANES).as_pointer())


@intrinsic
def ge_mask64(typingctx, screen, i, k, thr):
    """Bit j of the uint64 result is ``screen[i, k + j] >= thr`` for j < 64 (``screen`` C-contiguous float32 with
    at least k + 64 columns; no bounds check)."""
    if not _is_f32_matrix(screen):
        return None
    sig = types.uint64(screen, types.intp, types.intp, types.float32)

    def codegen(context, builder, signature, args):
        ary, ii, kk, t = args
        vty = ir.VectorType(ir.FloatType(), _LANES)
        vptr = _vector_ptr(context, builder, signature.args[0], ary, ii, kk)
        tv = ir.Constant(vty, ir.Undefined)
        for j in range(_LANES):
            tv = builder.insert_element(tv, t, ir.Constant(ir.IntType(32), j))
        i64 = ir.IntType(64)
        out = ir.Constant(i64, 0)
        for c in range(64 // _LANES):
            v = builder.load(builder.gep(vptr, [ir.Constant(i64, c)]), align=4)
            bits = builder.bitcast(builder.fcmp_ordered(">=", v, tv), ir.IntType(_LANES))
            out = builder.or_(out, builder.shl(builder.zext(bits, i64), ir.Constant(i64, c * _LANES)))
        return out

    return sig, codegen


@intrinsic
def max_row16(typingctx, screen, i, n):
    """max of ``screen[i, :n]`` for n a positive multiple of 16 (``screen`` C-contiguous float32, NaN-free; no
    bounds check)."""
    if not _is_f32_matrix(screen):
        return None
    sig = types.float32(screen, types.intp, types.intp)

    def codegen(context, builder, signature, args):
        ary, ii, nn = args
        vptr = _vector_ptr(context, builder, signature.args[0], ary, ii, ir.Constant(nn.type, 0))
        acc = cgutils.alloca_once(builder, vptr.type.pointee)
        builder.store(builder.load(vptr, align=4), acc)
        one = ir.Constant(nn.type, 1)
        n16 = builder.udiv(nn, ir.Constant(nn.type, _LANES))
        with cgutils.for_range_slice(builder, one, n16, one, inc=True) as (c, _):
            v = builder.load(builder.gep(vptr, [c]), align=4)
            a = builder.load(acc)
            builder.store(builder.select(builder.fcmp_ordered(">", v, a), v, a), acc)
        a = builder.load(acc)
        m = builder.extract_element(a, ir.Constant(ir.IntType(32), 0))
        for j in range(1, _LANES):
            e = builder.extract_element(a, ir.Constant(ir.IntType(32), j))
            m = builder.select(builder.fcmp_ordered(">", e, m), e, m)
        return m

    return sig, codegen
