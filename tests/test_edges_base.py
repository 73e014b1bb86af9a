"""Issue 11, items 7-12: clear errors, never a traceback, in the base layer.

7  a corrupt cached features ``.npz`` is named, with the command that recomputes it (the runner redoes it itself);
8  a damaged ``codebook.json`` is a FormatError naming the file and the key;
9  a video id too long for the file system is refused by the manifest, and an OSError on one video's files is
   that video's failure, not the run's;
10 a FIFO (any non-regular file) is refused by the video reader before it is opened (it used to hang);
11 a full disk (ENOSPC) is reported as "no space left on device writing PATH" and stops the run at once;
12 dataset generation is locked: a second concurrent run waits and never deletes the first run's files.
"""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
import textwrap
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from idtfv.cache import TMP_GLOB, atomic_savez, atomic_write_json, atomic_write_text, load_valid
from idtfv.errors import FormatError, IdtfvError, ManifestError, VideoError

REPO = Path(__file__).resolve().parents[1]
CHANNEL_DIMS = {"traj": 30, "hog": 96, "hof": 108, "mbhx": 96, "mbhy": 96}


def _one_error_line(err: str) -> str:
    """The stderr of a command that failed on bad input: exactly one ``error: ...`` line, no traceback."""
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert "Traceback" not in err
    return lines[0]


def _flip_one_bit(path: Path, *, at: float = 0.5) -> None:
    data = bytearray(path.read_bytes())
    data[int(len(data) * at)] ^= 0x10
    path.write_bytes(bytes(data))


# ------------------------------------------------------------------------------------------------ 7: corrupt .npz
def _features(rng, label, n):
    meta = np.zeros((n, 10), np.float32)
    meta[:, 7:10] = rng.uniform(0, 0.999, (n, 3))
    arrays = {"meta": meta}
    for ch, d in CHANNEL_DIMS.items():
        base = rng.normal(size=(n, d)) + (2.0 if label else -2.0) * (np.arange(d) % 3 == 0)
        arrays[ch] = np.abs(base).astype(np.float32)
    return arrays


@pytest.fixture()
def encode_inputs(tmp_path):
    """A manifest of 8 videos (v0-v5 train, v6-v7 test), their features files and the features stamp."""
    rng = np.random.default_rng(0)
    feat_dir = tmp_path / "cache" / "features-abc"
    lines = ["video_id,path,label,label_name,group,split1,frames,fps,width,height"]
    for i in range(8):
        label = i % 2
        lines.append(f"v{i},videos/v{i}.avi,{label},{'ab'[label]},g{i},{'train' if i < 6 else 'test'},,,,")
        feat_dir.mkdir(parents=True, exist_ok=True)
        np.savez(feat_dir / f"v{i}.npz", **_features(rng, label, 150 + 10 * i))  # stored members: a flip = bad CRC
    (tmp_path / "manifest.csv").write_text("\n".join(lines) + "\n")
    stamp = {"stage": "features", "dir": str(feat_dir), "params": {}, "done": [f"v{i}" for i in range(8)],
             "failed": {}}
    (tmp_path / "features.json").write_text(json.dumps(stamp))
    return tmp_path


def _encode(ds, *extra):
    from idtfv.cli import main

    return main(["encode", "--manifest", str(ds / "manifest.csv"), "--features", str(ds / "features.json"),
                 "--cache", str(ds / "cache"), "--out", str(ds / "fv.npz"), "--k", "2", "--pca-samples", "400",
                 "--gmm-iter", "4", *extra])


def _assert_bad_crc(path: Path) -> None:
    """Precondition: the flipped file opens, and reading its members fails the CRC check (as issue 11 saw)."""
    with np.load(path, allow_pickle=False) as z, pytest.raises(zipfile.BadZipFile, match="CRC"):
        for key in z.files:
            z[key]


def test_a_corrupt_training_features_file_is_named_with_the_command_that_recomputes_it(encode_inputs, capsys):
    bad = encode_inputs / "cache" / "features-abc" / "v2.npz"
    _flip_one_bit(bad)
    _assert_bad_crc(bad)
    assert _encode(encode_inputs) == 2
    line = _one_error_line(capsys.readouterr().err)
    assert str(bad) in line and "corrupt" in line and "idtfv features" in line


def test_a_corrupt_test_features_file_fails_only_that_video_and_names_the_file(encode_inputs, capsys):
    bad = encode_inputs / "cache" / "features-abc" / "v7.npz"
    _flip_one_bit(bad)
    _assert_bad_crc(bad)
    assert _encode(encode_inputs) == 1  # the other videos are encoded; the failed one is listed
    err = capsys.readouterr().err
    assert "Traceback" not in err
    listed = [line for line in err.splitlines() if line.strip().startswith("v7:")]
    assert len(listed) == 1 and str(bad) in listed[0] and "idtfv features" in listed[0], err
    with np.load(encode_inputs / "fv.npz") as z:
        assert z["video_ids"].tolist() == [f"v{i}" for i in range(7)]


