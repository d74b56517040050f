"""The house rules (docs/design.md): a floor imports only floors below it, and no module imports another
module's private names."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).parent.parent / "src" / "patternscope"
# lowest first; a module may import its own floor and the floors below it
FLOORS = {
    "errors": 0,
    "_version": 0,
    "runtime": 0,
    "kit": 2,  # beside core: it trains with core.train; the detectors never import it (test below)
    "data": 1,
    "core": 2,
    "methods": 3,
    "analyses": 4,
    "adapters": 4,
}
FLOORS |= {"report": 5, "runs": 6, "cli": 7, "__init__": 8, "__main__": 8}


def _modules() -> list[Path]:
    return sorted(PACKAGE.rglob("*.py"))


def _name(path: Path) -> str:
    return ".".join(("patternscope", *path.relative_to(PACKAGE).with_suffix("").parts)).removesuffix(".__init__")


def _floor(module: str) -> int:
    parts = module.split(".")
    return FLOORS["__init__" if len(parts) == 1 else parts[1]]


def _imports(path: Path) -> list[tuple[str, list[str]]]:
    """(absolute module, imported names) of every import of patternscope in ``path``, lazy ones included."""
    package = _name(path) if path.name == "__init__.py" else _name(path).rsplit(".", 1)[0]
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            if module.startswith("patternscope"):
                names = [a.name for a in node.names]
                if node.module is None:  # from . import figures: the names are modules
                    found += [(f"{module}.{n}", []) for n in names]
                else:
                    found.append((module, names))
        elif isinstance(node, ast.Import):
            found += [(a.name, []) for a in node.names if a.name.startswith("patternscope")]
    return found


@pytest.mark.parametrize("path", _modules(), ids=lambda p: _name(p))
def test_a_floor_imports_only_floors_below_it(path):
    me = _name(path)
    for module, _names in _imports(path):
        assert _floor(module) <= _floor(me), f"{me} (floor {_floor(me)}) imports {module} (floor {_floor(module)})"


@pytest.mark.parametrize("path", _modules(), ids=lambda p: _name(p))
def test_no_module_imports_another_modules_private_names(path):
    me = _name(path)
    for module, names in _imports(path):
        private = [n for n in names if n.startswith("_") and not n.startswith("__")]
        assert not private, f"{me} imports private {private} from {module}"
        parts = [p for p in module.split(".") if p.startswith("_") and p not in ("_version", "__init__")]
        assert not parts, f"{me} imports the private module {module}"


def test_the_engine_knows_nothing_of_run_folders_reports_or_the_command_line():
    for path in (PACKAGE / "core").rglob("*.py"):
        for module, _names in _imports(path):
            assert _floor(module) <= FLOORS["core"], f"{_name(path)} imports {module}"


def test_every_module_has_a_floor():
    for path in _modules():
        _floor(_name(path))  # raises KeyError for a folder with no floor


def _edges() -> dict[str, set[str]]:
    """module -> the patternscope modules it imports (lazy imports included; ``from pkg import name`` counts
    as importing the sub-module ``pkg.name`` when there is one, else the package)."""
    known = {_name(p) for p in _modules()}
    edges: dict[str, set[str]] = {}
    for path in _modules():
        targets = set()
        for module, names in _imports(path):
            subs = [f"{module}.{n}" for n in names if f"{module}.{n}" in known]
            targets.update(subs or ([module] if module in known else []))
        edges[_name(path)] = targets - {_name(path)}
    return edges


def test_the_import_graph_has_no_cycle():
    """No module reaches itself through imports, lazy ones included (a package's own ``__init__`` is a
    module like the others)."""
    edges = _edges()
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(module: str) -> None:
        state[module] = 1
        path.append(module)
        for target in sorted(edges.get(module, ())):
            if state.get(target) == 1:
                cycle = [*path[path.index(target) :], target]
                raise AssertionError("import cycle: " + " -> ".join(cycle))
            if target not in state:
                visit(target)
        path.pop()
        state[module] = 2

    for module in sorted(edges):
        if module not in state:
            visit(module)


def _command_modules() -> set[str]:
    """The ``runs`` modules that declare a command (a top-level ``COMMAND = ...``)."""
    found = set()
    for path in (PACKAGE / "runs").glob("*.py"):
        tree = ast.parse(path.read_text())
        if any(
            isinstance(n, ast.Assign) and any(getattr(t, "id", "") == "COMMAND" for t in n.targets) for n in tree.body
        ):
            found.add(_name(path))
    return found


def test_no_command_module_imports_another():
    """A command is a leaf: what two commands share lives in a shared module of ``runs`` (or below); only the
    registry lists them."""
    commands = _command_modules()
    assert len(commands) >= 10
    edges = _edges()
    for me in sorted(commands):
        others = sorted((edges[me] & commands) - {me})
        assert not others, f"the command module {me} imports the command module(s) {others}"
    assert not [
        m
        for m in edges
        if m not in commands
        and m != "patternscope.runs.registry"
        and edges[m] & commands
        and m.startswith("patternscope.runs")
    ], "a shared runs module imports a command module"


def test_the_detectors_never_import_the_experiment_kit():
    """The kit (nets, poisoning, training) is attack code: only the papers' experiment settings, which train
    natural, backdoored and adversarially trained models, use it (and the package exposes it as ``ps.kit``);
    the scan and the searches never do."""
    importers = {m for m, targets in _edges().items() if any(t.startswith("patternscope.kit") for t in targets)}
    assert {m for m in importers if not m.startswith("patternscope.kit")} <= {
        "patternscope",
        "patternscope.analyses.settings",
    }


def test_no_function_over_80_lines_at_the_centre():
    """The engine, the methods and the analyses stay readable: no function (docstring included) over 80 lines."""
    long = []
    for floor in ("core", "methods", "analyses"):
        for path in sorted((PACKAGE / floor).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                    lines = int(node.end_lineno or node.lineno) - node.lineno + 1
                    if lines > 80:
                        long.append(f"{_name(path)}.{node.name} ({lines} lines)")
    assert not long, long
