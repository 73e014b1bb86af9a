"""The :class:`Trajectories` container and its file formats (compressed ``.npz`` and LEAR's text, one row per line).

One row per trajectory, float32, LEAR's column order; the widths are those of the
:class:`~idtfv.idt.layout.DescriptorLayout` of the extractor's options (here for the reference options,
L = 15 and 2x2x3 cells, a 436-column row):

====== ===== =====================================================================================
block  width content
====== ===== =====================================================================================
meta   10    frame_num (frame where the track ends, 0-based), mean_x, mean_y, var_x, var_y (standard
             deviations), length (summed step lengths, px), scale, x_pos, y_pos, t_pos
traj   2L    camera-compensated per-step displacements (dx_1, dy_1, ..., dx_L, dy_L) / summed magnitude
hog    96    2x2x3 cells x 8 bins
hof    108   2x2x3 cells x 9 bins
mbhx   96    2x2x3 cells x 8 bins
mbhy   96    2x2x3 cells x 8 bins
====== ===== =====================================================================================

A container whose ``info`` holds the extractor's ``params`` (every one :func:`idtfv.idt.extract` returns) checks
its widths against their layout. LEAR text files carry no options: :func:`load_trajectories` reads them with the
reference layout unless given another one.
"""

from __future__ import annotations

import contextlib
import gzip
import io
import json
import os
import queue
import tempfile
import threading
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from idtfv.atomic import atomic_open, check_replaceable, disk_full_error
from idtfv.cache import NPZ_COMPRESSLEVEL, open_npz
from idtfv.errors import FormatError, IdtfvError, ParameterError
from idtfv.idt.gzstream import GzipStream
from idtfv.idt.layout import BLOCK_NAMES, DescriptorLayout
from idtfv.idt.npzstream import DeflateBody, deflate_segment, write_zip

__all__ = ["Trajectories", "TrajectoryWriter", "load_trajectories", "concatenate", "fill_t_pos", "BLOCKS",
           "META_COLUMNS", "LEAR_COLUMNS", "LEAR_GZIP_LEVEL", "LEAR_GZIP_STRATEGY", "NPZ_HUFFMAN_BLOCKS",
           "LEAR_SUFFIXES", "output_format"]

META_COLUMNS = ("frame_num", "mean_x", "mean_y", "var_x", "var_y", "length", "scale", "x_pos", "y_pos", "t_pos")
#: block name -> width of the reference options' layout, in LEAR's column order (other options:
#: ``DescriptorLayout.from_params(params).widths``)
BLOCKS = DescriptorLayout().widths
#: Columns of a LEAR text line with the reference options (436).
LEAR_COLUMNS = DescriptorLayout().n_columns
#: gzip level of LEAR text written to ``.txt.gz`` when none is given (1: about 5x faster than gzip's own default 9,
#: files about 15 % larger; ``bench/bench_memory.py``)
LEAR_GZIP_LEVEL = 1
#: zlib strategy of that default: Huffman coding only, no string matching, which :class:`idtfv.idt.gzstream.GzipStream`
#: writes with idtfv's own encoder (:class:`idtfv.deflate.HuffmanDeflate`: ~2.5x zlib's speed for this
#: strategy; ``bench/bench_output.py``). An explicit ``compresslevel`` uses zlib's default strategy at that level.
LEAR_GZIP_STRATEGY = zlib.Z_HUFFMAN_ONLY
#: npz members compressed with Huffman codes only (no string matching) at the default level: their values (unit-norm
#: descriptors, normalised displacements) rarely repeat a byte sequence, and on the shared clips' output (float16 and
#: float32) zlib's level-1 matching changed their size by under 2% (smaller on some clips, larger on others) for
#: 2.5-3x the CPU. ``meta`` (integer-valued frame numbers and scales) and ``hof`` (cells of static regions all in the
#: zero-motion bin) keep the matching: it makes them 13-17% smaller. ``bench/bench_pipeline.py``'s "real iDT output"
#: rows race the two.
NPZ_HUFFMAN_BLOCKS = ("traj", "hog", "mbhx", "mbhy")
#: Name endings that :class:`TrajectoryWriter` writes as LEAR text when no format is given (other names: npz)
LEAR_SUFFIXES = (".txt", ".txt.gz")
#: Rows formatted at a time when writing LEAR text (bounds the text and work arrays held: ~11 KB per row)
_LEAR_ROWS = 256
#: npz: bytes of a member handed to its compressor at a time, whatever the chunks written (so the file's bytes do not
#: depend on how the rows were chunked, nor on the thread that compresses them)
_PIECE = 1 << 18
#: npz with ``threads >= 2``: pieces waiting for the background compressor at most (~2 MB: memory stays flat)
_QUEUED_PIECES = 8
#: ``.txt.gz`` with ``threads >= 2``: chunks of text (:data:`_LEAR_ROWS` rows, ~0.8 MB) waiting for the gzip at most
_QUEUED_TEXTS = 2


