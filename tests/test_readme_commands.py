"""Every command line documented in README.md's shell blocks (and in any ``--help`` epilog) must work as written.

- ``make ...`` lines run as ``make -n`` (every target exists, every VARIABLE= is one the Makefile declares);
- the project's console scripts (``idtfv``, ``extract-trajectories``, ``extract-flow``) are parsed by their real
  parsers (through the real ``idtfv`` dispatcher), with ``...`` placeholders standing for files;
- the cheap ``idtfv`` commands (train-svm, train-knn, evaluate, fuse) then run for real, in the README's order, in
  a scratch directory where the inputs they name are small real files (a 3-class manifest, its feature vectors and
  score files), so a documented command that cannot run fails here.
"""

from __future__ import annotations

import argparse
import contextlib
import re
import shlex
import shutil
import subprocess
import tomllib
from importlib import import_module
from pathlib import Path

import numpy as np
import pytest

from idtfv.classify import write_features, write_scores

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"
SCRIPTS = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]
RUN_FOR_REAL = ("train-svm", "train-knn", "evaluate", "fuse")
PLACEHOLDER = "..."


def _shell_lines(text: str) -> list[str]:
    """Command lines of the ```bash / ```sh / ```console blocks (continuations joined, ``$ `` prompts dropped)."""
    lines = []
    for block in re.findall(r"^```(?:bash|sh|shell|console)[^\n]*\n(.*?)^```", text, flags=re.M | re.S):
        for line in block.replace("\\\n", " ").splitlines():
            line = re.sub(r"^\s*\$\s+", "", line).strip()
            if line and not line.startswith("#"):
                lines.append(line)
    return lines


def _argv(line: str) -> list[str]:
    return shlex.split(line, comments=True)


DOCUMENTED = [_argv(line) for line in _shell_lines(README.read_text(encoding="utf-8"))]
OURS = [argv for argv in DOCUMENTED if argv and argv[0] in SCRIPTS]
MAKE = [argv for argv in DOCUMENTED if argv and argv[0] == "make"]


class _Parsed(Exception):
    def __init__(self, parser, namespace):
        super().__init__()
        self.parser, self.namespace = parser, namespace


@contextlib.contextmanager
def _stop_after_parsing(*, before: bool = False):
    """Make ``ArgumentParser.parse_args`` raise :class:`_Parsed` once it has parsed (or, ``before``, instead of
    parsing: to get hold of a console script's parser)."""
    real = argparse.ArgumentParser.parse_args

    def parse_args(self, args=None, namespace=None):
        raise _Parsed(self, None if before else real(self, args, namespace))

    argparse.ArgumentParser.parse_args = parse_args
    try:
        yield
    finally:
        argparse.ArgumentParser.parse_args = real


def _entry(script: str):
    module, func = SCRIPTS[script].split(":")
    return getattr(import_module(module), func)


def _parse(argv: list[str], capsys) -> argparse.Namespace:
    """Parse a documented command line with its console script's real parser; fail with its error line."""
    with _stop_after_parsing():
        try:
            status = _entry(argv[0])(argv[1:])
        except _Parsed as parsed:
            return parsed.namespace
    pytest.fail(f"{shlex.join(argv)}: not accepted by its parser (exit {status}): {capsys.readouterr().err.strip()}")


def _epilog_lines() -> list[list[str]]:
    """Example command lines in the --help texts (epilog) of every console script and idtfv subcommand."""
    found = []
    for script in SCRIPTS:
        with _stop_after_parsing(before=True):
            try:
                _entry(script)([])
            except _Parsed as parsed:
                parsers = [parsed.parser]
        for action in parsers[0]._actions:
            if isinstance(action, argparse._SubParsersAction):
                parsers += list(action.choices.values())
        for parser in parsers:
            for line in (parser.epilog or "").splitlines():
                line = re.sub(r"^\s*\$\s+", "", line).strip()
                if line.split(" ", 1)[0] in (*SCRIPTS, "make"):
                    found.append(_argv(line))
    return found


def _with_placeholders(argv: list[str], root: Path) -> list[str]:
    return [str(root / "placeholder") if arg == PLACEHOLDER else arg for arg in argv]


def test_the_readme_documents_commands_of_every_kind():
    """The extraction itself: the README's shell blocks hold make targets, idtfv stages and both extractors."""
    assert {argv[0] for argv in OURS} == set(SCRIPTS), [argv[0] for argv in OURS]
    subcommands = {argv[1] for argv in OURS if argv[0] == "idtfv"}
    assert {"dataset", "features", "encode", "train-svm", "evaluate", "fuse"} <= subcommands, subcommands
    assert {"demo", "test", "features", "train-svm", "flow", "train-deep"} <= {a for m in MAKE for a in m[1:]}
    # issue 11's case: an option taking a list (--split) written before the score file it must not swallow
    evaluate = [argv for argv in OURS if argv[1:2] == ["evaluate"]]
    assert any("--split" in argv and argv.index("--split") + 2 < len(argv) for argv in evaluate), evaluate


@pytest.mark.parametrize("argv", OURS + [a for a in _epilog_lines() if a[0] != "make"], ids=shlex.join)
def test_documented_command_is_accepted_by_the_real_parser(argv, tmp_path, capsys):
    _parse(_with_placeholders(argv, tmp_path), capsys)


