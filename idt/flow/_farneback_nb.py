r"""Numba kernels of Farnebäck's two-frame motion estimation (Farnebäck, SCIA 2003).

Polynomial expansion. Around every pixel the image is approximated, in the weighted least-squares sense with a
separable Gaussian applicability :math:`a(\mathbf{t}) = g(t_x) g(t_y)`, :math:`g(t) = e^{-t^2 / 2\sigma^2}`,
:math:`|t| \le n`, by :math:`f(\mathbf{t}) \approx \mathbf{t}^T A \mathbf{t} + \mathbf{b}^T \mathbf{t} + c`.
With the moments :math:`m_{ij} = \sum a(\mathbf{t})\, t_x^i t_y^j f` (separable filtering, :func:`poly_expand`)
and the 1-D sums :math:`s_k = \sum_t g(t) t^k`, the basis functions decouple:

.. math:: b_x = m_{10} / (s_0 s_2),\quad b_y = m_{01} / (s_0 s_2),\quad
          A_{12} = \tfrac12 m_{11} / s_2^2,\quad
          (c, A_{11}, A_{22})^T = Q^{-1} (m_{00}, m_{20}, m_{02})^T,

:math:`Q = [[s_0^2, s_0 s_2, s_0 s_2], [s_0 s_2, s_0 s_4, s_2^2], [s_0 s_2, s_2^2, s_0 s_4]]`.
The expansion of a frame is stored as ``R (h, w, 5) = [b_x, b_y, A_11, A_22, A_12]``.

Displacement. For a prior displacement :math:`\tilde d(\mathbf{x})`, with :math:`\tilde{\mathbf{x}} = \mathbf{x} +
\tilde d`,

.. math:: A = \tfrac12 (A_1(\mathbf{x}) + A_2(\tilde{\mathbf{x}})),\qquad
          \Delta b = -\tfrac12 (b_2(\tilde{\mathbf{x}}) - b_1(\mathbf{x})) + A \tilde d,

and :math:`d = (\sum_w A^T A)^{-1} \sum_w A^T \Delta b` over a window :math:`w` around each pixel.
:func:`update_matrices` writes the per-pixel terms ``M (h, w, 5) = [G11, G12, G22, h1, h2]`` of
:math:`G = A^T A` and :math:`h = A^T \Delta b` (down-weighted on a 5-pixel border, as OpenCV does); M is summed
over the window (:func:`window_sum`, ``cv2.sepFilter2D``'s numbers) and :func:`solve_flow` solves the 2x2 systems
(with 1e-3 added to the determinant). The extractor runs one iteration as one kernel, :func:`window_solve`: the
window sum, the solve and the next iteration's terms in one pass over the rows.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from idtfv.idt.flow._farneback_simd_nb import fma32, poly_horizontal8, poly_vertical8, update_terms8
from idtfv.llvm_ir import wide_vectors

#: SHA-256 of the kernel modules this one's cached kernels compile in. Numba keys a kernel's cache by the bytes of
#: its own file only: a change to a dependency must change this file too, or the old machine code stays in use
#: (``tests/test_kernel_caches.py`` checks the digests).
KERNEL_DEPENDENCIES = {"_farneback_simd_nb.py": "8a423afd3f068837f4190c8dd8269a6345f9a7d0044f502c755fc877f8585d59",
                       "llvm_ir.py": "c1aafaf28705aa778677439055f65b3deecf5aa9526143717849da068b96689b"}

__all__ = ["poly_expand", "update_matrices", "solve_flow", "solve_and_update", "window_sum", "window_solve",
           "BORDER_WEIGHTS"]

#: Weights of the first pixels from the image border in the displacement equations, OpenCV's (and LEAR's copy):
#: the expansion there is extrapolated and unreliable. (0.8181, 1.0 for the last two before: with OpenCV's numbers
#: the trajectory-shape profile on the tree clip went from 0.93 to 0.95 correlation with LEAR's.)
BORDER_WEIGHTS = np.array([0.14, 0.14, 0.4472, 0.4472, 0.4472], dtype=np.float32)

#: Numba flags of the per-pixel kernels: only FMA contraction (``a * b + c`` rounded once), which is at least as
#: accurate as separate rounding and makes the bilinear gathers about 25% faster; no reassociation, NaN or
#: infinity assumptions.
_FM = {"contract"}

#: Numba options of the passes that take every array from an allocating caller: no reference counting
#: (``_nrt=False``). Array views and arrays handed to inlined helpers otherwise cost two atomic reference-count
#: updates each that Numba's pruning leaves in the row loops; these passes allocate nothing and let no array
#: escape. (The window sums' multiply-adds are explicit, :func:`fma32`: left to contraction, LLVM fused other
#: products once the row pass moved into such a function, changing 9% of the flow's pixels in the last bits.)
_NO_REFCOUNTS = {"_nrt": False}

#: Regulariser added to det(G) so that flat regions give a zero (not undefined) displacement.
DET_EPS = 1e-3


@njit(cache=True, nogil=True)
def poly_expand(img, g, tg, ttg, inv_s0s2, inv_2s22, q10, q11, q12, q20, q21, q22, out):
    """Polynomial expansion of an image, separable filtering and coefficients fused, row by row: for n = 5 and 7
    (the extractor's ``poly_n``) eight pixels per vector step (:func:`_poly_expand8`), else one pass per tap
    (:func:`_poly_expand_rows`); the same numbers.

    Parameters
    ----------
    img : (h, w) float32
        Image; borders are replicated.
    g, tg, ttg : (n+1,) float32
        :math:`g(t)`, :math:`t g(t)`, :math:`t^2 g(t)` for t = 0..n (the applicability is symmetric).
    inv_s0s2, inv_2s22 : float
        :math:`1/(s_0 s_2)` and :math:`1/(2 s_2^2)`.
    q10..q22 : float
        Rows 1 and 2 of :math:`Q^{-1}`.
    out : (h, w, 5) float32
        ``[b_x, b_y, A_11, A_22, A_12]``.
    """
    n = g.shape[0] - 1
    if n == 5 or n == 7:
        _poly_expand8(img, g, tg, ttg, np.array([inv_s0s2, inv_2s22, q10, q11, q12, q20, q21, q22], np.float32),
                      out, n)
    else:
        _poly_expand_rows(img, g, tg, ttg, inv_s0s2, inv_2s22, q10, q11, q12, q20, q21, q22, out)


@njit(cache=True, fastmath=_FM, nogil=True)
def _poly_expand_rows(img, g, tg, ttg, inv_s0s2, inv_2s22, q10, q11, q12, q20, q21, q22, out):
    """:func:`poly_expand` for any n, one pass over the row per tap (the scalar form of the same sums)."""
    h, w = img.shape
    n = g.shape[0] - 1
    wp = w + 2 * n
    # vertical moments of a row, padded by n on each side; horizontal moments of a row
    v0 = np.empty(wp, np.float32)
    v1 = np.empty(wp, np.float32)
    v2 = np.empty(wp, np.float32)
    m00 = np.empty(w, np.float32)
    m10 = np.empty(w, np.float32)
    m01 = np.empty(w, np.float32)
    m20 = np.empty(w, np.float32)
    m02 = np.empty(w, np.float32)
    m11 = np.empty(w, np.float32)
    c0 = np.float32(inv_s0s2)
    c1 = np.float32(inv_2s22)
    f10, f11, f12 = np.float32(q10), np.float32(q11), np.float32(q12)
    f20, f21, f22 = np.float32(q20), np.float32(q21), np.float32(q22)
    # Loops are split so that each touches few arrays: LLVM then vectorises them (its runtime alias checks are
    # bounded); this is 4x faster than one loop updating all moments.
    for y in range(h):
        # vertical pass, symmetric pairs of rows (replicated at the border): v_j(x) = sum_t g(t) t^j f(x, y + t)
        g0 = g[0]
        row = img[y]
        c0v = v0[n:n + w]
        c1v = v1[n:n + w]
        c2v = v2[n:n + w]
        for x in range(w):
            c0v[x] = g0 * row[x]
        c1v[:] = 0.0
        c2v[:] = 0.0
        for t in range(1, n + 1):
            ra = img[min(y + t, h - 1)]
            rb = img[max(y - t, 0)]
            gt = g[t]
            tgt = tg[t]
            ttgt = ttg[t]
            for x in range(w):
                s = ra[x] + rb[x]
                c0v[x] += gt * s
                c2v[x] += ttgt * s
            for x in range(w):
                c1v[x] += tgt * (ra[x] - rb[x])
        for i in range(n):  # replicate the border columns
            v0[i] = v0[n]
            v1[i] = v1[n]
            v2[i] = v2[n]
            v0[n + w + i] = v0[n + w - 1]
            v1[n + w + i] = v1[n + w - 1]
            v2[n + w + i] = v2[n + w - 1]
        # horizontal pass: m_ij(x) = sum_s g(s) s^i v_j(x + s)
        for x in range(w):
            m00[x] = g0 * c0v[x]
            m01[x] = g0 * c1v[x]
            m02[x] = g0 * c2v[x]
        m10[:] = 0.0
        m20[:] = 0.0
        m11[:] = 0.0
        for t in range(1, n + 1):
            gt = g[t]
            tgt = tg[t]
            ttgt = ttg[t]
            pa = v0[n + t:n + t + w]
            pb = v0[n - t:n - t + w]
            for x in range(w):
                a = pa[x]
                b = pb[x]
                m00[x] += gt * (a + b)
                m20[x] += ttgt * (a + b)
                m10[x] += tgt * (a - b)
            pa = v1[n + t:n + t + w]
            pb = v1[n - t:n - t + w]
            for x in range(w):
                a = pa[x]
                b = pb[x]
                m01[x] += gt * (a + b)
                m11[x] += tgt * (a - b)
            pa = v2[n + t:n + t + w]
            pb = v2[n - t:n - t + w]
            for x in range(w):
                m02[x] += gt * (pa[x] + pb[x])
        o = out[y]  # coefficients from the moments
        for x in range(w):
            o[x, 0] = m10[x] * c0
            o[x, 1] = m01[x] * c0
            o[x, 2] = f10 * m00[x] + f11 * m20[x] + f12 * m02[x]
            o[x, 3] = f20 * m00[x] + f21 * m20[x] + f22 * m02[x]
            o[x, 4] = m11[x] * c1


@njit(cache=True, inline="always")
def _replicate_border(v, n, w):
    """The n padding values on each side of a padded row ``v`` (w + 2n,): its first and last values."""
    for i in range(n):
        v[i] = v[n]
        v[n + w + i] = v[n + w - 1]


@njit(cache=True, nogil=True)
def _poly_expand8(img, g, tg, ttg, coef, out, n):
    """:func:`poly_expand` for n = 5 or 7 with the passes of each row in vector registers
    (``_farneback_simd_nb.poly_vertical8`` / ``poly_horizontal8``, the taps unrolled for the literal n): the same
    numbers, bit for bit; ``coef`` = ``[1/(s0 s2), 1/(2 s2^2), q10, q11, q12, q20, q21, q22]`` as float32."""
    h, w = img.shape
    wp = w + 2 * n
    v0 = np.empty(wp, np.float32)
    v1 = np.empty(wp, np.float32)
    v2 = np.empty(wp, np.float32)
    for y in range(h):
        if n == 5:
            poly_vertical8(img, y, 5, g, tg, ttg, v0, v1, v2)
        else:
            poly_vertical8(img, y, 7, g, tg, ttg, v0, v1, v2)
        _replicate_border(v0, n, w)
        _replicate_border(v1, n, w)
        _replicate_border(v2, n, w)
        if n == 5:
            poly_horizontal8(v0, v1, v2, 5, g, tg, ttg, coef, out, y)
        else:
            poly_horizontal8(v0, v1, v2, 7, g, tg, ttg, coef, out, y)


@njit(cache=True, fastmath=_FM)
def _column_weights(border, w):
    wx = np.ones(w, np.float32)
    for x in range(min(border.shape[0], w)):
        wx[x] *= border[x]
        wx[w - 1 - x] *= border[x]
    return wx


@njit(cache=True, inline="always", fastmath=_FM)
def _sample_weights(fx, fy, wm1, hm1, w, h):
    """Where and how pixel (x, y) samples the second frame at ``(fx, fy) = (x, y) + d``: the top-left corner
    ``(x1, y1)`` of its 2x2 neighbourhood, the four bilinear weights and ``outside`` (1.0 where x + d leaves the
    image, else 0.0). ``wm1``, ``hm1``: ``float32(w - 1)``, ``float32(h - 1)``. Products only (nothing for FMA
    contraction to fuse), so callers may store the results and finish the pixel later with the same bits."""
    one = np.float32(1.0)
    zero = np.float32(0.0)
    # r1 sampled bilinearly at x + d; where x + d leaves the image (its 2x2 neighbourhood is not inside), the
    # second frame contributes nothing (b2 = 0, A = A1), as OpenCV's and LEAR's update step does. Branch-free
    # (clamped sampling weighted by a 0/1 "inside" factor) so that the loop vectorises.
    # 1.0 inside, 0.0 outside, as arithmetic (selects here cost ~25 % of the flow time)
    # (a point exactly on the last row/column counts as inside, so identical frames give exactly zero flow)
    inside = np.float32((fx >= zero) & (fx <= wm1) & (fy >= zero) & (fy <= hm1))
    fx = min(max(fx, zero), wm1)
    fy = min(max(fy, zero), hm1)
    x1 = min(int(fx), w - 2)
    y1 = min(int(fy), h - 2)
    ax = fx - np.float32(x1)
    ay = fy - np.float32(y1)
    return (x1, y1, (one - ax) * (one - ay) * inside, ax * (one - ay) * inside, (one - ax) * ay * inside,
            ax * ay * inside, one - inside)


@njit(cache=True, inline="always", fastmath=_FM)
def _terms_at(r0, r1, y, x, x1, xq, y1, yq, w00, w01, w10, w11, outside, dx, dy, wgt, out):
    """Write ``[G11, G12, G22, h1, h2]`` of pixel (y, x) into ``out[y, x]`` from its samples of the second frame
    (:func:`_sample_weights`; ``xq = x1 + 1``, ``yq = y1 + 1``) and the prior displacement (dx, dy)."""
    half = np.float32(0.5)
    p = r1[y1, x1]
    q = r1[y1, xq]
    r = r1[yq, x1]
    s = r1[yq, xq]
    c = r0[y, x]
    s0 = w00 * p[0] + w01 * q[0] + w10 * r[0] + w11 * s[0]
    s1 = w00 * p[1] + w01 * q[1] + w10 * r[1] + w11 * s[1]
    s2 = w00 * p[2] + w01 * q[2] + w10 * r[2] + w11 * s[2] + outside * c[2]
    s3 = w00 * p[3] + w01 * q[3] + w10 * r[3] + w11 * s[3] + outside * c[3]
    s4 = w00 * p[4] + w01 * q[4] + w10 * r[4] + w11 * s[4] + outside * c[4]
    a11 = (c[2] + s2) * half  # A = (A1(x) + A2(x + d)) / 2
    a22 = (c[3] + s3) * half
    a12 = (c[4] + s4) * half
    db1 = ((c[0] - s0) * half + a11 * dx + a12 * dy) * wgt  # delta b = -(b2 - b1) / 2 + A d
    db2 = ((c[1] - s1) * half + a12 * dx + a22 * dy) * wgt
    a11 *= wgt
    a22 *= wgt
    a12 *= wgt
    o = out[y, x]
    o[0] = a11 * a11 + a12 * a12  # G = A^T A
    o[1] = a12 * (a11 + a22)
    o[2] = a22 * a22 + a12 * a12
    o[3] = a11 * db1 + a12 * db2  # h = A^T delta b
    o[4] = a12 * db1 + a22 * db2


@njit(cache=True, inline="always", fastmath=_FM)
def _pixel_terms(r0, r1, y, x, dx, dy, wgt, out):
    """Write ``[G11, G12, G22, h1, h2]`` of pixel (y, x) for the prior displacement (dx, dy) into ``out[y, x]``."""
    h, w = r0.shape[0], r0.shape[1]
    x1, y1, w00, w01, w10, w11, outside = _sample_weights(np.float32(x) + dx, np.float32(y) + dy,
                                                          np.float32(w - 1), np.float32(h - 1), w, h)
    _terms_at(r0, r1, y, x, x1, x1 + 1, y1, y1 + 1, w00, w01, w10, w11, outside, dx, dy, wgt, out)


@njit(cache=True, inline="always", fastmath=_FM)
def _row_weight(border, y, h):
    wy = np.float32(1.0)
    if y < border.shape[0]:
        wy *= border[y]
    if h - 1 - y < border.shape[0]:
        wy *= border[h - 1 - y]
    return wy


@njit(cache=True, inline="always", fastmath=_FM)
def _update_scratch(border, w):
    """What :func:`_update_row` needs for rows of width ``w``: the column weights (:func:`_column_weights`), then
    (w,) scratch for one row's top-left sample of r1 (x1, y1; unsigned, >= 0: indexing skips the negative-index
    wraparound), its four bilinear weights and 1 - inside."""
    return (_column_weights(border, w), np.empty(w, np.uint64), np.empty(w, np.uint64), np.empty(w, np.float32),
            np.empty(w, np.float32), np.empty(w, np.float32), np.empty(w, np.float32), np.empty(w, np.float32))


@njit(cache=True, inline="always", fastmath=_FM)
def _update_row(r0, r1, flow, border, y, wx, xs, ys, c00, c01, c10, c11, cout, out):
    """Row y of :func:`update_matrices` into ``out[y]`` (``wx`` .. ``cout``: :func:`_update_scratch`)."""
    h, w = r0.shape[0], r0.shape[1]
    wm1 = np.float32(w - 1)
    hm1 = np.float32(h - 1)
    one = np.uint64(1)
    wy = _row_weight(border, y, h)
    fl0 = flow[0, y]
    fl1 = flow[1, y]
    fyy = np.float32(y)
    for x in range(w):  # the sampling of every pixel of the row (products only: vectorises)
        x1, y1, c00[x], c01[x], c10[x], c11[x], cout[x] = _sample_weights(np.float32(x) + fl0[x],
                                                                          fyy + fl1[x], wm1, hm1, w, h)
        xs[x] = x1
        ys[x] = y1
    w8 = w - w % 8
    for x0 in range(0, w8, 8):  # then the gathers and the terms, eight pixels at a time
        update_terms8(r0, r1, y, x0, xs, ys, c00, c01, c10, c11, cout, fl0, fl1, wy, wx, out)
    for x in range(w8, w):
        x1 = xs[x]
        y1 = ys[x]
        _terms_at(r0, r1, y, x, x1, x1 + one, y1, y1 + one, c00[x], c01[x], c10[x], c11[x], cout[x], fl0[x],
                  fl1[x], wy * wx[x], out)


@njit(cache=True, fastmath=_FM, nogil=True)
def update_matrices(r0, r1, flow, border, out):
    """Per-pixel normal-equation terms of the displacement for the prior ``flow``.

    The terms of :func:`_terms_at` at every pixel, in two passes per row: the sampling positions and bilinear
    weights of the whole row first (element-wise: the loop vectorises), then the gathers from ``r1`` and the terms,
    eight pixels per vector step (``_farneback_simd_nb.update_terms8``, whose multiply-adds are those LLVM fused in
    the scalar loop, written down; the last ``w mod 8`` pixels through :func:`_terms_at`). The split is where no
    product feeds a sum (nothing FMA contraction could fuse across it). ``tests/test_farneback.py`` checks every
    pixel against a NumPy emulation of the operations.

    Parameters
    ----------
    r0, r1 : (h, w, 5) float32
        Expansions of the first (previous) and second (current) frame, h, w >= 2.
    flow : (2, h, w) float32
        Prior displacement :math:`\\tilde d`, planes x and y, in pixels; r1 is sampled bilinearly at x + d̃
        (outside the image: b2 = 0, A = A1, as OpenCV).
    border : (k,) float32
        Weights of the first k pixels from each border (1 inside).
    out : (h, w, 5) float32
        ``[G11, G12, G22, h1, h2]``.
    """
    wx, xs, ys, c00, c01, c10, c11, cout = _update_scratch(border, r0.shape[1])
    _update_rows(r0, r1, flow, border, wx, xs, ys, c00, c01, c10, c11, cout, out)


@njit(cache=True, fastmath=_FM, nogil=True, **_NO_REFCOUNTS)
def _update_rows(r0, r1, flow, border, wx, xs, ys, c00, c01, c10, c11, cout, out):
    """:func:`update_matrices`' rows with its scratch arrays; allocates nothing."""
    wide_vectors()
    for y in range(r0.shape[0]):
        _update_row(r0, r1, flow, border, y, wx, xs, ys, c00, c01, c10, c11, cout, out)


