"""The one video reader every stage of idtfv uses.

Frames are decoded lazily, one at a time, by OpenCV (FFmpeg backend) first and by PyAV when OpenCV cannot open
the file or decodes nothing from it. Whatever backend decodes, the output is the same:

* colour frames are ``uint8`` arrays of shape ``(H, W, 3)`` in **RGB** order;
* grey frames (``gray=True``) are ``uint8`` arrays of shape ``(H, W)``, computed from the decoded BGR frame exactly
  as ``cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY)`` does;
* with ``max_width`` a frame wider than ``max_width`` is shrunk to width ``max_width`` and height
  ``round(H * max_width / W)`` (aspect ratio kept, ``cv2.INTER_AREA``; sizes need not be even). The colour
  conversion happens first, at the source resolution, then the resize.

Frame counts are honest: :func:`probe_video` counts the frames that actually decode, not what the container's
header claims, and so does a reader that reads a file to its end (:attr:`VideoReader.decodable_frames`: one pass
instead of a count and then a decode). A truncated or corrupt stream yields the frames that decode and then stops,
with a :class:`TruncatedVideoWarning` naming the file and both counts when they differ by more than 5% and 2 frames
(:func:`collect_video_warnings` gathers those messages instead, for dataset runs); a stream from which nothing
decodes is an error.

Decoding uses one thread (:data:`DECODER_THREADS`): the process's threads are the caller's to spend. FFmpeg's
own default is a pool of frame or slice threads per decoder (one per core), which a dataset run multiplies by its
workers and which, beside ``extract-trajectories --threads N``, wakes on every frame and takes the cores the
extractor's threads are using.

Every problem with the input raises :class:`idtfv.errors.VideoError` whose one-line message names the file and says
what is wrong (missing file, a directory, a FIFO or device (refused before it is opened: reading a FIFO would block
forever), not a video, no decodable frame, start beyond the end (:class:`StartBeyondEndError`, which carries the
file's frame count), a frame too large).

Examples
--------
>>> from idtfv.video import open_video, iter_frames, probe_video
>>> info = probe_video("clip.avi")                              # doctest: +SKIP
>>> for frame in iter_frames("clip.avi", gray=True, max_width=320):  # doctest: +SKIP
...     ...
>>> with open_video("clip.avi", start=10, end=50) as reader:     # doctest: +SKIP
...     print(reader.fps, reader.width, reader.height)
...     frames = list(reader)
"""

from __future__ import annotations

import contextlib
import contextvars
import math
import os
import stat
import warnings
from collections.abc import Iterator
from dataclasses import dataclass

import cv2
import numpy as np

from idtfv.errors import VideoError

# FFmpeg (inside OpenCV) prints decoder chatter such as "[mjpeg @ 0x...] overread 8" on stderr for damaged files;
# we report those files ourselves in one line, so keep FFmpeg quiet unless the user asked for its logs.
os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")

__all__ = [
    "VideoInfo",
    "VideoReader",
    "probe_video",
    "iter_frames",
    "open_video",
    "require_frames",
    "DEFAULT_MAX_PIXELS",
    "DEFAULT_FPS",
    "DECODER_THREADS",
    "BACKENDS",
    "TruncatedVideoWarning",
    "StartBeyondEndError",
    "collect_video_warnings",
    "opencv_path",
    "FRAME_COUNT_TOLERANCE",
]

#: Largest frame (width * height of the *output* frame) accepted by default; larger frames are refused with a hint
#: to pass ``max_width``. 8192 x 8192 is 64 Mpixel: 192 MiB per colour frame.
DEFAULT_MAX_PIXELS = 8192 * 8192

