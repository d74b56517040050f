"""Pattern methods side by side, the library part: the settings of a comparison (:class:`CompareConfig`:
methods, one ε, one seed, one budget in passes, per-method overrides), every method's validated settings
and search data, the row each method gets and the result (:class:`Comparison`). The run itself
(searching, measuring, writing the folder) is :func:`patternscope.runs.compare_run.compare_patterns`."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ..core.configs import comma_list, comma_text, option
from ..core.patterns import Pattern, parse_eps
from ..data.images import EVAL_VIEWS
from ..errors import DataError, PatternError, PatternscopeError
from ..methods import LABEL_FREE_METHODS, METHODS, UAPConfig, get_recipe
from ..methods.recipe import (
    DataSpec,
    Recipe,
    labelled_sources,
    make_config,
    search_sources,
    steps_for_budget,
)

DEFAULT_BUDGET = 3200  # passes: 100 steps of dominant patterns at batch 32 (about 75 s on 2 CPU cores)


class MethodFailed(PatternscopeError):
    """One or more methods of a comparison raised an error (the others finished and were saved)."""


def parse_setting(text: str) -> tuple[str, str, Any]:
    """``METHOD.KEY=VALUE`` (from ``--set``) as (method, key, value); numbers, booleans and null parsed."""
    head, sep, raw = text.partition("=")
    method, dot, key = head.partition(".")
    if not sep or not dot or not key:
        raise PatternError(f"--set {text!r}: write METHOD.KEY=VALUE, e.g. sgd-uap.beta=9")
    get_recipe(method)
    try:
        value = json.loads(raw)
    except json.JSONDecodeError:
        value = raw
    return method, key, value


def parse_settings(texts: list[str]) -> dict[str, dict[str, Any]]:
    """Every ``--set METHOD.KEY=VALUE`` as ``{method: {key: value}}``."""
    settings: dict[str, dict[str, Any]] = {}
    for text in texts:
        method, key, value = parse_setting(text)
        settings.setdefault(method, {})[key] = value
    return settings


def settings_text(settings: dict[str, dict[str, Any]]) -> list[str]:
    """``{method: {key: value}}`` as ``--set`` texts (the inverse of :func:`parse_settings`)."""
    return [f"{m}.{k}={json.dumps(v)}" for m, kv in settings.items() for k, v in kv.items()]


@dataclass
class CompareConfig:
    """Settings of a side-by-side comparison (pixel space [0,1]).

    Args:
        methods: method names (:data:`~patternscope.methods.METHODS`), run in this order.
        eps: the shared budget, in [0,1] pixel units (``10/255``, ``0.0392``); L∞ unless ``norm="l2"``.
        norm: ``linf`` or ``l2``.
        budget: passes per method (images through forward and backward; forward-only images count a
            third), so methods with different batch sizes and costs get equal compute.
        seed: shared by every method.
        settings: per-method overrides of their settings, e.g. ``{"sgd-uap": {"beta": 9}}``.
        paper_data: give each data-using method its own paper's default data instead of the shared data
            (a labelled method keeps the shared data, which must be labelled: :func:`method_data`).
        amp: mixed precision: ``off``, ``bf16`` or ``fp16``.
        eval_views: evaluation crops per image (1, 2, 5 or 10).
        eval_batch_size: evaluation batch size.
        workers: input-pipeline worker processes (None: the device's default); results do not depend on it.
        fast_decode: decode images the fast way (PIL resize on uint8, JPEG draft; values within a level
            or two of the exact decoding).
    """

    methods: list[str] = option(
        factory=lambda: list(LABEL_FREE_METHODS),
        help=f"comma-separated methods (default all: {comma_text(list(LABEL_FREE_METHODS))})",
        parse=comma_list,
        text=comma_text,
    )
    eps: str | float = option("10/255", help="L-inf budget in [0,1] pixel units (default {default})")
    norm: str = option("linf", help="budget norm (default {default})", choices=("linf", "l2"))
    budget: float = option(
        DEFAULT_BUDGET,
        help="passes per method: images through forward and backward, forward-only images count 1/3 "
        "(default {default})",
    )
    seed: int = option(0, help="seed shared by every method (default {default})")
    settings: dict[str, dict[str, Any]] = option(
        factory=dict,
        help="a method setting, repeatable: e.g. sgd-uap.beta=9, dominant.lr=0.03, gd-uap.prior=range",
        name="--set",
        dest="set",
        metavar="METHOD.KEY=VALUE",
        repeat=True,
        parse=parse_settings,
        text=settings_text,
    )
    paper_data: bool = option(
        False, help="give each method its own paper's data instead (jigsaw for cos-uap, photos for df-uap, ...)"
    )
    amp: str = option("off", help="mixed precision (default {default})", choices=("off", "bf16", "fp16"))
    eval_views: int = option(1, help="crops per image (default {default})", choices=EVAL_VIEWS)
    eval_batch_size: int = 64
    workers: int | None = None
    fast_decode: bool = False

    def validate(self) -> CompareConfig:
        """Check the comparison's own settings (raising :class:`~patternscope.errors.PatternError` naming
        the problem); returns ``self``. :meth:`method_configs` checks every method's settings too."""
        if not self.methods:
            raise PatternError("no methods given; choose from " + ", ".join(METHODS))
        for method in self.methods:
            get_recipe(method)
        if len(set(self.methods)) != len(self.methods):
            raise PatternError("a method is listed twice in --methods")
        for name in self.settings:
            if name not in self.methods:
                raise PatternError(f"settings for {name!r}, which is not in --methods")
        parse_eps(self.eps, self.norm)
        if not self.budget > 0:
            raise PatternError(f"--budget must be a positive number of passes, got {self.budget}")
        if self.eval_views not in (1, 2, 5, 10):
            raise PatternError(f"eval views must be 1, 2, 5 or 10, got {self.eval_views}")
        if self.eval_batch_size < 1:
            raise PatternError(f"eval batch size must be at least 1, got {self.eval_batch_size}")
        return self

    def method_configs(self) -> dict[str, UAPConfig]:
        """Every method's validated settings (shared ε, norm, seed and mixed precision, then its overrides);
        raises :class:`~patternscope.errors.PatternError` for anything wrong, before any work."""
        self.validate()
        recipes = [get_recipe(m) for m in self.methods]
        eps = parse_eps(self.eps, self.norm)
        amp = False if self.amp == "off" else self.amp
        configs = {}
        for recipe in recipes:
            overrides = {"eps": eps, "norm": self.norm, "seed": self.seed, "amp": amp}
            configs[recipe.name] = make_config(recipe, None, {**overrides, **self.settings.get(recipe.name, {})})
            steps_for_budget(recipe, configs[recipe.name], self.budget)
        return configs


