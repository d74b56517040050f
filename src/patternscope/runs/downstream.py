"""``patternscope downstream``: the run folder around :mod:`patternscope.analyses.downstream`.

Writes ``downstream.json`` (settings, training, fooling ratios), ``downstream.png`` (the bar chart),
``downstream_model.safetensors`` (the trained downstream network's state dict) and ``own/`` (the
pattern searched on the downstream model) into ``--out``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from .._version import __version__
from ..analyses.downstream import (
    PAPER_SCHEDULE,
    DownstreamConfig,
    DownstreamResult,
    TrainReport,
    accuracy,
    build_downstream,
    measure_downstream,
    train_downstream,
)
from ..core.atomic import write_atomic, write_json
from ..core.configs import config_from, from_config
from ..core.models import DEFAULT_MODEL, load_state_dict_file, resolve_device
from ..core.patterns import Pattern
from ..core.run_id import run_metadata
from ..data.labelled import open_labelled, stratified_split
from ..errors import DataError, PatternError
from ..methods import find_pattern
from ..report import downstream as downstream_report
from ..report import figures
from .command import Command, indented_json
from .evaluation import ALLOW_OVER_BUDGET_HELP, budget_line, pattern_budget
from .folders import prepare_run_dir, write_run_config
from .options import (
    LABELLED_HELP,
    Flag,
    LabelledDataOptions,
    ModelOptions,
    OutputFolder,
    load_options_model,
    option,
    parse_model_kwargs,
    recipe_values,
)
from .tensorboard_log import TensorBoardLog, check_tensorboard

_D = DownstreamConfig()
BACKBONE = Flag(
    help=f"the backbone (same as --model; default {DEFAULT_MODEL})", name="--backbone", dest="model", metavar="SPEC"
)


@dataclass
class DownstreamOptions(LabelledDataOptions, ModelOptions, OutputFolder):
    """Every option of ``patternscope downstream``; ``model`` (``--backbone``) is the backbone, and the
    training settings default to :class:`~patternscope.analyses.downstream.DownstreamConfig`'s."""

    out: str = option("runs/downstream", help="folder to write (created if missing)", metavar="DIR", required=True)
    task_data: str = option(
        "digits",
        help=f"the downstream task's {LABELLED_HELP}",
        metavar="SOURCE",
        required=True,
        flags_before=(BACKBONE,),
    )
    pattern: str = option("", help="a run folder or pattern file found on the backbone", metavar="RUN", required=True)
    head: str = from_config(DownstreamConfig, "head")
    # None: not given, so --recipe paper may set them (an option given always wins, even at its default value)
    epochs: int | None = option(
        None, help=f"training epochs (default {_D.epochs}); --recipe paper: {PAPER_SCHEDULE['epochs']} unless given"
    )
    lr: float | None = option(
        None, help=f"Adam learning rate (default {_D.lr}); --recipe paper: {PAPER_SCHEDULE['lr']} unless given"
    )
    batch_size: int | None = option(
        None,
        help=f"images per step (default {_D.batch_size}); --recipe paper: {PAPER_SCHEDULE['batch_size']} unless given",
    )
    holdout: float = option(0.3, help="share of each task class held out (default {default})")
    own_steps: int = option(100, help="steps of the downstream model's own pattern search (0: skip)")
    finetuned: str | None = option(
        None, help="a fine-tuned downstream state dict to load instead of training", metavar="FILE"
    )
    seed: int = from_config(DownstreamConfig, "seed")
    recipe: str = option(
        "default",
        help="training schedule: default, or paper (the authors': Adam 1e-3, weight decay 1e-5, 20 epochs, "
        "lr x0.6 at epochs 4/8/12/16, batch 32, flips and crops; --epochs/--lr/--batch-size given still win)",
        choices=("default", "paper"),
    )
    overwrite: bool = option(False, help="replace a downstream run already in --out")
    tensorboard: bool = option(
        False, help="also write the downstream model's own search as TensorBoard events into OUT/tensorboard"
    )
    allow_over_budget: bool = option(False, help=ALLOW_OVER_BUDGET_HELP)


