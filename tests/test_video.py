"""Tests of idtfv.video: frame values against a direct cv2 decode, honest counts, ranges, resizing, bad input."""

from __future__ import annotations

import os
import subprocess
import sys

import cv2
import numpy as np
import pytest
from conftest import SHARED, requires_shared, tiny_frames

from idtfv.errors import IdtfvError, VideoError
from idtfv.video import VideoInfo, iter_frames, open_video, probe_video, require_frames


def _cv2_frames(path):
    """Independent reference: every BGR frame as plain cv2.VideoCapture decodes it."""
    cap = cv2.VideoCapture(str(path))
    out = []
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        out.append(frame)
    cap.release()
    return out


def test_colour_frames_are_rgb_of_the_cv2_decode(tiny_video):
    path = tiny_video(frames=10)
    ref = _cv2_frames(path)
    frames = list(iter_frames(path))
    assert len(frames) == len(ref) == 10
    for got, bgr in zip(frames, ref):
        assert got.dtype == np.uint8 and got.shape == (48, 64, 3) and got.flags.c_contiguous
        np.testing.assert_array_equal(got, bgr[:, :, ::-1])
    # and close to what was encoded (MJPG is lossy): the colour order is right, not swapped
    planted = tiny_frames(frames=10)
    err_rgb = np.abs(np.asarray(frames, np.float32) - planted).mean()
    err_bgr = np.abs(np.asarray(frames, np.float32)[..., ::-1] - planted).mean()
    assert err_rgb < 6 and err_bgr > 3 * err_rgb


def test_gray_matches_cvtcolor(tiny_video):
    path = tiny_video(frames=5)
    ref = [cv2.cvtColor(f, cv2.COLOR_BGR2GRAY) for f in _cv2_frames(path)]
    frames = list(iter_frames(path, gray=True))
    assert len(frames) == 5
    for got, want in zip(frames, ref):
        assert got.shape == (48, 64) and got.dtype == np.uint8
        np.testing.assert_array_equal(got, want)


def test_max_width_keeps_aspect_and_uses_inter_area(tiny_video):
    path = tiny_video(frames=3, width=64, height=48)
    ref = [cv2.resize(cv2.cvtColor(f, cv2.COLOR_BGR2GRAY), (40, 30), interpolation=cv2.INTER_AREA)
           for f in _cv2_frames(path)]
    with open_video(path, gray=True, max_width=40) as reader:
        assert (reader.width, reader.height) == (40, 30)
        assert (reader.info.width, reader.info.height) == (64, 48)
        frames = list(reader)
    for got, want in zip(frames, ref):
        np.testing.assert_array_equal(got, want)
    # narrower than max_width: untouched; odd result sizes allowed
    assert next(iter_frames(path, max_width=100)).shape == (48, 64, 3)
    assert next(iter_frames(path, max_width=33)).shape == (25, 33, 3)  # round(48 * 33 / 64) = 24.75 -> 25


@pytest.mark.parametrize("start,end,expected", [(0, None, range(12)), (3, 7, range(3, 7)), (10, 50, range(10, 12)),
                                                (11, None, range(11, 12)), (0, 1, range(0, 1))])
def test_start_end_select_frames(tiny_video, start, end, expected):
    path = tiny_video(frames=12)
    ref = _cv2_frames(path)
    frames = list(iter_frames(path, start=start, end=end))
    assert len(frames) == len(expected)
    for got, i in zip(frames, expected):
        np.testing.assert_array_equal(got, ref[i][:, :, ::-1])


def test_reader_is_lazy_and_closes(tiny_video):
    path = tiny_video(frames=12)
    with open_video(path) as reader:
        it = iter(reader)
        next(it)
        next(it)
        assert reader.frames_read == 2
        assert reader.fps == pytest.approx(25.0)
    assert list(it) == []  # closed: nothing more comes
    reader = open_video(path)
    list(reader)
    with pytest.raises(VideoError, match="already iterated"):
        iter(reader)
    reader.close()


def test_probe_counts_decodable_frames(tiny_video):
    path = tiny_video(frames=9, fps=12.5)
    info = probe_video(path)
    assert info == VideoInfo(str(path), 9, 12.5, 64, 48, "opencv")
    assert probe_video(path, count_frames=False).width == 64


