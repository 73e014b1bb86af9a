"""LLVM IR helpers for the kernels' intrinsics (``numba.extending.intrinsic`` code generators).

The vector intrinsics of the stage packages (``idtfv.idt._histograms_simd_nb``, ``idtfv.idt.flow._farneback_simd_nb``)
build 8-lane float32 IR with these: declarations of LLVM's own intrinsics (``llvm.fma``, masked loads and stores,
square roots), splats, lane masks and unaligned or masked vector loads and stores. Nothing here runs at a kernel's
run time: the functions emit IR while Numba compiles. A kernel that compiles these in records the digest of this
file too (``KERNEL_DEPENDENCIES``, ``tests/test_kernel_caches.py``).
"""

from __future__ import annotations

from llvmlite import ir
from numba import types
from numba.extending import intrinsic

LANES = 8
F32 = ir.FloatType()
I32 = ir.IntType(32)
I64 = ir.IntType(64)
VEC = ir.VectorType(F32, LANES)
IVEC = ir.VectorType(I32, LANES)
MASK = ir.VectorType(ir.IntType(1), LANES)


def declare(builder, name: str, fnty: ir.FunctionType) -> ir.Function:
    """The module's declaration of the LLVM intrinsic ``name`` (added once)."""
    module = builder.module
    fn = module.globals.get(name)
    return fn if fn is not None else ir.Function(module, fnty, name=name)


def splat(builder, x, vty=VEC):
    """``x`` in every lane of a ``vty`` vector."""
    v = builder.insert_element(ir.Constant(vty, ir.Undefined), x, ir.Constant(I32, 0))
    return builder.shuffle_vector(v, v, ir.Constant(ir.VectorType(I32, vty.count), [0] * vty.count))


def zeros(vty=VEC):
    """The zero vector of ``vty`` (+0.0 lanes for floats)."""
    return ir.Constant(vty, [ir.Constant(vty.element, 0.0 if vty.element == F32 else 0)] * vty.count)


def lane_mask(n: int) -> ir.Constant:
    """<8 x i1>: the lanes below the constant ``n`` on."""
    return ir.Constant(MASK, [ir.Constant(ir.IntType(1), int(j < n)) for j in range(LANES)])


def count_mask(builder, count):
    """<8 x i1>: the lanes below the run-time ``count`` (an i64) on."""
    i64v = ir.VectorType(I64, LANES)
    iota = ir.Constant(i64v, [ir.Constant(I64, j) for j in range(LANES)])
    return builder.icmp_signed("<", iota, splat(builder, count, i64v))


def in_eights(builder, count, emit) -> None:
    """``emit(i, mask, rem)`` for the 8-element blocks of ``count`` (an i64): the whole blocks in a loop (``mask``
    and ``rem`` None), then the last ``count mod 8`` elements with their lane mask (:func:`count_mask`) and number."""
    from numba.core import cgutils

    eight = ir.Constant(I64, LANES)
    whole = builder.udiv(count, eight)
    with cgutils.for_range(builder, whole) as loop:
        emit(builder.mul(loop.index, eight), None, None)
    start = builder.mul(whole, eight)
    rem = builder.sub(count, start)
    with builder.if_then(builder.icmp_signed(">", rem, ir.Constant(I64, 0))):
        emit(start, count_mask(builder, rem), rem)


def load(builder, ptr, mask=None):
    """The 8 floats at ``ptr`` (a float*, no alignment assumed), or only the lanes ``mask`` sets (the others 0;
    nothing read past them: ``llvm.masked.load``)."""
    vptr = builder.bitcast(ptr, VEC.as_pointer())
    if mask is None:
        return builder.load(vptr, align=4)
    fn = declare(builder, "llvm.masked.load.v8f32.p0", ir.FunctionType(VEC, [VEC.as_pointer(), I32, MASK, VEC]))
    return builder.call(fn, [vptr, ir.Constant(I32, 4), mask, zeros()])


def store(builder, vec, ptr, mask=None) -> None:
    """``vec`` to the 8 floats at ``ptr``, or only its lanes ``mask`` sets (nothing else written)."""
    vptr = builder.bitcast(ptr, VEC.as_pointer())
    if mask is None:
        builder.store(vec, vptr, align=4)
        return
    fn = declare(builder, "llvm.masked.store.v8f32.p0",
                 ir.FunctionType(ir.VoidType(), [VEC, VEC.as_pointer(), I32, MASK]))
    builder.call(fn, [vec, vptr, ir.Constant(I32, 4), mask])


def fma(builder, a, b, c):
    """``a * b + c`` rounded once, lane by lane (``llvm.fma.v8f32``): a multiply-add that LLVM contracts in a
    scalar kernel, written down."""
    fn = declare(builder, "llvm.fma.v8f32", ir.FunctionType(VEC, [VEC] * 3))
    return builder.call(fn, [a, b, c])


def sqrt(builder, v):
    """Correctly rounded square roots, lane by lane (``llvm.sqrt.v8f32``)."""
    return builder.call(declare(builder, "llvm.sqrt.v8f32", ir.FunctionType(VEC, [VEC])), [v])


def is_array(a, dtype, ndim: int) -> bool:
    """Whether the Numba type ``a`` is a C-contiguous ``ndim``-dimensional array of ``dtype``."""
    return isinstance(a, types.Array) and a.dtype == dtype and a.ndim == ndim and a.layout == "C"


#: The LLVM function attribute :func:`wide_vectors` sets: clang's ``-mprefer-vector-width=512`` for one function.
WIDE_VECTORS = '"prefer-vector-width"="512"'


@intrinsic
def wide_vectors(typingctx):
    """Called first in a kernel: LLVM's loop vectoriser may use the CPU's widest vectors in it (16 float32 lanes
    with AVX-512) instead of the 256 bits LLVM's tuning for Intel's AVX-512 cores prefers (Numba compiles for the
    host CPU). The compiler may then vectorise the kernel's plain loops twice as wide; every lane computes what it
    did, in the same order (no reassociation is allowed in these kernels), so the results are the same bits. No
    effect on CPUs without 512-bit vectors.

    Sets the function attribute :data:`WIDE_VECTORS` on the LLVM function being compiled (Numba-inlined helpers are
    part of it); llvmlite's attribute set accepts only the names it lists, so the string attribute is added past
    its check, and left out if llvmlite's attribute set is no longer a set (the kernel is then compiled as
    before).
    """

    def codegen(context, builder, signature, args):
        attributes = builder.function.attributes
        if isinstance(attributes, set):
            set.add(attributes, WIDE_VECTORS)
        return context.get_dummy_value()

    return types.none(), codegen
