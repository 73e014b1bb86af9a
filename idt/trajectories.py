"""The :class:`Trajectories` container and its file formats (compressed ``.npz`` and LEAR's 436-column text).

Layout (one row per trajectory, float32, LEAR's column order):

====== ===== =====================================================================================
block  width content
====== ===== =====================================================================================
meta   10    frame_num (frame where the track ends, 0-based), mean_x, mean_y, var_x, var_y (standard
             deviations), length (summed step lengths, px), scale, x_pos, y_pos, t_pos
traj   30    camera-compensated per-step displacements (dx_1, dy_1, ..., dx_L, dy_L) / summed magnitude
hog    96    2x2x3 cells x 8 bins
hof    108   2x2x3 cells x 9 bins
mbhx   96    2x2x3 cells x 8 bins
mbhy   96    2x2x3 cells x 8 bins
====== ===== =====================================================================================
"""

from __future__ import annotations

import gzip
import io
import json
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from idtfv.atomic import atomic_open
from idtfv.errors import FormatError

__all__ = ["Trajectories", "load_trajectories", "concatenate", "BLOCKS", "META_COLUMNS", "LEAR_COLUMNS"]

META_COLUMNS = ("frame_num", "mean_x", "mean_y", "var_x", "var_y", "length", "scale", "x_pos", "y_pos", "t_pos")
#: block name -> width, in LEAR's column order
BLOCKS = {"meta": 10, "traj": 30, "hog": 96, "hof": 108, "mbhx": 96, "mbhy": 96}
LEAR_COLUMNS = sum(BLOCKS.values())  # 436


def _empty(name: str) -> np.ndarray:
    return np.zeros((0, BLOCKS[name]), np.float32)


@dataclass(eq=False)
class Trajectories:
    """Trajectories of one video: six float32 arrays with one row per trajectory plus ``info``.

    Attributes
    ----------
    meta : (n, 10) float32
    traj : (n, 30) float32
    hog : (n, 96) float32
    hof : (n, 108) float32
    mbhx, mbhy : (n, 96) float32
    info : dict
        JSON-serialisable: ``params``, ``matcher``, ``frames``, ``fps``, ``width``, ``height``, ...

    The widths above are those of the reference options (L = 15, 2x2x3 cells); other ``track_length`` or cell
    counts give other widths (traj ``2L``, descriptors ``nxy^2 * nt * bins``); LEAR text files use the defaults.
    """

    meta: np.ndarray = field(default_factory=lambda: _empty("meta"))
    traj: np.ndarray = field(default_factory=lambda: _empty("traj"))
    hog: np.ndarray = field(default_factory=lambda: _empty("hog"))
    hof: np.ndarray = field(default_factory=lambda: _empty("hof"))
    mbhx: np.ndarray = field(default_factory=lambda: _empty("mbhx"))
    mbhy: np.ndarray = field(default_factory=lambda: _empty("mbhy"))
    info: dict = field(default_factory=dict)

    def __post_init__(self):
        n = None
        for name, width in BLOCKS.items():
            a = np.ascontiguousarray(getattr(self, name), dtype=np.float32)
            # other widths only with non-default options (track_length, cells); meta is always 10 wide
            if a.ndim != 2 or (name == "meta" and a.shape[1] != width):
                raise ValueError(f"Trajectories.{name}: expected shape (n, {width}), got {a.shape}")
            if n is None:
                n = a.shape[0]
            elif a.shape[0] != n:
                raise ValueError(f"Trajectories.{name}: expected {n} rows like meta, got {a.shape[0]}")
            object.__setattr__(self, name, a)
        if not isinstance(self.info, dict):
            raise ValueError(f"Trajectories.info: expected a dict, got {type(self.info).__name__}")

    def __len__(self) -> int:
        return self.meta.shape[0]

    def __repr__(self) -> str:
        return f"Trajectories(n={len(self)}, info keys={sorted(self.info)})"

    # ------------------------------------------------------------------ conversions
    def as_arrays(self) -> dict[str, np.ndarray]:
        """The six arrays plus ``info_json`` (a 0-d unicode array): the ``.npz`` keys."""
        out = {name: getattr(self, name) for name in BLOCKS}
        out["info_json"] = np.array(json.dumps(self.info, sort_keys=True))
        return out

    @classmethod
    def from_arrays(cls, arrays, *, source: str = "<arrays>") -> "Trajectories":
        """Inverse of :meth:`as_arrays` (a dict or an opened ``.npz``)."""
        missing = [k for k in BLOCKS if k not in arrays]
        if missing:
            raise FormatError(source, f"expected trajectory arrays {', '.join(BLOCKS)}; missing {', '.join(missing)}")
        info = {}
        if "info_json" in arrays:
            try:
                info = json.loads(str(np.asarray(arrays["info_json"])[()]))
            except (ValueError, TypeError) as e:
                raise FormatError(source, f"info_json is not valid JSON ({e})") from None
        try:
            return cls(**{k: np.asarray(arrays[k]) for k in BLOCKS}, info=info)
        except ValueError as e:
            raise FormatError(source, str(e)) from None

    def to_lear(self) -> np.ndarray:
        """(n, 436) float32 in LEAR's column order."""
        return np.concatenate([getattr(self, name) for name in BLOCKS], axis=1)

    @classmethod
    def from_lear(cls, table: np.ndarray, info: dict | None = None) -> "Trajectories":
        """Split an (n, 436) table into the blocks."""
        table = np.asarray(table, np.float32).reshape(-1, LEAR_COLUMNS)
        parts, o = {}, 0
        for name, width in BLOCKS.items():
            parts[name] = table[:, o:o + width]
            o += width
        return cls(**parts, info=dict(info or {}))

    def select(self, index) -> "Trajectories":
        """Rows ``index`` (a slice, a boolean mask or integer indices)."""
        return Trajectories(**{k: getattr(self, k)[index] for k in BLOCKS}, info=dict(self.info))

    # ------------------------------------------------------------------ files
    def save(self, path, format: str | None = None, *, compact: bool = True) -> Path:
        """Write to ``path``: ``format="npz"`` (compressed; default unless the name ends in .txt/.txt.gz) or
        ``"lear"`` (436 tab-separated columns per line, gzip-compressed if the name ends in ``.gz``).

        ``compact=True`` (the default; npz only) stores the five descriptor blocks as float16 (values in [-1, 1],
        relative precision 5e-4; ``meta`` stays float32): about 0.18 of the LEAR text instead of 0.35. On the
        built-in default dataset, Fisher vectors encoded from float16-rounded descriptors with the same codebook
        differ by 0.1 % (median relative L2) and gave identical accuracy and mAP on all three splits
        (``bench/RESULTS.md``). ``compact=False`` stores float32. :func:`load_trajectories` returns float32 either
        way. The file is written to a temporary name and renamed, so a reader never sees half a file.
        """
        path = Path(path)
        if format is None:
            format = "lear" if path.name.endswith((".txt", ".txt.gz")) else "npz"
        if format not in ("npz", "lear"):
            raise ValueError(f"Trajectories.save: format must be 'npz' or 'lear', got {format!r}")
        if format == "npz":
            arrays = self.as_arrays()
            if compact:
                for name in BLOCKS:
                    if name != "meta":
                        arrays[name] = arrays[name].astype(np.float16)
            with atomic_open(path, "wb") as f:
                np.savez_compressed(f, **arrays)
        else:
            data = _format_lear(self.to_lear())
            with atomic_open(path, "wb") as raw:
                if path.name.endswith(".gz"):
                    # name and mtime fixed in the gzip header: otherwise the temporary file's name lands there
                    with gzip.GzipFile(filename=path.name, fileobj=raw, mode="wb", mtime=0) as f:
                        f.write(data)
                else:
                    raw.write(data)
        return path