@njit(cache=True, inline="always", fastmath=_FM)
def _solve_pixel(m, y, x, det_eps):
    g11 = np.float64(m[y, x, 0])
    g12 = np.float64(m[y, x, 1])
    g22 = np.float64(m[y, x, 2])
    h1 = np.float64(m[y, x, 3])
    h2 = np.float64(m[y, x, 4])
    idet = 1.0 / (g11 * g22 - g12 * g12 + det_eps)
    return np.float32((g22 * h1 - g12 * h2) * idet), np.float32((g11 * h2 - g12 * h1) * idet)


@njit(cache=True, fastmath=_FM, nogil=True)
def solve_flow(m, det_eps, flow):
    """Solve :math:`G d = h` at every pixel from the window-summed terms.

    Parameters
    ----------
    m : (h, w, 5) float32
        Window-summed ``[G11, G12, G22, h1, h2]``.
    det_eps : float
        Added to det(G).
    flow : (2, h, w) float32
        Output displacement, planes x and y.
    """
    h, w = m.shape[0], m.shape[1]
    for y in range(h):
        for x in range(w):
            dx, dy = _solve_pixel(m, y, x, det_eps)
            flow[0, y, x] = dx
            flow[1, y, x] = dy


@njit(cache=True, fastmath=_FM, nogil=True)
def solve_and_update(m, det_eps, r0, r1, border, flow, out):
    """:func:`solve_flow` then :func:`update_matrices` at the new flow, fused in one pass over the pixels (the
    same numbers; the extractor calls the two kernels instead, which take half the time of this one).

    ``m`` (window-summed terms) is read, ``flow`` receives the solution and ``out`` the new per-pixel terms;
    ``out`` must not be ``m``.
    """
    h, w = m.shape[0], m.shape[1]
    wx = _column_weights(border, w)
    for y in range(h):
        wy = _row_weight(border, y, h)
        for x in range(w):
            dx, dy = _solve_pixel(m, y, x, det_eps)
            flow[0, y, x] = dx
            flow[1, y, x] = dy
            _pixel_terms(r0, r1, y, x, dx, dy, wy * wx[x], out)


