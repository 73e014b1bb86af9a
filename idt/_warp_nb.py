r"""Numba kernel of the camera-compensated frame's border rule (:func:`idtfv.idt.camera.warp_to_previous`).

The frame warped by :math:`H^{-1}` takes the previous frame's pixel wherever the source :math:`H x` is not
strictly inside ``(margin, w - 1 - margin) x (margin, h - 1 - margin)`` (LEAR's reference does this, so the
compensated flow is zero there instead of following the black border). Same float64 arithmetic, in the same
order, as the NumPy expression it replaces (no fast-math), so the same pixels are filled.
"""

from __future__ import annotations

from numba import njit

__all__ = ["fill_border"]


@njit(cache=True, nogil=True)
def fill_border(out, prev, H, margin):
    """Copy ``prev[y, x]`` into ``out[y, x]`` wherever :math:`H (x, y, 1)^T` is not inside the frame by ``margin``.

    Parameters
    ----------
    out : (h, w) array
        The warped frame, changed in place.
    prev : (h, w) array, same dtype
        The previous frame.
    H : (3, 3) float64
        Homography t-1 -> t.
    margin : float
        Width of the border band (px).

    Returns
    -------
    int
        Number of pixels filled.
    """
    h, w = out.shape
    hi_x = w - 1 - margin
    hi_y = h - 1 - margin
    n = 0
    for y in range(h):
        yf = float(y)
        for x in range(w):
            xf = float(x)
            d = H[2, 0] * xf + H[2, 1] * yf + H[2, 2]
            sx = (H[0, 0] * xf + H[0, 1] * yf + H[0, 2]) / d
            sy = (H[1, 0] * xf + H[1, 1] * yf + H[1, 2]) / d
            if not ((sx > margin) and (sx < hi_x) and (sy > margin) and (sy < hi_y)):
                out[y, x] = prev[y, x]
                n += 1
    return n
