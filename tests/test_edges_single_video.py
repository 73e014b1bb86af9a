"""The promises at the edges a user reaches with one video (``extract-trajectories``, ``extract-flow``, the Python
API): one ``error:`` line and exit 2 for bad input, nothing partial left behind on failure, Ctrl-C or SIGTERM, a
quiet exit when ``-o - | head`` closes the pipe, and no output written over a device, a FIFO or other results.

Each test here failed before the fix it guards, except the few named "still work" (the other side of a refusal).
"""

from __future__ import annotations

import errno
import os
import signal
import stat
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from idtfv.errors import IdtfvError


@pytest.fixture
def video(tiny_video):
    return tiny_video(frames=18, width=64, height=48)


def _one_error_line(err: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    return lines[0]


def _listing(directory: Path) -> list[str]:
    """Every name under ``directory`` (hidden temporaries included), sorted."""
    return sorted(str(p.relative_to(directory)) for p in directory.rglob("*"))


#: Prelude of a child script (``_python(..., prelude=)``): the rawframes writer sends its own process SIGTERM after
#: its third flow image.
SIGTERM_AT_THIRD_FLOW = """
import os, signal, sys
from idtfv.idt import rawframes

real = rawframes.RawframesWriter.add_flow
def add_flow(self, flow):
    real(self, flow)
    if self.n_flows == 3:
        os.kill(os.getpid(), signal.SIGTERM)
rawframes.RawframesWriter.add_flow = add_flow
"""


#: A child's first lines: the signal handlers of a process started from a terminal, whatever the suite inherited (a
#: suite started in the background, ``make test &`` or ``nohup``, ignores SIGINT / SIGHUP, and its children with it).
TERMINAL_SIGNALS = """
import signal as _signal
_signal.signal(_signal.SIGINT, _signal.default_int_handler)
_signal.signal(_signal.SIGHUP, _signal.SIG_DFL)
_signal.signal(_signal.SIGTERM, _signal.SIG_DFL)
"""


def _python(script: str, cwd: Path, *, prelude: str = "") -> subprocess.CompletedProcess:
    """Run ``prelude`` then ``script`` in a fresh interpreter (signals sent to itself must not reach pytest), with
    a terminal's signal handlers (:data:`TERMINAL_SIGNALS`)."""
    return subprocess.run([sys.executable, "-c", TERMINAL_SIGNALS + prelude + textwrap.dedent(script)], cwd=cwd,
                          capture_output=True, text=True, errors="surrogateescape",
                          timeout=300)  # file names that are not UTF-8 may be printed


@pytest.fixture
def terminal_signals():
    """This process's SIGINT / SIGHUP / SIGTERM handlers as a terminal's for the test (restored after): the suite
    may run in the background, where SIGINT and SIGHUP come ignored and the commands keep them so (``nohup``)."""
    wanted = {signal.SIGINT: signal.default_int_handler, signal.SIGHUP: signal.SIG_DFL,
              signal.SIGTERM: signal.SIG_DFL}
    before = {s: signal.signal(s, h) for s, h in wanted.items()}
    yield
    for s, h in before.items():
        signal.signal(s, h)


def _flow_in_child(video: Path, out: Path, cwd: Path, *, prelude: str) -> subprocess.CompletedProcess:
    """``extract-flow VIDEO -o OUT -q --method farneback`` in a fresh interpreter after ``prelude`` (which plants the
    signals)."""
    return _python(f"""
        from idtfv.idt.cli import flow_main
        sys.exit(flow_main([{str(video)!r}, "-o", {str(out)!r}, "-q", "--method", "farneback"]))
    """, cwd, prelude=prelude)


# ------------------------------------------------------------------------------ -o naming a device or a FIFO
def test_output_onto_a_device_is_refused_and_the_device_stays(video, tmp_path):
    """``-o`` through a symlink to ``/dev/null``: the rename at the end replaced the link (as root, ``-o /dev/null``
    replaced /dev/null itself with a regular file). Now one line before the work; link and device untouched."""
    if not Path("/dev/null").exists():
        pytest.skip("no /dev/null")
    link = tmp_path / "sink.npz"
    link.symlink_to("/dev/null")
    before = _listing(tmp_path)
    proc = _python(f"""
        import sys
        from idtfv.idt.cli import main
        sys.exit(main([{str(video)!r}, "-o", {str(link)!r}, "-q"]))
    """, tmp_path)
    assert proc.returncode == 2, proc.stderr
    line = _one_error_line(proc.stderr)
    assert str(link) in line and "not a regular file (a character device)" in line
    assert link.is_symlink() and os.readlink(link) == "/dev/null"
    assert stat.S_ISCHR(os.stat("/dev/null").st_mode)
    assert _listing(tmp_path) == before


def test_output_onto_a_fifo_is_refused_before_the_work(video, tmp_path, capsys):
    from idtfv.idt.cli import main

    fifo = tmp_path / "pipe.txt"
    os.mkfifo(fifo)
    assert main([str(video), "-o", str(fifo), "-q"]) == 2
    line = _one_error_line(capsys.readouterr().err)
    assert str(fifo) in line and "(a FIFO)" in line
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode)


def test_atomic_writes_refuse_to_replace_a_fifo(tmp_path):
    from idtfv.atomic import atomic_write_text
    from idtfv.cache import atomic_savez

    fifo = tmp_path / "f"
    os.mkfifo(fifo)
    with pytest.raises(IdtfvError, match=r"not a regular file \(a FIFO\)"):
        atomic_write_text(fifo, "text")
    with pytest.raises(IdtfvError, match=r"not a regular file \(a FIFO\)"):
        atomic_savez(fifo, {"x": np.zeros(3)})
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode) and _listing(tmp_path) == ["f"]
    atomic_write_text(tmp_path / "plain.txt", "a")  # a new file and a regular one are fine
    atomic_write_text(tmp_path / "plain.txt", "b")
    assert (tmp_path / "plain.txt").read_text() == "b"


# ------------------------------------------------------------------------------ contradictory output options
@pytest.mark.parametrize("args, words", [
    (["-o", "-", "--format", "npz"], ["-o -", "--format npz"]),
    (["-o", "X/out.npz", "--format", "lear"], ["out.npz", "--format lear", "out.txt.gz"]),
    (["-o", "X/out.txt.gz", "--format", "npz"], ["out.txt.gz", "--format npz", "out.npz"]),
    (["-o", "X/out.txt", "--format", "npz"], ["out.txt", "--format npz", "out.npz"]),
    (["-o", "X/sub/"], ["sub/", "directory", "sub/tiny.npz"]),
    (["-o", "X/same.npz", "--draw", "X/same.npz"], ["--draw", "same file"]),
    (["-o", "X/out.data"], ["out.data", ".npz", "suffix"]),  # an npz load_trajectories refused
    (["-o", "X/out.gz"], ["out.gz", ".txt.gz"]),  # an npz that load_trajectories read as LEAR text
])
def test_an_output_name_that_contradicts_the_options_is_one_line(video, tmp_path, capsys, args, words):
    """These used to run: LEAR text written to stdout despite ``--format npz``, text in an ``.npz`` (which then
    does not load), an npz named ``sub`` for ``-o sub/``, the drawing over the trajectories."""
    from idtfv.idt.cli import main

    out = tmp_path / "out"
    out.mkdir()
    argv = [a.replace("X/", f"{out}/") for a in args]
    assert main([str(video), "-q", *argv]) == 2
    captured = capsys.readouterr()
    line = _one_error_line(captured.err)
    assert all(w in line for w in words), line
    assert captured.out == "" and _listing(out) == []


