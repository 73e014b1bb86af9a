"""Issue 11 items 3-4: videos without trajectories and truncated videos are reported, never silently used.

References: planted truth (a clip of 3 frames cannot hold a trajectory of L=15; an AVI cut to a fraction of its
bytes decodes fewer frames than its header declares, counted independently by decoding it here with OpenCV).
"""

from __future__ import annotations

import csv
import json
import warnings

import numpy as np
import pytest

from conftest import opencv_frame_counts, write_tiny_video
from idtfv.runner import EmptyResult, read_stamp, run_stage, write_stamp
from idtfv.video import TruncatedVideoWarning, collect_video_warnings, iter_frames, probe_video


def _cut(src, dst, fraction):
    data = src.read_bytes()
    dst.write_bytes(data[: int(len(data) * fraction)])
    return dst


@pytest.fixture
def truncated(tmp_path):
    full = write_tiny_video(tmp_path / "full.avi", frames=60)
    return _cut(full, tmp_path / "cut.avi", 0.3)


# ------------------------------------------------------------------------------------------------ item 4: video.py
def test_a_truncated_video_warns_once_naming_the_file_and_both_counts(truncated):
    decoded, declared = opencv_frame_counts(truncated)
    assert declared == 60 and decoded < 0.5 * declared  # the planted truncation
    with pytest.warns(TruncatedVideoWarning) as caught:
        info = probe_video(truncated)
    assert info.frames == decoded
    messages = [str(w.message) for w in caught if issubclass(w.category, TruncatedVideoWarning)]
    assert len(messages) == 1
    assert str(truncated) in messages[0] and f"{decoded} " in messages[0] and f"{declared} " in messages[0]
    with pytest.warns(TruncatedVideoWarning, match=f"{decoded} of {declared}"):
        assert len(list(iter_frames(truncated))) == decoded


def test_a_complete_video_does_not_warn(tmp_path):
    path = write_tiny_video(tmp_path / "ok.avi", frames=30)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert probe_video(path).frames == 30
        assert len(list(iter_frames(path))) == 30
        assert len(list(iter_frames(path, end=10))) == 10  # a range ending early is not a truncation


def test_collect_video_warnings_gathers_instead_of_printing(truncated):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with collect_video_warnings() as notes:
            probe_video(truncated)
            list(iter_frames(truncated))
    assert len(notes) == 1 and str(truncated) in notes[0]  # the same message twice is kept once


def test_extract_trajectories_prints_one_warning_line_for_a_truncated_video(tmp_path, capsys):
    from idtfv.idt.cli import main

    full = write_tiny_video(tmp_path / "long.avi", frames=160)
    cut = _cut(full, tmp_path / "long_cut.avi", 0.5)
    decoded, declared = opencv_frame_counts(cut)
    assert 16 < decoded < 0.9 * declared
    assert main([str(cut), "-o", str(tmp_path / "t.npz"), "-q"]) == 0
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.startswith("warning:")]
    assert len(lines) == 1 and f"{decoded} of {declared}" in lines[0] and str(cut) in lines[0]
    assert "Warning" not in err.replace(lines[0], "")  # no Python warning block


# ------------------------------------------------------------------------------------------------ item 3: runner
def _maybe_empty(entry, params):
    if entry.video_id.startswith("e"):
        raise EmptyResult("3 frames; at least L+1=16 needed", {"x": np.zeros((0, 2), np.float32)})
    return {"x": np.ones((2, 2), np.float32)}


class _E:
    def __init__(self, vid):
        self.video_id = vid


def _index(result):
    with open(result.dir / "index.csv", newline="") as f:
        return {row["video_id"]: row for row in csv.DictReader(f)}


