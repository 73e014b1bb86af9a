"""DEFLATE streams of Huffman-coded literals (no string matching), faster than zlib's ``Z_HUFFMAN_ONLY``.

The output writers use it where zlib's Huffman-only strategy was the choice: LEAR text (``.txt.gz``,
:class:`idtfv.idt.gzstream.GzipStream`), the large members of the extractor's npz files
(:class:`idtfv.idt.npzstream.DeflateBody`) and of the dataset stages' files (:func:`idtfv.cache.atomic_savez`).
The Numba kernel (:mod:`idtfv._deflate_nb`) loads on first use.
"""

from __future__ import annotations

import zlib

__all__ = ["HuffmanDeflate"]


class HuffmanDeflate:
    """A raw DEFLATE stream of Huffman-coded literals (no string matching), with ``zlib.compressobj``'s
    ``compress``/``flush``: idtfv's encoder (:mod:`idtfv._deflate_nb`, blocks of 64 KiB of input, about 2.5x
    zlib's ``Z_HUFFMAN_ONLY`` speed, files within a fraction of a percent of its size on LEAR text). The bytes
    depend only on the input bytes, not on how they are cut into calls."""

    def __init__(self):
        import numpy as np

        from idtfv import _deflate_nb

        self._nb = _deflate_nb
        self._np = np
        self._state = np.zeros(2, np.int64)  # pending bits and their count
        self._pending = bytearray()
        self._out = np.empty(2 * _deflate_nb.BLOCK + 1024, np.uint8)
        self._done = False

    def compress(self, data) -> bytes:
        """Code the whole blocks of the input so far; the rest waits for more (or :meth:`flush`)."""
        if self._done:
            raise ValueError("HuffmanDeflate: compress() after flush()")
        self._pending += data
        whole = len(self._pending) // self._nb.BLOCK * self._nb.BLOCK
        if not whole:
            return b""
        data = bytes(memoryview(self._pending)[:whole])  # one copy (the view is released before the bytearray shrinks)
        del self._pending[:whole]
        return self._code(data)

    def flush(self, mode: int = zlib.Z_FINISH) -> bytes:
        """The last block of the input left, then the stream's end (an empty final block, padded to a byte)."""
        if mode != zlib.Z_FINISH:
            raise ValueError("HuffmanDeflate: only flush(zlib.Z_FINISH) ends the stream")
        if self._done:
            return b""
        self._done = True
        data, self._pending = bytes(self._pending), bytearray()
        out = self._code(data)
        return out + self._out[:self._nb.finish(self._state, self._out)].tobytes()

    def _code(self, data: bytes) -> bytes:
        """Blocks of ``data`` (immutable bytes: the kernel reads them in place)."""
        arr = self._np.frombuffer(data, self._np.uint8)
        parts = []
        for i in range(0, len(data), self._nb.BLOCK):
            n = self._nb.encode_block(arr[i:i + self._nb.BLOCK], False, self._state, self._out)
            parts.append(self._out[:n].tobytes())
        return b"".join(parts)
