"""Start-up: every command's ``--help`` (and ``idtfv --version``) runs without torch and loads no heavy library.

Each case runs in a fresh interpreter whose ``PYTHONPATH`` starts with a directory holding a ``torch`` package that
raises ImportError (and logs the attempt), as on a machine without torch. Afterwards the interpreter's
``sys.modules`` must hold no torch, Numba or scikit-learn module: those load only inside the commands that use
them. The wall time of the same commands is measured by ``bench/bench_startup.py`` (not here: timings are not
reliable under a loaded test run).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from importlib.metadata import distribution

import pytest

from idtfv.cli import command_table

HEAVY = ("torch", "numba", "sklearn")

#: The console scripts of the installed distribution: {name: "module:function"}.
SCRIPTS = {ep.name: ep.value for ep in distribution("idtfv").entry_points if ep.group == "console_scripts"}
CASES = ([("idtfv", "--help"), ("idtfv", "--version")]
         + [("idtfv", name, "--help") for name in command_table()]
         + [(name, "--help") for name in sorted(SCRIPTS) if name != "idtfv"])

_BLOCKER = """import os
with open(os.environ["IDTFV_TEST_TORCH_LOG"], "a") as log:
    log.write("import torch was attempted\\n")
raise ImportError("torch is not installed (blocked by tests/test_cli_startup.py)")
"""

_RUNNER = """import atexit, json, sys
def _dump(path=sys.argv[1]):
    with open(path, "w") as out:
        json.dump(sorted(sys.modules), out)
atexit.register(_dump)
module, function = sys.argv[2].split(":")
sys.argv = sys.argv[3:]
sys.exit(getattr(__import__(module, fromlist=[function]), function)())
"""


@pytest.fixture(scope="module")
def no_torch(tmp_path_factory):
    """A PYTHONPATH directory in which ``import torch`` fails."""
    root = tmp_path_factory.mktemp("no_torch")
    (root / "torch").mkdir()
    (root / "torch" / "__init__.py").write_text(_BLOCKER)
    return root


def test_the_cases_cover_the_dispatcher_and_both_extractor_scripts():
    assert {"idtfv", "extract-trajectories", "extract-flow"} <= set(SCRIPTS)
    names = {case[1] for case in CASES if case[0] == "idtfv" and len(case) == 3}
    assert {"dataset", "features", "flow", "encode", "train-svm", "train-deep"} <= names


@pytest.mark.parametrize("argv", CASES, ids=" ".join)
def test_help_runs_without_torch_and_loads_nothing_heavy(argv, no_torch, tmp_path):
    modules_file, torch_log = tmp_path / "modules.json", tmp_path / "torch.log"
    env = dict(os.environ, IDTFV_TEST_TORCH_LOG=str(torch_log),
               PYTHONPATH=os.pathsep.join([str(no_torch), *filter(None, [os.environ.get("PYTHONPATH")])]))
    proc = subprocess.run([sys.executable, "-c", _RUNNER, str(modules_file), SCRIPTS[argv[0]], *argv],
                          capture_output=True, text=True, env=env, timeout=120, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip(), "no help or version printed"
    assert not proc.stderr.strip(), proc.stderr
    assert not torch_log.exists(), f"{' '.join(argv)} tried to import torch"
    loaded = json.loads(modules_file.read_text())
    heavy = sorted(m for m in loaded if m.split(".")[0] in HEAVY)
    assert not heavy, f"{' '.join(argv)} imported {', '.join(heavy[:8])}"


def test_the_blocker_really_blocks_torch(no_torch, tmp_path):
    """The check above is only as good as the blocker: ``import torch`` must fail and be logged."""
    log = tmp_path / "torch.log"
    env = dict(os.environ, IDTFV_TEST_TORCH_LOG=str(log), PYTHONPATH=str(no_torch))
    proc = subprocess.run([sys.executable, "-c", "import torch"], capture_output=True, text=True, env=env,
                          timeout=60, cwd=tmp_path)
    assert proc.returncode != 0 and "blocked by tests/test_cli_startup.py" in proc.stderr
    assert log.read_text() == "import torch was attempted\n"