# ------------------------------------------------------------------------------------------ window sums (fused)
@njit(cache=True, inline="always", fastmath=_FM)
def _row_taps(src, k, dst):
    """``dst[i] = sum_j src[i + 5 j] k[j]``, i < len(dst), summed tap by tap from j = 0 with one rounding per tap
    (``s = fma(src, k[j], s)`` from s = 0): the row pass over 5-channel pixels whose taps are all in ``src``."""
    nt = k.shape[0]
    n = dst.shape[0]
    zero = np.float32(0.0)
    if nt == 11:  # the extractor's window (winsize 10 or 11): one statement, one load per tap and one store
        s0, s1, s2, s3 = src[0:n], src[5:5 + n], src[10:10 + n], src[15:15 + n]
        s4, s5, s6, s7 = src[20:20 + n], src[25:25 + n], src[30:30 + n], src[35:35 + n]
        s8, s9, s10 = src[40:40 + n], src[45:45 + n], src[50:50 + n]
        k0, k1, k2, k3, k4, k5, k6, k7, k8, k9, k10 = k[0], k[1], k[2], k[3], k[4], k[5], k[6], k[7], k[8], k[9], k[10]
        for i in range(n):
            t = fma32(s0[i], k0, zero)
            t = fma32(s1[i], k1, t)
            t = fma32(s2[i], k2, t)
            t = fma32(s3[i], k3, t)
            t = fma32(s4[i], k4, t)
            t = fma32(s5[i], k5, t)
            t = fma32(s6[i], k6, t)
            t = fma32(s7[i], k7, t)
            t = fma32(s8[i], k8, t)
            t = fma32(s9[i], k9, t)
            dst[i] = fma32(s10[i], k10, t)
        return
    # other windows: taps eight (then four, two, one) at a time, added in order (nested FMAs: the roundings of one
    # tap per loop) with a fraction of the loads and stores of the sum
    j = 0
    while j + 8 <= nt:
        b = 5 * j
        s0, s1, s2, s3 = src[b:b + n], src[b + 5:b + 5 + n], src[b + 10:b + 10 + n], src[b + 15:b + 15 + n]
        s4, s5, s6, s7 = src[b + 20:b + 20 + n], src[b + 25:b + 25 + n], src[b + 30:b + 30 + n], src[b + 35:b + 35 + n]
        k0, k1, k2, k3, k4, k5, k6, k7 = k[j], k[j + 1], k[j + 2], k[j + 3], k[j + 4], k[j + 5], k[j + 6], k[j + 7]
        for i in range(n):
            t = fma32(s0[i], k0, zero if j == 0 else dst[i])
            t = fma32(s1[i], k1, t)
            t = fma32(s2[i], k2, t)
            t = fma32(s3[i], k3, t)
            t = fma32(s4[i], k4, t)
            t = fma32(s5[i], k5, t)
            t = fma32(s6[i], k6, t)
            dst[i] = fma32(s7[i], k7, t)
        j += 8
    if j == 0:
        for i in range(n):
            dst[i] = zero
    if j + 4 <= nt:
        b = 5 * j
        s0, s1, s2, s3 = src[b:b + n], src[b + 5:b + 5 + n], src[b + 10:b + 10 + n], src[b + 15:b + 15 + n]
        k0, k1, k2, k3 = k[j], k[j + 1], k[j + 2], k[j + 3]
        for i in range(n):
            dst[i] = fma32(s3[i], k3, fma32(s2[i], k2, fma32(s1[i], k1, fma32(s0[i], k0, dst[i]))))
        j += 4
    if j + 2 <= nt:
        b = 5 * j
        s0, s1 = src[b:b + n], src[b + 5:b + 5 + n]
        k0, k1 = k[j], k[j + 1]
        for i in range(n):
            dst[i] = fma32(s1[i], k1, fma32(s0[i], k0, dst[i]))
        j += 2
    if j < nt:
        b = 5 * j
        s0 = src[b:b + n]
        k0 = k[j]
        for i in range(n):
            dst[i] = fma32(s0[i], k0, dst[i])


