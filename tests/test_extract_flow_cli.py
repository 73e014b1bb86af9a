"""extract-flow and `idtfv flow`: rawframes layout, npz format, warped flow, manifest runs, bad input."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from idtfv.idt.cli import flow_main as main
from idtfv.idt.rawframes import RawframesReader, load_flow_npz

SHIFT = (2.0, 1.0)  # camera pan per frame (px): frame k+1 = frame k moved by SHIFT


def make_video(path, n=6, h=96, w=128, seed=0):
    """An MJPG .avi of a smooth texture panning by SHIFT per frame; returns the frames (RGB)."""
    rng = np.random.default_rng(seed)
    big = cv2.GaussianBlur(rng.normal(size=(h + 40, w + 40)).astype(np.float32), (0, 0), 2.0)
    big = cv2.normalize(big, None, 0, 255, cv2.NORM_MINMAX)
    frames = []
    for k in range(n):
        m = np.float32([[1, 0, 20 - SHIFT[0] * k], [0, 1, 20 - SHIFT[1] * k]])
        g = cv2.warpAffine(big, m, (w, h), flags=cv2.INTER_CUBIC | cv2.WARP_INVERSE_MAP)
        frames.append(np.dstack([np.clip(g, 0, 255).astype(np.uint8)] * 3))
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10, (w, h))
    for f in frames:
        writer.write(f)
    writer.release()
    return frames


@pytest.fixture(scope="module")
def video(tmp_path_factory):
    path = tmp_path_factory.mktemp("vid") / "pan clip.avi"
    make_video(path)
    return path


def _median_flow(flow):
    return np.median(flow[:, 12:-12, 12:-12].reshape(-1, 2), axis=0)


def test_rawframes_layout_and_flow(video, tmp_path, capsys):
    rc = main([str(video), "-o", str(tmp_path), "--preset", "fast", "--backend", "cpu", "--quality", "100"])
    assert rc == 0
    (vid,) = [p for p in tmp_path.iterdir()]
    assert vid.name.startswith("pan_clip-")  # make_video_id: unsafe characters replaced, hash appended
    names = sorted(p.name for p in vid.iterdir())
    assert names == sorted([f"img_{i:05d}.jpg" for i in range(1, 7)] + [f"flow_{c}_{i:05d}.jpg" for c in "xy"
                                                                          for i in range(1, 6)])
    reader = RawframesReader(tmp_path, vid.name)
    rgb, flow = reader.frames(), reader.flow()
    assert rgb.shape == (6, 96, 128, 3) and flow.shape == (5, 96, 128, 2)
    np.testing.assert_allclose(_median_flow(flow), SHIFT, atol=0.2)
    assert "6 frames, 5 flows" in capsys.readouterr().out


def test_npz_format_and_resize(video, tmp_path):
    rc = main([str(video), "-o", str(tmp_path), "--format", "npz", "--video-id", "v", "--preset", "fast",
               "--backend", "cpu", "--resize-width", "64", "--bound", "10"])
    assert rc == 0
    flow, bound = load_flow_npz(tmp_path / "v.npz")
    assert flow.shape == (5, 48, 64, 2) and flow.dtype == np.float16 and bound == 10.0
    np.testing.assert_allclose(_median_flow(flow.astype(np.float32)), np.array(SHIFT) / 2, atol=0.2)


def test_other_methods(video, tmp_path):
    for method in ("dis", "farneback"):
        assert main([str(video), "-o", str(tmp_path), "--format", "npz", "--video-id", method,
                     "--method", method]) == 0
        flow, _ = load_flow_npz(tmp_path / f"{method}.npz")
        np.testing.assert_allclose(_median_flow(flow.astype(np.float32)), SHIFT, atol=0.3)


def test_warped_flow_removes_a_camera_pan(video, tmp_path):
    rc = main([str(video), "-o", str(tmp_path), "--format", "npz", "--video-id", "w", "--warped",
               "--preset", "fast", "--backend", "cpu"])
    assert rc == 0
    flow, _ = load_flow_npz(tmp_path / "w.npz")
    # the whole motion is the camera's: the homography absorbs it
    assert np.abs(_median_flow(flow.astype(np.float32))).max() < 0.3


def test_bad_input_is_one_line_and_exit_2(tmp_path, capsys):
    cases = [
        [str(tmp_path / "missing.avi"), "-o", str(tmp_path / "o")],
        [str(tmp_path / "fake.avi"), "-o", str(tmp_path / "o")],
    ]
    (tmp_path / "fake.avi").write_text("this is not a video")
    for argv in cases:
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert err.startswith("error: ") and err.count("\n") == 1 and argv[0] in err
    assert not (tmp_path / "o").exists() or not any((tmp_path / "o").iterdir())  # nothing half-written


def test_bad_options_exit_2(video, tmp_path, capsys):
    assert main([str(video), "-o", str(tmp_path), "--bound", "-1"]) == 2
    assert "--bound" in capsys.readouterr().err


def test_single_frame_video_is_an_error(tmp_path, capsys):
    path = tmp_path / "one.avi"
    make_video(path, n=1)
    assert main([str(path), "-o", str(tmp_path / "o")]) == 2
    assert "at least 2" in capsys.readouterr().err


def test_idtfv_flow_over_a_manifest(video, tmp_path, capsys):
    from idtfv.cli import main as idtfv

    (tmp_path / "clips").mkdir()
    make_video(tmp_path / "clips" / "a.avi", n=4, h=48, w=64)
    (tmp_path / "clips" / "b.avi").write_text("broken")
    manifest = tmp_path / "m.csv"
    manifest.write_text(
        "video_id,path,label,label_name,group,split1,frames,fps,width,height\n"
        "a,clips/a.avi,0,pan,,train,,,,\n"
        "b,clips/b.avi,0,pan,,test,,,,\n"
    )
    out = tmp_path / "rawframes"
    argv = ["flow", "--manifest", str(manifest), "--out", str(out), "--preset", "fast", "--backend", "cpu"]
    assert idtfv(argv) == 1  # one video failed
    captured = capsys.readouterr()
    assert "b:" in captured.err and "1 failed" in captured.out
    flow = RawframesReader(out, "a").flow()
    assert flow.shape == (3, 48, 64, 2)
    assert idtfv(argv + ["--allow-failed"]) == 0
    assert "1 already done" in capsys.readouterr().out


# ------------------------------------------------------------------------------ options generated from FlowOptions
def test_flow_options_are_extract_videos_keyword_arguments_with_its_defaults():
    import inspect

    from idtfv.idt.flow_options import FlowOptions
    from idtfv.idt.stage import extract_video

    keywords = {name: p.default for name, p in inspect.signature(extract_video).parameters.items()
                if p.kind is p.KEYWORD_ONLY and name not in ("video_id", "on_frame")}  # per call, not options
    assert FlowOptions().to_dict() == keywords


def test_the_parsed_options_are_the_stage_parameters_of_before(tmp_path):
    from idtfv.idt.cli import _options, build_flow_parser

    parser = build_flow_parser()
    # the dict the flow stage was keyed by before the options came from FlowOptions (same cache directory)
    assert _options(parser.parse_args(["v.avi", "-o", "d"])) == {
        "method": "tvl1", "preset": "default", "bound": 20.0, "resize_width": None, "warped": False, "fmt": "jpg",
        "backend": "auto", "quality": 95, "seed": 0}
    typed = _options(parser.parse_args(["v.avi", "-o", "d", "--method", "dis", "--preset", "fast", "--bound", "8",
                                        "--resize-width", "64", "--warped", "--format", "npz", "--backend", "cpu",
                                        "--quality", "80", "--seed", "3"]))
    assert typed == {"method": "dis", "preset": "fast", "bound": 8.0, "resize_width": 64, "warped": True,
                     "fmt": "npz", "backend": "cpu", "quality": 80, "seed": 3}


@pytest.mark.parametrize("args, flag", [(["--quality", "0"], "--quality"), (["--seed", "-1"], "--seed"),
                                        (["--bound", "nan"], "--bound"), (["--resize-width", "0"], "--resize-width")])
def test_a_bad_flow_option_is_named_by_its_flag(video, tmp_path, capsys, args, flag):
    assert main([str(video), "-o", str(tmp_path / "o"), *args]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {flag}: expected ") and err.count("\n") == 1, err
    assert not (tmp_path / "o").exists()


def test_out_that_is_an_existing_file_is_one_line_before_the_work(tmp_path, capsys):
    from conftest import write_tiny_video

    video = write_tiny_video(tmp_path / "v.avi", frames=4)
    target = tmp_path / "exists.txt"
    target.write_text("keep me")
    assert main([str(video), "-o", str(target), "-q"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and "not a directory" in err[0]
    assert target.read_text() == "keep me"


def test_a_full_disk_writing_jpegs_stops_the_flow_run_with_one_line(tmp_path, monkeypatch, capsys):
    """cv2.imwrite reports a full disk as a bare False; the rawframes writer must raise ENOSPC so the run stops at the
    first video (a dataset run must not go on marking every later video failed) and say so in one line."""
    import errno
    import os

    import idtfv.idt.rawframes as rawframes
    from idtfv.cli import main as idtfv

    (tmp_path / "clips").mkdir()
    for name in ("a", "b", "c"):
        make_video(tmp_path / "clips" / f"{name}.avi", n=4, h=48, w=64)
    manifest = tmp_path / "m.csv"
    manifest.write_text("video_id,path,label,label_name,group,split1,frames,fps,width,height\n"
                        + "".join(f"{v},clips/{v}.avi,0,pan,,train,,,,\n" for v in "abc"))
    real_open = open
    jpegs = []

    def full_disk_open(path, mode="r", *args, **kwargs):
        if "w" in mode and str(path).endswith(".jpg"):
            jpegs.append(path)
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
        return real_open(path, mode, *args, **kwargs)

    monkeypatch.setattr(rawframes, "open", full_disk_open, raising=False)
    out = tmp_path / "rawframes"
    code = idtfv(["flow", "--manifest", str(manifest), "--out", str(out), "--preset", "fast", "--backend", "cpu"])
    err = capsys.readouterr().err
    assert code == 2 and "no space left on device" in err.lower(), err
    assert len([line for line in err.splitlines() if line.strip()]) == 1, err
    assert len(jpegs) == 1  # stopped at the first JPEG: b and c were never started


def test_a_full_disk_writing_a_flow_npz_stops_the_run_naming_the_file(tmp_path, monkeypatch, capsys):
    """The flow .npz is compressed into an unnamed scratch file as the flows come: a full disk there (an OSError
    without a file name) stops the run in one line naming the .npz, before the next video."""
    import errno
    import os

    from idtfv.cli import main as idtfv
    from idtfv.idt import npzstream

    (tmp_path / "clips").mkdir()
    for name in ("a", "b"):
        make_video(tmp_path / "clips" / f"{name}.avi", n=4, h=48, w=64)
    manifest = tmp_path / "m.csv"
    manifest.write_text("video_id,path,label,label_name,group,split1,frames,fps,width,height\n"
                        + "".join(f"{v},clips/{v}.avi,0,pan,,train,,,,\n" for v in "ab"))
    calls = []

    def full(self, piece):
        calls.append(len(piece))
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(npzstream.DeflateBody, "compress", full)
    out = tmp_path / "flows"
    code = idtfv(["flow", "--manifest", str(manifest), "--out", str(out), "--format", "npz", "--preset", "fast",
                  "--backend", "cpu"])
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2 and len(lines) == 1 and "no space left on device" in err.lower(), err
    assert str(out / "a.npz") in err and len(calls) == 1  # the output named (not the runner's record), b never started
    left = [p.name for p in out.iterdir() if p.name not in (".lock", ".cache")]  # the lock and the runner's cache
    assert left == [], left  # nothing partial (the scratch file has no name)
