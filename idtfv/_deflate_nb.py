r"""Numba kernels: DEFLATE (RFC 1951) blocks of Huffman-coded literals, no string matching.

What zlib's ``Z_HUFFMAN_ONLY`` strategy writes, in ~40% of its time (``bench/bench_output.py``: 0.66 vs 1.68
CPU-s on 272 MB of LEAR text): zlib tallies and then codes each byte through its general LZ77 machinery; here a
block's bytes are counted in one pass and coded in another through one table of bit-reversed codes
(:func:`encode_block`). The compressed bytes differ from
zlib's (other block boundaries and code construction), any inflater reads them (tests decompress with zlib).

A block (dynamic Huffman codes, ``BTYPE = 2``) holds up to :data:`BLOCK` input bytes:

* literal/length alphabet: the 256 byte values and end-of-block (256); ``HLIT = 257``; no length codes;
* distance alphabet: one code of zero bits (``HDIST = 1``, RFC 1951 3.2.7: no distances used);
* code lengths from the byte counts by Huffman's algorithm (:func:`huffman_lengths`), limited to 15 bits (7 for
  the code-length code) by halving the counts until the longest code fits; canonical codes (RFC 1951 3.2.2);
* the 258 code lengths sent with the code-length code, literally (no run-length symbols 16-18).

A bit writer state (the pending bits and their count) goes from block to block, so blocks follow each other
without padding; :func:`finish` ends the stream with an empty final block of fixed codes.
"""

from __future__ import annotations

import numpy as np
from numba import njit

__all__ = ["BLOCK", "encode_block", "finish", "huffman_lengths"]

#: Input bytes per DEFLATE block: code tables adapt to the text every 64 KiB (zlib's Huffman-only blocks: 16 Ki).
BLOCK = 1 << 16

#: RFC 1951 3.2.7: the order in which the code-length code's lengths are sent.
_CL_ORDER = np.array([16, 17, 18, 0, 8, 7, 9, 6, 10, 5, 11, 4, 12, 3, 13, 2, 14, 1, 15], np.int64)


@njit(cache=True, nogil=True)
def _plain_lengths(freq, nz):
    """Huffman code lengths of the symbols ``nz`` (>= 2) with counts ``freq[nz]`` (> 0): the two lightest subtrees
    merged until one is left (ties: the lower index), each symbol's depth its length."""
    m = nz.shape[0]
    weight = np.empty(2 * m, np.int64)
    parent = np.full(2 * m, -1, np.int64)
    alive = np.zeros(2 * m, np.bool_)
    for i in range(m):
        weight[i] = freq[nz[i]]
        alive[i] = True
    nodes = m
    for _ in range(m - 1):
        a = -1
        b = -1
        for i in range(nodes):  # (m <= 286: a linear scan per merge is cheap beside the block's bytes)
            if alive[i]:
                if a < 0 or weight[i] < weight[a]:
                    b = a
                    a = i
                elif b < 0 or weight[i] < weight[b]:
                    b = i
        weight[nodes] = weight[a] + weight[b]
        alive[a] = False
        alive[b] = False
        alive[nodes] = True
        parent[a] = nodes
        parent[b] = nodes
        nodes += 1
    depth = np.zeros(2 * m, np.int64)
    for i in range(nodes - 2, -1, -1):  # parents come after their children
        depth[i] = depth[parent[i]] + 1
    return depth[:m]


@njit(cache=True, inline="always")
def _used(freq):
    """``np.flatnonzero(freq > 0)`` in loops: an array expression would make a process that loads the cached
    encoder import Numba's ufunc machinery (``numba.np.npyimpl``, ~8 ms of start-up)."""
    k = 0
    for i in range(freq.shape[0]):
        if freq[i] > 0:
            k += 1
    nz = np.empty(k, np.int64)
    k = 0
    for i in range(freq.shape[0]):
        if freq[i] > 0:
            nz[k] = i
            k += 1
    return nz


@njit(cache=True, nogil=True)
def huffman_lengths(freq, limit):
    """Code lengths (n,) int64 for the counts ``freq`` (n,): 0 for unused symbols; a complete prefix code when two
    or more symbols are used (one used symbol gets length 1, and so does one more symbol, so that the code is
    complete); no length above ``limit`` (the counts are halved, rounding up, until none is).

    Parameters
    ----------
    freq : (n,) int64, >= 0
    limit : int, 2 ** limit >= n

    Returns
    -------
    (n,) int64
    """
    n = freq.shape[0]
    out = np.zeros(n, np.int64)
    nz = _used(freq)
    if nz.shape[0] == 0:
        out[0] = 1
        out[1] = 1
        return out
    if nz.shape[0] == 1:
        out[nz[0]] = 1
        out[1 if nz[0] == 0 else 0] = 1
        return out
    f = freq.copy()
    while True:
        lengths = _plain_lengths(f, nz)
        if lengths.max() <= limit:
            break
        for i in range(nz.shape[0]):  # flatter counts, shorter longest code
            f[nz[i]] = (f[nz[i]] + 1) // 2
    for i in range(nz.shape[0]):
        out[nz[i]] = lengths[i]
    return out


