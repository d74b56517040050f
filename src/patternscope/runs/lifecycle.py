"""One run's lifecycle, the same from the command line and from Python (:func:`execute`, :func:`run`).

A run of a command with an output folder:

1. refuses a command that cannot run under ``torchrun`` when launched by it;
2. takes the folder's lock from the start when the folder exists (a new folder is locked once the command
   makes it; :mod:`~patternscope.runs.lock`), and names the command in the lock;
3. runs the command (``Command.run``); on a ``torchrun`` rank other than 0 it stops there (rank 0 writes);
4. writes ``config.toml`` (every option resolved, :mod:`~patternscope.runs.settings_file`) and ``report.html``
   (the page of the command that wrote the folder);
5. after a user error (:class:`~patternscope.errors.PatternscopeError`), removes what the run wrote when it
   wrote nothing but its settings (no half-run is left; results and checkpoints are always kept); after a
   failed method of a comparison, a lost ``torchrun`` process or an interrupted search, writes what can be
   written (``config.toml``, and the report unless interrupted) and raises the error again;
6. releases every lock it took, and leaves the process group.

The command line (:mod:`patternscope.cli`) adds parsing and printing only.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable
from dataclasses import fields
from pathlib import Path
from typing import Any

from ..analyses.comparison import MethodFailed
from ..core import distributed
from ..core.search import SearchInterrupted
from ..errors import LostProcessError, PatternscopeError, RunError
from .command import TORCHRUN, Command
from .lock import LOCK_FILE, lock_run_dir, release_run_lock, release_run_locks, set_command
from .registry import COMMANDS, get_command, write_report
from .settings_file import options_settings, write_settings_file


def rank() -> int:
    """This process's rank under ``torchrun`` (0 without it): rank 0 writes the folder and reports."""
    return int(os.environ.get("RANK", "0"))


def check_torchrun(command: Command) -> None:
    """Refuse ``command`` when ``torchrun`` launched this process and the command runs as one process only."""
    if not distributed.launched_by_torchrun() or command.torchrun:
        return
    parallel = sorted((c for c in COMMANDS if c.torchrun), key=lambda c: TORCHRUN.index(str(c.torchrun)))
    runs = ", ".join(c.name for c in parallel)
    raise RunError(f"{command.name!r} does not run under torchrun; run it as one process (torchrun runs: {runs})")


def execute(
    command: Command,
    options: Any,
    *,
    progress: bool = True,
    log: Callable[[str], None] = print,
    settings: dict[str, Any] | None = None,
    report: bool = True,
    on_result: Callable[[Any], None] | None = None,
    on_error: Callable[[BaseException], None] | None = None,
    on_report: Callable[[Path], None] | None = None,
    warn: Callable[[str], None] = lambda _msg: None,
) -> Any:
    """Run ``command`` with ``options`` (its options dataclass) through the whole lifecycle (module docstring).

    Args:
        settings: what ``config.toml`` records (by long option name); default: :func:`options_settings`.
        report: write ``report.html`` into the output folder at the end.
        on_result: called with the result as soon as the command returns (before ``config.toml`` and the
            report are written; not on a ``torchrun`` rank other than 0).
        on_error: called with a user error, a failed method or a lost process before the folder is tidied
            (the command line prints it there).
        on_report: called with the path of the report once written.
        warn: where a report that could not be written is said.

    Returns:
        The command's result (None on a ``torchrun`` rank other than 0). Errors are raised again after
        the clean-up.
    """
    check_torchrun(command)
    main = rank() == 0
    out = getattr(options, "out", None) if command.folder else None
    before = _files_under(out)
    set_command(command.name)
    finish = _Finish(command, options, settings, report, on_report, warn)
    try:
        if out and main and Path(out).is_dir():
            lock_run_dir(out)  # one run per folder, from the start (a new folder is locked once made)
        result = command.run(options, progress=progress, log=log)
        if result is not None and on_result is not None:
            on_result(result)
        if main:
            finish.write()
        return result
    except MethodFailed as exc:  # a method crashed: not the user's mistake, but the others finished
        if on_error is not None:
            on_error(exc)
        finish.quietly()
        raise
    except LostProcessError as exc:
        if on_error is not None:
            on_error(exc)
        if main:
            finish.quietly(interrupted=True)
        raise
    except PatternscopeError as exc:
        if on_error is not None:
            on_error(exc)
        if main:
            _remove_settings_only(out, before, command)
        raise
    except SearchInterrupted:
        finish.quietly(interrupted=True)
        raise
    finally:
        release_run_locks()
        set_command(None)
        distributed.shutdown()


