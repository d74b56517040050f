"""The command-line reference as Markdown, generated from the command registry and the parser (the docs'
CLI page is built from it, so it cannot drift from the code)."""

from __future__ import annotations

import argparse

from ..runs.command import Command
from ..runs.registry import COMMANDS
from .parser import build_parser, command_parsers


def _cell(text: object) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def _flag_rows(parser: argparse.ArgumentParser) -> list[str]:
    rows = ["| option | default | what it does |", "|---|---|---|"]
    for action in parser._actions:
        if isinstance(action, argparse._HelpAction):
            continue
        names = ", ".join(f"`{o}`" for o in action.option_strings) or f"`{action.metavar or action.dest}`"
        if action.metavar and action.option_strings:
            names += f" `{action.metavar}`"
        if action.choices is not None:
            names += " (" + ", ".join(f"`{c}`" for c in action.choices) + ")"
        if action.nargs == 0:
            default = ""
        elif action.required:
            default = "required"
        elif action.default is None or action.default == []:
            default = "-"
        else:
            default = f"`{action.default}`"
        rows.append(f"| {names} | {default} | {_cell(action.help or '')} |")
    return rows


def _command_section(command: Command, parser: argparse.ArgumentParser) -> list[str]:
    lines = [f"### `patternscope {command.name}`", "", command.description, ""]
    formatter = argparse.HelpFormatter(prog=parser.prog, width=100)  # the same on every terminal
    formatter.add_usage(parser.usage, parser._actions, parser._mutually_exclusive_groups, prefix="")
    usage = formatter.format_help().strip()
    lines += ["```text", usage, "```", ""]
    lines += _flag_rows(parser)
    facts = []
    if command.result_file:
        facts.append(f"its result file is `{command.result_file}`")
    if command.files:
        facts.append("a folder holding any of " + ", ".join(f"`{f}`" for f in command.files) + " already holds a run")
    if command.stale:
        facts.append("`--overwrite` also removes " + ", ".join(f"`{f}`" for f in command.stale))
    facts.append(f"runs under `torchrun`, {command.torchrun}" if command.torchrun else "runs as one process only")
    lines += ["", "Notes: " + "; ".join(facts) + ".", ""]
    return lines


def cli_reference() -> str:
    """Every command's description, usage and options (with defaults) as Markdown."""
    parsers = command_parsers(build_parser())
    lines: list[str] = []
    for command in COMMANDS:
        lines += _command_section(command, parsers[command.name])
    return "\n".join(lines)
