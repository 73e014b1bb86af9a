"""Every command that writes an output directory holds that directory's lock (:func:`idtfv.lock.output_dir_lock`).

For each command (``train-svm``, ``train-knn``, ``evaluate --out``, ``detect``, ``cv``, ``flow``, ``train-deep``):
a second run while another process holds ``DIR/.lock`` fails with exit 2 and one ``error:`` line naming the
directory, and leaves the first run's files byte-identical; once the lock is free the same run succeeds; and a run
that fails half way through writing (an output path blocked by a directory) leaves no held lock behind.

The lock holder here is this test process itself: ``flock`` locks belong to an open file, so the command's own
``open`` + ``flock`` of the same file conflicts with the test's exactly as with another process (one subprocess
test checks the real command line too). The figures the commands write are checked by their own test files.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import write_tiny_video
from test_cv import ENCODE, make_dataset

from idtfv.cli import main
from idtfv.lock import LOCK_NAME, exclusive_lock

IDTFV = Path(sys.executable).with_name("idtfv")


def _files(d: Path) -> dict:
    """``{relative path: bytes}`` of every file under ``d`` (the lock file is empty and stays empty)."""
    return {p.relative_to(d).as_posix(): p.read_bytes() for p in sorted(d.rglob("*")) if p.is_file()}


def _one_error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: "), err
    return err[0]


def _refused_while_held(argv, out: Path, capsys) -> None:
    """With ``out``'s lock held elsewhere the run fails at once: exit 2, one line, nothing in ``out`` changed."""
    before = _files(out)
    capsys.readouterr()
    with exclusive_lock(out / LOCK_NAME, what="test run"):
        assert main(argv) == 2
    line = _one_error_line(capsys)
    assert f"{out}: another idtfv run is using this directory" in line, line
    assert _files(out) == before


def _lock_is_free(out: Path) -> bool:
    try:
        with exclusive_lock(out / LOCK_NAME, what="test run"):
            return True
    except Exception:
        return False


def _released_after_a_failed_write(argv, out: Path, blocked: str, capsys) -> None:
    """A run whose write of ``out/blocked`` fails (a directory there): exit 2, one line; the lock is free after."""
    target = out / blocked
    target.unlink(missing_ok=True)
    target.mkdir()
    (target / "keep").write_text("a directory where the command writes a file\n")
    capsys.readouterr()
    assert main(argv) == 2
    _one_error_line(capsys)
    assert _lock_is_free(out)
    shutil.rmtree(target)


def _check(argv, out: Path, capsys, *, blocked: str | None, same=None) -> None:
    """The whole contract for one command: run, refused while held, run again (same files), released on error."""
    argv = [str(a) for a in argv]
    assert main(argv) == 0, capsys.readouterr().err
    first = _files(out)
    _refused_while_held(argv, out, capsys)
    assert first[LOCK_NAME] == b""  # the lock file: in out, empty
    assert main(argv) == 0, capsys.readouterr().err  # the lock is free again: the same run succeeds
    again = _files(out)
    keys = same if same is not None else first
    assert {k: again[k] for k in keys} == {k: first[k] for k in keys}  # deterministic: the same bytes
    if blocked is not None:
        _released_after_a_failed_write(argv, out, blocked, capsys)
        assert main(argv) == 0, capsys.readouterr().err


# ------------------------------------------------------------------------------------------------ fixtures
@pytest.fixture(scope="module")
def vectors(tmp_path_factory):
    """Descriptor files of 4 classes x 6 actors (test_cv's dataset, with frames and fps for detect), their
    vectors (K=3) and a trained SVM."""
    ds = make_dataset(tmp_path_factory.mktemp("locks") / "ds", n_actors=6, n_classes=4)
    text = (ds / "manifest.csv").read_text().splitlines()
    (ds / "manifest.csv").write_text("\n".join([text[0]] + [line[:-4] + ",40,25,64,48" for line in text[1:]]) + "\n")
    argv = ["encode", "--manifest", ds / "manifest.csv", "--features", ds / "features.json", "--cache", ds / "cache",
            "--out", ds / "fv.npz", *ENCODE]
    assert main([str(a) for a in argv]) == 0
    assert main([str(a) for a in ["train-svm", "--manifest", ds / "manifest.csv", "--features", ds / "fv.npz",
                                  "--out", ds / "svm0"]]) == 0
    return ds


# ------------------------------------------------------------------------------------------------ classify
def test_train_svm_holds_its_out_lock(vectors, tmp_path, capsys):
    out = tmp_path / "svm"
    argv = ["train-svm", "--manifest", vectors / "manifest.csv", "--features", vectors / "fv.npz", "--out", out,
            "--validation", "0.25"]
    _check(argv, out, capsys, blocked="scores.csv")


