"""The package's import rules, checked on the source tree with ``ast`` (nothing is imported).

idtfv is one import package. Its base (``idtfv/``: errors, atomic I/O, video, data, cache, runner, the
dispatcher) imports no stage; the stage folders at the repository root install as subpackages
(``idt/`` is ``idtfv.idt``, ...) and form layers ``idt < encoding < classify < deep``. The rules, one letter each
(``docs/ARCHITECTURE.md`` explains them):

(a) ``base-imports-stage``: a base module (``idtfv.*`` outside the stage subpackages) imports a stage.
(b) ``upward``: a stage imports a later stage (``idt < encoding < classify < deep``).
(c) ``internals``: a stage imports another stage's module instead of its package (``idtfv.idt``,
    ``idtfv.idt.flow``, ``idtfv.encoding``, ``idtfv.classify``, ``idtfv.deep``).
(d) ``flow-imports-extractor``: ``idtfv.idt.flow`` (the lower layer of ``idt``) imports the extractor's modules.
(e) ``cycle``: modules import each other in a cycle (imports run at import time: module level, class bodies).
(f) ``old-name``: code, tests, bench scripts or documentation examples import ``idt``, ``encoding``, ``classify``
    or ``deep`` as top-level names (from the repository root they would load a second copy of a stage).

Every import counts for (a)-(d), function-local ones too; relative imports are resolved, ``from pkg import name``
means the module ``pkg.name`` when that module exists, and ``importlib.import_module("literal")`` is an import.
The checker is tested on planted trees at the end of this file.
"""

from __future__ import annotations

import ast
import re
import tomllib
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

#: The stage subpackages, lowest layer first.
STAGES = ("idtfv.idt", "idtfv.encoding", "idtfv.classify", "idtfv.deep")
#: What one stage may import of another: the packages themselves (their ``__init__`` is the public API).
PUBLIC = frozenset({"idtfv.idt", "idtfv.idt.flow", "idtfv.encoding", "idtfv.classify", "idtfv.deep"})
#: The flow solvers, a lower layer inside ``idtfv.idt``.
FLOW = "idtfv.idt.flow"
#: The stage folders' names, which must never be imported as top-level modules.
OLD_NAMES = frozenset({"idt", "encoding", "classify", "deep"})
#: Calls whose first argument, a string literal, names a module (or ``module.attribute``).
_NAME_CALLS = {"import_module": "import", "__import__": "import", "importorskip": "import",
               "patch": "attribute", "setattr": "attribute", "delattr": "attribute"}

RULES = {
    "a": "base-imports-stage",
    "b": "upward",
    "c": "internals",
    "d": "flow-imports-extractor",
    "e": "cycle",
    "f": "old-name",
}


# ----------------------------------------------------------------------------------------------- the checker
@dataclass(frozen=True)
class Import:
    """One import found in a file: ``target`` is the dotted module name as written (relative ones resolved)."""

    path: str  # file, relative to the repository root
    line: int
    target: str
    runtime: bool  # runs when the module is imported (not in a function, not under ``if TYPE_CHECKING``)
    absolute: bool  # written without leading dots


@dataclass(frozen=True)
class Violation:
    path: str
    line: int
    rule: str  # a key of RULES
    message: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: rule ({self.rule}) {RULES[self.rule]}: {self.message}"


def package_dirs(pyproject: Path) -> dict[str, str]:
    """``[tool.setuptools.package-dir]`` of ``pyproject``: import name -> folder, relative to its directory."""
    config = tomllib.loads(pyproject.read_text(encoding="utf-8"))
    return dict(config["tool"]["setuptools"]["package-dir"])


