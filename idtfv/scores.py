"""Score and feature files: the formats every classifier and encoder shares.

Score file (CSV, UTF-8, header row)::

    video_id,label,<class_name_0>,...,<class_name_{C-1}>

A class name with a comma or a quote is quoted as CSV quotes it (``"run, fast"``).
``label`` is the true class id (0-based), empty when unknown, or several ids joined by ``;`` for
multi-label datasets (Hollywood2-style). Scores are floats written with 17 significant digits, so
a round trip is exact; higher means more likely.

Feature file (``.npz``, no pickles): ``video_ids (n,) <U``, ``features (n, d) float32``,
``labels (n,) int64`` (-1 = unknown).

Both writers are atomic (temp file in the same directory, then ``os.replace``) and deterministic.
"""

from __future__ import annotations

import csv
import io
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from idtfv.errors import FormatError

from idtfv.atomic import atomic_open, atomic_write_text
from idtfv.cache import NPZ_HEAD, not_npz, open_npz

__all__ = ["Scores", "Features", "write_scores", "read_scores", "check_scores", "as_scores", "write_features",
           "read_features"]

_ID_RE = re.compile(r"^[A-Za-z0-9._-]+$")
_HEADER = ("video_id", "label")


@dataclass
class Scores:
    """Per-video class scores.

    Attributes
    ----------
    video_ids : list of str, length n
    scores : ndarray, shape (n, C), float64
        Higher = more likely.
    class_names : list of str, length C
    labels : ndarray, shape (n,), int64
        True class id, -1 when unknown (or when a row has several labels; see ``label_sets``).
    label_sets : list of tuple of int, length n
        All true class ids of each row (empty tuple = unknown). Equals ``(labels[i],)`` for
        single-label data.
    """

    video_ids: list
    scores: np.ndarray
    class_names: list
    labels: np.ndarray
    label_sets: list | None = None

    def __post_init__(self):
        if self.label_sets is None:
            self.label_sets = [() if int(l) < 0 else (int(l),) for l in self.labels]

    @property
    def n_classes(self) -> int:
        return len(self.class_names)

    @property
    def multilabel(self) -> bool:
        """True when any row has more than one true label."""
        return any(len(s) > 1 for s in self.label_sets)

    def targets(self) -> np.ndarray:
        """Indicator matrix of the true labels, shape (n, C), bool (all False = unknown)."""
        t = np.zeros(self.scores.shape, dtype=bool)
        for i, s in enumerate(self.label_sets):
            t[i, list(s)] = True
        return t


@dataclass
class Features:
    """Per-video feature vectors (e.g. Fisher vectors).

    Attributes
    ----------
    video_ids : list of str, length n
    features : ndarray, shape (n, d), float32
    labels : ndarray, shape (n,), int64, -1 = unknown
    """

    video_ids: list
    features: np.ndarray
    labels: np.ndarray


# --------------------------------------------------------------------------- helpers


def _check_ids(video_ids, n: int, what: str) -> list[str]:
    ids = [str(v) for v in video_ids]
    if len(ids) != n:
        raise ValueError(f"{what}: expected {n} video ids (one per row), got {len(ids)}")
    bad = [v for v in ids if not _ID_RE.match(v)]
    if bad:
        raise ValueError(f"{what}: video ids must match [A-Za-z0-9._-]+, got {bad[0]!r}")
    seen = set()
    for v in ids:
        if v in seen:
            raise ValueError(f"{what}: video ids must be unique, {v!r} appears twice")
        seen.add(v)
    return ids


