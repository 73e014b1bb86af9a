"""Streaming trajectory output (issue 11): TrajectoryWriter's files against np.savez_compressed / the LEAR text of
all rows at once, its memory (one chunk at a time), and extract_to_file's memory flat in the video's length."""

from __future__ import annotations

import gzip
import io
import json
import shutil
import struct
import subprocess
import threading
import tracemalloc
import zipfile
import zlib

import numpy as np
import pytest

from idtfv.errors import FormatError
from idtfv.idt import npzstream
from idtfv.idt.layout import BLOCK_NAMES
from idtfv.idt.npzstream import DeflateBody, crc32_combine, deflate_segment
from idtfv.idt.params import IDTParams
from idtfv.idt.trajectories import (BLOCKS, Trajectories, TrajectoryWriter, _format_lear, fill_t_pos,
                                    load_trajectories)


def _random(n, seed=0, info=None) -> Trajectories:
    rng = np.random.default_rng(seed)
    arrays = {k: rng.uniform(-1, 1, size=(n, w)).astype(np.float32) for k, w in BLOCKS.items()}
    arrays["meta"][:, 0] = rng.integers(15, 300, n)
    return Trajectories(**arrays, info={"frames": 300, "matcher": "orb"} if info is None else info)


def _chunks(t: Trajectories, size: int):
    return [t.select(slice(i, i + size)) for i in range(0, len(t), size)]


def _savez_reference(t: Trajectories, compact: bool) -> bytes:
    """What Trajectories.save wrote before the writer existed: np.savez_compressed of all the rows at once."""
    arrays = {name: getattr(t, name) for name in BLOCK_NAMES}
    if compact:
        arrays.update({k: v.astype(np.float16) for k, v in arrays.items() if k != "meta"})
    arrays["info_json"] = np.array(json.dumps(t.info, sort_keys=True))
    buf = io.BytesIO()
    np.savez_compressed(buf, **arrays)
    return buf.getvalue()


def _reference_npz(path, t: Trajectories, compact: bool):
    """The planted truth: the archive zipfile builds (np.savez_compressed of all the rows at once), as
    Trajectories.save wrote it before the rows were compressed as they come."""
    path.write_bytes(_savez_reference(t, compact))
    return path


def _write(path, t: Trajectories, size: int, **kwargs) -> bytes:
    with TrajectoryWriter(path, **kwargs) as w:
        for part in _chunks(t, size):
            w.write(part)
    assert w.n_rows == len(t)
    return path.read_bytes()


@pytest.mark.parametrize("compact", [True, False])
def test_npz_written_in_chunks_holds_the_arrays_of_savez_compressed(tmp_path, compact):
    t = _random(1000)
    _write(tmp_path / "a.npz", t, 137, compact=compact)
    ref = _reference_npz(tmp_path / "ref.npz", t, compact)
    with np.load(tmp_path / "a.npz", allow_pickle=False) as got, np.load(ref, allow_pickle=False) as want:
        assert got.files == want.files == [*BLOCK_NAMES, "info_json"]  # names and order
        for key in want.files:
            assert got[key].dtype == want[key].dtype and got[key].shape == want[key].shape, key
            assert got[key].tobytes() == want[key].tobytes(), key
    with zipfile.ZipFile(tmp_path / "a.npz") as z, zipfile.ZipFile(ref) as r:
        assert z.testzip() is None  # every member's CRC-32 checked
        assert [i.filename for i in z.infolist()] == [i.filename for i in r.infolist()]
        assert [i.file_size for i in z.infolist()] == [i.file_size for i in r.infolist()]
        assert [i.CRC for i in z.infolist()] == [i.CRC for i in r.infolist()]  # the combined CRCs
        for mine, theirs in zip(z.infolist(), r.infolist()):  # zipfile's field values
            for field in ("compress_type", "date_time", "create_system", "create_version", "extract_version",
                          "flag_bits", "external_attr"):
                assert getattr(mine, field) == getattr(theirs, field), (mine.filename, field)
    # both read back alike (old files stay readable)
    u, v = load_trajectories(tmp_path / "a.npz"), load_trajectories(ref)
    assert u.info == v.info == t.info
    for name in BLOCK_NAMES:
        want = getattr(t, name) if not compact or name == "meta" else getattr(t, name).astype(np.float16)
        np.testing.assert_array_equal(getattr(u, name), want.astype(np.float32))
        np.testing.assert_array_equal(getattr(v, name), getattr(u, name))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.npz", "ref.npz"]  # no temporary file left


