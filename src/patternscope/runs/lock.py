"""One run per folder: an OS-level lock (``fcntl.lockf``, a POSIX record lock) on ``<folder>/.patternscope.lock``.

A command takes its output folder's lock before it writes there (:func:`~patternscope.runs.folders.prepare_run_dir`,
``evaluate --out``, ``transfer --out``, and the command line as soon as the folder exists; under ``torchrun`` rank
0 alone) and holds it until the command ends (:func:`release_run_locks`, called by the command line) or the
process exits. The operating system drops the lock when the process ends, ``kill -9`` and crashes included, so a
lock file left behind only names a finished process and is simply locked again. A second process is refused with
a :class:`~patternscope.errors.RunDirError` naming the holder (pid, host, command, start time: written into the lock
file). Within one process, taking a folder it holds already is a no-op.

A POSIX lock belongs to the process, not to the open file: worker processes forked by the data loader share the
file but not the lock, so a killed run's folder is free at once even while its workers wind down (an ``flock``
would live on in them). The other side of POSIX locks: closing *any* descriptor of the lock file drops the
process's lock, so the holding process must not open the file itself (nothing in patternscope does; read it from
another process). The lock file is removed when its lock is released; it never counts as an output of a run.
POSIX locks work on local disks and on NFS (through its lock manager) and most cluster file systems.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import socket
import time
from datetime import datetime
from pathlib import Path
from typing import IO, Any

from ..core.run_id import forget_run_id
from ..errors import RunDirError

LOCK_FILE = ".patternscope.lock"
_HELD: dict[Path, IO[str]] = {}  # resolved folder -> the open, locked lock file (kept open: the lock lives with it)
_COMMAND: list[str] = []  # the command this process runs (set by the command line), for the holder's description


def set_command(name: str | None) -> None:
    """Name the command this process runs (``find dominant``), written into the lock files it takes."""
    _COMMAND[:] = [name] if name else []


def _key(folder: str | Path) -> Path:
    return Path(folder).resolve()


def holds(folder: str | Path) -> bool:
    """Whether this process holds the lock of ``folder``."""
    return _key(folder) in _HELD


def lock_run_dir(folder: str | Path) -> bool:
    """Take the lock of the existing run folder ``folder`` for this process; True when taken now, False when this
    process held it already.

    Raises :class:`~patternscope.errors.RunDirError` when another process holds it (one line naming that process)
    or when the lock file cannot be written.
    """
    key = _key(folder)
    lock_path = key / LOCK_FILE
    held = _HELD.get(key)
    if held is not None:
        if _same_file(held, lock_path):
            return False
        del _HELD[key]  # its lock file was removed (the folder cleared): lock the folder afresh
        _drop(lock_path, held)
    for _attempt in range(50):
        try:
            fh = open(lock_path, "a+", encoding="utf-8")  # noqa: SIM115 (held open for as long as the lock)
        except OSError as exc:
            raise RunDirError(f"cannot write to output folder {str(folder)!r}: {exc.strerror or exc}") from None
        try:
            fcntl.lockf(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            if exc.errno not in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                fh.close()
                raise RunDirError(f"cannot lock output folder {str(folder)!r}: {exc.strerror or exc}") from None
            holder = _read_holder(fh)
            fh.close()
            raise RunDirError(_busy(folder, holder)) from None
        if _same_file(fh, lock_path):  # not a file its last holder removed after we opened it
            break
        fh.close()
    else:  # pragma: no cover - only under a storm of processes taking and releasing the folder
        raise RunDirError(f"{str(folder)!r} is being taken by other patternscope runs; choose another --out")
    owner = {
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "command": _COMMAND[0] if _COMMAND else "Python API",
        "started": datetime.now().astimezone().isoformat(timespec="seconds"),
    }
    try:
        fh.seek(0)
        fh.truncate()
        fh.write(json.dumps(owner) + "\n")
        fh.flush()
    except OSError as exc:
        _drop(lock_path, fh)
        raise RunDirError(f"cannot write to output folder {str(folder)!r}: {exc.strerror or exc}") from None
    _HELD[key] = fh
    return True


def release_run_lock(folder: str | Path) -> None:
    """Release this process's lock of ``folder`` and remove its lock file (nothing when it holds none); the run id
    registered for it (:mod:`~patternscope.core.run_id`) is forgotten."""
    key = _key(folder)
    forget_run_id(key)  # the run this process wrote there has ended
    fh = _HELD.pop(key, None)
    if fh is not None:
        _drop(key / LOCK_FILE, fh)


def release_run_locks() -> None:
    """Release every run-folder lock this process holds (the command line calls it when a command ends)."""
    for key in list(_HELD):
        release_run_lock(key)


def _drop(lock_path: Path, fh: IO[str]) -> None:
    """Remove the lock file while still holding it (so no process can lock the removed file for good), then unlock."""
    with contextlib.suppress(OSError):
        if _same_file(fh, lock_path):
            lock_path.unlink()
    with contextlib.suppress(OSError, ValueError):
        fcntl.lockf(fh.fileno(), fcntl.LOCK_UN)
    with contextlib.suppress(OSError):
        fh.close()


def _same_file(fh: IO[str], path: Path) -> bool:
    try:
        there, mine = os.stat(path), os.fstat(fh.fileno())
    except OSError:
        return False
    return (there.st_dev, there.st_ino) == (mine.st_dev, mine.st_ino)


def _read_holder(fh: IO[str]) -> dict[str, Any]:
    """What the holder wrote into the lock file (it may be writing it right now: a few short retries)."""
    for _ in range(20):
        with contextlib.suppress(OSError, ValueError):
            fh.seek(0)
            value = json.loads(fh.read() or "null")
            if isinstance(value, dict):
                return value
        time.sleep(0.01)
    return {}


def _busy(folder: str | Path, holder: dict[str, Any]) -> str:
    """The one line refusing a folder held by another process."""
    parts = []
    if holder.get("pid") is not None:
        parts.append(f"pid {holder['pid']}" + (f" on {holder['host']}" if holder.get("host") else ""))
    if holder.get("command"):
        parts.append(f"`{holder['command']}`")
    if holder.get("started"):
        parts.append(f"started {holder['started']}")
    who = f" ({', '.join(parts)})" if parts else ""
    return f"{str(folder)!r} is in use by another patternscope run{who}; wait for it to finish or choose another --out"


__all__ = ["LOCK_FILE", "holds", "lock_run_dir", "release_run_lock", "release_run_locks", "set_command"]