def downstream_config(opts: DownstreamOptions) -> DownstreamConfig:
    """The training settings of ``opts``: the options given, and for the rest the recipe's: the defaults of
    :class:`~patternscope.analyses.downstream.DownstreamConfig`, or with ``--recipe paper`` the authors'
    schedule (:data:`~patternscope.analyses.downstream.PAPER_SCHEDULE`) over them
    (:func:`~patternscope.runs.options.recipe_values`: a given option always wins)."""
    if opts.recipe not in ("default", "paper"):
        raise PatternError(f"--recipe must be default or paper, got {opts.recipe!r}")
    settings = {**asdict(_D), **(PAPER_SCHEDULE if opts.recipe == "paper" else {})}
    return config_from(DownstreamConfig, opts, **recipe_values(opts, settings))


@dataclass
class DownstreamSummary:
    """A finished downstream run: its folder, the fooling ratios, everything in ``downstream.json`` and the
    backbone's pattern it measured."""

    out: Path
    result: DownstreamResult
    payload: dict[str, Any]
    pattern: Pattern | None = None


def downstream_run(
    opts: DownstreamOptions, *, progress: bool = True, log: Callable[[str], None] = print
) -> DownstreamSummary:
    """Run ``patternscope downstream`` end to end (see the module docstring) and write ``opts.out``."""
    config = downstream_config(opts)
    if opts.tensorboard:
        check_tensorboard()
    if not 0 < opts.holdout < 1:
        raise PatternError(f"--holdout must be between 0 and 1, got {opts.holdout}")
    if opts.own_steps < 0:
        raise PatternError(
            f"--own-steps must be >= 0 (0 skips the downstream model's own pattern), got {opts.own_steps}"
        )
    if not opts.pattern:
        raise PatternError("--pattern is required: a run folder or pattern file found on the backbone")
    pattern = Pattern.load(opts.pattern, allow_over_budget=opts.allow_over_budget)
    if opts.finetuned is not None and not Path(opts.finetuned).is_file():
        raise DataError(f"--finetuned {opts.finetuned!r} does not exist")
    out = prepare_run_dir(
        opts.out, resume=False, overwrite=opts.overwrite, files=COMMAND.files, stale=COMMAND.stale, resumable=False
    )
    device = resolve_device(opts.device)
    backbone = load_options_model(opts, device, parse_model_kwargs(opts.model_kwargs))
    if tuple(pattern.shape) != tuple(backbone.input_size):
        raise PatternError(
            f"the pattern is {tuple(pattern.shape)} but the backbone takes {backbone.input_size}; "
            "give a pattern found on this backbone"
        )
    data = open_labelled(opts.task_data, backbone.input_size, cache_mb=opts.cache_mb)
    classes = int(data.labels.max()) + 1
    train_idx, test_idx = stratified_split(data.labels, opts.holdout, opts.seed)
    x, y = data.images[train_idx], data.labels[train_idx]
    xt, yt = data.images[test_idx], data.labels[test_idx]
    if len(x) < config.batch_size:
        raise DataError(f"--batch-size {config.batch_size} is larger than the {len(x)} training images of the task")
    log(
        f"backbone {backbone.spec} on {device}; task: {data.description}, {classes} classes, "
        f"{len(x)} train / {len(xt)} test"
    )
    downstream = build_downstream(backbone, classes, config)
    if opts.finetuned is not None:
        state = load_state_dict_file(opts.finetuned, trust_pickle=opts.trust_pickle)
        try:
            downstream.net.load_state_dict(state)
        except RuntimeError as exc:
            raise DataError(
                f"--finetuned {opts.finetuned!r} does not fit the backbone with a {classes}-class head ({exc})"
            ) from None
        train = TrainReport(accuracy(downstream, x, y), accuracy(downstream, xt, yt), 0.0)
    else:
        train = train_downstream(downstream, x, y, test_images=xt, test_labels=yt, config=config, progress=progress)
    log(f"downstream model: train accuracy {train.train_accuracy:.3f}, test accuracy {train.test_accuracy:.3f}")
    own = None
    if opts.own_steps > 0:
        board = TensorBoardLog(out) if opts.tensorboard else None
        found = find_pattern(
            downstream,
            x,
            method="dominant",
            eps=pattern.eps,
            norm=pattern.norm,
            steps=opts.own_steps,
            seed=opts.seed,
            progress=progress,
            monitor=board.monitor("own", pattern.eps) if board is not None else None,
        )
        own = found.pattern
        own.save(out / "own")
        if board is not None:
            board.close()
    result = measure_downstream(downstream, pattern, xt, yt, own=own, seed=opts.seed)
    from safetensors.torch import save_file

    write_atomic(
        out / "downstream_model.safetensors",
        lambda tmp: save_file(
            {k: v.contiguous().cpu() for k, v in downstream.net.state_dict().items()},
            str(tmp),
            metadata=run_metadata(out),
        ),
    )
    labels = ["backbone's pattern\n(unchanged)", "random ±ε", "random uniform"]
    values = [result.transferred, result.random_sign, result.random_uniform]
    if result.own is not None:
        labels.append("searched on the\ndownstream model")
        values.append(result.own)
    figures.value_bars(
        out / "downstream.png",
        labels,
        values,
        f"Fooling ratio on the downstream model ({config.head} head, {len(xt)} held-out task images)",
        "fooling ratio (share of predictions changed)",
    )
    payload = {
        "patternscope_version": __version__,
        "backbone": backbone.describe(),
        "pattern": {
            "path": str(opts.pattern),
            **{k: pattern.meta.get(k) for k in ("method", "model", "steps")},
            **pattern_budget(pattern),
        },
        "eps": pattern.eps,
        "task": {"data": data.description, "classes": classes, "train_images": len(x), "test_images": len(xt)},
        "config": asdict(config),
        "finetuned": opts.finetuned,
        "training": asdict(train),
        "result": result.to_dict(),
        "own_steps": opts.own_steps,
    }
    write_json(out / "downstream.json", payload)
    write_run_config(out, COMMAND.name, opts)
    return DownstreamSummary(out, result, payload, pattern)


