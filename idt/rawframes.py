"""The mmaction2/TSN "rawframes" layout for two-stream inputs: writer and reader.

For a video of :math:`T` decoded frames, ``DIR/<video_id>/`` holds

* ``img_00001.jpg`` ... ``img_{T}.jpg``: the RGB frames (1-based, 5 digits);
* ``flow_x_00001.jpg`` ... ``flow_x_{T-1}.jpg`` and the matching ``flow_y_*``: the :math:`T-1` flows, flow ``k``
  going from frame ``k`` to frame ``k+1``, each component clipped to :math:`\\pm b` (``bound``, default 20 px) and
  mapped linearly to 0..255 by ``round((f + b) * 255 / (2 b))`` (the I3D/TSN convention), one gray JPEG per
  component. The quantisation step is :math:`2b/255` (0.157 px for b = 20).

The lossless alternative is one ``DIR/<video_id>.npz`` with ``flow (T-1, H, W, 2) float16`` (not clipped) and
``bound`` (0-d float, what a reader should clip to). Both are written atomically: into a temporary sibling, then
``os.replace``.
"""

from __future__ import annotations

import os
import re
import shutil
import uuid
from pathlib import Path

import cv2
import numpy as np

from idtfv.errors import FormatError, ParameterError

__all__ = [
    "DEFAULT_BOUND",
    "DEFAULT_QUALITY",
    "quantize_flow",
    "dequantize_flow",
    "RawframesWriter",
    "read_rawframes",
    "save_flow_npz",
    "load_flow_npz",
    "frame_name",
]

#: Flow clipping bound :math:`b` in pixels (TSN/I3D).
DEFAULT_BOUND = 20.0
#: JPEG quality of the written frames and flow images (OpenCV's default is 95).
DEFAULT_QUALITY = 95

_NAME = re.compile(r"^(img|flow_x|flow_y)_(\d{5})\.jpg$")


def frame_name(kind: str, index: int) -> str:
    """``frame_name("flow_x", 1) -> "flow_x_00001.jpg"`` (``index`` is 1-based)."""
    return f"{kind}_{index:05d}.jpg"


def _check_bound(bound) -> float:
    bound = float(bound)
    if not (bound > 0 and np.isfinite(bound)):
        raise ParameterError(f"bound must be a positive number of pixels (e.g. 20), got {bound!r}")
    return bound


def quantize_flow(flow, bound: float = DEFAULT_BOUND) -> tuple[np.ndarray, np.ndarray]:
    """``flow (h, w, 2)`` -> ``(qx, qy)`` uint8 images: ``round((clip(f, -b, b) + b) * 255 / (2 b))``."""
    b = _check_bound(bound)
    f = np.clip(np.asarray(flow, np.float32), -b, b)
    q = np.rint((f + np.float32(b)) * np.float32(255.0 / (2.0 * b)))
    q = np.clip(q, 0, 255).astype(np.uint8)
    return np.ascontiguousarray(q[..., 0]), np.ascontiguousarray(q[..., 1])


def dequantize_flow(qx, qy, bound: float = DEFAULT_BOUND) -> np.ndarray:
    """Inverse of :func:`quantize_flow`: ``(h, w, 2)`` float32 ``q * 2b / 255 - b``."""
    b = _check_bound(bound)
    q = np.stack([np.asarray(qx), np.asarray(qy)], axis=-1).astype(np.float32)
    return q * np.float32(2.0 * b / 255.0) - np.float32(b)


def _temp_sibling(path: Path) -> Path:
    return path.with_name(f".{path.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}")


def _imwrite(path: Path, img: np.ndarray, quality: int) -> None:
    if not cv2.imwrite(str(path), img, [cv2.IMWRITE_JPEG_QUALITY, int(quality)]):
        raise OSError(f"{path}: cannot write the JPEG (disk full or directory not writable?)")


