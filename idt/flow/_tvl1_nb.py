r"""Numba kernels of the duality-based TV-L1 optical flow solver (CPU).

The energy (Zach, Pock & Bischof 2007; Sánchez, Meinhardt-Llopis & Facciolo, IPOL 2013) is

.. math::

    E(\mathbf u) = \int |\nabla u_1| + |\nabla u_2|
                   + \lambda\,|I_1(\mathbf x + \mathbf u) - I_0(\mathbf x)|\,d\mathbf x ,

linearised around the current warp :math:`\mathbf u_0`:
:math:`\rho(\mathbf u) = I_{1w} + \nabla I_{1w}\cdot(\mathbf u - \mathbf u_0) - I_0`
(``rho_c`` below is :math:`\rho` without the :math:`\nabla I_{1w}\cdot\mathbf u` term, ``grad`` is
:math:`|\nabla I_{1w}|^2`). One iteration of the solver is

1. thresholding (TH): :math:`\mathbf v = \mathbf u + \lambda\theta\nabla I_{1w}` if
   :math:`\rho < -\lambda\theta|\nabla I_{1w}|^2`, :math:`\mathbf u - \lambda\theta\nabla I_{1w}` if
   :math:`\rho > \lambda\theta|\nabla I_{1w}|^2`, otherwise :math:`\mathbf u - \rho\nabla I_{1w}/|\nabla I_{1w}|^2`;
2. primal step: :math:`u_d = v_d + \theta\,\mathrm{div}\,\mathbf p_d` (:math:`d = 1, 2`);
3. dual step (projection): :math:`\mathbf p_d \leftarrow (\mathbf p_d + \frac{\tau}{\theta}\nabla u_d) /
   (1 + \frac{\tau}{\theta}|\nabla u_d|)`,

with forward differences for :math:`\nabla` (zero on the last row/column) and the matching backward-difference
divergence. Steps 1-2 are fused in one pass over a row (``_primal_row``), step 3 in another (``_dual_row``); the
serial driver runs the dual step of row ``y-1`` right after the primal step of row ``y`` so each row is touched
while it is in cache (same numbers as two full passes).

All kernels assume validated, C-contiguous float32 arrays of one shape ``(h, w)``; validation happens in
:mod:`idtfv.idt.flow.tvl1`. ``iterate_serial`` / ``iterate_parallel`` are the same Python function compiled twice
(serial with ``cache=True``; ``parallel=True`` with ``prange`` over rows, not cached); ``iterate_py`` is the
uncompiled reference. Notes on speed and exactness:

* ``error_model="numpy"``: float division carries no zero-division branch, which lets LLVM vectorise the row
  loops (``vdivps``/``vsqrtps``); no division here can have a zero denominator.
* The dual step multiplies by one reciprocal instead of two divisions (1-ulp differences from OpenCV).
* The only ``fastmath`` flag is ``reassoc`` on the float64 row sums of :math:`\|\Delta\mathbf u\|^2` (the
  stopping test): vectorised and still deterministic; the flow arithmetic is strict IEEE.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit, prange

__all__ = [
    "resize_linear",
    "centered_gradient",
    "warp_linearise",
    "iterate_serial",
    "iterate_parallel",
    "iterate_py",
    "CUBIC_A",
]

#: Keys' cubic convolution parameter; -0.75 is OpenCV's ``INTER_CUBIC`` (Catmull-Rom would be -0.5).
CUBIC_A = -0.75

#: |grad I1w|^2 below this (float32 machine epsilon, as OpenCV) leaves the data step at zero.
_GRAD_FLOOR = np.float32(np.finfo(np.float32).eps)


@njit(cache=True, nogil=True, error_model="numpy")
def resize_linear(src, dst, scale_y, scale_x, factor):
    """Bilinear resize of ``src (sh, sw)`` into ``dst (dh, dw)``, times ``factor``.

    OpenCV's ``INTER_LINEAR`` sampling grid: source coordinate :math:`(x + 0.5) s - 0.5` with ``s`` the
    source/destination step (``scale_x``, ``scale_y``), taps clamped at the border. Written out (instead of calling
    ``cv2.resize``) so that the CPU and GPU pyramids are the same numbers.
    """
    sh, sw = src.shape
    dh, dw = dst.shape
    one = np.float32(1.0)
    for y in range(dh):
        fy = (y + 0.5) * scale_y - 0.5
        y0 = int(math.floor(fy))
        ty = np.float32(fy - y0)
        if y0 < 0:
            y0 = 0
            ty = np.float32(0.0)
        if y0 >= sh - 1:
            y0 = sh - 1
            ty = np.float32(0.0)
        y1 = min(y0 + 1, sh - 1)
        for x in range(dw):
            fx = (x + 0.5) * scale_x - 0.5
            x0 = int(math.floor(fx))
            tx = np.float32(fx - x0)
            if x0 < 0:
                x0 = 0
                tx = np.float32(0.0)
            if x0 >= sw - 1:
                x0 = sw - 1
                tx = np.float32(0.0)
            x1 = min(x0 + 1, sw - 1)
            top = src[y0, x0] * (one - tx) + src[y0, x1] * tx
            bot = src[y1, x0] * (one - tx) + src[y1, x1] * tx
            dst[y, x] = (top * (one - ty) + bot * ty) * factor


@njit(cache=True, nogil=True, error_model="numpy")
def centered_gradient(src, dx, dy):
    """Centred differences of ``src (h, w)`` into ``dx, dy (h, w)``.

    Interior: :math:`(f_{x+1} - f_{x-1})/2`; on the border the one-sided difference, also halved
    (IPOL 2013's convention). Needs ``h, w >= 2``.
    """
    h, w = src.shape
    half = np.float32(0.5)
    for y in range(h):
        ym = y - 1 if y > 0 else 0
        yp = y + 1 if y < h - 1 else h - 1
        for x in range(w):
            xm = x - 1 if x > 0 else 0
            xp = x + 1 if x < w - 1 else w - 1
            dx[y, x] = half * (src[y, xp] - src[y, xm])
            dy[y, x] = half * (src[yp, x] - src[ym, x])


@njit(cache=True, nogil=True, error_model="numpy")
def _cubic_weights(t, a):
    """Keys cubic-convolution weights of the four taps at offsets -1, 0, 1, 2 for a fraction ``t`` in [0, 1)."""
    t1 = t + 1.0
    w0 = ((a * t1 - 5.0 * a) * t1 + 8.0 * a) * t1 - 4.0 * a
    w1 = ((a + 2.0) * t - (a + 3.0)) * t * t + 1.0
    s = 1.0 - t
    w2 = ((a + 2.0) * s - (a + 3.0)) * s * s + 1.0
    w3 = 1.0 - w0 - w1 - w2
    return w0, w1, w2, w3


@njit(cache=True, nogil=True, error_model="numpy")
def _tap(img, r, c):
    """``img[r, c]``, or 0 outside the image (constant border)."""
    h, w = img.shape
    if r < 0 or r >= h or c < 0 or c >= w:
        return np.float32(0.0)
    return img[r, c]


@njit(cache=True, nogil=True, error_model="numpy")
def _cubic_row_in(img, r, ix, wx0, wx1, wx2, wx3):
    return wx0 * img[r, ix - 1] + wx1 * img[r, ix] + wx2 * img[r, ix + 1] + wx3 * img[r, ix + 2]


@njit(cache=True, nogil=True, error_model="numpy")
def _cubic_row_border(img, r, ix, wx0, wx1, wx2, wx3):
    return (wx0 * _tap(img, r, ix - 1) + wx1 * _tap(img, r, ix) + wx2 * _tap(img, r, ix + 1)
            + wx3 * _tap(img, r, ix + 2))


@njit(cache=True, nogil=True, error_model="numpy")
def _cubic_in(img, iy, ix, wx0, wx1, wx2, wx3, wy0, wy1, wy2, wy3):
    return (wy0 * _cubic_row_in(img, iy - 1, ix, wx0, wx1, wx2, wx3)
            + wy1 * _cubic_row_in(img, iy, ix, wx0, wx1, wx2, wx3)
            + wy2 * _cubic_row_in(img, iy + 1, ix, wx0, wx1, wx2, wx3)
            + wy3 * _cubic_row_in(img, iy + 2, ix, wx0, wx1, wx2, wx3))


@njit(cache=True, nogil=True, error_model="numpy")
def _cubic_border(img, iy, ix, wx0, wx1, wx2, wx3, wy0, wy1, wy2, wy3):
    return (wy0 * _cubic_row_border(img, iy - 1, ix, wx0, wx1, wx2, wx3)
            + wy1 * _cubic_row_border(img, iy, ix, wx0, wx1, wx2, wx3)
            + wy2 * _cubic_row_border(img, iy + 1, ix, wx0, wx1, wx2, wx3)
            + wy3 * _cubic_row_border(img, iy + 2, ix, wx0, wx1, wx2, wx3))


@njit(cache=True, nogil=True, error_model="numpy")
def warp_linearise(i0, i1, i1x, i1y, u1, u2, i1wx, i1wy, grad, rho_c):
    r"""Warp :math:`I_1` and its gradient by :math:`\mathbf u_0` (bicubic) and linearise the data term.

    Writes ``i1wx, i1wy`` = :math:`\nabla I_1(\mathbf x + \mathbf u_0)`, ``grad`` = :math:`|\nabla I_{1w}|^2` and
    ``rho_c`` = :math:`I_{1w} - \nabla I_{1w}\cdot\mathbf u_0 - I_0`. Taps outside the image read 0 (OpenCV's
    ``remap`` default ``BORDER_CONSTANT``), so a pixel that flows out of the frame gets no data term. The cubic
    weights (float64, as the sums) are computed once per pixel and shared by the three images.
    """
    h, w = i0.shape
    a = CUBIC_A
    for y in range(h):
        for x in range(w):
            fx = x + np.float64(u1[y, x])
            fy = y + np.float64(u2[y, x])
            # keep the integer conversion defined for absurd flows (everything is outside anyway)
            if not (fx > -4.0 and fx < w + 3.0 and fy > -4.0 and fy < h + 3.0):
                i1wx[y, x] = 0.0
                i1wy[y, x] = 0.0
                grad[y, x] = 0.0
                rho_c[y, x] = -i0[y, x]
                continue
            ix = int(math.floor(fx))
            iy = int(math.floor(fy))
            wx0, wx1, wx2, wx3 = _cubic_weights(fx - ix, a)
            wy0, wy1, wy2, wy3 = _cubic_weights(fy - iy, a)
            if ix >= 1 and ix < w - 2 and iy >= 1 and iy < h - 2:
                s = _cubic_in(i1, iy, ix, wx0, wx1, wx2, wx3, wy0, wy1, wy2, wy3)
                sx = _cubic_in(i1x, iy, ix, wx0, wx1, wx2, wx3, wy0, wy1, wy2, wy3)
                sy = _cubic_in(i1y, iy, ix, wx0, wx1, wx2, wx3, wy0, wy1, wy2, wy3)
            else:
                s = _cubic_border(i1, iy, ix, wx0, wx1, wx2, wx3, wy0, wy1, wy2, wy3)
                sx = _cubic_border(i1x, iy, ix, wx0, wx1, wx2, wx3, wy0, wy1, wy2, wy3)
                sy = _cubic_border(i1y, iy, ix, wx0, wx1, wx2, wx3, wy0, wy1, wy2, wy3)
            gx = np.float32(sx)
            gy = np.float32(sy)
            i1wx[y, x] = gx
            i1wy[y, x] = gy
            grad[y, x] = gx * gx + gy * gy
            rho_c[y, x] = np.float32(s) - gx * u1[y, x] - gy * u2[y, x] - i0[y, x]


@njit(cache=True, nogil=True, error_model="numpy")
def _primal_px(g, ix, iy, a1, a2, rc, div1, div2, lt, theta):
    """Thresholding (TH) and primal step at one pixel; returns the new :math:`(u_1, u_2)`."""
    rho = rc + (ix * a1 + iy * a2)
    ltg = lt * g
    # OpenCV's branch order written as selects: rho < -lt g, then rho > lt g, then |grad|^2 > floor
    big = g > _GRAD_FLOOR
    fi = -rho / (g if big else np.float32(1.0))
    fi = fi if big else np.float32(0.0)
    fi = -lt if rho > ltg else fi
    fi = lt if rho < -ltg else fi
    return a1 + fi * ix + theta * div1, a2 + fi * iy + theta * div2


@njit(cache=True, nogil=True, error_model="numpy")
def _primal_row(y, i1wx, i1wy, grad, rho_c, u1, u2, p11, p12, p21, p22, lt, theta, erow):
    """Thresholding + primal step on row ``y``; ``erow (w,)`` float32 receives :math:`\\|\\Delta\\mathbf u\\|^2`."""
    w = u1.shape[1]
    g_r, ix_r, iy_r, rc_r = grad[y], i1wx[y], i1wy[y], rho_c[y]
    u1r, u2r = u1[y], u2[y]
    p11r, p12r, p21r, p22r = p11[y], p12[y], p21[y], p22[y]
    # backward-difference divergence of p: p_{.1} is 0 left of column 0, p_{.2} is 0 above row 0
    yu = y - 1 if y > 0 else y
    keep = np.float32(1.0) if y > 0 else np.float32(0.0)
    p12u, p22u = p12[yu], p22[yu]
    a1 = u1r[0]
    a2 = u2r[0]
    n1, n2 = _primal_px(g_r[0], ix_r[0], iy_r[0], a1, a2, rc_r[0],
                        p11r[0] + p12r[0] - keep * p12u[0], p21r[0] + p22r[0] - keep * p22u[0], lt, theta)
    u1r[0] = n1
    u2r[0] = n2
    erow[0] = (n1 - a1) * (n1 - a1) + (n2 - a2) * (n2 - a2)
    for x in range(1, w):
        a1 = u1r[x]
        a2 = u2r[x]
        div1 = p11r[x] - p11r[x - 1] + p12r[x] - keep * p12u[x]
        div2 = p21r[x] - p21r[x - 1] + p22r[x] - keep * p22u[x]
        n1, n2 = _primal_px(g_r[x], ix_r[x], iy_r[x], a1, a2, rc_r[x], div1, div2, lt, theta)
        u1r[x] = n1
        u2r[x] = n2
        e1 = n1 - a1
        e2 = n2 - a2
        erow[x] = e1 * e1 + e2 * e2


@njit(cache=True, nogil=True, error_model="numpy", fastmath={"reassoc"})
def _sum(erow):
    """float64 sum of a float32 row (reassociation allowed: vectorised, still deterministic)."""
    s = 0.0
    for x in range(erow.shape[0]):
        s += erow[x]
    return s


@njit(cache=True, nogil=True, error_model="numpy")
def _dual_px(u1x, u1y, u2x, u2y, q11, q12, q21, q22, taut):
    one = np.float32(1.0)
    # one division per component pair: p / (1 + taut |grad u|) as p * (1 / (1 + taut |grad u|))
    r1 = one / (one + taut * np.sqrt(u1x * u1x + u1y * u1y))
    r2 = one / (one + taut * np.sqrt(u2x * u2x + u2y * u2y))
    return (q11 + taut * u1x) * r1, (q12 + taut * u1y) * r1, (q21 + taut * u2x) * r2, (q22 + taut * u2y) * r2


@njit(cache=True, nogil=True, error_model="numpy")
def _dual_row(y, u1, u2, p11, p12, p21, p22, taut):
    """Dual step (semi-implicit projection) on row ``y`` from the forward differences of ``u``."""
    h, w = u1.shape
    zero = np.float32(0.0)
    u1r, u2r = u1[y], u2[y]
    yd = y + 1 if y < h - 1 else y
    keep = np.float32(1.0) if y < h - 1 else zero  # forward y-difference is 0 on the last row
    u1d, u2d = u1[yd], u2[yd]
    p11r, p12r, p21r, p22r = p11[y], p12[y], p21[y], p22[y]
    for x in range(w - 1):
        a1 = u1r[x]
        a2 = u2r[x]
        r11, r12, r21, r22 = _dual_px(u1r[x + 1] - a1, keep * (u1d[x] - a1), u2r[x + 1] - a2, keep * (u2d[x] - a2),
                                      p11r[x], p12r[x], p21r[x], p22r[x], taut)
        p11r[x] = r11
        p12r[x] = r12
        p21r[x] = r21
        p22r[x] = r22
    x = w - 1
    a1 = u1r[x]
    a2 = u2r[x]
    r11, r12, r21, r22 = _dual_px(zero, keep * (u1d[x] - a1), zero, keep * (u2d[x] - a2),
                                  p11r[x], p12r[x], p21r[x], p22r[x], taut)
    p11r[x] = r11
    p12r[x] = r12
    p21r[x] = r21
    p22r[x] = r22


def iterate_py(i1wx, i1wy, grad, rho_c, u1, u2, p11, p12, p21, p22, lt, theta, taut, n_iter, eps_scaled, scratch,
               interleave):
    r"""Run up to ``n_iter`` TV-L1 iterations in place on ``u1, u2, p11..p22``; stop once
    :math:`\sum\|\mathbf u^{k+1}-\mathbf u^k\|^2 \le` ``eps_scaled``.

    ``lt`` = :math:`\lambda\theta`, ``taut`` = :math:`\tau/\theta` (float32 scalars); ``scratch (h, w)`` float32 is
    work space. ``interleave`` (serial only) runs the dual step of row ``y-1`` right after the primal step of row
    ``y`` (cache-friendly, same result); otherwise two passes over the rows, each a ``prange``. Returns
    ``(error, iterations_done)``; ``error`` is the last iteration's sum of squared changes.
    """
    h = u1.shape[0]
    error = np.inf
    n = 0
    while n < n_iter:
        error = 0.0
        if interleave:
            for y in range(h):
                _primal_row(y, i1wx, i1wy, grad, rho_c, u1, u2, p11, p12, p21, p22, lt, theta, scratch[y])
                error += _sum(scratch[y])
                if y > 0:
                    _dual_row(y - 1, u1, u2, p11, p12, p21, p22, taut)
            _dual_row(h - 1, u1, u2, p11, p12, p21, p22, taut)
        else:
            for yy in prange(h):
                y = np.int64(yy)  # prange indices may be unsigned; y - 1 must stay an integer
                _primal_row(y, i1wx, i1wy, grad, rho_c, u1, u2, p11, p12, p21, p22, lt, theta, scratch[y])
            for yy in prange(h):
                _dual_row(np.int64(yy), u1, u2, p11, p12, p21, p22, taut)
            for y in range(h):
                error += _sum(scratch[y])
        n += 1
        if error <= eps_scaled:
            break
    return error, n


iterate_serial = njit(cache=True, error_model="numpy")(iterate_py)
iterate_parallel = njit(parallel=True, error_model="numpy")(iterate_py)
