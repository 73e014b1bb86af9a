"""Numba's on-disk kernel caches stay fresh when a kernel module's dependency changes.

Numba keys a cached kernel by the bytes of the file that defines it. A kernel that compiles in an intrinsic or a
function of another kernel module (``idt/flow/_farneback_nb.py`` the vector step of ``_farneback_simd_nb.py``,
``idt/_histograms_nb.py`` the integral rows of ``_histograms_simd_nb.py``, ``encoding/_posterior_nb.py`` the bit
tricks of ``_bits_nb.py``; the intrinsics in turn the IR helpers of ``idtfv/llvm_ir.py``) would keep its old
machine code after that other file changed. So each such module records the SHA-256 of its dependencies in
``KERNEL_DEPENDENCIES``: a change to a dependency fails this test until the digest (and with it the dependent
file, its cache key) is updated.
"""

from __future__ import annotations

import ast
import hashlib
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGES = {"idtfv": REPO / "idtfv", "idtfv.idt": REPO / "idt", "idtfv.encoding": REPO / "encoding",
            "idtfv.classify": REPO / "classify", "idtfv.deep": REPO / "deep"}


def _kernel_modules() -> list[Path]:
    """The project's files that define cached Numba kernels."""
    return sorted(p for root in PACKAGES.values() for p in root.rglob("*.py")
                  if "__pycache__" not in p.parts and "cache=True" in p.read_text())


def _path_of(module: str, importer: Path, level: int) -> Path | None:
    """The project file of an imported module (absolute ``idtfv...`` or relative), or None."""
    if level:
        base = importer.parent
        for _ in range(level - 1):
            base = base.parent
        parts = module.split(".") if module else []
        candidate = base.joinpath(*parts).with_suffix(".py")
        return candidate if candidate.exists() else None
    for prefix in sorted(PACKAGES, key=len, reverse=True):
        if module == prefix or module.startswith(prefix + "."):
            rest = module[len(prefix):].lstrip(".").split(".") if module != prefix else []
            candidate = PACKAGES[prefix].joinpath(*rest).with_suffix(".py") if rest else None
            return candidate if candidate is not None and candidate.exists() else None
    return None


def _generates_code(path: Path) -> bool:
    """Whether a module's code ends up in compiled kernels: ``@njit`` functions, ``@intrinsic``s, or LLVM IR
    helpers (``idtfv.llvm_ir``) that intrinsics call while Numba compiles."""
    text = path.read_text()
    return "@njit" in text or "@intrinsic" in text or "from llvmlite" in text


def _kernel_dependencies(path: Path, seen: set | None = None) -> set[Path]:
    """The code-generating modules that ``path`` imports at its top level, and theirs (transitively): their code
    is compiled into ``path``'s kernels."""
    seen = set() if seen is None else seen
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.ImportFrom):
            target = _path_of(node.module or "", path, node.level)
            if target is not None and target != path and target not in seen and _generates_code(target):
                seen.add(target)
                _kernel_dependencies(target, seen)
    return seen


def _recorded(path: Path) -> dict:
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "KERNEL_DEPENDENCIES"
                                                for t in node.targets):
            return ast.literal_eval(node.value)
    return {}


def test_the_scan_finds_the_known_dependencies():
    """The scan sees the dependencies the project has (so the test below does not pass on an empty list)."""
    found = {(p.name, d.name) for p in _kernel_modules() for d in _kernel_dependencies(p)}
    assert {("_farneback_nb.py", "_farneback_simd_nb.py"), ("_farneback_nb.py", "llvm_ir.py"),
            ("_histograms_nb.py", "_histograms_simd_nb.py"), ("_histograms_nb.py", "llvm_ir.py"),
            ("_posterior_nb.py", "_bits_nb.py")} <= found


@pytest.mark.parametrize("path", _kernel_modules(), ids=lambda p: str(p.relative_to(REPO)))
def test_dependencies_of_cached_kernels_are_recorded_by_digest(path):
    recorded = _recorded(path)
    deps = _kernel_dependencies(path)
    assert set(recorded) == {d.name for d in deps}, (
        f"{path.relative_to(REPO)}: KERNEL_DEPENDENCIES lists {sorted(recorded)}, the module imports kernels from "
        f"{sorted(d.name for d in deps)}: record each as file name -> SHA-256")
    for dep in deps:
        digest = hashlib.sha256(dep.read_bytes()).hexdigest()
        assert recorded[dep.name] == digest, (
            f"{dep.relative_to(REPO)} changed: set KERNEL_DEPENDENCIES[{dep.name!r}] in "
            f"{path.relative_to(REPO)} to {digest!r} (that changes the file, so Numba recompiles its kernels)")
