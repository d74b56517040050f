"""``patternscope evaluate``: measure a saved pattern on a model and images (the measurement itself, which
every additive-pattern run folder ends with, is :func:`~patternscope.runs.evaluation.evaluate_into`)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ..core.metrics import Evaluation, evaluate_pattern
from ..core.models import DEFAULT_MODEL, load_model
from ..core.patterns import Pattern
from ..core.run_id import RUN_ID_KEY
from ..data.photos import BUNDLED_NAMES
from ..data.sources import open_images
from ..errors import PatternError, RunDirError
from ..report import dominant as dominant_report
from .command import Command, indented_json
from .evaluation import (
    ALLOW_OVER_BUDGET_HELP,
    RunSummary,
    budget_line,
    evaluate_into,
    format_evaluation,
    pattern_budget,
)
from .folders import start_run
from .lock import lock_run_dir
from .options import (
    EVAL_VIEWS,
    MODEL_SPEC_HELP,
    ModelOptions,
    PipelineOptions,
    option,
    parse_input_size,
    parse_model_kwargs,
    use_fast_decode,
)


@dataclass
class PatternInput:
    """``--pattern``: the saved pattern a command measures (first on its command line)."""

    pattern: str = option("", help="a run folder or a pattern.safetensors file", metavar="RUN", required=True)


@dataclass
class EvaluateOptions(PipelineOptions, ModelOptions, PatternInput):
    """Every option of ``patternscope evaluate``; the model defaults to the one the pattern was made for."""

    model: str | None = option(  # type: ignore[assignment]
        None, help=MODEL_SPEC_HELP + "the model the pattern was made for)", metavar="SPEC"
    )
    data: str = option(
        "photos-eval",
        help=f"evaluation images: a folder, an ImageFolder tree, an image file or {BUNDLED_NAMES[1]}",
        metavar="SOURCE",
        required=True,
    )
    eval_views: int = option(1, help="crops per image (default {default})", choices=EVAL_VIEWS)
    batch_size: int = option(64, help="evaluation batch size (default {default})")
    seed: int = option(0, help="seed of the random-noise baselines (default {default})")
    out: str | None = option(None, help="also write metrics.json and examples.png here", metavar="DIR")
    overwrite: bool = option(False, help="replace metrics already in --out")
    allow_over_budget: bool = option(False, help=ALLOW_OVER_BUDGET_HELP)


@dataclass
class Measured:
    """What ``patternscope evaluate`` prints: the pattern measured and the result of :func:`evaluate_run`."""

    pattern: Pattern
    result: RunSummary | Evaluation


def evaluate_run(
    opts: EvaluateOptions, *, progress: bool = True, log: Callable[[str], None] = print
) -> RunSummary | Evaluation:
    """Measure a saved pattern on a model (default: the model it was made for) and images.

    With ``opts.out``, writes ``metrics.json`` and ``examples.png`` there (holding the folder's lock) and returns
    a :class:`RunSummary`; otherwise returns the :class:`~patternscope.core.metrics.Evaluation`. A pattern over
    its declared budget is refused unless ``opts.allow_over_budget``.
    """
    return _measure(opts, progress=progress, log=log).result


def _measure(opts: EvaluateOptions, *, progress: bool = True, log: Callable[[str], None] = print) -> Measured:
    """:func:`evaluate_run`, with the pattern it measured."""
    pattern = Pattern.load(opts.pattern, allow_over_budget=opts.allow_over_budget)
    if opts.eval_views not in EVAL_VIEWS:
        raise PatternError(f"--eval-views must be 1, 2, 5 or 10, got {opts.eval_views}")
    if opts.batch_size < 1:
        raise PatternError(f"--batch-size must be at least 1, got {opts.batch_size}")
    spec = opts.model or pattern.meta.get("model") or DEFAULT_MODEL
    if opts.out is not None:
        out_path = Path(opts.out)
        if out_path.exists() and not out_path.is_dir():
            raise RunDirError(f"output path {str(out_path)!r} is a file; give a folder for --out")
        if out_path.is_dir():
            lock_run_dir(out_path)
        if (
            out_path.resolve() != Path(opts.pattern).resolve()
            and (out_path / "metrics.json").exists()
            and not opts.overwrite
        ):
            raise RunDirError(f"{str(out_path)!r} already has metrics.json; pass --overwrite or another --out")
        try:
            out_path.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise RunDirError(f"cannot write to output folder {str(out_path)!r}: {exc.strerror or exc}") from None
        lock_run_dir(out_path)
        # measured in its own run folder, the pattern's metrics belong to its run; elsewhere they are a new run
        own = _pattern_folder(opts.pattern).resolve() == out_path.resolve()
        start_run(out_path, keep=own, run_id=pattern.meta.get(RUN_ID_KEY) if own else None)
    model = load_model(
        spec,
        opts.weights,
        device=opts.device,
        trust_pickle=opts.trust_pickle,
        allow_download=opts.allow_download,
        model_kwargs=parse_model_kwargs(opts.model_kwargs),
        input_size=parse_input_size(opts.input_size),
    )
    pattern.check_fits(model.input_size)
    images = open_images(opts.data)
    use_fast_decode([images], opts.fast_decode)
    if opts.out is None:
        ev = evaluate_pattern(
            model,
            pattern,
            images,
            views=opts.eval_views,
            batch_size=opts.batch_size,
            seed=opts.seed,
            workers=opts.workers,
            progress=progress,
        )
        return Measured(pattern, ev)
    summary = evaluate_into(
        Path(opts.out),
        model,
        pattern,
        images,
        opts.eval_views,
        opts.batch_size,
        opts.seed,
        None,
        workers=opts.workers,
        progress=progress,
    )
    return Measured(pattern, summary)


def _pattern_folder(path: str | Path) -> Path:
    """The folder of the pattern at ``path`` (a run folder, or a pattern file in one)."""
    p = Path(path)
    return p if p.is_dir() else p.parent


def format_measured(measured: Measured) -> str:
    """``evaluate``'s text: the evaluation, with a line when the pattern is over its declared budget."""
    line = budget_line(measured.pattern)
    return format_evaluation(_evaluation(measured.result)) + (f"\n{line}" if line else "")


def _evaluation(result: RunSummary | Evaluation) -> Evaluation:
    return result.evaluation if isinstance(result, RunSummary) else result


COMMAND = Command(
    name="evaluate",
    summary="measure a saved pattern on a model and images",
    description="Measure a saved pattern: fooling ratio, dominance, agreement, accuracy, random-noise baselines.",
    options=EvaluateOptions,
    run=_measure,
    text=format_measured,
    json=indented_json(lambda m: {**_evaluation(m.result).to_dict(), "pattern": pattern_budget(m.pattern)}),
    report=dominant_report.build,
    result_file="metrics.json",
)
