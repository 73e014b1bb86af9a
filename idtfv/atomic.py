"""Atomic file writes shared by every stage: a temporary file next to the target, fsync, then ``os.replace``.

A reader (or a killed run) sees either the old file or the complete new one, never a partial write. Temporary
files are named ``.<name>.<host>-<pid>-<random>.tmp`` (:func:`writer_tag`: the machine and the process writing) and
get the umask's permissions (``mkstemp`` would give 0600); they are removed when the write fails. The one a killed
writer (SIGKILL, power loss) leaves is removed by :func:`remove_stale_temps` of the same output, which a command
writing one named output calls first.

A write that fails because the disk is full (``ENOSPC``, or ``EDQUOT`` for a used-up quota) raises
:class:`~idtfv.errors.DiskFullError`, whose message names the file ("no space left on device writing PATH");
:func:`disk_full_error` recognises such failures elsewhere (a stage writing its own files).
"""

from __future__ import annotations

import contextlib
import errno
import functools
import os
import re
import secrets
import shutil
import stat
from pathlib import Path

from idtfv.errors import DiskFullError, IdtfvError

__all__ = ["atomic_open", "atomic_path", "atomic_write_text", "check_replaceable", "disk_full_error", "free_bytes",
           "same_file", "temp_name", "writer_tag", "host_tag", "process_alive", "remove_stale_temps",
           "make_directory", "prepare_output_file", "DISK_FULL_ERRNOS"]

#: System error numbers that mean "the file system has no room for this write".
DISK_FULL_ERRNOS = frozenset(e for e in (errno.ENOSPC, getattr(errno, "EDQUOT", None)) if e is not None)


def disk_full_error(exc: BaseException, path=None) -> DiskFullError | None:
    """The :class:`~idtfv.errors.DiskFullError` that ``exc`` amounts to, or None if it is not a full disk.

    ``exc`` counts when it is a DiskFullError already, or an ``OSError`` whose ``errno`` is ENOSPC/EDQUOT; the
    path named is the one in the OSError, else ``path``, else ``"?"``.
    """
    if isinstance(exc, DiskFullError):
        return exc
    if isinstance(exc, OSError) and exc.errno in DISK_FULL_ERRNOS:
        where = exc.filename if exc.filename is not None else path
        return DiskFullError("?" if where is None else where, exc.errno)
    return None


def free_bytes(directory) -> int:
    """Bytes an unprivileged write may still use on the file system of ``directory`` (huge when unknown).

    For writers that report no error number (OpenCV's ``VideoWriter`` and ``imwrite`` only say "failed" or leave
    an empty file): when such a write failed and this is small, the disk is full.
    """
    try:
        return shutil.disk_usage(directory).free
    except OSError:
        return 1 << 62


def _raise_disk_full(exc: BaseException, path: Path) -> None:
    """Re-raise a full-disk failure while writing ``path`` as a DiskFullError naming ``path``."""
    if isinstance(exc, OSError) and exc.errno in DISK_FULL_ERRNOS:
        raise DiskFullError(path, exc.errno) from exc


