"""Atomic file writes shared by every stage: a temporary file next to the target, fsync, then ``os.replace``.

A reader (or a killed run) sees either the old file or the complete new one, never a partial write. Temporary
files are named ``.<name>.<random>.tmp`` and get the umask's permissions (``mkstemp`` would give 0600); they are
removed when the write fails.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from pathlib import Path

__all__ = ["atomic_open", "atomic_path", "atomic_write_text"]


def _create_temp(path: Path) -> tuple[int, str]:
    """Create ``.<name>.<random>.tmp`` next to ``path`` with the umask's permissions."""
    for _ in range(100):
        tmp = path.parent / f".{path.name}.{secrets.token_hex(6)}.tmp"
        try:
            return os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0), 0o666), str(tmp)
        except FileExistsError:
            continue
    raise FileExistsError(f"{path.parent}: cannot create a unique temporary file for {path.name}")


def _fsync_dir(directory: Path) -> None:
    """Make a rename durable (best effort: some file systems refuse to open directories)."""
    with contextlib.suppress(OSError):
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


@contextlib.contextmanager
def atomic_open(path, mode: str = "wb", **kwargs):
    """Open a temporary file next to ``path``; on success fsync it and ``os.replace`` it onto ``path``.

    The parent directory is created if missing. ``mode`` and ``kwargs`` are those of :func:`open`.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = _create_temp(path)
    try:
        with os.fdopen(fd, mode, **kwargs) as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    _fsync_dir(path.parent)


@contextlib.contextmanager
def atomic_path(path):
    """Yield a temporary path next to ``path`` for writers that only take a path (``savefig``, ``torch.save``).

    On success the file is fsync'ed and replaces ``path``; on failure it is removed. A writer that appends its own
    extension to a path (``np.savez``) should write through :func:`atomic_open` instead.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = _create_temp(path)
    os.close(fd)
    try:
        yield Path(tmp)
        with open(tmp, "rb+") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    _fsync_dir(path.parent)


def atomic_write_text(path, text: str) -> None:
    """Write ``text`` (UTF-8, newlines as given) to ``path`` atomically."""
    with atomic_open(path, "w", encoding="utf-8", newline="") as handle:
        handle.write(text)
