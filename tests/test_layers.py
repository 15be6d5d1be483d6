"""The layers only look down, and no module or package imports one of its own importers.

The stages are layers: ``datasets`` <- ``train`` <- ``infer`` (the command line sits in
``infer.cli``). The imports of every module under ``datasets/``, ``train/`` and ``infer/`` are read
from its source with :mod:`ast` (nothing is imported), and the test fails on:

- an import from a higher layer (``datasets`` importing ``train`` or ``infer``, ``train``
  importing ``infer``);
- an import cycle between modules;
- an import cycle between packages: sibling packages, each with everything below it, such as
  ``datasets`` and ``train``, or ``infer.sites`` and ``infer.report`` (an import from
  ``infer.sites.ranking`` of ``infer.report.report`` is an import of ``infer.report`` by
  ``infer.sites``). A package and the modules beside its subpackages are not siblings: those
  imports are checked module by module.

Every import counts wherever it is written: at module level, inside a function (a lazy import
is still a dependency, only a later one) and under ``if TYPE_CHECKING:`` (a type is a dependency
too). ``from package import name`` counts as an import of the submodule ``package.name`` when
that is a module, else of the package. Importing a submodule does not count as importing its
parent package's ``__init__``, although Python runs it first.
"""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
LAYERS = ("datasets", "train", "infer")
"""The stages, lowest first: each may import only those before it."""


def module_files() -> dict[str, Path]:
    """Every module of the three stages by dotted name (a package by its ``__init__``)."""
    modules = {}
    for stage in LAYERS:
        for path in sorted((REPO / stage).rglob("*.py")):
            parts = list(path.relative_to(REPO).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            modules[".".join(["groundbreak", *parts])] = path
    return modules


MODULES = module_files()


def imported_modules(name: str, path: Path) -> set[str]:
    """The groundbreak modules (or packages) that a module imports anywhere in its source."""
    found: set[str] = set()
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: from . import x, from ..y import z
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                source = ".".join(base + ([node.module] if node.module else []))
            else:
                source = node.module or ""
            for alias in node.names:
                submodule = f"{source}.{alias.name}"
                found.add(submodule if submodule in MODULES else source)
    return {target for target in found if target in MODULES and target != name}


GRAPH = {name: imported_modules(name, path) for name, path in MODULES.items()}


def stage(name: str) -> str:
    return name.split(".")[1]


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one node (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(graph[node]):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
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

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_every_stage_is_found_with_its_subpackages() -> None:
    assert {"groundbreak.datasets", "groundbreak.train", "groundbreak.infer"} <= set(MODULES)
    assert "groundbreak.infer.nightly.runner" in MODULES
    assert GRAPH["groundbreak.infer.nightly.runner"]  # imports are read


def test_no_stage_imports_a_higher_one() -> None:
    upward = [
        f"{name} imports {target}"
        for name, targets in GRAPH.items()
        for target in sorted(targets)
        if LAYERS.index(stage(target)) > LAYERS.index(stage(name))
    ]
    assert not upward, "\n".join(upward)


def test_no_import_cycle_between_modules() -> None:
    found = cycles(GRAPH)
    assert not found, "\n".join(" <-> ".join(cycle) for cycle in found)


def sibling_packages(name: str, target: str) -> tuple[str, str] | None:
    """The two sibling packages an import crosses between, or None when it stays in one
    package or reaches a module beside a subpackage (``infer.nightly.runner`` ->
    ``infer.atomic``)."""
    parts, other = name.split("."), target.split(".")
    common = 0
    while common < min(len(parts), len(other)) and parts[common] == other[common]:
        common += 1
    if common == len(parts) or common == len(other):  # one contains the other
        return None
    source, destination = ".".join(parts[: common + 1]), ".".join(other[: common + 1])
    if source in PACKAGES and destination in PACKAGES:
        return source, destination
    return None


PACKAGES = {name for name, path in MODULES.items() if path.name == "__init__.py"}


def test_no_import_cycle_between_packages() -> None:
    graph: dict[str, set[str]] = {package: set() for package in PACKAGES}
    why: dict[tuple[str, str], str] = {}
    for name, targets in GRAPH.items():
        for target in sorted(targets):
            crossing = sibling_packages(name, target)
            if crossing is not None:
                graph[crossing[0]].add(crossing[1])
                why.setdefault(crossing, f"{name} -> {target}")
    found = cycles(graph)
    lines = [
        " <-> ".join(cycle) + ": " + "; ".join(
            reason for (a, b), reason in sorted(why.items()) if a in cycle and b in cycle
        )
        for cycle in found
    ]
    assert not found, "\n".join(lines)


def test_infer_has_at_most_eight_modules_at_its_top_and_documented_subpackages() -> None:
    top = [p for p in (REPO / "infer").glob("*.py")]
    assert len(top) <= 8, sorted(p.name for p in top)
    for stage_name in LAYERS:
        for init in (REPO / stage_name).rglob("__init__.py"):
            tree = ast.parse(init.read_text())
            assert ast.get_docstring(tree), f"{init} has no docstring saying what it owns"
            names = [
                target.id
                for node in tree.body if isinstance(node, ast.Assign)
                for target in node.targets if isinstance(target, ast.Name)
            ]
            assert "__all__" in names, f"{init} has no __all__"


MAX_MODULE_LINES = 600
"""A module longer than this holds more than one job (issue 24): split it by job."""


def test_no_module_is_over_600_lines() -> None:
    lengths = {name: len(path.read_text(encoding="utf-8").splitlines())
               for name, path in MODULES.items()}
    assert lengths, "no module found"
    too_long = {name: n for name, n in lengths.items() if n > MAX_MODULE_LINES}
    assert not too_long, f"modules over {MAX_MODULE_LINES} lines: {too_long}"