@pytest.mark.skipif(shutil.which("unzip") is None, reason="unzip not installed")
@pytest.mark.parametrize("level", [None, 0])
def test_unzip_tests_the_archive(tmp_path, level):
    path = tmp_path / "a.npz"
    _write(path, _random(700), 100, compresslevel=level)
    done = subprocess.run(["unzip", "-t", str(path)], capture_output=True, text=True)
    assert done.returncode == 0 and "No errors detected" in done.stdout, done.stdout + done.stderr


@pytest.mark.parametrize("level", [None, 1, 0])
def test_npz_bytes_do_not_depend_on_the_chunks_or_the_threads(tmp_path, level):
    """Rows in pieces of 1, 7, 300 and all at once, compressed inline or on the writer's thread: one file. Enough
    rows that every descriptor block spans several of the compressor's pieces."""
    t = _random(2500, seed=3)
    kw = {"compresslevel": level}
    want = _write(tmp_path / "a.npz", t, len(t), **kw)
    assert t.save(tmp_path / "s.npz", compresslevel=level).read_bytes() == want
    for size, threads in [(1, 1), (7, 2), (300, 1), (300, 2), (len(t), 3), (613, 2)]:
        if size == 1 and len(t) > 600:
            got = _write(tmp_path / "b.npz", t.select(slice(0, 600)), 1, **kw)
            assert got == _write(tmp_path / "c.npz", t.select(slice(0, 600)), 600, threads=2, **kw)
            continue
        assert _write(tmp_path / "b.npz", t, size, threads=threads, **kw) == want, (size, threads)
    with zipfile.ZipFile(tmp_path / "a.npz") as z:
        assert z.testzip() is None
        kinds = {i.compress_type for i in z.infolist()}
        assert kinds == ({zipfile.ZIP_STORED} if level == 0 else {zipfile.ZIP_DEFLATED})
        if level == 0:  # stored: the .npy bytes as they are
            assert all(i.compress_size == i.file_size for i in z.infolist())


def test_the_default_npz_level_is_the_fast_one_of_the_dataset_stages(tmp_path):
    """``extract-trajectories -o X.npz`` and ``Trajectories.save`` compressed at zlib's level 6 while the dataset
    stages wrote level 1 (~1% larger, ~30% less CPU on iDT output). Both now use ``NPZ_COMPRESSLEVEL``; the default
    file (level 1, Huffman codes only for some blocks) and explicit levels 1 and 6 differ in bytes, not arrays."""
    from idtfv.cache import NPZ_COMPRESSLEVEL
    from idtfv.runner import DEFAULT_COMPRESSLEVEL

    assert NPZ_COMPRESSLEVEL == DEFAULT_COMPRESSLEVEL == 1
    t = _random(700, seed=5)
    default = t.save(tmp_path / "d.npz").read_bytes()
    level1 = t.save(tmp_path / "l1.npz", compresslevel=1).read_bytes()
    assert len({default, level1, t.save(tmp_path / "l6.npz", compresslevel=6).read_bytes()}) == 3
    for other in ("l1.npz", "l6.npz"):
        with np.load(tmp_path / "d.npz") as a, np.load(tmp_path / other) as b:
            assert sorted(a.files) == sorted(b.files)
            for k in a.files:
                assert np.array_equal(a[k], b[k])


