"""A method is one file plus one registry line: the design page's example method (``example_method.py``)
registers and runs through find, compare and the report with no other edit, and every method module's
docstring example runs."""

from __future__ import annotations

import doctest
import importlib
from pathlib import Path

import example_method
import pytest
import torch

import patternscope as ps
from patternscope.core.classifier import Classifier
from patternscope.methods import METHODS, get_recipe, register_method
from patternscope.methods.registry import LABEL_FREE_METHODS


@pytest.fixture
def registered():
    """The example method in the registry for one test (the registry is the package's own table)."""
    register_method(example_method.RECIPE)
    yield example_method.RECIPE
    METHODS.pop(example_method.RECIPE.name, None)


def test_example_method_runs_through_find_compare_and_report(
    registered, tiny_model: Classifier, digits, tmp_path: Path
) -> None:
    outcome = ps.find_pattern(tiny_model, digits.train_x[:64], method="confidence-drop", steps=15, progress=False)
    assert outcome.pattern.meta["method"] == "confidence-drop"
    assert float(outcome.pattern.delta.abs().max()) <= outcome.pattern.eps + 1e-6
    # the loss went down: the clean predictions lost confidence
    history = outcome.result.history
    assert history[-1] < history[0]

    config = ps.CompareConfig(methods=["confidence-drop", "cos-uap"], budget=640)
    comparison = ps.compare_patterns(
        tiny_model,
        digits.train_x[:64],
        config,
        eval_data=digits.test_x[:64],
        out=tmp_path / "cmp",
        progress=False,
        log=lambda _m: None,
    )
    row = next(r for r in comparison.rows if r.method == "confidence-drop")
    assert row.error is None and row.title == "Confidence drop (walkthrough example)"
    assert (tmp_path / "cmp" / "confidence-drop" / "pattern.safetensors").is_file()
    page = ps.write_report(tmp_path / "cmp").read_text(encoding="utf-8")
    assert "confidence-drop" in page


def test_register_refuses_a_taken_name(registered) -> None:
    from dataclasses import replace

    assert register_method(registered) is registered  # the same recipe again: nothing changes
    with pytest.raises(ps.PatternError, match="exists already"):
        register_method(replace(registered, title="another"))
    assert "confidence-drop" not in LABEL_FREE_METHODS  # a plug-in is not in compare's default list
    assert get_recipe("confidence-drop") is registered


MODULES = sorted({importlib.import_module(r.config.__module__).__name__ for r in METHODS.values()})


@pytest.mark.parametrize("module", MODULES)
def test_method_docstring_example_runs(module: str, tiny_model: Classifier) -> None:
    """Each method module's docstring example runs (``model``: the tiny digits model)."""
    mod = importlib.import_module(module)
    tests = [t for t in doctest.DocTestFinder().find(mod, module) if t.examples and t.name == module]
    assert tests, f"{module} has no example in its docstring"
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS)
    torch.manual_seed(0)
    for test in tests:
        test.globs.update(model=tiny_model)
        runner.run(test)
    results = runner.summarize(verbose=False)
    assert results.failed == 0 and results.attempted >= 3
