"""The command-line parser, derived from the command registry: each command's flags are its options
dataclass's fields (see :mod:`patternscope.runs.options`), in field order, then ``--quiet`` and ``--json``,
then ``--config`` and ``--no-report`` for commands with an output folder."""

from __future__ import annotations

import argparse
import math
import types
import typing
from collections.abc import Callable
from dataclasses import fields
from typing import Any, NoReturn

from .._version import __version__
from ..core.configs import KEEP, Flag, field_default, flag_of
from ..errors import PatternscopeError
from ..runs.command import Command
from ..runs.registry import COMMANDS

# command groups: the first word of two-word commands ("find dominant"): (help, metavar and dest of the second word)
GROUPS = {
    "find": ("search a pattern for a model", "METHOD", "method"),
    "experiment": ("run one of the papers' experiments end to end", "EXPERIMENT", "experiment"),
}
DESCRIPTION = (
    "Find, measure and save the input-space patterns that dominate an image classifier. "
    "Pixel space is [0,1]; eps is L-inf in that space."
)
EPILOG = (
    "Exit codes: 0 ok, 2 user error (message says what to fix), 130 interrupted (resume with "
    "--resume), 75 under torchrun another process died or hung (resume with --resume), 1 internal error "
    "(or a method of a comparison failed; the others' results are saved), or, for audit --fail-on, a listed "
    "finding holds."
)


class UsageError(PatternscopeError):
    """A command line the parser cannot read (an unknown option, a value of the wrong type, a missing one)."""


class Parser(argparse.ArgumentParser):
    """An argparse parser whose errors are one line: raised as :class:`UsageError` (the command line prints it
    and exits with 2) instead of the usage text and ``sys.exit``; its sub-command parsers are of this class too."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{message} (see: {self.prog} --help)")


def build_parser() -> argparse.ArgumentParser:
    """The ``patternscope`` parser: one sub-command per registered command."""
    parser = Parser(prog="patternscope", description=DESCRIPTION, epilog=EPILOG)
    parser.add_argument("--version", action="version", version=f"patternscope {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    groups: dict[str, Any] = {}
    for command in COMMANDS:
        words = command.name.split()
        where = sub
        if len(words) == 2:
            if words[0] not in groups:
                help_text, metavar, dest = GROUPS[words[0]]
                group = sub.add_parser(words[0], help=help_text)
                groups[words[0]] = group.add_subparsers(dest=dest, required=True, metavar=metavar)
            where = groups[words[0]]
        add_command(where.add_parser(words[-1], help=command.summary, description=command.description), command)
    return parser


def add_command(parser: argparse.ArgumentParser, command: Command) -> None:
    """Add ``command``'s flags (from its options' fields), then the output and run flags, to ``parser``."""
    hints = typing.get_type_hints(command.options)
    exclusive: dict[str, Any] = {}
    for f in fields(command.options):
        flag = flag_of(f)
        if flag is None:
            continue
        for alias in flag.flags_before:
            parser.add_argument(str(alias.name), dest=alias.dest, default=None, metavar=alias.metavar, help=alias.help)
        target: Any = parser
        if flag.exclusive is not None:
            if flag.exclusive not in exclusive:
                exclusive[flag.exclusive] = parser.add_mutually_exclusive_group(required=flag.exclusive_required)
            target = exclusive[flag.exclusive]
        _add_flag(target, f.name, flag, field_default(f), hints[f.name])
    parser.add_argument("--quiet", action="store_true", help="no progress bar or log lines")
    parser.add_argument("--json", action="store_true", help="print the result as JSON on stdout")
    if command.folder:
        parser.add_argument(
            "--config",
            metavar="FILE",
            help="read options from a TOML or YAML file (a run's config.toml works); command-line options win",
        )
        parser.add_argument("--no-report", action="store_true", help="do not write report.html into the output folder")


def _add_flag(parser: Any, name: str, flag: Flag, default: Any, annotation: Any) -> None:
    if flag.text is not None and default is not None:
        default = flag.text(default)
    help_text = flag.help.replace("{default}", str(default))
    if "{default:g}" in help_text:
        help_text = help_text.replace("{default:g}", format(default, "g"))
    if flag.positional:
        parser.add_argument(name, metavar=flag.metavar, help=help_text)
        return
    option = flag.name or "--" + name.replace("_", "-")
    dest = flag.dest or name
    if annotation is bool:
        action = "store_true" if default is False else "store_false"
        parser.add_argument(option, dest=dest, action=action, help=help_text)
        return
    kwargs: dict[str, Any] = {"dest": dest, "help": help_text}
    if flag.required and flag.exclusive is None:
        kwargs["required"] = True
        default = None
    kwargs["default"] = default if flag.cli_default is KEEP else flag.cli_default
    if flag.metavar is not None:
        kwargs["metavar"] = flag.metavar
    if flag.choices is not None:
        kwargs["choices"] = flag.choices
    if flag.repeat:
        kwargs["action"] = "append"
    if flag.many:
        kwargs["nargs"] = "+"
    value_type = _value_type(annotation)
    if value_type is not None and flag.parse is None:
        kwargs["type"] = value_type
    parser.add_argument(option, **kwargs)


def _value_type(annotation: Any) -> Callable[[str], Any] | None:
    """The converter of fields of type ``int`` or ``float`` (optional or not): :func:`whole_number`,
    :func:`finite_number`; None for text."""
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        annotation = args[0] if len(args) == 1 else None
    return {int: whole_number, float: finite_number}.get(annotation)


INT_LIMIT = 2**63  # an integer option beyond ±2**63 cannot reach torch or numpy (an overflow deep in a run)


def finite_number(text: str) -> float:
    """A float option's value: refuses ``nan`` and ``inf`` (no option means them; they would fail deep in a run,
    or never end it) with one line naming the value."""
    value = float(text)  # ValueError: argparse's "invalid float value: 'x'"
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be a finite number, got {text!r}")
    return value


def whole_number(text: str) -> int:
    """An int option's value, within ±2**63."""
    value = int(text)  # ValueError: argparse's "invalid int value: 'x'"
    if not -INT_LIMIT <= value < INT_LIMIT:
        raise argparse.ArgumentTypeError(f"{text} is out of range (the limit is ±2**63)")
    return value


finite_number.__name__, whole_number.__name__ = "float", "int"  # what argparse names in its messages


def command_parsers(parser: argparse.ArgumentParser, words: tuple[str, ...] = ()) -> dict[str, argparse.ArgumentParser]:
    """Every command's own parser by its name (``find dominant``, ``scan``, ...)."""
    found: dict[str, argparse.ArgumentParser] = {}
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                found.update(command_parsers(sub, (*words, name)))
            return found
    return {" ".join(words): parser}


def command_name(args: argparse.Namespace) -> str:
    """The name of the command ``args`` were parsed for."""
    group = GROUPS.get(args.command)
    return f"{args.command} {getattr(args, group[2])}" if group else str(args.command)
