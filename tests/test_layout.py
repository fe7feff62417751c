"""The package's layout is its architecture, and docs/development.md states it: these tests hold the two
together.

- Every import of ``provider/deyel_provider`` (module level, inside functions, under ``TYPE_CHECKING``)
  goes to the importer's own folder or to a lower layer; none goes up or sideways, and none closes a circle.
  The layer order is read from the table under "Layers" in docs/development.md: the one place it is written.
- The emulator imports nothing of the provider, and nothing of the provider imports the emulator.
- The tree at the top of docs/development.md lists exactly the package's folders and top-level modules.
- Every folder's ``__init__`` says its job in one line.
- No module outside the emulator is over 450 lines; no function of the engines takes more than 8 parameters;
  no function outside the emulator takes a ``logger`` (module loggers reach the task log).
"""

from __future__ import annotations

import ast
import importlib
import re
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "provider" / "deyel_provider"
DOC = ROOT / "docs" / "development.md"
NAME = "deyel_provider"

MAX_MODULE_LINES = 450
MAX_PARAMETERS = 8
ENGINE_FOLDERS = ("read", "extract", "load", "wait", "probe", "api", "storage")
#: Public module paths that moved, kept one minor release with a DeprecationWarning (CHANGELOG lists them).
DEPRECATED = {
    "deyel_provider.retry": "deyel_provider.http.retry",
    "deyel_provider.extraction": "deyel_provider.extract.run",
}


# -- the modules and their imports -------------------------------------------------------------------------


@dataclass(frozen=True)
class Module:
    name: str  # deyel_provider.auth.provider
    path: Path
    is_package: bool

    @property
    def unit(self) -> str:
        """The folder a module lives in (``auth``, ``extract``), or its own file name at the top level."""
        parts = self.name.split(".")[1:]
        if not parts:
            return "__init__.py"
        if len(parts) == 1 and not self.is_package:
            return f"{parts[0]}.py"
        return f"{parts[0]}/"


@dataclass(frozen=True)
class Import:
    source: str
    target: str
    line: int


def modules(package: Path = PACKAGE) -> dict[str, Module]:
    found = {}
    for path in sorted(package.rglob("*.py")):
        parts = [NAME, *path.relative_to(package).with_suffix("").parts]
        is_package = parts[-1] == "__init__"
        if is_package:
            parts = parts[:-1]
        found[".".join(parts)] = Module(".".join(parts), path, is_package)
    return found


def imports(module: Module, known: dict[str, Module]) -> list[Import]:
    """Every import of ours in ``module``, wherever it stands (module level, in a function, TYPE_CHECKING).

    ``from a.b import c`` imports the module ``a.b.c`` when there is one, else the name ``c`` of ``a.b``.
    """

    def resolve(name: str) -> str | None:
        while name and name not in known:
            name = name.rpartition(".")[0]
        return name or None

    package = module.name if module.is_package else module.name.rpartition(".")[0]
    found = []
    for node in ast.walk(ast.parse(module.path.read_text(), str(module.path))):
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package
                for _ in range(node.level - 1):
                    anchor = anchor.rpartition(".")[0]
                base = f"{anchor}.{base}" if base else anchor
            for alias in node.names:
                submodule = f"{base}.{alias.name}"
                targets.append(submodule if submodule in known else base)
        for target in targets:
            if target.split(".")[0] != NAME:
                continue
            resolved = resolve(target)
            if resolved is not None and resolved != module.name:
                found.append(Import(module.name, resolved, node.lineno))
    return found


def graph(package: Path = PACKAGE) -> tuple[dict[str, Module], list[Import]]:
    known = modules(package)
    return known, [edge for module in known.values() for edge in imports(module, known)]


# -- what docs/development.md says -------------------------------------------------------------------------


def layers(doc: str) -> dict[str, int]:
    """``{unit: layer}`` from the table under the "Layers" heading: ``| 3 | `auth/` |``."""
    section = re.search(r"^## Layers\n(.*?)(?=^## |\Z)", doc, re.MULTILINE | re.DOTALL)
    assert section, "docs/development.md has no '## Layers' section"
    order: dict[str, int] = {}
    for row in re.finditer(r"^\|\s*(\d+)\s*\|([^|]*)\|", section.group(1), re.MULTILINE):
        for unit in re.findall(r"`([^`]+)`", row.group(2)):
            assert unit not in order, f"{unit} is in two layers of docs/development.md"
            order[unit] = int(row.group(1))
    assert order, "the Layers section of docs/development.md has no table rows"
    return order


