"""The CLI reference the docs site shows is generated from the parser: every command and every option."""

from __future__ import annotations

from patternscope.cli import build_parser
from patternscope.cli.parser import command_parsers
from patternscope.cli.reference import cli_reference
from patternscope.runs.registry import COMMANDS


def test_reference_has_every_command_and_option():
    text = cli_reference()
    parsers = command_parsers(build_parser())
    for command in COMMANDS:
        assert f"### `patternscope {command.name}`" in text
        for action in parsers[command.name]._actions:
            for option in action.option_strings:
                if option not in ("-h", "--help"):
                    assert f"`{option}`" in text, (command.name, option)


def test_reference_shows_defaults_and_requirements():
    text = cli_reference()
    assert "| `--steps` | `300` |" in text
    assert "| `--out` `DIR` | required |" in text
    assert "runs under `torchrun`, class-parallel" in text