def module_files(root: Path, dirs: dict[str, str]) -> dict[str, Path]:
    """Every module of the package: dotted name -> file (``pkg/__init__.py`` is ``pkg``).

    A folder mapped to a package of its own (``"idtfv.idt" = "idt"``) is walked once, under that name.
    """
    mapped = {(root / folder).resolve() for folder in dirs.values()}
    modules: dict[str, Path] = {}
    for name, folder in sorted(dirs.items()):
        base = (root / folder).resolve()
        for file in sorted(base.rglob("*.py")):
            parts = file.relative_to(base).with_suffix("").parts
            if "__pycache__" in parts or any(
                    (base.joinpath(*parts[:i])).resolve() in mapped for i in range(1, len(parts))):
                continue
            if parts[-1] == "__init__":
                parts = parts[:-1]
            modules[".".join((name, *parts))] = file
    return modules


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _call_name(func: ast.expr) -> str | None:
    if isinstance(func, ast.Name):
        return func.id
    if isinstance(func, ast.Attribute):
        return func.attr
    return None


def resolve_relative(package: str | None, level: int, module: str | None) -> str | None:
    """The absolute name of ``from <level dots><module> import ...`` written in ``package`` (None: unresolvable)."""
    if level == 0:
        return module
    if package is None:  # a relative import outside the package
        return None
    parts = package.split(".")
    if level > len(parts):
        return None
    base = ".".join(parts[: len(parts) - (level - 1)])
    return f"{base}.{module}" if module else base


def _module_level(body: list[ast.stmt]):
    """The statements that run at import time: ``body`` and the blocks of its ``if``/``try``/``with``."""
    for node in body:
        yield node
        if isinstance(node, (ast.If, ast.Try, ast.With)):
            for block in (getattr(node, "body", []), getattr(node, "orelse", []), getattr(node, "finalbody", [])):
                yield from _module_level(block)
            for handler in getattr(node, "handlers", []):
                yield from _module_level(handler.body)


def package_exports(files: dict[str, Path], modules: set[str]) -> dict[str, set[str]]:
    """Per package, the names its ``__init__`` binds to something that is not a submodule.

    ``from idtfv.classify import evaluate`` imports the function when the package's ``__init__`` binds it
    (``from .evaluate import evaluate``), although a submodule ``idtfv.classify.evaluate`` exists too.
    """
    out: dict[str, set[str]] = {}
    for package, file in files.items():
        if file.name != "__init__.py":
            continue
        bound: set[str] = set()
        for node in _module_level(ast.parse(file.read_text(encoding="utf-8")).body):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                bound.add(node.name)
            elif isinstance(node, (ast.Assign, ast.AnnAssign)):
                targets = node.targets if isinstance(node, ast.Assign) else [node.target]
                bound |= {n.id for t in targets for n in ast.walk(t) if isinstance(n, ast.Name)}
            elif isinstance(node, ast.ImportFrom):
                base = resolve_relative(package, node.level, node.module)
                bound |= {a.asname or a.name for a in node.names if base and f"{base}.{a.name}" not in modules}
        out[package] = bound
    return out


