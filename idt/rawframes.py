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

:class:`RawframesWriter` and :class:`FlowNpzWriter` write them as the flows come (the flow stage's two formats),
:func:`save_flow_npz` the ``.npz`` of flows in memory; :class:`RawframesReader` is the one reader (random access by
frame / flow index, used by the CNN datasets of :mod:`idtfv.deep`).
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import cv2
import numpy as np

from idtfv.atomic import DISK_FULL_ERRNOS, remove_stale_temps, temp_name, writer_tag
from idtfv.errors import DiskFullError, FormatError, ParameterError

__all__ = [
    "DEFAULT_BOUND",
    "DEFAULT_QUALITY",
    "quantize_flow",
    "dequantize_flow",
    "RawframesWriter",
    "RawframesReader",
    "save_flow_npz",
    "FlowNpzWriter",
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
    """``.<name>.<host>-<pid>-<random>.tmp`` next to ``path`` (:func:`idtfv.atomic.temp_name` with the writer's
    :func:`~idtfv.atomic.writer_tag`): the writing process is named, so that the directory a killed writer left can
    be told from one being written (:func:`idtfv.atomic.remove_stale_temps`)."""
    return path.with_name(temp_name(path.name, writer_tag()))


def _imwrite(path: Path, img: np.ndarray, quality: int) -> None:
    """Encode with OpenCV, write with Python: a full disk raises ``OSError(ENOSPC)`` (which stops a dataset run)
    instead of ``cv2.imwrite``'s bare False (same bytes as ``cv2.imwrite``)."""
    ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    if not ok:
        raise ValueError(f"{path}: OpenCV could not encode a {img.shape} {img.dtype} image as JPEG")
    with open(path, "wb") as fh:
        fh.write(buf.tobytes())


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
        if self.video_dir.exists() and not self.video_dir.is_dir():  # commit() would replace it by a directory
            raise FormatError(self.video_dir, "exists and is not a directory, but a video's rawframes are one; move "
                                              "the file away or give the video another id (--video-id)")
        self.video_dir.parent.mkdir(parents=True, exist_ok=True)
        # what a killed writer of this video left (SIGKILL, power loss, SIGTERM to a dataset run's worker): partial
        # rawframes no rerun would otherwise remove
        remove_stale_temps(self.video_dir)
        self._tmp = _temp_sibling(self.video_dir)
        self._tmp.mkdir()

    def add_frame(self, rgb: np.ndarray) -> None:
        """Append RGB frame ``(h, w, 3)`` uint8 as ``img_{n+1:05d}.jpg``."""
        self.n_frames += 1
        if self.write_frames:
            self._write(frame_name("img", self.n_frames), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))

    def add_flow(self, flow: np.ndarray) -> None:
        """Append flow ``(h, w, 2)`` as ``flow_x/flow_y_{n+1:05d}.jpg``."""
        self.n_flows += 1
        qx, qy = quantize_flow(flow, self.bound)
        self._write(frame_name("flow_x", self.n_flows), qx)
        self._write(frame_name("flow_y", self.n_flows), qy)

    def _write(self, name: str, img: np.ndarray) -> None:
        """One JPEG into the temporary directory; a full disk is a DiskFullError naming ``video_dir`` (the
        ``OSError`` of a failed ``write`` names no file, and the temporary one is removed)."""
        try:
            _imwrite(self._tmp / name, img, self.quality)
        except OSError as exc:
            if exc.errno in DISK_FULL_ERRNOS:
                raise DiskFullError(self.video_dir, exc.errno) from exc
            raise

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
    # read by Python, decoded by OpenCV (the pixels of cv2.imread): OpenCV crashes on a name that is not UTF-8
    try:
        data = np.fromfile(path, np.uint8)
    except OSError:
        data = None
    img = None if data is None or data.size == 0 else cv2.imdecode(data, flags)
    if img is None:
        raise FormatError(path, "missing or not a readable JPEG; re-run extract-flow with --force for this video")
    return img


def _scan(d: Path) -> dict[str, int]:
    """Count the ``img``, ``flow_x`` and ``flow_y`` JPEGs of a rawframes directory; check the numbering."""
    found: dict[str, list[int]] = {"img": [], "flow_x": [], "flow_y": []}
    for entry in os.scandir(d):
        m = _NAME.match(entry.name)
        if m:
            found[m.group(1)].append(int(m.group(2)))
    for kind, idx in found.items():
        idx.sort()
        if idx != list(range(1, len(idx) + 1)):
            raise FormatError(d, f"{kind}_*.jpg are not numbered 1..{len(idx)} without gaps; re-run extract-flow "
                                 "with --force for this video")
    if len(found["flow_x"]) != len(found["flow_y"]):
        raise FormatError(d, f"{len(found['flow_x'])} flow_x but {len(found['flow_y'])} flow_y images; re-run "
                             "extract-flow with --force for this video")
    return {kind: len(idx) for kind, idx in found.items()}


class RawframesReader:
    """Random access to one video's rawframes: ``ROOT/<video_id>/`` JPEGs and/or ``ROOT/<video_id>.npz``.

    RGB frames come from the ``img_*.jpg``; flow from the ``flow_x/flow_y_*.jpg`` (dequantised with ``bound``,
    :func:`dequantize_flow`) when there are any, else from the ``.npz`` (clipped to the smaller of ``bound`` and
    the file's own bound, as the JPEG form would be).

    Parameters
    ----------
    root : path-like
        The rawframes directory (``extract-flow -o ROOT`` / ``idtfv flow --out ROOT``).
    video_id : str
        The video's id (its sub-directory / ``.npz`` stem).
    bound : float
        Flow bound :math:`b` (px) the JPEGs were written with.

    Attributes
    ----------
    n_frames : int
        :math:`T`: the ``img_*`` count, else the flow count + 1.
    n_flows : int
        :math:`T-1` flow fields (0 when there is no flow).
    has_frames, has_flow : bool

    Raises
    ------
    idtfv.errors.FormatError
        No rawframes for the video, gaps in the numbering, x/y counts that differ, a malformed ``.npz``.
    """

    def __init__(self, root, video_id: str, *, bound: float = DEFAULT_BOUND):
        self.root = Path(root)
        self.video_id = str(video_id)
        self.bound = _check_bound(bound)
        self.dir = self.root / self.video_id
        self.npz = self.root / f"{self.video_id}.npz"
        counts = _scan(self.dir) if self.dir.is_dir() else {"img": 0, "flow_x": 0, "flow_y": 0}
        self._npz_flow: np.ndarray | None = None
        self._npz_bound = self.bound
        self.has_frames = counts["img"] > 0
        self._jpg_flow = counts["flow_x"] > 0
        if self._jpg_flow:
            self.n_flows = counts["flow_x"]
        elif self.npz.is_file():
            self.n_flows = len(self._load_npz())
        elif self.has_frames:
            self.n_flows = 0
        else:
            raise FormatError(self.dir, f"no rawframes for this video (expected {self.dir.name}/img_00001.jpg, "
                                        f"{self.dir.name}/flow_x_00001.jpg or {self.npz.name}); run extract-flow "
                                        "(or idtfv flow) on it first")
        self.has_flow = self.n_flows > 0
        self.n_frames = counts["img"] if self.has_frames else self.n_flows + 1

    def _load_npz(self) -> np.ndarray:
        if self._npz_flow is None:
            self._npz_flow, self._npz_bound = load_flow_npz(self.npz)
        return self._npz_flow

    @staticmethod
    def _indices(idx, n: int, what: str) -> np.ndarray:
        idx = np.arange(n) if idx is None else np.asarray(idx, dtype=np.int64).reshape(-1)
        if idx.size and (idx.min() < 0 or idx.max() >= n):
            raise ParameterError(f"{what} index out of range 0..{n - 1}: got {idx.min()}..{idx.max()}")
        return idx

    def frames(self, idx=None) -> np.ndarray:
        """RGB frames ``(F, h, w, 3)`` uint8 at 0-based positions ``idx`` (all when None)."""
        if not self.has_frames:
            raise FormatError(self.dir, "has no img_*.jpg frames (a flow .npz holds none); read the frames from "
                                        "the video instead")
        idx = self._indices(idx, self.n_frames, "frame")
        out = [cv2.cvtColor(_imread(self.dir / frame_name("img", int(i) + 1), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
               for i in idx]
        return np.stack(out) if out else np.zeros((0, 0, 0, 3), np.uint8)

    def flow(self, idx=None) -> np.ndarray:
        """Flow fields ``(F, h, w, 2)`` float32 px at 0-based positions ``idx`` (field k: frame k -> k+1)."""
        if not self.has_flow:
            raise FormatError(self.dir, "has no flow (flow_x_*.jpg or .npz); run extract-flow on the video")
        idx = self._indices(idx, self.n_flows, "flow")
        if self._jpg_flow:
            out = [dequantize_flow(_imread(self.dir / frame_name("flow_x", int(i) + 1), cv2.IMREAD_GRAYSCALE),
                                   _imread(self.dir / frame_name("flow_y", int(i) + 1), cv2.IMREAD_GRAYSCALE),
                                   self.bound)
                   for i in idx]
            return np.stack(out) if out else np.zeros((0, 0, 0, 2), np.float32)
        b = np.float32(min(self.bound, self._npz_bound))  # the .npz is stored unclipped
        return np.clip(self._load_npz()[idx].astype(np.float32), -b, b)


def save_flow_npz(path, flow, *, bound: float = DEFAULT_BOUND) -> Path:
    """Write ``flow (T-1, h, w, 2)`` as float16 (not clipped) with ``bound`` to ``path``.

    Atomic and byte-deterministic (:func:`idtfv.cache.atomic_savez`: fixed zip timestamps). The partial temporary
    file a killed earlier writer of ``path`` left is removed first (:func:`idtfv.atomic.remove_stale_temps`).
    """
    from idtfv.cache import atomic_savez

    path = Path(path)
    flow = np.asarray(flow)
    if flow.ndim != 4 or flow.shape[-1] != 2:
        raise ParameterError(f"flow must be (T-1, h, w, 2), got shape {flow.shape}")
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temps(path)
    atomic_savez(path, {"flow": flow.astype(np.float16), "bound": np.float32(_check_bound(bound))})
    return path


#: DEFLATE level of a flow ``.npz``: zlib's default, as ``np.savez_compressed`` (and :func:`save_flow_npz`) write.
FLOW_NPZ_LEVEL = 6


class FlowNpzWriter:
    """One video's flow ``.npz`` written as its flows come: what :func:`save_flow_npz` writes of the stacked flows
    (the same arrays), without holding them.

    Each ``(h, w, 2)`` flow is converted to float16 and compressed at once into an unnamed scratch file next to
    ``path`` (:class:`idtfv.idt.npzstream.DeflateBody`: one DEFLATE stream, one ``compress`` call per flow, so the
    bytes depend only on the flows); :meth:`commit` prefixes the ``.npy`` header of ``(T - 1, h, w, 2)``, adds
    ``bound`` and writes the archive atomically. Memory: one flow, whatever the video's length (the stacked flows
    of a 10-minute 320x240 video are 4.6 GB in float16).

    Parameters
    ----------
    path : path-like
        The ``.npz`` to write (its directory is created).
    bound : float
        Stored as ``bound`` (the flows are not clipped).
    """

    def __init__(self, path, *, bound: float = DEFAULT_BOUND):
        import tempfile

        from idtfv.idt.npzstream import DeflateBody

        self.path = Path(path)
        self.bound = np.float32(_check_bound(bound))
        self.path.parent.mkdir(parents=True, exist_ok=True)
        remove_stale_temps(self.path)
        self._scratch = tempfile.TemporaryFile(dir=self.path.parent)  # unnamed: nothing left if the process dies
        self._body = DeflateBody(self._scratch, FLOW_NPZ_LEVEL)
        self.n_flows = 0
        self.shape: tuple[int, int] | None = None

    def add_frame(self, rgb: np.ndarray) -> None:
        """Nothing: a flow ``.npz`` holds no frames (the method makes the writer a drop-in for
        :class:`RawframesWriter`)."""

    def add_flow(self, flow: np.ndarray) -> None:
        """Append flow ``(h, w, 2)`` (every flow of the video the same size)."""
        flow = np.asarray(flow)
        if flow.ndim != 3 or flow.shape[-1] != 2 or (self.shape is not None and flow.shape[:2] != self.shape):
            raise ParameterError(f"{self.path}: flow must be (h, w, 2) as the video's first {self.shape}, got shape "
                                 f"{flow.shape}")
        self.shape = flow.shape[:2]
        try:
            self._body.compress(memoryview(np.ascontiguousarray(flow, np.float16)).cast("B"))
        except OSError as exc:  # the scratch file has no name: a full disk is reported under the output's
            raise self._named(exc) from exc
        self.n_flows += 1

    def _named(self, exc: OSError) -> OSError:
        """A full disk as a DiskFullError naming ``path`` (the runner then stops the run); other errors as they are."""
        from idtfv.atomic import disk_full_error

        full = disk_full_error(exc, self.path)  # the error's own file name when it has one, else path
        return full if full is not None else exc

    def commit(self) -> Path:
        """Write the archive (``flow``, ``bound``) atomically onto ``path``; return it."""
        import io

        from idtfv.atomic import atomic_open
        from idtfv.idt.npzstream import deflate_segment, write_zip

        if self.shape is None:
            raise ParameterError(f"{self.path}: no flow was added; a flow .npz holds at least one")
        self._body.finish()
        header = io.BytesIO()
        np.lib.format.write_array_header_1_0(header, {"descr": np.lib.format.dtype_to_descr(np.dtype(np.float16)),
                                                      "fortran_order": False,
                                                      "shape": (self.n_flows, *self.shape, 2)})
        bound = io.BytesIO()
        np.lib.format.write_array(bound, self.bound, allow_pickle=False)
        members = [("flow.npy", [deflate_segment(header.getvalue(), FLOW_NPZ_LEVEL, last=False),
                                 self._body.segment()]),
                   ("bound.npy", [deflate_segment(bound.getvalue(), FLOW_NPZ_LEVEL, last=True)])]
        try:
            with atomic_open(self.path, "wb") as handle:
                write_zip(handle, members)
        except OSError as exc:
            raise self._named(exc) from exc
        finally:
            self._scratch.close()
        return self.path

    def abort(self) -> None:
        """Drop what was written (the scratch file)."""
        self._scratch.close()


def load_flow_npz(path) -> tuple[np.ndarray, float]:
    """Read a flow ``.npz``: ``(flow (T-1, h, w, 2) float16, bound)``; :class:`FormatError` if malformed."""
    from idtfv.cache import open_npz

    path = Path(path)
    # open_npz: any damage (not a ZIP, a member failing zlib or its CRC-32) is a FormatError naming the file
    with open_npz(path, remedy="re-run extract-flow with --force for this video") as z:
        missing = [k for k in ("flow", "bound") if k not in z]
        if missing:
            raise FormatError(path, f"not a flow .npz: no {' or '.join(repr(k) for k in missing)} array; expected "
                                    "'flow' and 'bound' (as extract-flow --format npz writes)")
        flow, bound = z["flow"], z["bound"]
    if bound.shape != () or bound.dtype.kind not in "fiu":
        raise FormatError(path, f"'bound' must be one number, got dtype {bound.dtype} shape {bound.shape}")
    bound = float(bound)
    if flow.ndim != 4 or flow.shape[-1] != 2:
        raise FormatError(path, f"'flow' must be (T-1, h, w, 2), got shape {flow.shape}")
    return flow, bound