@njit(cache=True, inline="always", fastmath=_FM)
def _window_row(src, k, w, pad, dst):
    """Row pass of one row of terms: ``dst[5x + c] = sum_j src[5 clamp(x + j - r) + c] k[j]`` (replicated
    border), summed tap by tap from j = 0 with one rounding per tap (``s = fma(src, k[j], s)`` from s = 0), as
    the CUDA kernel ``window_rows`` and OpenCV's vector row loop.

    ``src``, ``dst``: (w * 5,) float32; ``k``: (2r + 1,) float32; ``pad``: ((w + 2r) * 5,) float32 scratch, which
    receives the row with its end pixels replicated r times, so that every column is summed by the same loops
    over contiguous floats (which LLVM vectorises).
    """
    r = k.shape[0] // 2
    n = 5 * w
    inner = pad[5 * r:5 * r + n]
    for i in range(n):  # (a loop: Numba's slice assignment is 4x slower)
        inner[i] = src[i]
    for x in range(r):
        for c in range(5):
            pad[5 * x + c] = src[c]
            pad[5 * (r + w + x) + c] = src[n - 5 + c]
    _row_taps(pad, k, dst)


@njit(cache=True, inline="always", fastmath=_FM)
def _window_col(ring, y, h, k, out):
    """Column pass of output row y from the row-filtered rows in ``ring`` ((2r + 1, w * 5); row i in slot
    ``i % (2r + 1)``, rows y - r .. y + r clamped to the image present): ``s = row_y k[r]``, then
    ``s = fma(row_{y-j} + row_{y+j}, k[r + j], s)`` for j = 1..r, as the CUDA kernel ``window_cols`` and
    OpenCV's symmetric column loop. ``out``: (w * 5,) float32."""
    nr = ring.shape[0]
    r = k.shape[0] // 2
    n = out.shape[0]
    c = ring[y % nr]
    kr = k[r]
    if r == 5:  # the extractor's window: the five pairs in one statement
        a0, b0 = ring[max(y - 1, 0) % nr], ring[min(y + 1, h - 1) % nr]
        a1, b1 = ring[max(y - 2, 0) % nr], ring[min(y + 2, h - 1) % nr]
        a2, b2 = ring[max(y - 3, 0) % nr], ring[min(y + 3, h - 1) % nr]
        a3, b3 = ring[max(y - 4, 0) % nr], ring[min(y + 4, h - 1) % nr]
        a4, b4 = ring[max(y - 5, 0) % nr], ring[min(y + 5, h - 1) % nr]
        k0, k1, k2, k3, k4 = k[6], k[7], k[8], k[9], k[10]
        for i in range(n):
            t = fma32(a0[i] + b0[i], k0, c[i] * kr)  # the centre's product rounded alone
            t = fma32(a1[i] + b1[i], k1, t)
            t = fma32(a2[i] + b2[i], k2, t)
            t = fma32(a3[i] + b3[i], k3, t)
            out[i] = fma32(a4[i] + b4[i], k4, t)
        return
    for i in range(n):
        out[i] = c[i] * kr
    j = 1
    # pairs of rows four (then two, one) at a time per loop (nested FMAs: the roundings of one at a time)
    while j + 4 <= r + 1:
        a0, b0 = ring[max(y - j, 0) % nr], ring[min(y + j, h - 1) % nr]
        a1, b1 = ring[max(y - j - 1, 0) % nr], ring[min(y + j + 1, h - 1) % nr]
        a2, b2 = ring[max(y - j - 2, 0) % nr], ring[min(y + j + 2, h - 1) % nr]
        a3, b3 = ring[max(y - j - 3, 0) % nr], ring[min(y + j + 3, h - 1) % nr]
        k0, k1, k2, k3 = k[r + j], k[r + j + 1], k[r + j + 2], k[r + j + 3]
        for i in range(n):
            t = fma32(a0[i] + b0[i], k0, out[i])
            t = fma32(a1[i] + b1[i], k1, t)
            t = fma32(a2[i] + b2[i], k2, t)
            out[i] = fma32(a3[i] + b3[i], k3, t)
        j += 4
    if j + 2 <= r + 1:
        a0, b0 = ring[max(y - j, 0) % nr], ring[min(y + j, h - 1) % nr]
        a1, b1 = ring[max(y - j - 1, 0) % nr], ring[min(y + j + 1, h - 1) % nr]
        k0, k1 = k[r + j], k[r + j + 1]
        for i in range(n):
            out[i] = fma32(a1[i] + b1[i], k1, fma32(a0[i] + b0[i], k0, out[i]))
        j += 2
    if j <= r:
        a0, b0 = ring[max(y - j, 0) % nr], ring[min(y + j, h - 1) % nr]
        k0 = k[r + j]
        for i in range(n):
            out[i] = fma32(a0[i] + b0[i], k0, out[i])