#: Threads each decoder may use (OpenCV's ``CAP_PROP_N_THREADS``; PyAV's ``thread_count`` and its RGB conversion's
#: ``threads``). One: a dataset run has one process or thread per video and core, and ``extract-trajectories
#: --threads N`` decodes on a thread of its own; FFmpeg's default (a thread per core, frame threading for MPEG-4 and
#: H.264) oversubscribes both. Measured on vtest 320x240 (MPEG-4, 795 frames, 2 cores): the default's 3 extra
#: threads took 0.11-0.18 CPU-s and woke 400-1,100 times each per run; under ``--threads 2`` the extractor's front
#: thread was preempted 1,100-1,600 times (120-130 with one decoder thread) and waited 0.15-0.21 s for a CPU
#: (0.01-0.07 s). Decoding alone: the same frames, 0.27 CPU-s with one thread against 0.25-0.41 with the pool.
DECODER_THREADS = 1

#: Frame rate reported when neither backend can tell one (some raw streams carry none).
DEFAULT_FPS = 25.0

#: After this many consecutive failed reads in the middle of a stream the reader gives up, so that a backend that
#: keeps answering "no frame" forever cannot make the reader hang.
MAX_CONSECUTIVE_FAILED_READS = 8

#: Backend names accepted by ``backend=``.
BACKENDS = ("auto", "opencv", "pyav")

#: Decoded and declared frame counts may differ by up to this fraction of the declared count (or by up to
#: :data:`FRAME_COUNT_SLACK` frames, whichever is larger) before :class:`TruncatedVideoWarning` is raised.
FRAME_COUNT_TOLERANCE = 0.05
FRAME_COUNT_SLACK = 2


class StartBeyondEndError(VideoError):
    """The video decodes, but has no frame at the requested ``start``.

    Attributes
    ----------
    frames : int
        The number of decodable frames the file has (all of them were decoded to find out).
    """

    def __init__(self, path: str | os.PathLike, start: int, frames: int):
        self.start, self.frames = int(start), int(frames)
        super().__init__(path, f"start={self.start} is beyond the last decodable frame (the video has {self.frames} "
                               f"decodable frame{'s' if self.frames != 1 else ''}); pass a smaller start")


class TruncatedVideoWarning(UserWarning):
    """The frames that decode differ from the count the container declares (a truncated or damaged file).

    Raised once per video (per message) by :func:`probe_video` and at the end of a reader's iteration, naming the
    file and the two counts. Inside :func:`collect_video_warnings` the messages are gathered instead.
    """


_COLLECTOR: contextvars.ContextVar[list | None] = contextvars.ContextVar("idtfv_video_warnings", default=None)


@contextlib.contextmanager
def collect_video_warnings():
    """Gather the video warnings raised inside (in this thread / context) into a list instead of warning.

    Dataset runs use it so that a truncated file becomes a note in the stage index rather than a console line per
    video. Each distinct message is kept once.

    Yields
    ------
    list of str
        The warning messages, in the order they were first raised.
    """
    notes: list[str] = []
    token = _COLLECTOR.set(notes)
    try:
        yield notes
    finally:
        _COLLECTOR.reset(token)


def _check_frame_count(path: str, decoded: int, declared: int, *, reached_end: bool = False) -> None:
    """Warn when ``decoded`` frames differ from the ``declared`` count beyond the tolerance (unknown: -1).

    ``reached_end``: the last decoded frame's timestamp is at the end of the stream's declared duration. Fewer
    frames than declared then come from a variable frame rate (the count was duration x nominal rate, e.g. a
    phone's MKV), not from a file cut short: no warning.
    """
    if declared <= 0:
        return
    gap = abs(declared - decoded)
    if gap <= FRAME_COUNT_SLACK or gap <= FRAME_COUNT_TOLERANCE * declared:
        return
    if decoded < declared and reached_end:
        return
    if decoded < declared:
        message = (f"{path}: decoded {decoded} of {declared} frames the header declares; the file may be truncated "
                   "or damaged (only the decodable frames are used)")
    else:  # not a truncation: joined files, a variable frame rate or a header written before the end
        message = (f"{path}: decoded {decoded} frames, more than the {declared} the header declares; the header is "
                   "wrong (joined files, a variable frame rate?): all decoded frames are used")
    notes = _COLLECTOR.get()
    if notes is not None:
        if message not in notes:
            notes.append(message)
        return
    warnings.warn(message, TruncatedVideoWarning, stacklevel=3)