def tree_entries(doc: str) -> list[str]:
    """The paths the tree block lists under ``provider/deyel_provider/`` (two spaces per level)."""
    block = re.search(r"```\n(provider/deyel_provider/\n.*?)```", doc, re.DOTALL)
    assert block, "docs/development.md has no tree block starting with provider/deyel_provider/"
    entries, stack = [], []
    for line in block.group(1).splitlines()[1:]:
        match = re.match(r"( +)(\S+)", line)
        if not match or not re.fullmatch(r"\w+/|\w+\.py", match.group(2)):
            continue  # a description carried over to a second line
        depth = len(match.group(1)) // 2
        stack[depth - 1 :] = [match.group(2)]
        entries.append("".join(stack[:depth]))
    return entries


def package_folders(package: Path = PACKAGE) -> set[str]:
    return {f"{p.parent.relative_to(package).as_posix()}/" for p in package.rglob("__init__.py")} - {"./"}


def top_level_modules(package: Path = PACKAGE) -> set[str]:
    return {p.name for p in package.glob("*.py")}


# -- (a) the import graph ----------------------------------------------------------------------------------


def layer_violations(known: dict[str, Module], edges: list[Import], order: dict[str, int]) -> list[str]:
    """Imports that go up, or sideways between two folders of one layer; units missing from the order."""
    found = []
    for edge in edges:
        source, target = known[edge.source], known[edge.target]
        if "emulator/" in (source.unit, target.unit):
            continue  # test_the_emulator_stands_alone
        if source.unit == target.unit:
            continue
        where = f"{edge.source}:{edge.line} imports {edge.target}"
        if source.unit not in order or target.unit not in order:
            found.append(f"{where}: {source.unit if source.unit not in order else target.unit} has no layer")
        elif order[target.unit] > order[source.unit]:
            found.append(f"{where}: upward (layer {order[source.unit]} -> {order[target.unit]})")
        elif (
            order[target.unit] == order[source.unit]
            and source.unit.endswith("/")
            and target.unit.endswith("/")
        ):
            found.append(
                f"{where}: sideways ({source.unit} and {target.unit} share layer {order[target.unit]})"
            )
    return found