def test_draw_onto_the_input_video_is_refused_and_the_video_kept(video, tmp_path, capsys):
    """``--draw clip.avi`` on ``clip.avi`` replaced the user's source video with the drawing (exit 0)."""
    from idtfv.idt.cli import main

    source = video.read_bytes()
    link = tmp_path / "same.avi"
    link.symlink_to(video)
    for target in (video, link):
        assert main([str(video), "-q", "-o", str(tmp_path / "t.npz"), "--draw", str(target)]) == 2
        line = _one_error_line(capsys.readouterr().err)
        assert line == f"error: --draw {target}: the input video itself; give the output its own name"
    assert video.read_bytes() == source and _listing(tmp_path) == sorted([video.name, "same.avi"])


def test_matching_names_and_formats_still_work(video, tmp_path):
    from idtfv.idt.cli import main
    from idtfv.idt.trajectories import load_trajectories

    assert main([str(video), "-q", "-o", str(tmp_path / "a.txt"), "--format", "lear"]) == 0
    assert main([str(video), "-q", "-o", str(tmp_path / "b.npz"), "--format", "npz"]) == 0
    assert main([str(video), "-q", "-o", str(tmp_path / "c.txt.gz")]) == 0
    a, b, c = (load_trajectories(tmp_path / n) for n in ("a.txt", "b.npz", "c.txt.gz"))
    assert len(a) > 0 and len(a) == len(b) == len(c)


