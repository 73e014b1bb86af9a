r"""Dense sampling of feature points on one pyramid level (Wang & Schmid, IJCV 2013, Sec. 3.1).

The level is divided into ``W x W`` cells; a cell's centre :math:`(jW + \lfloor W/2 \rfloor, iW + \lfloor W/2
\rfloor)` becomes a new point if no tracked point lies in the cell and its smaller structure-tensor eigenvalue
(``cv2.cornerMinEigenVal``, block 3, Sobel 3; for the extractor's uint8 levels our one-pass kernel of the same
numbers, :func:`idtfv.idt._corners_nb.min_eigen_response`) exceeds ``quality`` times the level's maximum, so
homogeneous areas (which cannot be tracked) get no points.
"""

from __future__ import annotations

import threading

import cv2
import numpy as np

from idtfv.errors import ParameterError
from idtfv.idt import _corners_nb
from idtfv.idt import _tracking_nb as _nb

__all__ = ["dense_sample", "dense_sample_pool", "dense_sample_levels", "corner_response"]

#: The last responses computed for each image size and dtype: a tuple of (the image's bytes, its response), newest
#: last. The extractor asks twice for the response of every frame (its level 0 here, then the camera's flow
#: matches of the next frame, :func:`idtfv.idt.camera.good_features`); the second time costs a comparison instead
#: of the filter. With ``--threads`` the front thread asks for frames up to two ahead of the main thread's, so a
#: few frames of each size are kept.
_RESPONSES: dict = {}
_RESPONSES_KEPT = 8  # sizes remembered: the levels of one pyramid (8 at most by default)
_RESPONSES_PER_SIZE = 4  # frames remembered per size
_RESPONSES_LOCK = threading.Lock()


def _min_eigen(gray: np.ndarray) -> np.ndarray:
    """``cv2.cornerMinEigenVal(gray, 3, ksize=3)``: by our kernel for a 2-D uint8 image (its numbers, ~1.9x faster),
    by OpenCV otherwise."""
    if gray.dtype == np.uint8 and gray.ndim == 2 and gray.size:
        eig = np.empty(gray.shape, np.float32)
        _corners_nb.min_eigen_response(np.ascontiguousarray(gray), eig)
        return eig
    return cv2.cornerMinEigenVal(gray, 3, ksize=3)


def corner_response(gray: np.ndarray, *, remember: bool = True) -> np.ndarray:
    """The smaller structure-tensor eigenvalue of every pixel, ``cv2.cornerMinEigenVal(gray, 3, ksize=3)`` (for
    uint8, :func:`idtfv.idt._corners_nb.min_eigen_response`: the same numbers).

    The results for the last few images of each size and dtype are remembered and returned again (read-only) for
    an image with the same pixels, so the same frame's response is computed once however many callers ask (and
    whichever thread asks first).

    Parameters
    ----------
    gray : (h, w) uint8 or float32
    remember : bool
        False: compute it, neither looking it up nor remembering it (a caller that keeps the response itself).

    Returns
    -------
    (h, w) float32, read-only
    """
    if not remember:
        eig = _min_eigen(gray)
        eig.flags.writeable = False
        return eig
    key = (gray.shape, gray.dtype.str)
    pixels = gray.tobytes()  # C order; compared with memcmp, which stops at the first difference
    for seen, eig in reversed(_RESPONSES.get(key, ())):  # a tuple: replaced whole, never changed in place
        if seen == pixels:
            return eig
    eig = _min_eigen(gray)
    eig.flags.writeable = False
    with _RESPONSES_LOCK:  # --threads: levels are sampled side by side, and the front thread runs ahead
        kept = _RESPONSES.pop(key, ())
        _RESPONSES[key] = (kept + ((pixels, eig),))[-_RESPONSES_PER_SIZE:]
        while len(_RESPONSES) > _RESPONSES_KEPT:  # the oldest size goes (videos of many sizes in one process)
            del _RESPONSES[next(iter(_RESPONSES))]
    return eig