class _Finish:
    """The end of a run: ``config.toml`` and ``report.html`` in its output folder."""

    def __init__(
        self,
        command: Command,
        options: Any,
        settings: dict[str, Any] | None,
        report: bool,
        on_report: Callable[[Path], None] | None,
        warn: Callable[[str], None],
    ) -> None:
        self.command, self.options, self.settings, self.report = command, options, settings, report
        self.on_report, self.warn = on_report, warn

    def write(self, interrupted: bool = False) -> None:
        """Write ``config.toml`` (all options resolved) and ``report.html`` into the run's output folder."""
        out = getattr(self.options, "out", None)
        if not self.command.folder or not out or not Path(out).is_dir():
            return
        settings = self.settings if self.settings is not None else options_settings(self.options)
        write_settings_file(out, self.command.name, settings)
        if interrupted or not self.report or self.command.report is None:
            return
        try:
            path = write_report(out)
        except (PatternscopeError, OSError) as exc:  # the run's results are safe; only the page is missing
            self.warn(f"report.html not written ({exc}); try: patternscope report {out}")
            return
        if self.on_report is not None:
            self.on_report(path)

    def quietly(self, interrupted: bool = False) -> None:
        """:meth:`write` after a failed or interrupted run: what can be written is, errors are not raised."""
        with contextlib.suppress(PatternscopeError, OSError):
            self.write(interrupted)


def _files_under(folder: str | Path | None) -> set[str] | None:
    """Every path under ``folder`` (None when it does not exist)."""
    if not folder or not Path(folder).is_dir():
        return None
    return {str(p) for p in Path(folder).rglob("*")}


def _remove_settings_only(folder: str | Path | None, before: set[str] | None, command: Command) -> None:
    """After a user error: if the run wrote nothing but its settings, remove them (no half-run is left);
    results and checkpoints (e.g. the last good one before a divergence) are always kept. Nothing is touched
    in a folder another process holds (its files are not this run's)."""
    if not folder or not Path(folder).is_dir():
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


def run(
    command: str,
    /,
    *,
    progress: bool = True,
    log: Callable[[str], None] | None = None,
    report: bool = True,
    **options: Any,
) -> Any:
    """Run the command ``command`` (``"find dominant"``, ``"scan"``, ``"compare"``, ...) from Python, with the
    same lifecycle as ``patternscope COMMAND`` (:func:`execute`: folder lock, ``config.toml``, ``report.html``,
    no half-written folder after a user error), and return its result.

    ``options`` are the fields of the command's options dataclass (``patternscope COMMAND --help`` lists them
    as flags: ``--batch-size`` is ``batch_size``), in their Python form: ``data=["photos"]``, ``classes=[1, 3]``,
    ``steps=100``. ``log``: where progress lines go (default: nowhere).

    Example::

        import patternscope as ps
        summary = ps.run("find dominant", out="runs/demo", steps=100)
        print(summary.evaluation.fooling_ratio)
    """
    try:
        cmd = get_command(command)
    except KeyError:
        names = ", ".join(c.name for c in COMMANDS)
        raise RunError(f"unknown command {command!r}; choose from {names}") from None
    known = {f.name for f in fields(cmd.options)}
    unknown = sorted(set(options) - known)
    if unknown:
        raise RunError(f"{command} has no option {', '.join(unknown)}; its options: {', '.join(sorted(known))}")
    opts = cmd.options(**options)
    return execute(cmd, opts, progress=progress, log=log or (lambda _msg: None), report=report)


def audit_model(model: str, data: str, *, out: str, **options: Any) -> Any:
    """``patternscope audit`` from Python (:func:`run` with ``"audit"``): the dominant pattern and the strongest
    baseline at the same budget, their transfer to ``also=[...]`` models and, with ``labels=True``, the backdoor
    scan and the least and most robust classes, into the folder ``out``; returns the audit (``.payload`` is
    ``audit.json``, ``.failed`` the ``fail_on=[...]`` terms that hold, ``.exit_code`` the command's).

    ``model`` is a model spec (``efficientnet_lite0``, ``torchvision:resnet18``, ``path/file.py:Class``; the
    weights as ``weights=FILE``), ``data`` the images to measure on; ``options`` are the command's
    (``level="quick"``, ``also=["efficientnet_lite1"]``, ``fail_on=["backdoor"]``, ...).
    """
    return run("audit", model=model, data=data, out=out, **options)