def format_downstream(summary: DownstreamSummary) -> str:
    r = summary.result
    t = summary.payload["training"]
    lines = [
        f"downstream model accuracy     {r.accuracy_clean:.3f} clean, {r.accuracy_transferred:.3f} with the pattern "
        f"(train {t['train_accuracy']:.3f})",
        f"fooling ratio, backbone's pattern  {r.transferred:.3f}",
        f"fooling ratio, random ±eps         {r.random_sign:.3f}   (uniform {r.random_uniform:.3f})",
    ]
    if r.own is not None:
        lines.append(f"fooling ratio, own pattern         {r.own:.3f}   (searched on the downstream model)")
    lines.append(f"images: {r.n_images} held-out task images; folder: {summary.out}")
    line = budget_line(summary.pattern) if summary.pattern is not None else None
    if line:
        lines.append(line)
    return "\n".join(lines)


COMMAND = Command(
    name="downstream",
    summary="does a backbone's pattern fool a model fine-tuned from it on another task?",
    description="Freeze the backbone (--model), train a new head on labelled task images (or load a fine-tuned "
    "downstream model), then measure the backbone's unchanged pattern on it, next to random noise of the same "
    "budget and a pattern searched on the downstream model itself. Writes downstream.json, downstream.png, "
    "downstream_model.safetensors and own/ into --out.",
    options=DownstreamOptions,
    run=downstream_run,
    text=format_downstream,
    json=indented_json(lambda summary: summary.payload),
    report=downstream_report.build,
    result_file="downstream.json",
    files=("downstream.json", "downstream_model.safetensors", "downstream.png", "config.json"),
    stale=("own",),
)