#: st_mode test -> what to call an existing output that is not a regular file.
_SPECIAL = ((stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"), (stat.S_ISFIFO, "a FIFO"),
            (stat.S_ISSOCK, "a socket"), (stat.S_ISDIR, "a directory"))


def check_replaceable(path) -> None:
    """Refuse an output ``path`` that exists and is not a regular file (symlinks followed).

    An atomic write renames its temporary file onto ``path``: onto ``/dev/null`` or a FIFO that would put a regular
    file in place of the device (as root, ``-o /dev/null`` replaced ``/dev/null``), onto a directory it fails after
    all the work. A missing ``path`` or a regular file is fine.

    Raises
    ------
    idtfv.errors.IdtfvError
        ``PATH: not a regular file (a character device) ...``, naming what it is and what to give instead.
    """
    try:
        mode = os.stat(path).st_mode
    except OSError:  # missing (or unreachable: the write itself will say why)
        return
    if stat.S_ISREG(mode):
        return
    kind = next((name for test, name in _SPECIAL if test(mode)), "a special file")
    raise IdtfvError(f"{os.fspath(path)}: not a regular file ({kind}); an output is written under a temporary name "
                     "and renamed onto this one, which would replace it: give the name of a file to write")


def make_directory(directory, *, fix: str) -> None:
    """Create ``directory`` and its parents, or raise one line saying why not and how to fix it.

    A full disk is a :class:`~idtfv.errors.DiskFullError` naming ``directory``; any other refusal (a file where a
    folder of the path goes, a read-only or unwritable place, a folder such as ``/proc`` that takes no new entry)
    an :class:`~idtfv.errors.IdtfvError` ``"DIRECTORY: cannot create this directory (WHY); FIX"``, naming the
    file in the way when there is one, instead of the OS's bare ``[Errno N]``.
    """
    directory = Path(directory)
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        _raise_disk_full(exc, directory)
        blocker = next((p for p in (directory, *directory.parents) if p.exists() and not p.is_dir()), None)
        why = f"{blocker} is a file, not a directory" if blocker is not None else (exc.strerror or str(exc))
        raise IdtfvError(f"{directory}: cannot create this directory ({why}); {fix}") from None


def prepare_output_file(path, *, fix: str) -> None:
    """Before a long command's work: make sure its output file ``path`` can be written when the work is done.

    ``path`` is not a directory or a device (:func:`check_replaceable`), its folder exists (made:
    :func:`make_directory`) and takes a new file (a temporary of ``path`` is created and removed): a read-only
    folder, a file in the way or a full disk fails in one line before the work (``idtfv encode``'s GMM fits,
    ``idtfv features``' extraction), not after it. ``fix`` ends the line when the folder cannot be made.
    """
    path = Path(path)
    make_directory(path.parent, fix=fix)  # its one line for the folder; then what every atomic write starts with
    fd, tmp = _start(path)
    os.close(fd)
    with contextlib.suppress(OSError):
        os.unlink(tmp)


def same_file(a, b) -> bool:
    """Whether ``a`` and ``b`` both exist and are the same file (a link or another name of it included): an output
    that is one of a command's input files would be replaced by the atomic write."""
    a, b = Path(a), Path(b)
    try:
        return a.exists() and b.exists() and a.samefile(b)
    except OSError:
        return False


#: Longest file name (bytes) most file systems take (NAME_MAX).
_NAME_MAX = 255


def temp_name(name: str, tag: str, suffix: str = "") -> str:
    """``.<name>.<tag>.tmp<suffix>``, with ``name`` cut so that the whole stays within :data:`_NAME_MAX` bytes: an
    output whose own name is legal (up to 255 bytes) must not fail on its temporary name. ``suffix``: for writers
    that choose the format by the name's extension (OpenCV's video writer)."""
    room = _NAME_MAX - len(f"..{tag}.tmp{suffix}".encode())
    raw = os.fsencode(name)
    if len(raw) > room:
        name = raw[:room].decode("utf-8", "ignore") if os.name != "nt" else name[:room]
    return f".{name}.{tag}.tmp{suffix}"


@functools.cache
def host_tag() -> str:
    """6 hex digits naming this machine in temporary names (a shared file system may hold other machines' ones).

    The host name is ``os.uname().nodename`` (what ``socket.gethostname()`` returns on POSIX) where it exists:
    importing :mod:`socket` costs ~13 ms, and ``extract-trajectories`` names its staging directory at start-up."""
    import hashlib

    uname = getattr(os, "uname", None)
    if uname is not None:
        name = uname().nodename
    else:  # Windows
        import socket

        name = socket.gethostname()
    return hashlib.sha1(name.encode("utf-8", "surrogateescape")).hexdigest()[:6]


def process_alive(pid: int) -> bool:
    """Whether process ``pid`` of this machine may still be running (this process, another user's, or unknown:
    yes)."""
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # another user's process, or a platform without signals: keep its files
        return True
    return True


def writer_tag() -> str:
    """``<host>-<pid>-<random>``: the tag of a temporary name (:func:`temp_name`) that says which process of which
    machine writes it, so that :func:`remove_stale_temps` can tell a killed writer's leftover from a write in
    progress."""
    return f"{host_tag()}-{os.getpid()}-{secrets.token_hex(4)}"


#: The end of a temporary name with a :func:`writer_tag`: ``.<host>-<pid>-<random>.tmp``, then the suffix
#: :func:`temp_name` may add (``.mp4``).
_WRITER_TEMP = re.compile(r"\.(?P<tag>(?P<host>[0-9a-f]{6})-(?P<pid>[0-9]+)-[0-9a-f]{8})\.tmp(?P<suffix>\.[^.]*)?\Z")


def remove_stale_temps(path, *, name: str | None = None, suffix: str = "") -> list[Path]:
    """Remove what killed writers of ``path`` left next to it; return the paths removed.

    Only temporaries of ``path`` itself count: the names :func:`temp_name` gives ``path``'s name (or ``name``, for a
    writer whose temporary is named otherwise, e.g. ``--draw``'s ASCII ``idtfv-draw``) and ``suffix`` with a
    :func:`writer_tag` (files, or the staging directories ``extract-trajectories`` makes), written by a process of
    this machine that is gone. Another output's temporaries, a live writer's, another machine's and every other
    file are left alone. Failures to list or remove are ignored (the write that follows reports its own).
    """
    path = Path(path)
    stem = path.name if name is None else name
    removed = []
    try:
        entries = [e for e in os.scandir(path.parent) if e.name.startswith(".") and ".tmp" in e.name]
    except OSError:
        return removed
    host = host_tag()
    for entry in entries:
        match = _WRITER_TEMP.search(entry.name)
        if (match is None or temp_name(stem, match.group("tag"), suffix) != entry.name  # another output's
                or match.group("host") != host or process_alive(int(match.group("pid")))):  # a write in progress
            continue
        with contextlib.suppress(OSError):
            if entry.is_dir(follow_symlinks=False):
                shutil.rmtree(entry.path)
            else:
                os.unlink(entry.path)
            removed.append(Path(entry.path))
    return removed


def _create_temp(path: Path) -> tuple[int, str]:
    """Create ``.<name>.<writer tag>.tmp`` (:func:`temp_name`, :func:`writer_tag`) next to ``path`` with the umask's
    permissions."""
    for _ in range(100):
        tmp = path.parent / temp_name(path.name, writer_tag())
        try:
            return os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0), 0o666), str(tmp)
        except FileExistsError:
            continue
        except OSError as exc:  # named after the output, not the hidden temporary name the user never gave
            if exc.errno in DISK_FULL_ERRNOS:
                raise  # _start's DiskFullError names the output
            raise type(exc)(exc.errno, f"cannot create a file in {path.parent} ({exc.strerror or exc}); give an "
                                       "output in a folder you can write to", str(path)) from None
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
    fd, tmp = _start(path)
    try:
        with os.fdopen(fd, mode, **kwargs) as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        _raise_disk_full(exc, path)
        raise
    _fsync_dir(path.parent)