class _ImportVisitor(ast.NodeVisitor):
    """Collects :class:`Import` records of one file."""

    def __init__(self, path: str, module: str | None, is_package: bool, modules: set[str],
                 exports: dict[str, set[str]]):
        self.path, self.module, self.modules, self.exports = path, module, modules, exports
        self.package = module if is_package else (module.rpartition(".")[0] if module else None)
        self.found: list[Import] = []
        self._local = 0  # depth of function bodies / TYPE_CHECKING blocks

    def _add(self, node: ast.AST, target: str, absolute: bool) -> None:
        self.found.append(Import(self.path, node.lineno, target, self._local == 0, absolute))

    def _in_function(self, node):
        self._local += 1
        self.generic_visit(node)
        self._local -= 1

    visit_FunctionDef = visit_AsyncFunctionDef = visit_Lambda = _in_function

    def visit_If(self, node: ast.If) -> None:
        if _is_type_checking(node.test):
            self._local += 1
            for child in node.body:
                self.visit(child)
            self._local -= 1
            for child in node.orelse:
                self.visit(child)
        else:
            self.generic_visit(node)

    def visit_Import(self, node: ast.Import) -> None:
        for alias in node.names:
            self._add(node, alias.name, True)

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        base = resolve_relative(self.package, node.level, node.module)
        if base is None:
            return
        for alias in node.names:
            sub = f"{base}.{alias.name}"
            is_module = sub in self.modules and alias.name not in self.exports.get(base, ())
            self._add(node, sub if is_module else base, node.level == 0)

    def visit_Call(self, node: ast.Call) -> None:
        kind = _NAME_CALLS.get(_call_name(node.func) or "")
        args = node.args
        if kind and args and isinstance(args[0], ast.Constant) and isinstance(args[0].value, str):
            text = args[0].value
            if kind == "import" and re.fullmatch(r"\.*[A-Za-z_][\w.]*", text):
                level = len(text) - len(text.lstrip("."))
                package = args[1].value if (len(args) > 1 and isinstance(args[1], ast.Constant)
                                            and isinstance(args[1].value, str)) else None
                if level and package:
                    target = ".".join(package.split(".")[: len(package.split(".")) - level + 1])
                    self._add(node, f"{target}.{text[level:]}" if text[level:] else target, False)
                elif not level:
                    self._add(node, text, True)
            elif kind == "attribute" and re.fullmatch(r"[A-Za-z_]\w*(\.\w+)+", text):
                # monkeypatch.setattr("pkg.module.name", ...) / mock.patch(...): names a module by its prefix
                self.found.append(Import(self.path, node.lineno, text.rpartition(".")[0], False, True))
        self.generic_visit(node)

    def visit_List(self, node: ast.List) -> None:  # ["python", "-m", "pkg.module"]
        self._module_flags(node)
        self.generic_visit(node)

    visit_Tuple = visit_List

    def _module_flags(self, node) -> None:
        values = [e.value if isinstance(e, ast.Constant) else None for e in node.elts]
        for flag, name in zip(values, values[1:]):
            if flag == "-m" and isinstance(name, str):
                self.found.append(Import(self.path, node.lineno, name, False, True))


def imports_of(file: Path, *, root: Path, module: str | None = None, modules: set[str] | None = None,
               exports: dict[str, set[str]] | None = None, source: str | None = None) -> list[Import]:
    """Every import of one file (``module``: its dotted name when it is part of the package; ``modules``, ``exports``:
    the package's modules and :func:`package_exports`, to tell ``from pkg import submodule`` from a name)."""
    text = file.read_text(encoding="utf-8") if source is None else source
    tree = ast.parse(text, filename=str(file))
    try:
        rel = file.relative_to(root).as_posix()
    except ValueError:
        rel = file.as_posix()
    visitor = _ImportVisitor(rel, module, file.name == "__init__.py", modules or set(), exports or {})
    visitor.visit(tree)
    return visitor.found


def _within(name: str, package: str) -> bool:
    return name == package or name.startswith(package + ".")


def stage_of(name: str) -> str | None:
    """The stage subpackage ``name`` belongs to (None for the base and for other packages)."""
    return next((stage for stage in STAGES if _within(name, stage)), None)


def _project_module(target: str, modules: set[str]) -> str | None:
    """The package module an import target loads: the target, or its longest prefix that is a module."""
    parts = target.split(".")
    for n in range(len(parts), 0, -1):
        if ".".join(parts[:n]) in modules:
            return ".".join(parts[:n])
    return None


def layer_violations(module: str, imp: Import) -> list[Violation]:
    """Rules (a)-(d) for one import of a package module."""
    target, here, there = imp.target, stage_of(module), stage_of(imp.target)
    out = []
    if not _within(target, "idtfv") or there is None or there == here:
        if here == "idtfv.idt" and _within(module, FLOW) and there == "idtfv.idt" and not _within(target, FLOW):
            out.append(Violation(imp.path, imp.line, "d", f"{module} (flow solvers) imports {target}, a module of "
                                 f"the extractor; flow must not depend on idtfv.idt's other modules: move the "
                                 f"shared code into {FLOW} or the base"))
        return out
    if here is None:
        out.append(Violation(imp.path, imp.line, "a", f"base module {module} imports the stage module {target}; "
                             "the base imports no stage: move the code into the stage, or the shared part into "
                             "the base"))
        return out
    if STAGES.index(there) > STAGES.index(here):
        out.append(Violation(imp.path, imp.line, "b", f"{module} (stage {here}) imports {target} of the later "
                             f"stage {there}; stages import only earlier ones ({' < '.join(STAGES)})"))
    if target not in PUBLIC:
        out.append(Violation(imp.path, imp.line, "c", f"{module} imports {target}, an internal module of "
                             f"{there}; import from the package instead (from {there} import ...) and export "
                             f"the name in {there}'s __init__ if it is missing"))
    return out