def _label_sets(labels, n: int, n_classes: int | None, what: str) -> list[tuple[int, ...]]:
    """Normalise labels: None, (n,) ints (-1 unknown), (n, C) indicators, or a list of id sets."""
    if labels is None:
        return [()] * n
    if isinstance(labels, np.ndarray) and labels.ndim == 2:
        if labels.shape[0] != n or (n_classes is not None and labels.shape[1] != n_classes):
            raise ValueError(f"{what}: label indicator matrix must have shape ({n}, {n_classes}), got {labels.shape}")
        return [tuple(int(j) for j in np.flatnonzero(row)) for row in labels]
    out = []
    seq = list(labels)
    if len(seq) != n:
        raise ValueError(f"{what}: expected {n} labels, got {len(seq)}")
    for lab in seq:
        if isinstance(lab, (tuple, list, set, frozenset, np.ndarray)):
            ids = tuple(sorted({int(x) for x in lab}))
        else:
            ids = () if int(lab) < 0 else (int(lab),)
        if n_classes is not None and any(j >= n_classes or j < 0 for j in ids):
            raise ValueError(f"{what}: label ids must lie in 0..{n_classes - 1}, got {ids}")
        out.append(ids)
    return out


def _single(label_sets) -> np.ndarray:
    return np.array([s[0] if len(s) == 1 else -1 for s in label_sets], dtype=np.int64)


# --------------------------------------------------------------------------- scores


def write_scores(path, video_ids, scores, class_names, labels=None) -> Path:
    """Write a score file atomically.

    Parameters
    ----------
    path : path-like
        Destination ``.csv``.
    video_ids : sequence of str, length n
    scores : array_like, shape (n, C)
        Class scores; must be finite.
    class_names : sequence of str, length C
        Must be unique, non-empty and without line breaks; a name with a comma or a quote is quoted in the
        header as CSV quotes it (``"run, fast"``), which :func:`read_scores` reads back.
    labels : None, array_like (n,) of int (-1 = unknown), (n, C) bool indicators, or a sequence of
        id sets (multi-label)

    Returns
    -------
    Path of the written file.
    """
    scores = np.asarray(scores, dtype=np.float64)
    if scores.ndim != 2:
        raise ValueError(f"write_scores: scores must have shape (n, C), got shape {scores.shape}")
    n, c = scores.shape
    if not np.isfinite(scores).all():
        raise ValueError("write_scores: scores contain NaN or infinity; fix the classifier output first")
    names = [str(x) for x in class_names]
    if len(names) != c:
        raise ValueError(f"write_scores: expected {c} class names (one per score column), got {len(names)}")
    if len(set(names)) != c or any((not x) or any(ch in x for ch in "\r\n") for x in names):
        raise ValueError("write_scores: class names must be unique, non-empty, without line breaks")
    ids = _check_ids(video_ids, n, "write_scores")
    sets = _label_sets(labels, n, c, "write_scores")

    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerow(_HEADER + tuple(names))  # quotes only a name with , or "
    for i in range(n):
        lab = ";".join(str(j) for j in sets[i])
        row = ",".join(repr(float(v)) for v in scores[i])
        buf.write(f"{ids[i]},{lab},{row}\n")
    path = Path(path)
    atomic_write_text(path, buf.getvalue())
    return path


