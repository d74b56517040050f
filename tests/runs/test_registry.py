"""The command registry: every command module is registered once, and each declaration is complete."""

from __future__ import annotations

import importlib
import pkgutil
from dataclasses import fields, is_dataclass

import patternscope.runs as runs_package
from patternscope.core.configs import flag_of
from patternscope.runs.command import TORCHRUN, Command
from patternscope.runs.registry import COMMANDS, get_command


def _command_modules() -> dict[str, Command]:
    found = {}
    for info in pkgutil.iter_modules(runs_package.__path__):
        module = importlib.import_module(f"patternscope.runs.{info.name}")
        command = getattr(module, "COMMAND", None)
        if isinstance(command, Command):
            found[info.name] = command
    return found


def test_every_command_module_is_registered_once():
    declared = _command_modules()
    registered = [c.name for c in COMMANDS]
    assert len(set(registered)) == len(registered)
    assert sorted(c.name for c in declared.values()) == sorted(registered)
    assert [get_command(name).name for name in registered] == registered


def test_every_declaration_is_complete():
    for command in COMMANDS:
        assert is_dataclass(command.options) and command.summary and command.description, command.name
        assert command.torchrun in (None, *TORCHRUN), command.name
        if command.report is not None:
            assert command.folder and command.result_file, command.name
        names = [f.name for f in fields(command.options) if flag_of(f) is not None]
        assert names, f"{command.name} has no flags"
        if command.folder and command.files:  # commands that own their folder take --out and --overwrite
            assert "out" in names and "overwrite" in names, command.name


def test_options_defaults_build_without_arguments():
    for command in COMMANDS:
        command.options()  # every field has a default: the API can build options from keywords alone
