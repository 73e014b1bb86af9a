"""Tests of idtfv.cache: parameter hashing, stage directories, atomic and deterministic writes."""

from __future__ import annotations

import hashlib
import json
import os
import stat
import zipfile

import numpy as np
import pytest

import idtfv
from idtfv.errors import FormatError, ParameterError
from idtfv import cache
from idtfv.cache import (
    atomic_savez,
    atomic_write_json,
    atomic_write_text,
    canonical_json,
    check_npz,
    load_valid,
    param_hash,
    remove_stale_temp_files,
    stage_dir,
)


def _arrays(seed=0):
    rng = np.random.default_rng(seed)
    return {
        "meta": rng.standard_normal((7, 10)).astype(np.float32),
        "hog": rng.random((7, 96)).astype(np.float32),
        "empty": np.zeros((0, 96), np.float32),
        "ids": np.arange(5, dtype=np.int64),
        "info_json": np.array(json.dumps({"fps": 25.0, "matcher": "orb"})),
    }


def _naive_hash(params, version):
    text = json.dumps({"params": params, "version": version}, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:12]


# ------------------------------------------------------------------------------------------------ hashing
def test_param_hash_matches_a_naive_sha256_of_sorted_json():
    params = {"idt": {"stride": 5, "flow": "farneback", "scale_factor": 1.4142135623730951}, "k": 256}
    assert param_hash(params, version="0.1.0") == _naive_hash(params, "0.1.0")
    assert param_hash(params) == _naive_hash(params, idtfv.__version__)


def test_param_hash_ignores_key_order_and_container_type_but_not_values_or_version():
    a = {"b": [1, 2], "a": {"y": 1.5, "x": None}}
    b = {"a": {"x": None, "y": 1.5}, "b": (1, 2)}
    c = {"a": {"x": None, "y": np.float64(1.5)}, "b": [np.int64(1), np.int32(2)]}
    assert param_hash(a) == param_hash(b) == param_hash(c)
    assert canonical_json(a) == '{"a":{"x":null,"y":1.5},"b":[1,2]}'
    assert param_hash(a) != param_hash({**a, "b": [1, 3]})
    assert param_hash(a, version="0.1.0") != param_hash(a, version="0.2.0")
    assert len(param_hash(a)) == 12 and int(param_hash(a), 16) >= 0


@pytest.mark.parametrize("bad", [{"x": float("nan")}, {"x": float("inf")}, {"x": object()}, {1: "int key"}])
def test_non_json_parameters_are_refused_with_the_offending_key(bad):
    with pytest.raises(ParameterError, match="stage parameter"):
        param_hash(bad)


def test_stage_dir_is_named_by_hash_and_writes_params_json_once(tmp_path):
    params = {"idt": {"stride": 5}, "seed": 0}
    d = stage_dir(tmp_path, "features", params)
    assert d == tmp_path / f"features-{param_hash(params)}" and d.is_dir()
    record = json.loads((d / "params.json").read_text())
    assert record == {"stage": "features", "version": idtfv.__version__, "params": params}
    (d / "params.json").write_text("kept")  # written once: an existing file is left alone
    assert stage_dir(tmp_path, "features", params) == d
    assert (d / "params.json").read_text() == "kept"
    assert stage_dir(tmp_path, "features", {"seed": 1}) != d
    assert stage_dir(tmp_path / "nothing", "x", params, create=False).parent == tmp_path / "nothing"
    assert not (tmp_path / "nothing").exists()


@pytest.mark.parametrize("bad", ["", "../up", "a b", "x/y", None])
def test_stage_dir_refuses_unsafe_stage_names(tmp_path, bad):
    with pytest.raises(ParameterError, match="stage name"):
        stage_dir(tmp_path, bad, {})


