r"""LLVM intrinsics of Farnebäck's update step and polynomial expansion: eight pixels at once, bit for bit the
scalar kernels' numbers.

:func:`idtfv.idt.flow._farneback_nb._terms_at` computes, per pixel, a bilinear blend of the second frame's
expansion ``r1 (h, w, 5)`` at :math:`x + \tilde d` (four 5-float neighbours), combines it with the first frame's
``r0[y, x]`` and writes ``[G11, G12, G22, h1, h2]``. Numba cannot vectorise that loop: the four neighbours are
data-dependent gathers, and the expansions are interleaved (5 floats per pixel). :func:`update_terms8` does eight
consecutive pixels of a row in vector registers instead:

1. per pixel, the four neighbours as masked 5-lane loads (``llvm.masked.load``: never past the pixel's own 5
   floats) blended with its four bilinear weights, plus ``r0[y, x]``'s 5 floats; lanes 0-1 become
   :math:`c - s` (the :math:`b` difference), lanes 2-4 :math:`(c + s) / 2` (the averaged :math:`A`);
2. an 8x8 transpose (``shufflevector``) turns the eight pixels' vectors into one 8-lane vector per quantity;
3. :math:`\Delta b`, :math:`G = A^T A` and :math:`h = A^T \Delta b` for the eight pixels in 8-lane arithmetic;
4. the transpose back and eight masked 5-lane stores.

Every operation is the scalar kernel's, in its order and rounding: the multiply-adds that LLVM contracts in the
scalar code (its ``contract`` flag; :data:`idtfv.idt.flow._farneback_nb._FM`) are explicit ``llvm.fma`` calls here
and the others separate multiplies and adds, so the results are the bits the scalar loop gave (the extractor's
output on the shared clips, both presets, unchanged). Where a sum of two products could be fused either way, LLVM
chose per compiled context (the same source gave other choices in a small test function): the choice is written
down here, :math:`\Delta b_1 = \mathrm{fma}(A_{12}, d_y, \mathrm{fma}(A_{11}, d_x, (c_0 - s_0)/2))`,
:math:`\Delta b_2 = \mathrm{fma}(A_{22}, d_y, \mathrm{fma}((c_1 - s_1), 1/2, A_{12} d_x))`, and
``tests/test_farneback.py`` checks every pixel, the scalar row tail's too, against a NumPy emulation of these
operations. The arrays are C-contiguous float32 (the callers' own buffers); no bounds check.

:func:`poly_vertical8` and :func:`poly_horizontal8` are the two passes of
:func:`idtfv.idt.flow._farneback_nb.poly_expand` for one row with the n taps unrolled (n an integer literal, 5 or
7 in the extractor): each output's sum of 2n + 1 taps stays in a register instead of being read and written back
once per tap (the scalar form, ``_poly_expand_rows``, is bound by those stores), and the five coefficients go out
through the transpose above. The sums are the same chains of fused multiply-adds in the same tap order, so the
expansion is bit for bit the scalar kernel's (tested for every n the extractor uses, odd sizes and rows narrower
than 8).
"""

from __future__ import annotations

from llvmlite import ir
from numba import types
from numba.extending import intrinsic

from idtfv.llvm_ir import F32 as _F32
from idtfv.llvm_ir import I32 as _I32
from idtfv.llvm_ir import I64 as _I64
from idtfv.llvm_ir import LANES as _LANES
from idtfv.llvm_ir import VEC as _VEC
from idtfv.llvm_ir import declare, fma, in_eights, is_array, lane_mask, load, splat, store, zeros


def _load5(builder, ptr):
    """Lanes 0-4: the 5 floats at ``ptr`` (float*); lanes 5-7: zero. Reads nothing past them."""
    return load(builder, ptr, lane_mask(5))


def _store5(builder, vec, ptr) -> None:
    """Lanes 0-4 of ``vec`` to the 5 floats at ``ptr``; writes nothing else."""
    store(builder, vec, ptr, lane_mask(5))


def _shuffle(builder, a, b, idx):
    return builder.shuffle_vector(a, b, ir.Constant(ir.VectorType(_I32, len(idx)), idx))