def cycle_violations(graph: dict[str, dict[str, Import]]) -> list[Violation]:
    """Rule (e): one violation per strongly connected component of the runtime import graph, with one cycle."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []
    counter = [0]

    def strongconnect(start: str) -> None:  # iterative Tarjan
        work = [(start, iter(sorted(graph.get(start, {}))))]
        index[start] = low[start] = counter[0]
        counter[0] += 1
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            for child in children:
                if child not in index:
                    index[child] = low[child] = counter[0]
                    counter[0] += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph.get(child, {})))))
                    break
                if child in on_stack:
                    low[node] = min(low[node], index[child])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    component = []
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        component.append(member)
                        if member == node:
                            break
                    components.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            strongconnect(node)

    out = []
    for component in components:
        members = set(component)
        first = component[0]
        if len(component) == 1 and first not in graph.get(first, {}):
            continue
        # shortest path first -> ... -> first inside the component (breadth-first)
        previous: dict[str, str] = {}
        frontier, found = [first], None
        while frontier and found is None:
            nxt = []
            for node in frontier:
                for child in sorted(graph.get(node, {})):
                    if child not in members:
                        continue
                    if child == first:
                        found = node
                        break
                    if child not in previous:
                        previous[child] = node
                        nxt.append(child)
                if found is not None:
                    break
            frontier = nxt
        path = [found]
        while path[-1] != first:
            path.append(previous[path[-1]])
        path.reverse()  # first ... found, and found imports first
        steps = [graph[a][b] for a, b in zip(path, path[1:] + [first])]
        chain = " -> ".join(f"{s.path}:{s.line} imports {s.target}" for s in steps)
        out.append(Violation(steps[0].path, steps[0].line, "e",
                             f"import cycle among {', '.join(component)}: {chain}; move one import into the "
                             "function that needs it, or move the shared code down a layer"))
    return out


def old_name_violations(imports: list[Import]) -> list[Violation]:
    """Rule (f): absolute imports whose first name is a stage folder's (``idt``, ``encoding``, ...)."""
    return [Violation(imp.path, imp.line, "f", f"imports {imp.target!r}: {imp.target.split('.')[0]!r} is not a "
                      f"top-level package; write idtfv.{imp.target}")
            for imp in imports if imp.absolute and imp.target.split(".")[0] in OLD_NAMES]


_PYTHON_BLOCK = re.compile(r"^```python\n(.*?)^```", re.S | re.M)


def markdown_imports(file: Path, *, root: Path) -> list[Import]:
    """Imports of the ```` ```python ```` blocks of a Markdown file (line numbers of the file)."""
    text = file.read_text(encoding="utf-8")
    found = []
    for match in _PYTHON_BLOCK.finditer(text):
        offset = text.count("\n", 0, match.start(1))
        try:
            block = imports_of(file, root=root, source=match.group(1))
        except SyntaxError:  # a block with "..." placeholders: check its import lines alone
            lines = "\n".join(line if re.match(r"\s*(import|from)\s", line) else ""
                              for line in match.group(1).splitlines())
            block = imports_of(file, root=root, source=lines)
        found += [Import(i.path, i.line + offset, i.target, i.runtime, i.absolute) for i in block]
    return found


_PYTHON_M = re.compile(r"python[\w.]*(?:\s+-[A-Za-z]+)*\s+-m\s+((?:idt|encoding|classify|deep)(?:\.[\w.]+)?)(?=[\s;)'\"]|$)",
                       re.M)


def shell_imports(file: Path, *, root: Path) -> list[Import]:
    """``python -m MODULE`` in a text file (Makefile, shell blocks of Markdown), as imports of MODULE."""
    text = file.read_text(encoding="utf-8")
    rel = file.relative_to(root).as_posix()
    return [Import(rel, text.count("\n", 0, m.start()) + 1, m.group(1), False, True) for m in _PYTHON_M.finditer(text)]


