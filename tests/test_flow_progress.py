"""extract-flow's progress: ``extract_video(on_frame=...)`` reports every frame, and the CLI shows a frame bar on a
terminal only (none with -q or when stderr is a pipe or a log file); the callback never changes the output."""

from __future__ import annotations

import sys

from conftest import write_tiny_video

from idtfv.idt.cli import flow_main
from idtfv.idt.stage import extract_video

N_FRAMES = 7


def _files(directory):
    return {p.relative_to(directory).as_posix(): p.read_bytes() for p in sorted(directory.rglob("*")) if p.is_file()}


def test_on_frame_counts_every_frame_up_to_the_probed_total(tmp_path):
    video = write_tiny_video(tmp_path / "clip.avi", frames=N_FRAMES)
    calls = []
    info = extract_video(video, tmp_path / "with", video_id="v", method="farneback", backend="cpu",
                         on_frame=lambda i, n: calls.append((i, n)))
    assert int(info["n_frames"]) == N_FRAMES
    # planted truth: one call per frame on the CPU (pairs are solved one at a time), the total known up front
    assert calls == [(i, N_FRAMES) for i in range(1, N_FRAMES + 1)]
    extract_video(video, tmp_path / "without", video_id="v", method="farneback", backend="cpu")
    assert _files(tmp_path / "with") == _files(tmp_path / "without")  # the callback changes no byte


def _run(video, out, monkeypatch, capsys, *, tty, extra=()):
    monkeypatch.setattr(sys.stderr, "isatty", lambda: tty)
    rc = flow_main([str(video), "-o", str(out), "--method", "farneback", "--backend", "cpu", *extra])
    return rc, capsys.readouterr()


def test_cli_bar_on_a_terminal_only(tmp_path, monkeypatch, capsys):
    video = write_tiny_video(tmp_path / "clip.avi", frames=N_FRAMES)
    rc, shown = _run(video, tmp_path / "tty", monkeypatch, capsys, tty=True)
    assert rc == 0
    assert f"{N_FRAMES}/{N_FRAMES}" in shown.err and "frame" in shown.err  # tqdm's "7/7 [..., frame/s]"
    assert f"{N_FRAMES} frames, {N_FRAMES - 1} flows" in shown.out
    rc, piped = _run(video, tmp_path / "pipe", monkeypatch, capsys, tty=False)
    assert rc == 0 and piped.err == ""  # a log file gets no bar
    rc, quiet = _run(video, tmp_path / "quiet", monkeypatch, capsys, tty=True, extra=["-q"])
    assert rc == 0 and quiet.err == ""
    assert f"{N_FRAMES} frames, {N_FRAMES - 1} flows" in quiet.out
    assert _files(tmp_path / "tty") == _files(tmp_path / "pipe") == _files(tmp_path / "quiet")
