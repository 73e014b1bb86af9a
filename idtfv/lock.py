"""The one advisory lock of idtfv: every run that writes into a directory holds it while it writes.

Two runs writing the same directory at once would delete or overwrite each other's files (a stage removes leftover
temporary files when it starts; the dataset generator rebuilds ``videos/``). :func:`exclusive_lock` takes an
exclusive ``fcntl.flock`` on a lock file in that directory for the duration of a ``with`` block. The operating
system releases it when the process ends, however it ends (even SIGKILL), so a crashed run never leaves a stale
lock behind. A second run either fails at once with one clear line (``wait=False``, the stage runner) or waits for
the first to finish (``wait=True``, the dataset generator, which then finds the dataset complete).

Who holds it: the stage runner (``CACHE/<stage>-<hash>/``: ``idtfv features``, ``flow``, ``encode``), the dataset
generators (``wait=True``), the encode stage's codebook fit (``CACHE/codebook-<hash>/``, ``wait=True``: a second
fit of the same codebook waits and reuses it), and every command that writes an output directory, through
:func:`output_dir_lock` (``wait=False``): ``idtfv train-svm``, ``train-knn``, ``evaluate --out``, ``detect``,
``cv``, ``train-deep`` and ``flow`` (its rawframes directory). Commands that write one file (``fuse --out``,
``stack-scores``, ``encode --out``, ``features --out``, ``extract-flow``'s one video) write it atomically instead
(:mod:`idtfv.atomic`) and take no lock: two of them never leave a mixed file, and ``extract-flow`` runs for
different videos may share a directory.

On a system without ``fcntl`` (not POSIX), or a file system that refuses locks (some network mounts), the block
runs unlocked.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

from idtfv.atomic import make_directory
from idtfv.errors import IdtfvError

__all__ = ["exclusive_lock", "output_dir_lock", "LOCK_NAME"]

#: The lock file's name inside the directory it protects.
LOCK_NAME = ".lock"


def _to_stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


@contextlib.contextmanager
def exclusive_lock(lock_file: str | os.PathLike, *, what: str, wait: bool = False,
                   notify: Callable[[str], None] | None = None) -> Iterator[None]:
    """Hold an exclusive advisory lock on ``lock_file`` (created if missing) for the ``with`` block.

    Parameters
    ----------
    lock_file : path-like
        The lock file, normally ``<directory>/.lock``; its parent directory must exist.
    what : str
        What holds the lock, for the messages: e.g. ``"'features' run"``, ``"dataset generation"``.
    wait : bool
        When another process holds the lock: False raises at once, True waits until it is released.
    notify : callable, optional
        Receives the one-line notice printed before waiting (default: stderr).

    Raises
    ------
    IdtfvError
        With ``wait=False``, when another process holds the lock:
        ``"<directory>: another <what> is using this directory; ..."``.
    """
    try:
        import fcntl
    except ImportError:  # not POSIX: no lock
        yield
        return
    lock_file = Path(lock_file)
    directory = lock_file.parent
    fd = os.open(lock_file, os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o666)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            if not wait:
                raise IdtfvError(
                    f"{directory}: another {what} is using this directory; wait for it to finish (two runs at "
                    "once would delete or overwrite each other's files)"
                ) from None
            (notify or _to_stderr)(f"waiting for another {what} in {directory} to finish ...")
            fcntl.flock(fd, fcntl.LOCK_EX)
        except OSError:  # a file system without locks (some network mounts): go on unlocked
            pass
        yield
    finally:
        os.close(fd)


@contextlib.contextmanager
def output_dir_lock(directory: str | os.PathLike, *, what: str = "idtfv run") -> Iterator[Path]:
    """Create ``directory`` (and its parents) and hold its lock (``directory/.lock``, ``wait=False``) for the block.

    The lock of the commands that write an output directory (``idtfv train-svm --out DIR``, ...): a second run
    writing the same directory at the same time fails at once, before it writes anything, instead of interleaving
    its files with the first's. Take it once per directory and process (the lock is per open file: a second
    ``output_dir_lock`` of the same directory inside the block fails too).

    Parameters
    ----------
    directory : path-like
        The output directory.
    what : str
        What holds the lock, for the message (see :func:`exclusive_lock`).

    Yields
    ------
    Path
        ``directory``.

    Raises
    ------
    IdtfvError
        Another process holds the directory's lock: ``"<directory>: another idtfv run is using this directory;
        ..."``; or the directory cannot be created (:func:`idtfv.atomic.make_directory`).
    """
    directory = Path(directory)
    created = not directory.exists()
    make_directory(directory, fix="give an output directory you can write to")
    with exclusive_lock(directory / LOCK_NAME, what=what):
        try:
            yield directory
        except BaseException:
            if created:  # a run that failed before writing anything leaves no directory behind (nor its lock)
                _remove_if_only_lock(directory)
            raise


def _remove_if_only_lock(directory: Path) -> None:
    """Remove ``directory`` when its lock file is all it holds (while the lock is still held)."""
    with contextlib.suppress(OSError):
        if [p.name for p in directory.iterdir()] == [LOCK_NAME]:
            (directory / LOCK_NAME).unlink()
            directory.rmdir()
