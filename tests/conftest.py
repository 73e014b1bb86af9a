"""Shared pytest fixtures for every area of idtfv.

Stable API (other test files rely on it):

* ``SHARED`` — :class:`pathlib.Path` of the ``../shared`` reference data (may not exist; skip when absent), and
  ``requires_shared`` — a ``pytest.mark.skipif`` marker for tests that need it.
* ``shared_dir`` fixture — the same path; skips the test when it is absent.
* ``tiny_video`` fixture — a factory ``tiny_video(name="tiny.avi", *, frames=12, width=64, height=48, fps=25.0,
  seed=0, motion=(2, 1)) -> Path`` that writes a small MJPG ``.avi`` into the test's ``tmp_path``: a textured
  bright square moving by ``motion = (dx, dy)`` pixels per frame over a smooth, textured background.
  ``write_tiny_video(path, ...)`` is the plain function behind it.

Markers applied here (so that a test file need not carry them; see :func:`pytest_collection_modifyitems`):

* ``shared`` on every test that uses the ``../shared`` reference data, found by :func:`shared_test_names`: tests that
  take the ``shared_dir`` fixture or name ``SHARED`` / a value derived from it (a path, a fixture, a helper, a
  ``skipif``), and every test of a module whose ``pytestmark`` does. Such tests must skip cleanly when ``../shared``
  is absent (``tests/test_hygiene.py`` runs them without it).
* ``slow`` on the tests listed in :data:`SLOW_TESTS` (each over about 3 s on the reference machine, 2 cores), in
  addition to the tests marked ``@pytest.mark.slow`` in their files. ``make test-fast`` runs ``-m "not slow"``.
"""

from __future__ import annotations

import ast
import functools
import shlex
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
requires_shared = pytest.mark.skipif(not SHARED.exists(), reason="needs the ../shared reference data")


