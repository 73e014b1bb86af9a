"""Huffman-only members in the dataset stages' .npz files (idtfv.cache.atomic_savez(huffman_only=...), the runner's
huffman_only, the features stage's choice): planted truth on repeated rows, and the arrays unchanged."""

from __future__ import annotations

import json
import zipfile
from dataclasses import dataclass

import numpy as np
import pytest

from idtfv.cache import atomic_savez, load_valid
from idtfv.errors import ParameterError
from idtfv.runner import run_stage


def _repeated() -> dict[str, np.ndarray]:
    """Every array one random row repeated: string matching shrinks it to almost nothing, Huffman codes alone
    cannot go below one bit per byte (1/8 of the raw size)."""
    rng = np.random.default_rng(7)
    return {name: np.repeat(rng.normal(size=(1, w)).astype(np.float32), 4000, axis=0)
            for name, w in (("meta", 10), ("hog", 96), ("hof", 108), ("sample_hog", 96))}


def _ratios(path) -> dict[str, float]:
    with zipfile.ZipFile(path) as z:
        return {i.filename[:-4]: i.compress_size / i.file_size for i in z.infolist()}


def _huffman_members(path) -> set[str]:
    ratios = {name: r for name, r in _ratios(path).items() if name in _repeated()}  # the planted arrays
    assert all(r > 1 / 8 or r < 1 / 50 for r in ratios.values()), ratios  # nothing in between: planted
    return {name for name, r in ratios.items() if r > 1 / 8}


@pytest.mark.parametrize("level", [None, 1, 6, 9])
def test_named_members_get_huffman_codes_only(tmp_path, level):
    arrays = _repeated()
    atomic_savez(tmp_path / "h.npz", arrays, compresslevel=level, huffman_only=("hog", "sample_hog", "absent"))
    atomic_savez(tmp_path / "p.npz", arrays, compresslevel=level)
    assert _huffman_members(tmp_path / "h.npz") == {"hog", "sample_hog"}
    assert _huffman_members(tmp_path / "p.npz") == set()
    for name in ("h.npz", "p.npz"):
        loaded = load_valid(tmp_path / name)
        assert sorted(loaded) == sorted(arrays)
        for key, value in arrays.items():
            np.testing.assert_array_equal(loaded[key], value)


def test_level_0_stays_stored_and_a_string_is_refused(tmp_path):
    arrays = _repeated()
    atomic_savez(tmp_path / "s.npz", arrays, compresslevel=0, huffman_only=("hog",))
    with zipfile.ZipFile(tmp_path / "s.npz") as z:
        # zlib's level 0: stored blocks, a few bytes over the raw size, for every member
        assert all(1 <= i.compress_size / i.file_size < 1.01 for i in z.infolist())
    with pytest.raises(ParameterError, match="huffman_only"):
        atomic_savez(tmp_path / "x.npz", arrays, huffman_only="hog")


def test_bytes_are_deterministic(tmp_path):
    arrays = {"hog": np.random.default_rng(1).normal(size=(3000, 96)).astype(np.float32)}
    atomic_savez(tmp_path / "a.npz", arrays, huffman_only=("hog",))
    atomic_savez(tmp_path / "b.npz", arrays, huffman_only=("hog",))
    assert (tmp_path / "a.npz").read_bytes() == (tmp_path / "b.npz").read_bytes()


@dataclass(frozen=True)
class Item:
    video_id: str


def repeated_item(entry, params):
    return {**_repeated(), "info_json": np.array(json.dumps({"id": entry.video_id}))}


@pytest.mark.parametrize("jobs", [1, 2])
def test_the_runner_passes_huffman_only_to_every_worker(tmp_path, jobs):
    items = [Item("a"), Item("b")]
    plain = run_stage("toy", repeated_item, items, params={}, cache_root=tmp_path / "p", jobs=jobs)
    huff = run_stage("toy", repeated_item, items, params={}, cache_root=tmp_path / "h", jobs=jobs,
                     huffman_only=["hog"])
    assert plain.dir.name == huff.dir.name  # the directory does not depend on it
    for item in items:
        assert _huffman_members(plain.path(item.video_id)) == set()
        assert _huffman_members(huff.path(item.video_id)) == {"hog"}
    with pytest.raises(ParameterError, match="huffman_only"):
        run_stage("toy", repeated_item, items, params={}, cache_root=tmp_path, huffman_only="hog")


def test_the_features_stage_stores_the_descriptor_blocks_with_huffman_codes(tmp_path):
    """run_features (the dataset stage) asks for NPZ_HUFFMAN_BLOCKS and their streaming samples: checked with a
    planted per-video function in place of the extractor."""
    from idtfv.idt.stage import features_params, run_features
    from idtfv.idt.trajectories import NPZ_HUFFMAN_BLOCKS

    video = tmp_path / "v.avi"
    video.write_bytes(b"not decoded: the planted function does not read it")

    @dataclass(frozen=True)
    class Entry:
        video_id: str
        path: object

    result = run_features([Entry("v", video)], features_params(), cache_root=tmp_path / "cache",
                          func=repeated_item)
    assert "hog" in NPZ_HUFFMAN_BLOCKS and "hof" not in NPZ_HUFFMAN_BLOCKS
    assert _huffman_members(result.path("v")) == {"hog", "sample_hog"}


def test_the_runner_takes_huffman_only_from_an_iterator(tmp_path):
    """An iterator of names is read once (it was consumed by the check and then stored empty)."""
    result = run_stage("toy", repeated_item, [Item("a")], params={}, cache_root=tmp_path, huffman_only=iter(["hog"]))
    assert _huffman_members(result.path("a")) == {"hog"}
    with pytest.raises(ParameterError, match="huffman_only"):
        run_stage("toy", repeated_item, [Item("a")], params={}, cache_root=tmp_path / "b", huffman_only=5)
