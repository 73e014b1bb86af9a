"""A ``.npz`` archive whose members are compressed as their rows arrive, and written out at the end.

An ``.npz`` is a ZIP of ``.npy`` members. A member's data starts with the ``.npy`` header, which holds the final
row count and so is known only once every row has been written; :class:`zipfile.ZipFile` therefore cannot compress
the rows before the end. Here each member is made of **segments**, each a raw DEFLATE stream of its own compressor
(:func:`deflate_segment`, :class:`DeflateBody`):

* every segment but the last ends with ``Z_SYNC_FLUSH`` (non-final blocks, byte-aligned), the last with
  ``Z_FINISH``; a segment's back-references stay inside it, so the concatenation is one valid DEFLATE stream of the
  concatenated bytes;
* the member's CRC-32 is that of the concatenated bytes: :func:`crc32_combine` folds the segments' CRCs (zlib's
  ``crc32_combine``, which Python's :mod:`zlib` lacks).

So the rows are compressed while they come (:class:`DeflateBody`, on whichever thread calls it), and at the end
only the small header segment is compressed before :func:`write_zip` writes the container: a local header with a
zip64 extra field for each member (``force_zip64`` as :meth:`zipfile.ZipFile.open` with ``np.savez_compressed``
writes it: members may exceed 4 GiB), the segments' bytes, the central directory and, when offsets or counts need
it, the zip64 end records. The field values are those :mod:`zipfile` writes for ``archive.open(name, "w",
force_zip64=True)`` (version 4.5, Unix, date 1980-01-01 00:00, mode 0600, no data descriptor), so ``np.load``,
:mod:`zipfile` and ``unzip`` read it as they read ``np.savez_compressed``'s files.

Level 0 gives **stored** members (ZIP method 0: the bytes as they are, no DEFLATE): zlib's level-0 DEFLATE output
depends on how the input is cut into calls, stored members do not.
"""

from __future__ import annotations

import shutil
import struct
import zlib
from dataclasses import dataclass

from idtfv.deflate import HuffmanDeflate

__all__ = ["crc32_combine", "deflate_segment", "DeflateBody", "Segment", "write_zip", "ZIP64_LIMIT"]

#: Sizes and offsets above this go into zip64 fields (:mod:`zipfile`'s own limit, ``2**31 - 1``)
ZIP64_LIMIT = (1 << 31) - 1
_ZIP_FILECOUNT_LIMIT = (1 << 16) - 1
_DEFLATED, _STORED = 8, 0
_VERSION = 45  # 4.5: zip64
_UNIX = 3
_DOS_DATE = (0 << 9) | (1 << 5) | 1  # 1980-01-01
_DOS_TIME = 0  # 00:00:00
_MODE = 0o600 << 16  # zipfile's default for a member opened for writing

# ------------------------------------------------------------------------------------------------ CRC-32 combine
_POLY = 0xEDB88320  # CRC-32's polynomial, reflected: bit 31 holds x^0, bit 0 holds x^31


def _multmodp(a: int, b: int) -> int:
    """``a * b`` modulo the CRC-32 polynomial, both reflected (``a`` non-zero)."""
    m, p = 1 << 31, 0
    while True:
        if a & m:
            p ^= b
            if not a & (m - 1):
                return p
        m >>= 1
        b = (b >> 1) ^ _POLY if b & 1 else b >> 1


def _powers() -> tuple[int, ...]:
    out, p = [], 1 << 30  # x^1
    for _ in range(32):
        out.append(p)
        p = _multmodp(p, p)
    return tuple(out)


#: ``x^(2^k)`` modulo the polynomial, k = 0..31 (zlib's table; k wraps at 32: the order of x divides 2^32 - 1)
_X2N = _powers()


def _x2nmodp(n: int, k: int) -> int:
    """``x^(n * 2^k)`` modulo the polynomial."""
    p = 1 << 31  # x^0
    while n:
        if n & 1:
            p = _multmodp(_X2N[k & 31], p)
        n >>= 1
        k += 1
    return p


def crc32_combine(crc1: int, crc2: int, len2: int) -> int:
    """CRC-32 of ``A + B`` from ``crc1 = crc32(A)``, ``crc2 = crc32(B)`` and ``len2 = len(B)`` (zlib's
    ``crc32_combine``): ``crc1`` shifted over ``8 * len2`` zero bits, in GF(2)[x] modulo the polynomial, xor
    ``crc2``."""
    if len2 < 0:
        raise ValueError(f"crc32_combine: len2 must be >= 0, got {len2}")
    return _multmodp(_x2nmodp(len2, 3), crc1 & 0xFFFFFFFF) ^ (crc2 & 0xFFFFFFFF)


# ------------------------------------------------------------------------------------------------ segments
@dataclass(frozen=True)
class Segment:
    """A piece of a member's stored data: ``data`` (bytes, or a binary file read from its start) holding ``csize``
    bytes, which stand for ``size`` bytes of the member with CRC-32 ``crc``."""

    data: object
    size: int
    csize: int
    crc: int


def deflate_segment(raw: bytes, level: int, *, last: bool) -> Segment:
    """``raw`` as one segment: a raw DEFLATE stream ended by ``Z_FINISH`` (``last``) or ``Z_SYNC_FLUSH``, or the
    bytes as they are at level 0 (stored)."""
    if level == 0:
        out = bytes(raw)
    else:
        z = zlib.compressobj(level, zlib.DEFLATED, -15)
        out = z.compress(raw) + z.flush(zlib.Z_FINISH if last else zlib.Z_SYNC_FLUSH)
    return Segment(out, len(raw), len(out), zlib.crc32(raw))


