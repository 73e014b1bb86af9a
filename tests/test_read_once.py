"""Issues 12 and 14: ``extract(path)`` decodes a video file once, with no frame-count pass before the decoding.

References:

* bytes: the counted path (``iter_trajectories(path, count_frames=True)``: the frames counted first and ``t_pos``
  set as the rows are made, the code every file's output came from before) and a generator-fed extraction filled in
  at the end (``extract(iter(frames))``);
* decodes: planted frame counts (files written here whose header count is right, too high (cut), too low (patched)
  or absent (a raw MJPEG stream)), counted independently with ``cv2.VideoCapture``, against the frames the
  decoders were asked for (a counting subclass of the OpenCV source);
* messages: those of the counted path, and the literal texts users have seen.
"""

from __future__ import annotations

import json
import struct
import warnings

import cv2
import numpy as np
import pytest

from conftest import opencv_frame_counts, tiny_frames, write_tiny_video
from idtfv import video
from idtfv.errors import VideoError
from idtfv.idt import IDTParams, extract, extract_to_file, iter_trajectories
from idtfv.idt.layout import BLOCK_NAMES
from idtfv.idt.trajectories import concatenate, load_trajectories
from idtfv.video import TruncatedVideoWarning, collect_video_warnings, iter_frames

P = IDTParams(matcher="orb")