@njit(cache=True, inline="always", fastmath=_FM)
def _window_col2(ring, y, h, k, out0, out1):
    """:func:`_window_col` of output rows y and y + 1 at once, for the 11-tap window (r = 5): the two rows share
    ten of their eleven row-filtered rows, so each is loaded once for both (12 loads per two sums instead of 22);
    each sum is the same expression as :func:`_window_col`'s. ``ring`` holds rows y - 5 .. y + 6 (clamped)."""
    nr = ring.shape[0]
    n = out0.shape[0]
    q0, q1 = ring[max(y - 5, 0) % nr], ring[max(y - 4, 0) % nr]
    q2, q3 = ring[max(y - 3, 0) % nr], ring[max(y - 2, 0) % nr]
    q4, q5 = ring[max(y - 1, 0) % nr], ring[y % nr]
    q6, q7 = ring[min(y + 1, h - 1) % nr], ring[min(y + 2, h - 1) % nr]
    q8, q9 = ring[min(y + 3, h - 1) % nr], ring[min(y + 4, h - 1) % nr]
    q10, q11 = ring[min(y + 5, h - 1) % nr], ring[min(y + 6, h - 1) % nr]
    kr, k0, k1, k2, k3, k4 = k[5], k[6], k[7], k[8], k[9], k[10]
    for i in range(n):
        t = fma32(q4[i] + q6[i], k0, q5[i] * kr)
        t = fma32(q3[i] + q7[i], k1, t)
        t = fma32(q2[i] + q8[i], k2, t)
        t = fma32(q1[i] + q9[i], k3, t)
        out0[i] = fma32(q0[i] + q10[i], k4, t)
        u = fma32(q5[i] + q7[i], k0, q6[i] * kr)
        u = fma32(q4[i] + q8[i], k1, u)
        u = fma32(q3[i] + q9[i], k2, u)
        u = fma32(q2[i] + q10[i], k3, u)
        out1[i] = fma32(q1[i] + q11[i], k4, u)


