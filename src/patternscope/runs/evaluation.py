"""The measurement every additive-pattern run folder ends with (:func:`evaluate_into`: ``metrics.json``,
``examples.png`` and the layer analysis), its summary and its text, shared by the commands that search or
measure a pattern (``find dominant``, ``evaluate``, ``compare``, ``downstream``, ``transfer``, ``harden``)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from .._version import __version__
from ..analyses.layers import DEFAULT_IMAGES, LayerAnalysis, analyze_layers
from ..core.atomic import write_atomic, write_json
from ..core.classifier import Classifier
from ..core.metrics import Evaluation, evaluate_pattern, random_like
from ..core.patterns import Pattern
from ..data.image_set import ImageSet
from ..data.labelled import seeded_sample
from ..errors import DataError
from ..report import figures

EVALUATION_FILES = ("metrics.json", "examples.png", "layers.json", "layers.png")
ALLOW_OVER_BUDGET_HELP = "measure a pattern larger than the budget its file declares (every output says so)"


def write_history(folder: Path, loss: Sequence[float], **extra: Any) -> None:
    """A search's loss at every step: ``history.json`` (``{"loss": [...], **extra}``) and the same losses as
    ``history.csv`` (``step,loss``; step 1 is the first), for spreadsheets and plotting tools; both atomic."""
    write_json(folder / "history.json", {"loss": list(loss), **extra})
    text = "step,loss\n" + "".join(f"{i},{float(v)!r}\n" for i, v in enumerate(loss, start=1))
    write_atomic(folder / "history.csv", lambda tmp: tmp.write_text(text, encoding="utf-8"))


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