def transpose8(builder, rows):
    """The 8x8 transpose of eight <8 x float> rows (``rows[j]`` lane k -> ``out[k]`` lane j): unpack pairs, then
    pairs of pairs, then the 128-bit halves (24 shuffles; LLVM drops those whose results are unused)."""
    lo, hi = [0, 8, 1, 9, 4, 12, 5, 13], [2, 10, 3, 11, 6, 14, 7, 15]
    t = []
    for i in range(0, _LANES, 2):
        t += [_shuffle(builder, rows[i], rows[i + 1], lo), _shuffle(builder, rows[i], rows[i + 1], hi)]
    lo2, hi2 = [0, 1, 8, 9, 4, 5, 12, 13], [2, 3, 10, 11, 6, 7, 14, 15]
    u = []
    for a, b in ((t[0], t[2]), (t[1], t[3]), (t[4], t[6]), (t[5], t[7])):
        u += [_shuffle(builder, a, b, lo2), _shuffle(builder, a, b, hi2)]
    # u[0..3]: columns (0|4), (1|5), (2|6), (3|7) of rows 0-3; u[4..7]: the same of rows 4-7
    low, high = [0, 1, 2, 3, 8, 9, 10, 11], [4, 5, 6, 7, 12, 13, 14, 15]
    return ([_shuffle(builder, u[k], u[k + 4], low) for k in range(4)]
            + [_shuffle(builder, u[k], u[k + 4], high) for k in range(4)])


@intrinsic
def update_terms8(typingctx, r0, r1, y, x0, xs, ys, c00, c01, c10, c11, cout, fl0, fl1, wy, wx, out):
    """``[G11, G12, G22, h1, h2]`` of pixels ``x0 .. x0 + 7`` of row ``y`` into ``out[y, x0:x0 + 8]``: the numbers
    of ``_farneback_nb._terms_at`` for each (see the module docstring).

    ``r0, r1, out`` (h, w, 5) float32; ``xs, ys`` (w,) uint64, the top-left neighbour of each pixel's sample in
    ``r1``; ``c00 .. c11`` (w,) float32 its bilinear weights and ``cout`` (w,) 1 - inside; ``fl0, fl1`` (w,) the row's
    prior displacement; ``wy`` the row's border weight and ``wx`` (w,) the columns'. All C-contiguous; x0 + 8 <= w.
    """
    f32 = types.float32
    if not (is_array(r0, f32, 3) and is_array(r1, f32, 3) and is_array(out, f32, 3)
            and all(is_array(a, types.uint64, 1) for a in (xs, ys))
            and all(is_array(a, f32, 1) for a in (c00, c01, c10, c11, cout, fl0, fl1, wx))):
        return None
    sig = types.void(r0, r1, types.intp, types.intp, xs, ys, c00, c01, c10, c11, cout, fl0, fl1, types.float32,
                     wx, out)

    def codegen(context, builder, signature, args):
        aty = signature.args

        def data(i):
            return context.make_array(aty[i])(context, builder, args[i]).data

        def at(ptr, index):
            return builder.gep(ptr, [index])

        def scalar(i, x):
            return builder.load(at(data(i), x))

        p0, p1, pout = data(0), data(1), data(15)
        width = builder.extract_value(context.make_array(aty[0])(context, builder, args[0]).shape, 1)
        yy, xx0 = args[2], args[3]
        five = ir.Constant(_I64, 5)
        row5 = builder.mul(width, five)  # floats per row
        half = splat(builder, ir.Constant(_F32, 0.5))
        first2 = lane_mask(2)
        base = builder.mul(builder.add(builder.mul(yy, width), xx0), five)  # r0[y, x0] / out[y, x0]
        vals = []
        for j in range(_LANES):
            x = builder.add(xx0, ir.Constant(_I64, j))
            x1, y1 = scalar(4, x), scalar(5, x)
            top = builder.mul(builder.add(builder.mul(y1, width), x1), five)
            P = _load5(builder, at(p1, top))
            Q = _load5(builder, at(p1, builder.add(top, five)))
            R = _load5(builder, at(p1, builder.add(top, row5)))
            S = _load5(builder, at(p1, builder.add(builder.add(top, row5), five)))
            # w00 p + w01 q + w10 r + w11 s: LLVM fuses the first product of a sum of two, then each next one
            s = builder.fmul(splat(builder, scalar(7, x)), Q)
            s = fma(builder, splat(builder, scalar(6, x)), P, s)
            s = fma(builder, splat(builder, scalar(8, x)), R, s)
            s = fma(builder, splat(builder, scalar(9, x)), S, s)
            C = _load5(builder, at(p0, builder.add(base, builder.mul(ir.Constant(_I64, j), five))))
            # lanes 2-4 (A's): + outside * c (fused); lanes 0-1 (b's): the blend alone
            s = builder.select(first2, s, fma(builder, splat(builder, scalar(10, x)), C, s))
            vals.append(builder.select(first2, builder.fsub(C, s), builder.fmul(builder.fadd(C, s), half)))
        d0, d1, a11, a22, a12 = transpose8(builder, vals)[:5]  # c0 - s0, c1 - s1, A11, A22, A12 per pixel
        dx = load(builder, at(data(11), xx0))
        dy = load(builder, at(data(12), xx0))
        wgt = builder.fmul(splat(builder, args[13]), load(builder, at(data(14), xx0)))
        # delta b = (c - s) / 2 + A d, weighted (the scalar kernel's contraction: see the module docstring)
        db1 = builder.fmul(fma(builder, a12, dy, fma(builder, a11, dx, builder.fmul(d0, half))), wgt)
        db2 = builder.fmul(fma(builder, a22, dy, fma(builder, d1, half, builder.fmul(a12, dx))), wgt)
        a11 = builder.fmul(a11, wgt)
        a22 = builder.fmul(a22, wgt)
        a12 = builder.fmul(a12, wgt)
        a12sq = builder.fmul(a12, a12)
        terms = [fma(builder, a11, a11, a12sq),  # G = A^T A
                 builder.fmul(a12, builder.fadd(a11, a22)),
                 fma(builder, a22, a22, a12sq),
                 fma(builder, a11, db1, builder.fmul(a12, db2)),  # h = A^T delta b
                 fma(builder, a12, db1, builder.fmul(a22, db2))]
        undef = ir.Constant(_VEC, ir.Undefined)
        per_pixel = transpose8(builder, terms + [undef] * 3)
        for j in range(_LANES):
            _store5(builder, per_pixel[j], at(pout, builder.add(base, ir.Constant(_I64, 5 * j))))
        return context.get_dummy_value()

    return sig, codegen