def test_huffman_only_members_are_those_named_and_only_by_default(tmp_path):
    """Planted truth: every block holds one row repeated. String matching shrinks such a member to almost nothing;
    Huffman codes alone cannot go below one bit per byte. So in the default file the members of
    NPZ_HUFFMAN_BLOCKS are at least 1/8 of their size and the others (meta, hof) far smaller; at an explicit
    level 1 every member is far smaller."""
    from idtfv.idt.trajectories import NPZ_HUFFMAN_BLOCKS

    one = _random(1, seed=6)
    t = Trajectories(**{k: np.repeat(getattr(one, k), 5000, axis=0) for k in BLOCKS}, info=one.info)
    for level, huffman in ((None, set(NPZ_HUFFMAN_BLOCKS)), (1, set())):
        path = t.save(tmp_path / "r.npz", compresslevel=level)
        with zipfile.ZipFile(path) as z:
            ratio = {i.filename[:-4]: i.compress_size / i.file_size for i in z.infolist()}
        assert {k for k in BLOCKS if ratio[k] > 1 / 8} == huffman, (level, ratio)
        assert all(ratio[k] < 1 / 50 for k in BLOCKS if k not in huffman), (level, ratio)
        np.testing.assert_array_equal(load_trajectories(path).hog, t.hog.astype(np.float16).astype(np.float32))
    assert set(NPZ_HUFFMAN_BLOCKS) == {"traj", "hog", "mbhx", "mbhy"}


def test_crc32_combine_is_that_of_the_concatenation():
    rng = np.random.default_rng(4)
    sizes = [0, 1, 2, 3, 4, 7, 64, 1000, 65537, 300_001]
    for n1 in sizes:
        for n2 in sizes:
            a = rng.integers(0, 256, n1, dtype=np.uint8).tobytes()
            b = rng.integers(0, 256, n2, dtype=np.uint8).tobytes()
            assert crc32_combine(zlib.crc32(a), zlib.crc32(b), len(b)) == zlib.crc32(a + b), (n1, n2)
    # three parts, folded left as the writer does for a member's segments
    parts = [rng.integers(0, 256, n, dtype=np.uint8).tobytes() for n in (5, 0, 77777)]
    crc = 0
    for p in parts:
        crc = crc32_combine(crc, zlib.crc32(p), len(p))
    assert crc == zlib.crc32(b"".join(parts))
    with pytest.raises(ValueError, match="len2"):
        crc32_combine(0, 0, -1)


def test_segments_need_the_sync_flush_to_read_as_one_stream():
    """The header's segment ends with a sync flush: the two segments inflate to the concatenation. Ended with
    Z_FINISH instead, the stream stops after the header (what a missing flush would break)."""
    head, rows = b"header " * 9, np.arange(5000, dtype=np.float32).tobytes()
    body = io.BytesIO()
    deflater = DeflateBody(body, 6)
    for i in range(0, len(rows), 4096):
        deflater.compress(rows[i:i + 4096])
    deflater.finish()
    first = deflate_segment(head, 6, last=False)
    stream = first.data + body.getvalue()
    assert zlib.decompress(stream, -15) == head + rows
    assert deflater.crc == zlib.crc32(rows) and deflater.size == len(rows) == deflater.segment().size
    finished = deflate_segment(head, 6, last=True).data + body.getvalue()
    d = zlib.decompressobj(-15)
    assert d.decompress(finished) == head and d.eof  # the rows never come out


def test_zip64_fields_are_written_and_read_by_zipfile(tmp_path, monkeypatch):
    """Members over 4 GiB are too big for a test: with the zip64 limit lowered to 1000 bytes every member's sizes
    and offsets go to zip64 extra fields and the end records to zip64 ones; zipfile and np.load read them all
    back as in the file written with the real limit. The local headers carry zip64 sizes always (force_zip64)."""
    t = _random(400, seed=5)
    _write(tmp_path / "a.npz", t, 50)
    monkeypatch.setattr(npzstream, "ZIP64_LIMIT", 1000)
    raw = _write(tmp_path / "b.npz", t, 50)
    assert b"PK\x06\x06" in raw and b"PK\x06\x07" in raw  # zip64 end of central directory and its locator
    with zipfile.ZipFile(tmp_path / "a.npz") as a, zipfile.ZipFile(tmp_path / "b.npz") as b:
        assert b.testzip() is None
        for x, y in zip(a.infolist(), b.infolist(), strict=True):
            assert (y.file_size, y.compress_size, y.header_offset, y.CRC) == \
                   (x.file_size, x.compress_size, x.header_offset, x.CRC)
            values = [x.file_size, x.compress_size] if max(x.file_size, x.compress_size) > 1000 else []
            values += [x.header_offset] if x.header_offset > 1000 else []
            assert x.extra == b"" and y.extra == struct.pack(f"<HH{len(values)}Q", 1, 8 * len(values), *values)
        assert sum(len(y.extra) == 28 for y in b.infolist()) >= 5  # most members have all three fields there
        for info in a.infolist():  # local headers: sizes 0xFFFFFFFF and a zip64 extra with the real ones
            sig, *fields = struct.unpack("<4s5H3L2H", raw[info.header_offset:info.header_offset + 30])
            assert sig == b"PK\x03\x04" and fields[6:8] == [0xFFFFFFFF, 0xFFFFFFFF]
            start = info.header_offset + 30 + fields[8]
            assert struct.unpack("<HHQQ", raw[start:start + 20]) == (1, 16, info.file_size, info.compress_size)
    u = load_trajectories(tmp_path / "b.npz")
    np.testing.assert_array_equal(u.hog, load_trajectories(tmp_path / "a.npz").hog)