def test_train_knn_holds_its_out_lock(vectors, tmp_path, capsys):
    out = tmp_path / "knn"
    argv = ["train-knn", "--manifest", vectors / "manifest.csv", "--features", vectors / "fv.npz", "--out", out]
    _check(argv, out, capsys, blocked="scores.csv")


def test_evaluate_holds_its_out_lock(vectors, tmp_path, capsys):
    out = tmp_path / "ev"
    argv = ["evaluate", "--manifest", vectors / "manifest.csv", "--split", "1", vectors / "svm0" / "scores.csv",
            "--out", out]
    _check(argv, out, capsys, blocked="report.json")


def test_detect_and_evaluate_detections_hold_their_out_lock(vectors, tmp_path, capsys):
    gt = tmp_path / "gt.csv"
    gt.write_text("video_id,class,start,end\nc0_a01,class_0,0.2,1.0\nc1_a02,class_1,0.4,1.2\n")
    out = tmp_path / "det"
    argv = ["detect", "--manifest", vectors / "manifest.csv", "--features", vectors / "features.json",
            "--vectors", vectors / "fv.npz", "--svm", vectors / "svm0", "--annotations", gt, "--windows", "0.8",
            "--out", out]
    _check(argv, out, capsys, blocked="detections.csv")
    ev = tmp_path / "ev"
    argv = ["evaluate", "--detections", out / "detections.csv", "--annotations", gt, "--out", ev]
    _check(argv, ev, capsys, blocked="report.json")


def test_cv_holds_its_out_lock(vectors, capsys):
    out = vectors / "cv"
    argv = ["cv", "--manifest", vectors / "manifest.csv", "--features", vectors / "features.json",
            "--cache", vectors / "cache", "--out", out, "--splits", "1", *ENCODE]
    _check(argv, out, capsys, blocked="confusion.json")
    # a fold directory is a train-svm output of its own, with its own lock
    _refused_while_held([str(a) for a in argv], out / "fold1", capsys)


def test_the_real_command_line_refuses_a_held_directory(vectors, tmp_path):
    """Another process holds the lock (this one); the ``idtfv`` executable says so in one line, exit 2."""
    out = tmp_path / "svm"
    (out / "sub").mkdir(parents=True)
    (out / "scores.csv").write_text("the first run's scores\n")
    with exclusive_lock(out / LOCK_NAME, what="test run"):
        proc = subprocess.run([str(IDTFV), "train-svm", "--manifest", str(vectors / "manifest.csv"), "--features",
                               str(vectors / "fv.npz"), "--out", str(out)], capture_output=True, text=True,
                              env={**os.environ, "CI": "true"}, timeout=300)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1, proc.stderr
    assert lines[0] == (f"error: {out}: another idtfv run is using this directory; wait for it to finish (two runs "
                        "at once would delete or overwrite each other's files)")
    assert (out / "scores.csv").read_text() == "the first run's scores\n" and not (out / "report.json").exists()


def test_bad_input_writes_nothing_and_takes_no_lock(vectors, tmp_path, capsys):
    """Input checks come before the lock: a bad run never creates the output directory."""
    out = tmp_path / "svm"
    assert main(["train-svm", "--manifest", str(tmp_path / "none.csv"), "--features", str(vectors / "fv.npz"),
                 "--out", str(out)]) == 2
    assert "none.csv" in _one_error_line(capsys) and not out.exists()


# ------------------------------------------------------------------------------------------------ flow, encode
def test_flow_holds_its_rawframes_directory_lock(tmp_path, capsys):
    from idtfv.data.manifest import Manifest, VideoEntry, write_manifest

    rows = [VideoEntry(f"v{i}", write_tiny_video(tmp_path / "videos" / f"v{i}.avi", frames=4, seed=i), 0, "a",
                       group=f"g{i}") for i in range(2)]
    write_manifest(Manifest(rows, tmp_path), tmp_path / "m.csv")
    out = tmp_path / "rawframes"
    # another cache, hence another stage directory: the runner's own lock would not see the first run
    argv = ["flow", "--manifest", tmp_path / "m.csv", "--out", out, "--cache", tmp_path / "cache"]
    _check(argv, out, capsys, blocked=None, same=[f"v{i}/{name}" for i in range(2)
                                                    for name in ("img_00001.jpg", "flow_x_00003.jpg")])


