"""Run folders: checking that a folder can take a run before any work starts, and recording its settings.

A run folder holds ``config.json`` (the command, the patternscope version and the resolved options; what
``--resume`` checks against), the command's results, and ``config.toml`` / ``report.html`` written by the
command line at the end. Every file is written atomically.
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
from ..core.atomic import write_json
from ..errors import RunDirError

CONFIG_JSON = "config.json"
MIN_FREE_BYTES = 50 * 2**20


def prepare_run_dir(
    out: str | Path,
    *,
    resume: bool,
    overwrite: bool,
    files: Sequence[str],
    stale: Sequence[str] = (),
    resumable: bool = True,
) -> Path:
    """Check that ``out`` can take this run before any work starts.

    A folder holding any of ``files`` (names or glob patterns; files or folders) already holds a run:
    it needs ``resume`` (continue it) or ``overwrite`` (start again: ``files`` and the ``stale`` outputs
    of an earlier run are removed). An unwritable folder or a full disk is reported now, not after the
    search. ``resumable=False`` for commands without ``--resume``.
    """
    path = Path(out)
    if path.exists() and not path.is_dir():
        raise RunDirError(f"output path {str(path)!r} is a file; give a folder for --out")
    existing = [p for pattern in files for p in sorted(path.glob(pattern))] if path.is_dir() else []
    if existing and not (resume or overwrite):
        how = "pass --resume to continue it or --overwrite to start again" if resumable else "pass --overwrite"
        raise RunDirError(
            f"{str(path)!r} already holds a run ({', '.join(p.name for p in existing[:3])}); {how}, "
            "or choose another --out"
        )
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
    free = shutil.disk_usage(path).free
    if free < MIN_FREE_BYTES:
        need = MIN_FREE_BYTES // 2**20
        raise RunDirError(f"only {free / 2**20:.0f} MiB free on the disk of {str(path)!r}; need at least {need} MiB")
    if overwrite:
        for target in existing + [p for pattern in stale for p in sorted(path.glob(pattern))]:
            if target.is_dir():
                shutil.rmtree(target)
            elif target.exists():
                target.unlink()
    return path


def write_run_config(out: Path, command: str, options: Any, **extra: Any) -> Path:
    """Write ``config.json``: the command, the patternscope version, the options (a dataclass or a dict) and
    ``extra`` entries."""
    values = options if isinstance(options, dict) else asdict(options)
    return write_json(
        out / CONFIG_JSON, {"command": command, "patternscope_version": __version__, "options": values, **extra}
    )
