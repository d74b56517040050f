"""One run per folder (issue 19): the folder's lock, tried with real processes (every one under a timeout)."""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers import TINY_SPEC

from patternscope.cli import EXIT_OK, EXIT_USER, main
from patternscope.errors import RunDirError
from patternscope.runs.folders import prepare_run_dir
from patternscope.runs.lock import LOCK_FILE, holds, lock_run_dir, release_run_lock, release_run_locks

# a process that takes a folder's lock as `find dominant` does, says so, and holds it until killed
HOLDER = """
import sys, time
from patternscope.runs.lock import lock_run_dir, set_command
set_command("find dominant")
lock_run_dir(sys.argv[1])
print("locked", flush=True)
time.sleep(600)
"""
# processes that all try to start a run in the same new folder at the same moment
RACER = """
import sys, time
from pathlib import Path
from patternscope.errors import RunDirError
from patternscope.runs.folders import prepare_run_dir
go, stop = Path(sys.argv[2]), Path(sys.argv[3])
while not go.exists():
    time.sleep(0.005)
try:
    prepare_run_dir(sys.argv[1], resume=False, overwrite=False, files=("config.json",))
except RunDirError as exc:
    print("refused", exc, flush=True)
    sys.exit(0)
print("won", flush=True)
while not stop.exists():
    time.sleep(0.01)
"""


def _env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}


def _hold(folder: Path) -> subprocess.Popen[str]:
    """A helper process holding ``folder``'s lock (returned once it holds it)."""
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(folder)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=_env(),
    )
    assert proc.stdout is not None
    ready, _, _ = select.select([proc.stdout], [], [], 120)
    if not ready or proc.stdout.readline().strip() != "locked":
        proc.kill()
        raise AssertionError(f"the holder did not take the lock: {proc.communicate(timeout=30)[1][-2000:]}")
    return proc


def _kill(proc: subprocess.Popen[str]) -> None:
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=60)


def _find(out: Path, weights: Path, folders: dict[str, Path], *extra: str) -> list[str]:
    return [
        *["find", "dominant", "--out", str(out), "--model", TINY_SPEC, "--weights", str(weights)],
        *["--data", str(folders["train"]), "--eval-data", str(folders["test"]), "--eps", "0.2"],
        *["--batch-size", "32", "--device", "cpu", "--quiet", "--no-report", *extra],
    ]


def test_a_process_takes_a_folder_once_and_leaves_no_lock_file(tmp_path):
    try:
        assert lock_run_dir(tmp_path) is True and holds(tmp_path)
        assert lock_run_dir(tmp_path) is False  # taking it again in the same process is a no-op
        assert (tmp_path / LOCK_FILE).is_file()
    finally:
        release_run_lock(tmp_path)
    assert not holds(tmp_path) and not (tmp_path / LOCK_FILE).exists()


def test_a_folder_cleared_under_its_holder_is_locked_afresh(tmp_path):
    try:
        lock_run_dir(tmp_path)
        (tmp_path / LOCK_FILE).unlink()  # e.g. the folder emptied by hand while the process runs
        assert lock_run_dir(tmp_path) is True and (tmp_path / LOCK_FILE).is_file()
    finally:
        release_run_locks()
    assert not (tmp_path / LOCK_FILE).exists()


def test_the_lock_file_is_not_a_run_and_overwrite_keeps_it(tmp_path):
    stale = tmp_path / "stale"
    stale.mkdir()
    (stale / LOCK_FILE).write_text('{"pid": 1, "host": "gone", "command": "find dominant"}\n')  # a crashed run's
    try:
        prepare_run_dir(stale, resume=False, overwrite=False, files=("*",))  # not "already holds a run"
        assert holds(stale)
        (stale / "old.json").write_text("{}")
        prepare_run_dir(stale, resume=False, overwrite=True, files=("*",))
        assert not (stale / "old.json").exists() and (stale / LOCK_FILE).is_file()  # the holder's lock stays
    finally:
        release_run_locks()
    assert not (stale / LOCK_FILE).exists()


