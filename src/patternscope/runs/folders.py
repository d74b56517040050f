"""Run folders: checking that a folder can take a run before any work starts, and recording its settings.

A run folder holds ``config.json`` (the command, the patternscope version and the resolved options; what
``--resume`` checks against), the command's results, and ``config.toml`` / ``report.html`` written by the
command line at the end. Every file is written atomically. One process at a time writes a folder: its lock
(``.patternscope.lock``, :mod:`~patternscope.runs.lock`) is taken here, and the run's id registered
(:mod:`~patternscope.core.run_id`): every JSON result and pattern file written into the folder carries it.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from .._version import __version__
from ..core import distributed
from ..core.atomic import write_json
from ..core.run_id import new_run_id, recorded_run_id, run_id_for, set_run_id
from ..errors import RunDirError
from .lock import LOCK_FILE, holds, lock_run_dir, release_run_lock

CONFIG_JSON = "config.json"
MIN_FREE_BYTES = 50 * 2**20
# what a pattern run folder (find dominant) holds: a folder holding any of them holds a run
RUN_FILES = (
    "config.json",
    "checkpoint.pt",
    "checkpoint.prior.pt",
    "pattern.safetensors",
    "pattern.json",
    "pattern.png",
    "metrics.json",
    "history.json",
    "history.csv",
    "examples.png",
    "loss.png",
    "layers.json",
    "layers.png",
)


def prepare_run_dir(
    out: str | Path,
    *,
    resume: bool,
    overwrite: bool,
    files: Sequence[str],
    stale: Sequence[str] = (),
    resumable: bool = True,
    keep_run_id: bool | None = None,
) -> Path:
    """Check that ``out`` can take this run before any work starts, and take its lock (:mod:`~.lock`).

    A folder another process is writing (it holds the folder's lock) is refused, with or without ``resume``.
    A folder holding any of ``files`` (names or glob patterns; files or folders) already holds a run:
    it needs ``resume`` (continue it) or ``overwrite`` (start again: ``files`` and the ``stale`` outputs
    of an earlier run are removed). An unwritable folder or a full disk is reported now, not after the
    search. ``resumable=False`` for commands without ``--resume``. The lock is held until the command ends
    (:func:`~.lock.release_run_locks`) or the process exits; it is released again when a check fails here.

    The run's id is registered for the folder (:func:`start_run`): the folder's own with ``keep_run_id``
    (default: ``resume``), else a new one.
    """
    path = Path(out)
    if path.exists() and not path.is_dir():
        raise RunDirError(f"output path {str(path)!r} is a file; give a folder for --out")
    taken = path.is_dir() and lock_run_dir(path)
    try:
        _check_outputs(path, files, resume, overwrite, resumable)
        if resume and overwrite:
            raise RunDirError("--resume and --overwrite contradict each other; choose one")
        try:
            path.mkdir(parents=True, exist_ok=True)
            fd, probe = tempfile.mkstemp(prefix=".write-test-", dir=path)
            os.write(fd, b"0" * 4096)
            os.close(fd)
            os.unlink(probe)
        except OSError as exc:
            raise RunDirError(f"cannot write to output folder {str(path)!r}: {exc.strerror or exc}") from None
        if not holds(path):  # a new folder: locked once it exists (a run may have started there meanwhile)
            taken = lock_run_dir(path)
            _check_outputs(path, files, resume, overwrite, resumable)
        free = shutil.disk_usage(path).free
        if free < MIN_FREE_BYTES:
            need = MIN_FREE_BYTES // 2**20
            raise RunDirError(
                f"only {free / 2**20:.0f} MiB free on the disk of {str(path)!r}; need at least {need} MiB"
            )
        if overwrite:
            for target in _outputs(path, files) + _outputs(path, stale):
                if target.is_dir():
                    shutil.rmtree(target)
                elif target.exists():
                    target.unlink()
        start_run(path, keep=resume if keep_run_id is None else keep_run_id)
    except BaseException:
        if taken:
            release_run_lock(path)
        raise
    return path


def _outputs(path: Path, patterns: Sequence[str]) -> list[Path]:
    """The paths in ``path`` matching ``patterns`` (globs), the lock file never among them."""
    if not path.is_dir():
        return []
    return [p for pattern in patterns for p in sorted(path.glob(pattern)) if p.name != LOCK_FILE]


def _check_outputs(path: Path, files: Sequence[str], resume: bool, overwrite: bool, resumable: bool) -> None:
    """Refuse a folder that holds a run (any of ``files``) unless ``resume`` or ``overwrite``."""
    existing = _outputs(path, files)
    if existing and not (resume or overwrite):
        how = "pass --resume to continue it or --overwrite to start again" if resumable else "pass --overwrite"
        raise RunDirError(
            f"{str(path)!r} already holds a run ({', '.join(p.name for p in existing[:3])}); {how}, "
            "or choose another --out"
        )


def start_run(path: Path, *, keep: bool, run_id: str | None = None) -> str:
    """Register (and return) the id of the run this process writes into the folder ``path``
    (:mod:`~patternscope.core.run_id`): that of the run folder this process writes around it (a run's sub-run,
    e.g. ``harden``'s comparisons), else ``run_id``, else with ``keep`` the one ``config.json`` records (a resumed
    run), else a new one."""
    chosen = (
        run_id_for(path.parent) or run_id or (recorded_run_id(path / CONFIG_JSON) if keep else None) or new_run_id()
    )
    set_run_id(path, chosen)
    return chosen


def share_run_id(path: Path, ctx: distributed.DistContext) -> None:
    """Under ``torchrun``, give every rank rank 0's run id of ``path`` (for commands whose ranks all write into
    the run folder: ``scan``'s class-parallel ranks save their classes' patterns)."""
    if not ctx.active:
        return
    import torch.distributed as dist

    box = [run_id_for(path) if ctx.is_main else None]
    dist.broadcast_object_list(box, src=0)
    if not ctx.is_main and box[0]:
        set_run_id(path, box[0])


def write_run_config(out: Path, command: str, options: Any, **extra: Any) -> Path:
    """Write ``config.json``: the command, the patternscope version, the options (a dataclass or a dict) and
    ``extra`` entries (and the run's id, as every JSON written into a run folder)."""
    values = options if isinstance(options, dict) else asdict(options)
    return write_json(
        out / CONFIG_JSON, {"command": command, "patternscope_version": __version__, "options": values, **extra}
    )
