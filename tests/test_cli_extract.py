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
    c = tmp_path / "c.npz"  # float16 descriptors are the default
    assert main([str(video), "-o", str(c), "-q", "--matcher", "orb"]) == 0
    tc = load_trajectories(c)
    np.testing.assert_array_equal(tc.meta, ta.meta)
    np.testing.assert_allclose(tc.hog, ta.hog, atol=1e-3)
    assert c.stat().st_size < a.stat().st_size


def test_options_reach_params(video, tmp_path):
    out = tmp_path / "o.npz"
    assert main([str(video), "-o", str(out), "-q", "--preset", "fast", "--track-length", "9", "--stride", "4",
                 "--scales", "2", "--no-camera-motion", "--seed", "4", "--end", "16", "--flow", "dis"]) == 0
    p = load_trajectories(out).info["params"]
    assert (p["flow"], p["track_length"], p["stride"], p["scales"], p["camera_motion"], p["seed"], p["end"],
            p["farneback_iterations"]) == ("dis", 9, 4, 2, False, 4, 16, 1)


def test_draw_writes_a_video(tiny_video, tmp_path):
    video = tiny_video("slow.avi", frames=20, fps=10.0)  # not the writer's old fixed 25 fps
    out = tmp_path / "tracks.avi"
    assert main([str(video), "-o", str(tmp_path / "o.npz"), "-q", "--draw", str(out)]) == 0
    cap = cv2.VideoCapture(str(out))
    n = int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
    fps = cap.get(cv2.CAP_PROP_FPS)
    ok, frame = cap.read()
    cap.release()
    source = cv2.VideoCapture(str(video))
    source_fps = source.get(cv2.CAP_PROP_FPS)
    source.release()
    assert ok and frame.shape == (48 * 8, 64 * 8, 3) and n >= 10  # enlarged to >= 480 px wide
    assert abs(fps - source_fps) < 1e-6


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


# ------------------------------------------------------------------------------ options generated from IDTParams
#: A valid value other than the preset's default for every IDTParams field, as typed on the command line (a pair:
#: the value over the default preset, over the fast one; None: the other state of a bool).
NON_DEFAULT = {
    "track_length": "18", "stride": "4", "scales": "3", "scale_factor": "1.5", "patch": "16", "nxy_cells": "4",
    "nt_cells": "5", "quality": "0.01", "min_var": "1.0", "max_var": "40", "max_dis": "10", "max_dis_ratio": "0.5",
    "min_camera_disp": "0.5", "init_gap": "2", "flow": "tvl1", "farneback_poly_n": ("5", "7"), "farneback_poly_sigma": "1.3",
    "farneback_winsize": "8", "farneback_iterations": "3", "farneback_impl": "opencv", "farneback_window": "box",
    "dis_preset": "2", "dis_finest_scale": "0", "dis_per_level": None, "median_ksize": "3", "camera_motion": None,
    "warp_flow": ("subtract", "recompute"), "matcher": "orb", "surf_hessian": "300", "orb_features": "500", "match_window": "20",
    "flow_matches": "200", "flow_match_min": "0.25", "ransac_threshold": "2", "min_inliers": "10",
    "min_matches": "30", "warp_margin": "2.5", "still_camera": "0.5", "resize_width": "160", "start": "2", "end": "10",
    "boxes": "boxes.txt", "detect_humans": None, "detect_every": "3", "humans_cache": "", "seed": "7",
    "device": "cuda", "threads": "2",
}


def _features_parser():
    from idtfv import cli

    parser = cli.build_parser(only="features")
    required = ["features", "--manifest", "m.csv", "--cache", "c", "--out", "f.json"]
    return parser, required


def _parsed_params(command, argv, preset="default"):
    from idtfv.idt import cli as idt_cli

    if command == "extract-trajectories":
        args = idt_cli.build_parser().parse_args(["v.avi", "--preset", preset, *argv])
        return idt_cli._idt_params(args, idt_cli.TRAJECTORY_FIELDS)
    parser, required = _features_parser()
    args = parser.parse_args([*required, "--preset", preset, *argv])
    return idt_cli._idt_params(args, idt_cli.FEATURES_FIELDS)


def _typed(name, value, default):
    flag = "--" + name.replace("_", "-")
    if value is None:  # a bool: the other state than the default
        return [flag if not default else "--no-" + flag[2:]]
    return [flag, value]


