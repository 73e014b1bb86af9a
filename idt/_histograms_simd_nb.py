r"""LLVM intrinsics of the orientation histograms: integral rows in one pass and per-point blocks, eight bins per
vector, bit for bit the scalar kernels' numbers.

:func:`idtfv.idt._histograms_nb._accumulate_row_usual` makes row :math:`y + 1` of an integral histogram with 8
orientation bins (and HOF's zero-motion bin as a ninth): each pixel's weight :math:`m` goes to its two bins
:math:`b_0 = \lfloor f \rfloor` (:math:`m - m_1`) and :math:`b_1 = (b_0 + 1) \bmod 8` (:math:`m_1 = (f - b_0)\, m`),
or all of it to the zero bin (:math:`f = 8`); the running sums along the row are added to row :math:`y`. In Numba
that took three passes over the row (zero the pixels' slots, scatter the two weights, then the running sums and the
row above), because a data-dependent scatter does not vectorise. :func:`integral_row` does one pass: per pixel, the
8 bins' contributions as one vector (two lane compares against :math:`b_0` and :math:`b_1`, two selects), added to
the running sums kept in a vector register, plus row :math:`y`'s 8 values, stored; the zero bin as a scalar beside
it.

The same float32 operations in the same order as the scalar kernel: :math:`m_1` and :math:`m - m_1` rounded
separately (the kernels have no ``fastmath``), each running sum gets one term per pixel (0 for a bin the pixel
does not touch: the sums are never -0, so adding +0 changes no bit), and row :math:`y` is added last. Tests compare
the histograms with a NumPy integral-histogram reference and the extractor's output on the shared clips.

Per tracked point, the blocks are read from those rows: :func:`cell_bins8` / :func:`cell_bins9` make one cell's
bins from its four integral-row corners (rows given by number, no row views) as one vector, and
:func:`add_sqrt_scaled` adds a block's RootSIFT values (square roots of the L1-normalised bins) to its track's
temporal-cell sum eight at a time. Numba left both scalar
(the output and the rows read are float32 arrays it cannot prove apart); the operations per element are the same,
so are the numbers.
"""

from __future__ import annotations

from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic

from idtfv.llvm_ir import F32 as _F32
from idtfv.llvm_ir import I32 as _I32
from idtfv.llvm_ir import I64 as _I64
from idtfv.llvm_ir import IVEC as _IVEC
from idtfv.llvm_ir import VEC as _VEC
from idtfv.llvm_ir import in_eights, is_array, load, splat, sqrt, store, zeros


def _is_row(a) -> bool:
    return is_array(a, types.float32, 1)


def _begin(builder, pcur, nbins):
    """Column 0 of an integral row (zeros) and the running sums of its 8 orientation bins and zero bin."""
    zero = ir.Constant(_F32, 0.0)
    for b in range(nbins):
        builder.store(zero, builder.gep(pcur, [ir.Constant(_I64, b)]))
    return cgutils.alloca_once_value(builder, zeros()), cgutils.alloca_once_value(builder, zero)


def _weights(builder, m, f):
    """Bins and weights of weight ``m`` at angle ``f`` (in bins): ``b0 = floor(f)``, ``b1 = (b0 + 1) mod 8``,
    ``m - m1`` and ``m1 = (f - b0) m``."""
    b0 = builder.fptosi(f, _I32)  # f >= 0: truncation is floor
    m1 = builder.fmul(builder.fsub(f, builder.sitofp(b0, _F32)), m)
    m0 = builder.fsub(m, m1)
    b1 = builder.add(b0, ir.Constant(_I32, 1))
    b1 = builder.select(builder.icmp_signed(">=", b1, ir.Constant(_I32, 8)), builder.sub(b1, ir.Constant(_I32, 8)),
                        b1)
    return b0, b1, m0, m1