# ------------------------------------------------------------------------------ -o - | head
def test_a_closed_stdout_pipe_ends_quietly_with_status_141(video, tmp_path):
    """``extract-trajectories V -o - | head -1``: the reader stops after one line. It used to print ``error: [Errno
    32] Broken pipe`` and exit 2; a filter whose reader is gone says nothing (status 141 = 128 + SIGPIPE)."""
    proc = subprocess.Popen([sys.executable, "-c", "import sys; from idtfv.idt.cli import main; "
                             f"sys.exit(main([{str(video)!r}, '-o', '-', '-q']))"],
                            cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    first = proc.stdout.readline()
    proc.stdout.close()  # as head does after its line
    err = proc.stderr.read().decode()
    proc.stderr.close()
    assert proc.wait(timeout=300) == 141, err
    assert len(first.split(b"\t")) == 436  # LEAR text came out until the reader left
    assert err == ""


# ------------------------------------------------------------------------------ Ctrl-C, SIGTERM: nothing partial
def test_ctrl_c_during_draw_leaves_no_partial_drawing(video, tmp_path, monkeypatch, capsys):
    """``--draw`` wrote straight into its file: Ctrl-C left a partial video there. Now it is written under a
    temporary name and renamed at the end; an existing drawing is kept."""
    from idtfv.idt import draw
    from idtfv.idt.cli import main

    drawn = tmp_path / "tracks.avi"
    drawn.write_bytes(b"an earlier drawing")
    calls = []
    real = draw.TrackDrawer.__call__

    def interrupted(self, *args):
        calls.append(1)
        if len(calls) == 5:
            raise KeyboardInterrupt
        return real(self, *args)

    monkeypatch.setattr(draw.TrackDrawer, "__call__", interrupted)
    assert main([str(video), "-q", "-o", str(tmp_path / "t.npz"), "--draw", str(drawn)]) == 130
    assert capsys.readouterr().err.strip().splitlines() == ["interrupted; no output written"]
    assert drawn.read_bytes() == b"an earlier drawing"
    assert _listing(tmp_path) == sorted([video.name, "tracks.avi"])


def test_a_finished_drawing_replaces_the_old_one(video, tmp_path):
    import cv2

    from idtfv.idt.cli import main

    drawn = tmp_path / "tracks.avi"
    drawn.write_bytes(b"an earlier drawing")
    assert main([str(video), "-q", "-o", str(tmp_path / "t.npz"), "--draw", str(drawn)]) == 0
    cap = cv2.VideoCapture(str(drawn))
    n = int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
    cap.release()
    assert n >= 17 and _listing(tmp_path) == sorted([video.name, "t.npz", "tracks.avi"])


def test_ctrl_c_with_stdout_output_says_the_text_is_incomplete(video, monkeypatch, capsys):
    from idtfv.idt import extractor
    from idtfv.idt.cli import main

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(extractor, "extract_to_file", interrupted)
    assert main([str(video), "-o", "-", "-q"]) == 130
    assert capsys.readouterr().err.strip().splitlines() == ["interrupted; the LEAR text on stdout is incomplete"]


def test_sigterm_during_extract_flow_removes_the_partial_rawframes(video, tmp_path):
    """SIGTERM killed the process at once, leaving ``DIR/.<id>.<tag>.tmp`` full of JPEGs (and DIR itself). Now it
    unwinds like Ctrl-C: one line, status 143 (128 + SIGTERM), nothing left."""
    out = tmp_path / "new" / "rawframes"
    proc = _flow_in_child(video, out, tmp_path, prelude=SIGTERM_AT_THIRD_FLOW)
    assert proc.returncode == 143, proc.stderr
    assert proc.stderr.strip().splitlines() == [
        "terminated; no output written (an earlier output of the video is left as it was)"]
    assert not (tmp_path / "new").exists()


def test_sigterm_during_extract_trajectories_leaves_no_drawing(video, tmp_path):
    proc = _python(f"""
        import os, signal, sys
        from idtfv.idt import draw
        from idtfv.idt.cli import main

        real = draw.TrackDrawer.__call__
        def call(self, frame_num, *args):
            real(self, frame_num, *args)
            if frame_num == 5:
                os.kill(os.getpid(), signal.SIGTERM)
        draw.TrackDrawer.__call__ = call
        sys.exit(main([{str(video)!r}, "-o", "t.npz", "-q", "--draw", "d.avi"]))
    """, tmp_path)
    assert proc.returncode == 143, proc.stderr
    assert proc.stderr.strip().splitlines() == ["terminated; no output written"]
    assert _listing(tmp_path) == [video.name]


#: Prelude of a child script: Ctrl-C (SIGINT to itself) at the third flow image, and a second Ctrl-C as the clean-up of
#: the partial rawframes starts (RawframesWriter.abort).
SECOND_CTRL_C_IN_RAWFRAMES_CLEANUP = """
import os, signal, sys
from idtfv.idt import rawframes

real_add, real_abort = rawframes.RawframesWriter.add_flow, rawframes.RawframesWriter.abort
def add_flow(self, flow):
    real_add(self, flow)
    if self.n_flows == 3:
        os.kill(os.getpid(), signal.SIGINT)
def abort(self):
    os.kill(os.getpid(), signal.SIGINT)
    for _ in range(1000):  # the handler runs here, in the clean-up
        pass
    real_abort(self)
rawframes.RawframesWriter.add_flow, rawframes.RawframesWriter.abort = add_flow, abort
"""


def test_a_second_ctrl_c_during_extract_flow_clean_up_is_ignored(video, tmp_path):
    """The second Ctrl-C interrupted the clean-up of the first: the partial ``DIR/.<id>.<tag>.tmp`` of JPEGs (and DIR,
    made by the run) stayed. Now an interrupted command ignores further Ctrl-C until its clean-up and its one line
    are done: status 130, nothing left, no traceback."""
    out = tmp_path / "new" / "rawframes"
    proc = _flow_in_child(video, out, tmp_path, prelude=SECOND_CTRL_C_IN_RAWFRAMES_CLEANUP)
    assert proc.returncode == 130, proc.stderr
    assert proc.stderr.strip().splitlines() == [
        "interrupted; no output written (an earlier output of the video is left as it was)"]
    assert _listing(tmp_path) == [video.name]


def test_a_second_ctrl_c_during_extract_trajectories_clean_up_is_ignored(video, tmp_path):
    """As above for ``extract-trajectories``: a second Ctrl-C as the partial output's staging directory is removed
    left it (``.t.npz.<random>.tmp/``)."""
    proc = _python(f"""
        import os, signal, sys
        from idtfv.idt import cli, extractor

        real_extract, real_remove = extractor.extract_to_file, cli._remove_stage_dir
        def extract_to_file(*args, on_frame=None, **kwargs):
            def frame(i, n):
                if i == 5:
                    os.kill(os.getpid(), signal.SIGINT)
            return real_extract(*args, on_frame=frame, **kwargs)
        def remove(stage_dir):
            os.kill(os.getpid(), signal.SIGINT)
            for _ in range(1000):
                pass
            real_remove(stage_dir)
        extractor.extract_to_file, cli._remove_stage_dir = extract_to_file, remove
        sys.exit(cli.main([{str(video)!r}, "-o", "t.npz", "-q"]))
    """, tmp_path)
    assert proc.returncode == 130, proc.stderr
    assert proc.stderr.strip().splitlines() == ["interrupted; no output written"]
    assert _listing(tmp_path) == [video.name]


def test_interrupt_once_is_scoped_and_keeps_ignored_signals(terminal_signals):
    """The handlers of the single-video commands: the first SIGINT / SIGTERM raises, a later one inside is ignored;
    the previous handlers come back on leaving; a signal ignored before (``nohup``) stays ignored."""
    from idtfv.cli import Terminated, interrupt_status
    from idtfv.cli import interrupt_once

    before = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
    with pytest.raises(Terminated) as caught, interrupt_once():
        os.kill(os.getpid(), signal.SIGTERM)
        for _ in range(1000):
            pass
    assert interrupt_status(caught.value) == 143
    with pytest.raises(KeyboardInterrupt) as caught, interrupt_once():
        try:
            os.kill(os.getpid(), signal.SIGINT)
            for _ in range(1000):
                pass
        finally:  # the clean-up: a second Ctrl-C and a SIGTERM change nothing
            assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
            os.kill(os.getpid(), signal.SIGINT)
            os.kill(os.getpid(), signal.SIGTERM)
            for _ in range(1000):
                pass
    assert type(caught.value) is KeyboardInterrupt and interrupt_status(caught.value) == 130
    assert {s: signal.getsignal(s) for s in before} == before
    previous = signal.signal(signal.SIGHUP, signal.SIG_IGN)
    try:
        with interrupt_once():
            assert signal.getsignal(signal.SIGHUP) is signal.SIG_IGN
            os.kill(os.getpid(), signal.SIGHUP)  # ignored: nothing happens
            for _ in range(1000):
                pass
    finally:
        signal.signal(signal.SIGHUP, previous)


def test_sigterm_as_interrupt_is_scoped(terminal_signals):
    from idtfv.cli import Terminated, interrupt_status, sigterm_as_interrupt

    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(Terminated) as caught, sigterm_as_interrupt():
        os.kill(os.getpid(), signal.SIGTERM)
        for _ in range(1000):  # the handler runs in this thread as soon as the call returns
            pass
    assert isinstance(caught.value, KeyboardInterrupt) and interrupt_status(caught.value) == 143
    assert interrupt_status(KeyboardInterrupt()) == 130
    assert signal.getsignal(signal.SIGTERM) == before
    with pytest.raises(Terminated) as caught, sigterm_as_interrupt():  # a closed terminal
        os.kill(os.getpid(), signal.SIGHUP)
        for _ in range(1000):
            pass
    assert interrupt_status(caught.value) == 129


def test_an_ignored_sighup_stays_ignored(monkeypatch):
    """``nohup extract-trajectories ...``: SIGHUP is ignored on purpose; the command must not catch it."""
    from idtfv.cli import sigterm_as_interrupt

    previous = signal.signal(signal.SIGHUP, signal.SIG_IGN)
    try:
        with sigterm_as_interrupt():
            assert signal.getsignal(signal.SIGHUP) is signal.SIG_IGN
            assert signal.getsignal(signal.SIGTERM) is not signal.SIG_IGN
            os.kill(os.getpid(), signal.SIGHUP)  # ignored: nothing happens
            for _ in range(1000):
                pass
    finally:
        signal.signal(signal.SIGHUP, previous)


# ------------------------------------------------------------------------------ extract-flow: DIR and --video-id
def test_a_failed_extract_flow_leaves_no_directory_it_created(tmp_path, capsys):
    from idtfv.idt.cli import flow_main

    out = tmp_path / "a" / "b" / "rawframes"
    assert flow_main([str(tmp_path / "missing.avi"), "-o", str(out), "-q"]) == 2
    assert "missing.avi" in _one_error_line(capsys.readouterr().err)
    assert _listing(tmp_path) == []
    kept = tmp_path / "kept"
    kept.mkdir()
    assert flow_main([str(tmp_path / "missing.avi"), "-o", str(kept), "-q"]) == 2
    assert kept.is_dir()


@pytest.mark.parametrize("how", ["file in the way", "ENOENT"])
def test_extract_flow_into_a_folder_it_cannot_make_is_one_line_naming_it(video, tmp_path, monkeypatch, capsys, how):
    """``extract-flow V -o /proc/fl`` said ``error: /proc/fl: No such file or directory`` and ``-o file/fl``
    ``error: file/fl: Not a directory``: the folder is named with the reason (the file in its way) and the fix."""
    import pathlib

    from idtfv.idt.cli import flow_main

    blocker = tmp_path / "f"
    blocker.write_text("")
    out = blocker / "fl" if how == "file in the way" else tmp_path / "proc" / "fl"
    if how == "ENOENT":
        real = pathlib.Path.mkdir

        def refusing(self, *args, **kwargs):
            if tmp_path / "proc" in (self, *self.parents):
                raise FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), str(self))
            return real(self, *args, **kwargs)

        monkeypatch.setattr(pathlib.Path, "mkdir", refusing)
    assert flow_main([str(video), "-o", str(out), "-q"]) == 2
    why = f"{blocker} is a file, not a directory" if how == "file in the way" else os.strerror(errno.ENOENT)
    assert _one_error_line(capsys.readouterr().err) == \
        f"error: {out}: cannot create this directory ({why}); give an output directory you can write to"
    assert sorted(_listing(tmp_path)) == sorted(["f", video.name])  # nothing made