@dataclass(frozen=True)
class VideoInfo:
    """What a video holds, as seen by :mod:`idtfv.video`.

    Attributes
    ----------
    path : str
        The video file.
    frames : int
        Number of decodable frames (from :func:`probe_video` with ``count_frames=True``), or the container's
        claim (``count_frames=False``; ``-1`` when the container does not say).
    fps : float
        Frames per second from the container (:data:`DEFAULT_FPS` when unknown).
    width, height : int
        Size of the decoded (source) frames in pixels.
    backend : str
        ``"opencv"`` or ``"pyav"``: the backend that decoded the file.
    """

    path: str
    frames: int
    fps: float
    width: int
    height: int
    backend: str


# --------------------------------------------------------------------------------------------------------------
# Backends: a source decodes BGR frames one at a time. ``skip()`` decodes without converting (cheap seeking).
# --------------------------------------------------------------------------------------------------------------


class _OpenCVSource:
    name = "opencv"

    def __init__(self, path: str):
        self._fd = None
        if not _utf8_name(path):  # OpenCV crashes (SIGSEGV) on a name it cannot encode as UTF-8
            if not os.path.isdir("/proc/self/fd"):
                raise _CannotOpen("OpenCV cannot open a file name that is not valid UTF-8")
            self._fd = os.open(path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
            path = f"/proc/self/fd/{self._fd}"  # the same file, by a name OpenCV can take
        # FFmpeg explicitly: with CAP_ANY a path containing '%' would be taken for an image-sequence pattern.
        with _quiet_opencv():
            self._cap = cv2.VideoCapture(path, cv2.CAP_FFMPEG, [cv2.CAP_PROP_N_THREADS, DECODER_THREADS])
        if not self._cap.isOpened():
            self.close()
            raise _CannotOpen("OpenCV cannot open it")
        self.fps = _clean_fps(self._cap.get(cv2.CAP_PROP_FPS))
        n = self._cap.get(cv2.CAP_PROP_FRAME_COUNT)
        self.header_frames = int(n) if math.isfinite(n) and n > 0 else -1
        self.width = int(self._cap.get(cv2.CAP_PROP_FRAME_WIDTH))
        self.height = int(self._cap.get(cv2.CAP_PROP_FRAME_HEIGHT))
        self.last_msec: float | None = None  # timestamp of the last frame decoded (ms), for _reached_end

    def skip(self) -> bool:
        ok = bool(self._cap.grab())
        if ok:
            self.last_msec = self._cap.get(cv2.CAP_PROP_POS_MSEC)
        return ok

    def read(self) -> np.ndarray | None:
        ok, frame = self._cap.read()
        if not (ok and frame is not None and frame.size):
            return None
        self.last_msec = self._cap.get(cv2.CAP_PROP_POS_MSEC)
        return frame

    def close(self) -> None:
        self._cap.release()
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


@contextlib.contextmanager
def opencv_path(path):
    """Yield a name of ``path`` (a file to create, in an existing directory) that OpenCV's writers can take.

    OpenCV's Python binding crashes the process (SIGSEGV) on a name that does not encode as UTF-8 (``os.fsdecode``
    of Latin-1 bytes). Such a directory is reached through ``/proc/self/fd/N/NAME`` (Linux), N a descriptor of it
    held while inside; a UTF-8 path is yielded as it is.

    Raises
    ------
    idtfv.errors.VideoError
        The file's own name is not UTF-8, or there is no ``/proc/self/fd``.
    """
    path = os.fspath(path)
    if _utf8_name(path):
        yield path
        return
    directory, name = os.path.split(path)
    if not _utf8_name(name) or not os.path.isdir("/proc/self/fd"):
        raise VideoError(path, "not a valid UTF-8 file name, which OpenCV cannot take; give a UTF-8 name")
    fd = os.open(directory or ".", os.O_RDONLY | getattr(os, "O_DIRECTORY", 0) | getattr(os, "O_CLOEXEC", 0))
    try:
        yield f"/proc/self/fd/{fd}/{name}"
    finally:
        os.close(fd)


def _utf8_name(path: str) -> bool:
    """Whether ``path`` encodes as UTF-8: a file name of bytes that are not (``os.fsdecode``'s surrogates) does not,
    and OpenCV's Python binding crashes the process on it instead of raising."""
    try:
        path.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


class _PyAVSource:
    name = "pyav"

    def __init__(self, path: str):
        import av  # imported lazily: only needed for files OpenCV cannot read

        try:
            self._container = av.open(path)
        except Exception as exc:  # av raises many types (InvalidDataError, FileNotFoundError, ...)
            raise _CannotOpen(f"PyAV cannot open it ({_short(exc)})") from None
        if not self._container.streams.video:
            self._container.close()
            raise _CannotOpen("it has no video stream")
        stream = self._container.streams.video[0]
        stream.codec_context.thread_count = DECODER_THREADS
        rate = stream.average_rate or stream.guessed_rate or stream.base_rate
        self.fps = _clean_fps(float(rate) if rate else 0.0)
        self.header_frames = int(stream.frames) if stream.frames and stream.frames > 0 else -1
        self.width = int(stream.codec_context.width or 0)
        self.height = int(stream.codec_context.height or 0)
        self._frames = self._container.decode(stream)
        self._dead = False
        self._convert_threads = True  # whether to_ndarray takes a thread count (_bgr)
        self.last_msec = None  # its header count (nb_frames) is the container's own, not an estimate

    def _next(self):
        if self._dead:
            return None
        try:
            return next(self._frames)
        except Exception:  # StopIteration at the end, av errors on corrupt data: both end the stream
            self._dead = True
            return None

    def skip(self) -> bool:
        return self._next() is not None

    def read(self) -> np.ndarray | None:
        frame = self._next()
        if frame is None:
            return None
        try:
            return self._bgr(frame)
        except Exception:
            self._dead = True
            return None

    def _bgr(self, frame) -> np.ndarray:
        if self._convert_threads:
            try:  # PyAV >= 17 converts on a pool of threads (one per core) unless told
                return frame.to_ndarray(format="bgr24", threads=DECODER_THREADS)
            except TypeError:  # an older PyAV: no such option, and a conversion on the calling thread
                self._convert_threads = False
        return frame.to_ndarray(format="bgr24")

    def close(self) -> None:
        self._container.close()


@contextlib.contextmanager
def _quiet_opencv():
    """Silence OpenCV's own warnings (e.g. "can't be used to capture by name") while opening: we raise our own."""
    logging = getattr(getattr(cv2, "utils", None), "logging", None)
    if logging is None:
        yield
        return
    level = logging.getLogLevel()
    logging.setLogLevel(logging.LOG_LEVEL_ERROR)
    try:
        yield
    finally:
        logging.setLogLevel(level)


class _CannotOpen(Exception):
    """Internal: a backend cannot open the file (the next backend is tried)."""


_SOURCES = {"opencv": _OpenCVSource, "pyav": _PyAVSource}
_AUTO_ORDER = ("opencv", "pyav")


def _clean_fps(fps: float) -> float:
    return float(fps) if math.isfinite(fps) and 0.0 < fps < 10000.0 else DEFAULT_FPS


def _short(exc: BaseException) -> str:
    text = getattr(exc, "strerror", None) or str(exc)
    text = " ".join(text.split()) or type(exc).__name__
    return text[:120]


# --------------------------------------------------------------------------------------------------------------
# The reader
# --------------------------------------------------------------------------------------------------------------


class VideoReader:
    """Lazy frame reader for one video; use :func:`open_video` to make one.

    The reader opens the file, skips to frame ``start`` and decodes that first frame at once, so that a file which
    does not decode fails at open time with a :class:`~idtfv.errors.VideoError`. Iterating yields frames
    ``start, start+1, ..., end-1`` (or up to the last decodable frame); a reader can be iterated once.

    Attributes
    ----------
    info : VideoInfo
        The source video as the container describes it; ``info.frames`` is the header's claim (``-1`` if absent)
        unless the reader was opened with ``count_frames=True``, in which case it counts decodable frames.
    fps : float
        Frames per second.
    width, height : int
        Size of the *output* frames (after ``max_width``).
    start, end : int, int | None
        The requested frame range ``[start, end)``.
    frames_read : int
        Number of frames yielded so far.
    decodable_frames : int or None
        The file's number of decodable frames, known once the iteration met the end of the stream (``start +
        frames_read`` then); ``None`` before, and when the iteration stopped at ``end``. A caller that reads a file
        once learns its honest count this way, without :func:`probe_video`'s extra decode pass.
    """

    def __init__(
        self,
        path: str | os.PathLike,
        *,
        gray: bool = False,
        max_width: int | None = None,
        start: int = 0,
        end: int | None = None,
        backend: str = "auto",
        max_pixels: int = DEFAULT_MAX_PIXELS,
        count_frames: bool = False,
    ):
        self.path = os.fspath(path)
        self.gray = bool(gray)
        self.start = _check_index(self.path, "start", start, minimum=0)
        self.end = None if end is None else _check_index(self.path, "end", end, minimum=0)
        if self.end is not None and self.end <= self.start:
            raise VideoError(self.path, f"end={self.end} must be greater than start={self.start}; "
                                        "the range is [start, end)")
        if max_width is not None and (not _is_int(max_width) or max_width < 1):
            raise VideoError(self.path, f"max_width must be a positive integer or None, got {max_width!r}")
        self.max_width = None if max_width is None else int(max_width)
        if not _is_int(max_pixels) or max_pixels < 1:
            raise VideoError(self.path, f"max_pixels must be a positive integer, got {max_pixels!r}")
        self.max_pixels = int(max_pixels)
        if backend not in BACKENDS:
            raise VideoError(self.path, f"unknown backend {backend!r}; expected one of {', '.join(BACKENDS)}")
        _check_file(self.path)

        frames = _count_decodable(self.path, backend) if count_frames else None
        self._source, self._first, info = self._open(backend)
        if frames is not None:
            info = VideoInfo(info.path, frames, info.fps, info.width, info.height, info.backend)
        self.info = info
        self.header_frames = self._source.header_frames
        self.fps = info.fps
        h, w = self._first.shape[:2]
        self.height, self.width = _output_size(h, w, self.max_width)
        self._check_pixels(self.height, self.width, self._source)
        self.frames_read = 0
        self.decodable_frames: int | None = None
        self._iterated = False
        self._closed = False

    # -- opening -----------------------------------------------------------------------------------------------------

    def _open(self, backend: str):
        """Open with the first backend that decodes frame ``start``; return (source, first BGR frame, info)."""
        order = _AUTO_ORDER if backend == "auto" else (backend,)
        problems = []
        for name in order:
            try:
                source = _SOURCES[name](self.path)
            except _CannotOpen as exc:
                problems.append(str(exc))
                continue
            if source.width > 0 and source.height > 0:  # refuse absurd sizes before decoding a single frame
                self._check_pixels(*_output_size(source.height, source.width, self.max_width), source)
            skipped = 0
            while skipped < self.start and source.skip():
                skipped += 1
            first = source.read() if skipped == self.start else None
            if first is None:
                source.close()
                decoded = skipped + (first is not None)
                if decoded > 0:  # the file decodes, it is just shorter than `start`
                    raise StartBeyondEndError(self.path, self.start, decoded)
                problems.append(f"{name} decodes no frame")
                continue
            first = _as_bgr(first)
            h, w = first.shape[:2]
            info = VideoInfo(self.path, source.header_frames, source.fps, w, h, source.name)
            return source, first, info
        raise VideoError(self.path, _diagnose(self.path, problems))

    def _check_pixels(self, height: int, width: int, source) -> None:
        if height * width > self.max_pixels:
            source.close()
            raise VideoError(
                self.path,
                f"frames of {width}x{height} exceed the limit of {self.max_pixels} pixels; "
                f"pass max_width (e.g. max_width=320) to shrink them, or raise max_pixels",
            )

    # -- iteration ---------------------------------------------------------------------------------------------------

    def _convert(self, bgr: np.ndarray) -> np.ndarray:
        bgr = _as_bgr(bgr)
        if bgr.shape[0] * bgr.shape[1] > 4 * self.max_pixels:  # frame size changed mid-stream to something absurd
            raise VideoError(self.path, f"frame {self.start + self.frames_read} is {bgr.shape[1]}x{bgr.shape[0]}, "
                                        f"beyond 4 x max_pixels={self.max_pixels}")
        out = cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY if self.gray else cv2.COLOR_BGR2RGB)
        if out.shape[1] != self.width or out.shape[0] != self.height:
            out = cv2.resize(out, (self.width, self.height), interpolation=cv2.INTER_AREA)
        return np.ascontiguousarray(out)

    def __iter__(self) -> Iterator[np.ndarray]:
        if self._iterated:
            raise VideoError(self.path, "this reader was already iterated; open the video again to re-read it")
        self._iterated = True
        return self._frames()

    def _frames(self) -> Iterator[np.ndarray]:
        if self._closed:
            return
        limit = None if self.end is None else self.end - self.start
        first, self._first = self._first, None
        if limit is not None and limit <= 0:
            return
        self.frames_read = 1
        yield self._convert(first)
        failures = 0
        while limit is None or self.frames_read < limit:
            frame = self._source.read()
            if frame is None:
                failures += 1
                if not _should_retry(self._source, failures, self.start + self.frames_read, self.header_frames):
                    end = self.start + self.frames_read  # the stream ended before the requested range did
                    self.decodable_frames = end
                    if self.end is None or end < min(self.end, self.header_frames):
                        _check_frame_count(self.path, end, self.header_frames,
                                           reached_end=_reached_end(self._source, self.header_frames))
                    return
                continue
            failures = 0
            self.frames_read += 1
            yield self._convert(frame)

    # -- context manager ---------------------------------------------------------------------------------------------

    def close(self) -> None:
        """Release the decoder (idempotent)."""
        if not self._closed:
            self._closed = True
            self._source.close()

    def __enter__(self) -> VideoReader:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __del__(self):  # pragma: no cover - best effort
        try:
            self.close()
        except Exception:
            pass

    def __repr__(self) -> str:
        return (f"VideoReader({self.path!r}, {self.width}x{self.height}, fps={self.fps:g}, "
                f"backend={self.info.backend!r}, gray={self.gray})")


