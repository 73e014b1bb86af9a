"""The Makefile's pipeline targets, run with a fake ``idtfv`` (no real stage runs): stage outputs are real files
whose names carry a hash of every variable that changes the stage's result (chained downstream), so make reruns
exactly the stages an option change affects, keeps the results of other options, and never reports an old result
as new."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from conftest import fake_venv

REPO = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.skipif(shutil.which("make") is None, reason="needs GNU make")

# Stands in for the idtfv console script: logs the call and creates the file or directory after --out (train-svm: a
# report.json recording its arguments, and a confusion.png; dataset: a valid 3-split manifest, which make's SPLIT
# check reads).
FAKE_IDTFV = """#!/usr/bin/env bash
set -eu
echo "$*" >> "$IDTFV_LOG"
out=""
prev=""
for arg in "$@"; do
  if [ "$prev" = "--out" ]; then out="$arg"; fi
  prev="$arg"
done
case "$1" in
  train-svm) mkdir -p "$out" && printf '{"accuracy": 1.0, "args": "%s"}\\n' "$*" > "$out/report.json" \\
             && echo png > "$out/confusion.png" ;;
  flow|train-deep) mkdir -p "$out" ;;
  dataset) mkdir -p "$(dirname "$out")" && printf '%s\n' "$MANIFEST_CSV" > "$out" ;;
  *) mkdir -p "$(dirname "$out")" && echo "$1" > "$out" ;;
