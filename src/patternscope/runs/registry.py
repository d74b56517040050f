"""Every command of ``patternscope``, in the order ``patternscope --help`` lists them.

A new command is one module in this package (its options dataclass, run function, text output and
``COMMAND``) and one line here.
"""

from __future__ import annotations

from dataclasses import replace
from functools import partial
from pathlib import Path

from . import (
    audit,
    compare,
    downstream,
    evaluate,
    experiment_settings,
    find_classwise,
    find_dominant,
    harden,
    models,
    report,
    scan,
    transfer,
)
from .command import Command
from .report_pages import write_folder_report

_COMMANDS: tuple[Command, ...] = (
    find_dominant.COMMAND,
    find_classwise.COMMAND,
    scan.COMMAND,
    evaluate.COMMAND,
    compare.COMMAND,
    transfer.COMMAND,
    models.COMMAND,
    downstream.COMMAND,
    harden.COMMAND,
    experiment_settings.COMMAND,
    audit.COMMAND,
    report.COMMAND,
)
# `report` names the commands whose folders it can report on, and reports on them, from this table
COMMANDS: tuple[Command, ...] = tuple(
    replace(c, description=report.describe(_COMMANDS), run=partial(report.report_run, commands=_COMMANDS))
    if c is report.COMMAND
    else c
    for c in _COMMANDS
)


def write_report(run_dir: str | Path) -> Path:
    """Write ``report.html`` (its figures also as PNG in ``report_figures/``) into the finished run folder
    ``run_dir``, with the page of the command that wrote it; returns its path. The report of a run made of
    other runs (``harden``) links theirs.

    A folder whose files carry different run ids (:func:`~patternscope.runs.report_pages.one_run_id`) is
    refused with a :class:`~patternscope.errors.RunDirError`."""
    return write_folder_report(run_dir, COMMANDS)


def get_command(name: str) -> Command:
    """The command called ``name`` (``find dominant``, ``scan``, ...)."""
    for command in COMMANDS:
        if command.name == name:
            return command
    raise KeyError(name)