def test_open_npz_names_the_file_on_every_kind_of_damage(tmp_path):
    from idtfv.cache import open_npz

    good = tmp_path / "good.npz"
    arrays = {"x": np.arange(5000, dtype=np.float32), "y": np.ones((3, 4))}
    atomic_savez(good, arrays)
    with open_npz(good) as z:
        assert sorted(z.files) == ["x", "y"] and "x" in z and "nope" not in z
        np.testing.assert_array_equal(z["x"], arrays["x"])
        with pytest.raises(KeyError):
            z["nope"]

    flipped = tmp_path / "flipped.npz"
    flipped.write_bytes(good.read_bytes())
    _flip_one_bit(flipped, at=0.3)
    truncated = tmp_path / "truncated.npz"
    truncated.write_bytes(good.read_bytes()[:200])
    text = tmp_path / "text.npz"
    text.write_text("not a zip file")
    for path in (flipped, truncated, text):
        with pytest.raises(FormatError) as info:
            with open_npz(path, remedy="rerun the toy stage") as z:
                for key in z.files:
                    z[key]
        message = str(info.value)
        assert message.startswith(f"{path}: ") and "rerun the toy stage" in message and "\n" not in message
    with pytest.raises(FormatError, match="not found"):
        open_npz(tmp_path / "missing.npz")
    assert load_valid(flipped) is None  # and the runner treats such a result as not done: it is recomputed


# ------------------------------------------------------------------------------------------------ 8: codebook.json
@pytest.mark.parametrize("summary, key", [
    ({"channels": ["traj"], "k": 2}, "method"),
    ({"method": "fisher", "k": 2}, "channels"),
    ([], "JSON object"),
    ({"method": "fisher", "channels": [], "k": 2}, "channels"),
    ({"method": "fisher", "channels": "traj", "k": 2}, "channels"),
    ({"method": "tfidf", "channels": ["traj"], "k": 2}, "method"),
    ({"method": "fisher", "channels": ["traj"], "k": "two"}, "k"),
])
def test_a_damaged_codebook_summary_is_a_format_error_naming_the_file_and_the_key(encode_inputs, capsys, summary,
                                                                                 key):
    from idtfv.encoding.codebook_io import load_summary

    cb_dir = encode_inputs / "my_codebook"
    atomic_write_json(cb_dir / "codebook.json", summary)
    with pytest.raises(FormatError) as info:
        load_summary(cb_dir / "codebook.json")
    assert str(cb_dir / "codebook.json") in str(info.value) and key in str(info.value)
    assert _encode(encode_inputs, "--codebook", str(cb_dir)) == 2
    line = _one_error_line(capsys.readouterr().err)
    assert str(cb_dir / "codebook.json") in line and key in line


@pytest.mark.parametrize("what", ["missing", "a file"])
def test_a_codebook_option_naming_no_directory_says_so(encode_inputs, capsys, what):
    """``--codebook nodir`` said "codebook summary not found; the codebook was not fitted completely", and
    ``--codebook file`` "codebook summary is not valid JSON ([Errno 20] Not a directory ...)": neither is a codebook
    fitted halfway. Every command reading a codebook (encode, train-svm, cv, detect) goes through ``load_summary``."""
    from idtfv.encoding.codebook_io import load_summary

    given = encode_inputs / "nodir"
    if what == "a file":
        given.write_text("{}")
    what_it_is = "is not a directory" if what == "a file" else "no such directory"
    with pytest.raises(FormatError, match=rf"^{given}: {what_it_is}; a codebook is the directory an earlier idtfv "
                                          r"encode fitted"):
        load_summary(given / "codebook.json")
    assert _encode(encode_inputs, "--codebook", str(given)) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"error: {given}: ") and not (encode_inputs / "fv.npz").exists()


def test_load_summary_returns_a_valid_summary_as_written(tmp_path):
    from idtfv.encoding.codebook_io import load_summary

    summary = {"method": "vlad", "k": 4, "k_requested": None, "channels": ["hog", "mbhx"], "params": {"seed": 0}}
    atomic_write_json(tmp_path / "codebook.json", summary)
    assert load_summary(tmp_path / "codebook.json") == summary
    with pytest.raises(FormatError, match="no such directory"):
        load_summary(tmp_path / "nope" / "codebook.json")
    (tmp_path / "halfway").mkdir()  # a codebook directory whose summary was never written
    with pytest.raises(FormatError, match="not found; the codebook was not fitted completely"):
        load_summary(tmp_path / "halfway" / "codebook.json")
    (tmp_path / "codebook.json").write_text("{truncated")
    with pytest.raises(FormatError, match="not valid JSON"):
        load_summary(tmp_path / "codebook.json")


# ------------------------------------------------------------------------------------------------ 9: long ids
HEADER = "video_id,path,label,label_name,group,split1,frames,fps,width,height"