@dataclass(eq=False)
class Trajectories:
    """Trajectories of one video: six float32 arrays with one row per trajectory plus ``info``.

    Attributes
    ----------
    meta : (n, 10) float32
    traj : (n, 2 L) float32, (n, 30) with the reference options
    hog : (n, 96) float32
    hof : (n, 108) float32
    mbhx, mbhy : (n, 96) float32
    info : dict
        JSON-serialisable: ``params``, ``matcher``, ``frames``, ``fps``, ``width``, ``height``, ...

    The descriptor widths are those of the options' :class:`~idtfv.idt.layout.DescriptorLayout` (above: the
    reference options, L = 15 and 2x2x3 cells).
    When ``info`` holds the extractor's ``params``, every block must have its layout's width; without them
    (LEAR's text files, hand-made arrays) only ``meta`` is checked. Blocks not given are empty, with the layout's
    widths.
    """

    meta: np.ndarray | None = None
    traj: np.ndarray | None = None
    hog: np.ndarray | None = None
    hof: np.ndarray | None = None
    mbhx: np.ndarray | None = None
    mbhy: np.ndarray | None = None
    info: dict = field(default_factory=dict)

    def __post_init__(self):
        if not isinstance(self.info, dict):
            raise ValueError(f"Trajectories.info: expected a dict, got {type(self.info).__name__}")
        try:
            layout = DescriptorLayout.from_info(self.info)
        except ValueError as e:  # ParameterError: params that give no layout
            raise ValueError(f"Trajectories.info: {e}") from None
        strict = self.info.get("params") is not None
        n = None
        for name, width in layout.widths.items():
            a = getattr(self, name)
            a = np.zeros((0, width), np.float32) if a is None else np.ascontiguousarray(a, dtype=np.float32)
            if a.ndim != 2 or ((strict or name == "meta") and a.shape[1] != width):
                why = f" ({layout.describe()}, from info['params'])" if strict and name != "meta" else ""
                raise ValueError(f"Trajectories.{name}: expected shape (n, {width}){why}, got {a.shape}")
            if n is None:
                n = a.shape[0]
            elif a.shape[0] != n:
                raise ValueError(f"Trajectories.{name}: expected {n} rows like meta, got {a.shape[0]}")
            object.__setattr__(self, name, a)

    def __len__(self) -> int:
        return self.meta.shape[0]

    def __repr__(self) -> str:
        return f"Trajectories(n={len(self)}, info keys={sorted(self.info)})"

    # ------------------------------------------------------------------ conversions
    def as_arrays(self) -> dict[str, np.ndarray]:
        """The six arrays plus ``info_json`` (a 0-d unicode array): the ``.npz`` keys."""
        out = {name: getattr(self, name) for name in BLOCK_NAMES}
        out["info_json"] = np.array(json.dumps(self.info, sort_keys=True))
        return out

    @classmethod
    def from_arrays(cls, arrays, *, source: str = "<arrays>") -> "Trajectories":
        """Inverse of :meth:`as_arrays` (a dict or an opened ``.npz``)."""
        missing = [k for k in BLOCK_NAMES if k not in arrays]
        if missing:
            raise FormatError(source, f"expected trajectory arrays {', '.join(BLOCK_NAMES)}; missing "
                                      f"{', '.join(missing)}")
        info = {}
        if "info_json" in arrays:
            try:
                info = json.loads(str(np.asarray(arrays["info_json"])[()]))
            except (ValueError, TypeError) as e:
                raise FormatError(source, f"info_json is not valid JSON ({e})") from None
        try:
            return cls(**{k: np.asarray(arrays[k]) for k in BLOCK_NAMES}, info=info)
        except ValueError as e:
            raise FormatError(source, str(e)) from None

    def to_lear(self) -> np.ndarray:
        """(n, C) float32 in LEAR's column order (C = the blocks' widths summed: 436 with the reference options)."""
        return np.concatenate([getattr(self, name) for name in BLOCK_NAMES], axis=1)

    @classmethod
    def from_lear(cls, table: np.ndarray, info: dict | None = None, *,
                  layout: DescriptorLayout | None = None) -> "Trajectories":
        """Split an (n, C) table into the blocks of ``layout``.

        ``layout`` defaults to that of ``info`` (:meth:`DescriptorLayout.from_info`: its ``params``, else the
        reference layout, C = 436).
        """
        layout = DescriptorLayout.from_info(info) if layout is None else layout
        table = np.asarray(table, np.float32).reshape(-1, layout.n_columns)
        parts, o = {}, 0
        for name, width in layout.widths.items():
            parts[name] = table[:, o:o + width]
            o += width
        return cls(**parts, info=dict(info or {}))

    def select(self, index) -> "Trajectories":
        """Rows ``index`` (a slice, a boolean mask or integer indices)."""
        return Trajectories(**{k: getattr(self, k)[index] for k in BLOCK_NAMES}, info=dict(self.info))

    # ------------------------------------------------------------------ files
    def save(self, path, format: str | None = None, *, compact: bool = True,
             compresslevel: int | None = None) -> Path:
        """Write to ``path``: ``format="npz"`` (compressed; default unless the name ends in .txt/.txt.gz) or
        ``"lear"`` (tab-separated columns per line, 436 with the reference options; gzip-compressed if the name
        ends in ``.gz``).

        ``compact=True`` (the default; npz only) stores the five descriptor blocks as float16 (values in [-1, 1],
        relative precision 5e-4; ``meta`` stays float32): about 0.18 of the LEAR text instead of 0.35. On the
        built-in default dataset, Fisher vectors encoded from float16-rounded descriptors with the same codebook
        differ by 0.1 % (median relative L2) and gave identical accuracy and mAP on all three splits
        (``bench/RESULTS.md``). ``compact=False`` stores float32. :func:`load_trajectories` returns float32 either
        way. ``compresslevel``: DEFLATE level 0-9 of the npz members (default 1,
        :data:`idtfv.cache.NPZ_COMPRESSLEVEL`, Huffman codes only for :data:`NPZ_HUFFMAN_BLOCKS`; 0 stores them
        uncompressed) or of a ``.txt.gz`` (default: Huffman codes only, :data:`LEAR_GZIP_STRATEGY`); a level given
        here uses zlib's default strategy. The file is written to a temporary name and renamed, so a reader never
        sees half a file. Same bytes as writing the rows in chunks through :class:`TrajectoryWriter`.
        """
        with TrajectoryWriter(path, format, compact=compact, compresslevel=compresslevel) as writer:
            writer.write(self)
        return writer.path


