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
    "kit": 0,
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