def _format_lear(table: np.ndarray) -> bytes:
    """One line per row, tab-separated, each number in the shortest form that round-trips float32."""
    if len(table) == 0:
        return b""
    buf = io.StringIO()
    # '%.9g' round-trips float32 exactly; LEAR itself prints 6 significant digits
    np.savetxt(buf, table, fmt="%.9g", delimiter="\t")
    return buf.getvalue().encode()


def _read_lear(path: Path) -> np.ndarray:
    opener = gzip.open if path.name.endswith(".gz") else open
    try:
        with opener(path, "rb") as f:
            raw = f.read()
    except (OSError, EOFError, gzip.BadGzipFile) as e:
        raise FormatError(path, f"cannot read LEAR text ({e})") from None
    rows = []
    for lineno, line in enumerate(raw.splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = np.array(line.split(), dtype=np.float32)
        except ValueError:
            raise FormatError(path, f"line {lineno}: expected numbers, got {line[:40]!r}...") from None
        if row.size != LEAR_COLUMNS:
            raise FormatError(
                path, f"line {lineno}: expected {LEAR_COLUMNS} columns (LEAR iDT format), got {row.size}")
        rows.append(row)
    return np.vstack(rows) if rows else np.zeros((0, LEAR_COLUMNS), np.float32)


def load_trajectories(path) -> Trajectories:
    """Read trajectories from ``.npz`` (this package), or LEAR's ``.txt`` / ``.txt.gz`` (436 columns).

    Raises
    ------
    FormatError
        The file is missing, unreadable or not in one of these formats.
    """
    path = Path(path)
    if not path.exists():
        raise FormatError(path, "no such file; expected a trajectories .npz, .txt or .txt.gz")
    if path.suffix == ".npz":
        try:
            with np.load(path, allow_pickle=False) as z:
                return Trajectories.from_arrays(z, source=str(path))
        except (OSError, ValueError, zipfile.BadZipFile, EOFError) as e:
            raise FormatError(path, f"not a readable .npz ({e})") from None
    if path.name.endswith((".txt", ".txt.gz", ".gz")):
        return Trajectories.from_lear(_read_lear(path), info={"source": "lear-text", "path": str(path)})
    raise FormatError(path, f"unknown trajectory file type {path.suffix!r}; expected .npz, .txt or .txt.gz")


def concatenate(parts, *, info: dict | None = None) -> Trajectories:
    """Stack several :class:`Trajectories` (e.g. the batches of :func:`idtfv.idt.iter_trajectories`).

    ``info`` defaults to the first part's.
    """
    parts = list(parts)
    if info is None:
        info = dict(parts[0].info) if parts else {}
    if not parts:
        return Trajectories(info=info)
    return Trajectories(**{k: np.concatenate([getattr(p, k) for p in parts]) for k in BLOCKS}, info=info)


Trajectories.concatenate = staticmethod(concatenate)
