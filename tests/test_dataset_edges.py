"""Edges of a dataset run that a user with their own folder tree or CSV meets: class names and paths as people
write them (commas, quotes, spaces), videos where the tree puts them, and the commands' promises around them
(one ``error:`` line and status 2 for bad input, nothing silently dropped or reused)."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from conftest import fake_venv

from idtfv.scores import read_scores, write_features, write_scores

REPO = Path(__file__).resolve().parents[1]


# ----------------------------------------------------------------------------------------------- class names in CSV
def test_class_names_with_commas_and_quotes_round_trip_through_a_score_file(tmp_path):
    names = ["run, fast", 'say "hi"', "Play Guitar", "café"]
    rng = np.random.default_rng(0)
    scores = rng.standard_normal((3, 4))
    path = write_scores(tmp_path / "s.csv", ["a", "b", "c"], scores, names, [0, 3, -1])
    got = read_scores(path)
    assert got.class_names == names
    np.testing.assert_array_equal(got.scores, scores)
    assert got.label_sets == [(0,), (3,), ()]
    # the header is CSV: a name with a comma or a quote is quoted, the others are written as they are
    assert path.read_text(encoding="utf-8").splitlines()[0] == \
        'video_id,label,"run, fast","say ""hi""",Play Guitar,café'


def test_a_class_may_be_named_like_a_header_column(tmp_path):
    # the header's first two columns are fixed; class names are the columns after them, whatever they are called
    path = write_scores(tmp_path / "s.csv", ["a", "b"], np.eye(2), ["label", "video_id"], [0, 1])
    got = read_scores(path)
    assert got.class_names == ["label", "video_id"] and got.label_sets == [(0,), (1,)]


def test_plain_class_names_keep_the_documented_header_bytes(tmp_path):
    path = write_scores(tmp_path / "s.csv", ["a"], np.ones((1, 2)), ["walk", "run_fast"], [1])
    assert path.read_text().splitlines()[0] == "video_id,label,walk,run_fast"


def _comma_dataset(tmp_path):
    """A manifest whose class 0 is named 'run, fast' (as a folder tree may name it) and its feature file."""
    rng = np.random.default_rng(1)
    lines = ["video_id,path,label,label_name,group,split1,frames,fps,width,height"]
    ids, feats, labels = [], [], []
    for i in range(8):
        label = i % 2
        name = '"run, fast"' if label == 0 else "walk"
        lines.append(f"v{i},v{i}.avi,{label},{name},g{i // 2},{'train' if i < 6 else 'test'},,,,")
        ids.append(f"v{i}")
        feats.append(rng.normal(size=6) + (3.0 if label else -3.0))
        labels.append(label)
    (tmp_path / "manifest.csv").write_text("\n".join(lines) + "\n")
    write_features(tmp_path / "fv.npz", ids, np.array(feats, np.float32), np.array(labels))
    return tmp_path


def test_train_svm_evaluate_and_fuse_accept_a_class_named_with_a_comma(tmp_path, capsys):
    from idtfv.cli import main

    ds = _comma_dataset(tmp_path)
    manifest = str(ds / "manifest.csv")
    assert main(["train-svm", "--manifest", manifest, "--features", str(ds / "fv.npz"), "--out",
                 str(ds / "svm")]) == 0
    scores = read_scores(ds / "svm" / "scores.csv")
    assert scores.class_names == ["run, fast", "walk"]
    assert scores.video_ids == ["v6", "v7"]
    assert main(["evaluate", "--manifest", manifest, "--split", "1", str(ds / "svm" / "scores.csv"),
                 "--out", str(ds / "eval")]) == 0
    assert main(["fuse", str(ds / "svm" / "scores.csv"), str(ds / "svm" / "scores.csv"), "--out",
                 str(ds / "fused.csv")]) == 0
    assert read_scores(ds / "fused.csv").class_names == ["run, fast", "walk"]
    assert "Traceback" not in capsys.readouterr().err


# ----------------------------------------------------------------------------------------------- Makefile and paths
FAKE_IDTFV = """#!/usr/bin/env bash
set -eu
printf '%s\\n' "$@" > "$IDTFV_ARGS.$1"
exit 0
"""


def _fake_venv(tmp_path):
    return fake_venv(tmp_path, FAKE_IDTFV)


def _make(tmp_path, *variables):
    env = {**os.environ, "IDTFV_ARGS": str(tmp_path / "args.txt")}
    env.pop("MAKEFLAGS", None)
    return subprocess.run(["make", "--no-print-directory", "-C", str(REPO), f"VENV={_fake_venv(tmp_path)}",
                           *variables], capture_output=True, text=True, env=env, timeout=60)


