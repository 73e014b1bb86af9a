"""The stage cache: parameter hashing and atomic, pickle-free file writes.

Layout (docs/CONTRACTS.md, "Cache and per-video artifacts")::

    CACHE/<stage>-<hash12>/params.json      the stage parameters, written once
    CACHE/<stage>-<hash12>/index.csv        video_id,status,seconds,error (see :mod:`idtfv.runner`)
    CACHE/<stage>-<hash12>/<video_id>.npz   one result per video
    CACHE/<stage>-<hash12>/<video_id>.source   the fingerprint of what it was computed from (see below)

``hash12`` is the first 12 hex digits of SHA-256 over the canonical JSON of ``{"params": params,
"version": idtfv.__version__}``: keys sorted, no whitespace, UTF-8, no NaN/Infinity. Changing any parameter or the
package version therefore gives a new directory, and a finished directory is never reused for other settings.

Every file is written to a temporary name in its final directory (``.<name>.<host>-<pid>-<random>.tmp``), flushed
and fsync'ed, then moved over the final name with :func:`os.replace`, which is atomic on POSIX file systems: a reader
(or a run killed at any instant) sees either the old complete file or the new complete file, never a partial one.
Leftover temporary files of a killed run match :data:`TMP_GLOB` and are removed by :func:`remove_stale_temp_files`.

``.npz`` files are written by :func:`atomic_savez` in NumPy's own ``savez_compressed`` format (a ZIP of ``.npy``
members, DEFLATE), but with a fixed member timestamp so that equal arrays give equal file bytes whatever the
time, the worker or the scheduler (``np.savez_compressed`` stamps the current time into every member).

A result depends on the stage parameters (the directory) and on the video's own input, which the parameters do
not name: a stage whose input is a file (a video) records :func:`file_fingerprint` of it beside the result, and
the runner recomputes a result whose input's fingerprint has changed (a video replaced in place, another dataset's
video under the same id), see :mod:`idtfv.runner`.

Per-video file names are the video ids, which may differ only in case (``v_Walk_g01`` and ``v_walk_g01``). On a
case-insensitive file system (macOS's default APFS/HFS+, Windows NTFS, FAT/exFAT drives, SMB shares) two such ids
name one file, so one video's result would overwrite the other's or be taken for it: :func:`check_case_twins`
refuses a run with such ids there (:func:`case_insensitive` probes the directory); on a case-sensitive file system
they are two files, as they should be.

Reading: :func:`load_valid` and :func:`check_npz` (the runner's "is this result done?", without loading it) treat
a missing, truncated or corrupt ``.npz`` as not done, so the runner recomputes it; :func:`open_npz` (a later stage
reading an earlier one's results) raises a :class:`~idtfv.errors.FormatError` that names the file and says how to
recompute it.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import re
import secrets
import zipfile
from collections.abc import Collection, Iterator, Mapping
from pathlib import Path

import numpy as np

from idtfv.atomic import atomic_open as _atomic_open
from idtfv.atomic import atomic_write_text, disk_full_error, temp_name
from idtfv.errors import FormatError, IdtfvError, ManifestError, ParameterError, exception_line

__all__ = [
    "HASH_LENGTH",
    "NPZ_COMPRESSLEVEL",
    "TMP_GLOB",
    "canonical_json",
    "param_hash",
    "stage_dir",
    "atomic_savez",
    "atomic_write_text",
    "atomic_write_json",
    "load_valid",
    "check_npz",
    "take_rows",
    "open_npz",
    "NpzArchive",
    "remove_stale_temp_files",
    "file_fingerprint",
    "FINGERPRINT_SAMPLE",
    "not_npz",
    "NPZ_HEAD",
    "case_insensitive",
    "check_case_twins",
]

#: Number of hex digits of the SHA-256 parameter hash used in stage directory names.
HASH_LENGTH = 12
#: Glob pattern of the temporary files that :func:`idtfv.atomic.atomic_open` creates (and a killed run may leave behind).
TMP_GLOB = ".*.tmp"
#: Member timestamp of every ``.npz`` written here: the earliest date a ZIP file can hold (1980-01-01 00:00:00).
_ZIP_EPOCH = (1980, 1, 1, 0, 0, 0)
_STAGE_RE = re.compile(r"[A-Za-z0-9_-]+")
_KEY_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def _package_version() -> str:
    from idtfv import __version__

    return str(__version__)


def _jsonable(obj, where: str):
    """Return ``obj`` as plain JSON types (dict/list/str/int/float/bool/None), or raise ParameterError."""
    if obj is None or isinstance(obj, (bool, str)):
        return obj
    if isinstance(obj, (int, np.integer)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        value = float(obj)
        if not math.isfinite(value):
            raise ParameterError(
                f"stage parameter {where} is {value}; expected a finite number (JSON has no NaN/Infinity)"
            )
        return value
    if isinstance(obj, np.bool_):
        return bool(obj)
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    if isinstance(obj, Mapping):
        out = {}
        for key, value in obj.items():
            if not isinstance(key, str):
                raise ParameterError(
                    f"stage parameter {where} has key {key!r} of type {type(key).__name__}; expected str keys"
                )
            out[key] = _jsonable(value, f"{where}.{key}")
        return out
    if isinstance(obj, (list, tuple)):
        return [_jsonable(value, f"{where}[{i}]") for i, value in enumerate(obj)]
    if isinstance(obj, np.ndarray) and obj.ndim == 1 and obj.dtype.kind in "biuf":
        return [_jsonable(value, f"{where}[{i}]") for i, value in enumerate(obj.tolist())]
    raise ParameterError(
        f"stage parameter {where} has type {type(obj).__name__}; expected JSON types "
        "(dict, list, str, int, float, bool, None) — convert it, e.g. with a to_dict() method"
    )


def canonical_json(obj) -> str:
    """Canonical JSON text of ``obj``: sorted keys, no whitespace, non-ASCII kept, NaN/Infinity refused.

    Tuples become lists, NumPy scalars become Python numbers and paths become strings, so that values that
    are equal as JSON give the same text. Raises :class:`~idtfv.errors.ParameterError` for anything else.
    """
    return json.dumps(
        _jsonable(obj, "params"), sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    )


def param_hash(params: Mapping, *, version: str | None = None) -> str:
    """First :data:`HASH_LENGTH` hex digits of SHA-256 of the canonical JSON of the parameters and version.

    Parameters
    ----------
    params : mapping
        JSON-serialisable stage parameters.
    version : str, optional
        Package version mixed into the hash; default ``idtfv.__version__``.
    """
    if version is None:
        version = _package_version()
    text = canonical_json({"params": params, "version": version})
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:HASH_LENGTH]


def stage_dir(cache_root, stage: str, params: Mapping, *, create: bool = True) -> Path:
    """The cache directory ``cache_root/<stage>-<hash12>`` of a stage run with these parameters.

    With ``create=True`` (default) the directory is made if needed and ``params.json`` (the parameters and the
    package version, pretty-printed) is written once, atomically; an existing ``params.json`` is left alone.

    Raises
    ------
    ParameterError
        If ``stage`` is not a plain name (letters, digits, ``_``, ``-``) or ``params`` is not JSON-serialisable.
    IdtfvError
        If the directory cannot be made there (a read-only or unwritable cache, a file in the way): one line naming
        the cache and the fix, not the OS's bare ``[Errno N]``.
    """
    if not isinstance(stage, str) or not _STAGE_RE.fullmatch(stage):
        raise ParameterError(
            f"stage name {stage!r} is not allowed; expected letters, digits, '_' or '-' (e.g. 'features')"
        )
    version = _package_version()
    path = Path(cache_root) / f"{stage}-{param_hash(params, version=version)}"
    if create:
        try:
            path.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            if disk_full_error(exc) is not None:
                raise  # a full disk stops the run as anywhere else (the runner names the file)
            raise IdtfvError(f"{cache_root}: cannot create the {stage!r} stage directory {exc.filename or ''} "
                             f"there ({exc.strerror or exc}); the cache must be a writable directory: give another "
                             "--cache (make: CACHE=DIR)") from None
        params_file = path / "params.json"
        if not params_file.exists():
            record = {"stage": stage, "version": version, "params": _jsonable(params, "params")}
            atomic_write_json(params_file, record)
    return path


def atomic_write_json(path, obj) -> None:
    """Write ``obj`` as indented, key-sorted JSON (with a final newline) to ``path`` atomically."""
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True, ensure_ascii=False, allow_nan=False) + "\n")


#: DEFLATE level of the project's own ``.npz`` outputs (the dataset stages' per-video files, ``extract-trajectories
#: -o X.npz``, ``Trajectories.save``) when none is given. On real iDT output level 1 is ~1% larger than zlib's
#: default 6 and faster to write (float descriptors barely compress): ``bench/bench_pipeline.py``'s "real iDT
#: output" row in bench/RESULTS.md races the two.
NPZ_COMPRESSLEVEL = 1


def atomic_savez(path, arrays: Mapping[str, np.ndarray], *, compresslevel: int | None = None,
                 huffman_only: Collection[str] = ()) -> None:
    """Save arrays as a compressed ``.npz`` atomically, with deterministic bytes and no pickles.

    Parameters
    ----------
    path : path-like
        Destination, normally ending in ``.npz``.
    arrays : mapping of str to array-like
        Member name -> array; names must be identifiers (``np.load`` keys). Object arrays are refused, so
        the file always loads with ``allow_pickle=False``. Strings go in as NumPy unicode arrays (e.g. a 0-d
        ``np.array(json_text)``).
    compresslevel : int, optional
        DEFLATE level 0-9; default zlib's (6), as ``np.savez_compressed``. Level 1 writes about 3x faster and
        about 15% larger files on descriptor-like data (``bench/bench_pipeline.py``).
    huffman_only : collection of str
        Names of members compressed with Huffman codes only (zlib's ``Z_HUFFMAN_ONLY``: no string matching), at
        levels 1-9: for float arrays whose bytes rarely repeat (iDT descriptors: within 2% of the size, 2.5-3x less
        CPU to write and ~10% less to read). Names not in ``arrays`` are ignored.

    Raises
    ------
    FormatError
        If ``arrays`` is not a mapping of valid names to non-object arrays.
    """
    if compresslevel is not None and (isinstance(compresslevel, bool) or compresslevel not in range(10)):
        raise ParameterError(f"compresslevel must be an integer 0-9 or None, got {compresslevel!r}")
    if isinstance(huffman_only, str):
        raise ParameterError(f"huffman_only must be a collection of array names, got the string {huffman_only!r}")
    if not isinstance(arrays, Mapping):
        raise FormatError(path, f"expected a dict of name -> numpy array to save, got {type(arrays).__name__}")
    prepared = []
    for name, value in arrays.items():
        if not isinstance(name, str) or not _KEY_RE.fullmatch(name):
            raise FormatError(path, f"array name {name!r} is not allowed; expected an identifier such as 'hog'")
        array = np.asanyarray(value)
        if array.dtype.hasobject:
            raise FormatError(
                path, f"array {name!r} has dtype object; expected numeric or unicode arrays (no pickles)"
            )
        prepared.append((name, array))
    with (
        _atomic_open(path, "wb") as handle,
        zipfile.ZipFile(handle, mode="w", compression=zipfile.ZIP_DEFLATED, allowZip64=True,
                        compresslevel=compresslevel) as archive,
    ):
        for name, array in prepared:
            info = zipfile.ZipInfo(f"{name}.npy", date_time=_ZIP_EPOCH)
            info.compress_type = zipfile.ZIP_DEFLATED
            _set_compress_level(info, compresslevel)
            info.external_attr = 0o644 << 16
            with archive.open(info, mode="w", force_zip64=True) as member:
                if name in huffman_only and compresslevel != 0:
                    _huffman_only(member)
                np.lib.format.write_array(member, array, allow_pickle=False)


def _huffman_only(member) -> None:
    """Give a member just opened for writing a compressor of Huffman-coded literals (zlib's Huffman-only strategy,
    written by :class:`idtfv.deflate.HuffmanDeflate`). :mod:`zipfile` has no option for the strategy: the member
    writer's compressor (its private ``_compressor``, as in CPython 3.11) is swapped before any byte is written.
    Where a Python lacks it the member keeps zipfile's default strategy: the same arrays in a file written more
    slowly, which ``tests/test_npz_huffman.py`` would report."""
    if getattr(member, "_compressor", None) is not None and getattr(member, "_file_size", None) == 0:
        from idtfv.deflate import HuffmanDeflate

        member._compressor = HuffmanDeflate()


def _set_compress_level(info: zipfile.ZipInfo, level: int | None) -> None:
    # a ZipInfo passed to ZipFile.open carries its own level: compress_level (Python >= 3.13), _compresslevel before
    if hasattr(info, "compress_level"):
        info.compress_level = level
    else:
        info._compresslevel = level


#: Bytes read from each end of a file by :func:`file_fingerprint`.
FINGERPRINT_SAMPLE = 64 * 1024


def file_fingerprint(path) -> str:
    """What identifies a file's content, cheaply: ``"<size>:<sha1 of its first and last 64 KiB>"`` (20 hex digits).

    Neither its name nor its time stamps: a dataset copied or moved elsewhere keeps its fingerprints, a video
    replaced by another (a re-encoded or repaired file, another dataset's clip of the same name) does not (its
    size, container header or index differ). At most 128 KiB is read, so a resumed run over a large dataset stays
    cheap.

    Raises
    ------
    OSError
        When the file cannot be read.
    """
    digest = hashlib.sha1()
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        digest.update(f.read(FINGERPRINT_SAMPLE))
        if size > FINGERPRINT_SAMPLE:
            f.seek(max(FINGERPRINT_SAMPLE, size - FINGERPRINT_SAMPLE))
            digest.update(f.read(FINGERPRINT_SAMPLE))
    return f"{size}:{digest.hexdigest()[:20]}"


def load_valid(path) -> dict[str, np.ndarray] | None:
    """Load every array of an ``.npz`` file, or return None if it is missing, truncated or corrupt.

    All members are read in full (which checks each member's CRC-32), with ``allow_pickle=False``.
    """
    path = Path(path)
    if not path.is_file():
        return None
    try:
        # our own file object: np.load leaves the file it opened open when the ZIP cannot be read
        with open(path, "rb") as f, np.load(f, allow_pickle=False) as data:
            return {name: data[name] for name in data.files}
    except Exception:  # noqa: BLE001 - any failure to read means "not a valid result"
        return None


#: Bytes decompressed at a time by :func:`check_npz` and :func:`take_rows`.
_CHECK_CHUNK = 1 << 20


def _npy_header(member) -> tuple[tuple[int, ...], bool, np.dtype]:
    """``(shape, fortran_order, dtype)`` of the ``.npy`` data that the open stream ``member`` starts with (format
    1.0 or 2.0; others raise ValueError), leaving the stream at the array's first byte."""
    version = np.lib.format.read_magic(member)
    if version == (1, 0):
        return np.lib.format.read_array_header_1_0(member)
    return np.lib.format.read_array_header_2_0(member)


def check_npz(path) -> list[str] | None:
    """The array names of an ``.npz`` file that :func:`load_valid` would load, or None where it would return None;
    without loading it: each member is decompressed in 1 MiB pieces, its CRC-32 checked, and its ``.npy`` header
    read (a pickled member is refused), so memory stays flat whatever the file's size (the runner's "is this
    result done?" on a long video's trajectories).
    """
    path = Path(path)
    if not path.is_file():
        return None
    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
            if not names or not all(n.endswith(".npy") for n in names):
                return None
            for name in names:
                with archive.open(name) as member:  # reading to its end checks the CRC-32 (BadZipFile if not)
                    if _npy_header(member)[2].hasobject:
                        return None
                    while member.read(_CHECK_CHUNK):
                        pass
    except Exception:  # noqa: BLE001 - any failure to read means "not a valid result"
        return None
    return [n[:-4] for n in names]


def take_rows(path, name: str, rows: np.ndarray) -> np.ndarray:
    """``np.load(path)[name][rows]`` for sorted row indices, reading the member once in ~1 MiB pieces instead of
    loading it (memory: the rows taken and one piece).

    Parameters
    ----------
    path : path-like
        An ``.npz`` file.
    name : str
        A member holding a C-ordered array of at least one dimension (not pickled).
    rows : (m,) int array
        Indices into the first axis, ascending (repeats allowed).

    Raises
    ------
    FormatError
        The file or member cannot be read, or holds what this cannot slice (naming the file).
    """
    rows = np.asarray(rows, np.int64)
    if rows.ndim != 1 or (rows.size > 1 and np.any(np.diff(rows) < 0)):
        raise ParameterError(f"take_rows: rows must be a 1-D ascending index array, got shape {rows.shape}")
    try:
        with zipfile.ZipFile(path) as archive, archive.open(name + ".npy") as member:
            shape, fortran, dtype = _npy_header(member)
            if dtype.hasobject or fortran or len(shape) == 0:
                raise FormatError(path, f"member {name!r}: expected a C-ordered numeric array, got shape {shape}, "
                                        f"dtype {dtype}{', Fortran order' if fortran else ''}")
            n = shape[0]
            if rows.size and (rows[0] < 0 or rows[-1] >= n):
                raise ParameterError(f"take_rows: row indices must lie in 0..{n - 1}, got {rows[0]}..{rows[-1]}")
            row_bytes = dtype.itemsize * int(np.prod(shape[1:], dtype=np.int64))
            out = np.empty((rows.size, *shape[1:]), dtype)
            per_piece = max(1, _CHECK_CHUNK // max(row_bytes, 1))
            done = 0  # rows of `rows` taken so far
            for start in range(0, n, per_piece):
                stop = min(n, start + per_piece)
                end = int(np.searchsorted(rows, stop, side="left"))
                data = member.read((stop - start) * row_bytes)  # (read even if no row is wanted: the CRC)
                if end == done:
                    continue
                piece = np.frombuffer(data, dtype).reshape((stop - start, *shape[1:]))
                out[done:end] = piece[rows[done:end] - start]
                done = end
            return out
    except IdtfvError:
        raise
    except (OSError, zipfile.BadZipFile, KeyError, ValueError, EOFError) as exc:
        raise FormatError(path, f"cannot read rows of member {name!r} ({exception_line(exc)}); "
                                f"{DEFAULT_REMEDY}") from None


#: What :func:`open_npz` tells the user to do about a damaged file unless the caller says better.
DEFAULT_REMEDY = "delete it and rerun the command that wrote it"


class NpzArchive(Mapping):
    """A read-only ``.npz`` (name -> array) whose every read failure is a FormatError naming the file.

    Made by :func:`open_npz`; use it as a context manager (it keeps the file open). ``archive[name]`` reads that
    member in full, which checks its CRC-32; a missing name raises ``KeyError`` (test with ``name in archive``).

    Attributes
    ----------
    path : Path
        The file.
    files : list of str
        The array names, in the file's order.
    """

    def __init__(self, path: Path, npz, remedy: str, file=None):
        self.path = path
        self._npz = npz
        self._file = file  # the file object np.load read from (ours to close), or None
        self._remedy = remedy
        self.files = list(npz.files)

    def __getitem__(self, name: str) -> np.ndarray:
        if name not in self.files:
            raise KeyError(name)
        try:
            return self._npz[name]
        except Exception as exc:  # noqa: BLE001 - BadZipFile (CRC), zlib.error, ValueError, EOFError, OSError...
            raise FormatError(self.path, f"corrupt or truncated .npz: array {name!r} does not read back "
                                         f"({exception_line(exc)}); {self._remedy}") from None

    def __iter__(self) -> Iterator[str]:
        return iter(self.files)

    def __len__(self) -> int:
        return len(self.files)

    def __contains__(self, name) -> bool:
        return name in self.files

    def close(self) -> None:
        self._npz.close()
        if self._file is not None:
            self._file.close()

    def __enter__(self) -> NpzArchive:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"NpzArchive({str(self.path)!r}, files={self.files})"


def open_npz(path, *, remedy: str = DEFAULT_REMEDY) -> NpzArchive:
    """Open an ``.npz`` written by an earlier stage for reading (``allow_pickle=False``).

    Parameters
    ----------
    path : path-like
        The file.
    remedy : str
        What the user should do about a missing or damaged file, appended to the error message, e.g.
        ``"rerun idtfv features with the same options to recompute it"``.

    Returns
    -------
    NpzArchive
        A mapping name -> array, to use as a context manager.

    Raises
    ------
    FormatError
        ``"<path>: ..."``: the file is missing, not an ``.npz`` (truncated, not a ZIP), or (when an array is read)
        one of its arrays is corrupt: a flipped bit fails the member's CRC-32.
    """
    path = Path(path)
    if not path.exists():
        raise FormatError(path, f"file not found; {remedy}")
    if not path.is_file():
        raise FormatError(path, f"not a regular file; expected an .npz file; {remedy}")
    f = open(path, "rb")  # ours, closed on failure: np.load leaves the file it opened open when the ZIP is bad
    try:
        what = not_npz(f.read(NPZ_HEAD))
        if what is not None:
            raise FormatError(path, f"{what}; expected an .npz file; {remedy}")
        f.seek(0)
        try:
            npz = np.load(f, allow_pickle=False)  # a ZIP: an NpzFile
        except Exception as exc:  # noqa: BLE001 - any failure to open means "not a readable .npz"
            raise FormatError(path, f"not a readable .npz ({exception_line(exc)}); {remedy}") from None
    except BaseException:
        f.close()
        raise
    return NpzArchive(path, npz, remedy, file=f)


#: Bytes of a file's start that :func:`not_npz` needs.
NPZ_HEAD = 8


def not_npz(head: bytes) -> str | None:
    """Why a file whose first bytes are ``head`` is not an ``.npz`` (``"an empty file"``, ``"a single .npy array"``,
    ``"not an .npz (zip) archive"``), or None for a ZIP archive. ``np.load`` would return a ``.npy``'s array, and
    call any other file pickled data with the advice to load it unsafely."""
    if head.startswith(b"PK"):
        return None
    if not head:
        return "an empty file"
    return "a single .npy array" if head.startswith(b"\x93NUMPY") else "not an .npz (zip) archive"


def remove_stale_temp_files(directory) -> list[Path]:
    """Delete temporary files left in ``directory`` by an interrupted write; return the paths removed.

    Only call this when no other process is writing into ``directory``.
    """
    removed = []
    for tmp in sorted(Path(directory).glob(TMP_GLOB)):
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
            removed.append(tmp)
    return removed


#: Stem of the file :func:`case_insensitive` creates for a moment (mixed case: its case-swapped twin is looked up).
CASE_PROBE = "CaseProbe"


def case_insensitive(directory) -> bool:
    """Whether the file system of ``directory`` (an existing directory) takes names differing only in case for one.

    Creates a uniquely named file ``.CaseProbe.<random>.tmp`` in ``directory`` (a temporary-file name, so one left
    by a crash matches :data:`TMP_GLOB` and is never taken for a result), looks up its case-swapped name
    (``.cASEpROBE.<RANDOM>.TMP``) and removes it. When no file can be created there (a read-only directory), the
    directory's own name is looked up case-swapped in its parent instead; when that cannot tell either (a name
    without letters), the answer is True: refusing two ids differing only in case is the safe side.

    Parameters
    ----------
    directory : path-like
        An existing directory, e.g. a stage directory or a rawframes output directory.

    Returns
    -------
    bool
        True on a case-insensitive file system (macOS's default, Windows, FAT/exFAT, SMB), False on a
        case-sensitive one (Linux ext4, XFS, tmpfs, ...).
    """
    directory = Path(directory)
    for _ in range(100):
        probe = directory / temp_name(CASE_PROBE, secrets.token_hex(6))
        try:
            fd = os.open(probe, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
        except FileExistsError:
            continue
        except OSError:
            break
        os.close(fd)
        try:
            return os.path.lexists(probe.with_name(probe.name.swapcase()))
        finally:
            with contextlib.suppress(OSError):
                probe.unlink()
    absolute = directory.absolute()
    swapped = absolute.with_name(absolute.name.swapcase())
    if swapped.name == absolute.name:
        return True
    try:
        return os.path.samefile(absolute, swapped)
    except OSError:  # no such name: case-sensitive
        return False


def check_case_twins(video_ids, directory, *, remedy: str) -> None:
    """Refuse video ids that differ only in case when ``directory`` is on a case-insensitive file system.

    Such ids (``v_Walk_g01`` and ``v_walk_g01``, equal under :meth:`str.casefold`) name one file there
    (``<id>.npz``, ``<id>/``): one video's result would overwrite the other's, or be taken for it. The directory
    is probed (:func:`case_insensitive`) only when there are such ids, at most once; on a case-sensitive file
    system nothing is refused.

    Parameters
    ----------
    video_ids : iterable of str
        The ids of one run (unique).
    directory : path-like
        The existing directory where files named by the ids go.
    remedy : str
        The second way out, after renaming: e.g. ``"keep the cache on a case-sensitive file system (--cache DIR)"``.

    Raises
    ------
    ManifestError
        ``video ids 'v_Walk_g01' and 'v_walk_g01' differ only in case, and DIR is on a case-insensitive file
        system ...``, naming the first such pair (in the order given) and how many more there are.
    """
    first: dict[str, str] = {}
    twins: list[tuple[str, str]] = []
    for video_id in video_ids:
        if not isinstance(video_id, str):  # not an id at all: refused by the id rule, not here
            continue
        key = video_id.casefold()
        if key in first:
            twins.append((first[key], video_id))
        else:
            first[key] = video_id
    if not twins or not case_insensitive(directory):
        return
    a, b = twins[0]
    more = f" (and {len(twins) - 1} more such pair{'s' if len(twins) > 2 else ''})" if len(twins) > 1 else ""
    raise ManifestError(
        f"video ids {a!r} and {b!r} differ only in case{more}, and {directory} is on a case-insensitive file "
        "system, where they name the same file (one video's result would overwrite the other's or be taken for "
        f"it); give one of them another video_id (rename the video or edit the manifest), or {remedy}"
    )
