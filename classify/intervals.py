"""Temporal intervals: the :class:`Detection` record, temporal IoU, and the ground-truth and detections CSV files.

The file formats of temporal action detection (UTF-8 CSV with a header row, one row per interval; times in
seconds), shared by ``idtfv detect`` (:mod:`idtfv.classify.detect`, which writes detections) and ``idtfv evaluate
--detections`` (:func:`idtfv.classify.evaluate.evaluate_detections`, which scores them):

- ground truth ``video_id,class,start,end``;
- detections ``video_id,class,start,end,score`` (``start``/``end`` with 3 decimals, ``score`` with 6).

NumPy only.
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from idtfv.errors import FormatError

__all__ = ["Detection", "temporal_iou", "read_intervals", "read_detections", "write_detections", "GT_COLUMNS",
           "DETECTION_COLUMNS"]

GT_COLUMNS = ("video_id", "class", "start", "end")
DETECTION_COLUMNS = ("video_id", "class", "start", "end", "score")


@dataclass(frozen=True)
class Detection:
    """One detected interval: ``video_id``, ``label`` (class name), ``start``/``end`` seconds, ``score``."""

    video_id: str
    label: str
    start: float
    end: float
    score: float


def temporal_iou(a, b) -> np.ndarray:
    """Temporal IoU of intervals ``a`` (n, 2) and ``b`` (m, 2) -> (n, m); an empty union gives 0."""
    a = np.asarray(a, np.float64).reshape(-1, 2)
    b = np.asarray(b, np.float64).reshape(-1, 2)
    inter = np.clip(np.minimum(a[:, None, 1], b[None, :, 1]) - np.maximum(a[:, None, 0], b[None, :, 0]), 0, None)
    union = (a[:, None, 1] - a[:, None, 0]) + (b[None, :, 1] - b[None, :, 0]) - inter
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(union > 0, inter / union, 0.0)


def _read_csv(path, columns: Sequence[str], what: str) -> list[Detection]:
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8-sig")  # a BOM (a spreadsheet's "CSV UTF-8") is not part of the header
    except UnicodeDecodeError:
        raise FormatError(path, f"not UTF-8 text; expected a {what} CSV with header {','.join(columns)}") from None
    reader = csv.DictReader(io.StringIO(text))
    header = [h.strip() for h in (reader.fieldnames or [])]
    reader.fieldnames = header  # rows keyed by the stripped names ("video_id, class, start, end" read as written)
    if header[:len(columns)] != list(columns):
        raise FormatError(path, f"header is {','.join(header) or '(empty)'}; expected a {what} CSV with header "
                                f"{','.join(columns)}")
    out = []
    for i, row in enumerate(reader, start=2):
        try:
            start, end = float(row["start"]), float(row["end"])
            score = float(row["score"]) if "score" in columns else 0.0
        except (TypeError, ValueError):
            raise FormatError(path, f"line {i}: start, end{', score' if 'score' in columns else ''} must be numbers, "
                                    f"got {', '.join(str(row.get(c)) for c in columns[2:])}") from None
        if not math.isfinite(score):
            raise FormatError(path, f"line {i}: score must be a finite number, got {row.get('score')}")
        if not (math.isfinite(start) and math.isfinite(end)) or start < 0 or end <= start:
            raise FormatError(path, f"line {i}: expected 0 <= start < end (seconds), got start {start:g}, end {end:g}")
        vid, label = (row["video_id"] or "").strip(), (row["class"] or "").strip()
        if not vid or not label:
            raise FormatError(path, f"line {i}: empty video_id or class")
        out.append(Detection(vid, label, start, end, score))
    return out


def read_intervals(path) -> list[Detection]:
    """Ground-truth intervals of a ``video_id,class,start,end`` CSV (score 0)."""
    return _read_csv(path, GT_COLUMNS, "ground-truth")


def read_detections(path) -> list[Detection]:
    """Detections of a ``video_id,class,start,end,score`` CSV."""
    return _read_csv(path, DETECTION_COLUMNS, "detections")


def write_detections(path, detections: Sequence[Detection]) -> Path:
    """Write detections (in the order given) atomically."""
    from idtfv.atomic import atomic_write_text

    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(DETECTION_COLUMNS)
    for d in detections:
        w.writerow([d.video_id, d.label, f"{d.start:.3f}", f"{d.end:.3f}", f"{d.score:.6f}"])
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, buf.getvalue())
    return path