def _write_all(stream, data) -> None:
    """Write all of ``data`` to ``stream``. A pipe whose reader leaves in the middle of a large write takes part of
    it, and ``BufferedWriter.write`` then returns that count without raising: the rest would be dropped silently and
    the command end with status 0. Writing the rest raises ``BrokenPipeError`` instead."""
    view = memoryview(data).cast("B")
    while view:
        n = stream.write(view)
        if n is None:  # a non-blocking stream that is full: no such stdout here, but never spin on it
            raise BlockingIOError(f"the output stream took none of {len(view)} bytes")
        view = view[n:]


def _check_writable(path: Path) -> None:
    """Fail now with one line naming ``path`` if its folder cannot be made or written in (a file in the way, no
    permission, a read-only file system) or ``path`` is a directory or device (:func:`idtfv.atomic.check_replaceable`);
    a full disk is a :class:`~idtfv.errors.DiskFullError`."""
    check_replaceable(path)
    try:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except FileExistsError:  # mkdir says 'File exists: <file>' of a file where the folder goes
            raise IdtfvError(f"{path}: {path.parent} is a file, not a directory; write the output in a "
                             "directory") from None
        tempfile.TemporaryFile(dir=path.parent).close()  # the npz's temporary files go there
    except OSError as exc:
        full = disk_full_error(exc, path)
        if full is not None:
            raise full from exc
        why = (exc.strerror or str(exc)).lower()
        raise IdtfvError(f"{path}: cannot write in {path.parent} ({why}); give an output path in a directory you "
                         "can write to") from exc