def test_a_wrong_crc_is_caught_by_the_readers(tmp_path, monkeypatch):
    """The mutation check of the CRC test above from the readers' side: a member whose CRC-32 is off by one bit
    fails testzip and np.load."""
    def off(crc1, crc2, len2, _real=npzstream.crc32_combine):
        return _real(crc1, crc2, len2) ^ 1

    monkeypatch.setattr(npzstream, "crc32_combine", off)
    _write(tmp_path / "a.npz", _random(300), 100)
    with zipfile.ZipFile(tmp_path / "a.npz") as z:
        assert z.testzip() == "meta.npy"
    with pytest.raises(FormatError, match="CRC"):
        load_trajectories(tmp_path / "a.npz")


@pytest.mark.parametrize("name", ["a.txt", "a.txt.gz"])
def test_lear_text_written_in_chunks_is_that_of_all_rows(tmp_path, name):
    t = _random(300, seed=1)
    with TrajectoryWriter(tmp_path / name) as w:
        for part in _chunks(t, 64):
            w.write(part)
    raw = (tmp_path / name).read_bytes()
    text = gzip.decompress(raw) if name.endswith(".gz") else raw
    rows = np.loadtxt(io.BytesIO(text), dtype=np.float32, delimiter="\t")
    np.testing.assert_array_equal(rows, t.to_lear())  # '%.9g' round-trips float32
    assert text == _format_lear(t.to_lear())
    if name.endswith(".gz"):
        assert raw == t.save(tmp_path / "b.txt.gz").read_bytes().replace(b"b.txt", b"a.txt")  # same stream
        # gzip level 1 by default (the header's XFL byte says 4 = fastest), 9 on request (2 = best)
        assert raw[8] == 4 and t.save(tmp_path / "c.txt.gz", compresslevel=9).read_bytes()[8] == 2


def test_lear_text_to_a_stream():
    t = _random(50, seed=2)
    buf = io.BytesIO()
    with TrajectoryWriter(buf) as w:
        for part in _chunks(t, 7):
            w.write(part)
    assert w.path is None and buf.getvalue() == _format_lear(t.to_lear())
    with pytest.raises(ValueError, match="lear"):
        TrajectoryWriter(io.BytesIO(), format="npz")


@pytest.mark.parametrize("name", ["a.npz", "a.txt.gz"])
def test_an_error_leaves_the_old_file_and_no_temporary_file(tmp_path, name):
    path = tmp_path / name
    path.write_bytes(b"old")
    with pytest.raises(RuntimeError, match="boom"):
        with TrajectoryWriter(path) as w:
            w.write(_random(20))
            raise RuntimeError("boom")
    assert path.read_bytes() == b"old" and sorted(p.name for p in tmp_path.iterdir()) == [name]
    w2 = TrajectoryWriter(tmp_path / "b.npz")
    w2.write(_random(5))
    w2.abort()
    assert sorted(p.name for p in tmp_path.iterdir()) == [name]
    with pytest.raises(ValueError, match="after close"):
        w2.write(_random(5))


