"""A gzip member (RFC 1952) written as its bytes come, with a choice of zlib's DEFLATE strategy.

:class:`gzip.GzipFile` fixes zlib's strategy to the default (LZ77 string matching, then Huffman codes). On LEAR
text (digits, signs, dots, tabs and newlines; ~3.5 bits per character after compression) the string search
finds little to gain: Huffman-coded literals alone (zlib's ``Z_HUFFMAN_ONLY``: each byte Huffman-coded, no
matching) write the same text with ~27% less CPU for files 0-4% larger on the shared clips, and idtfv's encoder of
them (:class:`HuffmanDeflate`, which :class:`GzipStream` uses for that strategy) takes about 40% of zlib's
time for it (``bench/bench_output.py``). :class:`GzipStream` writes
the member as :class:`gzip.GzipFile` does (the same header fields: the file name without ``.gz``, a given
modification time, the XFL hint, OS 255) with any level and strategy; with the default strategy its bytes are
those of :class:`gzip.GzipFile` at the same level, name and ``mtime``, written in one :meth:`close` without a
``flush()``. Any gzip reader (``gzip``, ``zcat``, :mod:`gzip`) reads either.
"""

from __future__ import annotations

import struct
import zlib

from idtfv.deflate import HuffmanDeflate

__all__ = ["GzipStream"]

#: RFC 1952's FLG bit: an original file name follows the fixed header
_FNAME = 0x08


class GzipStream:
    """Compress bytes into ``fileobj`` as one gzip member.

    Parameters
    ----------
    fileobj : binary file object
        Where the member goes (left open by :meth:`close`).
    name : str
        The original file name stored in the header (its last path part, without a final ``.gz``; left out when
        not latin-1, as :class:`gzip.GzipFile` does).
    level : int
        DEFLATE level 0-9 (0: stored blocks).
    strategy : int
        zlib's strategy: ``zlib.Z_DEFAULT_STRATEGY``, ``zlib.Z_RLE``, ...; ``zlib.Z_HUFFMAN_ONLY`` (level > 0) is
        written by :class:`HuffmanDeflate` (Huffman-coded literals as zlib's strategy, made ~2.5x faster; other bytes
        than zlib's, the same text when read).
    mtime : int
        The header's modification time (0: none, so the bytes do not depend on when they were written).
    """

    def __init__(self, fileobj, *, name: str = "", level: int = 1, strategy: int = zlib.Z_DEFAULT_STRATEGY,
                 mtime: int = 0):
        if isinstance(level, bool) or level not in range(10):
            raise ValueError(f"GzipStream: level must be an integer 0-9, got {level!r}")
        self._file = fileobj
        if strategy == zlib.Z_HUFFMAN_ONLY and level > 0:
            self._z = HuffmanDeflate()
        else:
            self._z = zlib.compressobj(level, zlib.DEFLATED, -zlib.MAX_WBITS, zlib.DEF_MEM_LEVEL, strategy)
        self._crc = 0
        self._size = 0
        base = name.replace("\\", "/").rsplit("/", 1)[-1]
        base = base[:-3] if base.endswith(".gz") else base
        try:
            fname = base.encode("latin-1")
        except UnicodeEncodeError:
            fname = b""
        xfl = 2 if level == 9 else 4 if level == 1 else 0  # "slowest" / "fastest" hints, as gzip.GzipFile
        header = b"\x1f\x8b\x08" + bytes([_FNAME if fname else 0]) + struct.pack("<L", mtime & 0xFFFFFFFF)
        header += bytes([xfl, 255]) + (fname + b"\x00" if fname else b"")
        self._file.write(header)
        self.closed = False

    def write(self, data) -> int:
        """Compress ``data`` (bytes-like) into the member; returns its length."""
        if self.closed:
            raise ValueError("GzipStream: write() after close()")
        view = memoryview(data).cast("B")
        self._crc = zlib.crc32(view, self._crc)
        self._size += len(view)
        out = self._z.compress(view)
        if out:
            self._file.write(out)
        return len(view)

    def flush(self) -> None:
        """Flush ``fileobj`` (the compressor keeps its pending bytes: no sync point is added to the stream)."""
        self._file.flush()

    def close(self) -> None:
        """End the DEFLATE stream and write the CRC-32 and length trailer (``fileobj`` stays open)."""
        if self.closed:
            return
        self.closed = True
        self._file.write(self._z.flush(zlib.Z_FINISH) + struct.pack("<LL", self._crc, self._size & 0xFFFFFFFF))

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()