@pytest.mark.parametrize("jobs", [1, 2])
def test_an_empty_result_gets_its_own_status_in_the_index_and_the_stamp(tmp_path, jobs):
    items = [_E("a"), _E("e1"), _E("b")]
    result = run_stage("t", _maybe_empty, items, params={}, cache_root=tmp_path, jobs=jobs)
    assert result.empty == {"e1": "3 frames; at least L+1=16 needed"}
    assert result.ok == ["a", "b"] and result.done == ["a", "b"] and not result.failed
    rows = _index(result)
    assert rows["e1"]["status"] == "empty" and "L+1=16" in rows["e1"]["error"]
    assert rows["a"]["status"] == "done"
    again = run_stage("t", _maybe_empty, items, params={}, cache_root=tmp_path)  # resume: still empty, not done
    assert again.empty == result.empty and again.ok == ["a", "b"] and again.skipped == ["a", "b"]
    assert _index(again)["e1"]["status"] == "empty"
    stamp = write_stamp(tmp_path / "s.json", again, stage="t", params={})
    assert stamp["done"] == ["a", "b"] and stamp["empty"] == result.empty
    assert read_stamp(tmp_path / "s.json")["empty"] == result.empty


def _warns(entry, params):
    from idtfv.video import probe_video

    probe_video(params["video"])
    return {"x": np.ones(1)}


def test_video_warnings_of_a_run_go_to_the_index_not_the_console(tmp_path, truncated, capsys):
    from idtfv.cli import report_failures

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        result = run_stage("w", _warns, [_E("a")], params={"video": str(truncated)}, cache_root=tmp_path)
    assert result.done == ["a"] and "a" in result.notes and str(truncated) in result.notes["a"]
    row = _index(result)["a"]
    assert row["status"] == "done" and str(truncated) in row["error"]
    capsys.readouterr()
    assert report_failures("w", result, allow_failed=False) == 0
    err = capsys.readouterr().err
    assert err.count("warning:") == 1 and "1 video" in err


# ------------------------------------------------------------------------------------------------ item 3: features
def test_the_features_stage_records_a_too_short_video_as_empty(tmp_path):
    from idtfv.idt.stage import features_item, features_params, run_features

    short = write_tiny_video(tmp_path / "short.avi", frames=3)

    class Entry:
        video_id = "short"
        path = str(short)

    params = features_params(preset="fast")
    with pytest.raises(EmptyResult, match=r"3 frames; at least L\+1=16 needed"):
        features_item(Entry(), params)
    result = run_features([Entry()], params, cache_root=tmp_path / "cache")
    assert list(result.empty) == ["short"] and result.ok == []
    assert _index(result)["short"]["status"] == "empty"


