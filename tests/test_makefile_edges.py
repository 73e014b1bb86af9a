"""Promises at the edges of ``make features encode train-svm``: a bad variable or a missing prerequisite gives one
``error:`` line that names it and the fix, a non-zero status, and nothing that a later ``make`` takes for done.

The Makefile runs with a stand-in virtualenv whose ``idtfv`` is either a recorder (the command must not run) or the
real command line (``python -m idtfv``), so that the line seen is the command's own.
"""

from __future__ import annotations

import json
import errno
import os
import re
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from conftest import fake_venv

from idtfv import cli
from idtfv.errors import FormatError, IdtfvError, ParameterError
from idtfv.runner import read_stamp, run_stage

REPO = Path(__file__).resolve().parents[1]
needs_make = pytest.mark.skipif(shutil.which("make") is None, reason="needs GNU make")

RECORDER = """#!/usr/bin/env bash
echo "$*" >> "$IDTFV_LOG"
"""
REAL = f"""#!/usr/bin/env bash
exec {shlex.quote(sys.executable)} -m idtfv "$@"
"""


def _make(tmp_path, script, *args, **environ):
    venv = fake_venv(tmp_path, script)
    env = {**os.environ, "IDTFV_LOG": str(tmp_path / "calls.log"), **environ}
    env.pop("MAKEFLAGS", None)
    if "MAKELEVEL" not in environ:  # under `make test` the suite runs at MAKELEVEL 1: these makes are typed ones
        env.pop("MAKELEVEL", None)
    return subprocess.run(["make", "--no-print-directory", "-C", str(REPO), f"VENV={venv}", *args],
                          capture_output=True, text=True, env=env, timeout=60)


def _error_lines(stderr: str) -> list[str]:
    """The lines of ``stderr`` that are not make's own ``make: *** [...] Error N`` trailer."""
    return [line for line in stderr.splitlines() if line.strip() and not line.startswith("make: ***")]


# ----------------------------------------------------------------------------------------------- variables
def _declared() -> set[str]:
    return set(re.findall(r"^([A-Z_]+) \?=", (REPO / "Makefile").read_text(), flags=re.M))


@needs_make
@pytest.mark.parametrize("variable, value", [("K", "64"), ("DATSET", "ucf101"), ("jobs", "4")])
def test_a_variable_the_makefile_does_not_read_is_refused_in_one_line(tmp_path, variable, value):
    """K=64 (for ENCODE_ARGS="--k 64") or a typo used to be ignored: the default pipeline ran without a word."""
    proc = _make(tmp_path, RECORDER, "features", f"{variable}={value}", f"CACHE={tmp_path / 'cache'}")
    assert proc.returncode != 0
    lines = _error_lines(proc.stderr)
    assert len(lines) == 1 and "*** error: " in lines[0], proc.stderr
    assert f"{variable}={value}" in lines[0] and "make help" in lines[0] and "_ARGS" in lines[0]
    assert not (tmp_path / "calls.log").exists() and not (tmp_path / "cache").exists()


@needs_make
def test_a_makefile_running_this_one_may_pass_its_own_variables_down(tmp_path):
    """An outer ``make all X=1`` whose recipe runs ``$(MAKE) -C idtfv features`` hands X down on the command line."""
    proc = _make(tmp_path, RECORDER, "features", "X=1", f"CACHE={tmp_path / 'cache'}", MAKELEVEL="1")
    assert proc.returncode == 0, proc.stderr
    assert [line.split()[0] for line in (tmp_path / "calls.log").read_text().splitlines()] == ["dataset", "features"]


@needs_make
def test_every_declared_variable_is_accepted_and_read_and_help_lists_exactly_them(tmp_path):
    declared = _declared()
    assert {"DATASET", "ROOT", "SPLIT", "JOBS", "CACHE", "SEED", "PRESET", "ENCODE_ARGS", "SVM_ARGS"} <= declared
    text = (REPO / "Makefile").read_text()
    for name in declared:  # read somewhere besides its declaration
        assert re.search(rf"\$\({name}\)|\$\(call \w+,\$\({name}\)\)", text), f"the Makefile never reads {name}"
    proc = _make(tmp_path, RECORDER, "help", *[f"{name}=1" for name in sorted(declared)])
    assert proc.returncode == 0, proc.stderr
    variables = proc.stdout.split("\nvariables:\n", 1)[1].split("\n  now:", 1)[0]
    listed = set()
    for line in variables.splitlines():
        first = line.split()[0] if line.split() else ""
        if first == "*_ARGS":  # one line for the extra-options variables, named after it
            listed |= set(re.findall(r"\b[A-Z]+_ARGS\b", line))
        elif re.fullmatch(r"[A-Z_]+", first) and line.startswith("  ") and not line.startswith("   "):
            listed.add(first)
    assert listed == declared, f"help lists {sorted(listed - declared)} extra, {sorted(declared - listed)} missing"
    assert not (tmp_path / "calls.log").exists()


