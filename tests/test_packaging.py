"""What ``pip install`` gets: every subpackage listed, every entry point real, a wheel holding only ``idtfv``.

The stage folders live at the repository root but install under ``idtfv`` through
``[tool.setuptools.package-dir]``; ``[tool.setuptools] packages`` must list every one of their subpackages
explicitly, or a new one would be silently missing from the wheel (the editable install would still find it).
"""

from __future__ import annotations

import ast
import os
import shutil
import subprocess
import sys
import sysconfig
import tomllib
import zipfile
from pathlib import Path

import pytest

from test_architecture import module_files, package_dirs

REPO = Path(__file__).resolve().parents[1]
CONFIG = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))
DIRS = package_dirs(REPO / "pyproject.toml")
#: Optional dependencies (extras) a module may need at import time; the wheel's import check allows them missing.
OPTIONAL_IMPORTS = {"cupy"}


def package_folder(package: str, dirs: dict[str, str]) -> Path:
    """The folder setuptools takes ``package`` from: the longest ``package-dir`` prefix plus the rest."""
    parts = package.split(".")
    for n in range(len(parts), 0, -1):
        prefix = ".".join(parts[:n])
        if prefix in dirs:
            return REPO / dirs[prefix] / Path(*parts[n:])
    return REPO / Path(*parts)


def package_folders(dirs: dict[str, str]) -> dict[str, Path]:
    """Every folder holding an ``__init__.py`` under the package dirs, as an import name."""
    mapped = {(REPO / folder).resolve() for folder in dirs.values()}
    found = {}
    for name, folder in dirs.items():
        base = REPO / folder
        for init in base.rglob("__init__.py"):
            rel = init.parent.relative_to(base).parts
            if "__pycache__" in rel or any((base.joinpath(*rel[:i])).resolve() in mapped
                                           for i in range(1, len(rel) + 1)):
                continue
            found[".".join((name, *rel))] = init.parent
    return found


def test_the_packages_list_equals_the_package_folders():
    listed = CONFIG["tool"]["setuptools"]["packages"]
    found = package_folders(DIRS)
    assert len(listed) == len(set(listed)), f"[tool.setuptools] packages lists a package twice: {listed}"
    missing, extra = sorted(set(found) - set(listed)), sorted(set(listed) - set(found))
    assert not missing, (f"pyproject.toml [tool.setuptools] packages lacks {missing}: these folders have an "
                         "__init__.py, so they would be missing from the wheel; add them to the list")
    assert not extra, (f"pyproject.toml [tool.setuptools] packages lists {extra}, which have no folder with an "
                       "__init__.py under [tool.setuptools.package-dir]; remove them or add the folders")
    for name in listed:
        assert package_folder(name, DIRS) == found[name], name


def test_every_folder_of_python_files_is_a_package():
    """A folder of modules without ``__init__.py`` would be left out of the wheel without a word."""
    loose = []
    for folder in DIRS.values():
        for file in (REPO / folder).rglob("*.py"):
            if "__pycache__" not in file.parts and not (file.parent / "__init__.py").is_file():
                loose.append(str(file.relative_to(REPO)))
    assert not loose, f"modules in folders without __init__.py (not installed): {sorted(loose)}"


def test_the_package_dir_folders_exist_and_are_packages():
    for name, folder in DIRS.items():
        assert (REPO / folder / "__init__.py").is_file(), f"package-dir {name} = {folder!r} has no __init__.py"


def entry_points() -> list[tuple[str, str, str]]:
    """``(group, name, "module:function")`` of every console script and entry point in pyproject.toml."""
    project = CONFIG["project"]
    out = [("console_scripts", name, value) for name, value in project.get("scripts", {}).items()]
    for group, table in project.get("entry-points", {}).items():
        out += [(group, name, value) for name, value in table.items()]
    return out


def _top_level_function(file: Path, name: str) -> ast.FunctionDef | None:
    for node in ast.parse(file.read_text(encoding="utf-8")).body:
        if isinstance(node, ast.FunctionDef) and node.name == name:
            return node
    return None


@pytest.mark.parametrize("group, name, value", entry_points(), ids=[f"{g}:{n}" for g, n, _ in entry_points()])
def test_every_entry_point_names_a_function(group, name, value):
    module, _, func = value.partition(":")
    files = module_files(REPO, DIRS)
    assert module in files, f"entry point {group}:{name} = {value!r}: no module {module} in the package"
    node = _top_level_function(files[module], func)
    assert node is not None, f"entry point {group}:{name} = {value!r}: {files[module]} defines no function {func}"
    args = node.args
    required = len(args.posonlyargs) + len(args.args) - len(args.defaults)
    if group == "idtfv.commands":  # add(subparsers), see idtfv.cli
        assert required == 1 and all(d is not None for d in args.kw_defaults), \
            f"idtfv command {name} = {value!r} must take exactly one argument, the subparsers"
    else:  # a console script is called with no argument
        assert required == 0, f"console script {name} = {value!r} needs {required} arguments"