# ---------------------------------------------------------------------------------------------------- the files
def _header_too_high(tmp_path):
    """An AVI cut to half its bytes: the header declares 80 frames, fewer decode."""
    full = write_tiny_video(tmp_path / "full.avi", frames=80)
    data = full.read_bytes()
    cut = tmp_path / "cut.avi"
    cut.write_bytes(data[: len(data) // 2])
    return cut


def _patched_header(tmp_path, name, frames):
    """A 40-frame AVI whose header (``avih.dwTotalFrames`` and ``strh.dwLength``) declares ``frames``."""
    data = bytearray(write_tiny_video(tmp_path / f"src_{name}", frames=40).read_bytes())
    avih, strh = data.find(b"avih"), data.find(b"strh")
    assert avih > 0 and strh > 0 and data[strh + 8: strh + 12] == b"vids"
    struct.pack_into("<I", data, avih + 8 + 16, frames)
    struct.pack_into("<I", data, strh + 8 + 32, frames)
    out = tmp_path / name
    out.write_bytes(bytes(data))
    return out


def _raw_mjpeg(tmp_path):
    """A raw MJPEG stream (JPEG images back to back): no header, no frame count."""
    out = tmp_path / "raw.mjpeg"
    with open(out, "wb") as f:
        for rgb in tiny_frames(frames=30):
            ok, jpg = cv2.imencode(".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 95])
            f.write(jpg.tobytes())
    return out


KINDS = ("right", "too_high", "too_low", "absent")


def _make(kind, tmp_path):
    if kind == "right":
        return write_tiny_video(tmp_path / "right.avi", frames=30)
    if kind == "too_high":
        return _header_too_high(tmp_path)
    if kind == "too_low":
        return _patched_header(tmp_path, "low.avi", 10)
    return _raw_mjpeg(tmp_path)


def _planted(kind, path):
    """(decodable frames, header count as idtfv.video reports it: -1 when absent), checked against the plan."""
    decoded, declared = opencv_frame_counts(path)
    header = declared if declared > 0 else -1
    expected = {"right": lambda: decoded == declared == 30, "too_high": lambda: 16 < decoded < 0.8 * declared,
                "too_low": lambda: (decoded, declared) == (40, 10), "absent": lambda: decoded == 30 and header == -1}
    assert expected[kind](), (kind, decoded, declared)
    return decoded, header


@pytest.fixture
def decodes(monkeypatch):
    """Counts of the OpenCV decoder's opens and of the frames it decoded (``grab`` or ``read``), for every reader."""
    counts = {"opens": 0, "frames": 0}
    base = video._SOURCES["opencv"]

    class Counting(base):
        def __init__(self, path):
            super().__init__(path)
            counts["opens"] += 1

        def skip(self):
            ok = super().skip()
            counts["frames"] += bool(ok)
            return ok

        def read(self):
            frame = super().read()
            counts["frames"] += frame is not None
            return frame

    monkeypatch.setitem(video._SOURCES, "opencv", Counting)
    return counts


def _counted(path, params=P):
    """The counted path's trajectories: every batch of ``iter_trajectories(count_frames=True)``, the last one's
    ``info`` (the run's final metadata)."""
    parts = _quietly(lambda: list(iter_trajectories(path, params, count_frames=True)))
    return concatenate(parts, info=parts[-1].info)


def _quietly(fn, *args, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", TruncatedVideoWarning)
        return fn(*args, **kwargs)


def _assert_same(a, b, *, info=True):
    assert len(a) == len(b) and len(a) > 0
    for name in BLOCK_NAMES:
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name), err_msg=name)
    assert not np.isnan(a.meta).any()
    if info:
        assert json.dumps(a.info, sort_keys=True) == json.dumps(b.info, sort_keys=True)


# ------------------------------------------------------------------------------------------- idtfv.video
@pytest.mark.parametrize("kind", KINDS)
def test_a_reader_read_to_its_end_knows_the_decodable_count(kind, tmp_path, decodes):
    path = _make(kind, tmp_path)
    decoded, header = _planted(kind, path)
    with _quietly(video.open_video, path, start=3) as reader:
        assert reader.decodable_frames is None and reader.header_frames == header
        assert _quietly(lambda: sum(1 for _ in reader)) == decoded - 3
        assert reader.decodable_frames == decoded == _quietly(video.probe_video, path).frames
    with video.open_video(path, start=3, end=10) as reader:  # stopped at `end`: the rest is not read, not known
        assert sum(1 for _ in reader) == 7 and reader.decodable_frames is None


def test_start_beyond_the_end_carries_the_count_and_keeps_its_message(tmp_path, decodes):
    path = write_tiny_video(tmp_path / "v.avi", frames=12)
    with pytest.raises(video.StartBeyondEndError) as exc:
        video.open_video(path, start=15)
    assert isinstance(exc.value, VideoError) and (exc.value.start, exc.value.frames) == (15, 12)
    assert str(exc.value) == (f"{path}: start=15 is beyond the last decodable frame (the video has 12 decodable "
                              "frames); pass a smaller start")
    assert decodes == {"opens": 1, "frames": 12}


# ------------------------------------------------------------------------------------------------- one decode
@pytest.mark.parametrize("kind", KINDS)
def test_extract_decodes_the_file_once_and_writes_the_counted_paths_bytes(kind, tmp_path, decodes):
    path = _make(kind, tmp_path)
    decoded, header = _planted(kind, path)
    counted = _counted(path)
    assert decodes["opens"] == 2 and decodes["frames"] == 2 * decoded  # the count first, then the decoding

    decodes.update(opens=0, frames=0)
    once = _quietly(extract, path, P)
    assert decodes == {"opens": 1, "frames": decoded}
    _assert_same(once, counted)
    assert once.info["frames"] == decoded
    fed = extract(iter(list(_quietly(lambda: list(iter_frames(path))))), P)  # a generator: t_pos filled at the end
    _assert_same(once, fed, info=False)

    decodes.update(opens=0, frames=0)
    out = _quietly(extract_to_file, path, tmp_path / "once.npz", P)
    assert decodes == {"opens": 1, "frames": decoded} and out.n_rows == len(counted)
    counted.save(tmp_path / "counted.npz")
    assert (tmp_path / "once.npz").read_bytes() == (tmp_path / "counted.npz").read_bytes()


def test_lear_text_still_counts_first_and_keeps_its_bytes(tmp_path, decodes):
    path = _header_too_high(tmp_path)
    decoded, _ = opencv_frame_counts(path)
    counted = _counted(path)
    decodes.update(opens=0, frames=0)
    _quietly(extract_to_file, path, tmp_path / "t.txt", P)  # rows go out as they come: t_pos needs the count
    assert decodes == {"opens": 2, "frames": 2 * decoded}
    counted.save(tmp_path / "c.txt")
    assert (tmp_path / "t.txt").read_bytes() == (tmp_path / "c.txt").read_bytes()


def test_a_range_is_decoded_once_up_to_its_end(tmp_path, decodes):
    path = write_tiny_video(tmp_path / "r.avi", frames=40)
    p = IDTParams(matcher="orb", start=4, end=30)
    counted = _counted(path, p)
    decodes.update(opens=0, frames=0)
    once = extract(path, p)
    assert decodes == {"opens": 1, "frames": 30}  # frames 0-3 skipped (grabbed), 4-29 decoded; none after
    _assert_same(once, counted)
    assert once.info["frames"] == 26


def test_the_front_thread_decodes_once_with_the_same_bytes(tmp_path, decodes):
    path = _header_too_high(tmp_path)
    decoded, _ = opencv_frame_counts(path)
    one = _quietly(extract, path, P)
    decodes.update(opens=0, frames=0)
    two = _quietly(extract, path, IDTParams(matcher="orb", threads=2))
    assert decodes == {"opens": 1, "frames": decoded}
    _assert_same(two, one)


# ------------------------------------------------------------------------------------------------ the messages
@pytest.mark.parametrize("frames,start,end,problem", [
    (1, 0, None, "only 1 decodable frame; need at least 2"),
    (1, 5, None, "only 1 decodable frame; need at least 2"),
    (12, 12, None, "start=12 is beyond the last frame (12 frames)"),
    (12, 30, 40, "start=30 is beyond the last frame (12 frames)"),
    (12, 11, None, "only 1 frame in the range [11, 12); need at least 2"),
    (12, 11, 20, "only 1 frame in the range [11, 12); need at least 2"),
    (12, 3, 4, "only 1 frame in the range [3, 4); need at least 2"),
    (1, 0, 1, "only 1 decodable frame; need at least 2"),
])
def test_short_ranges_fail_with_the_messages_of_the_counted_path(frames, start, end, problem, tmp_path, decodes):
    path = write_tiny_video(tmp_path / "v.avi", frames=frames)
    p = IDTParams(matcher="orb", start=start, end=end)
    with pytest.raises(VideoError) as counted:
        list(iter_trajectories(path, p, count_frames=True))
    with pytest.raises(VideoError) as once:
        extract(path, p)
    assert str(once.value) == str(counted.value) == f"{path}: {problem}"
    with pytest.raises(VideoError) as streamed:
        list(iter_trajectories(path, p, count_frames=False))
    assert str(streamed.value) == str(counted.value)


@pytest.mark.parametrize("output", ["x.npz", "x.txt.gz", "-"])
@pytest.mark.parametrize("frames,args,problem", [
    (1, [], "only 1 decodable frame; need at least 2"),
    (12, ["--start", "20"], "start=20 is beyond the last frame (12 frames)"),
    (12, ["--start", "11"], "only 1 frame in the range [11, 12); need at least 2"),
])
def test_extract_trajectories_reports_them_in_one_line_and_leaves_no_file(frames, args, problem, output, tmp_path,
                                                                          capsys):
    from idtfv.idt.cli import main

    path = write_tiny_video(tmp_path / "in" / "v.avi", frames=frames)
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    target = "-" if output == "-" else str(out_dir / output)
    assert main([str(path), "-o", target, "-q", *args]) == 2
    captured = capsys.readouterr()
    err = captured.err.strip().splitlines()
    assert err == [f"error: {path}: {problem}"]
    assert captured.out == "" and list(out_dir.iterdir()) == []


def test_idtfv_features_records_a_one_frame_video_as_failed(tmp_path):
    from idtfv.idt.stage import features_params, run_features

    one = write_tiny_video(tmp_path / "one.avi", frames=1)

    class Entry:
        video_id = "one"
        path = str(one)

    result = run_features([Entry()], features_params(preset="fast"), cache_root=tmp_path / "cache")
    assert result.ok == [] and result.failed == {"one": f"{one}: only 1 decodable frame; need at least 2"}


# ------------------------------------------------------------------------------- truncation warnings, progress
@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("kind", ["too_high", "too_low"])
def test_a_wrong_header_count_warns_once_as_before(kind, threads, tmp_path):
    path = _make(kind, tmp_path)
    decoded, header = _planted(kind, path)
    if decoded < header:
        expected = [f"{path}: decoded {decoded} of {header} frames the header declares; the file may be truncated "
                    "or damaged (only the decodable frames are used)"]
    else:  # more frames than the header says is not a truncation
        expected = [f"{path}: decoded {decoded} frames, more than the {header} the header declares; the header is "
                    "wrong (joined files, a variable frame rate?): all decoded frames are used"]
    with pytest.warns(TruncatedVideoWarning) as counted:
        list(iter_trajectories(path, P, count_frames=True))
    assert [str(w.message) for w in counted if w.category is TruncatedVideoWarning] == expected
    with pytest.warns(TruncatedVideoWarning) as caught:
        extract(path, IDTParams(matcher="orb", threads=threads))
    assert [str(w.message) for w in caught if w.category is TruncatedVideoWarning] == expected
    with warnings.catch_warnings():  # a dataset run: gathered (from the decode thread too), not printed
        warnings.simplefilter("error")
        with collect_video_warnings() as notes:
            extract(path, IDTParams(matcher="orb", threads=threads))
    assert notes == expected


@pytest.mark.parametrize("kind", KINDS)
def test_progress_totals_are_the_headers_then_the_frames_decoded(kind, tmp_path):
    path = _make(kind, tmp_path)
    decoded, header = _planted(kind, path)
    calls = []
    _quietly(extract, path, P, on_frame=lambda i, n: calls.append((i, n)))
    estimate = header if header > 0 else None
    expected = [(i, estimate) for i in range(1, decoded + 1)]
    if estimate is not None and estimate != decoded:
        expected.append((decoded, decoded))  # the estimate was wrong: the last call says how many there were
    assert calls == expected


def test_the_stored_file_equals_a_counted_extraction_reloaded(tmp_path):
    """The npz written in one pass loads back to the counted path's trajectories (t_pos included)."""
    path = _header_too_high(tmp_path)
    counted = _counted(path)
    _quietly(extract_to_file, path, tmp_path / "o.npz", P, compact=False)
    loaded = load_trajectories(tmp_path / "o.npz")
    _assert_same(loaded, counted)