def test_extract_trajectories_refuses_a_video_without_trajectories(tmp_path, capsys):
    from idtfv.idt.cli import main

    short = write_tiny_video(tmp_path / "short.avi", frames=3)
    out = tmp_path / "short.npz"
    assert main([str(short), "-o", str(out), "-q"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error:") and str(short) in err[0] and "3 frames" in err[0]
    assert not out.exists()


# ------------------------------------------------------------------------------------------------ item 3: encode
def test_encode_leaves_out_videos_without_trajectories_and_says_so(tmp_path, caplog):
    import sys

    sys.path.insert(0, str(__import__("pathlib").Path(__file__).parent))
    from test_encode_pipeline import CHANNELS, make_video

    from idtfv.cli import main

    rng = np.random.default_rng(0)
    feat = tmp_path / "cache" / "features-x"
    feat.mkdir(parents=True)
    lines = ["video_id,path,label,label_name,group,split1,frames,fps,width,height"]
    for i in range(8):
        lines.append(f"v{i},videos/v{i}.avi,{i % 2},{'ab'[i % 2]},g{i},{'train' if i < 6 else 'test'},,,,")
        n = 0 if i in (2, 7) else 150
        arrays = make_video(rng, i % 2, n)
        np.savez(feat / f"v{i}.npz", **arrays)
    (tmp_path / "m.csv").write_text("\n".join(lines) + "\n")
    stamp = {"stage": "features", "dir": str(feat), "params": {}, "done": [f"v{i}" for i in range(8) if i != 2],
             "failed": {}, "empty": {"v2": "3 frames; at least L+1=16 needed"}}  # v7: an old stamp's empty file
    (tmp_path / "f.json").write_text(json.dumps(stamp))
    args = ["encode", "--manifest", str(tmp_path / "m.csv"), "--features", str(tmp_path / "f.json"), "--cache",
            str(tmp_path / "cache"), "--k", "2", "--pca-samples", "400", "--gmm-iter", "4"]
    with caplog.at_level("WARNING"):
        assert main([*args, "--out", str(tmp_path / "fv.npz")]) == 0
    with np.load(tmp_path / "fv.npz") as z:
        ids = list(z["video_ids"])
        assert ids == [f"v{i}" for i in range(8) if i not in (2, 7)]
        assert np.abs(z["features"]).sum(axis=1).min() > 0
    text = caplog.text
    assert "v2" in text and "L+1=16" in text and "v7" in text and "2 of 8 videos" in text
    assert CHANNELS  # the layout of make_video
    # --keep-empty: the same codebook and vectors, plus the empty videos as explicit zero vectors
    assert main([*args, "--out", str(tmp_path / "kept.npz"), "--keep-empty"]) == 0
    with np.load(tmp_path / "fv.npz") as a, np.load(tmp_path / "kept.npz") as b:
        assert list(b["video_ids"]) == [f"v{i}" for i in range(8)]
        assert not b["features"][[2, 7]].any()
        np.testing.assert_array_equal(b["features"][[0, 1, 3, 4, 5, 6]], a["features"])


# ------------------------------------------------------------------------------------------------ item 3: training
def test_train_svm_leaves_out_all_zero_training_vectors(tmp_path):
    from idtfv.classify.evaluate import ResultWarning
    from idtfv.classify.stage import load_split
    from idtfv.data.manifest import read_manifest
    from idtfv.scores import Features

    lines = ["video_id,path,label,label_name,group,split1,frames,fps,width,height"]
    for i in range(8):
        lines.append(f"v{i},v{i}.avi,{i % 2},{'ab'[i % 2]},g{i},{'train' if i < 6 else 'test'},,,,")
    (tmp_path / "m.csv").write_text("\n".join(lines) + "\n")
    X = np.random.default_rng(0).normal(size=(8, 4)).astype(np.float32)
    X[1] = 0  # an empty training video kept as a zero vector (--keep-empty)
    X[7] = 0  # an empty test video: evaluated
    feats = Features(video_ids=[f"v{i}" for i in range(8)], features=X, labels=np.array([i % 2 for i in range(8)]))
    with pytest.warns(ResultWarning, match=r"1 training video.*v1"):
        data = load_split(read_manifest(tmp_path / "m.csv"), feats, 1)
    assert data.train_ids == ["v0", "v2", "v3", "v4", "v5"] and data.n_empty_train == 1
    assert data.test_ids == ["v6", "v7"]


# ------------------------------------------------------------------------------------------------ item 4: idtfv dataset
@pytest.mark.parametrize("jobs", [1, 2])
def test_idtfv_dataset_summarises_truncated_videos_in_one_warning_line(tmp_path, capsys, jobs):
    from idtfv.cli import main

    root = tmp_path / "videos"
    for cls in ("run", "walk"):
        for g in range(2):
            write_tiny_video(root / cls / f"{cls}_g{g:02d}_c01.avi", frames=20)
    for cls in ("run", "walk"):  # two truncated videos: one summary line, not one line each
        full = write_tiny_video(tmp_path / f"{cls}.avi", frames=60)
        _cut(full, root / cls / f"{cls}_g09_c01.avi", 0.3)
    decoded, declared = opencv_frame_counts(root / "run" / "run_g09_c01.avi")
    assert main(["dataset", "--kind", "folder", "--root", str(root), "--jobs", str(jobs),
                 "--out", str(tmp_path / "m.csv")]) == 0
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("warning:"), err
    assert "2 videos" in lines[0] and "run_g09_c01.avi" in lines[0] and f"{decoded} of {declared}" in lines[0]
