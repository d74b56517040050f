"""``patternscope find dominant``: options -> model and data -> search -> pattern -> metrics -> a run folder.

A run folder holds ``config.json`` (the resolved options), ``checkpoint.pt`` (while and after the
search; ``--resume`` continues from it), ``pattern.safetensors`` / ``pattern.json`` / ``pattern.png``,
``metrics.json``, ``history.json`` (and ``history.csv``), ``examples.png`` and ``loss.png``. Every file is
written atomically.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from ..core import distributed
from ..core.configs import config_from, from_config
from ..core.models import resolve_device
from ..core.patterns import parse_eps
from ..data.stream import BatchStream
from ..errors import PatternError, RunDirError
from ..methods import DominantConfig, PaperDominantConfig, find_pattern
from ..report import dominant as dominant_report
from ..report import figures
from .command import Command, indented_json
from .evaluation import RunSummary, evaluate_into, format_evaluation, write_history
from .folders import RUN_FILES, prepare_run_dir, write_run_config
from .options import (
    DATA_HELP,
    EVAL_VIEWS,
    ModelOptions,
    OutputFolder,
    PipelineOptions,
    load_options_model,
    option,
    parse_crop_scale,
    parse_model_kwargs,
    recipe_values,
    use_fast_decode,
)
from .search_data import DEFAULT_DATA, describe_source, resolve_data
from .tensorboard_log import TENSORBOARD_HELP, TensorBoardLog, check_tensorboard

RECIPES = ("default", "paper")
_DOM = DominantConfig()


@dataclass
class FindOptions(PipelineOptions, ModelOptions, OutputFolder):
    """Every option of ``patternscope find dominant`` (also the run's ``config.json``); the method's
    settings default to :class:`~patternscope.methods.dominant.DominantConfig`'s (``--recipe paper``:
    :class:`~patternscope.methods.dominant.PaperDominantConfig`'s)."""

    out: str = option("runs/dominant", help="run folder to write (created if missing)", metavar="DIR", required=True)
    data: list[str] = option(
        factory=lambda: list(DEFAULT_DATA),
        help=f"search data, repeatable to mix sources: {DATA_HELP} (default: photos and jigsaw)",
        metavar="SOURCE",
        repeat=True,
        cli_default=None,
    )
    eval_data: str | None = option(
        None,
        help="held-out evaluation images (default: photos-eval, or a split of your --data folder)",
        metavar="SOURCE",
    )
    holdout: float = option(
        0.2, help="share of the --data folder held out for evaluation when --eval-data is not given ({default})"
    )
    crop_scale: str | None = option(
        None,
        help="zoom augmentation for image sources: each crop covers MIN..MAX of the image area (e.g. 0.1,1); "
        "default: the paper's fixed-scale crops",
        metavar="MIN,MAX",
    )
    eval_views: int = option(
        1,
        help="evaluation crops per image: 1 centre, 2 +mirror, 5 centre+corners, 10 both (default {default})",
        choices=EVAL_VIEWS,
    )
    eps: str = option("10/255", help="L-inf budget in [0,1] pixel units (default {default})")
    norm: str = from_config(DominantConfig, "norm")
    steps: int = from_config(DominantConfig, "steps")
    epochs: float | None = option(
        None,
        help="walk the image data this many times instead of --steps (the authors ran 10 epochs of COCO)",
        metavar="E",
    )
    batch_size: int = from_config(DominantConfig, "batch_size")
    lr: float = from_config(DominantConfig, "lr")
    weight_decay: float = from_config(DominantConfig, "weight_decay")
    layer: str = from_config(DominantConfig, "layer")
    loss: str = from_config(DominantConfig, "loss")
    recipe: str = option(
        "default",
        help="default: the paper's loss plus a pull towards the pattern's own class (measured best); "
        "paper: the paper's recipe exactly",
        choices=RECIPES,
    )
    dominance: float | None = option(
        None,
        help=f"weight of the pull of f(x+δ) towards argmax f(δ), the pattern's own class (default: "
        f"{_DOM.dominance:g}; 0 with --recipe paper)",
        metavar="W",
    )
    prior_share: float = from_config(DominantConfig, "prior_share")
    clip_during_search: bool = from_config(DominantConfig, "clip_during_search")
    keep: str = from_config(DominantConfig, "keep")
    patience: int | None = from_config(DominantConfig, "patience")
    seed: int = from_config(DominantConfig, "seed")
    amp: str = option("off", help="mixed precision (default {default})", choices=("off", "bf16", "fp16"))
    channels_last: bool = option(False, help="NHWC memory layout (faster convolutions on GPUs)")
    checkpoint_every: int = option(25, help="steps between checkpoints (default {default})")
    tensorboard: bool = option(False, help=TENSORBOARD_HELP)
    resume: bool = option(False, help="continue the run in --out from its checkpoint")
    overwrite: bool = option(False, help="replace a run already in --out")
    eval_batch_size: int = 64

    def dominant_config(self) -> DominantConfig:
        """The validated method settings of ``--recipe`` (budget parsed, crop scale and amp converted)."""
        if self.recipe not in RECIPES:
            raise PatternError(f"--recipe must be one of {', '.join(RECIPES)}, got {self.recipe!r}")
        kind = PaperDominantConfig if self.recipe == "paper" else DominantConfig
        config = config_from(
            kind,
            self,
            **{
                **recipe_values(self, asdict(kind())),  # options not given (None) take the recipe's value
                "eps": parse_eps(self.eps, self.norm),
                "crop_scale": parse_crop_scale(self.crop_scale),
                "amp": False if self.amp == "off" else self.amp,
            },
        )
        return config.validate()


def find_dominant_run(
    opts: FindOptions, *, progress: bool = True, log: Callable[[str], None] = print
) -> RunSummary | None:
    """Run ``patternscope find dominant`` end to end and write the run folder ``opts.out``.

    Under torchrun the search is data-parallel (see :mod:`patternscope.core.distributed`); rank 0 writes the
    run folder and evaluates, the other ranks return None. A multi-node run resumes from the checkpoint
    in ``--out``, which every node must see (a shared file system).
    """
    ctx, device_name = distributed.init(opts.device)
    if ctx.active:
        opts = replace(opts, device=device_name)
        log = log if ctx.is_main else (lambda _msg: None)
        progress = progress and ctx.is_main
    config = opts.dominant_config()  # validate budget and settings before anything slow
    if opts.eval_views not in (1, 2, 5, 10):
        raise PatternError(f"--eval-views must be 1, 2, 5 or 10, got {opts.eval_views}")
    if ctx.active and opts.batch_size < ctx.world_size:
        raise PatternError(
            f"--batch-size {opts.batch_size} cannot be split over {ctx.world_size} processes; "
            f"use at least {ctx.world_size}"
        )
    model_kwargs = parse_model_kwargs(opts.model_kwargs)
    if opts.tensorboard:
        check_tensorboard()

    def check_folder() -> None:
        prepare_run_dir(opts.out, resume=opts.resume, overwrite=opts.overwrite, files=RUN_FILES)
        if opts.resume and (Path(opts.out) / "config.json").exists():
            _check_same_options(Path(opts.out) / "config.json", opts)

    distributed.on_main(check_folder, ctx)
    out = Path(opts.out)
    device = resolve_device(opts.device)
    model = load_options_model(opts, device, model_kwargs)
    model.check_layer(opts.layer)
    train, evaluation = resolve_data(opts.data, opts.eval_data, opts.holdout, opts.seed)
    use_fast_decode([*train, evaluation], opts.fast_decode)
    if ctx.is_main:
        write_run_config(out, COMMAND.name, opts)
    parallel = f"; data-parallel over {ctx.world_size} processes ({ctx.backend})" if ctx.active else ""
    log(
        f"model {model.spec} on {device}; search data: {' + '.join(describe_source(s) for s in train)}; "
        f"evaluation: {evaluation.description}{parallel}"
    )
    stream = BatchStream(train, model.input_size, seed=opts.seed, crop_scale=config.crop_scale)
    board = TensorBoardLog(out, every=opts.checkpoint_every) if opts.tensorboard and ctx.is_main else None
    outcome = distributed.run_everywhere(
        lambda: find_pattern(
            model,
            stream,
            config,
            checkpoint=out / "checkpoint.pt",
            checkpoint_every=opts.checkpoint_every,
            resume=opts.resume,
            progress=progress,
            workers=opts.workers,
            epochs=opts.epochs,
            monitor=board.monitor("dominant", config.eps) if board is not None else None,
        ),
        ctx,
    )
    if not ctx.is_main:
        return None
    pattern = outcome.pattern
    pattern.meta.update({"eval_data": evaluation.description, "device": str(device), "processes": ctx.world_size})
    pattern.save(out, extra_tensors={"delta_best": outcome.best.delta})
    write_history(out, outcome.result.history, best_step=outcome.result.best_step)
    figures.loss_curve(out / "loss.png", outcome.result.history, f"dominant pattern search loss ({config.loss})")
    summary = evaluate_into(
        out,
        model,
        pattern,
        evaluation,
        opts.eval_views,
        opts.eval_batch_size,
        opts.seed,
        outcome.result.summary(),
        workers=opts.workers,
        progress=progress,
    )
    if board is not None:
        board.pattern("dominant", pattern.delta, pattern.eps, outcome.result.steps_done)
        board.metrics("dominant", summary.headline(), outcome.result.steps_done)
        board.close()
    return summary


def _check_same_options(path: Path, opts: FindOptions) -> None:
    try:
        saved = json.loads(path.read_text())["options"]
    except (OSError, ValueError, KeyError):
        return
    ignore = {"resume", "overwrite", "steps", "epochs", "device", "eval_views", "eval_batch_size", "out"}
    ignore |= {"checkpoint_every", "workers"}  # how often and how fast, not what
    ignore |= {"channels_last", "tensorboard"}  # layout and logging only: the same search
    now = asdict(opts)
    diff = {k: (saved.get(k), v) for k, v in now.items() if k not in ignore and saved.get(k) != v}
    if diff:
        detail = "; ".join(f"{k}: {a!r} then, {b!r} now" for k, (a, b) in diff.items())
        raise RunDirError(f"--resume with other options than the run in {str(path.parent)!r} ({detail})")


COMMAND = Command(
    name="find dominant",
    summary="dominant pattern (Ye et al. 2021): a universal, label-free perturbation",
    description="Search a dominant pattern: a small universal δ such that f(x+δ) is decided by δ. "
    "Writes pattern.safetensors/.json/.png, metrics.json, examples.png into --out.",
    options=FindOptions,
    run=find_dominant_run,
    text=lambda summary: f"{format_evaluation(summary.evaluation)}\nrun folder: {summary.out}",
    json=indented_json(lambda summary: summary.headline()),
    report=dominant_report.build,
    result_file="metrics.json",
    files=RUN_FILES,
    torchrun="data-parallel",
)
