"""A recipe (``downstream --recipe paper``, ``find dominant --recipe paper``) sets only the options the user
did not give: an explicit option wins even when it equals the default, from the command line, a config file
or the Python API alike."""

from __future__ import annotations

from dataclasses import asdict, fields

import pytest

from patternscope.analyses.downstream import PAPER_SCHEDULE, DownstreamConfig
from patternscope.cli import build_parser
from patternscope.cli.config_files import config_argv
from patternscope.cli.parser import command_parsers
from patternscope.core.configs import flag_of
from patternscope.methods import DominantConfig
from patternscope.methods.dominant import PaperDominantConfig
from patternscope.runs.downstream import DownstreamOptions, downstream_config
from patternscope.runs.find_dominant import FindOptions
from patternscope.runs.options import options_from_values

_D = DownstreamConfig()
DOWNSTREAM = ["downstream", "--out", "o", "--task-data", "digits", "--pattern", "p"]


def _options(argv: list[str], kind: type):
    return options_from_values(kind, vars(build_parser().parse_args(argv)))


def test_an_explicit_option_equal_to_the_default_wins_over_the_recipe_on_the_command_line():
    assert PAPER_SCHEDULE["epochs"] != _D.epochs  # the case: the recipe would set another value
    argv = [*DOWNSTREAM, "--recipe", "paper", "--epochs", str(_D.epochs)]
    config = downstream_config(_options(argv, DownstreamOptions))
    assert config.epochs == _D.epochs
    assert (config.lr, config.batch_size) == (PAPER_SCHEDULE["lr"], PAPER_SCHEDULE["batch_size"])  # not given
    assert config.milestones == PAPER_SCHEDULE["milestones"] and config.augment
    paper = downstream_config(_options([*DOWNSTREAM, "--recipe", "paper"], DownstreamOptions))
    schedule = tuple(PAPER_SCHEDULE[k] for k in ("epochs", "lr", "batch_size"))
    assert (paper.epochs, paper.lr, paper.batch_size) == schedule
    default = downstream_config(_options(DOWNSTREAM, DownstreamOptions))
    assert asdict(default) == asdict(_D)


def test_a_config_file_option_wins_over_the_recipe():
    parser = command_parsers(build_parser())["downstream"]
    tokens = config_argv(parser, {"recipe": "paper", "lr": _D.lr}, [], "run.toml")
    config = downstream_config(_options([*DOWNSTREAM, *tokens], DownstreamOptions))
    assert config.lr == _D.lr and config.epochs == PAPER_SCHEDULE["epochs"]


def test_an_api_option_wins_over_the_recipe():
    opts = DownstreamOptions(pattern="p", recipe="paper", epochs=_D.epochs, batch_size=_D.batch_size)
    config = downstream_config(opts)
    assert (config.epochs, config.batch_size, config.lr) == (_D.epochs, _D.batch_size, PAPER_SCHEDULE["lr"])
    assert downstream_config(DownstreamOptions(pattern="p")).epochs == _D.epochs


def test_find_dominant_paper_recipe_keeps_given_options():
    base = ["find", "dominant", "--out", "o"]
    paper = _options([*base, "--recipe", "paper"], FindOptions).dominant_config()
    assert isinstance(paper, PaperDominantConfig) and paper.dominance == 0 and paper.prior_share == 0
    given = _options([*base, "--recipe", "paper", "--dominance", "1", "--prior-share", "0.2"], FindOptions)
    assert (given.dominant_config().dominance, given.dominant_config().prior_share) == (1.0, 0.2)
    assert FindOptions(recipe="paper", prior_share=0.2).dominant_config().prior_share == 0.2
    assert FindOptions().dominant_config().dominance == DominantConfig().dominance


@pytest.mark.parametrize(
    ("options", "recipe_settings", "default_settings"),
    [
        (DownstreamOptions, {**asdict(_D), **PAPER_SCHEDULE}, asdict(_D)),
        (FindOptions, asdict(PaperDominantConfig()), asdict(DominantConfig())),
    ],
    ids=["downstream", "find dominant"],
)
def test_every_option_a_recipe_sets_defaults_to_not_given(options, recipe_settings, default_settings):
    """An option whose value the recipe changes must default to None ("not given"), else its default could not
    be told from the same value given on purpose."""
    flagged = {f.name: f.default for f in fields(options) if flag_of(f) is not None}
    changed = {k for k, v in recipe_settings.items() if default_settings.get(k) != v and k in flagged}
    assert changed, "the recipe changes no option: nothing to check"
    assert {k: flagged[k] for k in changed} == dict.fromkeys(changed)