@pytest.mark.skipif(shutil.which("make") is None, reason="needs GNU make")
def test_make_passes_a_root_and_split_file_with_spaces_and_quotes_as_one_argument_each(tmp_path):
    root = tmp_path / "My Videos"
    split = tmp_path / "it's split.txt"
    proc = _make(tmp_path, "features", "DATASET=folder", f"ROOT={root}", f"SPLIT_FILE={split}",
                 f"CACHE={tmp_path / 'cache'}")
    assert proc.returncode == 0, proc.stderr
    args = (tmp_path / "args.txt.dataset").read_text().splitlines()  # one line per argument the command got
    assert args[:3] == ["dataset", "--kind", "folder"]
    assert args[args.index("--root") + 1] == str(root)
    assert args[args.index("--split-file") + 1] == str(split)


@pytest.mark.skipif(shutil.which("make") is None, reason="needs GNU make")
def test_make_refuses_a_cache_path_with_spaces_in_one_line(tmp_path):
    proc = _make(tmp_path, "features", f"CACHE={tmp_path / 'my cache'}")
    assert proc.returncode != 0
    assert "make cannot use a cache directory whose path has spaces" in proc.stderr
    assert not list(tmp_path.glob("args.txt*"))


# ----------------------------------------------------------------------------------------------- folder trees
def _touch(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"")  # the folder reader lists files by name; nothing opens them without probe=True
    return path


def test_a_split_file_saved_with_a_bom_and_crlf_lines_is_read(tmp_path):
    from idtfv.data import build_manifest

    for rel in ("walk/a_g01_.avi", "walk/b_g02_.avi", "run/c_g01_.avi", "run/d_g02_.avi"):
        _touch(tmp_path / "tree" / rel)
    split = tmp_path / "split.txt"  # as Windows Notepad saves it
    split.write_bytes("\ufeffwalk/a_g01_.avi train\r\nwalk/b_g02_.avi test\r\nrun/c_g01_.avi train\r\n"
                      "run/d_g02_.avi test\r\n".encode("utf-8"))
    m = build_manifest("folder", tmp_path / "tree", split_file=split)
    assert {e.video_id: e.split_of(1) for e in m} == {"a_g01_": "train", "b_g02_": "test", "c_g01_": "train",
                                                      "d_g02_": "test"}


@pytest.mark.skipif(not hasattr(os, "symlink"), reason="needs symbolic links")
def test_the_folder_reader_follows_a_symlinked_sub_folder_once_and_never_lists_a_video_twice(tmp_path):
    from idtfv.data import build_manifest

    tree, outside = tmp_path / "tree", tmp_path / "outside"
    for rel in ("walk/w1_g01_.avi", "walk/w2_g02_.avi", "run/r1_g01_.avi"):
        _touch(tree / rel)
    _touch(outside / "batch2" / "r2_g02_.avi")
    (tree / "run" / "batch2").symlink_to(outside / "batch2")  # more videos of 'run', kept elsewhere
    (outside / "batch2" / "loop").symlink_to(outside)  # a link loop outside the tree
    (tree / "run" / "also_walk").symlink_to(tree / "walk")  # a link back into the tree: 'walk' videos stay 'walk'
    (tree / "walk" / "up").symlink_to(tree)  # a link to the dataset root
    m = build_manifest("folder", tree)
    listed = {e.path.relative_to(tree).as_posix(): e.label_name for e in m}
    assert listed == {"walk/w1_g01_.avi": "walk", "walk/w2_g02_.avi": "walk", "run/r1_g01_.avi": "run",
                      "run/batch2/r2_g02_.avi": "run"}