def test_a_second_codebook_fit_waits_and_reuses_the_first(vectors, monkeypatch, capsys):
    """The codebook directory is a cache: a second fit of the same codebook waits for the first (its lock,
    ``wait=True``), then finds it complete and fits nothing."""
    import threading

    from idtfv.data.manifest import read_manifest
    from idtfv.encoding import EncodeParams
    from idtfv.encoding import stage

    cb = next((vectors / "cache").glob("codebook-*"))
    before = _files(cb)
    fits = []
    monkeypatch.setattr(stage, "_fit_and_save", lambda *a, **k: fits.append(a))
    params = EncodeParams(k=3, pca_samples=1500, gmm_iter=4)
    train = [e.video_id for e in read_manifest(vectors / "manifest.csv").split(1, "train")]
    summary = (cb / stage.CODEBOOK_SUMMARY).read_bytes()
    got = []
    with exclusive_lock(cb / LOCK_NAME, what="test run"):  # the first fit, still going: no summary yet
        (cb / stage.CODEBOOK_SUMMARY).unlink()
        t = threading.Thread(target=lambda: got.append(stage.prepare_codebooks(
            vectors / "features-x", train, params, cache=vectors / "cache", split=1)))
        t.start()
        t.join(1.0)
        assert t.is_alive() and not got  # waiting, not failing
        (cb / stage.CODEBOOK_SUMMARY).write_bytes(summary)  # the first fit ends with its summary
    t.join(60)
    assert got == [cb] and fits == []  # the same directory (the same hash), reused, not refitted
    assert "waiting for another codebook fit" in capsys.readouterr().err
    assert _files(cb) == before


# ------------------------------------------------------------------------------------------------ deep
@pytest.mark.slow  # a tiny dataset, one one-epoch training, four reruns (~4 s with the torch import, 2 cores)
def test_train_deep_holds_its_out_lock(tmp_path, capsys):
    pytest.importorskip("torch")
    from idtfv.data.synthetic import generate_dataset

    manifest = generate_dataset(tmp_path / "ds", n_classes=2, n_actors=3, n_frames=8, size=(48, 36), random_state=0)
    out = tmp_path / "run"
    argv = ["train-deep", "--manifest", manifest, "--model", "tsn", "--out", out, "--epochs", "1", "--width", "8",
            "--depth", "10", "--frames", "1", "--size", "32", "--device", "cpu", "--no-progress"]
    _check(argv, out, capsys, blocked="scores.csv", same=["scores.csv", "checkpoint.pt", "features.npz"])


def test_a_failed_run_leaves_no_directory_it_created(tmp_path, capsys):
    """``evaluate --out NEW`` with a score file that does not parse: exit 2, and NEW (which the lock created) is gone;
    a directory that was there before stays."""
    from idtfv.cli import main

    bad = tmp_path / "scores.csv"
    bad.write_text("not,a,score,file\n")
    new = tmp_path / "new" / "eval"
    assert main(["evaluate", str(bad), "--out", str(new)]) == 2
    assert "error:" in capsys.readouterr().err and not new.exists()
    old = tmp_path / "old"
    old.mkdir()
    assert main(["evaluate", str(bad), "--out", str(old)]) == 2
    assert old.is_dir()


@pytest.mark.parametrize("how", ["file in the way", "EACCES", "ENOENT", "ENOSPC"])
def test_an_output_directory_that_cannot_be_made_is_one_line_naming_it(tmp_path, monkeypatch, how):
    """``idtfv evaluate --out /proc/ev`` said ``error: /proc/ev: No such file or directory`` (the OS's reason for a
    folder it was asked to create): every command's output directory is made by
    :func:`idtfv.atomic.make_directory`, which names the directory, the file in its way when there is one, and the
    fix; a full disk stays a DiskFullError (a dataset run stops on it)."""
    import errno
    import pathlib

    from idtfv.errors import DiskFullError, IdtfvError
    from idtfv.lock import output_dir_lock

    out = tmp_path / "runs" / "ev"
    if how == "file in the way":
        (tmp_path / "runs").write_text("")
    else:
        code = getattr(errno, how)
        real = pathlib.Path.mkdir

        def refusing(self, *args, **kwargs):
            if self == out:
                raise OSError(code, os.strerror(code), str(self))
            return real(self, *args, **kwargs)

        monkeypatch.setattr(pathlib.Path, "mkdir", refusing)
    with pytest.raises(IdtfvError) as info:
        with output_dir_lock(out):
            pytest.fail("the block ran without its directory")
    if how == "ENOSPC":
        assert isinstance(info.value, DiskFullError) and str(out) in str(info.value)
        return
    why = f"{tmp_path / 'runs'} is a file, not a directory" if how == "file in the way" else os.strerror(code)
    assert str(info.value) == f"{out}: cannot create this directory ({why}); give an output directory you can " \
                              "write to"
    assert not out.exists()