class RawframesWriter:
    """Write one video's rawframes directory incrementally and atomically.

    Frames and flows go to a temporary sibling directory; :meth:`commit` renames it to ``video_dir`` (replacing
    an older one). Use as a context manager: leaving it with an exception removes the temporary directory.

    Parameters
    ----------
    video_dir : path-like
        ``DIR/<video_id>``.
    bound : float
        Flow clipping bound :math:`b` (px).
    quality : int
        JPEG quality 1..100 (:data:`DEFAULT_QUALITY`).
    write_frames : bool
        Also write the ``img_*.jpg`` RGB frames.
    """

    def __init__(self, video_dir, *, bound: float = DEFAULT_BOUND, quality: int = DEFAULT_QUALITY,
                 write_frames: bool = True):
        self.video_dir = Path(video_dir)
        self.bound = _check_bound(bound)
        if not (isinstance(quality, int) and 1 <= quality <= 100):
            raise ParameterError(f"JPEG quality must be an int in 1..100, got {quality!r}")
        self.quality = quality
        self.write_frames = write_frames
        self.n_frames = 0
        self.n_flows = 0
        self.video_dir.parent.mkdir(parents=True, exist_ok=True)
        self._tmp = _temp_sibling(self.video_dir)
        self._tmp.mkdir()

    def add_frame(self, rgb: np.ndarray) -> None:
        """Append RGB frame ``(h, w, 3)`` uint8 as ``img_{n+1:05d}.jpg``."""
        self.n_frames += 1
        if self.write_frames:
            _imwrite(self._tmp / frame_name("img", self.n_frames), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), self.quality)

    def add_flow(self, flow: np.ndarray) -> None:
        """Append flow ``(h, w, 2)`` as ``flow_x/flow_y_{n+1:05d}.jpg``."""
        self.n_flows += 1
        qx, qy = quantize_flow(flow, self.bound)
        _imwrite(self._tmp / frame_name("flow_x", self.n_flows), qx, self.quality)
        _imwrite(self._tmp / frame_name("flow_y", self.n_flows), qy, self.quality)

    def commit(self) -> Path:
        """Move the finished directory into place (replacing an existing ``video_dir``); return it."""
        if self.video_dir.exists():
            old = _temp_sibling(self.video_dir)
            os.replace(self.video_dir, old)
            shutil.rmtree(old, ignore_errors=True)
        os.replace(self._tmp, self.video_dir)
        return self.video_dir

    def abort(self) -> None:
        """Remove the temporary directory."""
        shutil.rmtree(self._tmp, ignore_errors=True)

    def __enter__(self) -> "RawframesWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None:
            self.abort()
        elif self._tmp.exists():
            self.commit()


def _imread(path: Path, flags: int) -> np.ndarray:
    img = cv2.imread(str(path), flags)
    if img is None:
        raise FormatError(path, "not a readable JPEG; re-run extract-flow with --force for this video")
    return img


def read_rawframes(video_dir, *, bound: float = DEFAULT_BOUND, frames: bool = True):
    """Read a rawframes directory back.

    Returns
    -------
    rgb : (T, h, w, 3) uint8 or None
        The ``img_*`` frames (None with ``frames=False`` or when there are none).
    flow : (T-1, h, w, 2) float32
        The dequantised flows (:func:`dequantize_flow`).

    Raises
    ------
    idtfv.errors.FormatError
        Missing directory, gaps in the numbering, unreadable JPEGs, x/y counts that differ.
    """
    d = Path(video_dir)
    if not d.is_dir():
        raise FormatError(d, "is not a rawframes directory; run extract-flow on the video first")
    found: dict[str, list[int]] = {"img": [], "flow_x": [], "flow_y": []}
    for entry in os.scandir(d):
        m = _NAME.match(entry.name)
        if m:
            found[m.group(1)].append(int(m.group(2)))
    for kind, idx in found.items():
        idx.sort()
        if idx != list(range(1, len(idx) + 1)):
            raise FormatError(d, f"{kind}_*.jpg are not numbered 1..{len(idx)} without gaps")
    if len(found["flow_x"]) != len(found["flow_y"]):
        raise FormatError(d, f"{len(found['flow_x'])} flow_x but {len(found['flow_y'])} flow_y images")
    rgb = None
    if frames and found["img"]:
        rgb = np.stack([cv2.cvtColor(_imread(d / frame_name("img", i), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
                        for i in found["img"]])
    flows = [
        dequantize_flow(_imread(d / frame_name("flow_x", i), cv2.IMREAD_GRAYSCALE),
                        _imread(d / frame_name("flow_y", i), cv2.IMREAD_GRAYSCALE), bound)
        for i in found["flow_x"]
    ]
    flow = np.stack(flows) if flows else np.zeros((0, 0, 0, 2), np.float32)
    return rgb, flow


def save_flow_npz(path, flow, *, bound: float = DEFAULT_BOUND) -> Path:
    """Write ``flow (T-1, h, w, 2)`` as float16 (not clipped) with ``bound`` to ``path``.

    Atomic and byte-deterministic (:func:`idtfv.cache.atomic_savez`: fixed zip timestamps).
    """
    from idtfv.cache import atomic_savez

    path = Path(path)
    flow = np.asarray(flow)
    if flow.ndim != 4 or flow.shape[-1] != 2:
        raise ParameterError(f"flow must be (T-1, h, w, 2), got shape {flow.shape}")
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_savez(path, {"flow": flow.astype(np.float16), "bound": np.float32(_check_bound(bound))})
    return path


def load_flow_npz(path) -> tuple[np.ndarray, float]:
    """Read a flow ``.npz``: ``(flow (T-1, h, w, 2) float16, bound)``; :class:`FormatError` if malformed."""
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as z:
            flow, bound = z["flow"], float(z["bound"])
    except (OSError, ValueError, KeyError) as exc:
        raise FormatError(path, f"not a flow .npz with 'flow' and 'bound' ({type(exc).__name__})") from None
    if flow.ndim != 4 or flow.shape[-1] != 2:
        raise FormatError(path, f"'flow' must be (T-1, h, w, 2), got shape {flow.shape}")
    return flow, bound
