"""What a command is: one declaration that the command line, ``--config``, ``report``, the ``torchrun``
check, the clean-up after a user error and the docs' CLI page all read.

Each command module in :mod:`patternscope.runs` ends with ``COMMAND = Command(...)``;
:mod:`patternscope.runs.registry` lists them.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ..core.atomic import strict_json
from ..report.page import Builder

SETTINGS_FILES = ("config.json", "config.toml")  # what every command with an output folder writes first
TORCHRUN = ("data-parallel", "class-parallel")  # the ways a command can share its work under torchrun


@dataclass(frozen=True)
class Command:
    """One command of ``patternscope``.

    Attributes:
        name: the words that call it (``find dominant``, ``scan``).
        summary: one line for ``patternscope --help``.
        description: the text of ``patternscope NAME --help``.
        options: its options dataclass; its fields with a :class:`~patternscope.runs.options.Flag` are its
            flags, in field order.
        run: ``run(options, *, progress, log) -> result`` (None on a ``torchrun`` rank other than 0).
        text: the result as text for the terminal.
        json: the result as JSON text for ``--json``.
        folder: takes ``--config`` and ``--no-report`` and may write an output folder (``--out``), where the
            command line adds ``config.toml`` and ``report.html`` at the end.
        report: the report builder of the folders it writes (None: no report).
        result_file: the file whose presence marks a finished run of this command (how ``report`` finds the
            builder of a folder).
        files: outputs that mean "this folder holds a run" (refused without ``--resume``/``--overwrite``).
        stale: further outputs of an earlier run that ``--overwrite`` removes.
        settings_files: files it writes before any result; a run that fails with a user error before
            writing anything else leaves none of them behind.
        torchrun: how it shares the work under ``torchrun``: ``data-parallel`` (each batch split over the
            processes) or ``class-parallel`` (the classes split); None: it runs as one process only.
        exit_code: ``(result) -> int``: the exit code of a finished run (None: 0), for a command whose
            result can be a gate (``audit --fail-on``).
    """

    name: str
    summary: str
    description: str
    options: type[Any]
    run: Callable[..., Any]
    text: Callable[[Any], str]
    json: Callable[[Any], str]
    folder: bool = True
    report: Builder | None = None
    result_file: str | None = None
    files: tuple[str, ...] = ()
    stale: tuple[str, ...] = ()
    settings_files: tuple[str, ...] = SETTINGS_FILES
    torchrun: str | None = None
    exit_code: Callable[[Any], int] | None = None


def indented_json(payload: Callable[[Any], Any]) -> Callable[[Any], str]:
    """A ``Command.json`` that prints ``payload(result)`` indented by two spaces, as strict JSON
    (non-finite numbers as ``null``)."""
    return lambda result: json.dumps(strict_json(payload(result)), indent=2, allow_nan=False)
