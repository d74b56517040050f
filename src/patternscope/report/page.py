"""A report page: the run folder it describes, and how a page is assembled and written.

Each run kind has a module here with ``build(run) -> (title, sections)``; :func:`render` adds the
header, the settings and the table of contents, and writes ``report.html`` atomically. Builders read the
run's files only (JSON, patterns, PNGs), never the model or the data.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from .._version import __version__
from ..core.atomic import write_atomic
from ..errors import RunDirError
from .html import key_values, page, section

REPORT_FILE = "report.html"
FIGURES_DIR = "report_figures"

Section = tuple[str, str, str]  # (anchor, title, html)
Page = tuple[str, list[Section]]  # (title, sections)


def _no_subreport(_folder: Path) -> Path | None:
    return None


@dataclass(frozen=True)
class RunFolder:
    """The folder a report describes: ``path``, where report figures go (``figures``), ``subreport``,
    which writes the report of a sub-folder (a run inside this run) and returns its path, or None when
    that folder holds no finished run, and ``run_id``, the id its files carry (None: none recorded)."""

    path: Path
    figures: Path
    subreport: Callable[[Path], Path | None] = _no_subreport
    run_id: str | None = None


Builder = Callable[[RunFolder], Page]


def read_json(path: Path) -> dict[str, Any]:
    """A JSON result file's content, or {} when the file is not there; a :class:`~patternscope.errors.RunDirError`
    when it is damaged (not UTF-8 JSON, or not a JSON object)."""
    if not path.is_file():
        return {}
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:  # ValueError: JSONDecodeError and UnicodeDecodeError
        raise RunDirError(f"{str(path)!r} is damaged: it is not readable JSON ({exc})") from None
    if not isinstance(value, dict):
        raise RunDirError(f"{str(path)!r} is damaged: it holds a JSON {type(value).__name__}, not an object")
    return value


def model_line(model: dict[str, Any] | None) -> str:
    """One line naming the model (spec, weights, input size) from a result's ``model`` entry."""
    if not model:
        return "model: unknown"
    size = "x".join(str(v) for v in model.get("input_size", []))
    return f"model: {model.get('spec')} (weights: {model.get('weights')}; input {size})"


def render(run: RunFolder, build: Builder) -> Path:
    """Build the page of ``run`` with ``build``, add its settings, and write ``report.html`` into it."""
    run.figures.mkdir(exist_ok=True)
    try:
        title, sections = build(run)
    except (OSError, ValueError, KeyError, TypeError, AttributeError, IndexError, ArithmeticError) as exc:
        raise RunDirError(
            f"cannot build a report from {str(run.path)!r}: a result file is damaged or incomplete ({exc})"
        ) from None
    subtitle = [
        f"run folder: {run.path.resolve()}",
        f"run id: {run.run_id or 'not recorded (made before run ids)'}",
        f"made by patternscope {__version__} on {datetime.now(UTC).strftime('%Y-%m-%d %H:%M UTC')}",
    ]
    config = read_json(run.path / "config.json")
    if config:
        sections.append(section("settings", "Settings", key_values(config), "All options of the run, as resolved."))
    text = page(title, subtitle, sections)
    return write_atomic(run.path / REPORT_FILE, lambda tmp: tmp.write_text(text, encoding="utf-8"))
