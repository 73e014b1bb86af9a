"""Test-suite hygiene: no skip when the project's own module fails to import, markers that stay true.

* ``pytest.importorskip`` is for optional third-party modules (``av``, ``fcntl``, ``distributed``, ...); a test of
  idtfv that skips when idtfv fails to import hides the failure.
* ``shared``: conftest marks the tests that use ``../shared`` (:func:`conftest.shared_test_names`); they must skip,
  not fail, where the data is absent, which is checked here by running them in a copy of the tests without it.
* ``slow``: every entry of :data:`conftest.SLOW_TESTS` names a test that exists.
"""

from __future__ import annotations

import ast
import os
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from conftest import SLOW_TESTS, shared_test_names

REPO = Path(__file__).resolve().parents[1]
TESTS = REPO / "tests"
#: First names of modules that belong to this project (the package, its old top-level names, test helpers).
PROJECT_NAMES = {"idtfv", "idt", "encoding", "classify", "deep", "conftest", "_cuda_on_cpu"}


def importorskips(source: str, *, filename: str = "<test>") -> list[tuple[int, str]]:
    """``(line, module)`` of every ``importorskip("module")`` call (``pytest.importorskip`` or bare)."""
    found = []
    for node in ast.walk(ast.parse(source, filename=filename)):
        if isinstance(node, ast.Call):
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", None)
            if name == "importorskip":
                arg = node.args[0] if node.args else next((k.value for k in node.keywords if k.arg == "modname"),
                                                          None)
                module = arg.value if isinstance(arg, ast.Constant) and isinstance(arg.value, str) else "<dynamic>"
                found.append((node.lineno, module))
    return found


def test_importorskip_is_only_for_third_party_modules():
    bad = []
    for file in sorted(TESTS.glob("*.py")):
        for line, module in importorskips(file.read_text(encoding="utf-8"), filename=str(file)):
            if module == "<dynamic>" or module.split(".")[0] in PROJECT_NAMES:
                bad.append(f"tests/{file.name}:{line}: importorskip({module!r}) skips the test when the project's "
                           "own module fails to import; import it at the top of the file (a broken module must "
                           "fail the test)")
    assert not bad, "\n".join(bad)


def test_importorskip_finder_sees_every_form():
    source = ("import pytest\nfrom pytest import importorskip\nav = pytest.importorskip('av')\n"
              "x = importorskip('idtfv.idt.rawframes')\ny = pytest.importorskip(modname='cupy')\n"
              "def f(name):\n    return pytest.importorskip(name)\n")
    assert importorskips(source) == [(3, "av"), (4, "idtfv.idt.rawframes"), (5, "cupy"), (7, "<dynamic>")]


def _defined_tests(file: Path) -> set[str]:
    """Names of the test functions and classes of a test file (module level and in classes)."""
    names = set()
    for node in ast.parse(file.read_text(encoding="utf-8")).body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
            if isinstance(node, ast.ClassDef):
                names |= {n.name for n in node.body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))}
    return names


def test_every_slow_entry_names_a_test():
    stale = []
    for entry in SLOW_TESTS:
        file, _, name = entry.partition("::")
        path = TESTS / file
        if not path.is_file() or (name and name.split("[")[0] not in _defined_tests(path)):
            stale.append(entry)
    assert not stale, f"conftest.SLOW_TESTS entries that name no test (renamed or removed?): {stale}"
    assert len(set(SLOW_TESTS)) == len(SLOW_TESTS), "conftest.SLOW_TESTS lists a test twice"


PLANTED_SHARED = '''
from pathlib import Path
import pytest
from conftest import SHARED, requires_shared, tiny_frames

ROOT = Path(__file__).resolve().parents[1]
VIDEOS = SHARED / "reference" / "videos"
OTHER = ROOT.parent / "shared" / "reference"
LOCAL = ROOT / "data"
needs_videos = pytest.mark.skipif(not VIDEOS.exists(), reason="no videos")

def load(name):
    return VIDEOS / name

@pytest.fixture
def clip():
    return load("a.avi")

def test_plain(tmp_path):
    assert tiny_frames().shape

@needs_videos
def test_decorated():
    pass

def test_uses_helper():
    load("b.avi")

def test_uses_fixture(clip):
    pass

def test_uses_conftest_fixture(shared_dir):
    pass

@requires_shared
def test_marked_in_conftest():
    pass

def test_other_path():
    OTHER.exists()

def test_local_path():
    LOCAL.exists()

class TestGroup:
    def test_a(self):
        assert VIDEOS
'''


def test_shared_detector_on_a_planted_module():
    whole, names = shared_test_names(PLANTED_SHARED)
    assert not whole
    tests = {n for n in names if n.startswith(("test_", "Test"))}
    assert tests == {"test_decorated", "test_uses_helper", "test_uses_fixture", "test_uses_conftest_fixture",
                     "test_marked_in_conftest", "test_other_path", "TestGroup"}
    whole, _ = shared_test_names(PLANTED_SHARED + "\npytestmark = needs_videos\n")
    assert whole
    assert shared_test_names("import pytest\n\ndef test_x():\n    pass\n") == (False, frozenset())


def _pytest(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST_", "COV_"))}
    return subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=600)


@pytest.mark.slow
def test_shared_tests_skip_cleanly_where_the_data_is_absent(tmp_path):
    """Runs the ``shared`` tests in a copy of tests/ whose ``../shared`` does not exist: all skip, none fails, and
    every test module that collects here also collects there (no module reads ../shared at import time)."""
    copy = tmp_path / "repo"  # tmp_path/shared does not exist
    copy.mkdir()
    for entry in REPO.iterdir():
        if entry.name in {"tests", "pyproject.toml", ".git", ".venv", "cache"}:
            continue
        (copy / entry.name).symlink_to(entry)
    shutil.copy2(REPO / "pyproject.toml", copy / "pyproject.toml")
    shutil.copytree(TESTS, copy / "tests", ignore=shutil.ignore_patterns("__pycache__"))
    report = tmp_path / "report.xml"
    run = _pytest(["-q", "-m", "shared", "--continue-on-collection-errors", f"--junitxml={report}",
                   f"--basetemp={tmp_path / 'basetemp'}", "tests"], cwd=copy)
    outcomes, uncollected = {}, []
    for case in ET.parse(report).getroot().iter("testcase"):
        kinds = [child for child in case if child.tag in ("skipped", "failure", "error")]
        if kinds and kinds[0].tag == "error" and "collection" in (kinds[0].get("message") or ""):
            uncollected.append(case.get("name").replace(".", "/") + ".py")
            continue
        outcomes[f"{case.get('classname')}::{case.get('name')}"] = kinds[0].tag if kinds else "passed"
    # a module that fails to collect here too is broken on its own (the suite reports it); not this test's subject
    broken_anyway = [f for f in uncollected if _pytest(["--collect-only", "-q", f], cwd=REPO).returncode != 0]
    needs_shared = sorted(set(uncollected) - set(broken_anyway))
    assert not needs_shared, f"test modules that cannot be collected without ../shared: {needs_shared}"
    assert outcomes, "no test is marked shared: the detector in conftest found nothing\n" + run.stdout[-2000:]
    not_skipped = {k: v for k, v in outcomes.items() if v != "skipped"}
    assert not not_skipped, f"shared tests that did not skip without ../shared: {not_skipped}"
