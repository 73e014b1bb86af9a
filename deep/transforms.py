"""Spatial transforms for RGB and flow frame stacks (functions; data first, options keyword-only).

Every function takes ``frames (F, H, W, c)`` float32 (c = 3 for RGB or RGB difference, 2 for flow in pixels,
x then y) and returns the same layout. All frames of a clip get the same crop/flip. Resizing a flow field by
(sx, sy) also scales its vectors by (sx, sy); flipping it left-right negates x (the motion reverses).

- ``resize_short``: rescale so the short side is ``side``.
- ``multi_scale_crop``: TSN scale jitter (Wang et al. 2016, sec. 3.2): crop sides drawn from
  {1, .875, .75, .66} x short side (aspect change by at most one step), at one of 5 positions (4 corners,
  centre), resized to ``size x size``.
- ``random_crop``, ``center_crop``, ``three_crop`` (start / centre / end of the long side), ``ten_crop``
  (4 corners + centre, and their flips).
- ``hflip``, ``normalize``.
"""

from __future__ import annotations

import cv2
import numpy as np

from idtfv.errors import ParameterError

__all__ = ["resize", "resize_short", "multi_scale_crop", "random_crop", "center_crop", "three_crop", "ten_crop",
           "hflip", "normalize", "crop", "TSN_SCALES", "RGB_MEAN", "RGB_STD"]

TSN_SCALES = (1.0, 0.875, 0.75, 0.66)
RGB_MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32) * 255  # ImageNet statistics
RGB_STD = np.array([0.229, 0.224, 0.225], dtype=np.float32) * 255


def resize(frames: np.ndarray, height: int, width: int, *, flow: bool = False) -> np.ndarray:
    """Bilinear resize of every frame to (height, width); flow vectors are scaled with the image."""
    f, h, w, c = frames.shape
    if (h, w) == (height, width):
        return frames
    out = np.empty((f, height, width, c), dtype=np.float32)
    for i in range(f):
        r = cv2.resize(frames[i], (width, height), interpolation=cv2.INTER_LINEAR)
        out[i] = r.reshape(height, width, c)
    if flow:
        out[..., 0] *= width / w
        out[..., 1] *= height / h
    return out


def resize_short(frames: np.ndarray, side: int, *, flow: bool = False) -> np.ndarray:
    """Resize so that min(H, W) = side, keeping the aspect ratio."""
    h, w = frames.shape[1:3]
    if h <= w:
        return resize(frames, side, max(side, round(w * side / h)), flow=flow)
    return resize(frames, max(side, round(h * side / w)), side, flow=flow)


def crop(frames: np.ndarray, top: int, left: int, height: int, width: int) -> np.ndarray:
    """frames[:, top:top+height, left:left+width] (checked)."""
    h, w = frames.shape[1:3]
    if top < 0 or left < 0 or top + height > h or left + width > w:
        raise ParameterError(f"crop {height}x{width} at ({top}, {left}) does not fit frames of {h}x{w}; resize "
                             "first (resize_short)")
    return frames[:, top:top + height, left:left + width]


def center_crop(frames: np.ndarray, size: int) -> np.ndarray:
    """The central size x size crop."""
    h, w = frames.shape[1:3]
    return crop(frames, (h - size) // 2, (w - size) // 2, size, size)


def random_crop(frames: np.ndarray, size: int, *, random_state=None) -> np.ndarray:
    """A size x size crop at a uniformly random position."""
    rng = np.random.default_rng(random_state) if not isinstance(random_state, np.random.Generator) else random_state
    h, w = frames.shape[1:3]
    return crop(frames, int(rng.integers(0, h - size + 1)), int(rng.integers(0, w - size + 1)), size, size)


def three_crop(frames: np.ndarray, size: int) -> list[np.ndarray]:
    """Three size x size crops along the long side: start, centre, end (the short side is centred)."""
    h, w = frames.shape[1:3]
    if w >= h:
        top = (h - size) // 2
        return [crop(frames, top, left, size, size) for left in (0, (w - size) // 2, w - size)]
    left = (w - size) // 2
    return [crop(frames, top, left, size, size) for top in (0, (h - size) // 2, h - size)]


def _five_positions(h: int, w: int, ch: int, cw: int) -> list[tuple[int, int]]:
    return [(0, 0), (0, w - cw), (h - ch, 0), (h - ch, w - cw), ((h - ch) // 2, (w - cw) // 2)]


def ten_crop(frames: np.ndarray, size: int, *, flow: bool = False) -> list[np.ndarray]:
    """The four corner crops and the centre crop, then the same five flipped (flow x negated)."""
    h, w = frames.shape[1:3]
    five = [crop(frames, t, l, size, size) for t, l in _five_positions(h, w, size, size)]
    return five + [hflip(c, flow=flow) for c in five]


def hflip(frames: np.ndarray, *, flow: bool = False) -> np.ndarray:
    """Left-right flip; for flow the x component is negated as well."""
    out = frames[:, :, ::-1].copy()
    if flow:
        out[..., 0] *= -1
    return out


def multi_scale_crop(frames: np.ndarray, size: int, *, random_state=None, scales=TSN_SCALES,
                     max_distort: int = 1, flow: bool = False) -> np.ndarray:
    """TSN scale jitter: a crop of (s_i, s_j) x short side with |i - j| <= max_distort at one of 5 fixed
    positions, resized to size x size."""
    rng = np.random.default_rng(random_state) if not isinstance(random_state, np.random.Generator) else random_state
    h, w = frames.shape[1:3]
    base = min(h, w)
    sides = [int(base * s) for s in scales]
    pairs = [(a, b) for i, a in enumerate(sides) for j, b in enumerate(sides) if abs(i - j) <= max_distort]
    cw, ch = pairs[int(rng.integers(len(pairs)))]
    top, left = _five_positions(h, w, ch, cw)[int(rng.integers(5))]
    return resize(crop(frames, top, left, ch, cw), size, size, flow=flow)


def normalize(frames: np.ndarray, mean, std) -> np.ndarray:
    """(frames - mean) / std, broadcast over the channel axis."""
    return (frames - np.asarray(mean, dtype=np.float32)) / np.asarray(std, dtype=np.float32)
