"""The features stage writes each video's trajectories to its result file as they finish (the runner's
``writes_npz`` protocol), so a worker's memory does not grow with a video's length: the stored arrays are those of
the in-memory extraction, bit for bit, and the in-memory path is not taken; the runner's side of the protocol
(fingerprint, resume, a function that breaks it) holds for any such function."""

from __future__ import annotations

import numpy as np
import pytest

from idtfv.cache import load_valid
from idtfv.data.manifest import VideoEntry
from idtfv.idt import extractor
from idtfv.idt.params import IDTParams
from idtfv.idt.stage import features_item, features_params, run_features
from idtfv.runner import EMPTY_KEY, SOURCE_SUFFIX, entry_fingerprint, run_stage


def _entry(path, video_id="v"):
    return VideoEntry(video_id=video_id, path=path, label=0, label_name="a")


def test_the_stage_file_holds_the_in_memory_arrays_and_never_holds_them_all(tiny_video, tmp_path, monkeypatch):
    video = tiny_video(frames=24, width=96, height=72)
    params = features_params(preset="fast")
    entry = _entry(video)
    want = extractor.extract(video, params=IDTParams.from_dict(params["idt"])).as_arrays()
    assert want["meta"].shape[0] > 0  # a video with trajectories (else the test would compare empty arrays)

    def refuse(*args, **kwargs):  # the stage must not extract a whole video into memory
        raise AssertionError("extract() called by the features stage")

    monkeypatch.setattr(extractor, "extract", refuse)
    result = run_features([entry], params, cache_root=tmp_path / "cache")
    assert result.ok == ["v"] and not result.failed
    got = load_valid(result.path("v"))
    assert sorted(got) == sorted(want)
    for name in want:
        if name != "info_json":
            assert got[name].dtype == want[name].dtype and got[name].tobytes() == want[name].tobytes(), name
    assert (result.dir / f"v{SOURCE_SUFFIX}").read_text().strip() == entry_fingerprint(entry, params)


def test_a_video_too_short_for_a_trajectory_is_empty_not_a_result(tiny_video, tmp_path):
    video = tiny_video(frames=6)  # shorter than L + 1 = 16 frames
    result = run_features([_entry(video)], features_params(), cache_root=tmp_path / "cache")
    assert result.ok == [] and "v" in result.empty
    assert "6 frames" in result.empty["v"]
    stored = load_valid(result.path("v"))
    assert EMPTY_KEY in stored and stored["meta"].shape == (0, 10)


# ------------------------------------------------------------------------- the runner's side, any function
def _writes(entry, params, *, out):
    from idtfv.cache import atomic_savez

    atomic_savez(out, {"x": np.frombuffer(entry.path.read_bytes(), np.uint8).copy()})


_writes.writes_npz = True


def _returns_arrays_too(entry, params, *, out):
    _writes(entry, params, out=out)
    return {"x": np.zeros(1)}


_returns_arrays_too.writes_npz = True


def _writes_nothing(entry, params, *, out):
    return None


_writes_nothing.writes_npz = True


def test_the_runner_lets_a_function_write_its_result_and_resumes_it(tmp_path):
    video = tmp_path / "a.bin"
    video.write_bytes(b"abcdef")
    entries = [_entry(video, "a")]
    first = run_stage("toy", _writes, entries, params={}, cache_root=tmp_path / "c", fingerprint=entry_fingerprint)
    assert first.done == ["a"]
    assert load_valid(first.path("a"))["x"].tobytes() == b"abcdef"
    assert (first.dir / f"a{SOURCE_SUFFIX}").is_file()
    again = run_stage("toy", _writes, entries, params={}, cache_root=tmp_path / "c", fingerprint=entry_fingerprint)
    assert again.skipped == ["a"] and again.done == []


@pytest.mark.parametrize("func", [_returns_arrays_too, _writes_nothing])
def test_a_function_that_breaks_the_protocol_fails_its_video_and_leaves_no_result(tmp_path, func):
    video = tmp_path / "a.bin"
    video.write_bytes(b"abcdef")
    result = run_stage("toy", func, [_entry(video, "a")], params={}, cache_root=tmp_path / "c")
    assert "a" in result.failed and "writes_npz" in result.failed["a"]
    assert not result.path("a").exists()