def test_pyav_backend_gives_the_same_frames(tiny_video):
    pytest.importorskip("av")
    path = tiny_video(frames=6)
    a = list(iter_frames(path))
    b = list(iter_frames(path, backend="pyav"))
    assert len(b) == 6
    for x, y in zip(a, b):  # same FFmpeg MJPEG decoder underneath; allow a tiny colour-conversion difference
        assert np.abs(x.astype(int) - y.astype(int)).max() <= 2
    info = probe_video(path, backend="pyav")
    assert (info.frames, info.backend, info.width, info.height) == (6, "pyav", 64, 48)
    assert info.fps == pytest.approx(25.0)


_NEW_THREADS = """
import os, sys
import cv2, numpy
import idtfv.video as video
try:
    import av  # (imported by the pyav backend: its import's threads, if any, are not the decoder's)
except ImportError:
    pass
before = len(os.listdir("/proc/self/task"))
how, path = sys.argv[1:]
if how == "cv2":  # FFmpeg's own default: frame threads
    cap = cv2.VideoCapture(path, cv2.CAP_FFMPEG)
    frames = [cap.read()[1] for _ in range(5)]
else:
    with video.open_video(path, backend=how) as reader:
        frames = [f for f, _ in zip(reader, range(5))]
print(len(os.listdir("/proc/self/task")) - before)
"""


def _threads_started(how: str, path) -> int:
    """OS threads a fresh process has more after decoding 5 frames of ``path`` (``how``: ``cv2`` or one of our
    backends) than after its imports."""
    env = dict(os.environ, OPENBLAS_NUM_THREADS="1")
    done = subprocess.run([sys.executable, "-c", _NEW_THREADS, how, str(path)], capture_output=True, text=True,
                          env=env, timeout=120)
    assert done.returncode == 0, done.stderr
    return int(done.stdout.strip())


@pytest.mark.skipif(not os.path.isdir("/proc/self/task"), reason="counts threads in /proc (Linux)")
def test_decoding_starts_no_threads(tmp_path):
    """FFmpeg decodes MPEG-4 on a thread per core by default; the reader keeps it to the caller's thread (the
    runners' one thread per worker, the extractor's own front thread), with the same frames."""
    path = tmp_path / "mpeg4.avi"
    rng = np.random.default_rng(0)
    writer = cv2.VideoWriter(str(path), cv2.CAP_FFMPEG, cv2.VideoWriter_fourcc(*"mp4v"), 25.0, (64, 48))
    for _ in range(12):
        writer.write(rng.integers(0, 256, (48, 64, 3), dtype=np.uint8))
    writer.release()
    if _threads_started("cv2", path) == 0:
        pytest.skip("FFmpeg starts no decoder threads on this machine (one core?): nothing to keep it from")
    assert _threads_started("opencv", path) == 0
    np.testing.assert_array_equal(np.stack(list(iter_frames(path))), np.stack(_cv2_frames(path))[..., ::-1])
    try:
        import av  # noqa: F401
    except ImportError:
        return
    assert _threads_started("pyav", path) == 0
    assert len(list(iter_frames(path, backend="pyav"))) == 12


def test_truncated_stream_yields_what_decodes(tiny_video, tmp_path):
    path = tiny_video(frames=20)
    data = path.read_bytes()
    cut = tmp_path / "cut.avi"
    cut.write_bytes(data[: int(len(data) * 0.6)])
    n = probe_video(cut).frames
    assert 1 <= n < 20
    frames = list(iter_frames(cut))
    assert len(frames) == n
    ref = _cv2_frames(path)
    np.testing.assert_array_equal(frames[0], ref[0][:, :, ::-1])


def _expect_error(path, match, **kw):
    with pytest.raises(VideoError, match=match) as exc:
        probe_video(path, **kw) if not kw else list(iter_frames(path, **kw))
    message = str(exc.value)
    assert "\n" not in message and str(path) in message
    assert isinstance(exc.value, IdtfvError)
    return message


def test_bad_inputs_raise_one_line_video_errors(tmp_path, tiny_video):
    _expect_error(tmp_path / "missing.avi", "no such file")
    _expect_error(tmp_path, "is a directory")
    (tmp_path / "notes.avi").write_text("this is not a video\n" * 50)
    _expect_error(tmp_path / "notes.avi", "not a readable video")
    (tmp_path / "empty.avi").write_bytes(b"")
    _expect_error(tmp_path / "empty.avi", "empty")
    good = tiny_video(frames=12)
    head = tmp_path / "head_only.avi"
    head.write_bytes(good.read_bytes()[:300])  # the AVI header and no frame data
    _expect_error(head, "decodable|not a readable video")
    _expect_error(tmp_path / "100%d.avi", "no such file")  # not taken for an image-sequence pattern