def test_entry_points_exist_for_the_documented_commands():
    """The commands the README and Makefile use are entry points (guards the list above against emptying)."""
    groups = {(g, n) for g, n, _ in entry_points()}
    for script in ("idtfv", "extract-trajectories", "extract-flow"):
        assert ("console_scripts", script) in groups
    for command in ("features", "flow", "encode", "train-svm", "train-deep"):
        assert ("idtfv.commands", command) in groups


# ----------------------------------------------------------------------------------------------- the wheel
def _source_copy(dest: Path) -> Path:
    """What the wheel is built from, copied: pyproject.toml, the readme and the package folders (no build/
    leftovers or egg-info of the working tree can leak in, and the tree is left untouched)."""
    dest.mkdir()
    shutil.copy2(REPO / "pyproject.toml", dest / "pyproject.toml")
    readme = CONFIG["project"].get("readme")
    if isinstance(readme, str):
        shutil.copy2(REPO / readme, dest / readme)
    for folder in sorted(set(DIRS.values())):
        shutil.copytree(REPO / folder, dest / folder, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    return dest


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("wheel")
    src = _source_copy(tmp / "src")
    env = {**os.environ, "PIP_NO_INDEX": "1", "PIP_DISABLE_PIP_VERSION_CHECK": "1"}
    build = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                            "-w", str(tmp / "dist"), str(src)], capture_output=True, text=True, env=env,
                           timeout=300)
    assert build.returncode == 0, build.stdout[-3000:] + build.stderr[-3000:]
    (path,) = (tmp / "dist").glob("idtfv-*.whl")
    return path


@pytest.mark.slow
def test_the_wheel_holds_idtfv_only_with_every_module_and_command(wheel):
    with zipfile.ZipFile(wheel) as zf:
        names = zf.namelist()
        dist_info = next(n.split("/")[0] for n in names if n.split("/")[0].endswith(".dist-info"))
        entry_points_txt = zf.read(f"{dist_info}/entry_points.txt").decode()
    tops = {n.split("/")[0] for n in names}
    assert tops == {"idtfv", dist_info}, f"top-level entries of the wheel: {sorted(tops)}"
    modules = {".".join(Path(n).with_suffix("").parts) for n in names if n.endswith(".py")}
    modules = {m[: -len(".__init__")] if m.endswith(".__init__") else m for m in modules}
    assert modules == set(module_files(REPO, DIRS)), sorted(modules ^ set(module_files(REPO, DIRS)))
    section, listed = None, set()
    for line in entry_points_txt.splitlines():
        if line.startswith("["):
            section = line.strip("[]")
        elif "=" in line:
            key, value = (part.strip() for part in line.split("=", 1))
            listed.add((section, key, value))
    assert listed == set(entry_points())


@pytest.mark.slow
def test_the_installed_wheel_imports_from_itself(wheel, tmp_path):
    """The wheel installed (non-editable) into a fresh folder: every module imports from there, the commands load.

    ``python -S`` skips site-packages' ``.pth`` files, so the editable install of the working tree cannot answer
    the imports; the virtualenv's site-packages is put on the path only for the dependencies.
    """
    target = tmp_path / "site"
    install = subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "--no-index", "--no-compile",
                              "-q", "--target", str(target), str(wheel)], capture_output=True, text=True,
                             timeout=300)
    assert install.returncode == 0, install.stderr[-3000:]
    code = f"""
import importlib, importlib.metadata, pathlib, sys
root = pathlib.Path({str(target)!r})
optional = {sorted(OPTIONAL_IMPORTS)!r}
for f in sorted(root.glob("idtfv/**/*.py")):
    parts = f.relative_to(root).with_suffix("").parts
    if parts[-1] == "__main__":
        continue
    name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
    try:
        importlib.import_module(name)
    except ModuleNotFoundError as exc:
        if (exc.name or "").split(".")[0] not in optional:
            raise
outside = [m for m, mod in sys.modules.items() if m.split(".")[0] == "idtfv"
           and not str(getattr(mod, "__file__", "") or "").startswith(str(root))]
assert not outside, outside
assert pathlib.Path(importlib.metadata.distribution("idtfv")._path).parent == root
for ep in importlib.metadata.entry_points(group="idtfv.commands"):
    assert callable(ep.load()), ep
from idtfv.cli import main
sys.exit(main(["--help"]))
"""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["PYTHONPATH"] = os.pathsep.join([str(target), sysconfig.get_paths()["purelib"],
                                         sysconfig.get_paths()["platlib"]])
    run = subprocess.run([sys.executable, "-S", "-c", code], capture_output=True, text=True, env=env,
                         cwd=tmp_path, timeout=300)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    for _, name, _ in [e for e in entry_points() if e[0] == "idtfv.commands"]:
        assert f"    {name}" in run.stdout, f"idtfv --help from the wheel lists no {name}"
