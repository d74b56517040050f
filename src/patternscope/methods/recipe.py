"""What a method is: a recipe (settings + objective + data) run by the one search loop.

Every universal additive pattern method (dominant patterns and the UAP baselines) is a
:class:`Recipe`: its settings dataclass (a :class:`UAPConfig` with the paper's defaults), a function
that builds its objective for a model and a δ, the data it uses by default, and its nominal cost per
step. :func:`run_recipe` does the rest (batches, δ and its L∞/L2 ball, the loop, metadata), so a new
method is one small file.

The unit of compute is the *pass*: one image through forward and backward (a forward-only image
counts a third of a pass; :class:`~patternscope.core.classifier.PassCounter`). ``budget`` gives every method the
same compute, whatever its batch size or number of forwards per step.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import torch

from ..core.classifier import Classifier
from ..core.configs import option
from ..core.objectives import Objective
from ..core.params import AdditiveParam
from ..core.patterns import Pattern, parse_eps
from ..core.search import SearchResult
from ..data.bank import ImageBank
from ..data.image_set import ImageSet
from ..data.sources import training_sources
from ..data.stream import BatchStream, check_crop_scale
from ..errors import PatternError

# search data: a stream, one source or a list of sources (proxy names, photos, folders, tensors, image banks,
# ImageSets), or None for the method's own default data
DataSource = str | Path | ImageSet | torch.Tensor | ImageBank
DataSpec = BatchStream | DataSource | Sequence[DataSource] | None
SETTINGS = ("data-free", "label-free", "data-dependent")


@dataclass
class UAPConfig:
    """Settings shared by every universal additive pattern (pixel space [0,1]).

    Args:
        eps: budget in [0,1] pixel units (default L∞ 10/255 = 0.0392).
        norm: ``linf`` or ``l2``.
        steps: search steps (a cap when a pass budget is given).
        batch_size: images per step.
        optimizer: ``adam``, ``sign`` (signed steps of size ``lr``) or ``sgd``.
        lr: learning rate (Adam/SGD) or signed step size (pixel units); recipes whose papers give the
            step relative to the budget set ``lr_eps`` instead.
        lr_eps: when set, ``lr = lr_eps * eps`` (so the step scales with the budget).
        weight_decay: Adam/SGD weight decay.
        init: δ at the start: ``zeros`` or ``uniform`` (U(-eps, eps)).
        clip_during_search: clip x + δ to [0,1] inside the search (evaluation always clips).
        keep: return the ``last`` δ or the ``best`` (lowest mean loss over a window of steps).
        window: steps per window for ``best`` and early stopping.
        patience: stop after this many windows without improvement (None: never).
        seed: fixes the batches and so the whole search.
        crop_scale: zoom range for crops of image sources, e.g. (0.1, 1.0); None: fixed-scale crops.
        amp: mixed precision (``False``, ``bf16``, ``fp16``).
        lr_schedule: ``constant`` or ``cosine`` (decay from ``lr`` to ``lr * lr_floor`` over the run,
            after ``warmup`` steps of linear warm-up).
        warmup: warm-up steps of the cosine schedule.
        lr_floor: the cosine schedule's last rate as a share of ``lr`` (0-1).
    """

    eps: float = 10 / 255
    norm: str = option("linf", help="budget norm (default {default})", choices=("linf", "l2"))
    steps: int = 300
    batch_size: int = option(32, help="images per step (default {default})")
    optimizer: str = "adam"
    lr: float = option(1e-2, help="Adam learning rate (default {default:g})")
    lr_eps: float | None = None
    weight_decay: float = 0.0
    init: str = "zeros"
    clip_during_search: bool = option(
        False, help="clip x+δ to [0,1] during the search (the paper does not; evaluation always clips)"
    )
    keep: str = option("last", help="save the last δ (default) or the best window's δ", choices=("last", "best"))
    window: int = 10
    patience: int | None = option(
        None, help=f"stop early after this many {window}-step windows without improvement (default: never)"
    )
    seed: int = option(0, help="seed for batches and augmentation (default {default})")
    crop_scale: tuple[float, float] | None = None
    amp: bool | str = False
    lr_schedule: str = "constant"
    warmup: int = 0
    lr_floor: float = 0.0

    def validate(self) -> UAPConfig:
        """Check every setting (raising :class:`PatternError` naming it); returns ``self``."""
        self.eps = parse_eps(self.eps, self.norm)
        if self.lr_eps is not None:
            if self.lr_eps <= 0:
                raise PatternError(f"lr_eps must be positive, got {self.lr_eps}")
            self.lr = self.lr_eps * self.eps
        check_crop_scale(self.crop_scale)
        if self.keep not in ("last", "best"):
            raise PatternError(f"keep must be last or best, got {self.keep!r}")
        if self.optimizer not in ("adam", "sign", "sgd"):
            raise PatternError(f"optimizer must be adam, sign or sgd, got {self.optimizer!r}")
        if self.lr_schedule not in ("constant", "cosine"):
            raise PatternError(f"lr_schedule must be constant or cosine, got {self.lr_schedule!r}")
        if int(self.warmup) < 0 or not 0 <= self.lr_floor <= 1:
            raise PatternError(f"warmup must be >= 0 and lr_floor in [0, 1], got {self.warmup}, {self.lr_floor}")
        if self.init not in ("zeros", "uniform"):
            raise PatternError(f"init must be zeros or uniform, got {self.init!r}")
        for name in ("steps", "batch_size", "window"):
            if int(getattr(self, name)) < 1:
                raise PatternError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.lr <= 0:
            raise PatternError(f"lr must be positive, got {self.lr}")
        if not self.weight_decay >= 0:  # Adam's and SGD's own ValueError would be a traceback
            raise PatternError(f"weight_decay must be >= 0, got {self.weight_decay}")
        return self


@dataclass(frozen=True)
class FirstStage:
    """A stage a method runs before its own objective: another method's search for a share of the steps,
    whose δ the method's own search then continues from (the dominant search's optional PSP-UAP prior).

    Attributes:
        name: names its checkpoint (``NAME.<name>.pt`` beside the search's) and its record in the
            pattern's metadata (``<name>_stage``).
        recipe: the method the stage runs.
        share: the share of the steps it runs, in (0, 1).
        config: ``(steps) -> settings`` of that method for a stage of ``steps`` steps (validated).
    """

    name: str
    recipe: Recipe
    share: float
    config: Callable[[int], UAPConfig]


@dataclass(frozen=True)
class Recipe:
    """A method: how to build its objective, and what it needs.

    Attributes:
        name: the CLI name (``sgd-uap``).
        title: method and paper, for tables.
        config: its settings dataclass (the paper's defaults).
        objective: ``(model, delta, config) -> Objective``; the objective gets each batch as given by
            the stream: images, or ``(images, labels)`` when ``labelled(config)``.
        default_data: data used when the caller gives none (``()``: no data at all).
        step_cost: ``(config) -> passes per step`` (None when it varies, as in DeepFool).
        uses_data: ``(config) -> bool``: False when the objective ignores the batches.
        labelled: ``(config) -> bool``: batches carry labels.
        param: ``(input_size, config, device) -> AdditiveParam`` when the method needs its own δ
            (e.g. GD-UAP's rescaling); default: a plain δ in the ball, started as ``config.init``.
        check: ``(config) -> None``, raising :class:`PatternError` for settings this method cannot take.
        batch_mean: the objective is a mean over the batch, so under torchrun the batch can be split over
            the ranks and the gradients summed (data-parallel) with the single-process result; other
            methods run whole on every rank (the same search everywhere; rank 0 writes).
        own_batches: ``(config, input_size) -> batches(step, size)`` for a method that uses no data but
            makes its own inputs each step (e.g. PSP-UAP's prior images); a pure function of the step, so
            resume stays exact.
        paper_data: the data closest to what the method's paper searched on, for ``compare --paper-data``
            (None: ``default_data``).
        first_stage: ``(config) -> FirstStage | None``: a stage run before the method's own objective
            (:class:`FirstStage`); the loop runs it for any method that declares one.
    """

    name: str
    title: str
    config: type[UAPConfig]
    objective: Callable[[Classifier, torch.Tensor, Any], Objective]
    default_data: tuple[str, ...]
    step_cost: Callable[[Any], float | None]
    uses_data: Callable[[Any], bool] = lambda _c: True
    labelled: Callable[[Any], bool] = lambda _c: False
    param: Callable[[tuple[int, int, int], Any, torch.device], AdditiveParam] | None = None
    check: Callable[[Any], None] | None = None
    batch_mean: bool = False
    own_batches: Callable[[Any, Sequence[int]], Callable[[int, int], Any]] | None = None
    paper_data: tuple[str, ...] | None = None
    first_stage: Callable[[Any], FirstStage | None] | None = None

    @property
    def papers_data(self) -> tuple[str, ...]:
        """What ``compare --paper-data`` gives this method: :attr:`paper_data`, else :attr:`default_data`."""
        return self.paper_data if self.paper_data is not None else self.default_data


@dataclass
class SearchOutcome:
    """A found pattern and the search that made it (``best``: the best window's δ)."""

    pattern: Pattern
    result: SearchResult
    best: Pattern


def make_config(recipe: Recipe, config: UAPConfig | None, overrides: dict[str, Any]) -> UAPConfig:
    """The recipe's validated settings: ``config`` (or its defaults) with ``overrides`` applied."""
    base = config if config is not None else recipe.config()
    if not isinstance(base, recipe.config):
        raise PatternError(f"{recipe.name} takes a {recipe.config.__name__}, got a {type(base).__name__}")
    unknown = sorted(set(overrides) - {f for f in asdict(base)})
    if unknown:
        raise PatternError(
            f"{recipe.name} has no setting {', '.join(unknown)}; its settings: {', '.join(asdict(base))}"
        )
    config = replace(base, **overrides).validate()
    if recipe.check is not None:
        recipe.check(config)
    return config


def labelled_sources(sources: Sequence[ImageSet | str]) -> bool:
    """Whether every source is an image set with a label for each image (a proxy name has none)."""
    return bool(sources) and all(isinstance(s, ImageSet) and s.has_labels for s in sources)


def search_sources(recipe: Recipe, data: DataSpec) -> list[ImageSet | str]:
    """The opened sources ``data`` (or the recipe's default data when None) stands for, without a model (to
    check them before any work; :func:`make_stream` builds the batches from the same sources)."""
    if isinstance(data, BatchStream):
        return list(data.sources)
    if data is None:
        data = list(recipe.default_data)
    specs = [data] if isinstance(data, (str, Path, ImageSet, torch.Tensor, ImageBank)) else list(data)
    return training_sources(specs)


def setting_of(recipe: Recipe, config: UAPConfig, stream: BatchStream | None) -> str:
    """``data-dependent`` (uses labels), ``data-free`` (no images, or generated proxies only) or
    ``label-free`` (real images, no labels)."""
    if recipe.labelled(config):
        return "data-dependent"
    if stream is None or all(isinstance(s, str) for s in stream.sources):
        return "data-free"
    return "label-free"


def stage_of(recipe: Recipe, config: UAPConfig) -> FirstStage | None:
    """The first stage ``recipe`` runs with ``config`` (None: its own objective only)."""
    return recipe.first_stage(config) if recipe.first_stage is not None else None


def stage_steps(stage: FirstStage | None, steps: int) -> int:
    """Steps of a first stage out of a search's ``steps``: its share rounded down (so a budget's steps stay
    within the budget), at least one and leaving at least one for the method's own objective; 0 without one."""
    if stage is None or not stage.share or steps <= 1:
        return 0
    return min(steps - 1, max(1, math.floor(stage.share * steps)))


def steps_for_budget(recipe: Recipe, config: UAPConfig, budget: float) -> int:
    """Steps that fit ``budget`` passes (a cap for methods of variable cost)."""
    cost = recipe.step_cost(config)
    if cost is None:
        return max(1, int(budget))  # every step costs at least one pass
    if budget < cost:
        raise PatternError(
            f"budget {budget:g} passes is less than one step of {recipe.name} ({cost:g} passes); raise --budget"
        )
    return int(budget // cost)


def make_stream(recipe: Recipe, config: UAPConfig, model: Classifier, data: DataSpec) -> BatchStream | None:
    """The batch stream for ``data`` (the recipe's default data when None); None if it uses no data."""
    if not recipe.uses_data(config):
        return None
    if isinstance(data, BatchStream):
        return data
    if data is None:
        data = list(recipe.default_data)
    specs = [data] if isinstance(data, (str, Path, ImageSet, torch.Tensor, ImageBank)) else list(data)
    if not specs:
        raise PatternError(f"{recipe.name} needs data; give images or a proxy such as jigsaw")
    stream = BatchStream(training_sources(specs), model.input_size, seed=config.seed, crop_scale=config.crop_scale)
    if recipe.labelled(config) and not labelled_sources(stream.sources):
        raise PatternError(
            f"{recipe.name} with labels needs labelled images (an ImageFolder tree) for every --data source; "
            "or use its label-free variant"
        )
    return stream
