"""Measure a pattern: fooling ratio, accuracy, dominance ratios, agreement, random-noise baselines.

All metrics are computed on clip(x + δ, 0, 1), a valid image. Definitions (Ye et al. 2021, plus ours):

- **fooling ratio**: share of images with argmax f(x + δ) != argmax f(x) (no labels needed);
- **accuracy** top-1/3/5, clean and perturbed, when labels exist; **attack success** on the images
  the model classified correctly;
- **dominance ratio** (top-k): share of all predictions that fall in the k most frequent predicted
  classes, for perturbed and clean predictions, and whether δ's own class argmax f(δ) is among them;
- **agreement** (ours): share of images with argmax f(x + δ) == argmax f(δ);
- **random baselines**: the fooling ratio of random noise of the same norm (uniform in the ball, and
  ±eps signs for L∞), reported next to every fooling ratio.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import torch

from ..data.image_set import ImageSet
from .classifier import Classifier
from .models import on_device
from .patterns import Pattern
from .predict import predict

TOPK = (1, 3, 5)


# ---------------------------------------------------------------------------------------------------
# Pure functions on predictions (easy to check by hand)


def fooling_ratio(clean_pred: torch.Tensor, perturbed_pred: torch.Tensor) -> float:
    """Share of images whose predicted class changed."""
    if clean_pred.numel() == 0:
        return float("nan")
    return float((clean_pred != perturbed_pred).float().mean())


def topk_accuracy(topk: torch.Tensor, labels: torch.Tensor, k: int) -> float:
    """Share of labelled images (label >= 0) whose label is among the first ``k`` columns of ``topk``."""
    mask = labels >= 0
    if not mask.any():
        return float("nan")
    hits = (topk[mask, :k] == labels[mask, None]).any(dim=1)
    return float(hits.float().mean())


def top_classes(pred: torch.Tensor, k: int) -> list[int]:
    """The ``k`` most frequent classes in ``pred`` (ties broken by the smaller class index)."""
    counts = Counter(pred.tolist())
    return [c for c, _ in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:k]]


def dominance_ratio(pred: torch.Tensor, k: int) -> float:
    """Share of predictions that fall in the ``k`` most frequent predicted classes."""
    if pred.numel() == 0:
        return float("nan")
    classes = torch.tensor(top_classes(pred, k), dtype=pred.dtype)
    return float(torch.isin(pred, classes).float().mean())


def agreement(perturbed_pred: torch.Tensor, pattern_class: int) -> float:
    """Share of perturbed predictions equal to the pattern's own class argmax f(δ)."""
    if perturbed_pred.numel() == 0:
        return float("nan")
    return float((perturbed_pred == pattern_class).float().mean())


# ---------------------------------------------------------------------------------------------------
# Random baselines


def random_like(pattern: Pattern, kind: str, seed: int = 0) -> torch.Tensor:
    """Random noise of the pattern's norm and budget: ``uniform`` in the ball, or ``sign`` (±eps, L∞;
    for L2 a random ±1 pattern scaled to norm eps)."""
    gen = torch.Generator().manual_seed(seed)
    shape = pattern.shape
    if kind == "uniform":
        if pattern.norm == "linf":
            return (torch.rand(shape, generator=gen) * 2 - 1) * pattern.eps
        direction = torch.randn(shape, generator=gen)
        return direction / direction.norm() * pattern.eps
    if kind == "sign":
        signs = torch.randint(0, 2, shape, generator=gen).float() * 2 - 1
        return signs * pattern.eps if pattern.norm == "linf" else signs / signs.norm() * pattern.eps
    raise ValueError(f"kind must be uniform or sign, got {kind!r}")


# ---------------------------------------------------------------------------------------------------
# The full evaluation


@dataclass
class Evaluation:
    """Every metric of one pattern on one image set (JSON-ready through :meth:`to_dict`)."""

    n_images: int
    fooling_ratio: float
    confidence_threshold: float
    n_confident: int
    fooling_ratio_confident: float
    pattern_class: int
    pattern_class_name: str
    agreement: float
    agreement_confident: float
    dominance: dict[str, dict[str, Any]]
    accuracy: dict[str, Any] | None
    random_baselines: dict[str, dict[str, float]]
    top_classes: dict[str, list[dict[str, Any]]]
    pattern_norm: float
    details: dict[str, torch.Tensor] = field(default_factory=dict, repr=False)

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out.pop("details")
        return out


