"""One run lifecycle for the command line and Python: ``ps.run`` writes the same folder as ``patternscope``
(the pattern bit for bit, config.toml that reruns it, report.html), leaves nothing after a user error, and the
settings file it derives from the options matches the one the command line resolves."""

from __future__ import annotations

import tomllib

import pytest
import torch
from helpers import TINY_SPEC
from safetensors.torch import load_file

import patternscope as ps
from patternscope.cli import EXIT_USER, main
from patternscope.cli.config_files import resolved_options
from patternscope.cli.parser import build_parser, command_name, command_parsers
from patternscope.runs.options import options_from_values
from patternscope.runs.registry import COMMANDS
from patternscope.runs.settings_file import options_settings


def _options(tiny_weights, digit_folders):
    return {
        "model": TINY_SPEC,
        "weights": str(tiny_weights),
        "data": [str(digit_folders["train"])],
        "eval_data": str(digit_folders["test"]),
        "eps": "0.2",
        "steps": 12,
        "device": "cpu",
    }


def test_run_from_python_is_the_command_lines_run(tmp_path, tiny_weights, digit_folders):
    opts = _options(tiny_weights, digit_folders)
    summary = ps.run("find dominant", out=str(tmp_path / "api"), **opts, progress=False)
    api = tmp_path / "api"
    assert summary.out == api and 0 <= summary.evaluation.fooling_ratio <= 1
    for name in ("config.json", "config.toml", "report.html", "pattern.safetensors", "metrics.json"):
        assert (api / name).is_file(), name
    assert not (api / ".patternscope.lock").exists()  # the lock is released
    settings = tomllib.loads((api / "config.toml").read_text())
    assert settings["command"] == "find dominant" and settings["steps"] == 12 and settings["eps"] == "0.2"

    # the command line, once directly and once from the API run's config.toml: the same pattern, bit for bit
    cli = tmp_path / "cli"
    argv = ["find", "dominant", "--out", str(cli), "--model", TINY_SPEC, "--weights", str(tiny_weights)]
    argv += ["--data", str(digit_folders["train"]), "--eval-data", str(digit_folders["test"])]
    assert main([*argv, "--eps", "0.2", "--steps", "12", "--device", "cpu", "--quiet"]) == 0
    rerun = tmp_path / "rerun"
    assert main(["--config", str(api / "config.toml"), "--out", str(rerun), "--quiet"]) == 0
    pattern = load_file(api / "pattern.safetensors")  # the tensors (the file's metadata carries the run id)
    for other in (cli, rerun):
        tensors = load_file(other / "pattern.safetensors")
        assert tensors.keys() == pattern.keys()
        assert all(torch.equal(tensors[k], pattern[k]) for k in pattern)


def test_run_from_python_leaves_nothing_after_a_user_error(tmp_path, tiny_weights, digit_folders):
    opts = {**_options(tiny_weights, digit_folders), "eval_data": str(tmp_path / "missing")}
    with pytest.raises(ps.PatternscopeError):
        ps.run("find dominant", out=str(tmp_path / "bad"), **opts, progress=False)
    assert not (tmp_path / "bad").exists()


def test_run_refuses_unknown_commands_and_options():
    with pytest.raises(ps.RunError, match="unknown command 'find'"):
        ps.run("find")
    with pytest.raises(ps.RunError, match="has no option stepz"):
        ps.run("find dominant", stepz=3)


@pytest.mark.parametrize(
    "argv",
    [
        ["find", "dominant", "--out", "o"],
        [
            "find",
            "dominant",
            "--out",
            "o",
            "--recipe",
            "paper",
            "--data",
            "a",
            "--data",
            "b",
            "--clip-during-search",
            "--amp",
            "bf16",
        ],
        ["find", "classwise", "--out", "o", "--data", "digits", "--all-classes"],
        ["scan", "--out", "o", "--data", "digits", "--no-additive", "--classes", "1,2"],
        ["compare", "--out", "o", "--methods", "dominant,uap", "--set", "uap.max_iter=3"],
        ["harden", "--out", "o", "--data", "digits"],
        ["downstream", "--out", "o", "--task-data", "digits", "--pattern", "p"],
        ["experiment", "settings", "--out", "o", "--data", "digits"],
        ["evaluate", "--pattern", "p", "--data", "d", "--out", "o"],
        ["transfer", "--patterns", "a", "b", "--models", "m", "--data", "d", "--out", "o"],
    ],
    ids=lambda argv: " ".join(argv[:2]),
)
def test_the_settings_file_from_options_is_the_command_lines(argv):
    """What config.toml records for a run started from Python (from its options) is what the command line
    records (from its parsed arguments), apart from lists the command line leaves unset (None) when not given."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except ps.PatternscopeError as exc:  # an option this command does not have: the list above is stale
        pytest.fail(str(exc))
    command = next(c for c in COMMANDS if c.name == command_name(args))
    from_cli = resolved_options(command_parsers(parser)[command.name], args)
    from_options = options_settings(options_from_values(command.options, vars(args)))
    assert {k: v for k, v in from_options.items() if k in from_cli} == from_cli
    extra = {k: v for k, v in from_options.items() if k not in from_cli}
    assert all(isinstance(v, list) for v in extra.values()), extra  # lists unset on the command line


def test_a_command_line_user_error_still_exits_2(tmp_path, capsys):
    assert main(["find", "dominant", "--out", str(tmp_path / "x"), "--eps", "-1", "--quiet"]) == EXIT_USER
    assert capsys.readouterr().err.count("\n") == 1 and not (tmp_path / "x").exists()
