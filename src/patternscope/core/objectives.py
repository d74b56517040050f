"""What a loss is: :class:`Objective`, composable with ``+``, ``-`` and ``*``, and the pieces every method shares.

An :class:`Objective` maps a batch of images ``x`` (N x C x H x W in [0,1]) to a scalar loss to
*minimise*. It closes over the model and the pattern being searched, so losses compose freely::

    loss = dominant_cosine(model, delta) + 0.1 * other_objective(...)

Each universal-pattern method keeps its own loss in its module (:mod:`patternscope.methods`: e.g.
``methods.dominant.dominant_cosine``); the class-wise loss (:func:`classwise_loss`) is here, beside the
mask blend it uses.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from .classifier import Classifier
from .params import MaskCanvasParam


class Objective:
    """A named loss ``fn(x) -> scalar`` that supports ``a + b``, ``a - b``, ``k * a`` and ``-a``."""

    def __init__(self, fn: Callable[[torch.Tensor], torch.Tensor], name: str) -> None:
        self.fn = fn
        self.name = name

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return self.fn(x)

    def __add__(self, other: Objective) -> Objective:
        return Objective(lambda x: self(x) + other(x), f"({self.name} + {other.name})")

    def __sub__(self, other: Objective) -> Objective:
        return Objective(lambda x: self(x) - other(x), f"({self.name} - {other.name})")

    def __mul__(self, k: float) -> Objective:
        return Objective(lambda x: k * self(x), f"{k:g}*{self.name}")

    __rmul__ = __mul__

    def __neg__(self) -> Objective:
        return -1.0 * self

    def __repr__(self) -> str:
        return f"Objective({self.name})"


def logit_sum(model: Classifier, delta: torch.Tensor) -> Objective:
    """A plain forward-and-backward objective (sum of logits on x + δ), for overhead measurements."""

    def fn(x: torch.Tensor) -> torch.Tensor:
        return model(x + delta).float().sum() / x.shape[0]

    return Objective(fn, "logit_sum")


def perturbed(x: torch.Tensor, delta: torch.Tensor, clip: bool) -> torch.Tensor:
    """x + δ, clipped to [0,1] when ``clip``."""
    return (x + delta).clamp(0, 1) if clip else x + delta


# ---------------------------------------------------------------------------------------------------
# Mask-on-canvas objectives (class-wise patterns)


def blend(mask: torch.Tensor, canvas: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """x' = m * x_c + (1 - m) * x for a batch ``x`` (N x C x H x W), mask 1 x H x W, canvas C x H x W."""
    return mask * canvas + (1 - mask) * x


def classwise_loss(model: Classifier, param: MaskCanvasParam, target: int, alpha: float) -> Objective:
    """Class-wise patterns (Zhao et al. 2021): alpha * CE(f(blend(m, canvas, x)), t) + (1 - alpha) * sum(m) / (H W / 2).

    The mask-size term is the mask's L1 norm relative to half the pixels; ``alpha`` weighs the two.
    """
    _, h, w = param.mask.shape

    def loss(x: torch.Tensor) -> torch.Tensor:
        logits = model(blend(param.mask, param.canvas, x))
        labels = torch.full((x.shape[0],), target, dtype=torch.long, device=x.device)
        return alpha * F.cross_entropy(logits.float(), labels) + (1 - alpha) * param.mask.sum() / (h * w / 2)

    return Objective(loss, f"classwise[target={target}, alpha={alpha:g}]")
