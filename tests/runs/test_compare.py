"""`compare` and `transfer` on the tiny digits CNN: every method in the table, equal budgets, loud failures."""

from __future__ import annotations

import dataclasses
import json

import pytest
from helpers import TINY_SPEC

from patternscope import METHODS
from patternscope.analyses.comparison import MethodFailed
from patternscope.cli import main
from patternscope.methods import LABEL_FREE_METHODS
from patternscope.runs.compare_run import CompareOptions, compare_methods
from patternscope.runs.transfer import TransferOptions, transfer_run

BUDGET = 2000


def _options(out, tiny_weights, digit_folders, **kw):
    return CompareOptions(
        out=str(out),
        model=TINY_SPEC,
        weights=str(tiny_weights),
        data=[str(digit_folders["train"])],
        eval_data=str(digit_folders["test"]),
        eps="0.2",
        budget=BUDGET,
        device="cpu",
        **kw,
    )


@pytest.fixture(scope="module")
def comparison(tiny_weights, digit_folders, tmp_path_factory):
    out = tmp_path_factory.mktemp("compare")
    return compare_methods(_options(out, tiny_weights, digit_folders), progress=False, log=lambda _m: None)


def test_table_has_every_method_with_equal_budget(comparison):
    rows = {r.method: r for r in comparison.rows}
    assert list(rows) == list(LABEL_FREE_METHODS)
    for r in comparison.rows:
        assert r.error is None
        assert 0 <= r.fooling_ratio <= 1
        if r.method != "uap":  # fixed cost per step: within one step of the budget, never over
            assert BUDGET * 0.9 < r.passes <= BUDGET + 1e-6, r
    assert rows["fff"].data == "none" and rows["fff"].setting == "data-free"
    assert rows["dominant"].setting == "label-free" and rows["dominant"].data.endswith("train")
    # the found patterns beat random noise clearly on held-out digits
    assert rows["dominant"].fooling_ratio > 3 * max(comparison.random_sign, 0.03)
    assert rows["sgd-uap"].fooling_ratio > 3 * max(comparison.random_sign, 0.03)


def test_outputs_are_written(comparison):
    out = comparison.out
    saved = json.loads((out / "compare.json").read_text())
    assert [r["method"] for r in saved["rows"]] == list(LABEL_FREE_METHODS)
    assert saved["budget_passes"] == BUDGET and saved["n_images"] == 120
    assert (out / "compare.png").stat().st_size > 1000
    for method in LABEL_FREE_METHODS:
        assert (out / method / "pattern.safetensors").exists()
        assert (out / method / "metrics.json").exists()


def test_resume_keeps_finished_methods(comparison, tiny_weights, digit_folders):
    again = compare_methods(
        _options(comparison.out, tiny_weights, digit_folders, resume=True), progress=False, log=lambda _m: None
    )
    assert [dataclasses.asdict(r) for r in again.rows] == [dataclasses.asdict(r) for r in comparison.rows]


def test_a_failing_method_fails_loudly_and_keeps_the_others(tiny_weights, digit_folders, tmp_path, monkeypatch):
    def broken(*_args, **_kwargs):
        raise RuntimeError("simulated crash inside the method")

    monkeypatch.setitem(METHODS, "df-uap", dataclasses.replace(METHODS["df-uap"], objective=broken))
    opts = _options(tmp_path, tiny_weights, digit_folders, methods=["dominant", "df-uap", "fff"])
    with pytest.raises(MethodFailed, match="df-uap"):
        compare_methods(opts, progress=False, log=lambda _m: None)
    saved = json.loads((tmp_path / "compare.json").read_text())
    by_method = {r["method"]: r for r in saved["rows"]}
    assert set(by_method) == {"dominant", "df-uap", "fff"}
    assert "simulated crash" in by_method["df-uap"]["error"]
    assert by_method["dominant"]["fooling_ratio"] is not None and by_method["fff"]["error"] is None
    assert "RuntimeError" in (tmp_path / "df-uap" / "error.txt").read_text()


def test_cli_exit_codes(tiny_weights, digit_folders, tmp_path, capsys, monkeypatch):
    base = [
        "compare",
        "--model",
        TINY_SPEC,
        "--weights",
        str(tiny_weights),
        "--data",
        str(digit_folders["train"]),
        "--eval-data",
        str(digit_folders["test"]),
        "--eps",
        "0.2",
        "--device",
        "cpu",
    ]
    assert (
        main(
            [
                *base,
                "--out",
                str(tmp_path / "a"),
                "--methods",
                "dominant,sgd-uap",
                "--budget",
                "300",
                "--set",
                "sgd-uap.beta=9",
                "--json",
            ]
        )
        == 0
    )
    result = json.loads(capsys.readouterr().out)
    assert [r["method"] for r in result["rows"]] == ["dominant", "sgd-uap"]
    assert result["rows"][1]["settings"]["beta"] == 9
    # user mistakes: exit 2 with the problem named, before any search
    for extra, message in [
        (["--methods", "dominant,nope"], "unknown method 'nope'"),
        (["--set", "sgd-uap.beta"], "METHOD.KEY=VALUE"),
        (["--set", "sgd-uap.betta=3"], "no setting betta"),
        (["--budget", "5"], "less than one step"),
    ]:
        assert main([*base, "--out", str(tmp_path / "b"), *extra]) == 2
        assert message in capsys.readouterr().err
        assert not (tmp_path / "b" / "compare.json").exists()
    # a crashing method: exit 1, named
    monkeypatch.setitem(METHODS, "fff", dataclasses.replace(METHODS["fff"], objective=lambda *a: 1 / 0))
    assert main([*base, "--out", str(tmp_path / "c"), "--methods", "fff", "--budget", "50", "--quiet"]) == 1
    assert "fff failed" in capsys.readouterr().err