@dataclass
class MethodRow:
    """One method's line of the comparison."""

    method: str
    title: str = ""
    setting: str = ""
    data: str = ""
    clip_during_search: bool | None = None
    fooling_ratio: float | None = None
    fooling_ratio_confident: float | None = None
    dominance_top1: float | None = None
    agreement: float | None = None
    fooling_ci: list[float] | None = None
    agreement_ci: list[float] | None = None
    fooling_ci_per_photo: list[float] | None = None
    psnr_db: float | None = None
    ssim: float | None = None
    pattern_class: str | None = None
    seconds: float | None = None
    passes: float | None = None
    steps: int | None = None
    settings: dict[str, Any] = field(default_factory=dict)
    error: str | None = None


@dataclass
class Comparison:
    """The result of :func:`compare_patterns`: one row per method, the random ±eps control, the images;
    ``patterns`` holds each finished method's pattern (not in :meth:`to_dict`)."""

    out: Path | None
    rows: list[MethodRow]
    random_sign: float | None
    random_sign_confident: float | None
    n_images: int
    eval_data: str
    patterns: dict[str, Pattern] = field(default_factory=dict, repr=False)

    def to_dict(self) -> dict[str, Any]:
        return {
            "rows": [asdict(r) for r in self.rows],
            "random_sign_fooling_ratio": self.random_sign,
            "random_sign_fooling_ratio_confident": self.random_sign_confident,
            "n_images": self.n_images,
            "eval_data": self.eval_data,
        }


def method_data(recipe: Recipe, method_config: UAPConfig, config: CompareConfig, shared: DataSpec) -> DataSpec:
    """One method's search data: the data every method shares, or with ``config.paper_data`` (or a range
    prior) its paper's own (:attr:`~patternscope.methods.recipe.Recipe.papers_data`). A labelled method keeps
    the shared data even then: its paper searched on labelled images, and the proxies standing for them here
    (the bundled photos) carry no labels; :func:`check_method_data` makes sure the shared data have them."""
    own = config.paper_data or getattr(method_config, "prior", None) == "range"
    if not own or recipe.labelled(method_config):
        return shared
    return list(recipe.papers_data) or None


def check_method_data(configs: dict[str, UAPConfig], config: CompareConfig, shared: DataSpec) -> None:
    """Raise :class:`~patternscope.errors.DataError` naming the labelled methods whose search data
    (:func:`method_data`) carry no labels, before any search or file (they would fail at their turn)."""
    missing = []
    for name, method_config in configs.items():
        recipe = get_recipe(name)
        if not (recipe.labelled(method_config) and recipe.uses_data(method_config)):
            continue
        if not labelled_sources(search_sources(recipe, method_data(recipe, method_config, config, shared))):
            missing.append(name)
    if missing:
        paper = " (--paper-data too: their papers' data here carry no labels)" if config.paper_data else ""
        raise DataError(
            f"{', '.join(missing)} {'needs' if len(missing) == 1 else 'need'} labelled search images{paper}: "
            "give --data an ImageFolder tree "
            "(one sub-folder per class), or use the label-free variant"
        )