# --------------------------------------------------------------------------------------------------------------
# Public functions
# --------------------------------------------------------------------------------------------------------------


def open_video(
    path: str | os.PathLike,
    *,
    gray: bool = False,
    max_width: int | None = None,
    start: int = 0,
    end: int | None = None,
    backend: str = "auto",
    max_pixels: int = DEFAULT_MAX_PIXELS,
    count_frames: bool = False,
) -> VideoReader:
    """Open a video for lazy reading; use as a context manager.

    Parameters
    ----------
    path : str or os.PathLike
        The video file.
    gray : bool
        Yield grey ``(H, W)`` frames instead of RGB ``(H, W, 3)``.
    max_width : int or None
        Shrink frames wider than this to this width, keeping the aspect ratio (``cv2.INTER_AREA``).
    start, end : int, int or None
        Frame range ``[start, end)``, 0-based; ``end=None`` reads to the last decodable frame.
    backend : {"auto", "opencv", "pyav"}
        ``"auto"`` tries OpenCV, then PyAV.
    max_pixels : int
        Refuse output frames with more pixels than this (:data:`DEFAULT_MAX_PIXELS`).
    count_frames : bool
        Decode the whole file once more to make ``reader.info.frames`` the count of decodable frames.

    Returns
    -------
    VideoReader

    Raises
    ------
    idtfv.errors.VideoError
        Missing file, a directory, a FIFO or device, not a video, no decodable frame, ``start`` beyond the end,
        bad options, frames larger than ``max_pixels``.
    """
    return VideoReader(path, gray=gray, max_width=max_width, start=start, end=end, backend=backend,
                       max_pixels=max_pixels, count_frames=count_frames)