def read_scores(path) -> Scores:
    """Read a score file written by :func:`write_scores` (or any tool following the format).

    Raises
    ------
    FormatError
        Missing header columns, wrong number of fields, unparsable or non-finite scores, bad labels,
        duplicate video ids.
    OSError
        The file cannot be opened.
    """
    path = Path(path)
    try:
        with open(path, encoding="utf-8-sig", newline="") as fh:
            text = fh.read()
    except UnicodeDecodeError as exc:
        raise FormatError(path, f"not UTF-8 text ({exc.reason} at byte {exc.start}); expected a score CSV") from None
    rows = list(csv.reader(io.StringIO(text)))
    if not rows:
        raise FormatError(path, "empty file; expected a score CSV with header 'video_id,label,<class names...>'")
    header = [h.strip() for h in rows[0]]
    if tuple(header[:2]) != _HEADER or len(header) < 3:
        raise FormatError(
            path, f"header must start with 'video_id,label,' followed by class names, got {','.join(header[:4])!r}"
        )
    names = header[2:]
    if not all(names):
        col = names.index("") + 3
        hint = " (a trailing comma?)" if col == len(header) else ""
        raise FormatError(path, f"header column {col} has no class name{hint}; expected 'video_id,label,' followed by "
                                "one non-empty name per score column")
    if len(set(names)) != len(names):
        raise FormatError(path, "class names in the header are not unique")
    c = len(names)
    ids, sets = [], []
    body = [r for r in rows[1:] if r and any(x.strip() for x in r)]
    scores = np.empty((len(body), c), dtype=np.float64)
    seen = set()
    for i, r in enumerate(body):
        line = i + 2
        if len(r) != c + 2:
            raise FormatError(path, f"line {line}: expected {c + 2} fields (video_id, label, {c} scores), got {len(r)}")
        vid = r[0].strip()
        if not _ID_RE.match(vid):
            raise FormatError(path, f"line {line}: video id {vid!r} is not of the form [A-Za-z0-9._-]+")
        if vid in seen:
            raise FormatError(path, f"line {line}: video id {vid!r} appears twice")
        seen.add(vid)
        lab = r[1].strip()
        try:
            s = tuple(sorted({int(x) for x in lab.split(";")})) if lab else ()
        except ValueError:
            raise FormatError(
                path, f"line {line}: label {lab!r} is not an integer class id (or ids joined by ';')") from None
        if s == (-1,):
            s = ()
        if any(j < 0 or j >= c for j in s):
            raise FormatError(path, f"line {line}: label {lab!r} outside 0..{c - 1} ({c} classes in the header)")
        try:
            scores[i] = [float(x) for x in r[2:]]
        except ValueError:
            raise FormatError(path, f"line {line}: scores must be numbers") from None
        ids.append(vid)
        sets.append(s)
    if not np.isfinite(scores).all():
        bad = int(np.flatnonzero(~np.isfinite(scores).all(axis=1))[0]) + 2
        raise FormatError(path, f"line {bad}: scores contain NaN or infinity")
    return Scores(video_ids=ids, scores=scores, class_names=names, labels=_single(sets), label_sets=sets)


# --------------------------------------------------------------------------- features


def check_scores(sc: Scores) -> Scores:
    """Check an in-memory :class:`Scores` as :func:`read_scores` checks a score file: scores ``(n, C)`` finite with
    C the class names, ``n`` video ids and labels, labels and label sets in ``[-1, C)``; returns ``sc``. Raises
    :class:`~idtfv.errors.FormatError` (``<scores>: ...``)."""
    scores = np.asarray(sc.scores)
    n_cls = len(sc.class_names)
    if scores.ndim != 2 or scores.shape[1] != n_cls:
        raise FormatError("<scores>", f"scores must have shape (n videos, {n_cls} classes) for the {n_cls} class "
                                      f"names, got {scores.shape}; give one column per class name")
    n = scores.shape[0]
    labels = np.asarray(sc.labels)
    if len(sc.video_ids) != n or labels.shape != (n,) or len(sc.label_sets) != n:
        raise FormatError("<scores>", f"{n} score rows but {len(sc.video_ids)} video ids, labels of shape "
                                      f"{labels.shape} and {len(sc.label_sets)} label sets; give one of each per row")
    if scores.dtype.kind not in "biuf" or not np.isfinite(scores).all():
        raise FormatError("<scores>", "scores contain NaN or infinity (or are not numbers): the ranking would be "
                                      "arbitrary; fix the classifier output first")
    ids = [int(c) for s in sc.label_sets for c in s] + [int(v) for v in labels]
    if ids and (min(ids) < -1 or max(ids) >= n_cls):
        bad = next(c for c in ids if c < -1 or c >= n_cls)
        raise FormatError("<scores>", f"label {bad} is not a class id in [0, {n_cls}) (-1: unknown); labels index "
                                      "class_names")
    return sc


def as_scores(item) -> Scores:
    """``item`` as checked :class:`Scores`: an in-memory one through :func:`check_scores`, a path through
    :func:`read_scores` (what ``evaluate`` and the fusions take)."""
    return check_scores(item) if isinstance(item, Scores) else read_scores(item)


