"""``patternscope evaluate``: measure a saved pattern on a model and images; and the measurement every
additive-pattern run folder ends with (:func:`evaluate_into`: ``metrics.json`` and ``examples.png``)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from .._version import __version__
from ..analyses.layers import DEFAULT_IMAGES, LayerAnalysis, analyze_layers
from ..core.atomic import write_json
from ..core.classifier import Classifier
from ..core.metrics import Evaluation, evaluate_pattern, random_like
from ..core.models import DEFAULT_MODEL, load_model
from ..core.patterns import Pattern
from ..core.run_id import RUN_ID_KEY
from ..data.image_set import ImageSet
from ..data.labelled import seeded_sample
from ..data.photos import BUNDLED_NAMES
from ..data.sources import open_images
from ..errors import DataError, PatternError, RunDirError
from ..report import dominant as dominant_report
from ..report import figures
from .command import Command, indented_json
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

EVALUATION_FILES = ("metrics.json", "examples.png", "layers.json", "layers.png")
ALLOW_OVER_BUDGET_HELP = "measure a pattern larger than the budget its file declares (every output says so)"


def pattern_budget(pattern: Pattern) -> dict[str, Any]:
    """The declared budget beside the measured norms (pixel units) and whether the pattern is over it, for
    every output that measures a saved pattern."""
    return {
        "eps": pattern.eps,
        "norm": pattern.norm,
        "measured_linf": pattern.measured_linf,
        "measured_l2": pattern.measured_l2,
        "over_budget": pattern.over_budget,
    }


def budget_line(pattern: Pattern) -> str | None:
    """The line every text output adds for a pattern over its declared budget (None within it)."""
    if not pattern.over_budget:
        return None
    return f"OVER BUDGET: the pattern has {pattern.budget_text()}; random baselines are drawn at the measured norm"


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
            **pattern_budget(pattern),
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
    layers_into(out, model, pattern, evaluation, seed)
    return RunSummary(out=out, pattern=pattern, evaluation=ev, search=search or {})


def sampled_images(
    images: ImageSet, input_size: tuple[int, ...], n: int, seed: int = 0
) -> tuple[torch.Tensor, dict[str, Any]]:
    """The centre crops (N x C x H x W in [0,1]) of a seeded sample of at most ``n`` images of ``images``
    (:func:`~patternscope.data.seeded_sample`: class-stratified when the set has labels, never its first
    images), those that decode, and how the sample was drawn (``seed``, ``n`` crops, ``of`` images,
    ``stratified``)."""
    labels = images.labels() if images.has_labels else None
    crops: list[torch.Tensor] = []
    for i in seeded_sample(len(images), n, seed, labels).tolist():
        try:
            crop = images.views(i, input_size, 1)[0]
        except DataError:
            continue
        crops.append(crop.float() / 255.0 if crop.dtype == torch.uint8 else crop)
    stacked = torch.stack(crops) if crops else torch.empty(0, *input_size)
    return stacked, {"seed": seed, "n": len(crops), "of": len(images), "stratified": labels is not None}


def layers_into(
    out: Path, model: Classifier, pattern: Pattern, evaluation: ImageSet, seed: int = 0
) -> LayerAnalysis | None:
    """The layer analysis of ``pattern`` beside random ±ε noise of its norm, on a seeded sample of at most
    :data:`~patternscope.analyses.layers.DEFAULT_IMAGES` evaluation images (:func:`sampled_images`):
    ``layers.json`` (with the sample's record) and ``layers.png`` in ``out`` (nothing when no image decodes)."""
    images, sample = sampled_images(evaluation, tuple(model.input_size), DEFAULT_IMAGES, seed)
    if images.shape[0] == 0:
        return None
    name = str(pattern.meta.get("method") or "pattern")
    analysis = analyze_layers(model, {name: pattern, "random ±ε": random_like(pattern, "sign")}, images)
    write_json(out / "layers.json", {**analysis.to_dict(), "sample": sample})
    figures.layer_curves(
        out / "layers.png",
        analysis.blocks,
        [asdict(c) for c in analysis.curves],
        f"where the features of x+δ follow δ ({analysis.n_images} images)",
    )
    return analysis


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
    seen = ev.perceptibility
    if "psnr_db" in seen:
        lines.append(
            f"perceptibility                 PSNR {seen['psnr_db']:.1f} dB, SSIM {seen['ssim']:.3f}, "
            f"L2 {seen['l2']:.2f}, at the budget {seen.get('saturated_share', float('nan')):.2f}"
        )
    if ev.accuracy:
        acc = ev.accuracy
        lines.append(
            f"top-1 accuracy clean/perturbed {acc['clean']['top1']:.3f} / {acc['perturbed']['top1']:.3f}  "
            f"(n={acc['n_labelled']}; attack success on correct {acc['attack_success_on_correct']:.3f})"
        )
        success = acc.get("attack_success") or {}
        if success:
            lines.append(
                "attack success top-1/3/5       "
                + " / ".join(f"{v:.3f}" for v in success.values())
                + f"  (of the {acc['n_correct']} correct at top-1: label left the perturbed top-k)"
            )
    return "\n".join(lines)


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
