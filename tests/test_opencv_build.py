"""An OpenCV without the contrib modules (a plain ``opencv-python-headless`` 5 shadowing the contrib package, as on
the lent GPU machine): the camera's default keypoints (AKAZE) are absent, and every entry point says so in one line
before any work instead of an ``AttributeError`` traceback in the middle of a run."""

from __future__ import annotations

import types

import numpy as np
import pytest

from idtfv.errors import ParameterError
from idtfv.idt import IDTParams, extract
from idtfv.idt import camera


@pytest.fixture
def no_contrib(monkeypatch):
    """``cv2`` as a plain OpenCV 5 build has it: no ``AKAZE_create`` at the top, no contrib ``xfeatures2d``."""
    monkeypatch.setattr(camera, "_SURF_OK", None)  # probed again, against the build below
    monkeypatch.delattr(camera.cv2, "AKAZE_create", raising=False)
    monkeypatch.setattr(camera.cv2, "xfeatures2d", types.SimpleNamespace(), raising=False)


def _frames(n=6):
    rng = np.random.default_rng(0)
    texture = rng.integers(0, 256, (48, 96)).astype(np.uint8)
    return [np.ascontiguousarray(texture[:, t: t + 64]) for t in range(n)]


def test_the_real_build_has_akaze():
    """The check is not vacuous: this environment's OpenCV (the contrib package) gives a working AKAZE."""
    create = camera._akaze_create()
    assert create is not None and create() is not None
    assert camera.resolve_matcher("akaze") == "akaze"


def test_auto_and_akaze_are_refused_in_one_line(no_contrib):
    for matcher in ("auto", "akaze"):
        with pytest.raises(ParameterError) as info:
            camera.resolve_matcher(matcher)
        message = str(info.value)
        assert "\n" not in message and f"matcher={matcher!r}" in message
        assert "AKAZE" in message and "opencv-contrib-python-headless" in message and "'orb'" in message
    # the keypoints that the plain build has still work, and so does the extractor with them
    assert camera.resolve_matcher("orb") == "orb" and camera.resolve_matcher("flow") == "flow"
    tr = extract(_frames(), IDTParams(matcher="orb", track_length=3, nt_cells=1, scales=1))
    assert tr.info["frames"] == 6


def test_the_library_refuses_before_extracting(no_contrib):
    with pytest.raises(ParameterError, match="needs OpenCV's AKAZE keypoints"):
        extract(_frames(), IDTParams(track_length=3, nt_cells=1, scales=1))
    # without camera motion no keypoints are needed
    tr = extract(_frames(), IDTParams(camera_motion=False, track_length=3, nt_cells=1, scales=1))
    assert tr.info["frames"] == 6


def test_the_commands_exit_2_with_one_line(no_contrib, tiny_video, tmp_path, capsys):
    from idtfv.cli import main as idtfv_main
    from idtfv.idt.cli import main as extract_main

    video = tiny_video()
    out = tmp_path / "t.npz"
    assert extract_main([str(video), "-o", str(out), "-q"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: matcher='auto'") and not out.exists()

    argv = ["features", "--manifest", str(tmp_path / "m.csv"), "--cache", str(tmp_path / "c"),
            "--out", str(tmp_path / "f.json")]
    assert idtfv_main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "needs OpenCV's AKAZE keypoints" in err[0] and not (tmp_path / "c").exists()