def write_features(path, video_ids, features, labels=None) -> Path:
    """Write a feature file (``.npz``, uncompressed, no pickles) atomically.

    Parameters
    ----------
    path : path-like
        Destination ``.npz``.
    video_ids : sequence of str, length n
    features : array_like, shape (n, d)
        Stored as float32.
    labels : array_like of int, shape (n,), optional
        -1 = unknown (default: all unknown).
    """
    feats = np.ascontiguousarray(features, dtype=np.float32)
    if feats.ndim != 2:
        raise ValueError(f"write_features: features must have shape (n, d), got shape {feats.shape}")
    n = feats.shape[0]
    ids = _check_ids(video_ids, n, "write_features")
    if labels is None:
        labs = np.full(n, -1, dtype=np.int64)
    else:
        labs = np.asarray(labels).astype(np.int64, copy=True)
        if labs.shape != (n,):
            raise ValueError(f"write_features: labels must have shape ({n},), got {labs.shape}")
        labs[labs < 0] = -1
    path = Path(path)
    with atomic_open(path, "wb") as fh:  # a file object: np.savez adds no suffix
        np.savez(fh, video_ids=np.array(ids, dtype=np.str_), features=feats, labels=labs)
    return path


def read_features(path) -> Features:
    """Read a feature file written by :func:`write_features`.

    Raises
    ------
    FormatError
        Not an ``.npz``, missing keys, wrong shapes or dtypes, non-finite features, duplicate ids.
    OSError
        The file cannot be opened.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such feature file")
    with open(path, "rb") as fh:
        what = not_npz(fh.read(NPZ_HEAD))
    if what is not None:
        raise FormatError(path, f"{what}; expected an .npz feature file with arrays video_ids, features, labels "
                                "(as idtfv encode and idtfv.classify.write_features write)")
    # open_npz: any damage (not a ZIP, a member failing zlib, its CRC-32 or its header) is a FormatError naming path
    with open_npz(path, remedy="rerun the command that wrote it (idtfv encode)") as z:
        missing = [k for k in ("video_ids", "features") if k not in z]
        if missing:
            raise FormatError(path, f"missing array(s) {missing}; expected keys video_ids, features, labels")
        ids = z["video_ids"]
        feats = z["features"]
        labs = z["labels"] if "labels" in z else None
    if ids.ndim != 1 or ids.dtype.kind not in "UOS":
        raise FormatError(path, f"video_ids must be a 1-D string array, got dtype {ids.dtype} shape {ids.shape}")
    if feats.ndim != 2 or feats.shape[0] != ids.shape[0]:
        raise FormatError(path, f"features must have shape ({ids.shape[0]}, d), got {feats.shape}")
    if feats.shape[1] == 0:
        raise FormatError(path, f"features have 0 columns (shape {feats.shape}); expected one vector of d >= 1 "
                                "numbers per video")
    if feats.dtype.kind != "f":
        raise FormatError(path, f"features must be floating point, got dtype {feats.dtype}")
    feats = np.ascontiguousarray(feats, dtype=np.float32)
    for i0 in range(0, feats.shape[0], 512):  # in blocks: no (n, d) temporary for large files
        ok = np.isfinite(feats[i0:i0 + 512]).all(axis=1)
        if not ok.all():
            bad = i0 + int(np.flatnonzero(~ok)[0])
            raise FormatError(path, f"features of row {bad} ({ids[bad]}) contain NaN or infinity")
    n = ids.shape[0]
    if labs is None:
        labs = np.full(n, -1, dtype=np.int64)
    if labs.shape != (n,) or labs.dtype.kind not in "iu":
        raise FormatError(path, f"labels must be ({n},) integers, got dtype {labs.dtype} shape {labs.shape}")
    labs = labs.astype(np.int64)
    labs[labs < 0] = -1
    id_list = [str(v) for v in ids]
    if len(set(id_list)) != n:
        raise FormatError(path, "video_ids are not unique")
    return Features(video_ids=id_list, features=feats, labels=labs)