# ------------------------------------------------------------------------------------------------ npz writes
def test_atomic_savez_round_trips_without_pickles_and_matches_numpy_savez(tmp_path):
    arrays = _arrays()
    atomic_savez(tmp_path / "a.npz", arrays)
    np.savez_compressed(tmp_path / "ref.npz", **arrays)
    with np.load(tmp_path / "a.npz", allow_pickle=False) as ours, np.load(tmp_path / "ref.npz") as ref:
        assert ours.files == ref.files == list(arrays)
        for name in arrays:
            assert ours[name].dtype == arrays[name].dtype and ours[name].shape == arrays[name].shape
            np.testing.assert_array_equal(ours[name], ref[name])
    assert json.loads(str(load_valid(tmp_path / "a.npz")["info_json"]))["matcher"] == "orb"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.npz", "ref.npz"]  # no temp file left


def test_atomic_savez_bytes_are_deterministic(tmp_path, monkeypatch):
    atomic_savez(tmp_path / "a.npz", _arrays())
    # a different wall-clock time must not change the bytes (np.savez_compressed would stamp it in)
    monkeypatch.setattr("time.time", lambda: 2_000_000_000.0)
    atomic_savez(tmp_path / "b.npz", _arrays())
    assert (tmp_path / "a.npz").read_bytes() == (tmp_path / "b.npz").read_bytes()
    with zipfile.ZipFile(tmp_path / "a.npz") as archive:
        assert {info.date_time for info in archive.infolist()} == {(1980, 1, 1, 0, 0, 0)}
        assert {info.compress_type for info in archive.infolist()} == {zipfile.ZIP_DEFLATED}
    atomic_savez(tmp_path / "c.npz", _arrays(seed=1))
    assert (tmp_path / "a.npz").read_bytes() != (tmp_path / "c.npz").read_bytes()
    np.savez_compressed(tmp_path / "ref.npz", **_arrays())  # default level: the same size as numpy's
    assert (tmp_path / "ref.npz").stat().st_size == (tmp_path / "a.npz").stat().st_size


def test_compresslevel_trades_size_for_speed_and_keeps_the_values(tmp_path):
    x = {"x": np.round(np.random.default_rng(0).random(50_000, dtype=np.float32) * 255) / 255}
    sizes = {}
    for level in (0, 1, 9):
        atomic_savez(tmp_path / f"l{level}.npz", x, compresslevel=level)
        np.testing.assert_array_equal(load_valid(tmp_path / f"l{level}.npz")["x"], x["x"])
        sizes[level] = (tmp_path / f"l{level}.npz").stat().st_size
    assert sizes[0] > sizes[1] and sizes[0] > sizes[9]
    assert (tmp_path / "l1.npz").read_bytes() != (tmp_path / "l9.npz").read_bytes()  # the level is applied
    assert sizes[0] > x["x"].nbytes  # level 0 stores the raw bytes
    with pytest.raises(ParameterError, match="compresslevel"):
        atomic_savez(tmp_path / "bad.npz", x, compresslevel=10)


@pytest.mark.parametrize(
    "arrays, match",
    [
        ({"x": np.array([{"a": 1}], dtype=object)}, "dtype object"),
        ({"bad name": np.zeros(2)}, "not allowed"),
        ({"../x": np.zeros(2)}, "not allowed"),
        ([np.zeros(2)], "expected a dict"),
    ],
)
def test_atomic_savez_refuses_pickles_and_bad_names(tmp_path, arrays, match):
    with pytest.raises(FormatError, match=match):
        atomic_savez(tmp_path / "x.npz", arrays)
    assert list(tmp_path.iterdir()) == []


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temp_file(tmp_path, monkeypatch):
    path = tmp_path / "v.npz"
    atomic_savez(path, _arrays(0))
    before = path.read_bytes()
    calls = []

    def exploding_write_array(fh, array, **kwargs):
        calls.append(array.shape)
        if len(calls) == 2:
            raise OSError("disk full")
        return original(fh, array, **kwargs)

    original = np.lib.format.write_array
    monkeypatch.setattr(np.lib.format, "write_array", exploding_write_array)
    with pytest.raises(OSError, match="disk full"):
        atomic_savez(path, _arrays(1))
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["v.npz"]


# ------------------------------------------------------------------------------------------------ validity
def _names(path):
    """check_npz's verdict in load_valid's terms: the names, or None."""
    names = check_npz(path)
    return None if names is None else dict.fromkeys(names)