@njit(cache=True, fastmath=_FM, nogil=True)
def window_sum(m, k, out):
    """``cv2.sepFilter2D(m, -1, k, k, borderType=cv2.BORDER_REPLICATE)`` with the arithmetic of
    :func:`window_solve` (the same bits as its window sums; for tests and comparisons).

    Parameters
    ----------
    m : (h, w, 5) float32
        Terms.
    k : (2r + 1,) float32
        Symmetric window.
    out : (h, w, 5) float32
        Window sums; not ``m``.
    """
    h, w = m.shape[0], m.shape[1]
    n = 5 * w
    r = k.shape[0] // 2
    nr = 2 * r + 1
    mf = m.reshape(h, n)
    of = out.reshape(h, n)
    ring = np.empty((nr, n), np.float32)
    pad = np.empty(n + 10 * r, np.float32)
    for i in range(min(r, h - 1) + 1):
        _window_row(mf[i], k, w, pad, ring[i % nr])
    for y in range(h):
        if y > 0 and y + r < h:
            _window_row(mf[y + r], k, w, pad, ring[(y + r) % nr])
        _window_col(ring, y, h, k, of[y])


@njit(cache=True, fastmath=_FM, nogil=True, error_model="numpy")
def window_solve(m, k, det_eps, flow, r0, r1, border, update):
    """One Farnebäck iteration after the terms: window sum and 2x2 solve in one pass over the rows, and, if
    ``update``, the next iteration's terms at the new flow written back into ``m``.

    The numbers of :func:`window_sum` then :func:`solve_flow` (then :func:`update_matrices` at ``flow``), bit for
    bit, without the (h, w, 5) planes between the steps: a ring of the 2r + 2 row-filtered rows that the column
    pass of the current output rows needs (two at a time for the 11-tap window, which share ten of them:
    :func:`_window_col2`; one at a time otherwise); each output row is column-summed into one row, solved into
    ``flow``, and (``update``) its terms at the new flow overwrite ``m``'s row y, which the row pass has consumed
    (row y was row-filtered before output row y, and no later output row reads it from ``m``).

    Where :func:`solve_flow` would raise ``ZeroDivisionError`` (det(G) + ``det_eps`` exactly 0, which needs the
    float64 det(G) of a sum of A^T A, >= 0 but for rounding, to come out as exactly -``det_eps``), this kernel
    gives inf/NaN: it is compiled with NumPy's error model, without the per-pixel check that kept the solve loop
    from vectorising (4x slower).

    Parameters
    ----------
    m : (h, w, 5) float32
        Per-pixel terms ``[G11, G12, G22, h1, h2]`` (:func:`update_matrices`); with ``update``, on return the
        terms at the new ``flow``.
    k : (2r + 1,) float32
        Symmetric window (replicated border, as ``cv2.sepFilter2D(..., BORDER_REPLICATE)``).
    det_eps : float
        Added to det(G).
    flow : (2, h, w) float32
        Output displacement, planes x and y.
    r0, r1 : (h, w, 5) float32
        Expansions (read only with ``update``).
    border : (k,) float32
        :data:`BORDER_WEIGHTS` (read only with ``update``).
    update : bool
        Write the next iteration's terms into ``m``.
    """
    h, w = m.shape[0], m.shape[1]
    n = 5 * w
    r = k.shape[0] // 2
    nr = 2 * r + 2  # the rows two output rows need
    mf = m.reshape(h, n)
    ring = np.empty((nr, n), np.float32)
    pad = np.empty(n + 10 * r, np.float32)
    sums = np.empty((2, w, 5), np.float32)  # the current output rows' window sums
    s0 = sums[0].reshape(n)
    s1 = sums[1].reshape(n)
    wx, xs, ys, c00, c01, c10, c11, cout = _update_scratch(border, w)
    _window_solve_rows(m, k, det_eps, flow, r0, r1, border, update, mf, ring, pad, sums, s0, s1, wx, xs, ys, c00,
                       c01, c10, c11, cout)