def dense_sample(gray: np.ndarray, existing: np.ndarray | None = None, *, stride: int = 5,
                 quality: float = 0.001, device: str = "cpu") -> np.ndarray:
    """New points in the empty grid cells of one level.

    Parameters
    ----------
    gray : (h, w) uint8 or float32
        The level's image.
    existing : (m, 2) float32 or None
        Current points ``[x, y]`` of live tracks at this level.
    stride : int
        W, the grid step.
    quality : float
        Relative threshold on the min-eigenvalue response.
    device : {"cpu", "cuda"}
        ``"cuda"``: ``gray`` is a uint8 level on the device (CuPy; NumPy is uploaded), the response and the grid
        selection run there (:mod:`idtfv.idt._frame_cuda`, the same points) and only the points come back.

    Returns
    -------
    (k, 2) float32
        ``[x, y]`` of the new points, row-major over the grid.
    """
    if device != "cpu":
        if device != "cuda":
            raise ParameterError(f"dense_sample: device must be 'cpu' or 'cuda', got {device!r}; resolve 'auto' "
                                 "with idtfv.idt.device.resolve_device first")
        from idtfv.idt import _frame_cuda  # needs CuPy: loaded only for the device

        return _frame_cuda.dense_sample(gray, existing, stride=stride, quality=quality)
    eig = corner_response(gray)
    threshold = float(eig.max()) * quality
    pts = np.zeros((0, 2), np.float32) if existing is None else np.ascontiguousarray(existing, np.float32)
    h, w = gray.shape
    out = np.empty(((h // stride) * (w // stride), 2), np.float32)
    n = _nb.sample_grid(eig, threshold, int(stride), pts, out)
    return out[:n].copy()


def dense_sample_pool(gray: np.ndarray, pool, *, stride: int = 5, quality: float = 0.001) -> np.ndarray:
    """:func:`dense_sample` of a level on the CPU with the existing points of a track pool's live tracks
    (``dense_sample(gray, pool.current_points(), ...)``), read in place by the kernel: the same points.

    Parameters
    ----------
    gray : (h, w) uint8 or float32
    pool : idtfv.idt.tracking.TrackPool
        This level's pool (its ``live()`` rows, ``index`` and ``pos``).
    stride, quality
        As :func:`dense_sample`.

    Returns
    -------
    (k, 2) float32
    """
    eig = corner_response(gray)
    h, w = gray.shape
    out = np.empty(((h // stride) * (w // stride), 2), np.float32)
    n = _nb.sample_pool_grid(eig, float(eig.max()) * quality, int(stride), pool.live(), pool.index, pool.pos, out)
    return out[:n]


def dense_sample_levels(grays, existing, *, stride: int = 5, quality: float = 0.001, scratch=None):
    """:func:`dense_sample` of every level of a frame on the device (``device="cuda"`` only): the responses, the
    maxima, the occupied cells and the selection of all levels in one launch each, the levels' cell bytes in one
    download (:func:`idtfv.idt._frame_cuda.dense_sample_levels`); each level's points are its
    ``dense_sample(..., device="cuda")``.

    Parameters
    ----------
    grays : sequence of (h_l, w_l) uint8 CuPy arrays
        The pyramid's levels.
    existing : sequence of (m_l, 2) float32 arrays
        Each level's current points (host or device).
    stride, quality
        As :func:`dense_sample`.
    scratch : optional
        The previous call's device buffers (the second value returned), reused when the levels' sizes are the same.

    Returns
    -------
    points : list of (k_l, 2) float32 NumPy arrays
    scratch
        The device buffers, for the next call.
    """
    from idtfv.idt import _frame_cuda  # needs CuPy: loaded only for the device

    return _frame_cuda.dense_sample_levels(grays, existing, stride=stride, quality=quality, scratch=scratch)
