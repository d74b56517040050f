"""Every command's options, defaults and help as released: the parser is derived from the command registry,
so this snapshot (taken from 0.1.0's hand-written parser before the registry replaced it) guards every flag,
default, type, choice and help text, and so every config.toml a run writes."""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

import pytest

from patternscope.cli import build_parser

SNAPSHOT = Path(__file__).parent / "cli_snapshot.json"
# deliberate changes since the snapshot, each with its reason
CHANGED_HELP = {
    "report": "its description listed 5 of the 7 kinds of run folder; it now names them from the registry",
    "(top)": "scan's one-line summary names its second, additive signal (issue 17)",
}
# options added since the snapshot (the released ones must stay as they were)
_PIPELINE = ("find dominant", "evaluate", "compare", "transfer")  # the commands that decode images as they go
ADDED = {command: {"workers", "fast_decode"} for command in _PIPELINE}
ADDED["find dominant"] = {"workers", "fast_decode", "epochs", "recipe", "dominance"}
# methods added since the snapshot: the --methods default ("all") of compare and harden names them too
NEW_METHODS = ("dominant-paper", "psp-uap")
ADDED |= {command: {"cache_mb"} for command in ("find classwise", "scan", "harden", "downstream")}  # labelled data
ADDED["find classwise"] |= {"canvases"}  # canvas sensitivity (issue 18)
ADDED["downstream"] = ADDED.get("downstream", set()) | {"recipe"}  # the authors' head schedule (issue 18)
# choices added to a released option since the snapshot: (command, dest) -> the new choices (issue 18: the KL
# in the authors' direction)
NEW_CHOICES = {("find dominant", "loss"): ("kl-authors",)}
# the scan's second signal and calibrated decision (issue 17); --threshold and --max-ratio stay for --rule mad
ADDED["scan"] |= {"rule", "fpr", "reference", "no_additive", "additive_steps"}
# patterns larger than the budget their file declares are refused unless allowed (issue 19)
for _command in ("evaluate", "transfer", "downstream"):
    ADDED[_command] = ADDED.get(_command, set()) | {"allow_over_budget"}
# issue 16: the optional PSP-UAP prior stage of the dominant search
ADDED["find dominant"] |= {"prior_share"}
# released options whose default became None, "not given", so that a recipe sets them only when they are not
# given (issue 28: `downstream --recipe paper --epochs 30` used to train 20 epochs); the help still names the
# released default first: (command, dest)
NOT_GIVEN = {("downstream", "epochs"), ("downstream", "lr"), ("downstream", "batch_size")}
# built-in labelled sets added since the snapshot: the --data help of the labelled commands names them too
NEW_LABELLED_SETS = ("glyphs",)
# issue 28: a null fitted to the model's own classes, pilot spreads as an option; reference scans kept for reuse
ADDED["scan"] |= {"calibration", "reference_cache"}
# issue 30: the searches as TensorBoard events
ADDED["find dominant"] |= {"tensorboard"}
ADDED["compare"] |= {"tensorboard"}
ADDED["find classwise"] |= {"tensorboard"}
ADDED["scan"] |= {"tensorboard"}
ADDED["harden"] |= {"tensorboard"}
ADDED["downstream"] |= {"tensorboard"}


def describe(parser: argparse.ArgumentParser, words: tuple[str, ...] = ()) -> dict[str, dict]:
    """Every (sub-)command's actions (options, dest, default, type, choices, ...) and its help text."""
    out: dict[str, dict] = {}
    actions = []
    for a in parser._actions:
        if isinstance(a, argparse._SubParsersAction):
            for name, sub in a.choices.items():
                out.update(describe(sub, (*words, name)))
            continue
        default = a.default
        try:
            json.dumps(default)
        except TypeError:
            default = repr(default)
        actions.append(
            {
                "options": list(a.option_strings),
                "dest": a.dest,
                "action": type(a).__name__,
                "default": default,
                "nargs": a.nargs,
                "const": a.const if not callable(a.const) else repr(a.const),
                "choices": list(a.choices) if a.choices is not None else None,
                "required": a.required,
                "type": getattr(a.type, "__name__", repr(a.type)) if a.type is not None else None,
                "metavar": a.metavar,
                "help": a.help,
            }
        )
    groups = [[a.dest for a in g._group_actions] for g in parser._mutually_exclusive_groups]
    out[" ".join(words) or "(top)"] = {"actions": actions, "exclusive": groups, "help_text": parser.format_help()}
    return out


