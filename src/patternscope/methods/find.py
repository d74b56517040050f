"""Search a universal additive pattern with any method: :func:`find_pattern` (and the dominant-pattern
shortcut :func:`find_dominant_pattern`), on the one loop in :mod:`patternscope.core.search`."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import torch

from .._version import __version__
from ..core import distributed
from ..core.classifier import Classifier
from ..core.objectives import Objective
from ..core.params import AdditiveParam
from ..core.patterns import Pattern
from ..core.search import SearchConfig, SearchResult, run_search
from ..data.loader import Batch, check_workers, default_workers
from ..errors import PatternError
from .recipe import (
    DataSpec,
    FirstStage,
    Recipe,
    SearchOutcome,
    UAPConfig,
    make_config,
    make_stream,
    setting_of,
    stage_of,
    stage_steps,
    steps_for_budget,
)
from .registry import METHODS, get_recipe

# (step, loss, lr, delta) after every step of a search; see find_pattern's ``monitor``
StepMonitor = Callable[[int, float, float, torch.Tensor], None]


def recipe_for(method: str | None, config: UAPConfig | None) -> Recipe:
    """The recipe named ``method``; without a name, the one whose settings class ``config`` is (dominant
    patterns when neither is given)."""
    if method is not None:
        return get_recipe(method)
    if config is None:
        return get_recipe("dominant")
    matches = [r for r in METHODS.values() if type(config) is r.config]
    if len(matches) != 1:
        names = ", ".join(r.name for r in matches) or "none"
        raise PatternError(f"a {type(config).__name__} does not name one method (it fits: {names}); pass method=NAME")
    return matches[0]


def find_pattern(
    model: Classifier,
    data: DataSpec = None,
    config: UAPConfig | None = None,
    *,
    method: str | None = None,
    budget: float | None = None,
    device: str | torch.device | None = None,
    checkpoint: str | Path | None = None,
    checkpoint_every: int = 25,
    resume: bool = False,
    progress: bool = True,
    workers: int | None = None,
    epochs: float | None = None,
    monitor: StepMonitor | None = None,
    **overrides: Any,
) -> SearchOutcome:
    """Search a universal pattern for ``model`` with any method (label-free unless the method's settings
    ask for labels).

    Args:
        model: a :class:`~patternscope.core.classifier.Classifier` (inputs in [0,1]).
        data: proxy names (``jigsaw``, ``gaussian``, ``uniform``), ``photos``, folders, N x C x H x W
            tensors in [0,1], image banks, ImageSets or a BatchStream; None: the method's own default data (none at
            all for FFF and GD-UAP).
        config: the method's settings (e.g. :class:`~patternscope.methods.dominant.DominantConfig`); it
            also names the method when ``method`` is not given. Keyword ``overrides`` replace its fields
            (``eps=8/255``, ``steps=100``, ``beta=9``).
        method: a name in :data:`~patternscope.methods.registry.METHODS` (``dominant``, ``sgd-uap``,
            ``gd-uap``, ``fff``, ``cos-uap``, ``df-uap``, ``uap``); default: from ``config``, else
            ``dominant``.
        budget: passes to spend (images through forward and backward; forward-only images count a
            third); replaces ``steps``, so methods with different batch sizes get equal compute.
        device: where to search (default: the model's device; the model is moved there).
        checkpoint: a checkpoint file, written atomically every ``checkpoint_every`` steps.
        resume: continue from ``checkpoint`` when it exists (the same result as an uninterrupted run).
        progress: show a progress bar.
        workers: input-pipeline worker processes (default: :func:`~patternscope.data.loader.default_workers`,
            0 on the CPU); the pattern is the same for any number.
        epochs: walk the image data this many times (replaces ``steps``; see
            :meth:`~patternscope.data.stream.BatchStream.steps_for_epochs`).
        monitor: called after every step with ``(step, loss, lr, delta)`` (steps count from 1 over the whole
            search, a first stage included; ``delta`` is the live pattern tensor: copy what you keep), e.g. to
            log the search to TensorBoard.

    Returns:
        The pattern (``.pattern``, budget ``eps`` in [0,1] pixel units), the best window's pattern
        (``.best``) and the search record (``.result``).
    """
    if isinstance(model, str):
        raise TypeError(
            f"find_pattern takes the model first: find_pattern(model, data, method={model!r}) "
            "(the method moved to a keyword in patternscope 0.2)"
        )
    recipe = recipe_for(method, config)
    config = make_config(recipe, config, overrides)
    if budget is not None:
        if not (budget > 0 and math.isfinite(budget)):
            raise PatternError(f"budget must be a positive number of passes, got {budget}")
        config.steps = steps_for_budget(recipe, config, budget)
    check_workers(workers)
    if epochs is not None and budget is not None:
        raise PatternError("give epochs or a budget, not both")
    layer = getattr(config, "layer", None)
    model.check_layer(layer)
    dev = torch.device(device) if device is not None else model.device
    model = model.to(dev)
    stream = make_stream(recipe, config, model, data)
    stage = stage_of(recipe, config)
    if epochs is not None:
        if stream is None:
            raise PatternError(f"{recipe.name} uses no data, so it has no epochs; give steps instead")
        config.steps = stream.steps_for_epochs(epochs, config.batch_size)
        if stage is not None:  # the epochs are the method's own stage's; the first stage comes on top, in its share
            config.steps += max(1, round(config.steps * stage.share / (1 - stage.share)))
    run = _Run(dev, checkpoint, checkpoint_every, resume, progress, workers, budget, monitor)
    first = stage_steps(stage, config.steps)
    if stage is not None and first:
        return _search_in_stages(recipe, config, stage, first, model, stream, run)
    return _search(recipe, config, model, stream, run)


@dataclass(frozen=True)
class _Run:
    """How a search runs (where, checkpoints, progress), as opposed to what it searches."""

    device: torch.device
    checkpoint: str | Path | None
    checkpoint_every: int
    resume: bool
    progress: bool
    workers: int | None
    budget: float | None
    monitor: StepMonitor | None = None


def _search_in_stages(
    recipe: Recipe, config: UAPConfig, stage: FirstStage, first: int, model: Classifier, stream: Any, run: _Run
) -> SearchOutcome:
    """A search in two stages: the ``stage``'s method for the ``first`` steps (:func:`stage_steps`; e.g. the
    dominant search's PSP-UAP prior, a δ that already disrupts the features of any image), then the recipe's
    own objective from that δ for the rest. Each stage keeps its own checkpoint (``NAME.<stage>.pt`` beside
    ``NAME``); a resumed search whose second stage has started skips the first."""
    main_ckpt = Path(run.checkpoint) if run.checkpoint is not None else None
    stage_ckpt = (
        main_ckpt.with_name(f"{main_ckpt.stem}.{stage.name}{main_ckpt.suffix}") if main_ckpt is not None else None
    )
    second = replace(config, steps=config.steps - first)
    started = run.resume and main_ckpt is not None and main_ckpt.exists()
    before: SearchOutcome | None = None
    if not started:
        stage_run = replace(run, checkpoint=stage_ckpt, budget=None)
        before = _search(stage.recipe, stage.config(first), model, None, stage_run)
    start = before.pattern.delta if before is not None else None
    shifted = _shifted(run.monitor, first)  # the second stage's steps continue the first's
    outcome = _search(recipe, second, model, stream, replace(run, budget=None, monitor=shifted), start=start)
    record: dict[str, Any] = {"method": stage.recipe.name, "steps": first, "share": stage.share}
    if before is not None:
        record.update(seconds=round(before.result.seconds, 3), passes=before.result.passes)
        outcome.result.seconds += before.result.seconds
        if outcome.result.passes is not None and before.result.passes is not None:
            outcome.result.passes += before.result.passes
    for pattern in (outcome.pattern, outcome.best):
        pattern.meta.update({"steps": config.steps, f"{stage.name}_stage": record, "passes": outcome.result.passes})
        pattern.meta["settings"]["steps"] = config.steps
    return outcome


def _search(
    recipe: Recipe,
    config: UAPConfig,
    model: Classifier,
    stream: Any,
    run: _Run,
    start: torch.Tensor | None = None,
) -> SearchOutcome:
    """One search on the loop: ``recipe`` with ``config`` (steps resolved), δ from ``start`` when given."""
    dev, budget, workers = run.device, run.budget, run.workers
    checkpoint, checkpoint_every, resume, progress = run.checkpoint, run.checkpoint_every, run.resume, run.progress
    batches = _batches(recipe, config, model, stream)
    param = _param(recipe, config, model, dev, start)
    objective = recipe.objective(model, param.delta, config)
    tick = getattr(param, "tick", None)
    if tick is not None:  # parametrisations that count steps (rescaling schedules)
        inner = objective
        objective = Objective(lambda x: (tick(), inner(x))[1], inner.name)
    parallel = distributed.current().active and recipe.batch_mean
    loop = SearchConfig(
        steps=config.steps,
        batch_size=config.batch_size,
        optimizer=config.optimizer,
        lr=config.lr,
        weight_decay=config.weight_decay,
        device=str(dev),
        amp=config.amp,
        seed=config.seed,
        checkpoint_path=Path(checkpoint) if checkpoint is not None else None,
        checkpoint_every=checkpoint_every,
        resume=resume,
        window=config.window,
        patience=config.patience,
        progress=progress,
        desc=recipe.name,
        # data-parallel, each rank also runs the pattern-only forward, so measured passes exceed one
        # process's; a fixed-cost method then keeps the step count its nominal cost gives (config.steps)
        budget=None if parallel and budget is not None and recipe.step_cost(config) is not None else budget,
        data_parallel=parallel,  # under torchrun: split batches
        replicated=distributed.current().active,
        lr_schedule=config.lr_schedule,
        warmup=config.warmup,
        lr_floor=config.lr_floor,
        workers=0 if stream is None else (default_workers(dev) if workers is None else workers),
    )
    data_text = stream.describe() if stream is not None else "none (the pattern alone)"
    settings = {k: v for k, v in asdict(config).items() if k not in ("eps", "norm")}
    identity = {"method": recipe.name, "model": model.spec, "eps": config.eps, "norm": config.norm, "data": data_text}
    identity["settings"] = {k: v for k, v in settings.items() if k not in ("steps", "patience", "keep")}
    on_step = None
    if run.monitor is not None:
        watch = run.monitor

        def on_step(step: int, loss: float) -> None:  # the step just done, counted from 1
            watch(step, loss, loop.lr_at(step - 1), param.delta)

    result = run_search(param, objective, batches, loop, identity=identity, on_step=on_step, meter=model.passes.cost)
    meta = _meta(recipe, config, model, stream, result, budget, settings, data_text)
    last = Pattern(param.delta.detach().cpu(), config.eps, config.norm, {**meta, "kept": "last"})
    best = Pattern(
        result.best_tensors["delta"], config.eps, config.norm, {**meta, "kept": "best", "best_step": result.best_step}
    )
    return SearchOutcome(pattern=best if config.keep == "best" else last, result=result, best=best)


def _shifted(monitor: StepMonitor | None, offset: int) -> StepMonitor | None:
    if monitor is None:
        return None
    inner = monitor
    return lambda step, loss, lr, delta: inner(step + offset, loss, lr, delta)


def _batches(recipe: Recipe, config: UAPConfig, model: Classifier, stream: Any) -> Callable[[int, int], Batch]:
    """The search's ``batches(step, size)``: the method's own inputs, nothing (an objective that ignores the
    batches), or the stream's images (with their labels for a labelled method)."""
    if stream is None and recipe.own_batches is not None:
        return recipe.own_batches(config, model.input_size)
    if stream is None:
        empty = torch.empty(0)
        return lambda _step, _size: empty
    if recipe.labelled(config):
        return stream.host_batch
    return stream.host_images


def _param(
    recipe: Recipe, config: UAPConfig, model: Classifier, dev: torch.device, start: torch.Tensor | None
) -> AdditiveParam:
    """δ in its ball: the method's own parametrisation or a plain one started as ``config.init``; from ``start``
    when given."""
    if recipe.param is not None:
        param = recipe.param(model.input_size, config, dev)
    else:
        param = AdditiveParam(model.input_size, config.eps, config.norm, device=dev, init=config.init, seed=config.seed)
    if start is not None:
        with torch.no_grad():
            param.delta.copy_(start.to(param.delta.device, param.delta.dtype))
    return param


def _meta(
    recipe: Recipe,
    config: UAPConfig,
    model: Classifier,
    stream: Any,
    result: SearchResult,
    budget: float | None,
    settings: dict[str, Any],
    data_text: str,
) -> dict[str, Any]:
    """The found pattern's metadata: method, model, search, data and settings."""
    return {
        "method": recipe.name,
        "title": recipe.title,
        "model": model.spec,
        "weights": model.weights,
        "steps": result.steps_done,
        "seed": config.seed,
        "data": data_text,
        "setting": setting_of(recipe, config, stream),
        "label_free": not recipe.labelled(config),
        "settings": settings,
        "clip_during_search": config.clip_during_search,
        "budget": budget,
        "passes": result.passes,
        "patternscope_version": __version__,
    }