def test_a_video_id_too_long_for_file_names_is_refused_by_the_manifest(tmp_path):
    from idtfv.data.manifest import MAX_VIDEO_ID_LENGTH, make_video_id, read_manifest

    assert MAX_VIDEO_ID_LENGTH + len(".npz") + len("..123456789abc.tmp") <= 255  # temp files must fit NAME_MAX
    ok = "a" * MAX_VIDEO_ID_LENGTH
    path = tmp_path / "m.csv"
    path.write_text(f"{HEADER}\n{ok},a.avi,0,walk,,train,,,,\n")
    assert read_manifest(path).rows[0].video_id == ok
    long_id = "b" * 257
    path.write_text(f"{HEADER}\n{ok},a.avi,0,walk,,train,,,,\n{long_id},b.avi,0,walk,,test,,,,\n")
    with pytest.raises(ManifestError) as info:
        read_manifest(path)
    message = str(info.value)
    assert str(path) in message and "row 2" in message and "257" in message and str(MAX_VIDEO_ID_LENGTH) in message
    assert len(make_video_id("x" * 400 + ".avi")) <= MAX_VIDEO_ID_LENGTH  # derived ids always fit


@dataclass(frozen=True)
class Item:
    video_id: str
    n: int


def arrays_of(entry, params):
    if params.get("log"):
        with open(params["log"], "a") as log:
            log.write(f"{entry.video_id[:20]}\n")
    if entry.n in params.get("enospc", ()):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), f"/scratch/{entry.video_id}.side")
    if params.get("sleep"):
        time.sleep(params["sleep"])
    return {"x": np.full(1000, entry.n, np.float32)}


def test_an_os_error_on_one_videos_file_fails_only_that_video(tmp_path, monkeypatch):
    import idtfv.runner
    from idtfv.runner import run_stage

    # an id too long for a file name is refused up front now (test_id_case.py), so the file system's refusal of
    # one video's file is planted: writing the middle video's result fails as a too-long name does
    savez = idtfv.runner.atomic_savez

    def refuse_middle(path, arrays, **kwargs):
        if Path(path).name.startswith("middle"):
            raise OSError(errno.ENAMETOOLONG, os.strerror(errno.ENAMETOOLONG), str(path))
        return savez(path, arrays, **kwargs)

    monkeypatch.setattr(idtfv.runner, "atomic_savez", refuse_middle)
    items = [Item("first", 0), Item("middle", 1), Item("last", 2)]
    result = run_stage("toy", arrays_of, items, params={}, cache_root=tmp_path)
    assert result.done == ["first", "last"]
    assert list(result.failed) == ["middle"] and "File name too long" in result.failed["middle"]
    assert not result.path("middle").exists()
    for item in (items[0], items[2]):
        assert load_valid(result.path(item.video_id))["x"][0] == item.n


# ------------------------------------------------------------------------------------------------ 10: FIFOs
PROBE_FIFO = textwrap.dedent(
    """
    import sys
    from idtfv.errors import VideoError
    from idtfv.video import probe_video, open_video
    for call in (probe_video, open_video):
        try:
            call(sys.argv[1])
        except VideoError as exc:
            print(exc)
        else:
            print("no error")
    """
)


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs FIFOs")
def test_a_fifo_is_refused_at_once_not_opened(tmp_path):
    fifo = tmp_path / "clip.avi"
    os.mkfifo(fifo)
    try:  # in a child process: the reader used to block forever in open() waiting for a writer
        run = subprocess.run([sys.executable, "-c", PROBE_FIFO, str(fifo)], capture_output=True, text=True,
                             timeout=60)
    except subprocess.TimeoutExpired:
        pytest.fail("probe_video hung on a FIFO")
    assert run.returncode == 0, run.stderr
    lines = run.stdout.splitlines()
    assert lines == [f"{fifo}: not a regular file (a FIFO); expected a video file"] * 2


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs FIFOs")
def test_a_manifest_listing_a_fifo_probes_the_other_videos(tmp_path, tiny_video):
    good = tiny_video("good.avi", frames=5)
    os.mkfifo(tmp_path / "pipe.avi")
    (tmp_path / "m.csv").write_text(f"{HEADER}\npipe,pipe.avi,0,walk,,train,,,,\ngood,good.avi,0,walk,,test,,,,\n")
    script = textwrap.dedent(
        """
        import json, sys
        from idtfv.data.manifest import probe_manifest, read_manifest
        m = probe_manifest(read_manifest(sys.argv[1]))
        print(json.dumps({"frames": [e.frames for e in m.rows], "errors": m.probe_errors}))
        """
    )
    try:
        run = subprocess.run([sys.executable, "-c", script, str(tmp_path / "m.csv")], capture_output=True,
                             text=True, timeout=60)
    except subprocess.TimeoutExpired:
        pytest.fail("probing a manifest that lists a FIFO hung")
    assert run.returncode == 0, run.stderr
    out = json.loads(run.stdout.splitlines()[-1])
    assert out["frames"] == [0, 5] and list(out["errors"]) == ["pipe"]
    assert "not a regular file" in out["errors"]["pipe"] and good.exists()


def test_a_character_device_is_refused_too():
    if not Path("/dev/null").exists():
        pytest.skip("no /dev/null")
    from idtfv.video import probe_video

    with pytest.raises(VideoError, match=r"^/dev/null: not a regular file \(a character device\)"):
        probe_video("/dev/null")