@pytest.fixture(scope="module")
def now(monkeypatch_module):
    described = describe(build_parser())
    for command in ("compare", "harden"):  # their --methods default is every method
        for name in NEW_METHODS:  # the released list, to compare the rest word for word
            for action in described[command]["actions"]:
                if action["dest"] == "methods":
                    action["default"] = action["default"].replace(f",{name}", "")
                    action["help"] = action["help"].replace(f",{name}", "")
            described[command]["help_text"] = described[command]["help_text"].replace(f",{name}", "")
    for described_command in described.values():  # the released list of built-in sets, to compare word for word
        for name in NEW_LABELLED_SETS:
            for action in described_command["actions"]:
                if isinstance(action["help"], str):
                    action["help"] = action["help"].replace(f", {name}", "")
            described_command["help_text"] = described_command["help_text"].replace(f", {name}", "")
    for (command, dest), added in NEW_CHOICES.items():  # the released choices, to compare the rest word for word
        for action in described[command]["actions"]:
            if action["dest"] == dest:
                action["choices"] = [c for c in action["choices"] if c not in added]
        for name in added:
            described[command]["help_text"] = described[command]["help_text"].replace(f",{name}", "")
    return described


@pytest.fixture(scope="module")
def monkeypatch_module():
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("COLUMNS", "100")  # argparse wraps help at the terminal width
        yield mp


@pytest.fixture(scope="module")
def released():
    return json.loads(SNAPSHOT.read_text(encoding="utf-8"))


def test_every_released_command_is_still_there(now, released):
    """Released commands keep their names and order; commands added since (``experiment settings``, issue 18)
    are new and need no entry here: adding a command is its module and its registry line."""
    assert [c for c in now if c in released] == list(released)


def _as_released(action: dict, then: list[dict], command: str) -> dict:
    """``action`` with a :data:`NOT_GIVEN` option's None default and longer help put back as released, once
    checked: the released help must still open it."""
    if (command, action["dest"]) not in NOT_GIVEN:
        return action
    old = next(a for a in then if a["dest"] == action["dest"])
    assert action["default"] is None and action["help"].startswith(old["help"]), (command, action["dest"])
    return {**action, "default": old["default"], "help": old["help"]}


def test_every_option_and_default_is_as_released(now, released):
    for command, then in released.items():
        added = ADDED.get(command, set())
        kept = [_as_released(a, then["actions"], command) for a in now[command]["actions"] if a["dest"] not in added]
        assert kept == then["actions"], command
        assert {a["dest"] for a in now[command]["actions"]} - {a["dest"] for a in then["actions"]} == added, command
        assert now[command]["exclusive"] == then["exclusive"], command


def _flat(text: str) -> str:
    """``text`` with argparse's line wrapping undone (also where it broke a word after a hyphen)."""
    return re.sub(r"-\s+", "-", " ".join(text.split()))


def test_every_help_text_is_as_released(now, released):
    for command, then in released.items():
        if command in ADDED:  # the released options' help lines are all still there, word for word
            released_options = then["help_text"].split("\noptions:", 1)[-1]  # not the description's wrapped lines
            lines = [_flat(line) for line in released_options.splitlines() if line.strip().startswith("--")]
            text = _flat(now[command]["help_text"])  # a longer --methods default wraps elsewhere
            assert all(line in text for line in lines), command
            continue
        if command in CHANGED_HELP:
            assert now[command]["help_text"] != then["help_text"], f"{command}: drop it from CHANGED_HELP"
            continue
        assert now[command]["help_text"] == then["help_text"], command


def test_report_names_every_kind_of_run_folder(now):
    """`report --help` names every command whose folders it reports on, from the registry (a new command's
    too, with no edit here)."""
    from patternscope.runs.registry import COMMANDS

    text = " ".join(now["report"]["help_text"].split())
    for name in ("find dominant", "find classwise", "scan", "evaluate --out", "compare", "transfer --out"):
        assert name in text
    reported = [c.name for c in COMMANDS if c.report is not None and c.result_file is not None]
    assert f"{', '.join(reported[-3:-1])} or {reported[-1]}" in text and len(reported) >= 10