@pytest.mark.parametrize("video_id", [".", "..", "../outside", "a/b", "", "x" * 201])
def test_a_video_id_that_is_not_one_plain_name_is_refused(video, tmp_path, capsys, video_id):
    """``--video-id .`` named DIR itself: the commit moved DIR away and deleted it with every other video's
    rawframes in it; ``../outside`` wrote beside DIR."""
    from idtfv.idt.cli import flow_main

    out = tmp_path / "rawframes"
    (out / "other_video").mkdir(parents=True)
    (out / "other_video" / "img_00001.jpg").write_bytes(b"another video's frame")
    before = _listing(tmp_path)
    assert flow_main([str(video), "-o", str(out), "-q", "--video-id", video_id, "--method", "farneback"]) == 2
    line = _one_error_line(capsys.readouterr().err)
    assert line.startswith("error: --video-id:") and repr(video_id) in line
    assert _listing(tmp_path) == before


def test_is_valid_video_id_agrees_with_the_manifest_rule():
    from idtfv.data.manifest import MAX_VIDEO_ID_LENGTH, is_valid_video_id, make_video_id

    for good in ("v_a_g01_c01", "a.b-c", "..x", "x" * MAX_VIDEO_ID_LENGTH, make_video_id("walk/actor 1.avi")):
        assert is_valid_video_id(good), good
    for bad in (".", "..", "", "a/b", "a b", "x" * (MAX_VIDEO_ID_LENGTH + 1), None, 3):
        assert not is_valid_video_id(bad), bad


# ------------------------------------------------------------------------------ messages that name the fix
def test_frames_too_small_after_the_working_width_name_the_source_size_and_the_option(tiny_video, tmp_path,
                                                                                       capsys):
    """A 1280x48 strip is shrunk to the 640 px working width, 640x24, below the 32-px patch: the message used to
    say "frames are 640x24 ... use a larger video", which the user's file is not."""
    from idtfv.idt.cli import main

    strip = tiny_video("strip.avi", frames=3, width=1280, height=48)
    assert main([str(strip), "-q", "-o", str(tmp_path / "s.npz")]) == 2
    line = _one_error_line(capsys.readouterr().err)
    assert "1280x48" in line and "640x24" in line and "--resize-width 0" in line


def test_more_frames_than_the_header_declares_is_not_called_truncation():
    """A file that decodes more frames than its header says (joined MPEG-TS files, variable frame rate) was
    reported as "decoded 59 of 30 frames ... may be truncated"."""
    from idtfv.video import TruncatedVideoWarning, _check_frame_count

    with pytest.warns(TruncatedVideoWarning) as more:
        _check_frame_count("joined.ts", 59, 30)
    text = str(more[0].message)
    assert "59" in text and "30" in text and "more than" in text and "truncated" not in text
    with pytest.warns(TruncatedVideoWarning, match="decoded 20 of 40 frames the header declares; the file may be "
                                                   "truncated"):
        _check_frame_count("cut.avi", 20, 40)


def test_extract_takes_a_bytes_path(video):
    """``extract(os.fsencode(path))`` iterated the bytes as frames: "frames must be uint8 arrays, got int64"."""
    from idtfv.idt import extract

    by_str, by_bytes = extract(str(video)), extract(os.fsencode(str(video)))
    assert len(by_str) > 0
    np.testing.assert_array_equal(by_bytes.meta, by_str.meta)
    np.testing.assert_array_equal(by_bytes.hog, by_str.hog)


# ------------------------------------------------------------------------------ a full disk names the output
def _no_space(*args, **kwargs):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))  # as write(2) reports it: no file name


@pytest.mark.parametrize("name", ["t.npz", "t.txt.gz"])
def test_a_full_disk_names_the_trajectories_output(video, tmp_path, monkeypatch, capsys, name):
    """The failed write's OSError names no file: the user saw ``error: [Errno 28] No space left on device``."""
    from idtfv.idt import trajectories
    from idtfv.idt.cli import main

    monkeypatch.setattr(trajectories.TrajectoryWriter, "write", _no_space)
    out = tmp_path / "out" / name
    out.parent.mkdir()
    assert main([str(video), "-q", "-o", str(out)]) == 2
    line = _one_error_line(capsys.readouterr().err)
    assert line.startswith(f"error: no space left on device writing {out};"), line
    assert _listing(out.parent) == []


def test_a_full_disk_names_the_rawframes_directory(video, tmp_path, monkeypatch, capsys):
    from idtfv.idt import rawframes
    from idtfv.idt.cli import flow_main

    calls = []
    real = rawframes._imwrite

    def imwrite(*args):
        calls.append(1)
        if len(calls) == 4:
            _no_space()
        real(*args)

    monkeypatch.setattr(rawframes, "_imwrite", imwrite)
    out = tmp_path / "rawframes"
    assert flow_main([str(video), "-o", str(out), "-q", "--video-id", "v", "--method", "farneback"]) == 2
    line = _one_error_line(capsys.readouterr().err)
    assert line.startswith(f"error: no space left on device writing {out / 'v'};"), line
    assert _listing(tmp_path) == [video.name]


def test_a_full_disk_stops_the_drawing_with_one_line(video, tmp_path, monkeypatch, capfd):
    """OpenCV's writer printed ``[ WARN ] ... Failed to write frame`` per frame, the command exited 0 and left a
    broken video."""
    from idtfv.idt import draw
    from idtfv.idt.cli import main

    monkeypatch.setattr(draw, "free_bytes", lambda directory: 1000)  # less than one 480x360 frame
    drawn = tmp_path / "tracks.avi"
    assert main([str(video), "-q", "-o", str(tmp_path / "t.npz"), "--draw", str(drawn)]) == 2
    line = _one_error_line(capfd.readouterr().err)
    assert line.startswith(f"error: no space left on device writing {drawn};"), line
    assert _listing(tmp_path) == [video.name]


