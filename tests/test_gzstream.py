"""The gzip member writer (idtfv.idt.gzstream) against Python's gzip.GzipFile and zlib, and the LEAR text
writer's default (Huffman coding only) against an explicit level."""

from __future__ import annotations

import gzip
import io
import subprocess
import shutil
import zlib

import numpy as np
import pytest

from idtfv.idt.gzstream import GzipStream
from idtfv.idt.trajectories import LEAR_GZIP_STRATEGY, Trajectories, _format_lear
from idtfv.idt.trajectories import BLOCKS


def _text(n=400, seed=0) -> bytes:
    rng = np.random.default_rng(seed)
    rows = rng.normal(size=(n, 436)).astype(np.float32)
    return _format_lear(rows)


def _stream(pieces, **kw) -> bytes:
    buf = io.BytesIO()
    with GzipStream(buf, **kw) as g:
        for p in pieces:
            g.write(p)
    return buf.getvalue()


def _gzipfile(data: bytes, name: str, level: int) -> bytes:
    buf = io.BytesIO()
    with gzip.GzipFile(filename=name, fileobj=buf, mode="wb", mtime=0, compresslevel=level) as g:
        g.write(data)
    return buf.getvalue()


@pytest.mark.parametrize("level", [0, 1, 6, 9])
@pytest.mark.parametrize("name", ["a.txt.gz", "dir/b.txt", "", "é.txt.gz", "名.txt.gz"])
def test_default_strategy_writes_the_bytes_of_gzipfile(level, name):
    data = _text(60)
    assert _stream([data], name=name, level=level) == _gzipfile(data, name, level)


def test_the_bytes_do_not_depend_on_how_the_input_is_cut():
    data = _text(200)
    cuts = [data[i:i + 777] for i in range(0, len(data), 777)]
    for strategy in (zlib.Z_DEFAULT_STRATEGY, zlib.Z_HUFFMAN_ONLY):
        one = _stream([data], name="a.txt.gz", strategy=strategy)
        assert _stream(cuts, name="a.txt.gz", strategy=strategy) == one
        assert gzip.decompress(one) == data


def test_huffman_only_is_a_valid_member_without_back_references():
    data = b"0.125\t" * 5000  # a string search would shrink this to almost nothing
    huff = _stream([data], name="x", strategy=zlib.Z_HUFFMAN_ONLY)
    full = _stream([data], name="x")
    assert gzip.decompress(huff) == data == gzip.decompress(full)
    # at ~1-2 bits per byte after Huffman coding alone vs a few hundred bytes with matching
    assert len(huff) > len(data) // 8 > 20 * len(full)
    with gzip.open(io.BytesIO(huff)) as f:  # Python's reader checks the CRC-32 and the length
        assert f.read() == data
    assert huff[3] == 0x08 and huff[4:8] == b"\0\0\0\0" and huff[10:12] == b"x\0"  # FNAME, mtime 0, the name


@pytest.mark.skipif(shutil.which("gzip") is None, reason="needs the gzip program")
def test_the_gzip_program_reads_it(tmp_path):
    data = _text(100, seed=3)
    p = tmp_path / "a.txt.gz"
    p.write_bytes(_stream([data], name=p.name, strategy=zlib.Z_HUFFMAN_ONLY))
    out = subprocess.run(["gzip", "-dc", str(p)], capture_output=True, check=True).stdout
    assert out == data
    assert subprocess.run(["gzip", "-t", str(p)]).returncode == 0


def test_write_after_close_and_bad_level():
    g = GzipStream(io.BytesIO())
    g.close()
    g.close()  # idempotent
    with pytest.raises(ValueError, match="after close"):
        g.write(b"x")
    with pytest.raises(ValueError, match="0-9"):
        GzipStream(io.BytesIO(), level=10)


def _trajectories(n=300, seed=1) -> Trajectories:
    rng = np.random.default_rng(seed)
    arrays = {k: rng.uniform(-1, 1, size=(n, w)).astype(np.float32) for k, w in BLOCKS.items()}
    arrays["meta"][:, 0] = rng.integers(15, 300, n)
    return Trajectories(**arrays, info={})


def test_lear_gz_default_is_huffman_only_and_a_given_level_is_zlibs(tmp_path):
    t = _trajectories()
    text = _format_lear(t.to_lear())
    default = t.save(tmp_path / "a.txt.gz").read_bytes()
    level1 = t.save(tmp_path / "a.txt.gz", compresslevel=1).read_bytes()
    assert gzip.decompress(default) == text == gzip.decompress(level1)
    assert LEAR_GZIP_STRATEGY == zlib.Z_HUFFMAN_ONLY
    assert default == _stream([text], name="a.txt.gz", level=1, strategy=zlib.Z_HUFFMAN_ONLY)
    assert level1 == _gzipfile(text, "a.txt.gz", 1) != default