def check_tree(root: Path, *, dirs: dict[str, str] | None = None, extra: tuple[str, ...] = ("tests", "bench"),
               docs: tuple[str, ...] = ("README.md", "docs"), text: tuple[str, ...] = ("Makefile",)
               ) -> list[Violation]:
    """Every violation of rules (a)-(f) in the repository at ``root``.

    Parameters
    ----------
    root : Path
        Repository root.
    dirs : dict, optional
        Import name -> folder (default: ``[tool.setuptools.package-dir]`` of ``root/pyproject.toml``).
    extra : tuple of str
        Folders of other Python code (tests, bench scripts) checked for rule (f) only.
    docs : tuple of str
        Markdown files or folders whose ```` ```python ```` examples (and ``python -m`` lines) are checked for
        rule (f).
    text : tuple of str
        Other files whose ``python -m MODULE`` lines are checked for rule (f).
    """
    dirs = package_dirs(root / "pyproject.toml") if dirs is None else dirs
    files = module_files(root, dirs)
    modules = set(files)
    exports = package_exports(files, modules)
    violations: list[Violation] = []
    graph: dict[str, dict[str, Import]] = {}
    for module, file in sorted(files.items()):
        found = imports_of(file, root=root, module=module, modules=modules, exports=exports)
        violations += old_name_violations(found)
        for imp in found:
            violations += layer_violations(module, imp)
            target = _project_module(imp.target, modules)
            if imp.runtime and target is not None:
                graph.setdefault(module, {}).setdefault(target, imp)
    violations += cycle_violations(graph)
    for folder in extra:
        for file in sorted((root / folder).rglob("*.py")) if (root / folder).is_dir() else []:
            if "__pycache__" not in file.parts:
                violations += old_name_violations(imports_of(file, root=root))
    for name in docs:
        path = root / name
        for file in sorted(path.rglob("*.md")) if path.is_dir() else ([path] if path.exists() else []):
            violations += old_name_violations(markdown_imports(file, root=root) + shell_imports(file, root=root))
    for name in text:
        if (root / name).is_file():
            violations += old_name_violations(shell_imports(root / name, root=root))
    return sorted(set(violations), key=lambda v: (v.rule, v.path, v.line, v.message))


# ----------------------------------------------------------------------------------------------- the repository
@pytest.fixture(scope="module")
def repo_violations() -> list[Violation]:
    return check_tree(REPO)


def test_the_module_map_follows_package_dir():
    files = module_files(REPO, package_dirs(REPO / "pyproject.toml"))
    assert files["idtfv.idt.flow.dis"] == REPO / "idt" / "flow" / "dis.py"
    assert files["idtfv.idt"] == REPO / "idt" / "__init__.py"
    assert files["idtfv.deep.models"] == REPO / "deep" / "models" / "__init__.py"
    assert files["idtfv.errors"] == REPO / "idtfv" / "errors.py"
    for stage, folder in [("idtfv.idt", "idt"), ("idtfv.encoding", "encoding"), ("idtfv.classify", "classify"),
                          ("idtfv.deep", "deep")]:
        count = sum(1 for _ in (REPO / folder).rglob("*.py") if "__pycache__" not in _.parts)
        assert sum(1 for name in files if _within(name, stage)) == count, stage
    assert not [name for name in files if name.split(".")[0] != "idtfv"]


@pytest.mark.parametrize("rule", sorted(RULES), ids=[f"{k}-{v}" for k, v in sorted(RULES.items())])
def test_the_source_tree_keeps_the_import_rules(rule, repo_violations):
    found = [str(v) for v in repo_violations if v.rule == rule]
    assert not found, f"{len(found)} violation(s) of rule ({rule}) {RULES[rule]}:\n" + "\n".join(found)