# ------------------------------------------------------------------------------------------------ 11: ENOSPC
class _Disk:
    """A tiny tmpfs-like quota: writes through ``os.fdopen`` handles fail with ENOSPC once ``free`` bytes are used."""

    def __init__(self, free: int):
        self.free = free

    def handle(self, real):
        disk = self

        class Handle:
            def __getattr__(self, name):
                return getattr(real, name)

            def __enter__(self):
                real.__enter__()
                return self

            def __exit__(self, *exc):
                return real.__exit__(*exc)

            def __iter__(self):
                return iter(real)

            def write(self, data):
                if len(data) > disk.free:
                    disk.free = 0
                    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
                disk.free -= len(data)
                return real.write(data)

        return Handle()


@pytest.fixture()
def small_disk(monkeypatch):
    import idtfv.atomic

    disk = _Disk(free=10**12)
    real_fdopen = os.fdopen
    monkeypatch.setattr(idtfv.atomic.os, "fdopen", lambda *a, **k: disk.handle(real_fdopen(*a, **k)))
    return disk


def test_atomic_writes_name_the_path_when_the_disk_is_full(tmp_path, small_disk):
    from idtfv.errors import DiskFullError

    target = tmp_path / "notes.txt"
    atomic_write_text(target, "old\n")
    small_disk.free = 10
    with pytest.raises(DiskFullError) as info:
        atomic_write_text(target, "x" * 100)
    assert str(info.value).startswith(f"no space left on device writing {target}")
    assert isinstance(info.value, IdtfvError) and info.value.errno == errno.ENOSPC
    assert target.read_text() == "old\n" and sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]
    with pytest.raises(DiskFullError, match=f"writing {tmp_path / 'v.npz'}"):
        atomic_savez(tmp_path / "v.npz", {"x": np.zeros(1000)})


def test_a_full_disk_stops_the_run_at_once_and_names_the_file(tmp_path, small_disk):
    from idtfv.errors import DiskFullError
    from idtfv.runner import read_index, run_stage

    items = [Item(f"v{i}", i) for i in range(6)]
    log = tmp_path / "calls.log"
    params = {"log": str(log)}
    run_stage("toy", arrays_of, items[:2], params=params, cache_root=tmp_path / "c")  # v0, v1 fit on the disk
    small_disk.free = 100  # then the disk fills up: v2's result no longer fits, nor does anything after it
    with pytest.raises(DiskFullError) as info:
        run_stage("toy", arrays_of, items, params=params, cache_root=tmp_path / "c")
    message = str(info.value)
    out_dir = next((tmp_path / "c").glob("toy-*"))
    assert message.startswith(f"no space left on device writing {out_dir / 'v2.npz'}") and "\n" not in message
    assert log.read_text().split() == ["v0", "v1", "v2"]  # v3-v5 were never computed
    assert list(out_dir.glob(TMP_GLOB)) == []

    small_disk.free = 10**12  # space freed: the rerun resumes
    result = run_stage("toy", arrays_of, items, params=params, cache_root=tmp_path / "c")
    assert result.skipped == ["v0", "v1"] and result.done == ["v2", "v3", "v4", "v5"] and result.failed == {}
    assert {r.status for r in read_index(out_dir / "index.csv").values()} == {"done"}


def test_a_full_disk_in_a_worker_stops_a_parallel_run(tmp_path):
    from idtfv.errors import DiskFullError
    from idtfv.runner import run_stage

    items = [Item(f"v{i:02d}", i) for i in range(12)]
    log = tmp_path / "calls.log"
    params = {"log": str(log), "sleep": 1.0, "enospc": [1]}
    with pytest.raises(DiskFullError, match=r"no space left on device writing /scratch/v01\.side"):
        run_stage("toy", arrays_of, items, params=params, cache_root=tmp_path, jobs=2)
    assert len(log.read_text().split()) <= 4  # stopped at once: not every video was started
    assert list(next(tmp_path.glob("toy-*")).glob(TMP_GLOB)) == []


def test_a_full_disk_during_dataset_generation_stops_at_the_first_clip_that_did_not_fit(tmp_path, monkeypatch,
                                                                                        caplog):
    import idtfv.data.synthetic as synthetic
    from idtfv.errors import DiskFullError

    written = []
    real_write = synthetic._write_video
    free = {"bytes": 10**12}

    def write_until_full(path, frames, fps):
        written.append(path)
        if len(written) <= 3:
            return real_write(path, frames, fps)
        free["bytes"] = 0
        Path(path).write_bytes(b"")  # what OpenCV's writer leaves on a full disk: it reports nothing

    monkeypatch.setattr(synthetic, "_write_video", write_until_full)
    monkeypatch.setattr(synthetic, "_free_bytes", lambda directory: free["bytes"])
    with pytest.raises(DiskFullError) as info:
        synthetic.generate_dataset(tmp_path, n_classes=2, n_actors=3, n_frames=4, size=(48, 32))
    assert str(info.value).startswith(f"no space left on device writing {written[3]}")
    assert len(written) == 4  # stopped at once
    assert "probe failed" not in caplog.text
    assert not (tmp_path / "dataset.json").exists() and not (tmp_path / "manifest.csv").exists()


