"""One run's outputs: the run id every output file of a run carries.

A run id (a random ``uuid4`` hex) is made when a command prepares its run folder
(:func:`~patternscope.runs.folders.prepare_run_dir`; ``--resume`` keeps the folder's, ``--overwrite`` makes a new
one) and registered here for that folder, for as long as this process writes it (until its lock is released,
:func:`~patternscope.runs.lock.release_run_lock`). The writers consult this registry, so no command passes the
id around: :func:`~patternscope.core.atomic.write_json` adds ``"run_id"`` to a JSON object written inside a
registered folder, and pattern files saved there carry it in their metadata. A folder prepared inside a folder
this process is writing (``harden``'s comparisons, ``scan``'s reference scans) belongs to that run and gets its id.
Outside a run folder (the Python API on its own) nothing carries an id.
"""

from __future__ import annotations

import json
import os
import struct
import uuid
from pathlib import Path
from typing import Any

RUN_ID_KEY = "run_id"
_RUNS: dict[Path, str] = {}  # resolved run folder -> its run id, while this process writes it
MAX_HEADER = 100 * 2**20  # a safetensors header larger than this is not read for its run id


def new_run_id() -> str:
    """A fresh run id: 32 random hex digits."""
    return uuid.uuid4().hex


def set_run_id(folder: str | Path, run_id: str) -> None:
    """Register ``run_id`` as the id of the run this process writes into ``folder``."""
    _RUNS[Path(folder).resolve()] = run_id


def forget_run_id(folder: str | Path) -> None:
    """Forget the run id of ``folder`` (its run ended in this process)."""
    _RUNS.pop(Path(folder).resolve(), None)


def run_id_for(path: str | os.PathLike[str]) -> str | None:
    """The id of the innermost registered run folder holding ``path`` (a file or a folder), or None."""
    if not _RUNS:
        return None
    p = Path(path).resolve()
    for candidate in (p, *p.parents):
        found = _RUNS.get(candidate)
        if found is not None:
            return found
    return None


def run_metadata(path: str | os.PathLike[str]) -> dict[str, str] | None:
    """Safetensors metadata naming the run of the folder holding ``path`` (model weights a run saves), or None."""
    run_id = run_id_for(path)
    return None if run_id is None else {RUN_ID_KEY: run_id}


def without_run_id(data: dict[str, Any]) -> dict[str, Any]:
    """A JSON record read back from a run folder, without its ``run_id`` (the record's own fields)."""
    return {k: v for k, v in data.items() if k != RUN_ID_KEY}


def recorded_run_id(path: str | Path) -> str | None:
    """The run id a file written by patternscope carries (a JSON object's ``run_id``; a safetensors file's
    metadata ``run_id``, or that of its ``patternscope`` metadata), or None: no id (a file of an earlier release)
    or not readable as either."""
    p = Path(path)
    try:
        if p.suffix == ".json":
            data = json.loads(p.read_text(encoding="utf-8"))
            value = data.get(RUN_ID_KEY) if isinstance(data, dict) else None
        elif p.suffix == ".safetensors":
            value = _safetensors_run_id(p)
        else:
            return None
    except (OSError, ValueError, UnicodeDecodeError):
        return None
    return value if isinstance(value, str) and value else None


def _safetensors_run_id(path: Path) -> Any:
    """The ``run_id`` in a safetensors file's header metadata (read without loading its tensors)."""
    with open(path, "rb") as fh:
        head = fh.read(8)
        if len(head) < 8:
            return None
        (size,) = struct.unpack("<Q", head)
        if size > MAX_HEADER:
            return None
        header = json.loads(fh.read(size))
    meta = header.get("__metadata__") if isinstance(header, dict) else None
    if not isinstance(meta, dict):
        return None
    if RUN_ID_KEY in meta:
        return meta[RUN_ID_KEY]
    inner = json.loads(meta.get("patternscope") or "{}")
    return inner.get(RUN_ID_KEY) if isinstance(inner, dict) else None


__all__ = [
    "RUN_ID_KEY",
    "forget_run_id",
    "new_run_id",
    "recorded_run_id",
    "run_id_for",
    "run_metadata",
    "set_run_id",
    "without_run_id",
]