def output_format(out, format: str | None = None) -> str:
    """The format :class:`TrajectoryWriter` writes ``out`` in: ``format`` when given, else ``"lear"`` for a binary
    stream or a name ending in :data:`LEAR_SUFFIXES`, ``"npz"`` for any other name."""
    if format is not None:
        return format
    if not (isinstance(out, (str, bytes)) or hasattr(out, "__fspath__")):
        return "lear"
    return "lear" if Path(os.fsdecode(out)).name.endswith(LEAR_SUFFIXES) else "npz"


class TrajectoryWriter:
    """Write trajectories to one file chunk by chunk as they finish, so memory does not grow with the video.

    Parameters
    ----------
    path : path-like or binary file object
        The output file, written atomically (a temporary name next to it, renamed by :meth:`close`); or an open
        binary stream (``sys.stdout.buffer``) for LEAR text, written as it comes.
    format : {"npz", "lear"} or None
        Default: ``"lear"`` if the name ends in ``.txt`` / ``.txt.gz``, else ``"npz"``; ``"lear"`` for a stream.
    compact : bool
        npz: store the five descriptor blocks as float16 (see :meth:`Trajectories.save`).
    compresslevel : int or None
        DEFLATE level 0-9: of the npz members (default :data:`idtfv.cache.NPZ_COMPRESSLEVEL`, 1, with Huffman
        codes only for :data:`NPZ_HUFFMAN_BLOCKS`; a level given here uses zlib's default strategy for every
        member; 0 stores them uncompressed, ZIP method 0) or of a ``.txt.gz`` (default: Huffman coding only,
        :data:`LEAR_GZIP_STRATEGY`; a level given here uses zlib's default strategy at that level).
    threads : int
        npz and ``.txt.gz``: with 2 or more, the members (the gzip stream) are compressed on a background thread of
        the writer (zlib and idtfv's encoder release the GIL: it fills the cores' idle time while the extractor
        runs); with 1, inside :meth:`write`, on the calling thread. The file's bytes do not depend on it.
        (:func:`idtfv.idt.extract_to_file` passes ``IDTParams.threads`` for a ``.txt.gz`` and an npz at a given
        level, 1 for the default npz, which is cheap enough for the extractor's main thread.)

    Each :meth:`write` adds the rows of a :class:`Trajectories` (its ``info`` becomes the file's, so the last
    chunk's wins, as with :func:`idtfv.idt.iter_trajectories`' batches); :meth:`close` finishes the file, and
    :meth:`abort` (or an exception inside a ``with`` block) removes everything written and stops the thread. LEAR
    text goes out line by line (``%.9g``, tab-separated).

    An npz is compressed as the rows come (:mod:`idtfv.idt.npzstream`): each array's rows go, in pieces of
    :data:`_PIECE` bytes, to its own raw DEFLATE stream in an unnamed temporary file next to the output;
    :meth:`close` compresses the ``.npy`` headers (which need the final row count) as separate sync-flushed
    segments in front of them, combines the CRCs and writes the ZIP container. The keys, dtypes, member order and
    array bytes are those of ``np.savez_compressed`` of all the rows at once (``np.load`` and
    :func:`load_trajectories` read either); the compressed bytes depend only on the rows and ``info``, not on the
    chunking nor on ``threads``. Memory: one chunk at a time, plus at most :data:`_QUEUED_PIECES` pieces waiting
    for the background thread.

    ``t_pos`` that the extractor left NaN (frame count unknown while extracting from a generator) is filled in at
    :meth:`close` from ``info`` (:func:`fill_t_pos`), in an npz (``meta`` is then compressed at :meth:`close`,
    from a temporary file of its uncompressed rows kept for that); LEAR text is written as it comes and keeps them.
    """

    def __init__(self, path, format: str | None = None, *, compact: bool = True, compresslevel: int | None = None,
                 threads: int = 1):
        self._stream = None if isinstance(path, (str, bytes)) or hasattr(path, "__fspath__") else path
        if self._stream is not None:
            if not hasattr(self._stream, "write"):
                raise TypeError(f"TrajectoryWriter: expected a path or a binary stream, got {type(path).__name__}")
            format = output_format(path, format)
            if format != "lear":
                raise ParameterError(f"TrajectoryWriter: a stream takes format 'lear', got {format!r}")
            self.path = None
        else:
            self.path = Path(path)
            format = output_format(self.path, format)
        if format not in ("npz", "lear"):
            raise ParameterError(f"TrajectoryWriter: format must be 'npz' or 'lear', got {format!r}")
        if compresslevel is not None and (isinstance(compresslevel, bool) or compresslevel not in range(10)):
            raise ParameterError(f"TrajectoryWriter: compresslevel must be an integer 0-9 or None, got "
                                 f"{compresslevel!r}")
        if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
            raise ParameterError(f"TrajectoryWriter: threads must be a positive integer, got {threads!r}")
        self.format, self.compact, self.compresslevel, self.threads = format, bool(compact), compresslevel, threads
        self.info: dict = {}
        self.n_rows = 0
        self._widths: dict[str, int] | None = None
        self._level = NPZ_COMPRESSLEVEL if compresslevel is None else compresslevel  # npz
        self._bodies: dict[str, DeflateBody] = {}  # npz: block name -> its rows' stream, compressed as they come
        self._pending: dict[str, bytearray] = {}  # npz: block name -> bytes not yet a whole piece
        self._meta_raw = None  # npz: temporary file of meta's uncompressed rows (for t_pos)
        self._stream_meta = True  # npz: False when the first rows had NaN t_pos (meta compressed at close)
        self._nan_t_pos = False
        self._deflater: _Deflater | None = None  # npz, .txt.gz: runs the compression (inline or on its thread)
        self._stack = contextlib.ExitStack()
        self._out = None  # LEAR: where the text goes
        self._text = _LearText()  # LEAR: the formatter, with its work arrays
        self._open = True
        if format == "lear":
            if self._stream is not None:
                self._out = self._stream
            else:
                raw = self._stack.enter_context(atomic_open(self.path, "wb"))
                if self.path.name.endswith(".gz"):
                    # name and mtime fixed in the gzip header: otherwise the temporary file's name lands there
                    level, strategy = ((LEAR_GZIP_LEVEL, LEAR_GZIP_STRATEGY) if compresslevel is None
                                       else (compresslevel, zlib.Z_DEFAULT_STRATEGY))
                    self._out = self._stack.enter_context(
                        GzipStream(raw, name=self.path.name, level=level, strategy=strategy, mtime=0))
                    # with threads >= 2 the gzip runs on the writer's thread, beside the extractor (the compressors
                    # release the GIL); same calls in the same order, so the same bytes
                    self._deflater = self._stack.enter_context(_Deflater(background=threads > 1,
                                                                         depth=_QUEUED_TEXTS))
                else:
                    self._out = raw
        else:
            _check_writable(self.path)  # now, not when the first rows or close() come after the extraction

    def _dtype(self, name: str):
        return np.float16 if self.compact and name != "meta" else np.float32

    def write(self, chunk: Trajectories) -> None:
        """Append the rows of ``chunk`` (its ``info`` replaces the file's).

        Raises what writing a temporary file raised (a full disk: ``OSError``), here or, for the background
        thread's writes, at the next :meth:`write` or :meth:`close`.
        """
        if not self._open:
            raise ValueError("TrajectoryWriter: write() after close() or abort()")
        if not isinstance(chunk, Trajectories):
            raise TypeError(f"TrajectoryWriter.write: expected Trajectories, got {type(chunk).__name__}")
        widths = {name: getattr(chunk, name).shape[1] for name in BLOCK_NAMES}
        if self._widths is None:
            self._widths = widths
        elif widths != self._widths:
            raise ValueError(f"TrajectoryWriter.write: block widths {widths} differ from the first chunk's "
                             f"{self._widths}; one file holds trajectories of one layout")
        self.info = chunk.info
        n = len(chunk)
        self.n_rows += n
        if n == 0:
            return
        if self.format == "lear":
            for i in range(0, n, _LEAR_ROWS):
                part = chunk.select(slice(i, i + _LEAR_ROWS)) if n > _LEAR_ROWS else chunk
                text = self._text(part.to_lear())
                if self._stream is not None:
                    _write_all(self._stream, text)
                elif self._deflater is not None:  # .txt.gz
                    self._deflater.submit(self._out.write, text)
                else:
                    self._out.write(text)
            return
        nan = bool(np.isnan(chunk.meta[:, 9]).any())
        if self._meta_raw is None:  # the first rows: every temporary file, then the compressor (the stack stops
            self._meta_raw = self._temporary()  # it before it closes the files it writes)
            self._stream_meta = not nan
            for name in BLOCK_NAMES:
                if name != "meta" or self._stream_meta:
                    self._bodies[name] = DeflateBody(self._temporary(), self._level, self._strategy(name))
                    self._pending[name] = bytearray()
            self._deflater = self._stack.enter_context(_Deflater(background=self.threads > 1))
        self._nan_t_pos |= nan
        for name in BLOCK_NAMES:
            a = np.ascontiguousarray(getattr(chunk, name), dtype=self._dtype(name))
            if name == "meta":
                self._meta_raw.write(memoryview(a).cast("B"))
                if not self._stream_meta:
                    continue
            self._feed(name, memoryview(a).cast("B"))

    def _strategy(self, name: str) -> int:
        """zlib strategy of block ``name``'s rows: Huffman only for :data:`NPZ_HUFFMAN_BLOCKS` at the default level,
        zlib's default for the others and for every block at a level given by the caller."""
        huffman = self.compresslevel is None and name in NPZ_HUFFMAN_BLOCKS
        return zlib.Z_HUFFMAN_ONLY if huffman else zlib.Z_DEFAULT_STRATEGY

    def _temporary(self):
        return self._stack.enter_context(tempfile.TemporaryFile(dir=self.path.parent))

    def _feed(self, name: str, data) -> None:
        """Queue ``data`` for block ``name``'s stream, in whole pieces of :data:`_PIECE` bytes."""
        body = self._bodies[name]
        for piece in _whole_pieces(self._pending[name], data):
            self._deflater.submit(body.compress, piece)

    def close(self) -> Path | None:
        """Finish the file (npz: end the streams, write the archive; rename the temporary file onto ``path``);
        returns ``path``."""
        if not self._open:
            return self.path
        try:
            if self.format == "npz":
                self._write_npz()
            else:
                if self._deflater is not None:
                    self._deflater.join()  # raises what the background thread raised
                self._out.flush()
        except BaseException as exc:
            self._open = False
            self._stack.__exit__(type(exc), exc, exc.__traceback__)  # stops the thread, removes the files
            raise
        self._open = False
        self._stack.close()  # LEAR: closes the gzip stream and renames the temporary file
        return self.path

    def abort(self) -> None:
        """Drop everything written (the output file is left as it was); the background thread, if any, ends."""
        if self._open:
            self._open = False
            exc = _Aborted()
            self._stack.__exit__(_Aborted, exc, None)

    def __enter__(self) -> "TrajectoryWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()

    def _write_npz(self) -> None:
        widths = self._widths or DescriptorLayout.from_info(self.info).widths
        n, level = self.n_rows, self._level
        for name, body in self._bodies.items():
            if self._pending[name]:
                self._deflater.submit(body.compress, bytes(self._pending[name]))
                self._pending[name] = bytearray()
            self._deflater.submit(body.finish)
        if self._deflater is not None:
            self._deflater.join()  # raises what the background thread raised
        if self._meta_raw is not None and (self._nan_t_pos or not self._stream_meta):
            self._bodies["meta"] = self._meta_body(widths["meta"])
        # np.savez_compressed's members: "<key>.npy" in the order of Trajectories.as_arrays()
        members = []
        for name in BLOCK_NAMES:
            header = io.BytesIO()
            np.lib.format.write_array_header_1_0(header, {
                "descr": np.lib.format.dtype_to_descr(np.dtype(self._dtype(name))), "fortran_order": False,
                "shape": (int(n), int(widths[name]))})
            body = self._bodies.get(name)
            if body is None:  # no rows: the header alone
                members.append((f"{name}.npy", [deflate_segment(header.getvalue(), level, last=True)]))
            else:
                members.append((f"{name}.npy", [deflate_segment(header.getvalue(), level, last=False),
                                                body.segment()]))
        info = io.BytesIO()
        np.lib.format.write_array(info, np.array(json.dumps(self.info, sort_keys=True)), allow_pickle=False)
        members.append(("info_json.npy", [deflate_segment(info.getvalue(), level, last=True)]))
        with atomic_open(self.path, "wb") as handle:
            write_zip(handle, members, stored=level == 0)

    def _meta_body(self, width: int) -> DeflateBody:
        """``meta`` compressed now, from its uncompressed rows, with NaN ``t_pos`` filled in (same pieces, so same
        bytes, as had the rows come filled)."""
        body = DeflateBody(self._temporary(), self._level, self._strategy("meta"))
        src, rows, buf = self._meta_raw, 1 << 16, bytearray()
        src.seek(0)
        while raw := src.read(rows * width * 4):
            meta = np.frombuffer(raw, np.float32).reshape(-1, width).copy()
            fill_t_pos(meta, self.info)
            for piece in _whole_pieces(buf, memoryview(meta).cast("B")):
                body.compress(piece)
        if buf:
            body.compress(bytes(buf))
        body.finish()
        return body