def evaluate_pattern(
    model: Classifier,
    pattern: Pattern,
    images: ImageSet | torch.Tensor,
    labels: Sequence[int] | torch.Tensor | None = None,
    *,
    batch_size: int = 64,
    views: int = 1,
    confidence: float = 0.5,
    baselines: Sequence[str] = ("uniform", "sign"),
    seed: int = 0,
    device: str | torch.device | None = None,
) -> Evaluation:
    """Measure ``pattern`` on ``images`` (an ImageSet, or an N x C x H x W tensor in [0,1]).

    ``labels`` (N, -1 where unknown) add accuracy and attack success for tensors; an ImageSet brings its
    own. ``views`` takes several deterministic crops per image (ImageSet only). ``confidence`` sets the
    subset "classified with confidence > threshold" reported beside the overall fooling ratio.
    ``baselines`` are the random noises measured beside it (``uniform``, ``sign``), drawn with ``seed``.
    ``device``: where to measure (default: the model's device; the model is moved there).
    """
    model = on_device(model, device)
    pattern.check_fits(model.input_size)
    if isinstance(images, ImageSet):
        x, y = images.eval_tensors(model.input_size, views)
    else:
        x = images
        y = torch.as_tensor(labels, dtype=torch.long) if labels is not None else torch.full((x.shape[0],), -1)
    clean = predict(model, x, batch_size)
    pert = predict(model, x, batch_size, pattern.delta)
    with torch.no_grad():
        own = model(pattern.delta[None].to(model.device)).argmax(1).item()
    names = model.class_names
    confident = clean.confidence > confidence

    dominance: dict[str, dict[str, Any]] = {}
    for k in TOPK:
        dominance[f"top{k}"] = {
            "perturbed": dominance_ratio(pert.top1, k),
            "clean": dominance_ratio(clean.top1, k),
            "pattern_class_in_top": own in top_classes(pert.top1, k),
        }

    accuracy = None
    if (y >= 0).any():
        correct = clean.top1 == y
        accuracy = {
            "n_labelled": int((y >= 0).sum()),
            "clean": {f"top{k}": topk_accuracy(clean.top5, y, k) for k in TOPK},
            "perturbed": {f"top{k}": topk_accuracy(pert.top5, y, k) for k in TOPK},
            "attack_success_on_correct": fooling_ratio(clean.top1[correct], pert.top1[correct]),
            "n_correct": int(correct.sum()),
        }

    random: dict[str, dict[str, float]] = {}
    for kind in baselines:
        noise = predict(model, x, batch_size, random_like(pattern, kind, seed))
        random[kind] = {
            "fooling_ratio": fooling_ratio(clean.top1, noise.top1),
            "fooling_ratio_confident": fooling_ratio(clean.top1[confident], noise.top1[confident]),
        }

    def histogram(pred: torch.Tensor) -> list[dict[str, Any]]:
        counts = Counter(pred.tolist())
        return [
            {"class": c, "name": names[c], "count": n}
            for c, n in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:10]
        ]

    return Evaluation(
        n_images=int(x.shape[0]),
        fooling_ratio=fooling_ratio(clean.top1, pert.top1),
        confidence_threshold=confidence,
        n_confident=int(confident.sum()),
        fooling_ratio_confident=fooling_ratio(clean.top1[confident], pert.top1[confident]),
        pattern_class=int(own),
        pattern_class_name=names[own],
        agreement=agreement(pert.top1, own),
        agreement_confident=agreement(pert.top1[confident], own),
        dominance=dominance,
        accuracy=accuracy,
        random_baselines=random,
        top_classes={"clean": histogram(clean.top1), "perturbed": histogram(pert.top1)},
        pattern_norm=pattern.size(),
        details={
            "images": x,
            "labels": y,
            "clean_pred": clean.top1,
            "clean_conf": clean.confidence,
            "perturbed_pred": pert.top1,
            "perturbed_conf": pert.confidence,
        },
    )
