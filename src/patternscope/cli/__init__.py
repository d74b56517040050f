"""The ``patternscope`` command: parsing and printing over the run layer, driven by the command registry.

Every command is declared once (:mod:`patternscope.runs.registry`); this module parses the command line
(flags derived from each command's options, :mod:`~patternscope.cli.parser`), splices in ``--config``
files (:mod:`~patternscope.cli.config_files`), hands the options to the run lifecycle
(:func:`patternscope.runs.lifecycle.execute`: folder lock, ``config.toml``, ``report.html``, clean-up after a
user error; the same for :func:`patternscope.run`), and prints the result as text or JSON.

Exit codes: 0 success; 2 a user mistake (bad option, spec, file or data; the message says what to fix); 130
interrupted with Ctrl-C (a checkpoint is saved; rerun with ``--resume``); 75 under ``torchrun``, another process
of the group died or stopped answering (rerun the same command with ``--resume``); 1 an unexpected internal
error (a bug: please report it with the traceback), a method of a comparison failed (the others' results are
saved), or, for ``audit --fail-on``, a listed finding holds (the audit itself finished and is saved).
"""

from __future__ import annotations

import argparse
import os
import sys
import warnings
from collections.abc import Callable, Sequence

from ..analyses.comparison import MethodFailed
from ..core import distributed
from ..core.search import SearchInterrupted
from ..errors import LostProcessError, PatternscopeError
from ..runs.command import Command
from ..runs.lifecycle import check_torchrun, execute, rank
from ..runs.options import options_from_values
from ..runs.registry import COMMANDS, get_command
from .config_files import ConfigError, config_argv, load_config, resolved_options
from .parser import GROUPS, UsageError, build_parser, command_name, command_parsers