def tiny_frames(*, frames: int = 12, width: int = 64, height: int = 48, seed: int = 0,
                motion: tuple[int, int] = (2, 1)) -> np.ndarray:
    """The frames :func:`write_tiny_video` encodes, RGB uint8 ``(frames, height, width, 3)``."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    base = 90 + 40 * np.sin(xx / 5.0) * np.cos(yy / 7.0)
    noise = cv2.GaussianBlur(rng.normal(0, 25, (height, width)).astype(np.float32), (0, 0), 1.0)
    background = np.clip(base + noise, 0, 255)
    out = np.empty((frames, height, width, 3), np.uint8)
    side = max(4, min(width, height) // 4)
    patch = np.clip(200 + rng.normal(0, 30, (side, side)), 0, 255).astype(np.float32)
    for t in range(frames):
        img = background.copy()
        x0 = (width // 4 + motion[0] * t) % max(1, width - side)
        y0 = (height // 4 + motion[1] * t) % max(1, height - side)
        img[y0:y0 + side, x0:x0 + side] = patch
        rgb = np.stack([img, 0.5 * img + 60, 255 - img], axis=-1)
        out[t] = np.clip(rgb, 0, 255).astype(np.uint8)
    return out


def write_tiny_video(path, *, frames: int = 12, width: int = 64, height: int = 48, fps: float = 25.0,
                     seed: int = 0, motion: tuple[int, int] = (2, 1)) -> Path:
    """Write :func:`tiny_frames` as an MJPG ``.avi`` and return its path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    writer = cv2.VideoWriter(str(path), cv2.CAP_FFMPEG, cv2.VideoWriter_fourcc(*"MJPG"), float(fps),
                             (width, height))
    if not writer.isOpened():
        raise RuntimeError(f"cv2.VideoWriter cannot write {path}")
    try:
        for rgb in tiny_frames(frames=frames, width=width, height=height, seed=seed, motion=motion):
            writer.write(cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    finally:
        writer.release()
    return path


def opencv_frame_counts(path) -> tuple[int, int]:
    """(frames OpenCV's FFmpeg reader decodes, frames the header declares) of a video file: an independent count,
    the planted truth for truncated and damaged files."""
    cap = cv2.VideoCapture(str(path), cv2.CAP_FFMPEG)
    declared = int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
    n = 0
    while cap.read()[0]:
        n += 1
    cap.release()
    return n, declared


@pytest.fixture
def shared_dir() -> Path:
    """The ``../shared`` reference data directory; skips the test when it is absent."""
    if not SHARED.exists():
        pytest.skip("needs the ../shared reference data")
    return SHARED


@pytest.fixture
def tiny_video(tmp_path):
    """Factory writing small synthetic MJPG videos into ``tmp_path``; see :func:`write_tiny_video`."""

    def make(name: str = "tiny.avi", **options) -> Path:
        return write_tiny_video(tmp_path / name, **options)

    return make


def fake_venv(tmp_path, idtfv_script: str) -> Path:
    """A virtualenv stand-in for the Makefile's ``VENV``: ``bin/idtfv`` is ``idtfv_script`` (a shell script that
    records its arguments), ``bin/python`` this interpreter (a script that runs it: a symlink would leave its
    virtualenv, and so the project's packages, behind), and the install stamps are newer than pyproject.toml
    (``install`` is up to date)."""
    venv = Path(tmp_path) / "venv"
    (venv / "bin").mkdir(parents=True)
    script = venv / "bin" / "idtfv"
    script.write_text(idtfv_script)
    script.chmod(0o755)
    python = venv / "bin" / "python"
    python.write_text(f'#!/bin/sh\nexec {shlex.quote(sys.executable)} "$@"\n')
    python.chmod(0o755)
    for stamp in (".installed", ".installed-deep", ".installed-test"):
        (venv / stamp).touch()
    return venv


# ----------------------------------------------------------------------------------------------- markers
#: Tests over about 3 s each on the reference machine (``pytest --durations``), marked ``slow`` here so that their
#: files need not change: ``file`` (every test of the file), ``file::test`` (every parameter) or
#: ``file::test[param]``. tests/test_hygiene.py checks that every entry still names a test.
SLOW_TESTS = (
    "test_fidelity_lear.py",  # extracts four reference clips (5-17 s each), compares with LEAR's output
    "test_encode_pipeline.py::test_deterministic_and_resumable",
    "test_streaming.py::test_streaming_equals_the_normal_path_and_stores_no_descriptors",
    "test_tvl1_gpu.py::test_cuda_kernels_run_on_cpu_match_cpu_solver",
)

#: Names that mean the ../shared reference data in a test module (``from conftest import SHARED``, the fixture).
_SHARED_SEEDS = frozenset({"SHARED", "shared_dir", "requires_shared"})


def _names_used(node: ast.AST) -> set[str]:
    """Names read in ``node``, and argument names (a test's fixtures) of the functions in it."""
    return {n.id for n in ast.walk(node) if isinstance(n, ast.Name)} | {
        a.arg for a in ast.walk(node) if isinstance(a, ast.arg)}


def _names_bound(node: ast.stmt) -> set[str]:
    if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
        return {node.name}
    targets = node.targets if isinstance(node, ast.Assign) else (
        [node.target] if isinstance(node, (ast.AnnAssign, ast.AugAssign)) else [])
    return {n.id for t in targets for n in ast.walk(t) if isinstance(n, ast.Name)}


def _mentions_shared_folder(node: ast.AST) -> bool:
    return any(isinstance(n, ast.Constant) and n.value == "shared" for n in ast.walk(node))


def shared_test_names(source: str) -> tuple[bool, frozenset[str]]:
    """Which tests of a test module use the ``../shared`` data: ``(whole_module, names)``.

    A module-level name is *shared* when its statement (an assignment, a function, a class) reads ``SHARED``,
    ``shared_dir``, ``requires_shared`` or another shared name, or builds a path with a ``"shared"`` part; this is
    followed to a fixed point, so helpers, fixtures and decorators built on the data count. ``names`` are the
    shared top-level functions and classes; ``whole_module`` is true when ``pytestmark`` is shared.
    """
    body = ast.parse(source).body
    shared = set(_SHARED_SEEDS)
    changed = True
    while changed:
        changed = False
        for node in body:
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                continue
            bound = _names_bound(node) - shared
            if bound and (_names_used(node) & shared
                          or (not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))
                              and _mentions_shared_folder(node))):
                shared |= bound
                changed = True
    return "pytestmark" in shared, frozenset(shared - _SHARED_SEEDS)


@functools.lru_cache(maxsize=None)
def _shared_of_file(path: str) -> tuple[bool, frozenset[str]]:
    return shared_test_names(Path(path).read_text(encoding="utf-8"))


def pytest_collection_modifyitems(items):
    """Mark ``shared`` (tests that use ../shared) and ``slow`` (:data:`SLOW_TESTS`); see the module docstring."""
    slow = set(SLOW_TESTS)
    for item in items:
        path = getattr(item, "path", None)
        if path is None or path.suffix != ".py":
            continue
        whole, names = _shared_of_file(str(path))
        top = item.cls.__name__ if getattr(item, "cls", None) is not None else getattr(item, "originalname",
                                                                                      item.name)
        if whole or top in names or "shared_dir" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.shared)
        base = f"{path.name}::{getattr(item, 'originalname', item.name)}"
        if path.name in slow or base in slow or f"{path.name}::{item.name}" in slow:
            item.add_marker(pytest.mark.slow)
