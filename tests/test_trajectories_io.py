"""Trajectories container and formats: npz / LEAR text round trips, LEAR's own files, bad files."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import numpy as np
import pytest

from idtfv.errors import FormatError
from idtfv.idt.trajectories import BLOCKS, LEAR_COLUMNS, Trajectories, concatenate, load_trajectories

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
LEAR_TREE = SHARED / "reference" / "lear-idt" / "tree.txt.gz"


def _random(n=7, seed=0) -> Trajectories:
    rng = np.random.default_rng(seed)
    arrays = {k: rng.normal(size=(n, w)).astype(np.float32) for k, w in BLOCKS.items()}
    return Trajectories(**arrays, info={"frames": 12, "params": {"seed": seed}, "matcher": "orb"})


def _same(a: Trajectories, b: Trajectories):
    for k in BLOCKS:
        np.testing.assert_array_equal(getattr(a, k), getattr(b, k))


def test_shapes_and_len():
    t = _random(5)
    assert len(t) == 5 and t.to_lear().shape == (5, LEAR_COLUMNS) == (5, 436)
    assert len(Trajectories()) == 0
    with pytest.raises(ValueError, match="meta"):
        Trajectories(meta=np.zeros((0, 9)))
    with pytest.raises(ValueError, match="hog"):
        Trajectories(hog=np.zeros(3))
    with pytest.raises(ValueError, match="rows"):
        Trajectories(meta=np.zeros((2, 10)), traj=np.zeros((3, 30)))


def test_npz_round_trip_exact(tmp_path):
    t = _random()
    p = t.save(tmp_path / "a.npz", compact=False)  # full precision (the default is float16 descriptors)
    u = load_trajectories(p)
    _same(t, u)
    assert u.info == t.info
    with np.load(p) as z:
        assert sorted(z.files) == sorted(list(BLOCKS) + ["info_json"])
        assert z["info_json"].shape == () and json.loads(str(z["info_json"][()]))["matcher"] == "orb"
    # deterministic bytes
    q = t.save(tmp_path / "b.npz", compact=False)
    assert p.read_bytes() == q.read_bytes()


@pytest.mark.parametrize("name", ["a.txt", "a.txt.gz"])
def test_lear_round_trip_exact(tmp_path, name):
    t = _random()
    p = t.save(tmp_path / name, format="lear")
    u = load_trajectories(p)
    _same(t, u)  # %.9g round-trips float32
    opener = gzip.open if name.endswith(".gz") else open
    with opener(p, "rt") as f:
        lines = f.read().splitlines()
    assert len(lines) == len(t) and all(len(line.split("\t")) == 436 for line in lines)


def test_gzipped_lear_bytes_do_not_depend_on_the_temporary_file(tmp_path):
    """Each save writes through a differently named temporary file; none of it may reach the gzip header."""
    t = _random()
    p = tmp_path / "a.txt.gz"
    first = t.save(p, format="lear").read_bytes()
    second = t.save(p, format="lear").read_bytes()
    assert first == second
    # RFC 1952 header: FLG (byte 3) bit 3 = FNAME, zero-terminated name from byte 10 (no FEXTRA here)
    assert first[3] & 0x08 and first[10:].split(b"\0", 1)[0] == b"a.txt"
    assert not list(tmp_path.glob(".*.tmp"))  # no temporary file left behind


def test_arrays_and_concatenate():
    a, b = _random(3, 1), _random(4, 2)
    c = concatenate([a, b])
    assert len(c) == 7 and c.info == a.info
    np.testing.assert_array_equal(c.hof[3:], b.hof)
    d = Trajectories.from_arrays(c.as_arrays())
    _same(c, d)
    assert len(concatenate([])) == 0
    assert len(c.select(c.meta[:, 0] > 0)) == int((c.meta[:, 0] > 0).sum())


def test_empty_round_trip(tmp_path):
    t = Trajectories(info={"frames": 3})
    assert len(load_trajectories(t.save(tmp_path / "e.npz"))) == 0
    assert len(load_trajectories(t.save(tmp_path / "e.txt", format="lear"))) == 0


def test_bad_files(tmp_path):
    with pytest.raises(FormatError, match="no such file"):
        load_trajectories(tmp_path / "missing.npz")
    bad = tmp_path / "bad.txt"
    bad.write_text("1 2 3\n")
    with pytest.raises(FormatError, match="436 columns"):
        load_trajectories(bad)
    junk = tmp_path / "junk.npz"
    junk.write_bytes(b"not a zip")
    with pytest.raises(FormatError, match="junk.npz"):
        load_trajectories(junk)
    other = tmp_path / "other.npz"
    np.savez(other, x=np.zeros(3))
    with pytest.raises(FormatError, match="missing"):
        load_trajectories(other)
    weird = tmp_path / "a.csv"
    weird.write_text("x")
    with pytest.raises(FormatError, match="unknown"):
        load_trajectories(weird)


@pytest.mark.skipif(not SHARED.exists(), reason="needs the ../shared reference data")
def test_reads_lear_reference_file():
    t = load_trajectories(LEAR_TREE)
    assert len(t) == 2239
    with gzip.open(LEAR_TREE, "rt") as f:
        first = np.array(f.readline().split(), np.float32)
    np.testing.assert_array_equal(t.to_lear()[0], first)
    # LEAR's conventions that the extractor reproduces
    assert t.meta[:, 0].min() == 15 and t.meta[:, 0].max() == 67  # frame where the track ends, 0-based
    np.testing.assert_allclose(t.meta[:, 9], np.clip((t.meta[:, 0] - 7.5) / 68, 0, 0.999), atol=1e-5)
    np.testing.assert_allclose(t.meta[:, 7], np.clip(t.meta[:, 1] / 320, 0, 0.999), atol=1e-5)


def test_compact_npz_is_small_and_close(tmp_path):
    rng = np.random.default_rng(3)
    n = 300
    # descriptor-like data: non-negative blocks whose rows are unit-norm per block of 32
    blocks = {k: np.sqrt(rng.dirichlet(np.ones(w // 3), size=(n, 3)).reshape(n, w)).astype(np.float32)
              for k, w in BLOCKS.items() if k not in ("meta", "traj")}
    traj = rng.normal(0, 0.05, (n, 30)).astype(np.float32)
    meta = np.column_stack([rng.integers(15, 500, n), rng.uniform(0, 320, (n, 4)), rng.uniform(5, 90, n),
                            np.full(n, 1.0), rng.uniform(0, 0.999, (n, 3))]).astype(np.float32)
    t = Trajectories(meta=meta, traj=traj, **blocks)
    full = t.save(tmp_path / "full.npz", compact=False)
    small = t.save(tmp_path / "small.npz", compact=True)
    default = t.save(tmp_path / "default.npz")  # compact is the default
    assert default.read_bytes() == small.read_bytes()
    with np.load(default) as z:
        assert z["meta"].dtype == np.float32 and all(z[k].dtype == np.float16 for k in ("traj", "hog", "mbhy"))
    u = load_trajectories(small)
    np.testing.assert_array_equal(u.meta, t.meta)
    for k in ("traj", "hog", "hof", "mbhx", "mbhy"):
        assert getattr(u, k).dtype == np.float32
        np.testing.assert_allclose(getattr(u, k), getattr(t, k), rtol=1e-3, atol=1e-4)
    lear_text = len(_lear_6_digits(t.to_lear()))  # what LEAR's own 6-significant-digit text would take
    assert small.stat().st_size < 0.25 * lear_text
    assert small.stat().st_size < 0.6 * full.stat().st_size


def _lear_6_digits(table):
    import io as _io

    buf = _io.StringIO()
    np.savetxt(buf, table, fmt="%.6g", delimiter="\t")
    return buf.getvalue().encode()