def _whole_pieces(buf: bytearray, data) -> Iterator[bytes]:
    """Append ``data`` to ``buf`` and take out (yield) every whole piece of :data:`_PIECE` bytes at its front; the
    rest stays in ``buf``."""
    buf += data
    while len(buf) >= _PIECE:
        piece = bytes(buf[:_PIECE])
        del buf[:_PIECE]
        yield piece


class _Deflater:
    """Runs the npz members' (or a ``.txt.gz``'s) compression calls in the order given: inline, or on one
    background thread fed through a queue of at most ``depth`` calls (``background``). A context manager: leaving
    it stops the thread (pending calls dropped)."""

    def __init__(self, *, background: bool, depth: int = _QUEUED_PIECES):
        self._error: BaseException | None = None
        self._thread = None
        self._cancelled = False
        if background:
            self._queue: queue.Queue = queue.Queue(depth)
            self._thread = threading.Thread(target=self._run, name="idtfv-npz-deflate", daemon=True)
            self._thread.start()

    def _run(self) -> None:
        while (task := self._queue.get()) is not None:
            if self._error is None and not self._cancelled:
                try:
                    task[0](*task[1])
                except BaseException as exc:  # noqa: BLE001 - handed to the writer's thread by submit()/join()
                    self._error = exc  # the calls that follow are dropped: their stream is broken

    def submit(self, func, *args) -> None:
        """Call ``func(*args)`` (now, or queued for the thread); raises an earlier call's error."""
        if self._thread is None:
            func(*args)
            return
        self._raise()
        self._queue.put((func, args))

    def join(self) -> None:
        """Wait for every call submitted; raises the first one's error."""
        self._stop()
        self._raise()

    def _raise(self) -> None:
        if self._error is not None:
            raise self._error

    def _stop(self) -> None:
        if self._thread is not None:
            self._queue.put(None)  # the thread drains the queue (dropping calls once cancelled or failed): no hang
            self._thread.join()
            self._thread = None

    def __enter__(self) -> "_Deflater":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self._cancelled = True
        self._stop()


