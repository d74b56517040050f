"""One run's outputs (issue 19): every output file of a run carries the run's id, ``--resume`` keeps it,
``--overwrite`` makes a new one, and ``patternscope report`` refuses a folder whose files come from two runs."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from helpers import TINY_SPEC

from patternscope.cli import EXIT_OK, EXIT_USER, main
from patternscope.core.atomic import write_json
from patternscope.core.patterns import Pattern
from patternscope.core.run_id import RUN_ID_KEY, recorded_run_id, run_id_for
from patternscope.errors import RunDirError
from patternscope.runs.report_pages import one_run_id


def _find(out, tiny_weights, digit_folders, *extra):
    return [
        *["find", "dominant", "--out", str(out), "--model", TINY_SPEC, "--weights", str(tiny_weights)],
        *["--data", str(digit_folders["train"]), "--eval-data", str(digit_folders["test"])],
        *["--eps", "0.2", "--steps", "3", "--device", "cpu", "--quiet", *extra],
    ]


def _ids(out):
    """Every file's run id (None: the file carries none), by path relative to ``out``."""
    return {
        str(p.relative_to(out)): recorded_run_id(p)
        for p in sorted(out.rglob("*"))
        if p.suffix in (".json", ".safetensors")
    }


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory, tiny_weights, digit_folders):
    """Two finished `find dominant` runs."""
    root = tmp_path_factory.mktemp("two-runs")
    for name in ("a", "b"):
        assert main(_find(root / name, tiny_weights, digit_folders)) == EXIT_OK
    return root / "a", root / "b"


def test_every_output_of_a_run_carries_its_id(two_runs):
    out = two_runs[0]
    run_id = json.loads((out / "config.json").read_text())[RUN_ID_KEY]
    assert len(run_id) == 32 and int(run_id, 16) >= 0
    ids = _ids(out)
    for name in ("config.json", "metrics.json", "history.json", "pattern.json", "pattern.safetensors"):
        assert ids[name] == run_id, (name, ids)
    assert set(ids.values()) == {run_id}
    assert Pattern.load(out).meta[RUN_ID_KEY] == run_id
    assert f"run id: {run_id}" in (out / "report.html").read_text()
    assert run_id not in (out / "config.toml").read_text()  # the rerun file: the same for every run of it
    assert one_run_id(out) == run_id
    assert run_id != json.loads((two_runs[1] / "config.json").read_text())[RUN_ID_KEY]
    assert run_id_for(out) is None  # the command ended: its folder is no longer a current run


def test_resume_keeps_the_id_and_overwrite_makes_a_new_one(tmp_path, tiny_weights, digit_folders):
    out = tmp_path / "run"
    assert main(_find(out, tiny_weights, digit_folders, "--checkpoint-every", "1")) == EXIT_OK
    first = one_run_id(out)
    (out / "metrics.json").unlink()  # as if killed before the evaluation
    assert main([*_find(out, tiny_weights, digit_folders, "--checkpoint-every", "1"), "--resume"]) == EXIT_OK
    assert one_run_id(out) == first and set(_ids(out).values()) == {first}
    assert main([*_find(out, tiny_weights, digit_folders), "--overwrite"]) == EXIT_OK
    second = one_run_id(out)
    assert second not in (None, first) and set(_ids(out).values()) == {second}


def test_report_refuses_a_folder_mixing_two_runs(two_runs, tmp_path, capsys):
    a, b = (shutil.copytree(run, tmp_path / run.name) for run in two_runs)
    shutil.copy(b / "metrics.json", a / "metrics.json")  # a result copied in from another run
    assert main(["report", str(a)]) == EXIT_USER
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in err, err
    assert "two runs" in lines[0] and "config.json" in lines[0] and "metrics.json" in lines[0]
    assert one_run_id(b) in lines[0] and recorded_run_id(a / "config.json") in lines[0]
    with pytest.raises(RunDirError, match="two runs"):
        one_run_id(a)


def test_a_pattern_copied_into_a_class_folder_is_found(two_runs, tmp_path):
    a = shutil.copytree(two_runs[0], tmp_path / "a")
    (a / "classes" / "003").mkdir(parents=True)
    shutil.copy(two_runs[1] / "pattern.safetensors", a / "classes" / "003" / "pattern.safetensors")
    with pytest.raises(RunDirError, match=r"classes/003/pattern\.safetensors"):
        one_run_id(a)


def test_files_without_a_run_id_are_accepted(two_runs, tmp_path, capsys):
    old = shutil.copytree(two_runs[0], tmp_path / "old")
    for path in old.glob("*.json"):  # files of an earlier release: no run id anywhere
        data = json.loads(path.read_text())
        data.pop(RUN_ID_KEY, None)
        path.write_text(json.dumps(data))
    Pattern.load(old).save(tmp_path / "api")  # saved outside a run: no id
    shutil.copy(tmp_path / "api" / "pattern.safetensors", old / "pattern.safetensors")
    assert set(_ids(old).values()) == {None}
    assert main(["report", str(old)]) == EXIT_OK
    assert "run id: not recorded" in (old / "report.html").read_text()
    mixed = shutil.copytree(two_runs[0], tmp_path / "mixed")
    shutil.copy(old / "metrics.json", mixed / "metrics.json")  # an id-less file beside the run's: accepted
    assert main(["report", str(mixed)]) == EXIT_OK
    capsys.readouterr()