def test_a_failed_check_releases_the_lock_it_took(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(RunDirError, match="already holds a run"):
        prepare_run_dir(tmp_path, resume=False, overwrite=False, files=("config.json",))
    assert not holds(tmp_path) and not (tmp_path / LOCK_FILE).exists()


@pytest.mark.slow
def test_a_second_run_into_a_held_folder_is_refused_20_times_out_of_20(tmp_path, tiny_weights, digit_folders):
    folder = tmp_path / "run"
    folder.mkdir()
    (folder / "config.json").write_text("{}")  # as a running run's folder: --resume is what one would try
    tries = [
        _find(folder, tiny_weights, digit_folders, "--steps", "3"),
        _find(folder, tiny_weights, digit_folders, "--steps", "3", "--resume"),
        _find(folder, tiny_weights, digit_folders, "--steps", "3", "--overwrite"),
        [*["compare", "--out", str(folder), "--model", TINY_SPEC, "--weights", str(tiny_weights)], "--resume"],
        [*["evaluate", "--pattern", str(folder), "--data", str(digit_folders["test"]), "--out", str(folder)]],
    ]
    holder = _hold(folder)
    try:
        refused = 0
        for batch in range(5):  # 4 real processes at a time (each imports torch: about 2 s of CPU)
            argvs = [tries[(4 * batch + j) % len(tries)] for j in range(4)]
            procs = [
                subprocess.Popen(
                    [sys.executable, "-m", "patternscope", *argv],
                    stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE,
                    text=True,
                    env=_env(),
                )
                for argv in argvs
            ]
            for argv, proc in zip(argvs, procs, strict=True):
                _, err = proc.communicate(timeout=300)
                lines = [line for line in err.splitlines() if line.strip()]
                assert proc.returncode == EXIT_USER, (argv, err[-2000:])
                assert len(lines) == 1 and "Traceback" not in err, err
                assert "in use by another patternscope run" in lines[0] and f"pid {holder.pid} on " in lines[0], lines
                assert "`find dominant`" in lines[0] and "choose another --out" in lines[0]
                refused += 1
        assert refused == 20
        assert holder.poll() is None  # the holder never lost its folder
        assert {p.name for p in folder.iterdir()} == {"config.json", LOCK_FILE}  # and nothing was written there
    finally:
        _kill(holder)


@pytest.mark.slow
def test_processes_racing_into_a_new_folder_get_it_once(tmp_path):
    folder, go, stop = tmp_path / "new", tmp_path / "go", tmp_path / "stop"
    racers = [
        subprocess.Popen(
            [sys.executable, "-c", RACER, str(folder), str(go), str(stop)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=_env(),
        )
        for _ in range(4)
    ]
    try:
        time.sleep(3)  # every racer imported patternscope and waits for the start
        go.touch()
        deadline = time.monotonic() + 120
        outcomes: list[str] = []
        for proc in racers:
            assert proc.stdout is not None
            ready, _, _ = select.select([proc.stdout], [], [], max(1.0, deadline - time.monotonic()))
            assert ready, "a racer did not answer"
            outcomes.append(proc.stdout.readline())
        assert sum(o.startswith("won") for o in outcomes) == 1, outcomes
        assert all("in use by another patternscope run" in o for o in outcomes if o.startswith("refused")), outcomes
    finally:
        stop.touch()
        for proc in racers:
            proc.communicate(timeout=60)


def test_a_lock_left_by_a_killed_process_does_not_block_the_next_run(tmp_path, tiny_weights, digit_folders):
    folder = tmp_path / "run"
    folder.mkdir()
    holder = _hold(folder)
    _kill(holder)  # kill -9: the lock file stays behind, naming a process that is gone
    assert json.loads((folder / LOCK_FILE).read_text())["pid"] == holder.pid
    assert main(_find(folder, tiny_weights, digit_folders, "--steps", "3")) == EXIT_OK
    assert (folder / "pattern.safetensors").is_file() and not (folder / LOCK_FILE).exists()
    assert not holds(folder)  # the command line released it when the command ended


@pytest.mark.slow
def test_a_running_find_holds_its_folder_until_killed(tmp_path, tiny_weights, digit_folders):
    folder = tmp_path / "run"
    argv = _find(folder, tiny_weights, digit_folders, "--steps", "100000", "--checkpoint-every", "50")
    first = subprocess.Popen(
        [sys.executable, "-m", "patternscope", *argv],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=_env(),
    )
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:  # read from this process only: the holder's lock is its own
            assert first.poll() is None, first.communicate(timeout=30)[1][-2000:]
            lock = folder / LOCK_FILE
            if lock.is_file() and (folder / "config.json").is_file() and str(first.pid) in lock.read_text():
                break
            time.sleep(0.05)
        else:
            raise AssertionError("the first run never took its folder")
        for extra in ((), ("--resume",)):
            second = subprocess.run(
                [sys.executable, "-m", "patternscope", *argv, *extra],
                capture_output=True,
                text=True,
                timeout=300,
                env=_env(),
            )
            assert second.returncode == EXIT_USER, second.stderr[-2000:]
            assert f"pid {first.pid} on " in second.stderr and "`find dominant`" in second.stderr
            assert len(second.stderr.strip().splitlines()) == 1
    finally:
        _kill(first)
    # killed mid-search: the next run into the folder (here: start again) is not blocked
    assert main(_find(folder, tiny_weights, digit_folders, "--steps", "3", "--overwrite")) == EXIT_OK
    assert not (folder / LOCK_FILE).exists()