@njit(cache=True, fastmath=_FM, nogil=True, error_model="numpy", **_NO_REFCOUNTS)
def _window_solve_rows(m, k, det_eps, flow, r0, r1, border, update, mf, ring, pad, sums, s0, s1, wx, xs, ys, c00,
                       c01, c10, c11, cout):
    """:func:`window_solve`'s pass over the rows with its scratch arrays; allocates nothing."""
    wide_vectors()
    h, w = m.shape[0], m.shape[1]
    r = k.shape[0] // 2
    nr = ring.shape[0]
    filtered = -1  # rows 0..filtered have been row-filtered into the ring
    y = 0
    while y < h:
        rows = 2 if r == 5 and y + 1 < h else 1  # the 11-tap window: two output rows per column pass
        while filtered < min(y + rows - 1 + r, h - 1):
            filtered += 1
            _window_row(mf[filtered], k, w, pad, ring[filtered % nr])
        if rows == 2:
            _window_col2(ring, y, h, k, s0, s1)
        else:
            _window_col(ring, y, h, k, s0)
        for j in range(rows):
            yy = y + j
            for x in range(w):
                dx, dy = _solve_pixel(sums, j, x, det_eps)
                flow[0, yy, x] = dx
                flow[1, yy, x] = dy
            if update:  # row yy of m was row-filtered (filtered >= yy): free to overwrite
                _update_row(r0, r1, flow, border, yy, wx, xs, ys, c00, c01, c10, c11, cout, m)
        y += rows
