"""The ``report.html`` of any finished run folder (:func:`write_folder_report`), and the run id a folder's
outputs share (:func:`one_run_id`).

Which page a folder gets is declared by the command that wrote it (its ``report`` builder and
``result_file``): the commands are passed in (:func:`patternscope.runs.registry.write_report` passes the
registry's), so a new command's folders are reported as soon as it is registered. Reports are rebuilt from
the folder's files: no model or data needed.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial
from pathlib import Path

from ..core.run_id import recorded_run_id
from ..errors import RunDirError
from ..report.page import FIGURES_DIR, RunFolder, read_json, render
from .command import Command
from .folders import CONFIG_JSON


def reported_commands(commands: Sequence[Command]) -> list[Command]:
    """The commands of ``commands`` whose folders have a report, in order."""
    return [c for c in commands if c.report is not None and c.result_file is not None]


def command_of_folder(run_dir: str | Path, commands: Sequence[Command]) -> Command:
    """The command of ``commands`` that wrote ``run_dir``, told apart by its result file (``config.json``
    decides when a folder holds the results of two, e.g. ``evaluate --out`` into another run's folder)."""
    path = Path(run_dir)
    if not path.is_dir():
        raise RunDirError(f"{str(path)!r} is not a folder: give the run folder a patternscope command wrote")
    reported = reported_commands(commands)
    found = [c for c in reported if (path / str(c.result_file)).is_file()]
    if not found:
        names = ", ".join(dict.fromkeys(str(c.result_file) for c in reported))
        raise RunDirError(
            f"{str(path)!r} holds no patternscope results (none of {names}): give a finished run folder, "
            "or finish the run first (--resume)"
        )
    made_by = read_json(path / CONFIG_JSON).get("command")  # {} when there is none
    return next((c for c in found if c.name == made_by), found[0])


def write_folder_report(run_dir: str | Path, commands: Sequence[Command]) -> Path:
    """Write ``report.html`` (its figures also as PNG in ``report_figures/``) into the finished run folder
    ``run_dir``, with the page of the command of ``commands`` that wrote it; returns its path. The report of a
    run made of other runs (``harden``) links theirs.

    A folder whose files carry different run ids (:func:`one_run_id`) is refused with a
    :class:`~patternscope.errors.RunDirError`."""
    path = Path(run_dir)
    command = command_of_folder(path, commands)
    assert command.report is not None
    run_id = one_run_id(path)
    return render(RunFolder(path, path / FIGURES_DIR, partial(_subreport, commands=commands), run_id), command.report)


def one_run_id(run_dir: str | Path) -> str | None:
    """The run id every output file in ``run_dir`` and its sub-folders carries (JSON results, pattern files; see
    :mod:`~patternscope.core.run_id`), or None when none carries one (a folder of an earlier release). Files
    without an id are accepted beside the others; files with two different ids are refused with a
    :class:`~patternscope.errors.RunDirError` naming one file of each (a folder holding outputs of two runs,
    e.g. a result copied in from another run).

    Sub-folders belong to the run: ``compare``'s per-method folders, ``scan``'s ``classes/`` (its reference
    scans live in the reference cache, each a run of its own, and are only read), ``harden``'s comparisons and
    class-wise runs."""
    root = Path(run_dir)
    first: tuple[Path, str] | None = None
    for file in _result_files(root):
        found = recorded_run_id(file)
        if found is None:
            continue
        if first is None:
            first = (file, found)
        elif found != first[1]:
            a, b = (str(f.relative_to(root)) for f in (first[0], file))
            raise RunDirError(
                f"{str(root)!r} holds the outputs of two runs: {a} is from run {first[1]}, {b} from run {found}; "
                "rerun into a new --out (or with --overwrite) instead of mixing runs in one folder"
            )
    return None if first is None else first[1]


def _result_files(root: Path) -> list[Path]:
    """The JSON and safetensors files under ``root`` that may carry a run id, ``config.json`` first (it names
    the run), hidden files (locks, files being written) and the report's own figures left out."""
    files = [
        p
        for p in root.rglob("*")
        if p.suffix in (".json", ".safetensors")
        and not any(part.startswith(".") for part in p.relative_to(root).parts)
        and p.relative_to(root).parts[0] != FIGURES_DIR
        and p.is_file()
    ]
    return sorted(files, key=lambda p: (p != root / CONFIG_JSON, len(p.relative_to(root).parts), str(p)))


def _subreport(folder: Path, commands: Sequence[Command]) -> Path | None:
    try:
        return write_folder_report(folder, commands)
    except RunDirError:
        return None