def test_idtfv_dataset_on_a_full_disk_prints_one_line_naming_the_file(tmp_path, monkeypatch, capsys):
    import idtfv.data.synthetic as synthetic
    from idtfv.cli import main

    written = []

    def full_after_two(path, frames, fps):
        written.append(path)
        if len(written) <= 2:
            return real_write(path, frames, fps)
        Path(path).write_bytes(b"")

    real_write = synthetic._write_video
    monkeypatch.setattr(synthetic, "_write_video", full_after_two)
    monkeypatch.setattr(synthetic, "_free_bytes", lambda directory: 0 if len(written) > 2 else 10**12)
    assert main(["dataset", "--out", str(tmp_path / "default" / "manifest.csv")]) == 2
    line = _one_error_line(capsys.readouterr().err)
    assert line == (f"error: no space left on device writing {written[2]}; free some disk space (or write "
                    "elsewhere) and rerun: finished results are kept")
    assert len(written) == 3


def test_an_empty_clip_with_free_space_blames_the_writer_and_names_the_file(tmp_path, monkeypatch):
    import idtfv.data.synthetic as synthetic

    written = []

    def broken_writer(path, frames, fps):
        written.append(path)
        Path(path).write_bytes(b"")

    monkeypatch.setattr(synthetic, "_write_video", broken_writer)
    with pytest.raises(IdtfvError) as info:
        synthetic.generate_dataset(tmp_path, n_classes=2, n_actors=3, n_frames=4, size=(48, 32))
    message = str(info.value)
    assert message.startswith(f"{written[0]}: ") and "no space" not in message and "OpenCV" in message
    assert len(written) == 1


