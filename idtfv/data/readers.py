"""Dataset readers: build a :class:`~idtfv.data.manifest.Manifest` from a dataset's own layout.

``build_manifest(kind, root, ...)`` picks a reader from :data:`READERS`:

``"ucf101"``
    ``root`` holds the videos (``<Class>/v_<Class>_gGG_cCC.avi``, optionally under ``UCF-101/``) and the official
    lists ``classInd.txt``, ``trainlist0N.txt``, ``testlist0N.txt`` (N = 1..3) in ``root``, ``root/ucfTrainTestlist``
    or ``split_file`` (a directory). Labels come from ``classInd.txt`` (1-based there, 0-based here); the group is
    ``gGG`` from the file name; every video listed in a split appears once; splits 2 and 3 are optional.
``"hmdb51"``
    ``root`` holds ``<class>/<video>.avi``; the split files ``<class>_test_split<N>.txt`` (lines ``<video>.avi C``
    with C = 1 train, 2 test, 0 unused) are in ``root``, ``root/testTrainMulti_7030_splits`` or ``split_file``.
    Classes are numbered in alphabetical order. The group is the source-film prefix of the name (the part before
    ``_<class>_``, e.g. ``April_09`` for ``April_09_brush_hair_u_nm_np1_ba_goo_0.avi``), the closest thing to an
    actor id HMDB51 names carry; empty when the prefix cannot be found.
``"folder"``
    ``root/<class>/**/<video>`` with a video extension (any case; names starting with ``.`` are skipped; a symlinked
    sub-folder is followed when it leads out of ``root``); classes numbered in alphabetical order. Splits come from
    ``split_file`` (one file per split, lines ``<path relative to root> train|test``; unlisted videos are unused in
    that split), or else from a seeded group-aware random split: groups are the first capture group of
    ``group_regex`` in the file name (default UCF-style ``_(g\\d+)_``), videos without a match are their own group;
    ``test_fraction`` of the groups go to test (:class:`sklearn.model_selection.GroupShuffleSplit`).
``"csv"``
    An existing manifest CSV (``root`` is the file, or a directory holding ``manifest.csv``).
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from idtfv.data.manifest import Manifest, VideoEntry, make_video_id, probe_manifest, read_manifest
from idtfv.errors import ManifestError, ParameterError

__all__ = ["build_manifest", "READERS", "VIDEO_EXTENSIONS", "DEFAULT_GROUP_REGEX"]

log = logging.getLogger(__name__)

#: File extensions (lower case) taken for videos by the folder reader.
VIDEO_EXTENSIONS = frozenset({".avi", ".mp4", ".mkv", ".mov", ".webm", ".mpg", ".mpeg", ".m4v", ".wmv", ".flv",
                              ".ogv", ".3gp", ".ts", ".mts"})

#: Default group pattern of the folder reader: UCF101-style ``_g08_``; the first capture group is the group id.
DEFAULT_GROUP_REGEX = r"_(g\d+)_"

_UCF_GROUP_RE = re.compile(r"_(g\d+)_c\d+", re.IGNORECASE)
_HMDB_SPLIT_RE = re.compile(r"(.+)_test_split(\d+)\.txt")
_HMDB_CODES = {"0": "", "1": "train", "2": "test"}


@dataclass(frozen=True)
class _Options:
    split_file: tuple[Path, ...]
    test_fraction: float
    random_state: int
    group_regex: str
    n_splits: int


def build_manifest(
    kind: str,
    root: str | os.PathLike,
    *,
    split_file: str | os.PathLike | Sequence[str | os.PathLike] | None = None,
    test_fraction: float = 0.3,
    random_state: int = 0,
    group_regex: str = DEFAULT_GROUP_REGEX,
    n_splits: int = 1,
    probe: bool = False,
    jobs: int = 1,
) -> Manifest:
    """Build a manifest from a dataset on disk.

    Parameters
    ----------
    kind : {"ucf101", "hmdb51", "folder", "csv"}
        The dataset layout (see the module docstring).
    root : path-like
        Dataset directory (for ``"csv"``: the manifest file or its directory).
    split_file : path-like or sequence of path-like, optional
        UCF101/HMDB51: the directory of the official split lists (default: searched under ``root``).
        Folder: one split file per split (``<relpath> train|test`` lines).
    test_fraction : float
        Folder without split files: fraction of the *groups* put in the test part, in (0, 1).
    random_state : int
        Seed of the folder reader's random split.
    group_regex : str
        Folder reader: pattern whose first capture group (or whole match) is a video's group id.
    n_splits : int
        Folder without split files: number of random splits (columns ``split1..``).
    probe : bool
        Also probe every video (:func:`~idtfv.data.manifest.probe_manifest`) to fill frames/fps/size.
    jobs : int
        Worker processes for probing.

    Returns
    -------
    Manifest
        Rows sorted by label, then path; entry paths absolute; ``root`` = the dataset directory.

    Raises
    ------
    idtfv.errors.ManifestError
        Missing or malformed list files, videos that are nowhere to be found, inconsistent labels.
    idtfv.errors.ParameterError
        Unknown ``kind`` or an option out of range.
    """
    if kind not in READERS:
        raise ParameterError(f"unknown dataset kind {kind!r}; expected one of {', '.join(READERS)}")
    if not 0.0 < test_fraction < 1.0:
        raise ParameterError(f"test_fraction must be in (0, 1), got {test_fraction!r}")
    if not isinstance(n_splits, int) or n_splits < 1:
        raise ParameterError(f"n_splits must be a positive integer, got {n_splits!r}")
    try:
        re.compile(group_regex)
    except re.error as exc:
        raise ParameterError(f"group_regex {group_regex!r} is not a valid regular expression ({exc})") from None
    root = Path(root)
    if not root.exists():
        raise ManifestError(f"{root}: no such dataset directory; check ROOT")
    if kind != "csv" and not root.is_dir():
        raise ManifestError(f"{root}: is a file, not a directory; --kind {kind} reads the dataset's folder "
                            "(a manifest CSV is read with --kind csv)")
    if split_file is None:
        files: tuple[Path, ...] = ()
    elif isinstance(split_file, (str, os.PathLike)):
        files = (Path(split_file),)
    else:
        files = tuple(Path(f) for f in split_file)
    for f in files:
        if not f.exists():
            raise ManifestError(f"{f}: no such split file or directory")
    opts = _Options(files, float(test_fraction), int(random_state), group_regex, n_splits)
    manifest = READERS[kind](root.absolute(), opts)
    if probe:
        manifest = probe_manifest(manifest, jobs=jobs)
    return manifest


# -- UCF101 ----------------------------------------------------------------------------------------------------------


def _find_list_dir(root: Path, opts: _Options, marker: str, subdirs: Sequence[str], what: str) -> Path:
    candidates = [f for f in opts.split_file if f.is_dir()] or [root / d for d in ("", *subdirs)]
    for d in candidates:
        if any(d.glob(marker)):
            return d
    raise ManifestError(f"{root}: cannot find the {what} (looked for {marker} in "
                        f"{', '.join(str(c) for c in candidates)}); give the directory of the lists with "
                        "--split-file DIR (make: SPLIT_FILE=DIR)")


def _read_lines(path: Path) -> list[tuple[int, list[str]]]:
    try:
        text = path.read_text(encoding="utf-8-sig", errors="replace")  # a BOM (Windows editors) is no part of line 1
    except OSError as exc:
        raise ManifestError(f"{path}: cannot read ({exc.strerror})") from None
    return [(i, line.split()) for i, line in enumerate(text.splitlines(), start=1) if line.strip()]


def _resolve_video(root: Path, relpath: str, prefixes: Sequence[str]) -> Path:
    """The video file for a list entry: ``root/relpath``, else under a known sub-folder; a missing video is named
    where its class folder is (``root/UCF-101/<Class>/...``), so that the message points at the right place."""
    for prefix in ("", *prefixes):
        p = root / prefix / relpath
        if p.exists():
            return p
    for prefix in ("", *prefixes):
        if (root / prefix / relpath).parent.is_dir():
            return root / prefix / relpath
    return root / relpath


def _read_ucf101(root: Path, opts: _Options) -> Manifest:
    lists = _find_list_dir(root, opts, "classInd.txt", ("ucfTrainTestlist", "UCF101TrainTestSplits-RecognitionTask/"
                                                         "ucfTrainTestlist"), "UCF101 lists (classInd.txt)")
    class_ind = lists / "classInd.txt"
    names: dict[int, str] = {}
    for lineno, parts in _read_lines(class_ind):
        if len(parts) != 2 or not parts[0].isdigit():
            raise ManifestError(f"{class_ind} line {lineno}: expected '<id> <ClassName>', got {' '.join(parts)!r}")
        names[int(parts[0]) - 1] = parts[1]
    if sorted(names) != list(range(len(names))) or not names:
        raise ManifestError(f"{class_ind}: class ids must be 1..C without gaps")
    class_names = [names[i] for i in range(len(names))]
    by_lower = {n.lower(): i for i, n in enumerate(class_names)}

    split_of: dict[str, dict[int, str]] = {}
    for n in (1, 2, 3):
        train, test = lists / f"trainlist0{n}.txt", lists / f"testlist0{n}.txt"
        if not train.exists() and not test.exists():
            if n == 1:
                raise ManifestError(f"{lists}: no trainlist01.txt/testlist01.txt; split 1 is required")
            continue
        for part, path in (("train", train), ("test", test)):
            if not path.exists():
                raise ManifestError(f"{path}: missing (its partner list exists); the UCF101 lists come in pairs")
            for lineno, parts in _read_lines(path):
                rel = parts[0].replace("\\", "/")
                cls = rel.split("/")[0] if "/" in rel else None
                if cls is None or cls.lower() not in by_lower:
                    raise ManifestError(f"{path} line {lineno}: {rel!r} is not '<Class>/<video>' with a class "
                                        f"from classInd.txt")
                if len(parts) > 1 and (not parts[1].isdigit() or int(parts[1]) - 1 != by_lower[cls.lower()]):
                    raise ManifestError(f"{path} line {lineno}: label {parts[1]} does not match class {cls!r} "
                                        f"(id {by_lower[cls.lower()] + 1} in classInd.txt)")
                previous = split_of.setdefault(rel, {}).get(n)
                if previous and previous != part:
                    raise ManifestError(f"{path} line {lineno}: {rel} is in both train and test of split {n}")
                split_of[rel][n] = part

    rows = []
    for rel, splits in split_of.items():
        label = by_lower[rel.split("/")[0].lower()]
        m = _UCF_GROUP_RE.search(Path(rel).name)
        rows.append(VideoEntry(
            video_id=make_video_id(rel), path=_resolve_video(root, rel, ("UCF-101", "UCF101")), label=label,
            label_name=class_names[label], group=m.group(1).lower() if m else "", splits=splits))
    return _finish(rows, root, class_names, "UCF101 lists in " + str(lists))


# -- HMDB51 ----------------------------------------------------------------------------------------------------------


def _read_hmdb51(root: Path, opts: _Options) -> Manifest:
    lists = _find_list_dir(root, opts, "*_test_split*.txt", ("testTrainMulti_7030_splits", "splits"),
                           "HMDB51 split files (<class>_test_split<N>.txt)")
    per_class: dict[str, dict[int, Path]] = {}
    for f in sorted(lists.glob("*_test_split*.txt")):
        m = _HMDB_SPLIT_RE.fullmatch(f.name)
        if m:
            per_class.setdefault(m.group(1), {})[int(m.group(2))] = f
    class_names = sorted(per_class)
    split_numbers = sorted({n for files in per_class.values() for n in files})
    for cls, files in per_class.items():
        if sorted(files) != split_numbers:
            missing = sorted(set(split_numbers) - set(files))
            raise ManifestError(f"{lists}: class {cls!r} lacks split file(s) {missing}; every class needs the same "
                                "splits")
    if split_numbers != list(range(1, len(split_numbers) + 1)):
        raise ManifestError(f"{lists}: split numbers must be 1..N without gaps, got {split_numbers}")

    rows = []
    for label, cls in enumerate(class_names):
        splits_of: dict[str, dict[int, str]] = {}
        for n, f in per_class[cls].items():
            for lineno, parts in _read_lines(f):
                if len(parts) != 2 or parts[1] not in _HMDB_CODES:
                    raise ManifestError(f"{f} line {lineno}: expected '<video>.avi 0|1|2', got {' '.join(parts)!r}")
                value = _HMDB_CODES[parts[1]]
                d = splits_of.setdefault(parts[0], {})
                if value:
                    d[n] = value
        for name, splits in splits_of.items():
            rel = f"{cls}/{name}"
            marker = f"_{cls}_"
            group = name[: name.find(marker)] if name.find(marker) > 0 else ""
            rows.append(VideoEntry(video_id=make_video_id(rel), path=_resolve_video(root, rel, ("hmdb51",)),
                                   label=label, label_name=cls, group=group, splits=splits))
    return _finish(rows, root, class_names, "HMDB51 split files in " + str(lists))


# -- folder per class ------------------------------------------------------------------------------------------------


def _read_folder(root: Path, opts: _Options) -> Manifest:
    class_dirs = sorted(d for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
    loose = sorted(p.name for p in root.iterdir() if p.suffix.lower() in VIDEO_EXTENSIONS and not p.is_dir()
                   and not p.name.startswith("."))
    if loose:
        log.warning("%d video%s directly in %s, outside a class folder, left out (first: %s); move them into "
                    "<class>/ folders", len(loose), "s" if len(loose) != 1 else "", root, loose[0])
    videos: list[tuple[str, int, Path]] = []
    class_names = []
    no_videos = []
    for d in class_dirs:
        files = sorted(p for p in _walk_files(d, root) if (p.is_file() or p.is_symlink())  # a dangling link fails
                       and p.suffix.lower() in VIDEO_EXTENSIONS                          # in the run, visibly
                       and not any(part.startswith(".") for part in p.relative_to(root).parts))
        if not files:
            no_videos.append(d.name)
            continue
        label = len(class_names)
        class_names.append(d.name)
        videos.extend((p.relative_to(root).as_posix(), label, p) for p in files)
    if not videos:
        raise ManifestError(f"{root}: no videos found in class sub-folders (expected {root}/<class>/<video>, "
                            f"extensions {', '.join(sorted(VIDEO_EXTENSIONS))})")
    if no_videos:
        log.warning("%d folder%s in %s without a video, not a class (%s); labels number the %d others",
                    len(no_videos), "s" if len(no_videos) != 1 else "", root,
                    ", ".join(repr(n) for n in no_videos[:5]) + (", ..." if len(no_videos) > 5 else ""),
                    len(class_names))
    pattern = re.compile(opts.group_regex)

    def group_of(rel: str) -> str:
        m = pattern.search(Path(rel).name)
        if not m:
            return ""
        return m.group(1) if m.groups() and m.group(1) is not None else m.group(0)

    groups = [group_of(rel) for rel, _, _ in videos]
    if opts.split_file:
        split_cols = [_read_split_file(f, {rel for rel, _, _ in videos}) for f in opts.split_file]
    else:
        rels = [rel for rel, _, _ in videos]
        split_cols = _group_split(rels, [g or f"\0{rel}" for g, rel in zip(groups, rels)], opts)
    rows = []
    for (rel, label, path), group in zip(videos, groups):
        splits = {n + 1: col[rel] for n, col in enumerate(split_cols) if col.get(rel)}
        rows.append(VideoEntry(video_id=make_video_id(rel), path=path, label=label, label_name=class_names[label],
                               group=group, splits=splits))
    return _finish(rows, root, class_names, f"folder {root}")


def _walk_files(top: Path, root: Path) -> list[Path]:
    """Every file under ``top``, following symlinked sub-folders that lead out of the dataset tree ``root``.

    A link to a folder inside ``root`` (or to ``root`` or above it) is not followed: those videos are found at
    their own place, under their own class, and would otherwise be listed twice. Each real folder is walked once,
    so a link loop ends.
    """
    real_root = Path(os.path.realpath(root))
    seen: set[tuple[int, int]] = set()
    out = []
    for dirpath, dirnames, filenames in os.walk(top, followlinks=True):
        st = os.stat(dirpath)
        if (st.st_dev, st.st_ino) in seen:  # reached again through a link: walked already
            dirnames[:] = []
            continue
        seen.add((st.st_dev, st.st_ino))
        keep = []
        for name in dirnames:
            sub = Path(dirpath, name)
            if sub.is_symlink():
                real = Path(os.path.realpath(sub))
                if real == real_root or real_root in real.parents or real in real_root.parents:
                    continue
            keep.append(name)
        dirnames[:] = keep
        out.extend(Path(dirpath, name) for name in filenames)
    return out


def _read_split_file(path: Path, known: set[str]) -> dict[str, str]:
    if path.is_dir():
        raise ManifestError(f"{path}: is a directory; the folder reader wants split files "
                            "('<relpath> train|test' lines)")
    out = {}
    for lineno, parts in _read_lines(path):
        if len(parts) < 2 or parts[-1] not in ("train", "test"):
            raise ManifestError(f"{path} line {lineno}: expected '<relative video path> train|test', got "
                                f"{' '.join(parts)!r}")
        rel = " ".join(parts[:-1]).replace("\\", "/").removeprefix("./")
        if rel not in known:
            raise ManifestError(f"{path} line {lineno}: {rel!r} is not a video under the dataset root")
        if out.get(rel, parts[-1]) != parts[-1]:
            raise ManifestError(f"{path} line {lineno}: {rel!r} is listed as both train and test")
        out[rel] = parts[-1]
    return out


def _group_split(rels: list[str], groups: list[str], opts: _Options) -> list[dict[str, str]]:
    """Seeded group-aware random splits: whole groups go to train or test; one ``rel -> part`` dict per split."""
    import numpy as np
    from sklearn.model_selection import GroupShuffleSplit

    unique = sorted(set(groups))
    if len(unique) < 2:
        raise ManifestError("the folder has a single group of videos; a group-aware split needs at least 2 "
                            "(check group_regex or pass a split file)")
    index = {g: i for i, g in enumerate(unique)}
    codes = np.array([index[g] for g in groups])
    splitter = GroupShuffleSplit(n_splits=opts.n_splits, test_size=opts.test_fraction,
                                 random_state=opts.random_state)
    cols = []
    for train_idx, test_idx in splitter.split(np.zeros(len(groups)), groups=codes):
        col = {rels[i]: "train" for i in train_idx}
        col.update({rels[i]: "test" for i in test_idx})
        cols.append(col)
    return cols


def _read_csv(root: Path, opts: _Options) -> Manifest:
    path = root / "manifest.csv" if root.is_dir() else root
    manifest = read_manifest(path)
    _check_missing(manifest.rows, manifest.root, f"manifest {path}",
                   hint="exists ({first}); check the path column (relative paths are taken from the CSV's folder)")
    return manifest


# -- shared ----------------------------------------------------------------------------------------------------------


def _finish(rows: list[VideoEntry], root: Path, class_names: list[str], source: str) -> Manifest:
    if not rows:
        raise ManifestError(f"{source}: lists no videos")
    rows = _dedupe_ids(rows, root)
    rows.sort(key=lambda e: (e.label, e.path.as_posix()))
    _check_missing(rows, root, source)
    return Manifest(rows, root, class_names=class_names, source=source)


def _check_missing(rows: Sequence[VideoEntry], root: Path, source: str, *,
                   hint: str = "exists under the dataset root ({first}); check ROOT") -> None:
    """Refuse a list of which no video exists; warn (one line) when some are missing."""
    missing = [e for e in rows if not (e.path if e.path.is_absolute() else root / e.path).exists()]
    if missing and len(missing) == len(rows):
        raise ManifestError(f"{root}: none of the {len(rows)} videos listed by the {source} "
                            + hint.format(first=f"first: {missing[0].path}"))
    if missing:
        log.warning("%d of %d videos listed by the %s are missing (first: %s)", len(missing), len(rows), source,
                    missing[0].path)


def _dedupe_ids(rows: list[VideoEntry], root: Path) -> list[VideoEntry]:
    """Ids are file stems; where two videos share a stem, both get the directory-qualified id instead, and where
    that is still shared (``walk/a.avi`` and ``walk/a.mp4``), the id keeps the extension too."""
    import dataclasses

    for options in ({"keep_dirs": True}, {"keep_dirs": True, "keep_suffix": True}):
        counts: dict[str, int] = {}
        for e in rows:
            counts[e.video_id] = counts.get(e.video_id, 0) + 1
        if all(c == 1 for c in counts.values()):
            return rows
        out = []
        for e in rows:
            if counts[e.video_id] > 1:
                try:
                    rel = e.path.relative_to(root)
                except ValueError:
                    rel = e.path
                e = dataclasses.replace(e, video_id=make_video_id(rel, **options))
            out.append(e)
        rows = out
    return rows


#: Dataset kind -> reader ``(root, options) -> Manifest``.
READERS: dict[str, Callable[[Path, _Options], Manifest]] = {
    "ucf101": _read_ucf101,
    "hmdb51": _read_hmdb51,
    "folder": _read_folder,
    "csv": _read_csv,
}