@pytest.mark.skipif(not hasattr(os, "symlink"), reason="needs symbolic links")
def test_a_dangling_video_link_is_listed_and_fails_visibly_not_dropped(tmp_path, tiny_video, capsys):
    from idtfv.cli import main
    from idtfv.data import build_manifest

    tree = tmp_path / "tree"
    for i, rel in enumerate(("walk/w1_g01_.avi", "walk/w2_g02_.avi", "run/r1_g01_.avi", "run/r2_g02_.avi")):
        (tree / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(tiny_video(f"t{i}.avi", seed=i), tree / rel)
    (tree / "run" / "r3_g03_.avi").symlink_to(tmp_path / "external_disk" / "r3.avi")  # the disk is not mounted
    assert "run/r3_g03_.avi" in {e.path.relative_to(tree).as_posix() for e in build_manifest("folder", tree)}
    assert main(["dataset", "--kind", "folder", "--root", str(tree), "--out", str(tmp_path / "m.csv")]) == 0
    missing, probe = capsys.readouterr().err.splitlines()
    assert missing.startswith("warning: 1 of 5 videos listed by the folder ") and "run/r3_g03_.avi" in missing
    assert probe.startswith("warning: 1 video could not be probed (first: r3_g03_: ")
    assert "a symbolic link to a missing file" in probe and "external_disk" in probe


def _manifest_csv(path: Path, videos: list[Path]) -> Path:
    lines = ["video_id,path,label,label_name,group,split1,frames,fps,width,height"]
    lines += [f"v{i},{v},{i % 2},{'ab'[i % 2]},g{i},{'train' if i < 2 else 'test'},,,," for i, v in enumerate(videos)]
    path.write_text("\n".join(lines) + "\n")
    return path


def test_idtfv_dataset_on_a_csv_names_missing_videos_in_one_warning_and_refuses_a_csv_of_none(tmp_path, tiny_video,
                                                                                             capsys):
    from idtfv.cli import main

    videos = [tiny_video(f"v{i}.avi", seed=i) for i in range(3)] + [tmp_path / "typo.avi"]
    src = _manifest_csv(tmp_path / "mine.csv", videos)
    assert main(["dataset", "--kind", "csv", "--root", str(src), "--out", str(tmp_path / "out" / "m.csv")]) == 0
    err = capsys.readouterr().err.splitlines()
    assert err[0] == f"warning: 1 of 4 videos listed by the manifest {src} are missing (first: {tmp_path}/typo.avi)"
    assert err[1].startswith("warning: 1 video could not be probed") and len(err) == 2  # no per-video log lines

    gone = _manifest_csv(tmp_path / "gone.csv", [tmp_path / "moved" / f"v{i}.avi" for i in range(4)])
    assert main(["dataset", "--kind", "csv", "--root", str(gone), "--out", str(tmp_path / "out" / "g.csv")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"error: {tmp_path}: none of the 4 videos listed by the manifest ")
    assert "check the path column" in err
    assert not (tmp_path / "out" / "g.csv").exists()


def test_a_missing_video_s_message_fits_its_path(tmp_path, monkeypatch):
    from idtfv.errors import VideoError
    from idtfv.video import probe_video

    with pytest.raises(VideoError, match=r"no such file; check the path \(was the video moved or deleted\?\)"):
        probe_video(tmp_path / "gone.avi")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(VideoError, match=r"relative paths are taken from the current directory"):
        probe_video("gone.avi")


# ----------------------------------------------------------------------------------------------- training set
def test_train_svm_says_which_unlabelled_training_videos_it_left_out(tmp_path, capsys):
    from idtfv.cli import main

    ds = _comma_dataset(tmp_path)
    text = (ds / "manifest.csv").read_text().replace('v1,v1.avi,1,walk,', 'v1,v1.avi,,,')  # a training video
    (ds / "manifest.csv").write_text(text)
    assert main(["train-svm", "--manifest", str(ds / "manifest.csv"), "--features", str(ds / "fv.npz"), "--out",
                 str(ds / "svm")]) == 0
    out, err = capsys.readouterr()
    assert "warning: split 1: 1 training video without a label in the manifest ('v1') left out of training" in err
    assert "trained on 5 videos" in out  # 6 training rows, one unlabelled


def test_the_folder_reader_warns_of_empty_class_folders_and_videos_outside_a_class(tmp_path, caplog):
    from idtfv.data import build_manifest

    tree = tmp_path / "tree"
    for rel in ("walk/w1_g01_.avi", "walk/w2_g02_.avi", "run/r1_g01_.MP4", "run/notes.txt", "jump/.hidden.avi",
                "stray_g03_.avi", ".DS_Store"):
        _touch(tree / rel)
    (tree / "wave").mkdir()
    with caplog.at_level("WARNING", logger="idtfv.data"):
        m = build_manifest("folder", tree)
    assert m.class_names == ["run", "walk"] and len(m) == 3
    warned = [r.getMessage() for r in caplog.records]
    assert warned == [f"1 video directly in {tree}, outside a class folder, left out (first: stray_g03_.avi); "
                      "move them into <class>/ folders",
                      f"2 folders in {tree} without a video, not a class ('jump', 'wave'); labels number the 2 "
                      "others"]


def test_videos_differing_only_in_extension_or_folder_get_distinct_ids(tmp_path):
    from idtfv.data import build_manifest

    tree = tmp_path / "tree"
    for rel in ("walk/a_g01_.avi", "walk/a_g01_.mp4", "run/a_g01_.avi", "run/b_g02_.avi", "walk/c_g02_.avi"):
        _touch(tree / rel)
    ids = {e.path.relative_to(tree).as_posix(): e.video_id for e in build_manifest("folder", tree)}
    assert ids == {"walk/a_g01_.avi": "walk__a_g01_.avi", "walk/a_g01_.mp4": "walk__a_g01_.mp4",
                   "run/a_g01_.avi": "run__a_g01_", "run/b_g02_.avi": "b_g02_", "walk/c_g02_.avi": "c_g02_"}


def test_a_manifest_refuses_a_class_name_with_a_line_break_when_read(tmp_path, capsys):
    from idtfv.cli import main

    ds = _comma_dataset(tmp_path)
    text = (ds / "manifest.csv").read_text().replace('"run, fast"', '"run\nfast"')
    (ds / "manifest.csv").write_text(text)
    assert main(["train-svm", "--manifest", str(ds / "manifest.csv"), "--features", str(ds / "fv.npz"), "--out",
                 str(ds / "svm")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "label_name 'run\\nfast' has a line break" in err
    assert not (ds / "svm").exists()


def test_train_svm_refuses_a_split_whose_training_videos_are_all_of_one_class(tmp_path, capsys):
    from idtfv.cli import main

    ds = _comma_dataset(tmp_path)  # v0-v5 train, classes alternate; leave only class 0 ('run, fast') in training
    text = (ds / "manifest.csv").read_text()
    for i in (1, 3, 5):
        text = text.replace(f"v{i},v{i}.avi,1,walk,g{i // 2},train,", f"v{i},v{i}.avi,1,walk,g{i // 2},,")
    (ds / "manifest.csv").write_text(text)
    assert main(["train-svm", "--manifest", str(ds / "manifest.csv"), "--features", str(ds / "fv.npz"), "--out",
                 str(ds / "svm")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert "split 1: all 3 labelled training videos with features are of one class ('run, fast')" in err
    assert not (ds / "svm" / "scores.csv").exists()


def test_idtfv_dataset_names_a_file_given_as_a_folder_root_and_how_to_give_split_lists(tmp_path, capsys):
    from idtfv.cli import main

    video = _touch(tmp_path / "walk" / "a.avi")
    assert main(["dataset", "--kind", "folder", "--root", str(video), "--out", str(tmp_path / "m.csv")]) == 2
    err = capsys.readouterr().err
    assert err == f"error: {video}: is a file, not a directory; --kind folder reads the dataset's folder (a manifest " \
                  "CSV is read with --kind csv)\n"
    assert main(["dataset", "--kind", "ucf101", "--root", str(tmp_path), "--out", str(tmp_path / "m.csv")]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {tmp_path}: cannot find the UCF101 lists") and err.count("\n") == 1
    assert err.endswith("give the directory of the lists with --split-file DIR (make: SPLIT_FILE=DIR)\n")


def test_a_video_missing_from_a_ucf101_tree_is_named_where_its_class_folder_is(tmp_path, caplog):
    from idtfv.data import build_manifest

    lists = tmp_path / "ucfTrainTestlist"
    lists.mkdir()
    (lists / "classInd.txt").write_text("1 Walk\n2 Run\n")
    (lists / "trainlist01.txt").write_text("Walk/v_Walk_g01_c01.avi 1\nRun/v_Run_g01_c01.avi 2\n")
    (lists / "testlist01.txt").write_text("Walk/v_Walk_g02_c01.avi\nRun/v_Run_g02_c01.avi\n")
    for rel in ("Walk/v_Walk_g01_c01.avi", "Run/v_Run_g01_c01.avi", "Run/v_Run_g02_c01.avi"):
        _touch(tmp_path / "UCF-101" / rel)
    with caplog.at_level("WARNING", logger="idtfv.data"):
        m = build_manifest("ucf101", tmp_path)
    assert m.by_id["v_Walk_g02_c01"].path == tmp_path / "UCF-101" / "Walk" / "v_Walk_g02_c01.avi"
    assert f"(first: {tmp_path / 'UCF-101' / 'Walk' / 'v_Walk_g02_c01.avi'})" in caplog.text


def test_a_run_where_every_video_fails_alike_says_to_fix_the_cause_not_to_rerun(tmp_path, capsys):
    from idtfv.cli import EXIT_FAILED_VIDEOS, report_failures
    from idtfv.runner import StageResult

    def result(failed):
        return StageResult(tmp_path, [], [], failed, list(failed))

    same = result({"a": "ParameterError: bad option", "b": "ParameterError: bad option"})
    assert report_failures("features", same, allow_failed=False) == EXIT_FAILED_VIDEOS
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert last == "features: every video failed with the same error; fix its cause (above) before rerunning"
    for failed in ({"a": "VideoError: x", "b": "VideoError: y"}, {"a": "VideoError: x"}):  # different, or one video
        assert report_failures("features", result(failed), allow_failed=False) == EXIT_FAILED_VIDEOS
        assert capsys.readouterr().err.strip().splitlines()[-1].startswith("features: rerun to retry")
