"""Human bounding boxes for camera-motion estimation: LEAR's box files and OpenCV's HOG people detector.

Keypoints inside human boxes are excluded from the homography fit (Wang & Schmid, ICCV 2013, Sec. 2.2), since
people move independently of the camera.

LEAR box file: one line per frame, ``frame_id x1 y1 x2 y2 score [x1 y1 x2 y2 score ...]`` (0-based frame ids,
pixel corners); frames without a line have no boxes.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import cv2
import numpy as np

from idtfv.atomic import atomic_write_text
from idtfv.errors import FormatError

__all__ = ["load_boxes", "save_boxes", "box_mask", "HOGPeopleDetector", "HeldDetections", "default_cache_dir",
           "boxes_cache_path", "DETECTOR_ID"]

#: Identifies the detector and its settings in the cache key (change it when the detector changes).
DETECTOR_ID = "opencv-hog-people-v1"


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
    """Write ``{frame: (k, 4 or 5)}`` as a LEAR box file (score 1 when absent); atomic (temporary file + rename)."""
    lines = []
    for frame in sorted(boxes):
        b = np.asarray(boxes[frame], np.float32).reshape(-1, boxes[frame].shape[-1] if len(boxes[frame]) else 4)
        if len(b) == 0:
            continue
        if b.shape[1] == 4:
            b = np.concatenate([b, np.ones((len(b), 1), np.float32)], axis=1)
        lines.append(" ".join([str(frame)] + [f"{v:.2f}" for v in b.ravel()]))
    atomic_write_text(path, "\n".join(lines) + ("\n" if lines else ""))


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


class HeldDetections:
    """Run a detector every ``every`` frames and hold its boxes for the frames in between.

    Frame ``start + j`` uses the detection of frame ``start + every * (j // every)``; people move little in
    ``every`` frames (5 at 25 frames/s is 0.2 s), and the boxes only mask keypoints out of the homography fit.

    Parameters
    ----------
    detector : callable
        ``detector(gray) -> (k, 4)`` boxes.
    every : int
        Detection period in frames (k >= 1).
    start : int
        The first frame's number.
    """

    def __init__(self, detector, *, every: int = 5, start: int = 0):
        self.detector = detector
        self.every = int(every)
        self.start = int(start)
        self._held = np.zeros((0, 4), np.float32)
        self.boxes: dict[int, np.ndarray] = {}  # every frame's boxes (held ones included), for the cache
        self.n_detections = 0

    def __call__(self, frame_num: int, gray: np.ndarray) -> np.ndarray:
        if (frame_num - self.start) % self.every == 0:
            # rounded as the cache file stores them, so a run from the cache masks exactly the same pixels
            self._held = np.round(np.asarray(self.detector(gray), np.float32).reshape(-1, 4), 2)
            self.n_detections += 1
        if len(self._held):
            self.boxes[frame_num] = self._held
        return self._held


def default_cache_dir() -> Path:
    """Where detected boxes are cached: ``$IDTFV_HUMANS_CACHE``, else ``$XDG_CACHE_HOME/idtfv/humans``, else
    ``~/.cache/idtfv/humans``."""
    env = os.environ.get("IDTFV_HUMANS_CACHE")
    if env:
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "idtfv" / "humans"


def boxes_cache_path(video, cache_dir=None, **settings) -> Path:
    """The cache file ``<cache_dir>/<stem>.<key>.boxes.txt`` of a video's detected boxes.

    The key hashes the video's absolute path, size and modification time (so an edited or replaced file is
    detected again), :data:`DETECTOR_ID` and ``settings`` (frame range, resize width, detection period: anything
    that changes the boxes). The file is a LEAR box file (every frame's boxes, held ones included), usable
    directly as ``--boxes``.
    """
    video = Path(video)
    st = video.stat()
    ident = {"path": str(video.resolve()), "size": st.st_size, "mtime_ns": st.st_mtime_ns,
             "detector": DETECTOR_ID, **settings}
    key = hashlib.sha1(json.dumps(ident, sort_keys=True, default=str).encode()).hexdigest()[:16]
    return Path(cache_dir if cache_dir is not None else default_cache_dir()) / f"{video.stem}.{key}.boxes.txt"