def cycles(edges: list[Import]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan's algorithm, iterative)."""
    successors: dict[str, set[str]] = {}
    for edge in edges:
        successors.setdefault(edge.source, set()).add(edge.target)
        successors.setdefault(edge.target, set())
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found = []
    for root in sorted(successors):
        if root in index:
            continue
        work = [(root, iter(sorted(successors[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(successors[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
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
                if len(component) > 1:
                    found.append(sorted(component))
    return found


def test_no_import_goes_up_or_sideways_and_every_folder_has_a_layer():
    known, edges = graph()
    order = layers(DOC.read_text())
    units = {module.unit for module in known.values()} - {"emulator/"}
    assert sorted(units - set(order)) == [], "folders or modules without a layer in docs/development.md"
    assert sorted(set(order) - units) == [], "layers in docs/development.md name what does not exist"
    assert layer_violations(known, edges, order) == []


def test_no_import_circles():
    _, edges = graph()
    assert cycles(edges) == []


def test_the_emulator_stands_alone():
    """The emulator is a stand-in for Deyel: it shares no code with the client it tests, either way."""
    known, edges = graph()
    crossing = [
        f"{edge.source} imports {edge.target}"
        for edge in edges
        if (known[edge.source].unit == "emulator/") != (known[edge.target].unit == "emulator/")
    ]
    assert crossing == []


def test_the_checks_find_an_upward_import_a_sideways_one_and_a_circle(tmp_path):
    """The walk sees imports inside functions and under TYPE_CHECKING, relative ones, and ``from a import
    module``; the layer check and the circle check fail on what they must."""
    package = tmp_path / NAME
    files = {
        "__init__.py": '"""Root."""\n',
        "low/__init__.py": '"""Low."""\n',
        "low/a.py": "def f():\n    from deyel_provider.high import b\n",  # upward, inside a function
        "mid1/__init__.py": "",
        "mid1/c.py": "from ..mid2 import d\n",  # sideways, relative
        "mid2/__init__.py": "",
        "mid2/d.py": "",
        "high/__init__.py": "",
        # type-only, under TYPE_CHECKING: still an import of the design (and here, a circle)
        "high/b.py": "import typing\nif typing.TYPE_CHECKING:\n    from deyel_provider.low import a\n",
    }
    for name, text in files.items():
        (package / name).parent.mkdir(parents=True, exist_ok=True)
        (package / name).write_text(text)
    known, edges = graph(package)
    assert {(e.source, e.target) for e in edges} == {
        ("deyel_provider.low.a", "deyel_provider.high.b"),
        ("deyel_provider.mid1.c", "deyel_provider.mid2.d"),
        ("deyel_provider.high.b", "deyel_provider.low.a"),
    }
    order = {"low/": 0, "mid1/": 1, "mid2/": 1, "high/": 2, "__init__.py": 3}
    found = layer_violations(known, edges, order)
    assert len(found) == 2
    assert "upward (layer 0 -> 2)" in found[0] + found[1]
    assert "sideways" in found[0] + found[1]
    assert cycles(edges) == [["deyel_provider.high.b", "deyel_provider.low.a"]]


# -- (b) the map in docs/development.md --------------------------------------------------------------------


def test_the_map_lists_exactly_the_folders_and_top_level_modules():
    entries = tree_entries(DOC.read_text())
    assert len(entries) == len(set(entries)), "an entry is listed twice"
    listed = set(entries)
    assert sorted({e for e in listed if e.endswith("/")} ^ package_folders()) == []
    assert sorted({e for e in listed if "/" not in e} ^ top_level_modules()) == []
    assert sorted(e for e in listed if not e.endswith("/") and not (PACKAGE / e).is_file()) == []


def test_the_map_answers_the_newcomers_questions_in_one_folder():
    doc = DOC.read_text()
    assert doc.index("```\nprovider/deyel_provider/") < doc.index("## Layers") < doc.index("`make test`"), (
        "the page opens with the tree and the layers"
    )
    answers = dict(re.findall(r"\*\*(Where [^*]+\?)\*\* In `(\w+/)`", doc))
    assert answers == {
        "Where does a slice get declared complete?": "read/",
        "Where is the token renewed?": "auth/",
    }
    assert all(f"{folder}" in package_folders() for folder in answers.values())


def test_the_map_check_fails_on_a_folder_the_doc_does_not_list(tmp_path):
    package = tmp_path / NAME
    for name in ("__init__.py", "auth/__init__.py", "extract/formats/__init__.py", "extract/__init__.py"):
        (package / name).parent.mkdir(parents=True, exist_ok=True)
        (package / name).write_text("")
    doc = "```\nprovider/deyel_provider/\n  __init__.py  root\n  auth/  tokens\n  extract/  runs\n```\n"
    listed = set(tree_entries(doc))
    assert {e for e in listed if e.endswith("/")} ^ package_folders(package) == {"extract/formats/"}
    nested = doc.replace("  extract/  runs\n", "  extract/  runs\n    formats/  writers\n")
    assert {e for e in tree_entries(nested) if e.endswith("/")} == package_folders(package)


# -- (c) one line per folder -------------------------------------------------------------------------------


@pytest.mark.parametrize("folder", sorted(package_folders()))
def test_every_folder_says_its_job_in_one_line(folder):
    docstring = ast.get_docstring(ast.parse((PACKAGE / folder / "__init__.py").read_text()), clean=False)
    assert docstring, f"{folder}__init__.py has no docstring"
    summary = docstring.split("\n\n")[0]
    assert "\n" not in summary.strip(), f"{folder}__init__.py: the job takes more than one line"
    assert summary.strip().endswith("."), f"{folder}__init__.py: the job is not a sentence"


# -- (d) and (e) sizes --------------------------------------------------------------------------------------


def oversized_modules() -> list[str]:
    return sorted(
        f"{path.relative_to(PACKAGE)}: {n} lines"
        for path in PACKAGE.rglob("*.py")
        if "emulator" not in path.relative_to(PACKAGE).parts
        and (n := len(path.read_text().splitlines())) > MAX_MODULE_LINES
    )


def parameter_count(function: ast.FunctionDef | ast.AsyncFunctionDef, is_method: bool) -> int:
    """Parameters a caller can pass (positional, keyword-only, ``*args``, ``**kwargs``), not self or cls."""
    args = function.args
    positional = [*args.posonlyargs, *args.args]
    if is_method and positional and positional[0].arg in ("self", "cls", "mcs"):
        positional = positional[1:]
    return len(positional) + len(args.kwonlyargs) + (args.vararg is not None) + (args.kwarg is not None)


def wide_functions() -> list[str]:
    found = []
    for folder in ENGINE_FOLDERS:
        for path in sorted((PACKAGE / folder).rglob("*.py")):
            tree = ast.parse(path.read_text())
            methods = {
                id(item)
                for node in ast.walk(tree)
                if isinstance(node, ast.ClassDef)
                for item in node.body
                if isinstance(item, (ast.FunctionDef, ast.AsyncFunctionDef))
            }
            for node in ast.walk(tree):
                if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                    count = parameter_count(node, id(node) in methods)
                    if count > MAX_PARAMETERS:
                        found.append(f"{path.relative_to(PACKAGE)}:{node.lineno} {node.name}: {count}")
    return found


def test_no_module_over_450_lines():
    assert oversized_modules() == []


def test_no_engine_function_takes_more_than_8_parameters():
    assert wide_functions() == []


def threaded_loggers() -> list[str]:
    """Functions taking a ``logger``: module loggers (which Airflow puts in the task log) are the rule. A
    constructor may take where its object reports (``Progress``); deprecated keyword entries keep theirs."""
    deprecated = {PACKAGE / (old.split(".", 1)[1].replace(".", "/") + ".py") for old in DEPRECATED}
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        if "emulator" in path.relative_to(PACKAGE).parts or path in deprecated:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.name != "__init__":
                args = node.args
                takes = any(a.arg == "logger" for a in (*args.posonlyargs, *args.args, *args.kwonlyargs))
                # A deprecated keyword kept for callers says so, and warns (DeyelHook.sliced_reader).
                if takes and "DeprecationWarning" not in ast.unparse(node):
                    found.append(f"{path.relative_to(PACKAGE)}:{node.lineno} {node.name}")
    return found


def test_no_function_takes_a_logger():
    assert threaded_loggers() == []


def test_parameters_are_counted_as_a_caller_passes_them():
    tree = ast.parse(
        "def f(a, /, b, *args, c, d=1, **kw): pass\n"
        "class K:\n    def m(self, a, *, b): pass\n    @classmethod\n    def n(cls, a): pass\n"
    )
    f, k = tree.body
    assert parameter_count(f, is_method=False) == 6
    assert [parameter_count(m, is_method=True) for m in k.body] == [2, 1]


# -- deprecated re-exports ---------------------------------------------------------------------------------


@pytest.mark.parametrize(("old", "new"), sorted(DEPRECATED.items()))
def test_a_moved_path_still_imports_and_warns(old, new):
    sys.modules.pop(old, None)
    with pytest.warns(DeprecationWarning, match=rf"{re.escape(old)} moved to {re.escape(new)}"):
        shim = importlib.import_module(old)
    target = importlib.import_module(new)
    public = getattr(shim, "__all__", None) or [
        name for name in vars(shim) if not name.startswith("_") and name not in ("annotations", "warnings")
    ]
    assert public, f"{old} re-exports nothing"
    # The same object, or the shim's own wrapper keeping the old call shape (extraction.extract's keywords).
    # (Names the old module had from elsewhere are checked against their homes in test_deprecations.py.)
    assert all(
        getattr(shim, name) is getattr(target, name, None)
        or getattr(getattr(shim, name), "__module__", None) == old
        or not hasattr(target, name)
        for name in public
    )
    sys.modules.pop(old, None)


def test_the_changelog_lists_the_deprecated_paths():
    changelog = (ROOT / "CHANGELOG.md").read_text()
    unreleased = changelog.split("## [Unreleased]", 1)[1].split("\n## [", 1)[0]
    deprecated = unreleased.split("### Deprecated", 1)[1].split("\n### ", 1)[0]
    for old, new in DEPRECATED.items():
        assert re.search(rf"`{re.escape(old)}` \(now\s+`{re.escape(new)}`\)", deprecated), old


def test_nothing_of_ours_imports_a_deprecated_path():
    _, edges = graph()
    assert [f"{e.source} imports {e.target}" for e in edges if e.target in DEPRECATED] == []
