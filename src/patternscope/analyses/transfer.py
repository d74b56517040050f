"""Transfer: how often do patterns found on one model fool other models?

:func:`transfer_matrix` measures every pattern on every model, on the same images: a fooling-ratio matrix
(pattern x model) with a random ±eps control per model, and beside it how far each pattern *dominates*
there: the agreement (share of images whose prediction becomes the pattern's own class on that model)
and the dominance top-1 (share of perturbed predictions in their most frequent class). Models are
measured one at a time, so a loader (a zero-argument function returning the model) keeps only one of
them in memory.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, TypeVar

import torch

from ..core.classifier import Classifier
from ..core.metrics import (
    agreement,
    dominance_ratio,
    fooling_ratio,
    pattern_class,
    random_like,
    stream_predictions,
    wilson_interval,
)
from ..core.patterns import Pattern
from ..data.image_set import ImageSet
from ..data.sources import open_images
from ..errors import PatternError

T = TypeVar("T")
ModelSource = Classifier | Callable[[], Classifier]


@dataclass
class Transfer:
    """Fooling ratios of patterns (rows) on models (columns), with random ±eps controls per model, and the
    agreement (prediction = the pattern's own class on that model) and dominance top-1 of each entry."""

    patterns: list[str]
    models: list[str]
    fooling: list[list[float]]
    random_sign: list[float]
    n_images: int
    eval_data: str
    agreement: list[list[float]] = field(default_factory=list)
    dominance_top1: list[list[float]] = field(default_factory=list)
    views: int = 1

    def intervals(self, per_photo: bool = False) -> list[list[list[float]]]:
        """The Wilson 95% interval [low, high] of every fooling ratio (n = :attr:`n_images` crops; with
        ``per_photo``, n = the photos, each counted once: the bound for correlated views)."""
        n = max(1, self.n_images // self.views) if per_photo else self.n_images
        return [[wilson_interval(v, n) for v in row] for row in self.fooling]

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["fooling_ci"] = self.intervals()
        out["random_sign_ci"] = [wilson_interval(v, self.n_images) for v in self.random_sign]
        if self.views > 1:
            out["fooling_ci_per_photo"] = self.intervals(per_photo=True)
        return out


def fit_pattern(pattern: Pattern, input_size: Sequence[int]) -> Pattern:
    """``pattern`` resized (bilinear) to a model's input size ``(C, H, W)`` and projected back onto its budget;
    the pattern itself when it fits already. Channels must match."""
    if tuple(pattern.shape) == tuple(input_size):
        return pattern
    if pattern.shape[0] != input_size[0]:
        raise PatternError(
            f"pattern has {pattern.shape[0]} channels but the model takes {input_size[0]}; it cannot transfer"
        )
    delta = torch.nn.functional.interpolate(
        pattern.delta[None], size=tuple(input_size[1:]), mode="bilinear", align_corners=False
    )[0]
    return Pattern(delta, pattern.eps, pattern.norm, dict(pattern.meta)).project_()


Named = Mapping[str, T] | Sequence[T | tuple[str, T]]


def _named(items: Named[T], name: Callable[[T], str]) -> list[tuple[str, T]]:
    """``items`` as (name, item) pairs: a mapping's keys, given pairs, or ``name(item)``."""
    if isinstance(items, Mapping):
        return list(items.items())
    return [item if isinstance(item, tuple) else (name(item), item) for item in items]


def transfer_matrix(
    models: Named[ModelSource],
    patterns: Named[Pattern],
    data: ImageSet | torch.Tensor | str,
    *,
    views: int = 1,
    batch_size: int = 64,
    seed: int = 0,
    workers: int | None = None,
    log: Callable[[str], None] = print,
) -> Transfer:
    """Measure each pattern on each model, on the images ``data`` (an ImageSet, an N x C x H x W tensor in
    [0,1], or a data spec such as ``photos-eval``).

    Args:
        models: classifiers, zero-argument loaders of classifiers (models are then loaded one at a time),
            (name, model) pairs, or a mapping from names to either; unnamed models are named by their spec.
        patterns: patterns, (name, pattern) pairs, or a mapping from names to patterns; unnamed patterns are
            named ``method @ model`` from their metadata.
        views: evaluation crops per image (1, 2, 5 or 10).
        batch_size: evaluation batch size.
        seed: seed of the random ±eps control.
        workers: input-pipeline worker processes (None: the device's default). The images are streamed
            once per model and every pattern is measured on each batch, so memory does not grow with
            the number of images.
        log: where a resized pattern and each model's row are reported.

    A pattern whose size differs from a model's input is resized (bilinear; values stay within its
    budget) and that is logged.
    """
    named_models = _named(models, lambda m: m.spec if isinstance(m, Classifier) else repr(m))
    named_patterns = _named(patterns, lambda p: f"{p.meta.get('method', 'pattern')} @ {p.meta.get('model', '?')}")
    if not named_models or not named_patterns:
        raise PatternError("transfer needs at least one pattern and one model")
    images = open_images(data)
    fooling = [[float("nan")] * len(named_models) for _ in named_patterns]
    agree = [[float("nan")] * len(named_models) for _ in named_patterns]
    dominance = [[float("nan")] * len(named_models) for _ in named_patterns]
    random_sign: list[float] = []
    n_images = 0
    for j, (entry, source) in enumerate(named_models):
        model = source if isinstance(source, Classifier) else source()
        deltas: dict[str, torch.Tensor | None] = {"clean": None}
        own: list[int] = []
        for i, (name, pattern) in enumerate(named_patterns):
            fitted = fit_pattern(pattern, model.input_size)
            if fitted is not pattern:
                log(f"{name}: resized from {tuple(pattern.shape)} to {model.input_size} for {entry}")
            deltas[f"pattern {i}"] = fitted.delta
            own.append(pattern_class(model, fitted.delta))  # its own class on this model
            if i == 0:
                deltas["sign"] = random_like(fitted, "sign", seed)
        got = stream_predictions(model, images, deltas, batch_size=batch_size, views=views, workers=workers)
        clean = got.predictions("clean").top1
        for i in range(len(named_patterns)):
            perturbed = got.predictions(f"pattern {i}").top1
            fooling[i][j] = fooling_ratio(clean, perturbed)
            agree[i][j] = agreement(perturbed, own[i])
            dominance[i][j] = dominance_ratio(perturbed, 1)
        random_sign.append(fooling_ratio(clean, got.predictions("sign").top1))
        n_images = got.count
        log(f"{entry}: " + ", ".join(f"{row[j]:.3f}" for row in fooling))
    return Transfer(
        [n for n, _ in named_patterns],
        [n for n, _ in named_models],
        fooling,
        random_sign,
        n_images,
        images.description,
        agree,
        dominance,
        views,
    )


__all__ = ["Transfer", "fit_pattern", "transfer_matrix"]