def _add_pixel(builder, x, b0, b1, m0, m1, pprev, pcur, nbins, running, running_zero):
    """Pixel ``x`` of one integral row from its bins and weights (:func:`_weights`): the two weights into the
    running sums, plus row y, stored."""
    zero = ir.Constant(_F32, 0.0)
    iota = ir.Constant(_IVEC, [ir.Constant(_I32, b) for b in range(8)])
    contrib = builder.select(builder.icmp_signed("==", iota, splat(builder, b0, _IVEC)), splat(builder, m0, _VEC),
                             builder.select(builder.icmp_signed("==", iota, splat(builder, b1, _IVEC)),
                                            splat(builder, m1, _VEC), zeros()))
    run = builder.fadd(builder.load(running), contrib)
    builder.store(run, running)
    base = builder.mul(builder.add(x, ir.Constant(_I64, 1)), ir.Constant(_I64, nbins))
    above = load(builder, builder.gep(pprev, [base]))
    store(builder, builder.fadd(above, run), builder.gep(pcur, [base]))
    if nbins == 9:  # the zero-motion bin: all of m when b0 = 8
        z = builder.select(builder.icmp_signed("==", b0, ir.Constant(_I32, 8)), m0, zero)
        rz = builder.fadd(builder.load(running_zero), z)
        builder.store(rz, running_zero)
        slot = builder.add(base, ir.Constant(_I64, 8))
        builder.store(builder.fadd(builder.load(builder.gep(pprev, [slot])), rz), builder.gep(pcur, [slot]))


def _row_codegen(nbins):
    """Codegen of one integral row with ``nbins`` bins per pixel. (Making 8 pixels' bins and weights as vectors
    first, or three histograms' rows in one loop, measured no faster: the loop is bound by its per-pixel vector
    operations, not by the running sums' chain.)"""

    def codegen(context, builder, signature, args):
        def data(i):
            return context.make_array(signature.args[i])(context, builder, args[i]).data

        width = builder.extract_value(context.make_array(signature.args[0])(context, builder, args[0]).shape, 0)
        pmag, pbin, pprev, pcur = (data(i) for i in (0, 1, 3, 4))
        running, running_zero = _begin(builder, pcur, nbins)
        with cgutils.for_range(builder, width) as loop:
            x = loop.index
            m = builder.load(builder.gep(pmag, [x]))
            f = builder.load(builder.gep(pbin, [x]))
            _add_pixel(builder, x, *_weights(builder, m, f), pprev, pcur, nbins, running, running_zero)
        return context.get_dummy_value()

    return codegen


def _literal_bins(nb):
    return nb.literal_value if isinstance(nb, types.IntegerLiteral) and nb.literal_value in (8, 9) else None


@intrinsic
def integral_row(typingctx, mag, fbin, nb, prev, cur):
    """Integral-histogram row ``cur`` from row ``prev`` and the row's weights: the numbers of
    ``_histograms_nb._accumulate_row_usual`` (see the module docstring).

    ``mag``, ``fbin`` (w,) float32: weights and angles in bins (``0 <= fbin < 8``, or exactly 8 for HOF's zero
    bin); ``nb`` an integer literal, 8 (HOG, MBH) or 9 (HOF: the zero bin last); ``prev``, ``cur``
    ((w + 1) * nb,) float32, C-contiguous (``cur`` written, its first ``nb`` values 0). No bounds check.
    """
    if not (all(_is_row(a) for a in (mag, fbin, prev, cur)) and _literal_bins(nb)):
        return None
    return types.void(mag, fbin, nb, prev, cur), _row_codegen(_literal_bins(nb))


# ------------------------------------------------------------------------------------------ per-point blocks
def _cell_value(builder, bb, ab, ba, aa, eps):
    """``max((bb - ab) - (ba - aa), 0) + eps`` (a negative zero from the max gives the same sum as +0)."""
    zero = zeros() if isinstance(bb.type, ir.VectorType) else ir.Constant(_F32, 0.0)
    d = builder.fsub(builder.fsub(bb, ab), builder.fsub(ba, aa))
    return builder.fadd(builder.select(builder.fcmp_ordered(">", d, zero), d, zero), eps)