def test_transfer_matrix_matches_the_comparison(comparison, tiny_weights, digit_folders, tmp_path):
    runs = [str(comparison.out / "dominant"), str(comparison.out / "sgd-uap")]
    result = transfer_run(
        TransferOptions(
            patterns=runs,
            models=[f"{TINY_SPEC}@{tiny_weights}"],
            data=str(digit_folders["test"]),
            out=str(tmp_path),
            device="cpu",
        ),
        log=lambda _m: None,
    )
    rows = {r.method: r for r in comparison.rows}
    assert result.fooling[0][0] == pytest.approx(rows["dominant"].fooling_ratio)
    assert result.fooling[1][0] == pytest.approx(rows["sgd-uap"].fooling_ratio)
    assert result.random_sign[0] == pytest.approx(comparison.random_sign)
    # agreement with the pattern's own class and dominance top-1: the same as compare measured them
    assert result.agreement[0][0] == pytest.approx(rows["dominant"].agreement)
    assert result.dominance_top1[1][0] == pytest.approx(rows["sgd-uap"].dominance_top1)
    saved = json.loads((tmp_path / "transfer.json").read_text())
    assert saved["fooling"] == result.fooling
    # every entry carries its Wilson interval on the n images, the same as compare's
    assert saved["fooling_ci"][0][0] == pytest.approx(rows["dominant"].fooling_ci, abs=1e-4)
    assert all(lo <= v <= hi for (lo, hi), v in zip(saved["fooling_ci"][1], result.fooling[1], strict=True))
    from patternscope.runs.transfer import format_transfer

    assert "Wilson 95% interval" in format_transfer(result)
    assert (tmp_path / "transfer.png").stat().st_size > 1000


def test_transfer_cli(comparison, tiny_weights, digit_folders, tmp_path, capsys):
    code = main(
        [
            "transfer",
            "--patterns",
            str(comparison.out / "dominant"),
            "--models",
            f"{TINY_SPEC}@{tiny_weights}",
            "--data",
            str(digit_folders["test"]),
            "--device",
            "cpu",
            "--json",
        ]
    )
    assert code == 0
    assert len(json.loads(capsys.readouterr().out)["fooling"]) == 1
    assert main(["transfer", "--patterns", str(tmp_path / "missing"), "--models", TINY_SPEC]) == 2


def _paper_data_argv(out, tiny_weights, *data):
    return [
        "compare", "--out", str(out), "--model", TINY_SPEC, "--weights", str(tiny_weights), *data,
        "--methods", "dominant,sgd-uap-labelled", "--paper-data", "--eps", "0.2", "--budget", "200",
        "--device", "cpu", "--quiet",
    ]  # fmt: skip


def test_paper_data_refuses_a_labelled_method_without_labelled_data_before_any_work(
    tiny_weights, digit_folders, tmp_path, capsys
):
    """``--paper-data`` gives each method its paper's data, which for the labelled methods carry no labels
    (bundled photos): without labelled ``--data`` the run stops in one line, exit 2, before it searches or
    writes anything (it used to run the methods before and fail at the labelled one)."""
    out = tmp_path / "cmp"
    data = ["--data", str(digit_folders["train"]), "--eval-data", str(digit_folders["test"])]  # flat: no labels
    assert main(_paper_data_argv(out, tiny_weights, *data)) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("patternscope: error:")
    assert "sgd-uap-labelled" in err and "labelled" in err and "--data" in err
    assert not out.exists()


def test_paper_data_gives_a_labelled_method_the_runs_labelled_data(tiny_weights, digit_folders, tmp_path):
    """With a labelled ``--data`` tree, the labelled method searches on it (its paper's data have no labels);
    the label-free one still gets its paper's data."""
    out = tmp_path / "cmp"
    assert main(_paper_data_argv(out, tiny_weights, "--data", str(digit_folders["test"]))) == 0
    rows = {r["method"]: r for r in json.loads((out / "compare.json").read_text())["rows"]}
    assert rows["sgd-uap-labelled"]["setting"] == "data-dependent" and "test" in rows["sgd-uap-labelled"]["data"]
    assert "bundled photos" in rows["dominant"]["data"] and rows["dominant"]["error"] is None