class _Aborted(Exception):
    """Raised into a :class:`TrajectoryWriter`'s open files to make them remove their temporary files."""


def fill_t_pos(meta: np.ndarray, info: dict) -> None:
    """Fill the NaN ``t_pos`` column of ``meta (n, 10)`` in place from ``info``'s ``frames`` and ``params``.

    ``t_pos = clip((frame_num - start - L/2) / frames, 0, 0.999)`` (:func:`idtfv.idt.extract`'s convention); does
    nothing when no ``t_pos`` is NaN or ``info`` lacks the frame count.
    """
    nan = np.isnan(meta[:, 9])
    frames = info.get("frames")
    if not nan.any() or not frames:
        return
    params = info.get("params") or {}
    start, length = params.get("start", 0), params.get("track_length", 15)
    meta[nan, 9] = np.clip((meta[nan, 0] - start - length / 2.0) / frames, 0, 0.999)


class _LearText:
    """Tables as LEAR text: one line per row, tab-separated, each number as ``"%.9g" % float(value)`` (at most 9
    significant digits, enough to round-trip float32; LEAR itself prints 6).

    Formatted by compiled kernels (:mod:`idtfv.idt._lear_text_nb`: the bytes of ``"%.9g"``, about 5x faster than
    Python's formatting), which hand the few values whose rounding a double cannot settle back to Python's
    ``"%.8e"``. The work arrays are kept from one table to the next: fresh ones for every chunk cost about as much
    in page faults as the formatting.
    """

    def __init__(self):
        self._n = 0

    def __call__(self, table: np.ndarray) -> bytes:
        if len(table) == 0:
            return b""
        from idtfv.idt import _lear_text_nb as _text

        values = np.ascontiguousarray(table, dtype=np.float32).reshape(-1)
        n = values.size
        if n > self._n:
            self._n = n
            self._digits, self._exps = np.empty(n, np.int64), np.empty(n, np.int64)
            self._kinds, self._out = np.empty(n, np.int8), np.empty(n * _text.MAX_CHARS, np.uint8)
        digits, exps, kinds = self._digits[:n], self._exps[:n], self._kinds[:n]
        if _text.decimal9(values, digits, exps, kinds):
            for i in np.flatnonzero(kinds == 4):  # nine digits correctly rounded by Python: "-d.dddddddde-XX"
                mantissa, exponent = ("%.8e" % float(values[i])).lstrip("-").split("e")
                digits[i], exps[i], kinds[i] = int(mantissa.replace(".", "")), int(exponent), 3
        size = _text.render(values, digits, exps, kinds, table.shape[1], self._out)
        return self._out[:size].tobytes()


