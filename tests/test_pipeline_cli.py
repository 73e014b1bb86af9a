"""Tests of the idtfv command (idtfv.cli): dispatch, stage stamps, exit codes, one-line errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import types
from pathlib import Path

import numpy as np
import pytest

from conftest import write_tiny_video
from idtfv.data.manifest import Manifest, VideoEntry, read_manifest, write_manifest
from idtfv import cli, idt
from idtfv.cache import load_valid, param_hash
from idtfv.idt import cli as idt_cli
from idtfv.idt.stage import features_params
from idtfv.runner import read_index, read_stamp

_SCRIPT = Path(sys.executable).with_name("idtfv")
IDTFV = [str(_SCRIPT)] if _SCRIPT.exists() else [sys.executable, "-m", "idtfv"]

FAKE_STAGE = textwrap.dedent(
    """
    import numpy as np
    from idtfv.errors import VideoError

    def fake_features(entry, params):
        data = entry.path.read_bytes()
        if not data.startswith(b"RIFF"):
            raise VideoError(entry.path, "not an AVI file; re-encode it")
        return {"n_bytes": np.int64(len(data)), "seed": np.int64(params["idt"]["seed"])}
    """
)
RUN_WITH_FAKE = (
    "import sys, fake_stage_mod, idtfv.cli as c, idtfv.idt.cli as f; "
    "f.STAGE_FUNCS['all'] = fake_stage_mod.fake_features; sys.exit(c.main(sys.argv[1:]))"
)


def _env(extra_path=None):
    env = {**os.environ, "CI": "true"}
    if extra_path is not None:
        env["PYTHONPATH"] = os.pathsep.join([str(extra_path), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    return env


def _dataset(tmp_path, *, bad=True, frames=12):
    """Two tiny real videos (and one file that is not a video) in a written manifest."""
    videos = tmp_path / "videos"
    rows = []
    for i, name in enumerate(["walk_a", "wave_b"]):
        path = write_tiny_video(videos / f"{name}.avi", frames=frames, seed=i, motion=(2, i))
        rows.append(VideoEntry(name, path, i, name.split("_")[0], group=f"g{i}", splits={1: "train"}))
    if bad:
        (videos / "broken.avi").write_text("this is not a video")
        rows.append(VideoEntry("broken", videos / "broken.avi", 0, "walk", group="g9", splits={1: "test"}))
    manifest_path = tmp_path / "manifest.csv"
    write_manifest(Manifest(rows, tmp_path), manifest_path)
    return manifest_path


def _run(args, *, env=None, prefix=None):
    return subprocess.run([*(prefix or IDTFV), *map(str, args)], capture_output=True, text=True,
                          env=env or _env(), timeout=300)


def _assert_one_line_error(proc, *needles):
    assert proc.returncode == 2, (proc.returncode, proc.stdout, proc.stderr)
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    assert "Traceback" not in proc.stderr
    for needle in needles:
        assert needle in lines[0]


# ------------------------------------------------------------------------------------------------ errors, help
def test_missing_manifest_is_a_one_line_error_with_exit_2(tmp_path):
    missing = tmp_path / "nope" / "manifest.csv"
    proc = _run(["features", "--manifest", missing, "--cache", tmp_path / "c", "--out", tmp_path / "f.json"])
    _assert_one_line_error(proc, str(missing))
    assert not (tmp_path / "f.json").exists()


def _assert_main_one_line_error(capsys, argv, *needles):
    status = cli.main([str(a) for a in argv])
    err = capsys.readouterr().err
    assert status == 2 and err.startswith("error: ") and len(err.splitlines()) == 1, err
    for needle in needles:
        assert needle in err


def test_dataset_without_root_or_with_a_missing_root_exits_2(tmp_path, capsys):
    _assert_main_one_line_error(capsys, ["dataset", "--kind", "ucf101", "--out", tmp_path / "m.csv"], "--root")
    _assert_main_one_line_error(
        capsys, ["dataset", "--kind", "folder", "--root", tmp_path / "absent", "--out", tmp_path / "m.csv"],
        str(tmp_path / "absent"))
    assert not (tmp_path / "m.csv").exists()
    capsys.readouterr()
    _assert_main_one_line_error(capsys, ["features", "--manifest"], "--manifest")  # a usage error: one line too


def test_help_lists_the_builtin_subcommands(capsys):
    assert cli.main(["--help"], commands={"dataset": cli.add_dataset}) == 0
    out = capsys.readouterr().out
    assert "dataset" in out and "features" not in out
    assert cli.main([], commands={"dataset": cli.add_dataset}) == 2  # no subcommand: help on stderr, usage status
    assert "COMMAND" in capsys.readouterr().err


STAGE_COMMANDS = {"features", "flow", "encode", "train-svm", "train-knn", "evaluate", "fuse", "cv", "train-deep",
                  "stack-scores", "detect", "dataset-untrimmed"}


def test_every_entry_point_adds_exactly_the_subcommand_it_names():
    table = cli.command_table()
    assert set(table) == {"dataset"} | STAGE_COMMANDS
    for name, add in table.items():
        parser = cli.OneLineParser(prog="idtfv")
        sub = parser.add_subparsers(dest="command")
        add(sub)
        assert set(sub.choices) == {name}, name
        assert callable(sub.choices[name].get_default("func")), name


# ------------------------------------------------------------------------------------------------ features
def test_features_end_to_end_with_a_fake_stage(tmp_path):
    manifest = _dataset(tmp_path)
    (tmp_path / "mods").mkdir()
    (tmp_path / "mods" / "fake_stage_mod.py").write_text(FAKE_STAGE)
    env = _env(tmp_path / "mods")
    prefix = [sys.executable, "-c", RUN_WITH_FAKE]
    stamp_path = tmp_path / "out" / "features.json"
    args = ["features", "--manifest", manifest, "--cache", tmp_path / "cache", "--out", stamp_path,
            "--jobs", "1", "--seed", "7"]

    proc = _run(args, env=env, prefix=prefix)
    assert proc.returncode == cli.EXIT_FAILED_VIDEOS, proc.stderr
    assert "1 of 3 videos failed" in proc.stderr and "broken:" in proc.stderr and "not an AVI" in proc.stderr
    stamp = json.loads(stamp_path.read_text())
    assert stamp["stage"] == "features" and stamp["done"] == ["walk_a", "wave_b"]
    assert list(stamp["failed"]) == ["broken"] and "not an AVI file" in stamp["failed"]["broken"]
    assert stamp["params"] == features_params(seed=7) and stamp["params"]["idt"]["seed"] == 7
    stage = Path(stamp["dir"])
    assert stage.name == f"features-{param_hash(stamp['params'])}" and stage.parent == (tmp_path / "cache").resolve()
    for entry in read_manifest(manifest).rows[:2]:
        arrays = load_valid(stage / f"{entry.video_id}.npz")
        assert int(arrays["n_bytes"]) == entry.path.stat().st_size and int(arrays["seed"]) == 7
    assert read_index(stage / "index.csv")["broken"].status == "failed"

    proc = _run([*args, "--allow-failed"], env=env, prefix=prefix)
    assert proc.returncode == 0, proc.stderr
    assert "0 computed, 2 already done, 1 failed" in proc.stdout
    assert json.loads(stamp_path.read_text()) == stamp


def test_features_options_reach_the_extractor_parameters(tmp_path, monkeypatch, capsys):
    from idtfv.idt import params as params_mod

    manifest = _dataset(tmp_path, bad=False)
    seen = []
    monkeypatch.setitem(idt_cli.STAGE_FUNCS, "all", _record_params)
    monkeypatch.setattr(sys.modules[__name__], "_SEEN", seen)
    status = cli.main(["features", "--manifest", str(manifest), "--cache", str(tmp_path / "c"),
                       "--out", str(tmp_path / "f.json"), "--preset", "fast", "--flow", "farneback",
                       "--resize-width", "160", "--seed", "3"])
    assert status == 0, capsys.readouterr().err
    want = params_mod.IDTParams.fast().replace(flow="farneback", resize_width=160, seed=3).to_dict()
    assert read_stamp(tmp_path / "f.json")["params"] == {"idt": want}
    assert seen == [want, want]
    assert params_mod.IDTParams.from_dict(seen[0]) == params_mod.IDTParams.fast(
        flow="farneback", resize_width=160, seed=3)

    status = cli.main(["features", "--manifest", str(manifest), "--cache", str(tmp_path / "c"),
                       "--out", str(tmp_path / "g.json"), "--resize-width", "-5"])
    err = capsys.readouterr().err
    assert status == 2 and err.startswith("error: ") and "resize_width" in err and len(err.splitlines()) == 1
    assert not (tmp_path / "g.json").exists()


_SEEN: list = []


def _record_params(entry, params):
    _SEEN.append(params["idt"])
    return {"ok": np.ones(1)}


@pytest.mark.slow
def test_features_with_the_real_extractor_matches_idt_extract(tmp_path):
    manifest = _dataset(tmp_path, frames=20)
    stamp_path = tmp_path / "features.json"
    proc = _run(["features", "--manifest", manifest, "--cache", tmp_path / "cache", "--out", stamp_path,
                 "--preset", "fast"])
    assert proc.returncode == 1, proc.stderr
    stamp = read_stamp(stamp_path)
    assert stamp["done"] == ["walk_a", "wave_b"] and list(stamp["failed"]) == ["broken"]
    assert str(tmp_path / "videos" / "broken.avi") in stamp["failed"]["broken"]
    params = idt.IDTParams.from_dict(stamp["params"]["idt"])
    for entry in read_manifest(manifest).rows[:2]:
        saved = load_valid(stamp["dir"] / f"{entry.video_id}.npz")
        direct = idt.extract(entry.path, params=params).as_arrays()
        assert sorted(saved) == sorted(direct)
        for key in direct:
            np.testing.assert_array_equal(saved[key], direct[key])
        assert saved["hog"].shape[1] == 96 and saved["meta"].shape[1] == 10


def test_warmup_never_stops_a_run():
    from idtfv.idt.stage import warmup_features

    assert warmup_features({"idt": {"no_such_option": 1}}) is None  # bad params: ignored, the run reports them
    assert warmup_features({}) is None


# ------------------------------------------------------------------------------------------------ dataset
def test_dataset_csv_kind_probes_and_writes_the_manifest(tmp_path):
    source = _dataset(tmp_path, bad=False, frames=9)
    out = tmp_path / "cache" / "csv" / "manifest.csv"
    proc = _run(["dataset", "--kind", "csv", "--root", source, "--out", out])
    assert proc.returncode == 0, proc.stderr
    written = read_manifest(out)
    assert [e.video_id for e in written.rows] == ["walk_a", "wave_b"]
    assert [(e.frames, e.width, e.height) for e in written.rows] == [(9, 64, 48), (9, 64, 48)]
    assert [e.path for e in written.rows] == [e.path for e in read_manifest(source).rows]


def test_dataset_default_generates_into_the_directory_of_out(tmp_path, monkeypatch, capsys):
    calls = []

    def fake_generate_dataset(out_dir, *, random_state=0):
        calls.append((Path(out_dir), random_state))
        path = write_tiny_video(Path(out_dir) / "clips" / "c0.avi", frames=5)
        entry = VideoEntry("c0", path, 0, "walk", group="actor0", splits={1: "train"}, frames=5, fps=25.0,
                           width=64, height=48)
        target = Path(out_dir) / "manifest.csv"
        write_manifest(Manifest([entry], out_dir), target)
        return target

    monkeypatch.setitem(sys.modules, "idtfv.data.synthetic",
                        types.SimpleNamespace(generate_dataset=fake_generate_dataset))
    out = tmp_path / "cache" / "default" / "my_manifest.csv"
    assert cli.main(["dataset", "--out", str(out), "--seed", "4"]) == 0
    assert calls == [(out.parent.resolve(), 4)]
    assert [e.video_id for e in read_manifest(out).rows] == ["c0"]
    assert "1 videos" in capsys.readouterr().out


# ------------------------------------------------------------------------------------------------ commands
GOOD_PLUGIN = textwrap.dedent(
    """
    from idtfv.errors import ParameterError

    def add_hello(subparsers):
        p = subparsers.add_parser("hello", help="say hello")
        p.add_argument("--fail", choices=["no", "idtfv", "os"], default="no")
        p.add_argument("--status", type=int, default=0)
        p.set_defaults(func=run)

    def run(args):
        if args.fail == "idtfv":
            raise ParameterError("--fail idtfv was given; expected no")
        if args.fail == "os":
            open("/nonexistent/dir/file.txt")
        print("hello")
        return args.status
    """
)


def test_commands_run_and_errors_become_one_line_and_exit_2(tmp_path, monkeypatch, capsys):
    (tmp_path / "good_plugin_xyz.py").write_text(GOOD_PLUGIN)
    monkeypatch.syspath_prepend(str(tmp_path))
    import good_plugin_xyz

    commands = {"dataset": cli.add_dataset, "hello": good_plugin_xyz.add_hello}
    assert cli.main(["hello"], commands=commands) == 0 and capsys.readouterr().out == "hello\n"
    assert cli.main(["hello", "--status", "1"], commands=commands) == 1
    capsys.readouterr()
    assert cli.main(["hello", "--fail", "idtfv"], commands=commands) == 2
    assert capsys.readouterr().err == "error: --fail idtfv was given; expected no\n"
    assert cli.main(["hello", "--fail", "os"], commands=commands) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "/nonexistent/dir/file.txt" in err and len(err.splitlines()) == 1
    assert cli.main(["hello", "--fail", "maybe"], commands=commands) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "maybe" in err and len(err.splitlines()) == 1


@pytest.mark.parametrize("command, own", [("encode", "idtfv.encoding.cli"), ("train-svm", "idtfv.classify.cli"),
                                          ("features", "idtfv.idt.cli"), ("dataset", None)])
def test_a_known_command_imports_only_its_own_module_and_nothing_heavy(command, own):
    code = ("import sys\nfrom idtfv import cli\nstatus = cli.main([%r, '--help'])\n"
            "print(' '.join(sorted(m for m in sys.modules if m.startswith(('idtfv', 'torch', 'numba', 'sklearn')))))\n"
            "sys.exit(status)" % command)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    loaded = set(proc.stdout.strip().splitlines()[-1].split())
    clis = {m for m in loaded if m.endswith(".cli") and m != "idtfv.cli"}
    assert clis == ({own} if own else set()), loaded
    assert not {m for m in loaded if m.split(".")[0] in ("torch", "numba", "sklearn")}, loaded