def _declared_variables() -> set[str]:
    text = (REPO / "Makefile").read_text()
    return set(re.findall(r"^([A-Z_]+) \?=", text, flags=re.M))


@pytest.mark.skipif(shutil.which("make") is None, reason="needs GNU make")
@pytest.mark.parametrize("argv", MAKE + [a for a in _epilog_lines() if a[0] == "make"], ids=shlex.join)
def test_documented_make_command_names_real_targets_and_variables(argv, tmp_path):
    variables = [a.split("=", 1)[0] for a in argv[1:] if "=" in a]
    unknown = set(variables) - _declared_variables()
    assert not unknown, f"{shlex.join(argv)}: the Makefile declares no {sorted(unknown)}"
    proc = subprocess.run(["make", "-n", "--no-print-directory", "-C", str(REPO), *argv[1:],
                           f"CACHE={tmp_path / 'cache'}", f"VENV={tmp_path / 'venv'}"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, f"{shlex.join(argv)}: {proc.stderr.strip()}"


# ------------------------------------------------------------------------------------------ run for real
CLASSES = ["walk", "wave", "jump"]


class _Data:
    """A 3-class dataset, 10 videos per class, splits 1..3 (a third of each class tests per split)."""

    def __init__(self, seed=0):
        rng = np.random.default_rng(seed)
        self.ids = [f"{name}_{j}" for name in CLASSES for j in range(10)]
        self.labels = np.repeat(np.arange(3), 10)
        mu = 3 * rng.standard_normal((3, 16))
        self.X = mu[self.labels] + rng.standard_normal((30, 16))
        self.test = {s: [v for i, v in enumerate(self.ids) if i % 10 // 3 == s - 1] for s in (1, 2, 3)}
        self.rng = rng

    def manifest(self, path: Path):
        rows = ["video_id,path,label,label_name,group,split1,split2,split3,frames,fps,width,height"]
        for v, k in zip(self.ids, self.labels):
            splits = ",".join("test" if v in self.test[s] else "train" for s in (1, 2, 3))
            rows.append(f"{v},{v}.avi,{k},{CLASSES[k]},,{splits},,,,")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("\n".join(rows) + "\n")

    def features(self, path: Path):
        path.parent.mkdir(parents=True, exist_ok=True)
        write_features(path, self.ids, self.X, self.labels)

    def scores(self, path: Path, split: int = 1):
        ids = self.test[split]
        y = np.array([CLASSES.index(v.split("_")[0]) for v in ids])
        s = self.rng.standard_normal((len(ids), 3))
        s[np.arange(len(ids)), y] += 2
        path.parent.mkdir(parents=True, exist_ok=True)
        write_scores(path, ids, s, CLASSES, y)

    def intervals(self, path: Path, *, detections: bool):
        """Ground truth (one interval of its class per video), or detections of it (``score``) with a miss."""
        rows = ["video_id,class,start,end" + (",score" if detections else "")]
        for i, (v, k) in enumerate(zip(self.ids, self.labels)):
            rows.append(f"{v},{CLASSES[k]},{i % 5}.0,{i % 5 + 3}.0" + (f",{self.rng.normal():.3f}" if detections
                                                                      else ""))
            if detections:
                rows.append(f"{v},{CLASSES[(k + 1) % 3]},20.0,22.0,{self.rng.normal():.3f}")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("\n".join(rows) + "\n")


def _make_inputs(ns: argparse.Namespace, data: _Data) -> None:
    """Create the input files a parsed command names that do not exist yet (outputs of commands only parsed)."""
    manifest = getattr(ns, "manifest", None)
    if manifest is not None and not Path(manifest).exists():
        data.manifest(Path(manifest))
    features = getattr(ns, "features", None)
    if features is not None and not Path(features).exists():
        data.features(Path(features))
    splits = getattr(ns, "split", None)
    files = list(getattr(ns, "scores", None) or [])
    splits = splits if isinstance(splits, list) else [splits or 1] * len(files)
    for path, split in zip(files, splits):
        if not Path(path).exists():
            data.scores(Path(path), split or 1)
    for key in ("detections", "annotations"):  # idtfv evaluate --detections
        path = getattr(ns, key, None)
        if path is not None and not Path(path).exists():
            data.intervals(Path(path), detections=key == "detections")


def test_documented_idtfv_commands_run_on_small_real_data(tmp_path, monkeypatch, capsys):
    """README's lines, then the --help examples, in order; a file a command names is made if no earlier one did."""
    monkeypatch.chdir(tmp_path)
    data = _Data()
    ran = []
    for argv in OURS + _epilog_lines():
        if argv[0] != "idtfv" or argv[1] not in RUN_FOR_REAL:
            continue
        argv = _with_placeholders(argv, tmp_path)
        _make_inputs(_parse(argv, capsys), data)
        status = _entry("idtfv")(argv[1:])
        out, err = capsys.readouterr()
        assert status == 0, f"{shlex.join(argv)} exited with {status}: {err.strip()}"
        ran.append(argv[1])
    assert {"train-svm", "evaluate", "fuse"} <= set(ran), ran

