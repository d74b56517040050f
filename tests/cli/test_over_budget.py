"""A pattern larger than the budget its file declares (issue 19): refused by every command that loads one, and
with --allow-over-budget measured with every output saying so and the noise baselines at its measured norm."""

from __future__ import annotations

import json

import pytest
import torch
from helpers import TINY_SPEC

from patternscope.cli import EXIT_OK, EXIT_USER, main
from patternscope.core.patterns import Pattern

DECLARED, MEASURED = 10 / 255, 50 / 255


@pytest.fixture(scope="module")
def patterns(tmp_path_factory):
    """The same ±50/255 values saved twice: declaring 10/255 (over budget) and declaring 50/255 (honest)."""
    root = tmp_path_factory.mktemp("over-budget")
    signs = torch.randint(0, 2, (1, 16, 16), generator=torch.Generator().manual_seed(1)).float() * 2 - 1
    meta = {"method": "dominant", "model": TINY_SPEC}
    Pattern(signs * MEASURED, DECLARED, meta=meta).save(root / "scaled")
    Pattern(signs * MEASURED, MEASURED, meta=meta).save(root / "honest")
    return {"scaled": root / "scaled", "honest": root / "honest"}


def _one_error_line(err: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("patternscope: error: ") and "Traceback" not in err, err
    return lines[0]


def _evaluate(pattern, tiny_weights, digit_folders, *extra):
    head = ["evaluate", "--pattern", str(pattern), "--model", TINY_SPEC, "--weights", str(tiny_weights)]
    return [*head, "--data", str(digit_folders["test"]), "--device", "cpu", *extra]


def test_evaluate_refuses_it_and_writes_nothing(patterns, tiny_weights, digit_folders, tmp_path, capsys):
    out = tmp_path / "eval"
    assert main(_evaluate(patterns["scaled"], tiny_weights, digit_folders, "--out", str(out))) == EXIT_USER
    line = _one_error_line(capsys.readouterr().err)
    assert "has L∞ 50.0/255 but declares a budget of 10.0/255" in line and "--allow-over-budget" in line
    assert not (out / "metrics.json").exists() and not out.exists()


def test_evaluate_measures_it_when_allowed_and_says_so_everywhere(
    patterns, tiny_weights, digit_folders, tmp_path, capsys
):
    out = tmp_path / "eval"
    argv = _evaluate(patterns["scaled"], tiny_weights, digit_folders, "--out", str(out), "--allow-over-budget")
    assert main([*argv, "--no-report"]) == EXIT_OK
    text = capsys.readouterr().out
    assert "OVER BUDGET: the pattern has L∞ 50.0/255 but declares a budget of 10.0/255" in text
    metrics = json.loads((out / "metrics.json").read_text())
    entry = metrics["pattern"]
    assert entry["over_budget"] is True and entry["eps"] == pytest.approx(DECLARED)
    assert entry["measured_linf"] == pytest.approx(MEASURED) and entry["measured_l2"] == pytest.approx(MEASURED * 16)
    # the noise baselines are drawn at the measured norm: the same as for the same values declared honestly
    assert main(_evaluate(patterns["honest"], tiny_weights, digit_folders, "--json")) == EXIT_OK
    honest = json.loads(capsys.readouterr().out)
    assert honest["pattern"]["over_budget"] is False and honest["pattern"]["measured_linf"] == pytest.approx(MEASURED)
    assert metrics["evaluation"]["random_baselines"] == honest["random_baselines"]
    assert metrics["evaluation"]["fooling_ratio"] == honest["fooling_ratio"]
    # --json says so as well
    argv = _evaluate(patterns["scaled"], tiny_weights, digit_folders, "--json", "--allow-over-budget")
    assert main(argv) == EXIT_OK
    assert json.loads(capsys.readouterr().out)["pattern"]["over_budget"] is True


def test_transfer_refuses_it_or_names_it_over_budget(patterns, tiny_weights, digit_folders, tmp_path, capsys):
    argv = ["transfer", "--patterns", str(patterns["scaled"]), str(patterns["honest"])]
    argv += ["--models", f"{TINY_SPEC}@{tiny_weights}", "--data", str(digit_folders["test"]), "--device", "cpu"]
    out = tmp_path / "transfer"
    assert main([*argv, "--out", str(out)]) == EXIT_USER
    assert "50.0/255" in _one_error_line(capsys.readouterr().err) and not out.exists()
    assert main([*argv, "--out", str(out), "--allow-over-budget", "--no-report"]) == EXIT_OK
    assert "[OVER BUDGET]" in capsys.readouterr().out
    saved = json.loads((out / "transfer.json").read_text())
    assert saved["patterns"][0].endswith("[OVER BUDGET]") and not saved["patterns"][1].endswith("]")
    assert [b["over_budget"] for b in saved["budgets"]] == [True, False]
    assert saved["budgets"][0]["measured_linf"] == pytest.approx(MEASURED)
    assert saved["fooling"][0] == saved["fooling"][1]  # the same values: the same effect, whatever they declare


def test_downstream_refuses_it_before_any_training(patterns, tiny_weights, digit_folders, tmp_path, capsys):
    out = tmp_path / "ds"
    argv = ["downstream", "--out", str(out), "--backbone", TINY_SPEC, "--weights", str(tiny_weights)]
    argv += ["--task-data", str(digit_folders["test"]), "--pattern", str(patterns["scaled"]), "--device", "cpu"]
    assert main([*argv, "--quiet"]) == EXIT_USER
    assert "--allow-over-budget" in _one_error_line(capsys.readouterr().err) and not out.exists()
    assert main([*argv, "--epochs", "1", "--own-steps", "0", "--allow-over-budget", "--no-report"]) == EXIT_OK
    assert "OVER BUDGET" in capsys.readouterr().out
    entry = json.loads((out / "downstream.json").read_text())["pattern"]
    assert entry["over_budget"] is True and entry["measured_linf"] == pytest.approx(MEASURED)