# ------------------------------------------------------------------------------------------ polynomial expansion
def _taps(context, builder, aryty, ary, n):
    """Splats of ``ary[0] .. ary[n]`` (a filter's taps)."""
    data = context.make_array(aryty)(context, builder, ary).data
    return [splat(builder, builder.load(builder.gep(data, [ir.Constant(_I64, t)]))) for t in range(n + 1)]


def _taps_literal(n):
    return n.literal_value if isinstance(n, types.IntegerLiteral) and 1 <= n.literal_value <= 16 else None


@intrinsic
def poly_vertical8(typingctx, img, y, n, g, tg, ttg, v0, v1, v2):
    """The vertical pass of ``_farneback_nb.poly_expand`` for row ``y``, eight columns at a time:
    ``v0[n + x] = g0 f(x, y) + sum_t g_t (f(x, y+t) + f(x, y-t))``, ``v2`` with ``t^2 g_t``, ``v1`` with
    ``t g_t (f(x, y+t) - f(x, y-t))`` (rows replicated at the border), each sum a chain of fused multiply-adds in
    t order from ``g0 f`` (``v0``) or +0 (``v1``, ``v2``): the scalar kernel's numbers. ``n`` an integer literal
    (the taps ``g, tg, ttg`` have n + 1 entries); ``img`` (h, w) and the (w + 2n,) rows C-contiguous float32."""
    nn = _taps_literal(n)
    f32_1d = all(is_array(a, types.float32, 1) for a in (g, tg, ttg, v0, v1, v2))
    if nn is None or not (is_array(img, types.float32, 2) and f32_1d):
        return None
    sig = types.void(img, types.intp, n, g, tg, ttg, v0, v1, v2)

    def codegen(context, builder, signature, args):
        aty = signature.args
        arr = context.make_array(aty[0])(context, builder, args[0])
        h = builder.extract_value(arr.shape, 0)
        width = builder.extract_value(arr.shape, 1)
        yy = args[1]
        G, TG, TTG = (_taps(context, builder, aty[i], args[i], nn) for i in (3, 4, 5))
        out = [context.make_array(aty[i])(context, builder, args[i]).data for i in (6, 7, 8)]
        one = ir.Constant(_I64, 1)

        def row(index):
            return builder.gep(arr.data, [builder.mul(index, width)])

        def clamp_row(t):
            below = builder.add(yy, ir.Constant(_I64, t))
            last = builder.sub(h, one)
            above = builder.sub(yy, ir.Constant(_I64, t))
            return (row(builder.select(builder.icmp_signed("<", below, last), below, last)),
                    row(builder.select(builder.icmp_signed(">", above, ir.Constant(_I64, 0)), above,
                                       ir.Constant(_I64, 0))))

        rows = [clamp_row(t) for t in range(1, nn + 1)]
        centre = row(yy)
        pad = ir.Constant(_I64, nn)

        def emit(x0, mask, rem):
            a0 = builder.fmul(G[0], load(builder, builder.gep(centre, [x0]), mask))
            a1 = a2 = zeros()
            for t, (pa, pb) in enumerate(rows, start=1):
                ra = load(builder, builder.gep(pa, [x0]), mask)
                rb = load(builder, builder.gep(pb, [x0]), mask)
                s = builder.fadd(ra, rb)
                a0 = fma(builder, G[t], s, a0)
                a2 = fma(builder, TTG[t], s, a2)
                a1 = fma(builder, TG[t], builder.fsub(ra, rb), a1)
            at = builder.add(pad, x0)
            for dst, val in zip(out, (a0, a1, a2)):
                store(builder, val, builder.gep(dst, [at]), mask)

        in_eights(builder, width, emit)
        return context.get_dummy_value()

    return sig, codegen