def iter_frames(
    path: str | os.PathLike,
    *,
    gray: bool = False,
    max_width: int | None = None,
    start: int = 0,
    end: int | None = None,
    backend: str = "auto",
    max_pixels: int = DEFAULT_MAX_PIXELS,
) -> Iterator[np.ndarray]:
    """Yield the frames of a video lazily: ``uint8`` RGB ``(H, W, 3)`` or grey ``(H, W)``.

    A thin wrapper over :func:`open_video` that closes the decoder when the iteration ends. The file is opened (and
    errors raised) on the first ``next()``. See :func:`open_video` for the parameters.
    """
    with open_video(path, gray=gray, max_width=max_width, start=start, end=end, backend=backend,
                    max_pixels=max_pixels) as reader:
        yield from reader


def probe_video(path: str | os.PathLike, *, count_frames: bool = True, backend: str = "auto") -> VideoInfo:
    """Describe a video: decodable frame count, fps, size and the backend that reads it.

    Parameters
    ----------
    path : str or os.PathLike
        The video file.
    count_frames : bool
        Count frames by decoding the whole stream (honest; costs one decode pass). With ``False`` the container's
        claim is returned (``-1`` when it has none) and only the first frame is decoded.
    backend : {"auto", "opencv", "pyav"}

    Returns
    -------
    VideoInfo

    Raises
    ------
    idtfv.errors.VideoError
        When the file is missing or nothing in it decodes.
    """
    with open_video(path, backend=backend, max_pixels=np.iinfo(np.int64).max) as reader:
        info = reader.info
        if not count_frames:
            return info
        n = 1
        failures = 0
        while n < _FRAME_COUNT_CAP:
            if reader._source.skip():
                n, failures = n + 1, 0
            elif not _should_retry(reader._source, failures := failures + 1, n, info.frames):
                break
        _check_frame_count(info.path, n, info.frames, reached_end=_reached_end(reader._source, info.frames))
        return VideoInfo(info.path, n, info.fps, info.width, info.height, info.backend)