# ------------------------------------------------------------------------------ same input, same bytes
def test_two_runs_to_a_txt_gz_give_the_same_bytes(video, tmp_path):
    """The command staged its output as ``.<random>.a.txt.gz``, and gzip stores the file name in its header: two
    runs of one command on one video gave different bytes. The header now holds the output's own name."""
    import gzip

    from idtfv.idt.cli import main

    outs = [tmp_path / run / "a.txt.gz" for run in ("one", "two")]
    for out in outs:
        out.parent.mkdir()
        assert main([str(video), "-q", "-o", str(out)]) == 0
    first, second = (out.read_bytes() for out in outs)
    assert first == second
    assert first[3] & 0x08 and first[10:16] == b"a.txt\0"  # FNAME flag, then the name
    assert gzip.decompress(first).count(b"\n") > 0
    assert [_listing(out.parent) for out in outs] == [["a.txt.gz"], ["a.txt.gz"]]


def test_an_output_inside_a_file_names_the_file_not_a_temporary_name(video, tmp_path, capsys):
    """``-o notes.txt/x.npz``: the error named the run's temporary file (``.x.npz.<hex>.tmp``)."""
    from idtfv.idt.cli import main

    (tmp_path / "notes.txt").write_text("a file")
    assert main([str(video), "-q", "-o", str(tmp_path / "notes.txt" / "x.npz")]) == 2
    line = _one_error_line(capsys.readouterr().err)
    assert f"{tmp_path / 'notes.txt'} is not a directory" in line and ".tmp" not in line


def test_a_file_where_the_rawframes_directory_goes_is_refused_and_kept(video, tmp_path, capsys):
    """A file ``DIR/v`` was renamed to a hidden ``.v.<tag>.tmp`` (its removal failed quietly: rmtree of a file) and
    replaced by the rawframes directory."""
    from idtfv.idt.cli import flow_main

    out = tmp_path / "rawframes"
    out.mkdir()
    (out / "v").write_text("the user's file")
    assert flow_main([str(video), "-o", str(out), "-q", "--video-id", "v", "--method", "farneback"]) == 2
    line = _one_error_line(capsys.readouterr().err)
    assert str(out / "v") in line and "not a directory" in line
    assert _listing(out) == ["v"] and (out / "v").read_text() == "the user's file"


def test_an_output_name_of_up_to_255_bytes_works(video, tmp_path):
    """A legal 244-byte output name failed with ``File name too long`` naming the temporary ``.<name>.<hex>.tmp``
    (also in ``main`` before this branch, after all the work for an npz)."""
    from idtfv.idt.cli import main
    from idtfv.idt.trajectories import load_trajectories

    name = "é" * 120 + ".npz"  # 244 bytes in UTF-8
    out = tmp_path / name
    assert main([str(video), "-q", "-o", str(out), "--draw", str(tmp_path / ("d" * 250 + ".avi"))]) == 0
    assert len(load_trajectories(out)) > 0
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([video.name, name, "d" * 250 + ".avi"])


def test_temp_name_stays_within_name_max():
    from idtfv.atomic import temp_name

    assert temp_name("a.npz", "0123") == ".a.npz.0123.tmp"
    for name in ("x" * 255, "é" * 127, "ab" * 100):
        for suffix in ("", ".avi"):
            tmp = temp_name(name, "0" * 12, suffix)
            assert len(tmp.encode()) <= 255 and tmp.startswith(".") and tmp.endswith(".000000000000.tmp" + suffix)
            tmp.encode("utf-8")  # no half character left by the cut