# ------------------------------------------------------------------------------------------------ 12: locks
GENERATE = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    import idtfv.data.synthetic as synthetic

    real_render = synthetic.render_clip
    gate = Path(sys.argv[2]) if sys.argv[2] != "-" else None
    calls = []

    def gated_render(*args, **kwargs):  # the third clip waits until the test opens the gate
        calls.append(1)
        while gate is not None and len(calls) == 3 and not gate.exists():
            time.sleep(0.02)
        return real_render(*args, **kwargs)

    synthetic.render_clip = gated_render
    path = synthetic.generate_dataset(sys.argv[1], n_classes=2, n_actors=3, n_frames=4, size=(48, 32))
    print("manifest", path)
    """
)


def _digest(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file() and not p.name.startswith(".")}


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX advisory locks")
def test_a_second_concurrent_generation_waits_and_never_deletes_the_first_ones_files(tmp_path):
    import select

    out, gate = tmp_path / "data", tmp_path / "gate"
    env = {**os.environ, "CI": "true"}
    first = subprocess.Popen([sys.executable, "-c", GENERATE, str(out), str(gate)], stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True, env=env)
    try:
        first_clip = out / "videos" / "walk" / "walk_a01_c01.avi"
        deadline = time.monotonic() + 120
        while len(list(out.rglob("*.avi"))) < 2:  # the first run holds at its third clip; the first is complete
            assert first.poll() is None, first.communicate()
            assert time.monotonic() < deadline
            time.sleep(0.02)
        first_written = first_clip.stat().st_mtime_ns
        second = subprocess.Popen([sys.executable, "-c", GENERATE, str(out), "-"], stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True, env=env)
        # the second run says it waits (before the fix it went ahead, deleted videos/ and rewrote it)
        ready, _, _ = select.select([second.stderr], [], [], 120)
        notice = second.stderr.readline() if ready else ""
    finally:
        gate.touch()  # let the first run finish
    out1, err1 = first.communicate(timeout=120)
    out2, err2 = second.communicate(timeout=120)
    assert first.returncode == 0, err1
    assert second.returncode == 0, err2
    assert notice.startswith("waiting for another dataset generation") and str(out) in notice and not err2.strip()
    assert out1.split() == out2.split() == ["manifest", str(out / "manifest.csv")]
    assert first_clip.stat().st_mtime_ns == first_written  # the second run did not delete and rewrite it
    reference = tmp_path / "reference"
    subprocess.run([sys.executable, "-c", GENERATE, str(reference), "-"], check=True, capture_output=True, env=env)
    assert _digest(out) == _digest(reference)  # complete and byte-identical to an undisturbed run


def test_the_lock_helper_refuses_or_waits(tmp_path):
    pytest.importorskip("fcntl")  # POSIX advisory locks
    from idtfv.lock import exclusive_lock

    lock, gate = tmp_path / "d" / ".lock", tmp_path / "gate"
    lock.parent.mkdir()
    holder = subprocess.Popen(  # another process holds the lock until the gate file appears
        [sys.executable, "-c",
         "import fcntl, os, sys, time; f = open(sys.argv[1], 'w'); fcntl.flock(f, fcntl.LOCK_EX); print('held', "
         "flush=True)\nwhile not os.path.exists(sys.argv[2]): time.sleep(0.02)", str(lock), str(gate)],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(IdtfvError) as info:
            with exclusive_lock(lock, what="'toy' run"):
                pass
        assert str(info.value).startswith(f"{lock.parent}: another 'toy' run is using this directory; wait")
        assert holder.poll() is None  # refusing did not wait for the holder

        notices = []

        def notice_then_open_the_gate(message):
            notices.append(message)
            gate.touch()

        with exclusive_lock(lock, what="'toy' run", wait=True, notify=notice_then_open_the_gate):
            assert holder.wait(timeout=60) == 0  # we got the lock: the holder had let it go
        assert notices == [f"waiting for another 'toy' run in {lock.parent} to finish ..."]
        with exclusive_lock(lock, what="'toy' run", wait=True, notify=notices.append):  # free: taken at once
            pass
        assert len(notices) == 1
    finally:
        gate.touch()
        holder.wait(timeout=60)
        holder.stdout.close()


def test_a_corrupt_codebook_npz_is_a_format_error_whatever_the_damage(tmp_path):
    import zlib

    from idtfv.encoding.codebook_io import load_codebook, save_codebook

    rng = np.random.default_rng(0)
    stem = save_codebook(tmp_path / "gmm_hog", {"means": rng.normal(size=(64, 48)), "weights": np.full(64, 1 / 64)},
                         {"class": "DiagGMM"})
    npz = stem.with_suffix(".npz")
    good = npz.read_bytes()
    raw_errors = set()
    for at in range(100, len(good) - 300, 97):  # inside the DEFLATE data: a bad CRC, a bad header or an inflate error
        for bit in (0x01, 0x80):
            damaged = bytearray(good)
            damaged[at] ^= bit
            npz.write_bytes(bytes(damaged))
            try:
                with np.load(npz, allow_pickle=False) as z:
                    [z[k] for k in z.files]
            except Exception as exc:  # noqa: BLE001 - what NumPy itself raises for this damage
                raw_errors.add(type(exc))
            with pytest.raises(FormatError) as info:
                load_codebook(stem)
            assert str(info.value).startswith(f"{npz}: ") and "refit" in str(info.value)
    assert zlib.error in raw_errors  # the case the old code let through as a traceback is among them


@pytest.mark.parametrize("extra", [["--root", "videos"], ["--split-file", "split.txt"]])
def test_idtfv_dataset_default_kind_refuses_a_root_instead_of_generating_the_synthetic_set(tmp_path, capsys, extra):
    """``make features ROOT=...`` without ``DATASET=`` runs ``idtfv dataset --kind default --root ...``: the user
    meant their own videos, so one line says how, and nothing is generated."""
    from idtfv.cli import main

    out = tmp_path / "default" / "manifest.csv"
    assert main(["dataset", "--out", str(out), *extra]) == 2
    line = _one_error_line(capsys.readouterr().err)
    assert line.startswith(f"error: {extra[0]} is not used by --kind default") and "--kind folder" in line
    assert not out.parent.exists()


# ------------------------------------------------------------------------------------------------ killed writers
def _dead_pid() -> int:
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()  # a pid that no process has now
    return dead.pid


def test_remove_stale_temps_removes_only_a_killed_writers_temporaries_of_that_output(tmp_path):
    """A SIGKILLed atomic write left ``.<name>.<tag>.tmp`` for good. Temporary names now carry the writer (host,
    pid); the next writer of the same output removes those of a gone process of this machine, and nothing else."""
    from idtfv.atomic import host_tag, remove_stale_temps, temp_name, writer_tag

    out = tmp_path / "v.npz"
    dead, host = _dead_pid(), host_tag()
    tag = writer_tag()
    assert tag.startswith(f"{host}-{os.getpid()}-") and temp_name("v.npz", tag) == f".v.npz.{tag}.tmp"
    stale_file = tmp_path / temp_name("v.npz", f"{host}-{dead}-0123abcd")
    stale_dir = tmp_path / temp_name("v.npz", f"{host}-{dead}-4567abcd")  # extract-trajectories' staging directory
    kept = [tmp_path / temp_name("v.npz", f"{host}-{os.getpid()}-89abcdef"),  # a write in progress
            tmp_path / temp_name("v.npz", f"ffffff-{dead}-0123abcd"),  # another machine's (a shared file system)
            tmp_path / temp_name("w.npz", f"{host}-{dead}-0123abcd"),  # another output's
            tmp_path / temp_name("v.npz.gz", f"{host}-{dead}-0123abcd"),  # another output whose name starts alike
            tmp_path / temp_name("x.v.npz", f"{host}-{dead}-0123abcd"),  # ... or ends alike
            tmp_path / ".v.npz.0123456789ab.tmp",  # a temporary name without a writer: unknown, kept
            tmp_path / "v.npz", tmp_path / "notes.tmp"]
    for path in [stale_file, *kept]:
        path.write_bytes(b"partial")
    stale_dir.mkdir()
    (stale_dir / "v.npz").write_bytes(b"partial")
    assert sorted(remove_stale_temps(out)) == sorted([stale_file, stale_dir])
    assert sorted(tmp_path.iterdir()) == sorted(kept)
    # a name cut to fit NAME_MAX in its temporary name: found all the same
    long = tmp_path / ("x" * 250 + ".npz")
    cut = tmp_path / temp_name(long.name, f"{host}-{dead}-0123abcd")
    cut.write_bytes(b"partial")
    assert len(cut.name.encode()) <= 255 and remove_stale_temps(long) == [cut]
    assert remove_stale_temps(tmp_path / "missing-dir" / "v.npz") == []


def test_a_killed_drawings_temporary_is_removed_by_the_next_drawing_there(tmp_path):
    """``--draw`` writes its video under an ASCII temporary name with the output's suffix (OpenCV picks the
    container from it), ``.idtfv-draw.<writer tag>.tmp.mp4``: the one a killed run left is removed when the next
    drawing in that directory starts; a live writer's, another machine's, another suffix's and another stem's stay."""
    from idtfv.atomic import host_tag, remove_stale_temps, temp_name
    from idtfv.idt.draw import DRAW_TEMP, TrackDrawer

    out = tmp_path / "tracks.mp4"
    dead, host = _dead_pid(), host_tag()
    stale = tmp_path / temp_name(DRAW_TEMP, f"{host}-{dead}-0123abcd", ".mp4")
    kept = [tmp_path / temp_name(DRAW_TEMP, f"{host}-{os.getpid()}-89abcdef", ".mp4"),  # a drawing in progress
            tmp_path / temp_name(DRAW_TEMP, f"ffffff-{dead}-0123abcd", ".mp4"),  # another machine's
            tmp_path / temp_name(DRAW_TEMP, f"{host}-{dead}-0123abcd", ".avi"),  # another suffix's
            tmp_path / temp_name("tracks.mp4", f"{host}-{dead}-0123abcd", ".mp4")]  # another stem's
    for path in [stale, *kept]:
        path.write_bytes(b"partial")
    # the suffix is part of the name matched: without it, the same file is not this output's
    assert remove_stale_temps(out, name=DRAW_TEMP) == [] and stale.exists()
    frames = np.random.default_rng(0).integers(0, 255, (3, 120, 160), dtype=np.uint8)
    with TrackDrawer(out, fps=10) as draw:
        for t, gray in enumerate(frames):
            draw(t, gray, np.zeros((0, 16, 2), np.float32), np.zeros(0, np.int64))
    assert not stale.exists() and all(p.exists() for p in kept)
    assert sorted(tmp_path.iterdir()) == sorted([out, *kept]) and out.stat().st_size > 0


def _refuse_temporaries(monkeypatch, code: int) -> None:
    """Make every temporary file of an atomic write fail to open with ``code`` (a folder that takes no new file:
    planted, since the tests may run as root, who writes anywhere)."""
    real_open = os.open

    def refusing(path, flags, *args):
        if os.fspath(path).endswith(".tmp"):
            raise OSError(code, os.strerror(code), os.fspath(path))
        return real_open(path, flags, *args)

    monkeypatch.setattr(os, "open", refusing)


@pytest.mark.parametrize("code", [errno.EACCES, errno.EROFS, errno.ENOENT])
def test_an_atomic_write_that_cannot_create_its_file_names_the_output_not_the_temporary(tmp_path, monkeypatch, code):
    """Every command's outputs are written under a hidden temporary name first: a folder that refuses new files
    said ``[Errno 13] Permission denied: 'dir/.x.npz.0a7c9c-9529-8cc1c964.tmp'``, a name the user never gave. The
    error keeps its type (callers, the dataset runner among them, handle it as before) and names the output."""
    from idtfv.atomic import atomic_open
    from idtfv.cli import error_line

    _refuse_temporaries(monkeypatch, code)
    out = tmp_path / "x.npz"
    with pytest.raises(OSError) as info:
        with atomic_open(out) as handle:
            handle.write(b"never")
    assert info.value.errno == code and type(info.value) is type(OSError(code, ""))
    assert error_line(info.value) == (f"error: {out}: cannot create a file in {tmp_path} ({os.strerror(code)}); "
                                      "give an output in a folder you can write to")
    assert not list(tmp_path.iterdir())


def test_error_lines_name_an_os_errors_file_without_pythons_errno_prefix():
    """``error: FILE: reason`` for an OSError naming its file (and both of a rename's), not ``[Errno 2] ...``."""
    from idtfv.cli import error_line
    from idtfv.errors import exception_line

    assert error_line(FileNotFoundError(errno.ENOENT, "No such file or directory", "a/b.csv")) == \
        "error: a/b.csv: No such file or directory"
    assert error_line(OSError(errno.EXDEV, "Invalid cross-device link", "a", None, "b")) == \
        "error: a -> b: Invalid cross-device link"
    assert error_line(OSError("no errno, no file")) == "error: no errno, no file"
    assert error_line(PermissionError(errno.EACCES, "Permission denied")) == "error: [Errno 13] Permission denied"
    # what a dataset run records of a failure that is not idtfv's own (index.csv), and a damaged file's reason
    assert exception_line(PermissionError(errno.EACCES, "Permission denied", "c/v.npz")) == \
        "PermissionError: c/v.npz: Permission denied"
    assert exception_line(ValueError("two\n lines")) == "ValueError: two lines"
    assert exception_line(KeyError()) == "KeyError"


@pytest.mark.parametrize("how", ["file in the way", "a directory", "EACCES", "ENOSPC"])
def test_encode_refuses_an_output_it_could_not_write_before_fitting_anything(encode_inputs, monkeypatch, capsys,
                                                                          how):
    """``idtfv encode --out /proc/fv.npz`` fitted every codebook and encoded every video (minutes on a dataset), then
    failed to write; ``--out file/fv.npz`` did too and said ``error: file: File exists``. The output is checked
    first (:func:`idtfv.atomic.prepare_output_file`): one line, nothing fitted, nothing left in the folder."""
    import idtfv.encoding.stage as stage
    from idtfv.cli import main

    monkeypatch.setattr(stage, "run_encode", lambda *a, **k: pytest.fail("encoded before checking --out"))
    ds = encode_inputs
    out = ds / "fv.npz"
    if how == "file in the way":
        (ds / "blocker").write_text("")
        out = ds / "blocker" / "fv.npz"
    elif how == "a directory":
        out.mkdir()
    else:
        _refuse_temporaries(monkeypatch, getattr(errno, how))
    before = sorted(p.name for p in ds.iterdir())
    assert main(["encode", "--manifest", str(ds / "manifest.csv"), "--features", str(ds / "features.json"),
                 "--cache", str(ds / "cache"), "--out", str(out), "--k", "2"]) == 2
    line = capsys.readouterr().err.strip()
    named = ds / "blocker" if how == "file in the way" else out
    assert "\n" not in line and line.startswith("error: ") and str(named) in line, line
    expected = {"file in the way": "is a file, not a directory", "a directory": "not a regular file (a directory)",
                "EACCES": f"cannot create a file in {ds} ({os.strerror(errno.EACCES)})", "ENOSPC": "disk"}[how]
    assert expected in line.lower() if how == "ENOSPC" else expected in line, line
    assert sorted(p.name for p in ds.iterdir()) == before


def test_features_refuses_an_output_it_could_not_write_before_extracting_anything(encode_inputs, monkeypatch,
                                                                                capsys):
    """``idtfv features --out file/f.json`` extracted every video, then said ``error: file: File exists``."""
    import idtfv.idt.stage as stage
    from idtfv.cli import main

    monkeypatch.setattr(stage, "run_features", lambda *a, **k: pytest.fail("extracted before checking --out"))
    ds = encode_inputs
    (ds / "blocker").write_text("")
    assert main(["features", "--manifest", str(ds / "manifest.csv"), "--cache", str(ds / "cache"), "--out",
                 str(ds / "blocker" / "f.json")]) == 2
    assert capsys.readouterr().err.strip() == (f"error: {ds / 'blocker'}: cannot create this directory "
                                               f"({ds / 'blocker'} is a file, not a directory); give an --out in a "
                                               "writable directory (make: another CACHE)")


def test_prepare_output_file_leaves_nothing_behind_and_makes_the_folder(tmp_path):
    from idtfv.atomic import prepare_output_file

    out = tmp_path / "a" / "b" / "fv.npz"
    prepare_output_file(out, fix="-")
    assert (tmp_path / "a" / "b").is_dir() and list((tmp_path / "a" / "b").iterdir()) == []
    out.write_bytes(b"kept")
    prepare_output_file(out, fix="-")  # an existing file is fine (it will be replaced at the end): left as it is
    assert out.read_bytes() == b"kept" and sorted(p.name for p in out.parent.iterdir()) == ["fv.npz"]


def test_an_atomic_write_killed_half_way_leaves_a_temporary_the_next_writer_can_tell(tmp_path):
    """The temporary file of ``atomic_open`` names its writer: killed (SIGKILL) in the middle of a write, the
    process leaves it; ``remove_stale_temps`` of the same output removes it, and the output is written as usual."""
    from idtfv.atomic import remove_stale_temps

    out = tmp_path / "v.npz"
    script = textwrap.dedent(f"""
        import os, signal
        from idtfv.atomic import atomic_open
        with atomic_open({str(out)!r}) as fh:
            fh.write(b"half")
            fh.flush()
            os.kill(os.getpid(), signal.SIGKILL)
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, timeout=120)
    assert proc.returncode == -9, proc.stderr
    left = [p.name for p in tmp_path.iterdir()]
    assert len(left) == 1 and left[0].startswith(".v.npz.") and left[0].endswith(".tmp")
    assert [p.name for p in remove_stale_temps(out)] == left
    atomic_savez(out, {"x": np.arange(3)})
    assert [p.name for p in tmp_path.iterdir()] == ["v.npz"]
