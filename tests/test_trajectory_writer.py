"""Streaming trajectory output (issue 11): TrajectoryWriter's files against np.savez_compressed / the LEAR text of
all rows at once, its memory (one chunk at a time), and extract_to_file's memory flat in the video's length."""

from __future__ import annotations

import gzip
import io
import json
import tracemalloc

import numpy as np
import pytest

from idtfv.idt.layout import BLOCK_NAMES
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


@pytest.mark.parametrize("compact", [True, False])
def test_npz_written_in_chunks_has_the_bytes_of_savez_compressed(tmp_path, compact):
    t = _random(1000)
    with TrajectoryWriter(tmp_path / "a.npz", compact=compact) as w:
        for part in _chunks(t, 137):
            w.write(part)
    assert w.n_rows == 1000
    assert (tmp_path / "a.npz").read_bytes() == _savez_reference(t, compact)
    assert t.save(tmp_path / "b.npz", compact=compact).read_bytes() == _savez_reference(t, compact)
    u = load_trajectories(tmp_path / "a.npz")
    assert u.info == t.info
    for name in BLOCK_NAMES:
        want = getattr(t, name) if not compact or name == "meta" else getattr(t, name).astype(np.float16)
        np.testing.assert_array_equal(getattr(u, name), want.astype(np.float32))
    assert [p.name for p in tmp_path.iterdir()] != [] and not list(tmp_path.glob(".*"))  # no temporary file left


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
    with TrajectoryWriter(tmp_path / "a.npz") as w:
        for part in _chunks(t, 11):
            w.write(part)
    got = load_trajectories(tmp_path / "a.npz").meta[:, 9]
    want = np.clip((np.arange(30, dtype=np.float64) + 9 - 3 - 7.5) / 40, 0, 0.999)
    np.testing.assert_allclose(got, want, rtol=1e-6)
    meta = t.meta.copy()
    fill_t_pos(meta, info)
    np.testing.assert_array_equal(got, meta[:, 9])


def test_the_writer_holds_one_chunk_not_the_file(tmp_path):
    """10 and 40 chunks of 1.7 MB (17 and 68 MB in all) through the writer: the traced peak does not grow."""
    chunk_rows = 1000
    chunk_bytes = chunk_rows * sum(BLOCKS.values()) * 4

    def run(n_chunks, name):
        tracemalloc.start()
        try:
            with TrajectoryWriter(tmp_path / name) as w:
                for k in range(n_chunks):
                    w.write(_random(chunk_rows, seed=k))  # made on the fly, dropped after the write
            return tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()

    for name in ("a.npz", "a.txt.gz"):
        small, large = run(10, name), run(40, name)  # both beyond the 1 MB copy buffer of the npz archive
        assert large < small + chunk_bytes, (name, small, large)
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
