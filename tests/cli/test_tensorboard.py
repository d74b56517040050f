"""``--tensorboard``: a search's loss curve, learning rate, pattern images and final metrics as TensorBoard events,
read back with TensorBoard's own reader."""

from __future__ import annotations

import json

import pytest
from helpers import TINY_SPEC

from patternscope.cli import EXIT_OK, main

event_accumulator = pytest.importorskip("tensorboard.backend.event_processing.event_accumulator")


def _events(folder):
    found = event_accumulator.EventAccumulator(str(folder), size_guidance={"scalars": 0, "images": 0})
    found.Reload()
    return found


def test_find_dominant_writes_the_loss_curve_as_tensorboard_events(tmp_path, tiny_weights, digit_folders):
    out = tmp_path / "run"
    argv = ["find", "dominant", "--out", str(out), "--model", TINY_SPEC, "--weights", str(tiny_weights)]
    argv += ["--data", str(digit_folders["train"]), "--eval-data", str(digit_folders["test"]), "--eps", "0.2"]
    argv += ["--steps", "20", "--checkpoint-every", "10", "--device", "cpu", "--tensorboard", "--quiet"]
    assert main(argv) == EXIT_OK
    events = _events(out / "tensorboard")
    loss = [e.value for e in events.Scalars("dominant/loss")]
    history = json.loads((out / "history.json").read_text())["loss"]
    assert [e.step for e in events.Scalars("dominant/loss")] == list(range(1, 21))
    assert loss == pytest.approx(history, rel=1e-6)  # the curve of history.json, step by step
    assert all(e.value == pytest.approx(0.01) for e in events.Scalars("dominant/lr"))
    assert [e.step for e in events.Images("dominant/pattern")] == [1, 10, 20, 20]  # every 10 steps, and the end
    metrics = json.loads((out / "metrics.json").read_text())["evaluation"]
    assert events.Scalars("dominant/fooling_ratio")[0].value == pytest.approx(metrics["fooling_ratio"])


@pytest.mark.slow
def test_compare_logs_each_method_under_its_name(tmp_path, tiny_weights, digit_folders):
    out = tmp_path / "cmp"
    argv = ["compare", "--out", str(out), "--model", TINY_SPEC, "--weights", str(tiny_weights), "--device", "cpu"]
    argv += ["--data", str(digit_folders["train"]), "--eval-data", str(digit_folders["test"]), "--eps", "0.2"]
    assert main([*argv, "--methods", "dominant,cos-uap", "--budget", "330", "--tensorboard", "--quiet"]) == EXIT_OK
    events = _events(out / "tensorboard")
    rows = {r["method"]: r for r in json.loads((out / "compare.json").read_text())["rows"]}
    for method in ("dominant", "cos-uap"):
        assert len(events.Scalars(f"{method}/loss")) == rows[method]["steps"]
        assert events.Scalars(f"{method}/agreement")[0].value == pytest.approx(rows[method]["agreement"])


@pytest.mark.slow
def test_scan_and_find_classwise_log_each_class_search(tmp_path, tiny_weights, digit_folders):
    model = ["--model", TINY_SPEC, "--weights", str(tiny_weights), "--device", "cpu"]
    scan = tmp_path / "scan"
    argv = ["scan", "--out", str(scan), *model, "--data", str(digit_folders["test"]), "--classes", "1,2"]
    assert main([*argv, "--steps", "20", "--batch-size", "16", "--no-additive", "--tensorboard", "--quiet"]) == 0
    events = _events(scan / "tensorboard")
    rows = {r["target"]: r for r in json.loads((scan / "scan.json").read_text())["classes"]}
    for t in (1, 2):
        assert len(events.Scalars(f"class {t}/loss")) == 20 and events.Images(f"class {t}/pattern")
        assert events.Scalars(f"class {t}/smallest_k")[0].value == rows[t]["smallest_k"]
    found = tmp_path / "classwise"
    argv = ["find", "classwise", "--out", str(found), *model, "--data", str(digit_folders["test"]), "--class", "3"]
    assert main([*argv, "--steps", "15", "--tensorboard", "--quiet"]) == EXIT_OK
    events = _events(found / "tensorboard")
    row = json.loads((found / "classwise_row.json").read_text())
    assert len(events.Scalars("class 3/loss")) == 15
    assert events.Scalars("class 3/success")[0].value == pytest.approx(row["success"])
