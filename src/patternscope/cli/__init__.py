"""The ``patternscope`` command: a thin layer over the run layer, driven by the command registry.

Every command is declared once (:mod:`patternscope.runs.registry`); this module parses the command line
(flags derived from each command's options, :mod:`~patternscope.cli.parser`), splices in ``--config``
files (:mod:`~patternscope.cli.config_files`), runs the command, prints its result as text or JSON, and
writes ``config.toml`` and ``report.html`` into its output folder.

Exit codes: 0 success; 2 a user mistake (bad option, spec, file or data; the message says what to
fix); 130 interrupted with Ctrl-C (a checkpoint is saved; rerun with ``--resume``); 75 under ``torchrun``,
another process of the group died or stopped answering (rerun the same command with ``--resume``); 1 an unexpected
internal error (a bug: please report it with the traceback), or a method of a comparison failed (the
others' results are saved).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path

from .._version import __version__
from ..core import distributed
from ..core.atomic import write_atomic
from ..core.search import SearchInterrupted
from ..errors import LostProcessError, PatternscopeError
from ..runs.command import TORCHRUN, Command
from ..runs.compare import MethodFailed
from ..runs.lock import LOCK_FILE, lock_run_dir, release_run_lock, release_run_locks, set_command
from ..runs.options import options_from_values
from ..runs.registry import COMMANDS, get_command
from .config_files import CONFIG_FILE, ConfigError, config_argv, load_config, resolved_options, to_toml
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
    except PatternscopeError as exc:
        _error(exc)
        return EXIT_USER
    command = get_command(command_name(args))
    if distributed.launched_by_torchrun():
        if not command.torchrun:
            parallel = sorted((c for c in COMMANDS if c.torchrun), key=lambda c: TORCHRUN.index(str(c.torchrun)))
            runs = ", ".join(c.name for c in parallel)
            print(
                f"patternscope: error: {command.name!r} does not run under torchrun; run it as one process "
                f"(torchrun runs: {runs})",
                file=sys.stderr,
            )
            return EXIT_USER
        if int(os.environ.get("RANK", "0")) != 0:  # rank 0 prints and writes; the others work quietly
            args.quiet, args.json, args.no_report = True, False, True
    if args.quiet:
        warnings.simplefilter("ignore")
    else:
        warnings.formatwarning = lambda msg, cat, *a, **k: f"patternscope: warning: {msg}\n"
    out_dir = getattr(args, "out", None)
    before = _files_under(out_dir)
    set_command(command.name)
    try:
        if command.folder and out_dir and int(os.environ.get("RANK", "0")) == 0 and Path(out_dir).is_dir():
            lock_run_dir(out_dir)  # one run per folder, from the start (a new folder is locked once made)
        code = _run(command, args)
        if int(os.environ.get("RANK", "0")) == 0:
            _finish_run(parsers, command, args)
        return code
    except MethodFailed as exc:  # a method crashed: not the user's mistake, but the others finished
        _error(exc)
        _finish_quietly(parsers, command, args)
        return EXIT_INTERNAL
    except LostProcessError as exc:
        print(f"patternscope: error: {exc}", file=sys.stderr)
        if int(os.environ.get("RANK", "0")) == 0:
            _finish_quietly(parsers, command, args, interrupted=True)
        return EXIT_LOST
    except PatternscopeError as exc:
        _error(exc)
        _remove_settings_only(out_dir, before, command)
        return EXIT_USER
    except SearchInterrupted as exc:
        _finish_quietly(parsers, command, args, interrupted=True)
        print(f"patternscope: {exc}. Run the same command with --resume to continue.", file=sys.stderr)
        return EXIT_INTERRUPTED
    except KeyboardInterrupt:
        print("patternscope: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:  # output piped into `head` and friends: stop quietly
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_OK
    finally:
        release_run_locks()
        set_command(None)
        distributed.shutdown()


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


def _run(command: Command, args: argparse.Namespace) -> int:
    """Options from the arguments, the run, and its result on stdout (text, or JSON with ``--json``)."""
    opts = options_from_values(command.options, vars(args))
    result = command.run(opts, progress=not (args.quiet or args.json), log=_log(args))
    if result is None:  # a torchrun rank other than 0: rank 0 reports
        return EXIT_OK
    if args.json:
        print(command.json(result))
    elif not args.quiet:
        print(command.text(result))
    return EXIT_OK


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


def _finish_run(
    parsers: dict[str, argparse.ArgumentParser], command: Command, args: argparse.Namespace, interrupted: bool = False
) -> None:
    """After a run: write config.toml (all options resolved) and report.html into its output folder."""
    out = getattr(args, "out", None)
    if not command.folder or not out or not Path(out).is_dir():
        return
    values = {"command": command.name, **resolved_options(parsers[command.name], args)}
    text = to_toml(values, f"patternscope {__version__}: rerun with  patternscope --config THIS_FILE --out NEW_DIR")
    write_atomic(Path(out) / CONFIG_FILE, lambda tmp: tmp.write_text(text, encoding="utf-8"))
    if interrupted or args.no_report or command.report is None:
        return
    from ..runs.report import write_report

    try:
        path = write_report(out)
    except (PatternscopeError, OSError) as exc:  # the run's results are safe; only the page is missing
        print(
            f"patternscope: warning: report.html not written ({exc}); try: patternscope report {out}", file=sys.stderr
        )
        return
    if not (args.quiet or args.json):
        print(f"report: {path}", file=sys.stderr)


def _finish_quietly(
    parsers: dict[str, argparse.ArgumentParser], command: Command, args: argparse.Namespace, interrupted: bool = False
) -> None:
    """:func:`_finish_run` after a failed or interrupted run: what can be written is, errors are not raised."""
    with contextlib.suppress(PatternscopeError, OSError):
        _finish_run(parsers, command, args, interrupted)


def _files_under(folder: str | None) -> set[str] | None:
    """Every path under ``folder`` (None when it does not exist)."""
    if not folder or not Path(folder).is_dir():
        return None
    return {str(p) for p in Path(folder).rglob("*")}


def _remove_settings_only(folder: str | None, before: set[str] | None, command: Command) -> None:
    """After a user error: if the run wrote nothing but its settings, remove them (no half-run is left);
    results and checkpoints (e.g. the last good one before a divergence) are always kept. Nothing is touched
    in a folder another process holds (its files are not this run's)."""
    if not folder or int(os.environ.get("RANK", "0")) != 0 or not Path(folder).is_dir():
        return
    root = Path(folder)
    try:
        lock_run_dir(root)
    except PatternscopeError:
        return
    new = [p for p in root.rglob("*") if str(p) not in (before or set()) and p.name != LOCK_FILE]
    new_files = [p for p in new if p.is_file()]
    if any(p.name not in command.settings_files for p in new_files):
        return
    for p in new_files:
        p.unlink(missing_ok=True)
    release_run_lock(root)  # removes the lock file: an otherwise empty new folder goes too
    for d in sorted((p for p in new if p.is_dir()), key=lambda p: len(p.parts), reverse=True):
        with contextlib.suppress(OSError):
            d.rmdir()
    if before is None:
        with contextlib.suppress(OSError):
            root.rmdir()


__all__ = ["EXIT_INTERNAL", "EXIT_INTERRUPTED", "EXIT_LOST", "EXIT_OK", "EXIT_USER", "build_parser", "main"]