@pytest.mark.parametrize("preset", ["default", "fast"])
@pytest.mark.parametrize("command", ["extract-trajectories", "features"])
def test_every_idtparams_field_is_an_option_that_reaches_the_params(command, preset):
    import dataclasses

    from idtfv.idt.params import PRESETS, IDTParams

    names = [f.name for f in dataclasses.fields(IDTParams)]
    assert sorted(NON_DEFAULT) == sorted(names)  # a new field needs a value here (and an option())
    base = PRESETS[preset]()
    offered = set(names) - ({"start", "end", "boxes", "humans_cache", "threads"} if command == "features" else set())
    for name in names:
        default = getattr(base, name)
        typed = NON_DEFAULT[name]
        typed = typed[preset == "fast"] if isinstance(typed, tuple) else typed
        argv = _typed(name, typed, default)
        if name not in offered:
            with pytest.raises(SystemExit):
                _parsed_params(command, argv, preset)
            continue
        got = _parsed_params(command, argv, preset)
        if typed is None:
            value = not default
        elif name in ("boxes", "humans_cache"):
            value = typed
        else:
            value = type(default if default is not None else 0)(typed)
        want = base.replace(**{name: value})
        assert got == want and getattr(got, name) != default, name
    assert _parsed_params(command, [], preset) == base  # nothing typed: exactly the preset


def test_help_shows_the_presets_defaults_and_the_choices(capsys):
    from idtfv.idt.params import MATCHERS, IDTParams

    assert main(["--help"]) == 0
    out = " ".join(capsys.readouterr().out.split())
    fast = IDTParams.fast()
    assert f"(default: {IDTParams().track_length})" in out
    assert f"(default: {IDTParams().matcher}; --preset fast: {fast.matcher})" in out
    assert f"(default: {IDTParams().farneback_iterations}; --preset fast: {fast.farneback_iterations})" in out
    assert "{" + ",".join(MATCHERS) + "}" in out
    assert "--compact" not in out and "--full-precision" in out


def test_compact_is_gone(video, tmp_path, capsys):
    assert main([str(video), "-o", str(tmp_path / "x.npz"), "--compact"]) == 2
    assert "--compact" in _one_error_line(capsys)


@pytest.mark.parametrize("args, flag, detail", [
    (["--stride", "0"], "--stride", "expected an integer >= 1, got 0"),
    (["--track-length", "10"], "--track-length", "expected a multiple of nt_cells=3, got 10"),
    (["--nt-cells", "4"], "--track-length", "got 15, the default"),  # the typed option makes the default invalid
    (["--median-ksize", "4"], "--median-ksize", "expected one of 1, 3, 5, got 4"),
    (["--boxes", "b.txt", "--detect-humans"], "--detect-humans", "got on"),
    (["--resize-width", "8"], "--resize-width", "got 8"),
    (["--max-var", "nan"], "--max-var", "got nan"),
])
def test_a_bad_value_is_named_by_its_option(video, tmp_path, capsys, args, flag, detail):
    assert main([str(video), "-o", str(tmp_path / "x.npz"), *args]) == 2
    line = _one_error_line(capsys)
    assert line.startswith(f"error: {flag}: ") and detail in line, line
    assert not (tmp_path / "x.npz").exists()


def test_features_names_the_option_too(tmp_path, capsys):
    from idtfv import cli

    manifest = tmp_path / "m.csv"
    manifest.write_text("video_id,path,label,split1\n")  # never read: the options fail first
    status = cli.main(["features", "--manifest", str(manifest), "--cache", str(tmp_path / "c"),
                       "--out", str(tmp_path / "f.json"), "--preset", "fast", "--stride", "-1"])
    err = capsys.readouterr().err
    assert status == 2 and err.startswith("error: --stride: expected an integer >= 1, got -1") and err.count("\n") == 1


def test_output_that_is_a_directory_fails_before_the_work(video, tmp_path, capsys):
    target = tmp_path / "adir"
    target.mkdir()
    assert main([str(video), "-o", str(target), "-q"]) == 2
    line = _one_error_line(capsys)
    assert "is a directory" in line and str(target) in line and ".tmp" not in line
    assert list(target.iterdir()) == []


def test_a_video_without_trajectories_keeps_an_existing_output(tiny_video, tmp_path, capsys):
    short = tiny_video("short.avi", frames=3)
    out = tmp_path / "kept.npz"
    out.write_bytes(b"an earlier result")
    assert main([str(short), "-o", str(out), "-q"]) == 2
    assert "no trajectories" in _one_error_line(capsys)
    assert out.read_bytes() == b"an earlier result"
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []


def test_ctrl_c_is_one_line_and_status_130(video, monkeypatch, capsys):
    from idtfv.idt import extractor

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(extractor, "extract_to_file", interrupted)
    assert main([str(video), "-o", "x.npz", "-q"]) == 130
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["interrupted; no output written"]