esac
"""

MANIFEST_CSV = """video_id,path,label,label_name,group,split1,split2,split3,frames,fps,width,height
a,walk/a.avi,0,walk,g1,train,train,test,,,,
b,run/b.avi,1,run,g2,test,test,train,,,,"""

STAGES = ("dataset", "features", "encode", "train-svm")


def _fake_venv(tmp_path):
    return fake_venv(tmp_path, FAKE_IDTFV)


def _make(tmp_path, venv, *targets, check=True, repo=REPO, **variables):
    args = ["make", "--no-print-directory", "-C", str(repo), *targets, f"VENV={venv}",
            f"CACHE={tmp_path / 'cache'}", *[f"{k}={v}" for k, v in variables.items()]]
    env = {**os.environ, "IDTFV_LOG": str(tmp_path / "calls.log"), "MANIFEST_CSV": MANIFEST_CSV}
    env.pop("MAKEFLAGS", None)
    proc = subprocess.run(args, capture_output=True, text=True, env=env, timeout=60)
    if check:
        assert proc.returncode == 0, proc.stderr
    return proc


def _log(tmp_path) -> list[str]:
    log = tmp_path / "calls.log"
    return log.read_text().splitlines() if log.exists() else []


def _new_calls(tmp_path, before: int) -> list[str]:
    return _log(tmp_path)[before:]


def _out_of(line: str) -> str:
    words = line.split()
    return words[words.index("--out") + 1]


def _outputs(lines) -> dict[str, str]:
    """{subcommand: its --out path} of logged calls."""
    return {line.split()[0]: _out_of(line) for line in lines}


def _run(tmp_path, venv, target="train-svm", **variables) -> dict[str, str]:
    """Run ``make target`` and return {subcommand: --out} of the stages it ran."""
    before = len(_log(tmp_path))
    _make(tmp_path, venv, target, **variables)
    return _outputs(_new_calls(tmp_path, before))


def test_makefile_stages_are_file_targets_that_make_skips_when_done(tmp_path):
    venv = _fake_venv(tmp_path)
    _make(tmp_path, venv, "train-svm", JOBS=3, SEED=5)
    lines = _log(tmp_path)
    assert [line.split()[0] for line in lines] == list(STAGES)
    outs = _outputs(lines)
    data = Path(outs["dataset"]).parent
    assert data.parent == tmp_path / "cache" and re.fullmatch(r"default-[0-9a-f]{8}", data.name), data
    assert outs["dataset"] == str(data / "manifest.csv") and "--kind default" in lines[0]
    assert re.fullmatch(r"features-[0-9a-f]{8}\.json", Path(outs["features"]).name)
    assert re.fullmatch(r"fisher_split1-[0-9a-f]{8}\.npz", Path(outs["encode"]).name)
    assert re.fullmatch(r"svm_split1-[0-9a-f]{8}", Path(outs["train-svm"]).name)
    assert all(Path(p).parent == data for p in outs.values())
    assert f"--manifest {data / 'manifest.csv'} --cache {data} --out {outs['features']}" in lines[1]
    assert "--jobs 3" in lines[1] and "--seed 5" in lines[1] and "--scheduler" not in lines[1]
    assert f"--features {outs['features']} --split 1" in lines[2] and "--seed 5" in lines[2]
    assert f"--features {outs['encode']}" in lines[3] and "--seed 5" in lines[3]

    _make(tmp_path, venv, "train-svm", JOBS=3, SEED=5)
    assert len(_log(tmp_path)) == 4  # everything up to date: nothing rerun

    Path(outs["features"]).unlink()  # e.g. removed by .DELETE_ON_ERROR after failed videos
    again = _run(tmp_path, venv, SEED=5, SCHEDULER="tcp://h:8786")
    assert list(again) == ["features", "encode", "train-svm"] and again == {k: outs[k] for k in again}
    assert "--scheduler tcp://h:8786" in _log(tmp_path)[4]


def _repo_at_version(where: Path, version: str) -> Path:
    """A copy of the files the Makefile reads (itself, pyproject.toml, idtfv/__init__.py) with another version."""
    (where / "idtfv").mkdir(parents=True)
    for name in ("Makefile", "pyproject.toml"):
        shutil.copy(REPO / name, where / name)
    init = (REPO / "idtfv" / "__init__.py").read_text()
    assert init.count('__version__ = "') == 1
    (where / "idtfv" / "__init__.py").write_text(re.sub(r'__version__ = "[^"]*"', f'__version__ = "{version}"', init))
    return where


def test_another_version_of_idtfv_reruns_every_stage_that_runs_its_code_into_new_files(tmp_path):
    """After an upgrade, ``make train-svm`` found the old version's stamps up to date and reported their results
    (the stage runner's own keys include the version, but make never called it). The version joins the hashes of the
    stages that run idtfv's code; the manifest (the dataset's files) is kept."""
    old = _repo_at_version(tmp_path / "old", "0.0.1")
    new = _repo_at_version(tmp_path / "new", "0.0.2")
    venv = _fake_venv(tmp_path)
    first = {}
    for repo in (old, new):
        before = len(_log(tmp_path))
        _make(tmp_path, venv, "train-svm", repo=repo)
        first.setdefault(repo, _outputs(_new_calls(tmp_path, before)))
    assert list(first[old]) == list(STAGES) and list(first[new]) == list(STAGES[1:])
    assert all(first[new][stage] != first[old][stage] for stage in STAGES[1:])
    before = len(_log(tmp_path))
    _make(tmp_path, venv, "train-svm", repo=old)  # going back: the old version's files are still done
    assert _new_calls(tmp_path, before) == []


@pytest.mark.parametrize("variables, reruns", [
    ({"JOBS": "1", "SCHEDULER": "tcp://h:8786", "ALLOW_FAILED": "1"}, ()),  # how it runs, not what it computes
    ({"SEED": "1"}, STAGES),
    ({"DATASET": "folder", "ROOT": "videos"}, STAGES),
    ({"PRESET": "fast"}, STAGES[1:]),
    ({"FEATURES_ARGS": "--max-frames 50"}, STAGES[1:]),
    ({"SPLIT": "2"}, STAGES[2:]),
    ({"ENCODE_ARGS": "--k 64"}, STAGES[2:]),
    ({"SVM_ARGS": "--C 10"}, STAGES[3:]),
])
def test_a_changed_variable_reruns_exactly_the_stages_it_affects_into_new_files(tmp_path, variables, reruns):
    venv = _fake_venv(tmp_path)
    first = _run(tmp_path, venv)
    assert list(first) == list(STAGES)
    second = _run(tmp_path, venv, **variables)
    assert list(second) == list(reruns), f"{variables}: reran {list(second)}, expected {list(reruns)}"
    for stage, out in second.items():
        assert out != first[stage], f"{variables}: {stage} overwrote the result of other options"
    # a rerun stage reads the new upstream files, never the old ones
    calls = _new_calls(tmp_path, 4)
    for line in calls:
        for stage, out in first.items():
            if stage in second:
                assert out not in line.split(), f"{variables}: {line!r} uses {stage}'s old output {out}"
    # both results are kept: going back to the defaults or to the new options reruns nothing
    assert _run(tmp_path, venv) == {}
    assert _run(tmp_path, venv, **variables) == {}


def test_streaming_has_its_own_files_and_a_subset_sample_is_per_split(tmp_path):
    venv = _fake_venv(tmp_path)
    stream = _run(tmp_path, venv, "encode", STREAMING="1")
    feat, enc = _new_calls(tmp_path, 1)
    assert "--store sample --split 1" in feat and "--streaming" in enc
    assert re.fullmatch(r"features_streaming-[0-9a-f]{8}\.json", Path(stream["features"]).name)
    assert re.fullmatch(r"fisher_split1_streaming-[0-9a-f]{8}\.npz", Path(stream["encode"]).name)
    assert f"--features {stream['features']}" in enc
    before = len(_log(tmp_path))
    plain = _run(tmp_path, venv, "encode")  # the default path has its own files
    feat, enc = _new_calls(tmp_path, before)
    assert "--store" not in feat and "--streaming" not in enc
    assert plain["features"] != stream["features"] and plain["encode"] != stream["encode"]
    # a full streaming sample serves every split; a --subset sample comes from SPLIT's training videos
    assert list(_run(tmp_path, venv, "encode", STREAMING="1", SPLIT="2")) == ["encode"]
    subset = {split: _run(tmp_path, venv, "encode", STREAMING="1", SPLIT=split, FEATURES_ARGS="--subset 0.5")
              for split in ("1", "2")}
    assert list(subset["1"]) == list(subset["2"]) == ["features", "encode"]
    assert subset["1"]["features"] != subset["2"]["features"]


def test_flow_and_deep_names_follow_their_variables(tmp_path):
    venv = _fake_venv(tmp_path)
    first = _run(tmp_path, venv, "train-deep", MODALITY="flow")
    assert list(first) == ["dataset", "flow", "train-deep"]
    assert list(_run(tmp_path, venv, "train-deep", MODALITY="flow", FLOW_ARGS="--bound 15")) == ["flow", "train-deep"]
    assert list(_run(tmp_path, venv, "train-deep", MODALITY="flow", MODEL="i3d")) == ["train-deep"]
    assert list(_run(tmp_path, venv, "train-deep", MODALITY="flow", DEEP_ARGS="--epochs 2")) == ["train-deep"]
    assert list(_run(tmp_path, venv, "train-deep", MODALITY="flow", SEED="0", JOBS="4")) == []
    # an RGB model needs no flow: a flow option does not rerun it
    assert list(_run(tmp_path, venv, "train-deep")) == ["train-deep"]
    assert list(_run(tmp_path, venv, "train-deep", FLOW_ARGS="--bound 15")) == []


def test_demo_prints_where_the_report_of_these_options_is(tmp_path):
    venv = _fake_venv(tmp_path)
    proc = _make(tmp_path, venv, "demo")
    reports = re.findall(r"^report: (\S+/report\.json)$", proc.stdout, flags=re.M)
    pngs = re.findall(r"^confusion matrix: (\S+/confusion\.png)$", proc.stdout, flags=re.M)
    assert reports and pngs, proc.stdout
    report = Path(reports[0])
    assert report.is_file() and Path(pngs[0]) == report.with_name("confusion.png") and Path(pngs[0]).is_file()
    assert report.parent.parent.parent == tmp_path / "cache"
    assert "--seed 0" in proc.stdout  # the summary of that report (the fake records its arguments)

    proc = _make(tmp_path, venv, "demo", SEED="1")  # new options: a new result, never the old report
    new = Path(re.findall(r"^report: (\S+)$", proc.stdout, flags=re.M)[0])
    assert new != report and new.is_file()
    assert "--seed 1" in proc.stdout and "--seed 0" not in proc.stdout
    proc = _make(tmp_path, venv, "demo")  # back to the first options: nothing to rerun, their own report
    assert Path(re.findall(r"^report: (\S+)$", proc.stdout, flags=re.M)[0]) == report and "--seed 0" in proc.stdout


def test_result_names_need_no_virtualenv(tmp_path):
    """The hashes are computed by make and POSIX tools: the same names with or without the venv's Python."""
    venv = _fake_venv(tmp_path)
    with_venv = _make(tmp_path, venv, "-n", "train-svm").stdout
    without = _make(tmp_path, tmp_path / "no-venv", "-n", "train-svm").stdout
    names = re.findall(r"--out (\S+)", with_venv)
    assert len(names) == 4 and names == re.findall(r"--out (\S+)", without)


def test_makefile_help_is_the_default_goal_and_lists_targets(tmp_path):
    proc = _make(tmp_path, _fake_venv(tmp_path))
    for target in ("install", "features", "encode", "train-svm", "demo", "flow", "train-deep", "test", "bench",
                   "clean"):
        assert f"\n  {target} " in proc.stdout
    for variable in ("DATASET", "ROOT", "SPLIT", "JOBS", "CACHE", "SCHEDULER", "SEED", "VENV"):
        assert f"\n  {variable} " in proc.stdout
    assert not (tmp_path / "calls.log").exists()