def _deflate_threads() -> list:
    return [t for t in threading.enumerate() if t.name == "idtfv-npz-deflate"]


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("fail_at", ["write", "close"])
def test_a_failing_compressor_write_surfaces_and_leaves_nothing(tmp_path, monkeypatch, threads, fail_at):
    """A full disk under the temporary files (ENOSPC from the compressor's file writes, on the background thread
    with threads=2) comes out of write() or close() as the OSError it is; the old output, no temporary file and
    no thread are left."""
    import errno

    calls = {"n": 0}
    real = DeflateBody.compress
    limit = 3 if fail_at == "write" else 10 ** 9

    def compress(self, piece):
        calls["n"] += 1
        if calls["n"] > limit:
            raise OSError(errno.ENOSPC, "No space left on device")
        real(self, piece)

    def finish(self):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(DeflateBody, "compress", compress)
    if fail_at == "close":
        monkeypatch.setattr(DeflateBody, "finish", finish)
    path = tmp_path / "a.npz"
    path.write_bytes(b"old")
    t = _random(200, seed=6)
    written = 0
    with pytest.raises(OSError, match="No space") as caught:
        with TrajectoryWriter(path, threads=threads) as w:
            for _ in range(60):  # ~10 MB: many pieces
                w.write(t)
                written += 1
    assert caught.value.errno == errno.ENOSPC
    assert (written < 60) == (fail_at == "write")  # from a later write() when the thread's write failed
    assert path.read_bytes() == b"old" and sorted(p.name for p in tmp_path.iterdir()) == ["a.npz"]
    assert not _deflate_threads()


@pytest.mark.parametrize("threads", [1, 2])
def test_abort_stops_the_thread_and_leaves_no_file(tmp_path, threads):
    w = TrajectoryWriter(tmp_path / "a.npz", threads=threads)
    for k in range(30):
        w.write(_random(300, seed=k))
    assert len(_deflate_threads()) == (threads > 1)
    w.abort()
    assert not _deflate_threads() and list(tmp_path.iterdir()) == []
    with pytest.raises(ValueError, match="threads"):
        TrajectoryWriter(tmp_path / "b.npz", threads=0)


def test_a_gzipped_lear_text_is_compressed_beside_the_extractor_with_the_same_bytes(tmp_path):
    """threads=2: the .txt.gz's gzip runs on the writer's thread; the bytes are those of threads=1, and a failing
    write there (a full disk) comes out of write() or close() and leaves nothing behind, as for the npz."""
    import errno

    t = _random(700, seed=9)
    out = {}
    for threads in (1, 2):
        with TrajectoryWriter(tmp_path / f"t{threads}.txt.gz", threads=threads) as w:
            if threads == 2:
                assert len(_deflate_threads()) == 1
            for part in _chunks(t, 100):
                w.write(part)
        assert not _deflate_threads()
        out[threads] = (tmp_path / f"t{threads}.txt.gz").read_bytes().replace(f"t{threads}.txt".encode(), b"x")
    assert out[1] == out[2] and gzip.decompress(out[2]) == _format_lear(t.to_lear())

    from idtfv.idt.gzstream import GzipStream

    real = GzipStream.write
    calls = {"n": 0}

    def write(self, data):
        calls["n"] += 1
        if calls["n"] > 2:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(self, data)

    path = tmp_path / "a.txt.gz"
    path.write_bytes(b"old")
    try:
        GzipStream.write = write
        with pytest.raises(OSError, match="No space"):
            with TrajectoryWriter(path, threads=2) as w:
                for part in _chunks(t, 100):
                    w.write(part)
    finally:
        GzipStream.write = real
    assert path.read_bytes() == b"old" and not _deflate_threads()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.txt.gz", "t1.txt.gz", "t2.txt.gz"]
    w = TrajectoryWriter(tmp_path / "b.txt.gz", threads=2)
    w.write(t)
    w.abort()
    assert not _deflate_threads() and not (tmp_path / "b.txt.gz").exists()


def test_chunks_of_another_layout_are_refused(tmp_path):
    with TrajectoryWriter(tmp_path / "a.npz") as w:
        w.write(_random(3))
        with pytest.raises(ValueError, match="differ"):
            w.write(Trajectories(**{**{k: np.zeros((1, n), np.float32) for k, n in BLOCKS.items()},
                                    "traj": np.zeros((1, 8), np.float32)}))