def _cell_intrinsic(nbins):
    """An intrinsic ``(hist, top, bottom, xa, xb, eps, vec, k)`` for cells of ``nbins`` (8 or 9) bins per pixel,
    the integral rows given by number: ``hist`` (n, w + 1, ``nbins``), a whole histogram or a ring of its rows.
    (Row views would cost Numba two atomic reference-count updates each, dozens per tracked point.)"""

    def typer(typingctx, hist, top, bottom, xa, xb, eps, vec, k):
        if not (is_array(hist, types.float32, 3) and _is_row(vec)):
            return None
        sig = types.void(hist, types.intp, types.intp, types.intp, types.intp, types.float32, vec, types.intp)

        def codegen(context, builder, signature, args):
            aty = signature.args
            arr = context.make_array(aty[0])(context, builder, args[0])
            pvec = context.make_array(aty[6])(context, builder, args[6]).data
            stride = ir.Constant(_I64, nbins)
            row = builder.mul(builder.extract_value(arr.shape, 1), stride)
            ptop = builder.gep(arr.data, [builder.mul(args[1], row)])
            pbot = builder.gep(arr.data, [builder.mul(args[2], row)])
            a_off = builder.mul(args[3], stride)
            b_off = builder.mul(args[4], stride)
            eps, kk = args[5], args[7]

            def at(ptr, off, lane=0):
                return builder.gep(ptr, [builder.add(off, ir.Constant(_I64, lane))])

            corners = ((pbot, b_off), (ptop, b_off), (pbot, a_off), (ptop, a_off))
            vals = [load(builder, at(p, off), None) for p, off in corners]
            store(builder, _cell_value(builder, *vals, splat(builder, eps, _VEC)), at(pvec, kk), None)
            if nbins == 9:
                vals = [builder.load(at(p, off, 8)) for p, off in corners]
                builder.store(_cell_value(builder, *vals, eps), at(pvec, kk, 8))
            return context.get_dummy_value()

        return sig, codegen

    typer.__name__ = f"cell_bins{nbins}"
    typer.__doc__ = (f"``vec[k:k + {nbins}] = max((h[bottom, xb] - h[top, xb]) - (h[bottom, xa] - h[top, xa]), 0) "
                     f"+ eps``: one cell's {nbins} bins from the integral rows ``top``, ``bottom`` of ``h`` ((n, "
                     f"w + 1, {nbins}) C-contiguous float32), 8 of them as one vector: the numbers of "
                     "``_histograms_nb._cell``'s loop, element by element.")
    return intrinsic(typer)


cell_bins8 = _cell_intrinsic(8)
cell_bins9 = _cell_intrinsic(9)


@intrinsic
def add_sqrt_scaled(typingctx, vec, inv, dim, acc, col):
    """``acc[col + i] += sqrt(vec[i] * inv)`` for i < ``dim`` (float32 products, square roots and sums, eight at
    a time, the last ``dim mod 8`` with a lane mask): ``_histograms_nb._add_normalised``'s numbers, element by
    element. ``vec``, ``acc`` 1-D C-contiguous float32, not overlapping."""
    if not (_is_row(vec) and _is_row(acc)):
        return None
    sig = types.void(vec, types.float32, types.intp, acc, types.intp)

    def codegen(context, builder, signature, args):
        aty = signature.args
        pvec = context.make_array(aty[0])(context, builder, args[0]).data
        pacc = builder.gep(context.make_array(aty[3])(context, builder, args[3]).data, [args[4]])
        inv = splat(builder, args[1], _VEC)

        def emit(i, mask, rem):
            v = load(builder, builder.gep(pvec, [i]), mask)
            a = load(builder, builder.gep(pacc, [i]), mask)
            store(builder, builder.fadd(a, sqrt(builder, builder.fmul(v, inv))), builder.gep(pacc, [i]), mask)

        in_eights(builder, args[2], emit)
        return context.get_dummy_value()

    return sig, codegen