def test_the_checker_sees_the_repository_imports():
    """Guards against a checker that silently finds nothing in the real tree (the planted trees below test the
    rules): every ``import``/``from`` statement of the package gives a record, relative ones resolved."""
    files = module_files(REPO, package_dirs(REPO / "pyproject.toml"))
    modules = set(files)
    exports = package_exports(files, modules)
    total, errors_users = 0, set()
    for module, file in files.items():
        source = file.read_text(encoding="utf-8")
        statements = [n for n in ast.walk(ast.parse(source)) if isinstance(n, (ast.Import, ast.ImportFrom))]
        found = imports_of(file, root=REPO, module=module, modules=modules, exports=exports, source=source)
        lines = {i.line for i in found}
        assert all(n.lineno in lines for n in statements), f"{file}: an import statement gave no record"
        for imp in found:
            if not imp.absolute:
                assert _within(imp.target, "idtfv"), f"{file}:{imp.line}: relative import resolved to {imp.target}"
            if imp.target == "idtfv.errors":
                errors_users.add(stage_of(module))
        total += len(statements)
    assert total > 100, total
    assert errors_users >= set(STAGES) | {None}  # every stage and the base use the shared exceptions


# ----------------------------------------------------------------------------------------------- planted trees
DIRS = {"idtfv": "idtfv", "idtfv.idt": "idt", "idtfv.encoding": "encoding", "idtfv.classify": "classify",
        "idtfv.deep": "deep"}


def _write(root: Path, files: dict[str, str]) -> None:
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")


def _clean_tree() -> dict[str, str]:
    """A small tree that keeps every rule, with the allowed forms the checker must accept."""
    return {
        "idtfv/__init__.py": "",
        "idtfv/errors.py": "class IdtfvError(Exception):\n    pass\n",
        "idtfv/cli.py": "from importlib.metadata import entry_points\nfrom .errors import IdtfvError\n",
        "idt/__init__.py": "import importlib\n\ndef __getattr__(name):\n"
                           "    return importlib.import_module(f'{__name__}.extractor')\n",
        "idt/extractor.py": "from idtfv.errors import IdtfvError\nfrom .flow import estimate_flow\n"
                            "from . import params\n",
        "idt/params.py": "import numpy as np\n",
        "idt/flow/__init__.py": "from .tvl1 import estimate_flow\n",
        "idt/flow/tvl1.py": "from idtfv.errors import IdtfvError\nfrom . import pyramid\n\n"
                            "def estimate_flow():\n    from idtfv.idt.flow import estimate_flow as again\n",
        "idt/flow/pyramid.py": "import math\n",
        "encoding/__init__.py": "from .fisher import fisher_vector\n",
        "encoding/fisher.py": "from idtfv.idt import IDTParams\nfrom idtfv.idt import flow\n"
                              "from idtfv.idt.flow import estimate_flow\n",
        "classify/__init__.py": "from .scores import write_scores\nfrom .evaluate import evaluate\n",
        "classify/evaluate.py": "from .scores import write_scores\n\ndef evaluate():\n    pass\n",
        "classify/scores.py": "from ..encoding import fisher_vector\nimport idtfv.encoding\n",
        "deep/__init__.py": "",
        "deep/stage.py": "from typing import TYPE_CHECKING\nfrom idtfv.classify import write_scores, evaluate\n"
                         "from idtfv import errors\n\ndef run():\n    from idtfv.deep import stage\n",
        "tests/test_x.py": "import idtfv.idt\nimport idtfv\nimport numpy\nimport deepdiff\n",
        "bench/bench_x.py": "from idtfv.encoding import fisher_vector\n",
        "README.md": "text\n```python\nfrom idtfv.idt import IDTParams, extract\ntr = extract(...)\n```\n",
    }


def test_a_clean_planted_tree_has_no_violations(tmp_path):
    _write(tmp_path, _clean_tree())
    assert check_tree(tmp_path, dirs=DIRS) == []