def test_nan_t_pos_filled_at_close_like_extract(tmp_path):
    info = {"frames": 40, "params": IDTParams(start=3).to_dict()}
    t = _random(30, info=info)
    t.meta[:, 0] = np.arange(30) + 9
    t.meta[:, 9] = np.nan
    with TrajectoryWriter(tmp_path / "a.npz", threads=2) as w:
        for part in _chunks(t, 11):
            w.write(part)
    got = load_trajectories(tmp_path / "a.npz").meta[:, 9]
    want = np.clip((np.arange(30, dtype=np.float64) + 9 - 3 - 7.5) / 40, 0, 0.999)
    np.testing.assert_allclose(got, want, rtol=1e-6)
    meta = t.meta.copy()
    fill_t_pos(meta, info)
    np.testing.assert_array_equal(got, meta[:, 9])
    # meta compressed at close from its kept rows: the bytes of the rows written filled in (extract_to_file writes
    # those of extract().save); NaN only from a later chunk on (meta streamed until then) too
    filled = Trajectories(**{k: getattr(t, k) for k in BLOCK_NAMES if k != "meta"}, meta=meta, info=info)
    want = _write(tmp_path / "b.npz", filled, len(t))
    assert (tmp_path / "a.npz").read_bytes() == want
    late = Trajectories(**{k: getattr(t, k) for k in BLOCK_NAMES}, info=info)
    late.meta[:15, 9] = meta[:15, 9]
    assert _write(tmp_path / "c.npz", late, 11, threads=2) == want


def test_the_writer_holds_one_chunk_not_the_file(tmp_path):
    """10 and 40 chunks of 1.7 MB (17 and 68 MB in all) through the writer: the traced peak does not grow."""
    chunk_rows = 1000
    chunk_bytes = chunk_rows * sum(BLOCKS.values()) * 4

    def run(n_chunks, name, threads=1):
        tracemalloc.start()
        try:
            with TrajectoryWriter(tmp_path / name, threads=threads) as w:
                for k in range(n_chunks):
                    w.write(_random(chunk_rows, seed=k))  # made on the fly, dropped after the write
            return tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()

    from idtfv.idt import trajectories as T

    # what the background thread's queue may hold (npz: 8 pieces of 256 KB; .txt.gz: 2 texts of 256 rows, ~0.8 MB
    # each, and the one being compressed): how full it is at the peak is a matter of timing (a loaded machine
    # fills it), so two runs may differ by that much without the memory growing with the length
    queued = {"a.npz": T._QUEUED_PIECES * T._PIECE, "a.txt.gz": (T._QUEUED_TEXTS + 1) * (1 << 20)}
    for name, threads in (("a.npz", 1), ("a.npz", 2), ("a.txt.gz", 1), ("a.txt.gz", 2)):
        # both beyond the compressor's pieces (256 KB) and the queue of the background thread
        small, large = run(10, name, threads), run(40, name, threads)
        assert large < small + chunk_bytes + (queued[name] if threads > 1 else 0), (name, threads, small, large)
        assert large < 0.3 * 40 * chunk_bytes, (name, large, 40 * chunk_bytes)  # far from the whole file


def _texture_frames(n, w=64, h=48, step=1):
    rng = np.random.default_rng(0)
    import cv2

    tex = cv2.GaussianBlur(rng.integers(0, 256, (h + 8, w + step * n + 8), dtype=np.uint8), (0, 0), 1.5)
    for t in range(n):
        # a slow sway up and down keeps tracks alive and moving (a pure translation would be camera motion)
        dy = int(round(2 + 2 * np.sin(t / 5)))
        frame = np.ascontiguousarray(tex[dy:dy + h, 4:4 + w])
        frame[h // 4: 3 * h // 4, :] = np.ascontiguousarray(tex[dy + h // 4: dy + 3 * h // 4,
                                                              step * t: step * t + w])
        yield frame