@intrinsic
def poly_horizontal8(typingctx, v0, v1, v2, n, g, tg, ttg, coef, out, y):
    """The horizontal pass and the coefficients of ``_farneback_nb.poly_expand`` for row ``y``, eight pixels at a
    time: the moments ``m_ij(x) = sum_s g(s) s^i v_j(x + s)`` (chains of fused multiply-adds in t order from
    ``g0 v_j(x)`` or +0), then ``out[y, x] = [m10 c0, m01 c0, fma(q12, m02, fma(q10, m00, q11 m20)), (the same with
    q2*), m11 c1]`` (``coef = [c0, c1, q10, q11, q12, q20, q21, q22]``): the scalar kernel's numbers. The padded
    rows ``v0 .. v2`` (w + 2n,), ``out`` (h, w, 5); ``n`` an integer literal."""
    nn = _taps_literal(n)
    f32_1d = all(is_array(a, types.float32, 1) for a in (v0, v1, v2, g, tg, ttg, coef))
    if nn is None or not (f32_1d and is_array(out, types.float32, 3)):
        return None
    sig = types.void(v0, v1, v2, n, g, tg, ttg, coef, out, types.intp)

    def codegen(context, builder, signature, args):
        aty = signature.args
        src = [context.make_array(aty[i])(context, builder, args[i]).data for i in (0, 1, 2)]
        G, TG, TTG = (_taps(context, builder, aty[i], args[i], nn) for i in (4, 5, 6))
        c0, c1, q10, q11, q12, q20, q21, q22 = _taps(context, builder, aty[7], args[7], 7)
        oarr = context.make_array(aty[8])(context, builder, args[8])
        width = builder.extract_value(oarr.shape, 1)
        five = ir.Constant(_I64, 5)
        orow = builder.gep(oarr.data, [builder.mul(builder.mul(args[9], width), five)])
        undef = ir.Constant(_VEC, ir.Undefined)

        def emit(x0, mask, rem):
            k = builder.add(x0, ir.Constant(_I64, nn))

            def at(j, offset):
                return load(builder, builder.gep(src[j], [builder.add(k, ir.Constant(_I64, offset))]), mask)

            m00 = builder.fmul(G[0], at(0, 0))
            m01 = builder.fmul(G[0], at(1, 0))
            m02 = builder.fmul(G[0], at(2, 0))
            m10 = m20 = m11 = zeros()
            for t in range(1, nn + 1):
                a, b = at(0, t), at(0, -t)
                s = builder.fadd(a, b)
                m00 = fma(builder, G[t], s, m00)
                m20 = fma(builder, TTG[t], s, m20)
                m10 = fma(builder, TG[t], builder.fsub(a, b), m10)
                a, b = at(1, t), at(1, -t)
                m01 = fma(builder, G[t], builder.fadd(a, b), m01)
                m11 = fma(builder, TG[t], builder.fsub(a, b), m11)
                m02 = fma(builder, G[t], builder.fadd(at(2, t), at(2, -t)), m02)
            coefs = [builder.fmul(m10, c0), builder.fmul(m01, c0),
                     fma(builder, q12, m02, fma(builder, q10, m00, builder.fmul(q11, m20))),
                     fma(builder, q22, m02, fma(builder, q20, m00, builder.fmul(q21, m20))),
                     builder.fmul(m11, c1)]
            per_pixel = transpose8(builder, coefs + [undef] * 3)
            for j in range(_LANES):
                ptr = builder.gep(orow, [builder.mul(builder.add(x0, ir.Constant(_I64, j)), five)])
                if mask is None:
                    _store5(builder, per_pixel[j], ptr)
                else:
                    with builder.if_then(builder.icmp_signed(">", rem, ir.Constant(_I64, j))):
                        _store5(builder, per_pixel[j], ptr)

        in_eights(builder, width, emit)
        return context.get_dummy_value()

    return sig, codegen


@intrinsic
def fma32(typingctx, a, b, c):
    """``a * b + c`` of three float32 scalars rounded once (``llvm.fma.f32``; LLVM vectorises it in loops): the
    window sums' multiply-adds written down, so that every compiled context fuses the same products (left to
    contraction, LLVM's choice in ``(a + b) * k + c * m`` changed with the function around the loop)."""
    f32 = types.float32
    if not (a == f32 and b == f32 and c == f32):
        return None

    def codegen(context, builder, signature, args):
        fn = declare(builder, "llvm.fma.f32", ir.FunctionType(_F32, [_F32] * 3))
        return builder.call(fn, args)

    return f32(f32, f32, f32), codegen