def _start(path: Path) -> tuple[int, str]:
    """Make the parent directory and the temporary file of a write to ``path``."""
    check_replaceable(path)
    try:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except FileExistsError:  # a file where a folder of path goes: say so (mkdir says 'File exists: <file>')
            raise NotADirectoryError(errno.ENOTDIR, f"{os.strerror(errno.ENOTDIR)} (a file is in the way of the "
                                                    "folder to write in)", str(path)) from None
        return _create_temp(path)
    except OSError as exc:
        _raise_disk_full(exc, path)
        raise


@contextlib.contextmanager
def atomic_path(path):
    """Yield a temporary path next to ``path`` for writers that only take a path (``savefig``, ``torch.save``).

    On success the file is fsync'ed and replaces ``path``; on failure it is removed. A writer that appends its own
    extension to a path (``np.savez``) should write through :func:`atomic_open` instead.
    """
    path = Path(path)
    fd, tmp = _start(path)
    os.close(fd)
    try:
        yield Path(tmp)
        with open(tmp, "rb+") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        _raise_disk_full(exc, path)
        raise
    _fsync_dir(path.parent)


def atomic_write_text(path, text: str) -> None:
    """Write ``text`` (UTF-8, newlines as given) to ``path`` atomically."""
    with atomic_open(path, "w", encoding="utf-8", newline="") as handle:
        handle.write(text)