@njit(cache=True, nogil=True)
def _canonical_codes(lengths):
    """RFC 1951 3.2.2's codes for ``lengths``, bit-reversed (DEFLATE sends Huffman codes most significant bit
    first into a stream packed from the least significant bit)."""
    n = lengths.shape[0]
    count = np.zeros(16, np.int64)
    for i in range(n):
        count[lengths[i]] += 1
    count[0] = 0
    nxt = np.zeros(16, np.int64)
    code = 0
    for bits in range(1, 16):
        code = (code + count[bits - 1]) << 1
        nxt[bits] = code
    codes = np.zeros(n, np.int64)
    for i in range(n):
        ln = lengths[i]
        if ln:
            c = nxt[ln]
            nxt[ln] += 1
            r = 0
            for _ in range(ln):
                r = (r << 1) | (c & 1)
                c >>= 1
            codes[i] = r
    return codes


@njit(cache=True, inline="always")
def _put(out, pos, state, value, nbits):
    """Append ``nbits`` bits of ``value`` (LSB first) through the pending bits ``state = [bits, count]``; whole
    bytes go to ``out[pos:]``; returns the new ``pos``."""
    bits = state[0] | (value << state[1])
    count = state[1] + nbits
    while count >= 8:
        out[pos] = np.uint8(bits & 0xFF)
        pos += 1
        bits >>= 8
        count -= 8
    state[0] = bits
    state[1] = count
    return pos


@njit(cache=True, nogil=True)
def encode_block(data, final, state, out):
    """One DEFLATE block of ``data``'s bytes, Huffman-coded literals only, after the pending bits ``state``.

    Parameters
    ----------
    data : (n,) uint8, n <= :data:`BLOCK`
    final : bool
        ``BFINAL``: the stream's last block.
    state : (2,) int64
        The pending bits (fewer than 8) and their count, updated.
    out : (m,) uint8
        Receives the whole bytes written; m >= 2 n + 1024 is always enough.

    Returns
    -------
    int
        Bytes written to ``out``.
    """
    freq = np.zeros(286, np.int64)
    for i in range(data.shape[0]):
        freq[data[i]] += 1
    freq[256] = 1  # end of block
    lit = huffman_lengths(freq[:257], 15)
    codes = _canonical_codes(lit)
    # the code lengths of the literal/length alphabet (257) and of the one distance code (0)
    seq = np.zeros(258, np.int64)
    seq[:257] = lit
    cl_freq = np.zeros(19, np.int64)
    for i in range(258):
        cl_freq[seq[i]] += 1
    cl = huffman_lengths(cl_freq, 7)
    cl_codes = _canonical_codes(cl)
    hclen = 19
    while hclen > 4 and cl[_CL_ORDER[hclen - 1]] == 0:
        hclen -= 1
    pos = 0
    pos = _put(out, pos, state, np.int64(1 if final else 0), 1)
    pos = _put(out, pos, state, np.int64(2), 2)  # dynamic Huffman codes
    pos = _put(out, pos, state, np.int64(0), 5)  # HLIT - 257
    pos = _put(out, pos, state, np.int64(0), 5)  # HDIST - 1
    pos = _put(out, pos, state, np.int64(hclen - 4), 4)
    for i in range(hclen):
        pos = _put(out, pos, state, cl[_CL_ORDER[i]], 3)
    for i in range(258):
        pos = _put(out, pos, state, cl_codes[seq[i]], cl[seq[i]])
    # the literals: one table of (code | length << 32), bits gathered in a 64-bit word, whole 32-bit words out
    table = np.empty(257, np.int64)
    for s in range(257):
        table[s] = codes[s] | (lit[s] << 32)
    bits = state[0]
    count = state[1]
    for i in range(data.shape[0]):
        t = table[data[i]]
        bits |= (t & 0xFFFFFFFF) << count
        count += t >> 32
        if count >= 32:
            out[pos] = np.uint8(bits & 0xFF)
            out[pos + 1] = np.uint8((bits >> 8) & 0xFF)
            out[pos + 2] = np.uint8((bits >> 16) & 0xFF)
            out[pos + 3] = np.uint8((bits >> 24) & 0xFF)
            pos += 4
            bits >>= 32
            count -= 32
    state[0] = bits
    state[1] = count
    pos = _put(out, pos, state, codes[256], lit[256])  # end of block (also moves the whole bytes out)
    return pos


@njit(cache=True, nogil=True)
def finish(state, out):
    """An empty final block (fixed codes: ``BFINAL``, ``BTYPE = 1``, end of block) and the pending bits padded to a
    whole byte, into ``out`` (>= 4 bytes); returns the bytes written."""
    pos = 0
    pos = _put(out, pos, state, np.int64(1), 1)
    pos = _put(out, pos, state, np.int64(1), 2)
    pos = _put(out, pos, state, np.int64(0), 7)  # code 256 of the fixed code: seven 0 bits
    if state[1] > 0:
        out[pos] = np.uint8(state[0] & 0xFF)
        pos += 1
        state[0] = 0
        state[1] = 0
    return pos
