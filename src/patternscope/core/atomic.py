"""Atomic file output: a file is either complete or absent, never half-written."""

from __future__ import annotations

import json
import math
import os
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from .run_id import RUN_ID_KEY, run_id_for


def _default_mode() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


_FILE_MODE = _default_mode()  # what open() would give: mkstemp's 0600 would hide outputs from other users


@contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it replaces ``path`` in one rename.

    On any exception the temporary file is removed and ``path`` is left as it was.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        os.chmod(tmp, _FILE_MODE)
        os.replace(tmp, target)
    finally:
        if tmp.exists():
            tmp.unlink()


def write_atomic(path: str | os.PathLike[str], writer: Callable[[Path], Any]) -> Path:
    """Call ``writer(tmp_path)`` and move the result to ``path`` atomically."""
    with atomic_path(path) as tmp:
        writer(tmp)
    return Path(path)


def write_json(path: str | os.PathLike[str], data: Any) -> Path:
    """Write ``data`` as indented, strict JSON, atomically: tensors and arrays become lists, paths strings,
    and a non-finite number (an infinite anomaly index, a NaN) is written as ``null``, which every JSON
    reader accepts (Python's ``Infinity``/``NaN`` are not JSON).

    A JSON object written inside a run folder this process is writing gets the run's ``"run_id"``
    (:mod:`~patternscope.core.run_id`; an id already in ``data`` is replaced)."""
    data = with_run_id(path, data)
    text = json.dumps(strict_json(data), indent=2, sort_keys=False, allow_nan=False) + "\n"
    return write_atomic(path, lambda p: p.write_text(text, encoding="utf-8"))


def with_run_id(path: str | os.PathLike[str], data: Any) -> Any:
    """``data`` with the ``run_id`` of the run folder holding ``path`` first (a dict; anything else and a file
    outside a run folder as they are). Readers of records read back field for field (a scan class's
    ``row.json``, ``scan_config.json``) drop the key."""
    run_id = run_id_for(path)
    if run_id is None or not isinstance(data, dict):
        return data
    return {RUN_ID_KEY: run_id, **{k: v for k, v in data.items() if k != RUN_ID_KEY}}


def strict_json(obj: Any) -> Any:
    """``obj`` with only JSON values: dicts, lists, strings, finite numbers, booleans and ``None``."""
    if isinstance(obj, dict):
        return {str(k) if not isinstance(k, str) else k: strict_json(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [strict_json(v) for v in obj]
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if obj is None or isinstance(obj, (str, bool, int)):
        return obj
    if isinstance(obj, Path):
        return str(obj)
    if hasattr(obj, "tolist"):
        return strict_json(obj.tolist())
    raise TypeError(f"cannot serialise {type(obj).__name__} to JSON")