def require_frames(info_or_count: VideoInfo | int, n: int, path: str | os.PathLike | None = None) -> int:
    """Check that a video has at least ``n`` decodable frames; return the count.

    Parameters
    ----------
    info_or_count : VideoInfo or int
        A probe result or a frame count.
    n : int
        The minimum number of frames the caller needs (e.g. 2 for optical flow, ``L + 1`` for trajectories).
    path : str or os.PathLike, optional
        The file named in the error (taken from ``info_or_count.path`` when it is a :class:`VideoInfo`).

    Raises
    ------
    idtfv.errors.VideoError
        ``"<path>: only 1 decodable frame; need at least 2"``.
    """
    if isinstance(info_or_count, VideoInfo):
        count, where = info_or_count.frames, path if path is not None else info_or_count.path
    else:
        count, where = int(info_or_count), path if path is not None else "<video>"
    if count < n:
        raise VideoError(where, f"only {count} decodable frame{'s' if count != 1 else ''}; need at least {n}")
    return count


# --------------------------------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------------------------------

#: probe_video stops counting here (a guard against a decoder that never signals the end): 10 h at 100 fps.
_FRAME_COUNT_CAP = 3_600_000


def _count_decodable(path: str, backend: str) -> int:
    return probe_video(path, count_frames=True, backend=backend).frames


