"""The dataset manifest: the one CSV that holds every video's id, path, label, group and splits.

Format (``docs/CONTRACTS.md``), UTF-8 with a header row, columns in this order::

    video_id,path,label,label_name,group,split1[,split2,...],frames,fps,width,height

* ``video_id`` — unique, ``[A-Za-z0-9._-]+``, at most :data:`MAX_VIDEO_ID_LENGTH` characters; the file stem of every
  per-video artifact.
* ``path`` — relative to the directory holding the CSV (absolute paths allowed). :func:`write_manifest` writes a
  path relative to the CSV's directory when the video lies under it, absolute otherwise.
* ``label`` — 0-based class id (``1;4`` for a multi-label video; empty for an unlabelled one);
  ``label_name`` — the class name (``;``-joined for multi-label).
* ``group`` — group id (UCF101 ``g08``, an actor, ...) or empty.
* ``splitN`` — ``train``, ``test`` or empty (not used in split N).
* ``frames, fps, width, height`` — from :func:`probe_manifest` (``frames`` counts decodable frames; 0 when the video
  cannot be read); empty before probing.

Examples
--------
>>> m = read_manifest("cache/default/manifest.csv")      # doctest: +SKIP
>>> train = m.split(1, "train")                          # doctest: +SKIP
>>> m.class_names[train[0].label], m.path_of(train[0])    # doctest: +SKIP
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import io
import logging
import operator
import os
import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from idtfv.atomic import atomic_write_text
from idtfv.errors import IdtfvError, ManifestError
from idtfv.options import check_jobs, local_workers

__all__ = [
    "VideoEntry",
    "Manifest",
    "read_manifest",
    "write_manifest",
    "probe_manifest",
    "make_video_id",
    "is_valid_video_id",
    "manifest_columns",
    "SPLIT_VALUES",
    "MAX_VIDEO_ID_LENGTH",
    "VIDEO_ID_RULE",
]

log = logging.getLogger(__name__)

#: Allowed values of a ``splitN`` column.
SPLIT_VALUES = ("train", "test", "")

_ID_RE = re.compile(r"[A-Za-z0-9._-]+")
_SPLIT_COL_RE = re.compile(r"split([1-9][0-9]*)")
_HEAD = ("video_id", "path", "label", "label_name", "group")
_TAIL = ("frames", "fps", "width", "height")
#: Longest video id accepted. Ids name files: ``<id>.npz`` and its temporary ``.<id>.npz.<12 hex>.tmp`` (id + 22)
#: must fit the 255-byte file-name limit of common file systems (NAME_MAX), with room for other stages' suffixes.
MAX_VIDEO_ID_LENGTH = 200
#: The rule of :func:`is_valid_video_id` in words, for messages.
VIDEO_ID_RULE = (f"a non-empty id of letters, digits, '.', '_' or '-' (one file name), not '.' or '..', at most "
                 f"{MAX_VIDEO_ID_LENGTH} characters")
_MAX_ID_LEN = 180  # make_video_id: 180 + "-" + 8 hex digits stays under MAX_VIDEO_ID_LENGTH


@dataclass(frozen=True)
class VideoEntry:
    """One row of the manifest.

    Attributes
    ----------
    video_id : str
        Unique, filesystem-safe id (``[A-Za-z0-9._-]+``).
    path : pathlib.Path
        The video file; absolute once read by :func:`read_manifest` (may be relative to ``Manifest.root`` for
        entries built in memory: use :meth:`Manifest.path_of`).
    label : int
        Class id, 0-based; the first of ``labels`` for a multi-label video; ``-1`` when unlabelled.
    label_name : str
        Class name (``;``-joined names for a multi-label video).
    group : str
        Group id (``""`` when none).
    splits : dict[int, str]
        Split number -> ``"train"``, ``"test"`` or ``""``.
    frames : int or None
        Decodable frames (``None`` before probing, 0 when the probe failed).
    fps : float or None
    width, height : int or None
    labels : tuple[int, ...]
        All class ids of the video (``(label,)`` for single-label data, ``()`` when unlabelled).
    """

    video_id: str
    path: Path
    label: int
    label_name: str
    group: str = ""
    splits: dict[int, str] = field(default_factory=dict)
    frames: int | None = None
    fps: float | None = None
    width: int | None = None
    height: int | None = None
    labels: tuple[int, ...] = ()

    def __post_init__(self):
        object.__setattr__(self, "path", Path(self.path))
        if not self.labels and self.label >= 0:
            object.__setattr__(self, "labels", (int(self.label),))

    def __hash__(self) -> int:  # the splits dict is unhashable; the id and path identify a row
        return hash((self.video_id, self.path))

    def split_of(self, n: int) -> str:
        """``"train"``, ``"test"`` or ``""`` for split ``n``."""
        return self.splits.get(n, "")

    @property
    def probed(self) -> bool:
        """Whether the probe columns are filled."""
        return self.frames is not None


class Manifest:
    """A validated list of :class:`VideoEntry` with the class names and the CSV's directory.

    Parameters
    ----------
    rows : sequence of VideoEntry
    root : path-like
        Directory that relative entry paths are taken from (the CSV's directory once written/read).
    class_names : sequence of str, optional
        Names indexed by label id; derived from the rows when omitted (ids without a video get ``class<i>``).

    Raises
    ------
    idtfv.errors.ManifestError
        Duplicate or unsafe ids, unknown split values, a label id with two names (or a name with two ids).
    """

    def __init__(self, rows: Iterable[VideoEntry], root: str | os.PathLike = ".", *,
                 class_names: Sequence[str] | None = None, source: str = "<manifest>"):
        self.rows: list[VideoEntry] = list(rows)
        self.root = Path(root).absolute()
        self.source = source
        derived = _class_names(self.rows, source)
        if class_names is None:
            self.class_names = derived
        else:
            self.class_names = [str(c) for c in class_names]
            for i, name in enumerate(derived):
                if i < len(self.class_names) and name != f"class{i}" and name != self.class_names[i]:
                    raise ManifestError(f"{source}: label {i} is named {name!r} in the rows but "
                                        f"{self.class_names[i]!r} in class_names; make them agree")
            if len(derived) > len(self.class_names):
                raise ManifestError(f"{source}: label {len(derived) - 1} has no entry in class_names "
                                    f"({len(self.class_names)} names)")
        _validate_rows(self.rows, source)
        self.probe_errors: dict[str, str] = {}
        self._by_id: dict[str, VideoEntry] | None = None

    # -- access ------------------------------------------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self.rows)

    def __iter__(self) -> Iterator[VideoEntry]:
        return iter(self.rows)

    def __repr__(self) -> str:
        return (f"Manifest({len(self.rows)} videos, {len(self.class_names)} classes, "
                f"{self.n_splits} split(s), root={str(self.root)!r})")

    @property
    def by_id(self) -> dict[str, VideoEntry]:
        """``video_id -> VideoEntry``."""
        if self._by_id is None:
            self._by_id = {e.video_id: e for e in self.rows}
        return self._by_id

    @property
    def n_splits(self) -> int:
        """Number of split columns (at least 1)."""
        return max([1, *(n for e in self.rows for n in e.splits)])

    @property
    def n_classes(self) -> int:
        return len(self.class_names)

    def path_of(self, entry: VideoEntry | str) -> Path:
        """Absolute path of an entry (or of a video id)."""
        if isinstance(entry, str):
            entry = self.by_id[entry]
        return entry.path if entry.path.is_absolute() else self.root / entry.path

    def split(self, n: int, which: str) -> list[VideoEntry]:
        """The entries marked ``which`` (``"train"`` or ``"test"``) in split ``n`` (1-based), in manifest order."""
        if which not in ("train", "test"):
            raise ManifestError(f"{self.source}: split part must be 'train' or 'test', got {which!r}")
        try:
            n = operator.index(n)
        except TypeError:
            n = None
        if n is None or not 1 <= n <= self.n_splits:
            raise ManifestError(f"{self.source}: split {n!r} does not exist; this manifest has splits "
                                f"1..{self.n_splits}")
        return [e for e in self.rows if e.splits.get(n, "") == which]

    def labels(self) -> list[int]:
        """Label id of every row, in order (``-1`` for unlabelled rows)."""
        return [e.label for e in self.rows]

    def subset(self, entries: Iterable[VideoEntry | str]) -> Manifest:
        """A manifest of some of the rows (entries or ids), keeping ``root`` and ``class_names``."""
        rows = [self.by_id[e] if isinstance(e, str) else e for e in entries]
        return Manifest(rows, self.root, class_names=self.class_names, source=self.source)

    def replace_rows(self, rows: Iterable[VideoEntry]) -> Manifest:
        """A manifest with other rows and the same ``root``/``class_names``/``source``."""
        return Manifest(rows, self.root, class_names=self.class_names, source=self.source)


# -- ids -------------------------------------------------------------------------------------------------------------


def is_valid_video_id(video_id) -> bool:
    """Whether ``video_id`` is a usable video id: a string of ``[A-Za-z0-9._-]`` (one file name: no ``/``), not ``.``
    or ``..``, at most :data:`MAX_VIDEO_ID_LENGTH` characters. Ids name files and directories (``DIR/<id>/``), so an
    id like ``.`` (``DIR`` itself) or ``../x`` (outside ``DIR``) would write over other results."""
    return (isinstance(video_id, str) and _ID_RE.fullmatch(video_id) is not None and video_id not in (".", "..")
            and len(video_id) <= MAX_VIDEO_ID_LENGTH)


def make_video_id(relpath: str | os.PathLike, *, keep_dirs: bool = False, keep_suffix: bool = False) -> str:
    """A filesystem-safe, deterministic video id from a (relative) video path.

    The id is the file name without its extension (with ``keep_dirs=True``: the whole relative path, directory
    parts joined by ``__``; with ``keep_suffix=True`` the file name keeps its extension). Characters outside
    ``[A-Za-z0-9._-]`` become ``_``; when anything had to change (or the id had to be shortened), ``-`` and 8 hex digits of the SHA-1 of the original are appended so that two
    different names never collide.

    Examples
    --------
    >>> make_video_id("ApplyEyeMakeup/v_ApplyEyeMakeup_g01_c01.avi")
    'v_ApplyEyeMakeup_g01_c01'
    >>> make_video_id("walk/actor 1.avi", keep_dirs=True)
    'walk__actor_1-56815c57'
    """
    p = Path(relpath)
    name = p.name if keep_suffix else p.stem
    if keep_dirs:
        parts = [*p.parent.parts, name] if str(p.parent) not in ("", ".") else [name]
        original = "__".join(parts)
    else:
        original = name
    if not original:
        raise ManifestError(f"cannot make a video id from the empty path {str(relpath)!r}")
    safe = re.sub(r"[^A-Za-z0-9._-]", "_", original)
    if safe in (".", ".."):
        safe = safe.replace(".", "_")
    if safe != original or len(safe) > _MAX_ID_LEN:
        # surrogateescape: a file name of bytes that are not UTF-8 (os.fsdecode) hashes its own bytes
        digest = hashlib.sha1(original.encode("utf-8", "surrogateescape")).hexdigest()[:8]
        safe = f"{safe[:_MAX_ID_LEN]}-{digest}"
    return safe


# -- reading and writing ---------------------------------------------------------------------------------------------


def manifest_columns(n_splits: int = 1) -> list[str]:
    """The CSV header for ``n_splits`` split columns."""
    return [*_HEAD, *(f"split{i}" for i in range(1, n_splits + 1)), *_TAIL]


def read_manifest(path: str | os.PathLike) -> Manifest:
    """Read and validate a manifest CSV; entry paths become absolute (relative ones taken from the CSV's directory).

    Raises
    ------
    idtfv.errors.ManifestError
        Missing file, bad header, bad cell (the message names the file, the line and the column), inconsistent rows.
    """
    path = Path(path)
    source = str(path)
    if not path.is_file():
        raise ManifestError(f"{source}: no such manifest file" if not path.exists()
                            else f"{source}: is not a file; expected a manifest CSV")
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ManifestError(f"{source}: not UTF-8 text ({exc.reason} at byte {exc.start}); "
                            "save the manifest as UTF-8 CSV") from None
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        header = next(reader)
    except StopIteration:
        raise ManifestError(f"{source}: the file is empty; expected a header row "
                            f"{','.join(manifest_columns())}") from None
    header = [h.strip() for h in header]
    split_cols = _check_header(header, source)
    root = path.parent.absolute()
    rows = []
    for lineno, cells in enumerate(reader, start=2):
        if not cells or all(not c.strip() for c in cells):
            continue  # blank line
        if len(cells) != len(header):
            raise ManifestError(f"{source} line {lineno}: {len(cells)} cells, expected {len(header)} "
                                f"(one per header column)")
        record = dict(zip(header, cells))
        rows.append(_parse_row(record, split_cols, root, f"{source} line {lineno}"))
    if not rows:
        raise ManifestError(f"{source}: no videos listed (only a header)")
    return Manifest(rows, root, source=source)


def write_manifest(manifest: Manifest, path: str | os.PathLike) -> Path:
    """Write a manifest CSV atomically (temporary file in the same directory, then ``os.replace``).

    Paths are written relative to the CSV's directory when the video lies under it, absolute otherwise, with ``/``
    separators. Returns the path written.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    csv_dir = path.parent.absolute()
    n_splits = manifest.n_splits
    buf = io.StringIO(newline="")
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(manifest_columns(n_splits))
    for e in manifest.rows:
        writer.writerow([
            e.video_id,
            _relative_path(manifest.path_of(e), csv_dir),
            ";".join(str(i) for i in e.labels) if e.labels else ("" if e.label < 0 else str(e.label)),
            e.label_name,
            e.group,
            *(e.splits.get(i, "") for i in range(1, n_splits + 1)),
            "" if e.frames is None else str(int(e.frames)),
            "" if e.fps is None else repr(float(e.fps)),
            "" if e.width is None else str(int(e.width)),
            "" if e.height is None else str(int(e.height)),
        ])
    atomic_write_text(path, buf.getvalue())
    return path


# -- probing ---------------------------------------------------------------------------------------------------------


def _probe_one(path: str) -> tuple[int, float | None, int | None, int | None, str, str]:
    from idtfv.video import collect_video_warnings, probe_video

    try:
        with collect_video_warnings() as notes:  # e.g. a truncated file: kept, summarised by the caller
            info = probe_video(path)
    except IdtfvError as exc:
        return 0, None, None, None, str(exc), ""
    except Exception as exc:  # a decoder crash must not stop the probe of the other videos
        return 0, None, None, None, f"{path}: {type(exc).__name__}: {exc}", ""
    return info.frames, info.fps, info.width, info.height, "", " | ".join(notes)


def probe_manifest(manifest: Manifest, *, jobs: int = 1, only_missing: bool = False) -> Manifest:
    """Fill ``frames, fps, width, height`` of every row by probing the videos (:func:`idtfv.video.probe_video`).

    A video that cannot be read gets ``frames=0`` (and empty fps/size); its error message is logged and kept in the
    returned manifest's ``probe_errors`` (``video_id -> message``). Not fatal. Video warnings (a truncated file:
    decoded and declared frame counts differ) are kept in ``probe_warnings`` (``video_id -> message``), not
    printed.

    Parameters
    ----------
    manifest : Manifest
    jobs : int
        Worker processes (joblib), -1 = all cores; 1 probes in this process.
    only_missing : bool
        Probe only rows whose ``frames`` is still empty.

    Returns
    -------
    Manifest
        A new manifest with the probe columns filled.

    Raises
    ------
    ParameterError
        If ``jobs`` is not a positive integer or -1.
    """
    check_jobs(jobs)  # before joblib, whose traceback it was
    todo = [i for i, e in enumerate(manifest.rows) if not (only_missing and e.probed)]
    paths = [str(manifest.path_of(manifest.rows[i])) for i in todo]
    if jobs != 1 and len(paths) > 1:
        jobs = local_workers(jobs, len(paths))
    if jobs == 1 or len(paths) <= 1:
        results = [_probe_one(p) for p in paths]
    else:
        from joblib import Parallel, delayed

        results = Parallel(n_jobs=jobs)(delayed(_probe_one)(p) for p in paths)
    rows = list(manifest.rows)
    errors = dict(manifest.probe_errors) if only_missing else {}
    notes = {}
    for i, (frames, fps, width, height, error, note) in zip(todo, results):
        rows[i] = dataclasses.replace(rows[i], frames=frames, fps=fps, width=width, height=height)
        if note:
            notes[rows[i].video_id] = note
        if error:
            errors[rows[i].video_id] = error
            log.warning("probe failed: %s", error)
    out = manifest.replace_rows(rows)
    out.probe_errors = errors
    out.probe_warnings = notes
    return out


# -- validation helpers ----------------------------------------------------------------------------------------------


def _check_header(header: list[str], source: str) -> list[tuple[int, str]]:
    expected_hint = ",".join(manifest_columns())
    seen = set()
    for h in header:
        if h in seen:
            raise ManifestError(f"{source}: column {h!r} appears twice in the header")
        seen.add(h)
    missing = [c for c in (*_HEAD, *_TAIL) if c not in seen]
    if missing:
        raise ManifestError(f"{source}: header lacks column(s) {', '.join(missing)}; expected {expected_hint}")
    split_cols = []
    for h in header:
        if h in _HEAD or h in _TAIL:
            continue
        m = _SPLIT_COL_RE.fullmatch(h)
        if not m:
            raise ManifestError(f"{source}: unknown column {h!r} in the header; expected {expected_hint} "
                                "(more splitN columns allowed)")
        split_cols.append((int(m.group(1)), h))
    numbers = sorted(n for n, _ in split_cols)
    if numbers != list(range(1, len(numbers) + 1)) or not numbers:
        raise ManifestError(f"{source}: split columns must be split1, split2, ... without gaps; got "
                            f"{', '.join(h for _, h in split_cols) or 'none'}")
    return split_cols


def _parse_int(text: str, where: str, column: str, *, minimum: int = 0) -> int:
    try:
        value = int(text)
    except ValueError:
        raise ManifestError(f"{where}: column {column} must be an integer, got {text!r}") from None
    if value < minimum:
        raise ManifestError(f"{where}: column {column} must be >= {minimum}, got {value}")
    return value


def _parse_row(record: dict[str, str], split_cols, root: Path, where: str) -> VideoEntry:
    video_id = record["video_id"].strip()
    raw_path = record["path"].strip()
    if not raw_path:
        raise ManifestError(f"{where}: empty path for video {video_id!r}")
    p = Path(raw_path)
    p = _normalize(p if p.is_absolute() else root / p)
    label_text = record["label"].strip()
    labels = tuple(_parse_int(t.strip(), where, "label") for t in label_text.split(";")) if label_text else ()
    splits = {}
    for n, col in split_cols:
        value = record[col].strip().lower()
        if value not in SPLIT_VALUES:
            raise ManifestError(f"{where}: column {col} must be 'train', 'test' or empty, got {record[col]!r}")
        if value:
            splits[n] = value
    frames = _parse_int(record["frames"].strip(), where, "frames") if record["frames"].strip() else None
    width = _parse_int(record["width"].strip(), where, "width") if record["width"].strip() else None
    height = _parse_int(record["height"].strip(), where, "height") if record["height"].strip() else None
    fps_text = record["fps"].strip()
    fps = None
    if fps_text:
        try:
            fps = float(fps_text)
        except ValueError:
            raise ManifestError(f"{where}: column fps must be a number, got {fps_text!r}") from None
        if not fps > 0:
            raise ManifestError(f"{where}: column fps must be > 0, got {fps_text!r}")
    return VideoEntry(video_id=video_id, path=p, label=labels[0] if labels else -1,
                      label_name=record["label_name"].strip(), group=record["group"].strip(), splits=splits,
                      frames=frames, fps=fps, width=width, height=height, labels=labels)


def _validate_rows(rows: list[VideoEntry], source: str) -> None:
    seen: dict[str, int] = {}
    for i, e in enumerate(rows):
        where = f"{source} row {i + 1} ({e.video_id!r})"
        if not isinstance(e.video_id, str) or not _ID_RE.fullmatch(e.video_id) or e.video_id in (".", ".."):
            raise ManifestError(f"{where}: video_id must match [A-Za-z0-9._-]+ (it names files); "
                                f"use idtfv.data.make_video_id to derive one")
        if len(e.video_id) > MAX_VIDEO_ID_LENGTH:
            raise ManifestError(f"{source} row {i + 1} ({e.video_id[:40]!r}...): video_id has {len(e.video_id)} "
                                f"characters, at most {MAX_VIDEO_ID_LENGTH} are allowed (it names files, and a file "
                                "name holds at most 255 bytes); shorten it, e.g. with idtfv.data.make_video_id")
        if e.video_id in seen:
            raise ManifestError(f"{where}: duplicate video_id (also row {seen[e.video_id] + 1}); ids must be unique")
        seen[e.video_id] = i
        for n, value in e.splits.items():
            if value not in SPLIT_VALUES:
                raise ManifestError(f"{where}: split{n} must be 'train', 'test' or empty, got {value!r}")
        if e.labels and e.label != e.labels[0]:
            raise ManifestError(f"{where}: label {e.label} is not the first of labels {e.labels}")
        if any(not isinstance(v, int) or v < 0 for v in e.labels):
            raise ManifestError(f"{where}: labels must be non-negative integers, got {e.labels}")


def _class_names(rows: list[VideoEntry], source: str) -> list[str]:
    id_to_name: dict[int, str] = {}
    name_to_id: dict[str, int] = {}
    for i, e in enumerate(rows):
        if not e.labels:
            continue
        names = e.label_name.split(";") if len(e.labels) > 1 else [e.label_name]
        if len(names) != len(e.labels):
            raise ManifestError(f"{source} row {i + 1} ({e.video_id!r}): {len(e.labels)} labels but "
                                f"{len(names)} label names; join both with ';' in the same order")
        for label, name in zip(e.labels, names):
            name = name.strip()
            if not name:
                raise ManifestError(f"{source} row {i + 1} ({e.video_id!r}): label {label} has an empty label_name")
            if "\n" in name or "\r" in name:
                raise ManifestError(f"{source} row {i + 1} ({e.video_id!r}): label_name {name!r} has a line break; "
                                    "class names head score-file columns: one line each")
            if id_to_name.setdefault(label, name) != name:
                raise ManifestError(f"{source} row {i + 1} ({e.video_id!r}): label {label} is named {name!r} here "
                                    f"but {id_to_name[label]!r} before; one name per label id")
            if name_to_id.setdefault(name, label) != label:
                raise ManifestError(f"{source} row {i + 1} ({e.video_id!r}): label_name {name!r} has id {label} "
                                    f"here but {name_to_id[name]} before; one id per name")
    if not id_to_name:
        return []
    return [id_to_name.get(i, f"class{i}") for i in range(max(id_to_name) + 1)]


def _relative_path(path: Path, csv_dir: Path) -> str:
    path = _normalize(path)
    try:
        return path.relative_to(_normalize(csv_dir)).as_posix()
    except ValueError:
        return path.as_posix()


def _normalize(path: str | os.PathLike) -> Path:
    """Absolute, with ``.``/``..`` folded (symlinks kept)."""
    return Path(os.path.normpath(Path(path).absolute()))