class DeflateBody:
    """The last segment of a member, compressed (level 1-9) or copied (level 0) into ``file`` as it comes.

    :meth:`compress` and :meth:`finish` may run on another thread than the one producing the bytes, one call at a
    time and in order. The output depends only on the bytes and on the sequence of :meth:`compress` calls; a
    caller that must not depend on how its rows were chunked feeds pieces of a fixed size (as
    :class:`idtfv.idt.trajectories.TrajectoryWriter` does).

    Parameters
    ----------
    file : binary file
        Where the compressed bytes go (a temporary file; read back from its start by :func:`write_zip`).
    level : int
        0 (stored) to 9.
    strategy : int
        zlib's strategy (``zlib.Z_DEFAULT_STRATEGY``; ``zlib.Z_HUFFMAN_ONLY``: Huffman codes, no string matching,
        written by :class:`idtfv.deflate.HuffmanDeflate`).
    """

    def __init__(self, file, level: int, strategy: int = zlib.Z_DEFAULT_STRATEGY):
        self.file, self.level = file, level
        if level and strategy == zlib.Z_HUFFMAN_ONLY:  # Huffman-coded literals: idtfv's encoder (~2.5x zlib's)
            self._z = HuffmanDeflate()
        else:
            self._z = zlib.compressobj(level, zlib.DEFLATED, -15, zlib.DEF_MEM_LEVEL, strategy) if level else None
        self.size = self.csize = self.crc = 0
        self.finished = False

    def compress(self, piece) -> None:
        """Add ``piece`` (bytes-like)."""
        self.crc = zlib.crc32(piece, self.crc)
        self.size += len(piece)
        out = self._z.compress(piece) if self._z is not None else piece
        if len(out):
            self.file.write(out)
            self.csize += len(out)

    def finish(self) -> None:
        """End the stream (a final block, empty if need be)."""
        if self._z is not None:
            out = self._z.flush(zlib.Z_FINISH)
            self.file.write(out)
            self.csize += len(out)
            self._z = None
        self.finished = True

    def segment(self) -> Segment:
        """The finished body as a :class:`Segment` (its file rewound)."""
        if not self.finished:
            raise RuntimeError("DeflateBody.segment: finish() first")
        self.file.flush()
        self.file.seek(0)
        return Segment(self.file, self.size, self.csize, self.crc)


# ------------------------------------------------------------------------------------------------ the container
def _zip64_extra(values) -> bytes:
    return struct.pack(f"<HH{len(values)}Q", 1, 8 * len(values), *values) if values else b""


def write_zip(handle, members, *, stored: bool = False) -> None:
    """Write a ZIP archive of ``members`` to ``handle`` (a binary file, written from its current position 0).

    Parameters
    ----------
    handle : binary file
    members : iterable of (str, list of Segment)
        Member name (ASCII) and its segments in order; for DEFLATE members, every segment but the last ends with a
        sync flush and the last with ``Z_FINISH`` (:func:`deflate_segment`, :class:`DeflateBody`).
    stored : bool
        The segments hold the bytes as they are (ZIP method 0) rather than DEFLATE streams (method 8).
    """
    method = _STORED if stored else _DEFLATED
    central, offset = [], 0
    for name, segments in members:
        filename = name.encode("ascii")
        size = sum(s.size for s in segments)
        csize = sum(s.csize for s in segments)
        crc = 0
        for s in segments:
            crc = crc32_combine(crc, s.crc, s.size)
        # local header: always zip64 sizes, as zipfile with force_zip64=True
        extra = _zip64_extra((size, csize))
        local = struct.pack("<4s5H3L2H", b"PK\x03\x04", _VERSION, 0, method, _DOS_TIME, _DOS_DATE, crc,
                            0xFFFFFFFF, 0xFFFFFFFF, len(filename), len(extra))
        handle.write(local + filename + extra)
        for s in segments:
            if isinstance(s.data, (bytes, bytearray, memoryview)):
                handle.write(s.data)
            else:
                shutil.copyfileobj(s.data, handle, 1 << 20)
        central.append((filename, crc, size, csize, offset))
        offset += len(local) + len(filename) + len(extra) + csize
    start = offset
    for filename, crc, size, csize, header_offset in central:
        values = []
        if size > ZIP64_LIMIT or csize > ZIP64_LIMIT:
            values += [size, csize]
            size = csize = 0xFFFFFFFF
        if header_offset > ZIP64_LIMIT:
            values.append(header_offset)
            header_offset = 0xFFFFFFFF
        extra = _zip64_extra(values)
        entry = struct.pack("<4s4B4HL2L5H2L", b"PK\x01\x02", _VERSION, _UNIX, _VERSION, 0, 0, method, _DOS_TIME,
                            _DOS_DATE, crc, csize, size, len(filename), len(extra), 0, 0, 0, _MODE, header_offset)
        handle.write(entry + filename + extra)
        offset += len(entry) + len(filename) + len(extra)
    count, cd_size, cd_offset = len(central), offset - start, start
    if count > _ZIP_FILECOUNT_LIMIT or cd_offset > ZIP64_LIMIT or cd_size > ZIP64_LIMIT:
        handle.write(struct.pack("<4sQ2H2L4Q", b"PK\x06\x06", 44, _VERSION, _VERSION, 0, 0, count, count, cd_size,
                                 cd_offset))
        handle.write(struct.pack("<4sLQL", b"PK\x06\x07", 0, offset, 1))
        count, cd_size, cd_offset = min(count, 0xFFFF), min(cd_size, 0xFFFFFFFF), min(cd_offset, 0xFFFFFFFF)
    handle.write(struct.pack("<4s4H2LH", b"PK\x05\x06", 0, 0, count, count, cd_size, cd_offset, 0))