def _reached_end(source, header_frames: int) -> bool:
    """Whether the last frame ``source`` decoded is stamped at the end of the duration its header implies
    (``header_frames / fps``), within two frame intervals or :data:`FRAME_COUNT_TOLERANCE` of it: the stream was
    decoded to its end, however many frames that took."""
    last = getattr(source, "last_msec", None)
    if last is None or not math.isfinite(last) or header_frames <= 0 or not source.fps:
        return False
    duration = header_frames / source.fps * 1000.0
    return last >= duration - max(2000.0 / source.fps, FRAME_COUNT_TOLERANCE * duration)


def _should_retry(source, failures: int, position: int, header_frames: int) -> bool:
    """After a failed read at frame ``position``: retry only while the header says more frames follow (a decoder
    hiccup mid-stream) and fewer than :data:`MAX_CONSECUTIVE_FAILED_READS` reads in a row have failed."""
    return (source.name == "opencv" and failures < MAX_CONSECUTIVE_FAILED_READS
            and 0 <= position < header_frames)


def _output_size(h: int, w: int, max_width: int | None) -> tuple[int, int]:
    if max_width is None or w <= max_width:
        return h, w
    return max(1, int(round(h * max_width / w))), max_width


def _as_bgr(frame: np.ndarray) -> np.ndarray:
    if frame.dtype != np.uint8:  # 16-bit sources: keep the top 8 bits
        frame = (frame >> 8).astype(np.uint8) if frame.dtype == np.uint16 else frame.astype(np.uint8)
    if frame.ndim == 2:
        return cv2.cvtColor(frame, cv2.COLOR_GRAY2BGR)
    if frame.ndim == 3 and frame.shape[2] == 4:
        return cv2.cvtColor(frame, cv2.COLOR_BGRA2BGR)
    return frame