def test_the_api_without_a_run_folder_writes_no_id(tmp_path):
    Pattern(torch.zeros(1, 4, 4), 0.1, meta={RUN_ID_KEY: "from-elsewhere"}).save(tmp_path / "p")
    assert recorded_run_id(tmp_path / "p" / "pattern.safetensors") is None
    assert RUN_ID_KEY not in json.loads((tmp_path / "p" / "pattern.json").read_text())
    write_json(tmp_path / "x.json", {"a": 1})
    assert json.loads((tmp_path / "x.json").read_text()) == {"a": 1}


def test_evaluate_in_the_patterns_own_folder_keeps_its_run(two_runs, tmp_path, tiny_weights, digit_folders):
    run = shutil.copytree(two_runs[0], tmp_path / "run")
    head = ["evaluate", "--pattern", str(run), "--model", TINY_SPEC, "--weights", str(tiny_weights)]
    head += ["--data", str(digit_folders["test"]), "--quiet"]
    assert main([*head, "--out", str(run), "--overwrite"]) == EXIT_OK
    assert one_run_id(run) == recorded_run_id(run / "config.json")
    assert main([*head, "--out", str(tmp_path / "new")]) == EXIT_OK  # elsewhere: a run of its own
    new = recorded_run_id(tmp_path / "new" / "metrics.json")
    assert new is not None and new != one_run_id(run)


@pytest.mark.slow
def test_compare_sub_folders_carry_the_comparisons_id(tmp_path, tiny_weights, digit_folders):
    out = tmp_path / "cmp"
    argv = ["compare", "--out", str(out), "--model", TINY_SPEC, "--weights", str(tiny_weights)]
    argv += ["--data", str(digit_folders["train"]), "--eval-data", str(digit_folders["test"])]
    argv += ["--eps", "0.2", "--budget", "300", "--methods", "dominant,sgd-uap", "--device", "cpu", "--quiet"]
    assert main(argv) == EXIT_OK
    ids = _ids(out)
    run_id = ids["compare.json"]
    assert run_id and ids["dominant/pattern.safetensors"] == run_id and ids["sgd-uap/metrics.json"] == run_id
    assert set(ids.values()) == {run_id}
    assert main([*argv, "--resume"]) == EXIT_OK
    assert set(_ids(out).values()) == {run_id}
    assert main([*argv, "--overwrite"]) == EXIT_OK
    assert len(set(_ids(out).values())) == 1 and one_run_id(out) != run_id


@pytest.mark.slow
def test_a_scan_and_the_references_it_scans_are_one_run(tmp_path, tiny_weights, digit_folders):
    base = ["--model", TINY_SPEC, "--weights", str(tiny_weights), "--data", str(digit_folders["test"])]
    base += ["--steps", "5", "--additive-steps", "5", "--device", "cpu", "--quiet"]
    other, out = tmp_path / "other", tmp_path / "scan"
    assert main(["scan", "--out", str(other), *base]) == EXIT_OK
    # a finished scan of another run is read in place; a weights file is scanned once into the reference cache
    cache = tmp_path / "refcache"
    with_refs = ["--reference", f"{other},{tiny_weights}", "--reference-cache", str(cache)]
    assert main(["scan", "--out", str(out), *with_refs, *base]) == EXIT_OK
    ids = _ids(out)
    run_id = one_run_id(out)
    assert run_id is not None and run_id != one_run_id(other)
    assert set(ids.values()) == {run_id}  # the class records too (their readers drop the key)
    (cached,) = [p for p in cache.iterdir() if p.is_dir()]
    cached_id = one_run_id(cached)  # the cached reference scan is a run of its own, reused by later scans
    assert cached_id is not None and cached_id != run_id and (cached / "scan.json").is_file()
    assert ids["classes/000/row.json"] == run_id and ids["scan_config.json"] == run_id
    # and a resumed scan reads them back with their run id
    assert main(["scan", "--out", str(out), *with_refs, *base, "--resume"]) == EXIT_OK
    assert one_run_id(out) == run_id and one_run_id(cached) == cached_id


@pytest.mark.slow
def test_every_rank_of_a_class_parallel_scan_saves_with_the_runs_id(tmp_path, tiny_weights, digit_folders):
    import os
    import subprocess
    import sys

    out = tmp_path / "scan"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", "-m", "patternscope"]
    cmd += ["scan", "--out", str(out), "--model", TINY_SPEC, "--weights", str(tiny_weights)]
    cmd += ["--data", str(digit_folders["test"]), "--steps", "5", "--additive-steps", "5", "--device", "cpu", "--quiet"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
    assert done.returncode == 0, done.stderr
    ids = _ids(out)
    run_id = one_run_id(out)
    patterns = [name for name in ids if name.startswith("classes/") and name.endswith(".safetensors")]
    assert len(patterns) >= 10 and {ids[name] for name in patterns} == {run_id}  # rank 1's classes too