def _format_lear(table: np.ndarray) -> bytes:
    """``table (n, C)`` as LEAR text (see :class:`_LearText`)."""
    return _LearText()(table)


def _read_lear(path: Path, layout: DescriptorLayout) -> np.ndarray:
    opener = gzip.open if path.name.endswith(".gz") else open
    try:
        with opener(path, "rb") as f:
            raw = f.read()
    except (OSError, EOFError, gzip.BadGzipFile) as e:
        raise FormatError(path, f"cannot read LEAR text ({e})") from None
    columns = layout.n_columns
    rows = []
    for lineno, line in enumerate(raw.splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = np.array(line.split(), dtype=np.float32)
        except ValueError:
            raise FormatError(path, f"line {lineno}: expected numbers, got {line[:40]!r}...") from None
        if row.size != columns:
            raise FormatError(
                path, f"line {lineno}: expected {columns} columns (LEAR iDT format, {layout.describe()}), got "
                      f"{row.size}; a file extracted with other options needs their layout "
                      "(load_trajectories(path, layout=DescriptorLayout.from_params(params)))")
        rows.append(row)
    return np.vstack(rows) if rows else np.zeros((0, columns), np.float32)


def load_trajectories(path, *, layout: DescriptorLayout | None = None) -> Trajectories:
    """Read trajectories from ``.npz`` (this package), or LEAR's ``.txt`` / ``.txt.gz``.

    Parameters
    ----------
    path : path-like
    layout : DescriptorLayout, optional
        The options' layout. A LEAR text file carries no options: it is split by ``layout`` (default: the
        reference layout, 436 columns). A ``.npz`` knows its own (its ``info_json``); when ``layout`` is given, its
        widths must match.

    Raises
    ------
    FormatError
        The file is missing, unreadable, not in one of these formats, or not of ``layout``.
    """
    path = Path(path)
    if not path.exists():
        raise FormatError(path, "no such file; expected a trajectories .npz, .txt or .txt.gz")
    if path.suffix == ".npz":
        # every damage (not a ZIP, a .npy, a member failing zlib or its CRC-32) is a FormatError naming the file
        with open_npz(path, remedy="extract the video again to rewrite it") as z:
            out = Trajectories.from_arrays(z, source=str(path))
        if layout is not None:
            for name, width in layout.widths.items():
                if getattr(out, name).shape[1] != width:
                    raise FormatError(path, f"{name!r} is {getattr(out, name).shape[1]} wide, expected {width} "
                                            f"({layout.describe()}); the file was extracted with other options")
        return out
    if path.name.endswith((".txt", ".txt.gz", ".gz")):
        layout = DescriptorLayout() if layout is None else layout
        return Trajectories.from_lear(_read_lear(path, layout), info={"source": "lear-text", "path": str(path)},
                                      layout=layout)
    raise FormatError(path, f"unknown trajectory file type {path.suffix!r}; expected .npz, .txt or .txt.gz")


def concatenate(parts, *, info: dict | None = None) -> Trajectories:
    """Stack several :class:`Trajectories` (e.g. the batches of :func:`idtfv.idt.iter_trajectories`).

    ``info`` defaults to the first part's. No parts give empty blocks of ``info``'s layout.
    """
    parts = list(parts)
    if info is None:
        info = dict(parts[0].info) if parts else {}
    if not parts:
        return Trajectories(info=info)
    return Trajectories(**{k: np.concatenate([getattr(p, k) for p in parts]) for k in BLOCK_NAMES}, info=info)


Trajectories.concatenate = staticmethod(concatenate)