EXIT_OK, EXIT_INTERNAL, EXIT_USER, EXIT_INTERRUPTED = 0, 1, 2, 130
EXIT_LOST = 75  # under torchrun another process died or hung: retry with --resume (EX_TEMPFAIL)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``patternscope`` command; returns the exit code."""
    parser = build_parser()
    parsers = command_parsers(parser)
    tokens = list(sys.argv[1:] if argv is None else argv)
    try:
        tokens = _with_config(parsers, tokens)
        args = parser.parse_args(tokens)
        _refuse_nul(args)
        command = get_command(command_name(args))
        check_torchrun(command)
        options = options_from_values(command.options, vars(args))
    except PatternscopeError as exc:
        _error(exc)
        return EXIT_USER
    if distributed.launched_by_torchrun() and rank() != 0:  # rank 0 prints and writes; the others work quietly
        args.quiet, args.json, args.no_report = True, False, True
    if args.quiet:
        warnings.simplefilter("ignore")
    else:
        warnings.formatwarning = lambda msg, cat, *a, **k: f"patternscope: warning: {msg}\n"
    try:
        result = execute(
            command,
            options,
            progress=not (args.quiet or args.json),
            log=_log(args),
            settings=resolved_options(parsers[command.name], args) if command.folder else None,
            report=not getattr(args, "no_report", False),
            on_result=lambda result: _print_result(command, args, result),
            on_error=_say_error,
            on_report=lambda path: None if (args.quiet or args.json) else print(f"report: {path}", file=sys.stderr),
            warn=lambda msg: print(f"patternscope: warning: {msg}", file=sys.stderr),
        )
        return command.exit_code(result) if result is not None and command.exit_code is not None else EXIT_OK
    except MethodFailed:  # a method crashed: not the user's mistake, but the others finished
        return EXIT_INTERNAL
    except LostProcessError:
        return EXIT_LOST
    except PatternscopeError:
        return EXIT_USER
    except SearchInterrupted as exc:
        print(f"patternscope: {exc}. Run the same command with --resume to continue.", file=sys.stderr)
        return EXIT_INTERRUPTED
    except KeyboardInterrupt:
        print("patternscope: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:  # output piped into `head` and friends: stop quietly
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_OK


def _say_error(exc: BaseException) -> None:
    """Print an error the run met, before its folder is tidied: a lost process as it is, others as one line."""
    if isinstance(exc, LostProcessError):
        print(f"patternscope: error: {exc}", file=sys.stderr)
    else:
        _error(exc)


def _print_result(command: Command, args: argparse.Namespace, result: object) -> None:
    """The result on stdout: text, or JSON with ``--json`` (nothing with ``--quiet``)."""
    if args.json:
        print(command.json(result))
    elif not args.quiet:
        print(command.text(result))


def _refuse_nul(args: argparse.Namespace) -> None:
    """Refuse a value holding a NUL character (a config file can write one; no path or name can hold it)."""
    for dest, value in vars(args).items():
        texts = value if isinstance(value, list) else [value]
        if any(isinstance(t, str) and "\x00" in t for t in texts):
            raise UsageError(f"the value of {dest.replace('_', '-')!r} holds a NUL character (\\x00); remove it")


def _error(exc: BaseException) -> None:
    """Print ``exc`` as one ``patternscope: error:`` line (a message quoting a multi-line text, e.g. a YAML
    parser's, is joined into one)."""
    text = " ".join(part.strip() for part in str(exc).splitlines() if part.strip())
    print(f"patternscope: error: {text}", file=sys.stderr)


def _log(args: argparse.Namespace) -> Callable[[str], None]:
    if args.quiet or args.json:
        return lambda _msg: None
    return lambda msg: print(msg, file=sys.stderr)


def _command_words(argv: list[str]) -> list[str]:
    """The command words at the start of ``argv`` (``find dominant``, ``scan``)."""
    words = []
    for token in argv[:2]:
        if token.startswith("-"):
            break
        words.append(token)
        if token not in GROUPS:
            break
    return words


def _with_config(parsers: dict[str, argparse.ArgumentParser], argv: list[str]) -> list[str]:
    """``argv`` with the options of a ``--config FILE`` spliced in after the command words."""
    where = [i for i, t in enumerate(argv) if t == "--config" or t.startswith("--config=")]
    if not where:
        return argv
    if len(where) > 1:
        raise ConfigError("--config given more than once")
    i = where[0]
    if argv[i] == "--config":
        if i + 1 >= len(argv):
            raise ConfigError("--config needs a file name")
        path, rest = argv[i + 1], argv[:i] + argv[i + 2 :]
    else:
        path, rest = argv[i].split("=", 1)[1], argv[:i] + argv[i + 1 :]
    options = dict(load_config(path))
    file_command = options.pop("command", None)
    words = _command_words(rest)
    configurable = [c.name for c in COMMANDS if c.folder]
    if file_command is not None and not isinstance(file_command, str):
        raise ConfigError(f"{path}: 'command' must be a string such as \"find dominant\"")
    if not words or (len(words) == 1 and words[0] in GROUPS):
        if file_command is None:
            raise ConfigError(
                f'{path} names no command: add command = "find dominant" (or scan, compare, ...) to it, '
                "or give the command: patternscope find dominant --config FILE"
            )
        if words and not file_command.startswith(words[0] + " "):
            raise ConfigError(f"{path} is a config for {file_command!r}, not for {words[0]!r}")
        words_given = len(words)
        words = file_command.split()
        rest = words + rest[words_given:]
    command = " ".join(words)
    if file_command is not None and file_command != command:
        raise ConfigError(f"{path} is a config for {file_command!r}, not for {command!r}")
    if command not in configurable:
        raise ConfigError(f"--config works with {', '.join(configurable)}; not with {command!r}")
    given = rest[len(words) :]
    return [*words, *config_argv(parsers[command], options, given, path), *given]


__all__ = ["EXIT_INTERNAL", "EXIT_INTERRUPTED", "EXIT_LOST", "EXIT_OK", "EXIT_USER", "build_parser", "main"]
