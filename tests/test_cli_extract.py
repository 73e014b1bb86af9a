"""``extract-trajectories``: outputs in both formats, --draw, and one-line errors with exit status 2."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from idtfv.idt.cli import main
from idtfv.idt.trajectories import load_trajectories


@pytest.fixture
def video(tiny_video):
    return tiny_video(frames=18, width=64, height=48)


def _one_error_line(capsys):
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: "), err
    return err[0]


def test_npz_and_lear_outputs_agree(video, tmp_path, capsys):
    a, b = tmp_path / "a.npz", tmp_path / "b.txt.gz"
    assert main([str(video), "-o", str(a), "-q", "--matcher", "orb", "--full-precision"]) == 0
    assert main([str(video), "-o", str(b), "--format", "lear", "-q", "--matcher", "orb"]) == 0
    ta, tb = load_trajectories(a), load_trajectories(b)
    assert len(ta) > 0 and ta.info["frames"] == 18
    np.testing.assert_array_equal(ta.to_lear(), tb.to_lear())
    c = tmp_path / "c.npz"
    assert main([str(video), "-o", str(c), "-q", "--matcher", "orb", "--compact"]) == 0
    tc = load_trajectories(c)
    np.testing.assert_array_equal(tc.meta, ta.meta)
    np.testing.assert_allclose(tc.hog, ta.hog, atol=1e-3)
    d = tmp_path / "d.npz"  # float16 descriptors are the default
    assert main([str(video), "-o", str(d), "-q", "--matcher", "orb"]) == 0
    assert d.read_bytes() == c.read_bytes()


def test_options_reach_params(video, tmp_path):
    out = tmp_path / "o.npz"
    assert main([str(video), "-o", str(out), "-q", "--preset", "fast", "--track-length", "9", "--stride", "4",
                 "--scales", "2", "--no-camera-motion", "--seed", "4", "--end", "16", "--flow", "dis"]) == 0
    p = load_trajectories(out).info["params"]
    assert (p["flow"], p["track_length"], p["stride"], p["scales"], p["camera_motion"], p["seed"], p["end"],
            p["farneback_iterations"]) == ("dis", 9, 4, 2, False, 4, 16, 1)


def test_draw_writes_a_video(video, tmp_path):
    out = tmp_path / "tracks.avi"
    assert main([str(video), "-o", str(tmp_path / "o.npz"), "-q", "--draw", str(out)]) == 0
    cap = cv2.VideoCapture(str(out))
    n = int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
    ok, frame = cap.read()
    cap.release()
    assert ok and frame.shape == (48, 64, 3) and n >= 10


def test_missing_file(tmp_path, capsys):
    assert main([str(tmp_path / "nope.avi")]) == 2
    assert "nope.avi" in _one_error_line(capsys)


def test_not_a_video(tmp_path, capsys):
    bad = tmp_path / "bad.avi"
    bad.write_bytes(b"this is not a video" * 10)
    assert main([str(bad), "-o", str(tmp_path / "x.npz")]) == 2
    assert "bad.avi" in _one_error_line(capsys)


def test_one_frame_video(tiny_video, tmp_path, capsys):
    one = tiny_video("one.avi", frames=1)
    assert main([str(one), "-o", str(tmp_path / "x.npz")]) == 2
    assert "frame" in _one_error_line(capsys)


@pytest.mark.parametrize("args", [["--stride", "0"], ["--flow", "lk"], ["--track-length", "x"],
                                  ["--boxes", "b.txt", "--detect-humans"]])
def test_bad_options(video, tmp_path, capsys, args):
    assert main([str(video), "-o", str(tmp_path / "x.npz"), *args]) == 2
    _one_error_line(capsys)


def test_bad_boxes_file(video, tmp_path, capsys):
    boxes = tmp_path / "b.txt"
    boxes.write_text("0 1 2 3\n")
    assert main([str(video), "-o", str(tmp_path / "x.npz"), "--boxes", str(boxes)]) == 2
    assert "b.txt" in _one_error_line(capsys)


def test_boxes_file_masks_homography(video, tmp_path):
    boxes = tmp_path / "b.txt"
    boxes.write_text("".join(f"{i} 0 0 63 47 1.0\n" for i in range(18)))  # the whole frame is a "human"
    out = tmp_path / "x.npz"
    assert main([str(video), "-o", str(out), "-q", "--boxes", str(boxes)]) == 0
    assert load_trajectories(out).info["homographies_accepted"] == 0