# ----------------------------------------------------------------------------------------------- CACHE
@needs_make
def test_a_cache_that_is_a_file_is_the_commands_one_error_line(tmp_path):
    """mkdir in the recipe used to fail first with its own message (``mkdir: cannot create directory ...``)."""
    blocker = tmp_path / "cache"
    blocker.write_text("not a directory\n")
    proc = _make(tmp_path, REAL, "features", f"CACHE={blocker}", "DATASET=folder", f"ROOT={_tree(tmp_path)}")
    assert proc.returncode != 0
    lines = _error_lines(proc.stderr)
    assert len(lines) == 1 and lines[0].startswith("error: --out "), proc.stderr
    assert f"{blocker} is a file, not a directory" in lines[0] and "CACHE" in lines[0]
    assert blocker.read_text() == "not a directory\n"


def _tree(tmp_path) -> Path:
    """A folder dataset of 2 classes x 2 empty "videos": listed by name, never decoded before the probe."""
    root = tmp_path / "videos"
    for name in ("walk/a.avi", "walk/b.avi", "run/c.avi", "run/d.avi"):
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(b"")
    return root


def test_dataset_out_under_a_file_is_one_line_before_the_videos_are_probed(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("")
    status = cli.main(["dataset", "--kind", "folder", "--root", str(_tree(tmp_path)),
                       "--out", str(blocker / "sub" / "manifest.csv")])
    err = capsys.readouterr().err
    assert status == 2 and err.count("\n") == 1, err  # no probe warning about the empty files: none was probed
    assert err.startswith("error: --out ") and f"{blocker} is a file, not a directory" in err


def test_dataset_kind_without_root_names_make_variable(tmp_path, capsys):
    assert cli.main(["dataset", "--kind", "ucf101", "--out", str(tmp_path / "m.csv")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: --kind ucf101 needs --root") and "DATASET=ucf101 ROOT=" in err
    assert not list(tmp_path.iterdir())  # nothing created for a refused run


@pytest.mark.parametrize("jobs", ["0", "-3"])
def test_dataset_jobs_zero_or_below_minus_one_is_one_line_before_anything_is_written(tmp_path, capsys, jobs):
    """make JOBS=0 DATASET=folder used to end in joblib's traceback (n_jobs == 0 in Parallel has no meaning)."""
    out = tmp_path / "out" / "manifest.csv"
    assert cli.main(["dataset", "--kind", "folder", "--root", str(_tree(tmp_path)), "--jobs", jobs,
                     "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err == f"error: --jobs must be a positive integer or -1 (all cores), got {jobs}\n"
    assert not out.parent.exists()


@pytest.mark.parametrize("jobs", [0, -2, 1.5, True])
def test_probe_manifest_refuses_a_bad_jobs_whatever_the_number_of_videos(tmp_path, jobs):
    from idtfv.data.manifest import Manifest, VideoEntry, probe_manifest

    one = Manifest([VideoEntry("a", Path("a.avi"), 0, "walk", "", {1: "train"})], tmp_path, class_names=["walk"])
    with pytest.raises(ParameterError, match=r"jobs must be a positive integer or -1"):
        probe_manifest(one, jobs=jobs)  # one video used to skip the pool and hide the bad value


@pytest.mark.parametrize("parts, warned", [
    ({"walk/a.avi": "train", "walk/b.avi": "test", "run/c.avi": "test", "run/d.avi": "test"}, ["run"]),
    ({"walk/a.avi": "train", "walk/b.avi": "test", "run/c.avi": "train", "run/d.avi": "test"}, []),
])
def test_a_split_without_training_videos_of_a_class_is_one_warning_at_the_dataset_step(tmp_path, capsys, parts,
                                                                                        warned):
    """A small folder tree's seeded split can put a whole class in test; train-svm said so only after features and
    encode had run."""
    split_file = tmp_path / "split.txt"
    split_file.write_text("".join(f"{rel} {part}\n" for rel, part in parts.items()))
    out = tmp_path / "out" / "manifest.csv"
    assert cli.main(["dataset", "--kind", "folder", "--root", str(_tree(tmp_path)), "--split-file", str(split_file),
                     "--out", str(out)]) == 0
    lines = [line for line in capsys.readouterr().err.splitlines() if "training video" in line]
    if warned:
        assert len(lines) == 1 and lines[0].startswith("warning: split 1 has no training video of 1 of 2 classes")
        assert "('run')" in lines[0] and "SPLIT_FILE" in lines[0]
    else:
        assert lines == []
    assert out.is_file()  # a warning: the manifest is written


# ----------------------------------------------------------------------------------------------- *_ARGS
@pytest.mark.parametrize("argv, prog", [
    (["dataset", "--out", "m.csv", "--bogus"], "idtfv dataset"),
    (["--bogus"], "idtfv"),
])
def test_an_unknown_option_is_named_with_the_subcommand_it_was_given_to(tmp_path, capsys, argv, prog):
    """FEATURES_ARGS="--bogus" used to say "idtfv: unrecognized arguments" and point at ``idtfv --help``."""
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert err == f"error: {prog}: unrecognized arguments: --bogus (see {prog} --help)\n"


# ----------------------------------------------------------------------------------------------- stale stamps
def _stamp(tmp_path, done):
    results = tmp_path / "features-0123"
    results.mkdir()
    stamp = tmp_path / "features-ab.json"
    stamp.write_text(json.dumps({"stage": "features", "dir": str(results), "params": {}, "done": done,
                                 "failed": {}, "empty": {}}))
    return stamp, results


def test_a_stamp_whose_results_directory_was_deleted_says_so_and_how_to_rerun(tmp_path):
    """The stamp used to read fine and encode stopped with "split 1 has no training video with features"."""
    stamp, results = _stamp(tmp_path, ["a", "b"])
    assert read_stamp(stamp)["dir"] == results
    shutil.rmtree(results)
    with pytest.raises(FormatError, match=r"results directory .*features-0123 is gone.*REFRESH=1"):
        read_stamp(stamp)


def test_a_stamp_with_no_done_video_needs_no_results_directory(tmp_path):
    stamp, results = _stamp(tmp_path, [])
    shutil.rmtree(results)
    assert read_stamp(stamp)["done"] == []


# ----------------------------------------------------------------------------------------------- unwritable cache
@dataclass(frozen=True)
class _Item:
    video_id: str


def _ones(entry, params):
    return {"x": np.ones(3)}


def test_a_cache_the_runner_cannot_create_its_stage_directory_in_is_one_error_naming_it(tmp_path):
    """It used to be the OS's bare ``[Errno 20] Not a directory: '...'`` (or ``[Errno 30] Read-only file system``)."""
    blocker = tmp_path / "cache"
    blocker.write_text("")
    with pytest.raises(IdtfvError, match=r"cannot create the 'toy' stage directory .*Not a directory.*--cache") as info:
        run_stage("toy", _ones, [_Item("a")], params={}, cache_root=blocker / "data")
    assert not isinstance(info.value, OSError) and str(blocker) in str(info.value)
    result = run_stage("toy", _ones, [_Item("a")], params={}, cache_root=tmp_path / "fixed")  # the fix runs
    assert result.done == ["a"] and np.array_equal(np.load(result.path("a"))["x"], np.ones(3))


@pytest.mark.parametrize("code", [errno.EACCES, errno.EROFS, errno.ENOENT])
def test_a_cache_folder_that_takes_no_new_directory_is_one_error_naming_it(tmp_path, monkeypatch, code):
    """``--cache /proc/cache`` said ``error: /proc/cache: No such file or directory`` (mkdir's ENOENT there, as
    EACCES or EROFS elsewhere): one line naming the cache and the fix, whichever the OS's reason."""
    import pathlib

    real = pathlib.Path.mkdir

    def refusing(self, *args, **kwargs):
        if tmp_path / "refuses" in (self, *self.parents):
            raise OSError(code, os.strerror(code), str(self))
        return real(self, *args, **kwargs)

    monkeypatch.setattr(pathlib.Path, "mkdir", refusing)
    with pytest.raises(IdtfvError,
                       match=rf"cannot create the 'toy' stage directory .*\({os.strerror(code)}\).*--cache"):
        run_stage("toy", _ones, [_Item("a")], params={}, cache_root=tmp_path / "refuses" / "cache")


@needs_make
@pytest.mark.parametrize("variable, value, option, instead", [
    ("ENCODE_ARGS", "--split 2", "--split", "set SPLIT=... instead"),
    ("SVM_ARGS", "--C 10 --seed=3", "--seed", "set SEED=... instead"),
    ("FEATURES_ARGS", "--out x.json", "--out", "(its place in the cache)"),
    ("DEEP_ARGS", "--model i3d", "--model", "set MODEL=... instead"),
])
def test_an_option_make_passes_itself_is_refused_in_its_args_variable(tmp_path, variable, value, option, instead):
    """ENCODE_ARGS="--split 2" overrode the Makefile's own --split 1 (argparse keeps the last value): split-2 vectors
    were written as fisher_split1-*.npz. An option the Makefile passes to that command itself is refused in one
    line naming the variable to set; the stage's own options (--k 64, --C 10, cv's --splits) pass."""
    proc = _make(tmp_path, RECORDER, "features", f"{variable}={value}", f"CACHE={tmp_path / 'cache'}")
    assert proc.returncode != 0
    lines = _error_lines(proc.stderr)
    assert len(lines) == 1 and "*** error: " in lines[0], proc.stderr
    assert f'{variable}="{value}"' in lines[0] and f"make passes {option} " in lines[0] and instead in lines[0]
    assert not (tmp_path / "calls.log").exists() and not (tmp_path / "cache").exists()
    (tmp_path / "ok").mkdir()
    ok = _make(tmp_path / "ok", RECORDER, "features", 'ENCODE_ARGS=--k 64', 'SVM_ARGS=--C 10', 'CV_ARGS=--splits 1,2',
               'DETECT_ARGS=--seed 1', f"CACHE={tmp_path / 'ok' / 'cache'}")
    assert ok.returncode == 0, ok.stderr


# ----------------------------------------------------------------------------------------------- SPLIT
#: an ``idtfv`` stand-in that records its arguments and, for ``dataset ... --out M``, writes $IDTFV_MANIFEST to M
MANIFEST_WRITER = RECORDER + """if [ "$1" = dataset ]; then
  while [ $# -gt 0 ]; do
    if [ "$1" = --out ]; then mkdir -p "$(dirname "$2")" && cp "$IDTFV_MANIFEST" "$2"; fi; shift
  done
fi
"""


def _three_split_manifest(tmp_path) -> Path:
    from idtfv.data.manifest import Manifest, VideoEntry, write_manifest

    root = _tree(tmp_path)
    rows = [VideoEntry(p.stem, p, label, p.parent.name, p.stem, {1: part, 2: part, 3: part})
            for label, (p, part) in enumerate([(root / "walk/a.avi", "train"), (root / "run/c.avi", "train")])]
    rows += [VideoEntry(p.stem, p, label, p.parent.name, p.stem, {1: "test", 2: "test", 3: "test"})
             for label, p in enumerate([root / "walk/b.avi", root / "run/d.avi"])]
    return write_manifest(Manifest(rows, root, class_names=["walk", "run"]), tmp_path / "template.csv")


@needs_make
@pytest.mark.parametrize("goals, split, why", [
    (["encode"], "4", "split 4 does not exist; this manifest has splits 1..3"),
    (["features", "encode", "train-svm"], "0", "split 0 does not exist"),
    (["train-svm"], "x", "expected a split number"),
])
def test_a_split_the_manifest_lacks_is_refused_before_the_features_are_extracted(tmp_path, goals, split, why):
    """``make train-svm SPLIT=4`` on a 3-split dataset extracted every video's features (hours on UCF101) before
    encode said that split 4 does not exist. The goals that read SPLIT after the features stage check it against
    the manifest first: one line, and the features command never runs."""
    env = {"IDTFV_MANIFEST": str(_three_split_manifest(tmp_path))}
    common = ["DATASET=folder", f"ROOT={tmp_path / 'videos'}", f"CACHE={tmp_path / 'cache'}"]
    proc = _make(tmp_path, MANIFEST_WRITER, *goals, f"SPLIT={split}", *common, **env)
    assert proc.returncode != 0
    lines = _error_lines(proc.stderr)
    assert len(lines) == 1 and lines[0].startswith(f"error: SPLIT={split}: ") and why in lines[0], proc.stderr
    calls = (tmp_path / "calls.log").read_text().splitlines()
    assert [c.split()[0] for c in calls] == ["dataset"], calls
    # an existing split goes on to the features and encode commands; `make features` alone checks nothing
    for name, args, want in (("ok", ["encode", "SPLIT=3"], ["features", "encode"]),
                              ("alone", ["features", "SPLIT=4", "REFRESH=1"], ["features"])):
        (tmp_path / name).mkdir()
        proc = _make(tmp_path / name, MANIFEST_WRITER, *args, *common, **env)
        assert proc.returncode == 0, proc.stderr
        assert [c.split()[0] for c in (tmp_path / name / "calls.log").read_text().splitlines()] == want