def _is_int(x) -> bool:
    return isinstance(x, (int, np.integer)) and not isinstance(x, bool)


def _check_index(path: str, name: str, value, *, minimum: int) -> int:
    if not _is_int(value) or value < minimum:
        raise VideoError(path, f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


#: st_mode test -> what to call a file that is not a regular file (a FIFO would block ``open`` forever).
_SPECIAL_FILES = ((stat.S_ISFIFO, "a FIFO"), (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
                  (stat.S_ISSOCK, "a socket"))


def _check_file(path: str) -> None:
    """Refuse anything but an existing, readable regular file (symlinks followed) before a decoder opens it."""
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        if os.path.islink(path):
            raise VideoError(path, f"a symbolic link to a missing file ({os.readlink(path)})") from None
        if not os.path.isabs(path):
            raise VideoError(path, "no such file; check the path (relative paths are taken from the current "
                                   "directory)") from None
        raise VideoError(path, "no such file; check the path (was the video moved or deleted?)") from None
    except OSError as exc:  # a name too long, a loop of symlinks, a component that is not a directory, ...
        raise VideoError(path, f"cannot access the file ({_short(exc)})") from None
    if stat.S_ISDIR(mode):
        raise VideoError(path, "is a directory, not a video file")
    if not stat.S_ISREG(mode):
        kind = next((name for test, name in _SPECIAL_FILES if test(mode)), "a special file")
        raise VideoError(path, f"not a regular file ({kind}); expected a video file")
    if not os.access(path, os.R_OK):
        raise VideoError(path, "the file is not readable (permission denied)")


def _mp4_without_index(path: str, size: int) -> bool:
    """Whether ``path`` is an ISO base media file (MP4, MOV, M4V, 3GP: ``ftyp`` first) whose top-level boxes hold
    no ``moov`` (the index of every frame, often written last: a file cut short loses it)."""
    try:
        with open(path, "rb") as fh:
            offset, first = 0, True
            while offset + 8 <= size:
                fh.seek(offset)
                head = fh.read(16)
                box_size, kind = int.from_bytes(head[:4], "big"), head[4:8]
                if first and kind != b"ftyp":
                    return False
                first = False
                if kind == b"moov":
                    return False
                if box_size == 1 and len(head) == 16:  # 64-bit size
                    box_size = int.from_bytes(head[8:16], "big")
                elif box_size == 0:  # to the end of the file
                    break
                if box_size < 8:
                    return False  # not a box structure after all
                offset += box_size
            return not first
    except OSError:
        return False


def _diagnose(path: str, problems: list[str]) -> str:
    size = os.path.getsize(path)
    if size == 0:
        return "the file is empty (0 bytes): no decodable frames"
    tried = "; ".join(problems)
    if all("cannot open" in p or "no video stream" in p for p in problems):
        if _mp4_without_index(path, size):
            return (f"an MP4/MOV without its frame index (no 'moov' box): the file was cut short while recorded, "
                    f"written or copied, and no frame can be found ({tried}); copy it again from its source")
        return f"not a readable video ({tried}); is it a video file in a format FFmpeg knows?"
    return f"no decodable frames ({tried}); the file may be truncated or corrupt"
