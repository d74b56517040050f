"""How much a class-wise pattern depends on its canvas: the pattern of one class found from each of its
``n`` most confidently classified images, their predictive power, and how far they agree on where the
pattern lies.

Agreement of two patterns' top-k masks: their IoU (1: the same pixels) and the distance between their
centroids in pixels. The summary gives the spread of the success rates (min, max, standard deviation),
the mean pairwise IoU and centroid distance, and the same IoU for random masks of the same size (the
chance level), so a reader can tell a stable location from a canvas-driven one.
"""

from __future__ import annotations

import itertools
from dataclasses import asdict, dataclass, field
from typing import Any

import torch

from ..core.classifier import Classifier
from ..core.patterns import ClasswisePattern
from ..core.predict import class_probabilities
from ..data.bank import Images, take
from ..data.labelled import seeded_sample
from ..errors import DataError
from .classwise import ClasswiseConfig, find_classwise_pattern, other_classes, predictive_power


def top_canvases(model: Classifier, images: Images, labels: torch.Tensor, target: int, n: int) -> torch.Tensor:
    """Indices of the ``n`` images labelled ``target`` that the model gives the highest ``target`` probability
    (fewer when the class has fewer images), most confident first."""
    own = torch.nonzero(labels == target).flatten()
    if own.numel() == 0:
        raise DataError(f"no images of class {target} to take canvases from")
    probs = class_probabilities(model, images[own])[:, target]
    order = torch.sort(probs, descending=True, stable=True).indices[:n]
    return own[order]


def mask_iou(a: torch.Tensor, b: torch.Tensor) -> float:
    """IoU of two {0,1} masks (1 for two empty masks)."""
    a, b = a.bool(), b.bool()
    union = int((a | b).sum())
    return int((a & b).sum()) / union if union else 1.0


def mask_centroid(mask: torch.Tensor) -> tuple[float, float]:
    """(row, column) centre of a 1 x H x W mask's pixels."""
    rows, cols = torch.nonzero(mask.reshape(mask.shape[-2:]) > 0.5, as_tuple=True)
    if rows.numel() == 0:
        return (float("nan"), float("nan"))
    return float(rows.float().mean()), float(cols.float().mean())


def chance_iou(k: int, pixels: int) -> float:
    """Expected IoU of two random k-pixel masks among ``pixels``: overlap k²/pixels over 2k - k²/pixels."""
    if k == 0 or pixels == 0:
        return 0.0
    overlap = k * k / pixels
    return overlap / (2 * k - overlap)


@dataclass
class CanvasSensitivity:
    """Patterns of one class from several canvases (JSON-ready through :meth:`to_dict`)."""

    target: int
    canvases: list[int]
    success: list[float]
    pairwise_iou: list[float]
    centroid_distance: list[float]
    chance_iou: float
    patterns: list[ClasswisePattern] = field(default_factory=list, repr=False)
    canvas_images: list[torch.Tensor] = field(default_factory=list, repr=False)

    def summary(self) -> dict[str, Any]:
        s = torch.tensor(self.success, dtype=torch.float64)
        iou = torch.tensor(self.pairwise_iou, dtype=torch.float64)
        dist = torch.tensor(self.centroid_distance, dtype=torch.float64)
        return {
            "canvases": len(self.canvases),
            "success_min": float(s.min()),
            "success_max": float(s.max()),
            "success_std": float(s.std()) if len(s) > 1 else 0.0,
            "mean_pairwise_iou": float(iou.mean()) if len(iou) else 1.0,
            "mean_centroid_distance_px": float(dist.nanmean()) if len(dist) else 0.0,
            "chance_iou": self.chance_iou,
        }

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out.pop("patterns")
        out.pop("canvas_images")
        return {**out, "summary": self.summary()}


def canvas_sensitivity(
    model: Classifier,
    images: Images,
    labels: torch.Tensor,
    *,
    target: int,
    held_images: Images,
    held_labels: torch.Tensor,
    config: ClasswiseConfig | None = None,
    n: int = 5,
    max_search_images: int = 1800,
    progress: bool = False,
) -> CanvasSensitivity:
    """The class-wise pattern of ``target`` from each of its ``n`` most confident search images (``images``
    with their ``labels``; the same search images of other classes and settings for each), measured on the
    held-out images (``held_images`` with ``held_labels``)."""
    if n < 1:
        raise DataError(f"the number of canvases must be >= 1, got {n}")
    config = (config or ClasswiseConfig()).validate()
    chosen = top_canvases(model, images, labels, target, n)
    ox, _ = other_classes(images, labels, target=target)
    ox = ox[seeded_sample(len(ox), max_search_images, config.seed + target)]
    patterns, success, canvases = [], [], []
    for index in chosen.tolist():
        canvas = take(images, slice(index, index + 1))[0]
        found = find_classwise_pattern(model, ox, target=target, canvas=canvas, config=config, progress=progress)
        patterns.append(found.pattern)
        canvases.append(canvas)
        success.append(predictive_power(model, found.pattern, held_images, held_labels).success)
    ious, dists = [], []
    for a, b in itertools.combinations(patterns, 2):
        ious.append(mask_iou(a.mask, b.mask))
        (ra, ca), (rb, cb) = mask_centroid(a.mask), mask_centroid(b.mask)
        dists.append(((ra - rb) ** 2 + (ca - cb) ** 2) ** 0.5)
    h, w = patterns[0].mask.shape[-2:]
    return CanvasSensitivity(
        target, chosen.tolist(), success, ious, dists, chance_iou(patterns[0].k, h * w), patterns, canvases
    )
