"""``patternscope report``: the ``report.html`` of any finished run folder
(:func:`~patternscope.runs.report_pages.write_folder_report`; from Python, :func:`patternscope.write_report`).
The registry gives this command the commands whose folders it reports on."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from ..report.page import FIGURES_DIR, REPORT_FILE
from .command import Command
from .options import option
from .report_pages import reported_commands, write_folder_report


@dataclass
class ReportOptions:
    """The option of ``patternscope report``."""

    run: str = option("", help="the run folder", metavar="RUN_DIR", positional=True)


def report_run(
    opts: ReportOptions,
    *,
    progress: bool = True,
    log: Callable[[str], None] = print,
    commands: Sequence[Command] = (),
) -> Path:
    """Write the report of the folder ``opts.run``, whose page is that of the command of ``commands`` that
    wrote it (the registry binds its commands)."""
    return write_folder_report(opts.run, commands)


def describe(commands: Sequence[Command]) -> str:
    """``report``'s description, naming the commands among ``commands`` whose folders it reports on."""
    kinds = [c.name + (" --out" if not c.files else "") for c in reported_commands(commands)]
    return (
        f"Write a self-contained {REPORT_FILE} (figures embedded, also saved as PNG in {FIGURES_DIR}/) for a run "
        f"folder written by {', '.join(kinds[:-1])} or {kinds[-1]}."
    )


COMMAND = Command(
    name="report",
    summary="write report.html for a finished run folder",
    description="",  # filled in by the registry from the commands whose folders have a report
    options=ReportOptions,
    run=report_run,
    text=lambda path: f"report: {path}",
    json=lambda path: json.dumps({"report": str(path)}),
    folder=False,
)