def test_bad_ranges_and_options(tiny_video):
    path = tiny_video(frames=12)
    _expect_error(path, "start=12 is beyond", start=12)
    _expect_error(path, "end=3 must be greater than start=5", start=5, end=3)
    _expect_error(path, "start must be an integer", start=-1)
    _expect_error(path, "max_width", max_width=0)
    _expect_error(path, "unknown backend", backend="gstreamer")


def test_huge_frames_are_refused_with_a_hint(tiny_video):
    path = tiny_video(frames=3)
    msg = _expect_error(path, "exceed the limit", max_pixels=1000)
    assert "max_width" in msg
    frames = list(iter_frames(path, max_pixels=1000, max_width=32))  # shrunk to 32x24 = 768 pixels: accepted
    assert frames[0].shape == (24, 32, 3)


def test_one_frame_video_and_require_frames(tiny_video):
    path = tiny_video("one.avi", frames=1)
    info = probe_video(path)
    assert info.frames == 1
    with pytest.raises(VideoError, match=r"only 1 decodable frame; need at least 2") as exc:
        require_frames(info, 2)
    assert str(path) in str(exc.value)
    assert require_frames(5, 2, "x.avi") == 5
    with pytest.raises(VideoError, match="x.avi: only 0 decodable frames; need at least 16"):
        require_frames(0, 16, "x.avi")


class _NeverEnding:
    """A source that opens, decodes one frame, then fails every read forever."""

    name = "opencv"
    fps, header_frames, width, height = 25.0, 10**9, 8, 8

    def __init__(self):
        self.reads = 0

    def skip(self):
        self.reads += 1
        return False

    def read(self):
        self.reads += 1
        return np.zeros((8, 8, 3), np.uint8) if self.reads == 1 else None

    def close(self):
        pass


def test_failing_reader_cannot_hang(tiny_video, monkeypatch):
    import idtfv.video as video

    path = tiny_video(frames=2)
    source = _NeverEnding()
    monkeypatch.setitem(video._SOURCES, "opencv", lambda p: source)
    frames = list(iter_frames(path, backend="opencv"))
    assert len(frames) == 1
    assert source.reads <= 1 + video.MAX_CONSECUTIVE_FAILED_READS
    source2 = _NeverEnding()
    monkeypatch.setitem(video._SOURCES, "opencv", lambda p: source2)
    assert probe_video(path, backend="opencv").frames == 1
    assert source2.reads <= 1 + video.MAX_CONSECUTIVE_FAILED_READS


@requires_shared
@pytest.mark.parametrize("name,frames,size", [("tree.avi", 68, (320, 240)),
                                              ("carphone_pristine.mp4", 120, (176, 144)),
                                              ("person01_boxing_d1_uncomp.avi", 360, (160, 120))])
def test_reference_clips_probe(name, frames, size):
    info = probe_video(SHARED / "reference" / "videos" / name)
    assert info.frames == frames and (info.width, info.height) == size


@requires_shared
def test_reference_clip_matches_cv2_and_is_lazy():
    path = SHARED / "reference" / "videos" / "carphone_pristine.mp4"
    ref = _cv2_frames(path)[50:53]
    got = list(iter_frames(path, gray=True, start=50, end=53))
    for g, r in zip(got, ref):
        np.testing.assert_array_equal(g, cv2.cvtColor(r, cv2.COLOR_BGR2GRAY))
    assert os.path.getsize(path) > 0


def test_auto_falls_back_to_pyav_when_opencv_cannot_open(tiny_video, monkeypatch):
    pytest.importorskip("av")
    import idtfv.video as video

    def refuse(path):
        raise video._CannotOpen("OpenCV cannot open it")

    path = tiny_video(frames=5)
    monkeypatch.setitem(video._SOURCES, "opencv", refuse)
    info = probe_video(path)
    assert (info.backend, info.frames) == ("pyav", 5)
    with open_video(path, gray=True, start=2) as reader:
        assert reader.info.backend == "pyav" and len(list(reader)) == 3
    with pytest.raises(VideoError, match="cannot open"):
        probe_video(path, backend="opencv")


def test_open_video_count_frames_is_honest_on_a_truncated_file(tiny_video, tmp_path):
    path = tiny_video(frames=20)
    cut = tmp_path / "cut.avi"
    cut.write_bytes(path.read_bytes()[: int(path.stat().st_size * 0.6)])
    with open_video(cut, count_frames=True) as reader:
        n = reader.info.frames
        assert len(list(reader)) == n == probe_video(cut).frames
    with open_video(path) as reader:  # without counting: the container's claim
        assert reader.info.frames == 20