def test_the_flow_backend_fallback_is_one_warning_line(video, tmp_path):
    """``extract-flow --backend gpu`` on a method without a GPU path printed Python's two-line RuntimeWarning
    (``.../estimate.py:159: RuntimeWarning: ...`` and the source line) instead of one ``warning:`` line."""
    proc = _python(f"""
        import sys
        from idtfv.idt.cli import flow_main
        sys.exit(flow_main([{str(video)!r}, "-o", "out", "-q", "--method", "farneback", "--backend", "gpu"]))
    """, tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.splitlines() == ["warning: method='farneback' has no GPU path; running it on the CPU"]


@pytest.mark.parametrize("code", [errno.EACCES, errno.EROFS, errno.ENOENT])
def test_an_unwritable_output_directory_names_the_output(video, tmp_path, monkeypatch, capsys, code):
    """``-o ro/x.npz`` in a read-only directory: the error named the temporary ``ro/.x.npz.<hex>.tmp``; so did
    ``-o /proc/x.npz`` (ENOENT: a folder that takes no new files). (The tests may run as root, who writes anywhere:
    the refusal is planted where the command makes its first entry.)"""
    import pathlib

    from idtfv.idt.cli import main

    real = pathlib.Path.mkdir

    def mkdir(self, *args, **kwargs):
        if self.parent.name == "ro":
            raise OSError(code, os.strerror(code), str(self))
        return real(self, *args, **kwargs)

    monkeypatch.setattr(pathlib.Path, "mkdir", mkdir)
    (tmp_path / "ro").mkdir()
    out = tmp_path / "ro" / "x.npz"
    assert main([str(video), "-q", "-o", str(out)]) == 2
    line = _one_error_line(capsys.readouterr().err)
    assert line == f"error: {out}: cannot write in {out.parent} ({os.strerror(code).lower()}); -o a file in a " \
                   "directory you can write to"
    assert not list((tmp_path / "ro").iterdir())


def test_an_mp4_cut_short_is_named_as_one(tiny_video, tmp_path, capsys):
    """An MP4 cut in half loses its index (the ``moov`` box OpenCV writes last): the message asked "is it a video
    file in a format FFmpeg knows?" about a plain .mp4."""
    import cv2

    from conftest import tiny_frames
    from idtfv.idt.cli import main

    whole = tmp_path / "whole.mp4"
    writer = cv2.VideoWriter(str(whole), cv2.CAP_FFMPEG, cv2.VideoWriter_fourcc(*"mp4v"), 25.0, (64, 48))
    for rgb in tiny_frames(frames=20):
        writer.write(cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    writer.release()
    data = whole.read_bytes()
    assert data[4:8] == b"ftyp" and data.rfind(b"moov") > len(data) // 2  # planted: the index is at the end
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(data[:len(data) // 2])
    assert main([str(cut), "-q", "-o", str(tmp_path / "x.npz")]) == 2
    line = _one_error_line(capsys.readouterr().err)
    assert line.startswith(f"error: {cut}: an MP4/MOV without its frame index (no 'moov' box)"), line
    not_mp4 = tmp_path / "text.mp4"
    not_mp4.write_text("not a video at all\n" * 10)
    assert main([str(not_mp4), "-q", "-o", str(tmp_path / "y.npz")]) == 2
    assert "is it a video file in a format FFmpeg knows?" in _one_error_line(capsys.readouterr().err)


# ------------------------------------------------------------------------------ variable frame rate
def _write_vfr_mkv(path: Path, frames: int = 120) -> Path:
    """An MPEG-4 MKV at a nominal 30 fps whose frames come alternately 70 ms and 20 ms apart (a phone's variable
    rate): the container has a duration but no frame count, so OpenCV declares duration x 30 fps = 162 frames."""
    import fractions

    import av

    from conftest import tiny_frames

    ms = fractions.Fraction(1, 1000)
    with av.open(str(path), "w") as container:
        stream = container.add_stream("mpeg4", rate=30)
        stream.width, stream.height, stream.pix_fmt = 96, 72, "yuv420p"
        stream.time_base = stream.codec_context.time_base = ms
        t = 0
        for i, rgb in enumerate(tiny_frames(frames=frames, width=96, height=72)):
            frame = av.VideoFrame.from_ndarray(rgb, format="rgb24")
            frame.pts, frame.time_base = t, ms
            t += 20 if i % 2 else 70
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def test_a_variable_frame_rate_video_is_not_reported_as_truncated(tmp_path):
    """Every frame of a VFR MKV decodes, yet its estimated count (162) exceeds the 120 frames: the user was told
    the file "may be truncated or damaged". Its last frame is stamped at the end of its duration: no warning. The same
    file cut short still warns."""
    import warnings

    from conftest import opencv_frame_counts
    from idtfv.video import TruncatedVideoWarning, iter_frames, probe_video

    vfr = _write_vfr_mkv(tmp_path / "vfr.mkv")
    decoded, declared = opencv_frame_counts(vfr)
    assert (decoded, declared) == (120, 162)  # planted: the header's estimate is wrong, nothing is missing
    with warnings.catch_warnings():
        warnings.simplefilter("error", TruncatedVideoWarning)
        assert probe_video(vfr).frames == 120
        assert len(list(iter_frames(vfr))) == 120
    cut = tmp_path / "cut.mkv"
    cut.write_bytes(vfr.read_bytes()[:vfr.stat().st_size // 2])
    with pytest.warns(TruncatedVideoWarning, match="the file may be truncated"):
        n = probe_video(cut).frames
    assert 0 < n < 100


# ------------------------------------------------------------------------------ file names that are not UTF-8
@pytest.fixture
def latin1_video(video, tmp_path):
    """The tiny video under a Latin-1 name (bytes ``lat\\xe9.avi``: not UTF-8, as on old archives and cameras)."""
    name = os.fsdecode(b"lat\xe9.avi")
    try:
        (tmp_path / name).write_bytes(video.read_bytes())
    except (OSError, UnicodeEncodeError):
        pytest.skip("this file system refuses file names that are not UTF-8")
    return tmp_path / name


def test_a_video_whose_name_is_not_utf8_is_read_like_any_other(video, latin1_video, tmp_path):
    """OpenCV's binding crashed the process (SIGSEGV, status 139) on such a name; extract-flow died in
    make_video_id with a UnicodeEncodeError traceback. Now both run, with the bytes of the same video under a UTF-8
    name."""
    from idtfv.idt import extract

    proc = _python(f"""
        import os, sys
        from idtfv.idt.cli import flow_main, main
        video = os.fsdecode({os.fsencode(str(latin1_video))!r})
        assert main([video, "-q", "-o", "t.npz"]) == 0
        sys.exit(flow_main([video, "-q", "-o", "flow", "--method", "farneback"]))
    """, tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""
    from idtfv.idt.trajectories import load_trajectories

    got, expected = load_trajectories(tmp_path / "t.npz"), extract(str(video))
    np.testing.assert_array_equal(got.meta, expected.meta)
    np.testing.assert_array_equal(got.hog.astype(np.float16), expected.hog.astype(np.float16))
    ids = [p.name for p in (tmp_path / "flow").iterdir()]
    assert len(ids) == 1 and ids[0].startswith("lat_-")  # make_video_id: the name made safe, with its hash
    from idtfv.data.manifest import make_video_id

    assert ids[0] == make_video_id(latin1_video.name)


def test_draw_and_dataset_clips_under_names_that_are_not_utf8_are_written(video, tmp_path):
    """OpenCV's video writer crashed the process on such names: ``--draw`` to one, and ``idtfv dataset`` writing
    its clips under such a root (status 139)."""
    proc = _python(f"""
        import os, sys
        import numpy as np
        from idtfv.data.synthetic import _write_video
        from idtfv.idt.cli import main
        from idtfv.video import probe_video
        d = os.fsdecode(b"d\\xe9")
        os.mkdir(d)
        drawn = os.path.join(d, os.fsdecode(b"tracks\\xe9.avi"))
        assert main([{str(video)!r}, "-q", "-o", "t.npz", "--draw", drawn]) == 0
        assert main([{str(video)!r}, "-q", "-o", "t.npz", "--draw", "ascii.avi"]) == 0
        print(probe_video(drawn).frames == probe_video("ascii.avi").frames > 10)
        clip = os.path.join(d, "clip.avi")
        _write_video(clip, np.zeros((5, 48, 64, 3), np.uint8), 25.0)
        print(probe_video(clip).frames)
    """, tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["True", "5"]
    folder = tmp_path / os.fsdecode(b"d\xe9")
    assert sorted(p.name for p in folder.iterdir()) == sorted(["clip.avi", os.fsdecode(b"tracks\xe9.avi")])


def test_rawframes_under_a_directory_not_utf8_are_read(video, tmp_path):
    """cv2.imread crashed the process on such a path; the JPEGs are now read by Python and decoded by OpenCV."""
    proc = _python(f"""
        import os, sys
        import numpy as np
        from idtfv.idt.cli import flow_main
        from idtfv.idt.rawframes import RawframesReader
        root = os.fsdecode(b"raw\\xe9")
        assert flow_main([{str(video)!r}, "-q", "-o", "ascii", "--video-id", "v", "--method", "farneback"]) == 0
        assert flow_main([{str(video)!r}, "-q", "-o", root, "--video-id", "v", "--method", "farneback"]) == 0
        a, b = RawframesReader("ascii", "v"), RawframesReader(root, "v")
        assert np.array_equal(a.frames(), b.frames()) and np.array_equal(a.flow(), b.flow())
        print(a.frames().shape)
    """, tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().splitlines()[-1] == "(18, 48, 64, 3)"


def test_a_video_shorter_than_a_trajectory_names_the_option(tiny_video, tmp_path, capsys):
    """``... 3 frames; at least L+1=16 needed``: L is named by its option, the one that changes it."""
    from idtfv.idt.cli import main

    short = tiny_video("short.avi", frames=3)
    assert main([str(short), "-q", "-o", str(tmp_path / "x.npz")]) == 2
    assert _one_error_line(capsys.readouterr().err) == (f"error: {short}: no trajectories: 3 frames; at least "
                                                         "L+1=16 needed (L is --track-length)")


def _run_with_stdout(video: Path, cwd: Path, stdout) -> subprocess.CompletedProcess:
    script = f"import sys; from idtfv.idt.cli import main; sys.exit(main([{str(video)!r}, '-q', '-o', '-']))"
    kwargs = {"preexec_fn": lambda: os.close(1)} if stdout == "closed" else {"stdout": stdout}
    return subprocess.run([sys.executable, "-c", script], cwd=cwd, stderr=subprocess.PIPE, text=True, timeout=300,
                          **kwargs)


def test_o_dash_with_stdout_closed_is_one_line(video, tmp_path):
    """``extract-trajectories V -o - >&-``: an AttributeError traceback (``sys.stdout`` is None)."""
    proc = _run_with_stdout(video, tmp_path, "closed")
    assert proc.returncode == 2
    assert _one_error_line(proc.stderr).startswith("error: -o -: this process has no stdout to write to")


def test_o_dash_onto_a_full_disk_says_where(video, tmp_path):
    """``extract-trajectories V -o - > /dev/full``: ``error: [Errno 28] No space left on device`` named nothing."""
    if not Path("/dev/full").exists():
        pytest.skip("no /dev/full")
    with open("/dev/full", "wb") as full:  # an open descriptor: the device itself is not touched
        proc = _run_with_stdout(video, tmp_path, full)
    assert proc.returncode == 2
    assert _one_error_line(proc.stderr).startswith("error: no space left on device writing <stdout>;")
    assert stat.S_ISCHR(os.stat("/dev/full").st_mode)


def test_extract_flow_with_its_reader_gone_keeps_the_rawframes_and_ends_quietly(video, tmp_path):
    """``extract-flow V -o DIR | true``: the rawframes were written, then the summary line failed with ``error:
    [Errno 32] Broken pipe`` and status 2, as if the command had failed."""
    proc = subprocess.Popen([sys.executable, "-c", "import sys; from idtfv.idt.cli import flow_main; sys.exit("
                             f"flow_main([{str(video)!r}, '-q', '-o', 'out', '--video-id', 'v', '--method', "
                             "'farneback']))"], cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    proc.stdout.close()  # the reader is gone before the summary line
    err = proc.stderr.read().decode()
    proc.stderr.close()
    assert proc.wait(timeout=300) == 141 and err == ""
    assert len(list((tmp_path / "out" / "v").glob("flow_x_*.jpg"))) == 17


# ------------------------------------------------------------------------------ partial rawframes of killed runs
def test_partial_rawframes_a_killed_writer_left_are_removed_by_the_next_write(video, tmp_path):
    """``idtfv flow`` killed (SIGTERM to a --jobs run kills its workers, SIGKILL, power loss) left
    ``DIR/.<id>.<host>-<pid>-<random>.tmp`` full of JPEGs for good: a rerun wrote the video and kept the partial
    copy beside it. The next writer of the video removes those whose process (named in the temporary name) is
    gone."""
    from idtfv.atomic import host_tag, temp_name
    from idtfv.idt.cli import flow_main

    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()  # a pid that no process has now
    out = tmp_path / "rawframes"
    stale = out / temp_name("v", f"{host_tag()}-{dead.pid}-0123abcd")
    live = out / temp_name("v", f"{host_tag()}-{os.getpid()}-4567abcd")  # a writer still at work: kept
    other_host = out / temp_name("v", f"ffffff-{dead.pid}-89abcdef")  # another machine's, on a shared FS: kept
    other_video = out / temp_name("w", f"{host_tag()}-{dead.pid}-0123abcd")  # another video's: its writer's business
    for d in (stale, live, other_host, other_video):
        d.mkdir(parents=True)
        (d / "img_00001.jpg").write_bytes(b"partial")
    assert flow_main([str(video), "-o", str(out), "-q", "--video-id", "v", "--method", "farneback"]) == 0
    assert sorted(p.name for p in out.iterdir()) == sorted(["v", live.name, other_host.name, other_video.name])


def test_what_a_killed_single_video_command_left_is_removed_by_its_next_run(video, tmp_path):
    """SIGKILL (or a power loss) left ``extract-trajectories``' staging directory ``.t.npz.<tag>.tmp/`` and
    ``extract-flow --format npz``'s partial ``DIR/.v.npz.<tag>.tmp`` for good: a rerun wrote the output and kept
    them beside it. The next run of the same output removes those of a gone process (another output's are kept)."""
    from idtfv.atomic import host_tag, temp_name
    from idtfv.idt.cli import flow_main, main

    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()  # a pid that no process has now
    tag = f"{host_tag()}-{dead.pid}-0123abcd"
    staging = tmp_path / temp_name("t.npz", tag)
    staging.mkdir()
    (staging / "t.npz").write_bytes(b"partial")
    other = tmp_path / temp_name("u.npz", tag)  # another output's: its own next run's business
    other.mkdir()
    assert main([str(video), "-o", str(tmp_path / "t.npz"), "-q"]) == 0
    assert _listing(tmp_path) == sorted([video.name, "t.npz", other.name])

    out = tmp_path / "flow"
    out.mkdir()
    partial = out / temp_name("v.npz", tag)
    partial.write_bytes(b"PK partial")
    assert flow_main([str(video), "-o", str(out), "-q", "--video-id", "v", "--method", "farneback",
                      "--format", "npz"]) == 0
    assert _listing(out) == ["v.npz"]


def test_sigterm_during_idtfv_flow_removes_the_partial_rawframes(video, tmp_path):
    """The ``idtfv`` commands unwind on SIGTERM too (status 143); a run in one process removes the video's partial
    rawframes at once."""
    manifest = tmp_path / "m.csv"
    manifest.write_text("video_id,path,label,label_name,group,split1,frames,fps,width,height\n"
                        f"v,{video},0,a,g,train,,,,\n")
    proc = _python(f"""
        from idtfv.cli import main
        sys.exit(main(["flow", "--manifest", {str(manifest)!r}, "--out", "out", "--method", "farneback"]))
    """, tmp_path, prelude=SIGTERM_AT_THIRD_FLOW)
    assert proc.returncode == 143, proc.stderr
    assert proc.stderr.strip().splitlines()[-1] == "terminated; finished results are kept, rerun to resume"
    assert [p.name for p in (tmp_path / "out").iterdir() if ".tmp" in p.name] == []


@pytest.mark.parametrize("option, value, bound", [("--track-length", "300000", "1..1000"),
                                                  ("--track-length", "1002", "1..1000"),
                                                  ("--orb-features", "1000000000", "1..1000000"),
                                                  ("--farneback-iterations", "100000", "1..100"),
                                                  ("--farneback-iterations", "101", "1..100"),
                                                  ("--farneback-winsize", "100000", "1..255"),
                                                  ("--farneback-winsize", "256", "1..255")])
def test_an_absurd_size_option_is_refused_before_any_work(video, tmp_path, capsys, option, value, bound):
    """``--track-length 300000`` (a multiple of --nt-cells) took 8.4 GB and 25 s on a 20-frame clip before "no
    trajectories" (the track pools hold L+1 points per live track); ``--matcher orb --orb-features 1000000000`` was
    OpenCV's ``cv2.error: std::bad_alloc`` traceback, exit 1; ``--farneback-iterations 100000`` or
    ``--farneback-winsize 100000`` ran for minutes on a 20-frame clip. All are refused in one line naming the
    option and its range, exit 2, nothing written."""
    from idtfv.idt.cli import main

    out = tmp_path / "out" / "x.npz"
    out.parent.mkdir()
    assert main([str(video), "-q", "--matcher", "orb", option, value, "-o", str(out)]) == 2
    line = _one_error_line(capsys.readouterr().err)
    assert line.startswith(f"error: {option}: expected an integer in {bound}"), line
    assert f"got {value}" in line
    assert _listing(out.parent) == []


@pytest.mark.parametrize("args, option, bound", [(["--nxy-cells", "32"], "--nxy-cells", "1..13 with nt_cells=3"),
                                                (["--nxy-cells", "16", "--nt-cells", "5", "--track-length", "15"],
                                                 "--nxy-cells", "1..10 with nt_cells=5"),
                                                (["--nt-cells", "1000", "--track-length", "1000"], "--nt-cells",
                                                 "1..512")])
def test_a_descriptor_of_too_many_cells_is_refused_before_any_work(video, tmp_path, capsys, args, option, bound):
    """``--nxy-cells 32`` (one pixel per cell: 1024 x 3 cells of 33 floats held by every live track) took 2.9 GB on
    40 frames of a 320x240 clip, growing with the frame's area to an out-of-memory kill; ``--nt-cells 1000`` 1.4 GB
    on 20 frames of KTH. Refused in one line naming the option and its range, exit 2, nothing written."""
    from idtfv.idt.cli import main
    from idtfv.idt.params import MAX_DESCRIPTOR_CELLS

    out = tmp_path / "out" / "x.npz"
    out.parent.mkdir()
    assert main([str(video), "-q", *args, "-o", str(out)]) == 2
    line = _one_error_line(capsys.readouterr().err)
    assert line.startswith(f"error: {option}: expected an integer in {bound}"), line
    assert f"at most {MAX_DESCRIPTOR_CELLS} cells" in line
    assert _listing(out.parent) == []


def test_the_largest_descriptor_grids_still_run(video):
    """At the bound (8 x 8 x 8 = 512 cells) the extraction runs and gives blocks of that many cells."""
    from idtfv.idt import IDTParams, extract

    traj = extract(str(video), IDTParams(nxy_cells=8, nt_cells=8, track_length=8, end=12))
    assert traj.hog.shape[1] == 8 * 8 * 8 * 8  # HOG: 8 bins per cell


def test_the_largest_farneback_settings_still_run(video, tmp_path):
    """The bounds refuse only what is absurd: 100 iterations and a 255-px window are extracted (a few seconds)."""
    from idtfv.idt import IDTParams, extract

    traj = extract(str(video), IDTParams(farneback_iterations=100, farneback_winsize=255, end=12))
    assert traj.info["frames"] == 12


@pytest.mark.parametrize("value", ["7", "4", "0"])
def test_a_median_size_the_flow_cannot_use_names_the_option(video, tmp_path, capsys, value):
    """``--median-ksize 7`` passed IDTParams (any odd size) and was refused later by PyramidFlowParams, naming that
    object instead of the option; it is now refused where the option is read."""
    from idtfv.idt.cli import main

    assert main([str(video), "-q", "--median-ksize", value, "-o", str(tmp_path / "x.npz")]) == 2
    line = _one_error_line(capsys.readouterr().err)
    assert line.startswith("error: --median-ksize: expected"), line
    assert f"got {value}" in line and "PyramidFlowParams" not in line


def _numpy_cannot_allocate(*args, **kwargs):
    raise MemoryError("Unable to allocate 572. GiB for an array with shape (256, 300000001, 2) and data type float32")


def _opencv_cannot_allocate(*args, **kwargs):
    import cv2

    exc = cv2.error("OpenCV(5.1.0) alloc.cpp:73: error: (-4:Insufficient memory) Failed to allocate 40000000000 "
                    "bytes in function 'OutOfMemoryError'\n")
    exc.code = -4
    raise exc


@pytest.mark.parametrize("where, fail, text", [
    ("idtfv.idt.tracking.TrackPool.__init__", _numpy_cannot_allocate, "out of memory (Unable to allocate 572. GiB"),
    ("idtfv.idt.camera._detect", _opencv_cannot_allocate, "out of memory (OpenCV(5.1.0) alloc.cpp:73: error: "
                                                          "(-4:Insufficient memory) Failed to allocate"),
])
def test_a_failed_allocation_is_one_line_naming_the_video(video, tmp_path, capsys, monkeypatch, where, fail, text):
    """A failed allocation during the extraction (NumPy's MemoryError, or OpenCV's ``cv2.error`` -4 / bad_alloc,
    which is no MemoryError) is one line naming the video, the allocation and what to lower; exit 2, and no output
    or temporary left."""
    from idtfv.idt.cli import main

    monkeypatch.setattr(where, fail)
    out = tmp_path / "out" / "x.npz"
    out.parent.mkdir()
    assert main([str(video), "-q", "-o", str(out)]) == 2
    line = _one_error_line(capsys.readouterr().err)
    assert line.startswith(f"error: {video}: {text}"), line
    assert "--track-length" in line and "free memory" in line
    assert _listing(out.parent) == []


def test_a_bug_inside_opencv_is_still_a_traceback(video, tmp_path, monkeypatch):
    """Only a failed allocation becomes a user's one line: another ``cv2.error`` (a bug of ours or OpenCV's) is
    raised as it is, with its traceback, for the bug report."""
    import cv2
    from idtfv.idt.cli import main

    def fail(*args, **kwargs):
        raise cv2.error("OpenCV(5.1.0) error: (-215:Assertion failed) !_src.empty() in function 'detectAndCompute'")

    monkeypatch.setattr("idtfv.idt.camera._detect", fail)
    with pytest.raises(cv2.error, match="Assertion failed"):
        main([str(video), "-q", "-o", str(tmp_path / "x.npz")])


def test_run_command_reports_a_failed_allocation_in_one_line(capsys):
    """The ``idtfv`` subcommands' contract (``run_command``): a MemoryError is an ``error:`` line, exit 2."""
    from idtfv.cli import run_command

    def body():
        raise MemoryError("Unable to allocate 12.0 GiB for an array with shape (3, 1000000000) and data type float32")

    assert run_command(body) == 2
    line = _one_error_line(capsys.readouterr().err)
    assert line.startswith("error: out of memory (Unable to allocate 12.0 GiB") and "free memory" in line, line


def test_run_command_reports_opencvs_failed_allocation_in_one_line_and_raises_its_other_errors(capsys):
    """``run_command`` treats OpenCV's failed allocation (``cv2.error`` with code -4) as a MemoryError; another
    ``cv2.error`` keeps its traceback."""
    import cv2
    from idtfv.cli import run_command

    assert run_command(_opencv_cannot_allocate) == 2
    line = _one_error_line(capsys.readouterr().err)
    assert line.startswith("error: out of memory (OpenCV(5.1.0)") and "free memory" in line, line

    def bug():
        raise cv2.error("OpenCV(5.1.0) error: (-215:Assertion failed) in function 'f'")

    with pytest.raises(cv2.error):
        run_command(bug)
