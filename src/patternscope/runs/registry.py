"""Every command of ``patternscope``, in the order ``patternscope --help`` lists them.

A new command is one module in this package (its options dataclass, run function, text output and
``COMMAND``) and one line here.
"""

from __future__ import annotations

from dataclasses import replace

from . import (
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
    report.COMMAND,
)
# `report`'s description names the commands whose folders it can report on, from this table
COMMANDS: tuple[Command, ...] = tuple(
    replace(c, description=report.describe(_COMMANDS)) if c is report.COMMAND else c for c in _COMMANDS
)


def get_command(name: str) -> Command:
    """The command called ``name`` (``find dominant``, ``scan``, ...)."""
    for command in COMMANDS:
        if command.name == name:
            return command
    raise KeyError(name)
