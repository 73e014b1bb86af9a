"""Human bounding boxes for camera-motion estimation: LEAR's box files and OpenCV's HOG people detector.

Keypoints inside human boxes are excluded from the homography fit (Wang & Schmid, ICCV 2013, Sec. 2.2), since
people move independently of the camera.

LEAR box file: one line per frame, ``frame_id x1 y1 x2 y2 score [x1 y1 x2 y2 score ...]`` (0-based frame ids,
pixel corners); frames without a line have no boxes.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from idt.errors import FormatError

__all__ = ["load_boxes", "save_boxes", "box_mask", "HOGPeopleDetector"]


def load_boxes(path) -> dict[int, np.ndarray]:
    """Read a LEAR box file into ``{frame: (k, 4) float32 [x1, y1, x2, y2]}``."""
    path = Path(path)
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as e:
        raise FormatError(path, f"cannot read the human-box file ({e}); expected text lines "
                                "'frame x1 y1 x2 y2 score ...'") from None
    boxes: dict[int, np.ndarray] = {}
    for lineno, line in enumerate(text.splitlines(), 1):
        parts = line.split()
        if not parts:
            continue
        try:
            frame = int(parts[0])
            vals = np.array(parts[1:], dtype=np.float32)
        except ValueError:
            raise FormatError(path, f"line {lineno}: expected numbers 'frame x1 y1 x2 y2 score ...', "
                                    f"got {line[:40]!r}") from None
        if vals.size % 5:
            raise FormatError(path, f"line {lineno}: expected groups of 5 numbers (x1 y1 x2 y2 score) after the "
                                    f"frame id, got {vals.size}")
        b = vals.reshape(-1, 5)[:, :4]
        boxes[frame] = np.concatenate([boxes[frame], b]) if frame in boxes else b
    return boxes


def save_boxes(path, boxes: dict[int, np.ndarray]) -> None:
    """Write ``{frame: (k, 4 or 5)}`` as a LEAR box file (score 1 when absent)."""
    lines = []
    for frame in sorted(boxes):
        b = np.asarray(boxes[frame], np.float32).reshape(-1, boxes[frame].shape[-1] if len(boxes[frame]) else 4)
        if len(b) == 0:
            continue
        if b.shape[1] == 4:
            b = np.concatenate([b, np.ones((len(b), 1), np.float32)], axis=1)
        lines.append(" ".join([str(frame)] + [f"{v:.2f}" for v in b.ravel()]))
    Path(path).write_text("\n".join(lines) + ("\n" if lines else ""))


def box_mask(shape: tuple[int, int], boxes: np.ndarray | None) -> np.ndarray | None:
    """uint8 mask of ``shape`` (h, w): 255 outside the boxes, 0 inside; None when there are no boxes."""
    if boxes is None or len(boxes) == 0:
        return None
    h, w = shape
    mask = np.full((h, w), 255, np.uint8)
    for x1, y1, x2, y2 in np.asarray(boxes, np.float64)[:, :4]:
        xa, ya = max(0, int(x1)), max(0, int(y1))
        xb, yb = min(w, int(np.ceil(x2)) + 1), min(h, int(np.ceil(y2)) + 1)
        if xb > xa and yb > ya:
            mask[ya:yb, xa:xb] = 0
    return mask


class HOGPeopleDetector:
    """OpenCV's HOG + linear SVM pedestrian detector (Dalal & Triggs), boxes in frame pixels.

    Frames smaller than the 64x128 detection window are upscaled before detection.
    """

    def __init__(self, *, hit_threshold: float = 0.0):
        self.hog = cv2.HOGDescriptor()
        self.hog.setSVMDetector(cv2.HOGDescriptor_getDefaultPeopleDetector())
        self.hit_threshold = hit_threshold

    def __call__(self, gray: np.ndarray) -> np.ndarray:
        """(k, 4) float32 boxes ``[x1, y1, x2, y2]`` of people in ``gray`` (h, w) uint8."""
        h, w = gray.shape[:2]
        f = max(1.0, 160.0 / min(h, w))
        img = cv2.resize(gray, (int(round(w * f)), int(round(h * f)))) if f > 1 else gray
        rects, _ = self.hog.detectMultiScale(img, hitThreshold=self.hit_threshold, winStride=(8, 8),
                                             padding=(8, 8), scale=1.05)
        if len(rects) == 0:
            return np.zeros((0, 4), np.float32)
        r = np.asarray(rects, np.float32) / f
        return np.stack([r[:, 0], r[:, 1], r[:, 0] + r[:, 2], r[:, 1] + r[:, 3]], axis=1)
