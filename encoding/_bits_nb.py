"""Two LLVM intrinsics for the Numba kernels: count trailing zeros, and float32 from its bit pattern.

``cttz64`` walks the set bits of a candidate mask (one instruction, ``tzcnt``) and ``f32_from_bits`` builds 2^m for
the float32 ``exp`` polynomial; Numba exposes neither directly.
"""

from __future__ import annotations

from llvmlite import ir
from numba import types
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
