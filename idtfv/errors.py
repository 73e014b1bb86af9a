"""Exception types shared by every stage of idtfv.

Every user-facing failure is an :class:`IdtfvError`. Command-line tools catch it, print
``error: <message>`` on one line and exit with status 2; dataset runs record it per video and go on.
"""

from __future__ import annotations

import errno as _errno
import os

__all__ = ["IdtfvError", "VideoError", "ManifestError", "ParameterError", "FormatError", "DiskFullError",
           "EXIT_BAD_INPUT", "exception_text", "exception_line"]

#: Exit status of every CLI for bad input (a missing, corrupt or unsupported file, a bad option).
EXIT_BAD_INPUT = 2


class IdtfvError(Exception):
    """Base class of idtfv's own errors; the message is one line meant for the user."""


class _PathError(IdtfvError):
    def __init__(self, path: str | os.PathLike, problem: str):
        self.path = os.fspath(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}")


class VideoError(_PathError):
    """A video cannot be used: missing, not a video, no decodable frames, too short, too large."""


class FormatError(_PathError):
    """A data file (features, scores, codebook, manifest) is malformed."""


class ManifestError(IdtfvError):
    """A manifest or dataset description is inconsistent."""


class ParameterError(IdtfvError, ValueError):
    """An option has a value outside its allowed range."""


class DiskFullError(IdtfvError):
    """A write failed because the file system is full (``ENOSPC``) or the disk quota is used up (``EDQUOT``).

    Not a per-video problem: a run stops at the first one (every later write would fail too). ``path`` is the file
    being written and ``errno`` the system error number.
    """

    def __init__(self, path: str | os.PathLike, errno: int = _errno.ENOSPC):
        self.path = os.fspath(path)
        self.errno = errno
        what = "disk quota exceeded" if errno == getattr(_errno, "EDQUOT", None) else "no space left on device"
        super().__init__(f"{what} writing {self.path}; free some disk space (or write elsewhere) and rerun: "
                         "finished results are kept")

    def __reduce__(self):  # picklable (it travels back from worker processes) despite the custom signature
        return type(self), (self.path, self.errno)


def exception_text(exc: BaseException) -> str:
    """An exception's message; an ``OSError`` naming a file as ``FILE: reason`` (``FILE -> OTHER: reason`` for a
    rename) instead of Python's ``[Errno 13] Permission denied: 'FILE'``."""
    if isinstance(exc, OSError) and exc.filename is not None and exc.strerror:
        def shown(name):  # a path (str, bytes, PathLike) or the rare file descriptor
            return os.fsdecode(name) if isinstance(name, (str, bytes, os.PathLike)) else str(name)

        names = shown(exc.filename) if exc.filename2 is None else f"{shown(exc.filename)} -> {shown(exc.filename2)}"
        return f"{names}: {exc.strerror}"
    return str(exc)


def exception_line(exc: BaseException) -> str:
    """``TypeName: message`` on one line (whitespace folded; an OSError's message as :func:`exception_text` gives
    it): how a failure that is not idtfv's own is recorded (a dataset run's ``index.csv``, a damaged file's
    reason)."""
    text = " ".join(exception_text(exc).split())
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