# Each case: files added to the clean tree -> the (path, line, rule) violations expected, exactly.
PLANTED = {
    "a-base-imports-stage": (
        {"idtfv/runner.py": "import os\n\ndef run():\n    from idtfv.idt import extract\n",
         "idtfv/cache.py": "from .errors import IdtfvError\nimport idtfv.encoding.fisher as f\n"},
        {("idtfv/runner.py", 4, "a"), ("idtfv/cache.py", 2, "a")}),
    "b-upward": (
        {"encoding/gmm.py": "\n\ndef fit():\n    from idtfv.classify import write_scores\n",
         "idt/stage.py": "from ..deep import stage\n"},
        {("encoding/gmm.py", 4, "b"), ("idt/stage.py", 1, "b"), ("idt/stage.py", 1, "c")}),
    "c-internals": (
        {"deep/train.py": "from idtfv.classify.scores import write_scores\n",
         "deep/data.py": "import importlib\nm = importlib.import_module('idtfv.idt.flow.tvl1')\n",
         "classify/svm.py": "from idtfv.encoding import fisher\n",
         "deep/aggregate.py": "from idtfv.classify import scores\n"},
        {("deep/train.py", 1, "c"), ("deep/data.py", 2, "c"), ("classify/svm.py", 1, "c"),
         ("deep/aggregate.py", 1, "c")}),
    "d-flow-imports-extractor": (
        {"idt/flow/dis.py": "from ..params import x\n\ndef f():\n    from idtfv.idt import extract\n"},
        {("idt/flow/dis.py", 1, "d"), ("idt/flow/dis.py", 4, "d")}),
    "e-cycle": (
        {"idtfv/video.py": "from idtfv import data\n",
         "idtfv/data/__init__.py": "from .manifest import Manifest\n",
         "idtfv/data/manifest.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n"
                                   "    from idtfv.cache import x\nfrom idtfv.video import probe\n",
         "idtfv/cache.py": "from idtfv import data\n"},
        {("idtfv/data/__init__.py", 1, "e")}),
    "f-old-name": (
        {"tests/test_old.py": "import idt\nfrom encoding.fisher import fisher_vector\n"
                              "CMD = ['python', '-m', 'classify.cli']\n\n"
                              "def test(monkeypatch):\n    monkeypatch.setattr('deep.train.fit', None)\n",
         "classify/knn.py": "import importlib\nimportlib.import_module('idt.params')\n",
         "bench/bench_y.py": "from deep import models\n",
         "docs/API.md": "# API\n\n```python\nimport idt\ntr = idt.extract(...)\n```\n\n"
                        "```bash\npython -m idt.cli video.avi\npython -m idtfv.idt.cli video.avi\n```\n",
         "Makefile": "x:\n\t$(VENV)/bin/python -u -m deep.cli --help\n\tpython3 -m pytest -m deep_tests\n"},
        {("tests/test_old.py", 1, "f"), ("tests/test_old.py", 2, "f"), ("tests/test_old.py", 3, "f"),
         ("tests/test_old.py", 6, "f"), ("classify/knn.py", 2, "f"), ("bench/bench_y.py", 1, "f"),
         ("docs/API.md", 4, "f"), ("docs/API.md", 9, "f"), ("Makefile", 2, "f")}),
}


@pytest.mark.parametrize("case", sorted(PLANTED))
def test_planted_violations_are_caught_with_file_line_and_rule(case, tmp_path):
    added, expected = PLANTED[case]
    _write(tmp_path, {**_clean_tree(), **added})
    found = check_tree(tmp_path, dirs=DIRS)
    assert {(v.path, v.line, v.rule) for v in found} == expected, "\n".join(map(str, found))
    for v in found:
        text = str(v)
        assert text.startswith(f"{v.path}:{v.line}: rule ({v.rule}) {RULES[v.rule]}: ")


def test_a_cycle_report_names_every_step():
    files = {"idtfv/a.py": "from idtfv import b\n", "idtfv/b.py": "import os\nimport idtfv.c\n",
             "idtfv/c.py": "\n\nfrom .a import thing\n"}
    graph = {}
    for rel, text in files.items():
        module = "idtfv." + Path(rel).stem
        for imp in imports_of(Path(rel), root=Path("."), module=module, modules={"idtfv.a", "idtfv.b", "idtfv.c"},
                              source=text):
            if imp.target.startswith("idtfv."):
                graph.setdefault(module, {})[imp.target] = imp
    (violation,) = cycle_violations(graph)
    assert violation.rule == "e"
    assert "idtfv/a.py:1 imports idtfv.b -> idtfv/b.py:2 imports idtfv.c -> idtfv/c.py:3 imports idtfv.a" in \
        violation.message
