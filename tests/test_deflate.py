"""idtfv's DEFLATE encoder of Huffman-coded literals (idtfv/_deflate_nb.py, idtfv.deflate.HuffmanDeflate), which writes
``.txt.gz`` output: zlib inflates every stream back to its input (planted data of every shape: empty, one byte,
one repeated byte, all 256 values, uniform noise, counts skewed enough to need the 15-bit limit, LEAR-like text,
blocks cut at every size); its code lengths form complete prefix codes within the limit (Kraft's equality); the
sizes are those of Huffman coding (within a few bytes per block of the entropy bound, as zlib's Huffman-only)."""

from __future__ import annotations

import zlib

import numpy as np
import pytest

from idtfv import _deflate_nb as dnb
from idtfv.deflate import HuffmanDeflate


def _deflate(chunks) -> bytes:
    z = HuffmanDeflate()
    return b"".join(z.compress(c) for c in chunks) + z.flush()


def _lear_like(n: int, seed: int = 0) -> bytes:
    rng = np.random.default_rng(seed)
    rows = rng.normal(size=(n, 12))
    return "".join("\t".join(f"{v:.6f}" for v in row) + "\n" for row in rows).encode()


CASES = {
    "empty": b"",
    "one byte": b"a",
    "one value repeated": b"x" * 100_000,
    "all 256 values": bytes(range(256)) * 600,
    "uniform noise": np.random.default_rng(1).integers(0, 256, 200_000, dtype=np.uint8).tobytes(),
    "skewed counts (Fibonacci-like)": b"".join(bytes([i]) * int(1.6 ** i) for i in range(26)),
    "LEAR-like text": _lear_like(8000),
}


@pytest.mark.parametrize("name", list(CASES))
def test_zlib_inflates_it_back(name):
    data = CASES[name]
    out = _deflate([data])
    assert zlib.decompress(out, -zlib.MAX_WBITS) == data
    z = zlib.decompressobj(-zlib.MAX_WBITS)
    assert z.decompress(out) == data and z.eof and not z.unused_data  # one stream, ended, nothing after it


def test_blocks_and_calls_cut_anywhere():
    data = _lear_like(6000, seed=2)
    assert len(data) > 3 * dnb.BLOCK
    whole = _deflate([data])
    rng = np.random.default_rng(3)
    cuts = np.sort(rng.integers(0, len(data), 40))
    pieces = [data[a:b] for a, b in zip(np.r_[0, cuts], np.r_[cuts, len(data)])]
    assert _deflate(pieces) == whole  # the bytes depend on the input only
    assert zlib.decompress(whole, -zlib.MAX_WBITS) == data


def test_size_is_that_of_huffman_coding():
    """Each block costs at most its entropy bound plus 1 bit per byte (Huffman's) plus its header; on text the
    stream is within 1% of zlib's Huffman-only one."""
    data = CASES["LEAR-like text"]
    out = _deflate([data])
    bound = 0.0
    for i in range(0, len(data), dnb.BLOCK):
        counts = np.bincount(np.frombuffer(data[i:i + dnb.BLOCK], np.uint8), minlength=256)
        p = counts[counts > 0] / counts.sum()
        bound += counts.sum() * (-(p * np.log2(p)).sum() + 1) / 8 + 200  # + a generous header
    assert len(out) <= bound
    z = zlib.compressobj(6, zlib.DEFLATED, -zlib.MAX_WBITS, zlib.DEF_MEM_LEVEL, zlib.Z_HUFFMAN_ONLY)
    assert len(out) <= 1.01 * len(z.compress(data) + z.flush())


@pytest.mark.parametrize("counts", [[5, 0, 0, 1], [0, 0, 7, 0], [0] * 10, [1] * 286, list(range(1, 200)),
                                    [int(1.7 ** i) for i in range(40)]])
def test_code_lengths_are_complete_and_within_the_limit(counts):
    freq = np.array(counts, np.int64)
    limit = 15 if len(counts) > 19 else 7
    lengths = dnb.huffman_lengths(freq, limit)
    assert lengths.max() <= limit
    assert np.all(lengths[freq > 0] > 0)  # every used symbol has a code
    assert sum(2.0 ** -int(n) for n in lengths if n) == 1.0  # complete (Kraft's equality), as inflaters want
    if (freq > 0).sum() >= 2 and max(counts) < 1000:  # unlimited: Huffman's optimum, sum of count x length
        cost = int((freq * lengths).sum())
        assert cost <= int((freq * np.ceil(-np.log2(np.maximum(freq, 1) / freq.sum()))).sum())


def test_compress_after_flush_is_an_error():
    z = HuffmanDeflate()
    z.compress(b"abc")
    z.flush()
    with pytest.raises(ValueError, match="after flush"):
        z.compress(b"d")
    assert z.flush() == b""