def test_extract_to_file_memory_is_flat_in_the_video_length(tmp_path):
    """100 and 400 synthetic frames: the 4x longer clip writes ~4x the rows at about the same traced peak, and the
    file holds exactly what extract() returns."""
    from idtfv.idt.extractor import extract, extract_to_file

    params = IDTParams(track_length=6, nt_cells=3, scales=2, camera_motion=False)

    def run(n, name):
        tracemalloc.start()
        try:
            w = extract_to_file(_texture_frames(n), tmp_path / name, params, compact=False)
            return w.n_rows, tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()

    run(20, "warm.npz")  # compile the kernels outside the measurement
    rows_s, peak_s = run(100, "s.npz")
    rows_l, peak_l = run(400, "l.npz")
    row_bytes = sum(BLOCKS.values()) * 4 - 24 * 4  # traj is 12 wide here, not 30
    assert rows_l > 3.5 * rows_s > 0
    growth = (rows_l - rows_s) * row_bytes  # what keeping every row until the end would add at the least
    assert peak_l - peak_s < 0.25 * growth, (peak_s, peak_l, growth)
    ref = extract(_texture_frames(400), params)  # a generator: t_pos filled in at the end, in both
    got = load_trajectories(tmp_path / "l.npz")
    assert got.info == json.loads(json.dumps(ref.info))
    for name in BLOCK_NAMES:
        np.testing.assert_array_equal(getattr(got, name), getattr(ref, name))


def test_extract_to_file_bytes_do_not_depend_on_threads(tmp_path):
    """--threads 2: the same files as one thread, whichever thread compresses them (the writer's own for a .txt.gz
    and an npz at a given level, the main thread for the default npz)."""
    from idtfv.idt.extractor import _writer_threads, extract_to_file

    for name, level in (("a.npz", None), ("b.npz", 6), ("c.txt.gz", None)):
        files = []
        for threads in (1, 2):
            params = IDTParams(track_length=6, nt_cells=3, scales=2, camera_motion=False, threads=threads)
            (tmp_path / str(threads)).mkdir(exist_ok=True)
            w = extract_to_file(_texture_frames(60), tmp_path / str(threads) / name, params, compresslevel=level)
            assert w.n_rows > 0
            files.append((tmp_path / str(threads) / name).read_bytes())
        assert files[0] == files[1], name
    assert not _deflate_threads()
    # the policy: the writer's thread only for the costly compressions
    assert [_writer_threads(out, fmt, level, 2) for out, fmt, level in (
        ("a.npz", None, None), ("a.npz", None, 6), ("a.txt.gz", None, None), ("a.txt", None, None),
        ("a.bin", "npz", None), ("a.bin", "lear", None), (io.BytesIO(), None, None))] == [1, 2, 2, 2, 1, 2, 1]
    assert _writer_threads("a.txt.gz", None, None, 1) == 1


def test_extract_to_file_hands_the_writer_batches_bounded_in_rows(tmp_path, monkeypatch):
    """The writer gets the trajectories in order, in parts that each end at the first frame where the part reached
    ``_WRITE_ROWS`` rows (or spans ``_WRITE_FRAMES`` frames; the part held twice sets the peak above the steady state
    on dense footage, so a bound in rows bounds it); together they are extract()'s rows."""
    from idtfv.idt import extractor
    from idtfv.idt.extractor import extract, extract_to_file

    parts = []
    write = TrajectoryWriter.write

    def recording(self, part):
        parts.append(np.asarray(part.meta[:, 0]).copy())  # frame_num: the frame each trajectory ended on
        return write(self, part)

    monkeypatch.setattr(TrajectoryWriter, "write", recording)
    bound = 60
    monkeypatch.setattr(extractor, "_WRITE_ROWS", bound)
    params = IDTParams(track_length=6, nt_cells=3, scales=2, camera_motion=False)
    writer = extract_to_file(_texture_frames(40), tmp_path / "a.npz", params)
    parts = [p for p in parts if len(p)]
    assert len(parts) > 3  # not vacuous: several parts
    flat = np.concatenate(parts)
    assert (np.diff(flat) >= 0).all()  # in frame order, each frame's rows in one part
    for p in parts[:-1]:
        assert len(p) >= bound and (p < p[-1]).sum() < bound  # ends where it first reached the bound
    assert writer.n_rows == len(flat) == len(extract(_texture_frames(40), params))