@pytest.mark.parametrize("load_valid", [load_valid, _names], ids=["load_valid", "check_npz"])
def test_load_valid_accepts_complete_files_and_rejects_missing_truncated_corrupt(tmp_path, load_valid):
    arrays = {"x": np.random.default_rng(0).standard_normal(20000).astype(np.float32)}
    good = tmp_path / "good.npz"
    atomic_savez(good, arrays)
    loaded = load_valid(good)
    if load_valid is _names:
        assert list(loaded) == ["x"]
    else:
        np.testing.assert_array_equal(loaded["x"], arrays["x"])
    data = good.read_bytes()

    assert load_valid(tmp_path / "missing.npz") is None
    (tmp_path / "trunc.npz").write_bytes(data[: len(data) // 2])
    assert load_valid(tmp_path / "trunc.npz") is None
    flipped = bytearray(data)
    flipped[len(data) // 3] ^= 0xFF  # inside the compressed member: CRC or inflate error
    (tmp_path / "flip.npz").write_bytes(bytes(flipped))
    assert load_valid(tmp_path / "flip.npz") is None
    (tmp_path / "text.npz").write_text("not a zip")
    assert load_valid(tmp_path / "text.npz") is None
    (tmp_path / "empty.npz").write_bytes(b"")
    assert load_valid(tmp_path / "empty.npz") is None
    np.save(tmp_path / "plain.npy", arrays["x"])
    assert load_valid(tmp_path / "plain.npy") is None  # an .npy is not a per-video result
    (tmp_path / "dir.npz").mkdir()
    assert load_valid(tmp_path / "dir.npz") is None


def test_load_valid_refuses_pickled_members(tmp_path):
    np.savez(tmp_path / "pickled.npz", x=np.array([{"a": 1}], dtype=object))
    assert load_valid(tmp_path / "pickled.npz") is None
    assert check_npz(tmp_path / "pickled.npz") is None


def test_check_npz_reads_a_large_file_in_flat_memory(tmp_path):
    import tracemalloc

    x = np.random.default_rng(1).standard_normal((4_000_000,)).astype(np.float32)  # 16 MB, incompressible
    atomic_savez(tmp_path / "big.npz", {"x": x, "y": np.arange(3)})
    del x
    tracemalloc.start()
    try:
        names = check_npz(tmp_path / "big.npz")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert names == ["x", "y"]
    assert peak < 8 << 20  # a few 1 MiB pieces, not the 16 MB member (load_valid peaks above 16 MB)


# ------------------------------------------------------------------------------------------------ text and temp
def test_atomic_writes_respect_the_umask_not_mkstemp_0600(tmp_path):
    old = os.umask(0o022)
    try:
        atomic_write_text(tmp_path / "t.txt", "x")
        atomic_savez(tmp_path / "a.npz", {"x": np.zeros(3)})
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "t.txt").stat().st_mode) == 0o644
    assert stat.S_IMODE((tmp_path / "a.npz").stat().st_mode) == 0o644


def test_atomic_text_and_json_writes(tmp_path):
    atomic_write_text(tmp_path / "t.txt", "é\nline2\r\n")
    assert (tmp_path / "t.txt").read_bytes() == "é\nline2\r\n".encode()
    atomic_write_json(tmp_path / "j.json", {"b": 1, "a": [1.5, "x"]})
    text = (tmp_path / "j.json").read_text()
    assert json.loads(text) == {"b": 1, "a": [1.5, "x"]} and text.index('"a"') < text.index('"b"')
    assert text.endswith("\n")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["j.json", "t.txt"]


def test_remove_stale_temp_files_only_removes_temp_files(tmp_path):
    (tmp_path / ".v1.npz.abc123.tmp").write_bytes(b"partial")
    (tmp_path / ".index.csv.x.tmp").write_text("partial")
    (tmp_path / "v1.npz").write_bytes(b"x")
    (tmp_path / "notes.tmp").write_text("not ours: no leading dot")
    removed = remove_stale_temp_files(tmp_path)
    assert sorted(p.name for p in removed) == [".index.csv.x.tmp", ".v1.npz.abc123.tmp"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.tmp", "v1.npz"]
    assert cache.TMP_GLOB == ".*.tmp"
