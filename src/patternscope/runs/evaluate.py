"""``patternscope evaluate``: measure a saved pattern on a model and images; and the measurement every
additive-pattern run folder ends with (:func:`evaluate_into`: ``metrics.json`` and ``examples.png``)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .._version import __version__
from ..core.atomic import write_json
from ..core.classifier import Classifier
from ..core.metrics import Evaluation, evaluate_pattern
from ..core.models import DEFAULT_MODEL, load_model
from ..core.patterns import Pattern
from ..data.image_set import ImageSet
from ..data.photos import BUNDLED_NAMES
from ..data.sources import open_images
from ..errors import PatternError, RunDirError
from ..report import dominant as dominant_report
from ..report import figures
from .command import Command, indented_json
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

EVALUATION_FILES = ("metrics.json", "examples.png")


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


@dataclass
class RunSummary:
    """What a finished run produced."""

    out: Path
    pattern: Pattern
    evaluation: Evaluation
    search: dict[str, Any]

    def headline(self) -> dict[str, Any]:
        ev = self.evaluation
        return {
            "out": str(self.out),
            "fooling_ratio": ev.fooling_ratio,
            "fooling_ratio_confident": ev.fooling_ratio_confident,
            "agreement": ev.agreement,
            "pattern_class": ev.pattern_class_name,
            "random_sign_fooling_ratio": ev.random_baselines.get("sign", {}).get("fooling_ratio"),
            "n_images": ev.n_images,
            "search_seconds": self.search.get("seconds"),
        }


def evaluate_into(
    out: Path,
    model: Classifier,
    pattern: Pattern,
    evaluation: ImageSet,
    views: int,
    batch_size: int,
    seed: int,
    search: dict[str, Any] | None,
    *,
    workers: int | None = None,
    progress: bool = False,
) -> RunSummary:
    """Measure ``pattern`` on the ``evaluation`` images (streamed, ``workers`` decoding) and write
    ``metrics.json`` (with the search record ``search``) and ``examples.png`` into ``out``."""
    ev = evaluate_pattern(
        model,
        pattern,
        evaluation,
        views=views,
        batch_size=batch_size,
        seed=seed,
        workers=workers,
        progress=progress,
    )
    metrics = {
        "patternscope_version": __version__,
        "model": model.describe(),
        "pattern": {
            "method": pattern.meta.get("method"),
            "eps": pattern.eps,
            "norm": pattern.norm,
            "kept": pattern.meta.get("kept"),
            "clip_during_search": pattern.meta.get("clip_during_search"),
            "data": pattern.meta.get("data"),
            "label_free": pattern.meta.get("label_free"),
        },
        "eval_data": {
            "description": evaluation.description,
            "images": len(evaluation),
            "views": views,
            "skipped_images": ev.skipped_images,
        },
        "evaluation": ev.to_dict(),
        "search": search,
    }
    write_json(out / "metrics.json", metrics)
    d = ev.details
    order = d["example_index"]
    figures.example_grid(
        out / "examples.png",
        d["images"],
        pattern.delta,
        d["clean_pred"][order].tolist(),
        d["clean_conf"][order].tolist(),
        d["perturbed_pred"][order].tolist(),
        d["perturbed_conf"][order].tolist(),
        model.class_names,
    )
    return RunSummary(out=out, pattern=pattern, evaluation=ev, search=search or {})


def evaluate_run(
    opts: EvaluateOptions, *, progress: bool = True, log: Callable[[str], None] = print
) -> RunSummary | Evaluation:
    """Measure a saved pattern on a model (default: the model it was made for) and images.

    With ``opts.out``, writes ``metrics.json`` and ``examples.png`` there and returns a :class:`RunSummary`;
    otherwise returns the :class:`~patternscope.core.metrics.Evaluation`.
    """
    pattern = Pattern.load(opts.pattern)
    if opts.eval_views not in EVAL_VIEWS:
        raise PatternError(f"--eval-views must be 1, 2, 5 or 10, got {opts.eval_views}")
    spec = opts.model or pattern.meta.get("model") or DEFAULT_MODEL
    if opts.out is not None:
        out_path = Path(opts.out)
        if (
            out_path.resolve() != Path(opts.pattern).resolve()
            and (out_path / "metrics.json").exists()
            and not opts.overwrite
        ):
            raise RunDirError(f"{str(out_path)!r} already has metrics.json; pass --overwrite or another --out")
        out_path.mkdir(parents=True, exist_ok=True)
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
        return evaluate_pattern(
            model,
            pattern,
            images,
            views=opts.eval_views,
            batch_size=opts.batch_size,
            seed=opts.seed,
            workers=opts.workers,
            progress=progress,
        )
    return evaluate_into(
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


def format_evaluation(ev: Evaluation) -> str:
    """A short human-readable table of an evaluation."""

    def baseline(kind: str, key: str = "fooling_ratio") -> float:
        return ev.random_baselines.get(kind, {}).get(key, float("nan"))

    dom = {k: ev.dominance[f"top{k}"] for k in (1, 3, 5)}
    lines = [
        f"images evaluated               {ev.n_images}",
        f"fooling ratio                  {ev.fooling_ratio:.3f}   "
        f"(random ±eps: {baseline('sign'):.3f}, uniform: {baseline('uniform'):.3f})",
        f"  on confident (> {ev.confidence_threshold:.2f}, n={ev.n_confident:<4}) {ev.fooling_ratio_confident:.3f}   "
        f"(random ±eps: {baseline('sign', 'fooling_ratio_confident'):.3f})",
        f"pattern's own class            {ev.pattern_class} {ev.pattern_class_name!r}",
        f"agreement f(x+δ) == f(δ)       {ev.agreement:.3f}",
        "dominance top-1/3/5 perturbed  " + " / ".join(f"{dom[k]['perturbed']:.3f}" for k in (1, 3, 5)),
        "dominance top-1/3/5 clean      " + " / ".join(f"{dom[k]['clean']:.3f}" for k in (1, 3, 5)),
    ]
    if ev.accuracy:
        acc = ev.accuracy
        lines.append(
            f"top-1 accuracy clean/perturbed {acc['clean']['top1']:.3f} / {acc['perturbed']['top1']:.3f}  "
            f"(n={acc['n_labelled']}; attack success on correct {acc['attack_success_on_correct']:.3f})"
        )
    return "\n".join(lines)


def _evaluation(result: RunSummary | Evaluation) -> Evaluation:
    return result.evaluation if isinstance(result, RunSummary) else result


COMMAND = Command(
    name="evaluate",
    summary="measure a saved pattern on a model and images",
    description="Measure a saved pattern: fooling ratio, dominance, agreement, accuracy, random-noise baselines.",
    options=EvaluateOptions,
    run=evaluate_run,
    text=lambda result: format_evaluation(_evaluation(result)),
    json=indented_json(lambda result: _evaluation(result).to_dict()),
    report=dominant_report.build,
    result_file="metrics.json",
)
