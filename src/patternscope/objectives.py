"""Loss functions for pattern search, one small function each, composable with ``+``, ``-`` and ``*``.

An :class:`Objective` maps a batch of images ``x`` (N x C x H x W in [0,1]) to a scalar loss to
*minimise*. It closes over the model and the pattern being searched, so recipes compose them freely::

    loss = dominant_cosine(model, delta) + 0.1 * other_objective(...)
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from .models import Classifier


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


def _pattern_and_perturbed_features(
    model: Classifier, delta: torch.Tensor, x: torch.Tensor, layer: str | None, clip: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    """g(δ) (1 x D) and g(x + δ) (N x D) in float32, from one forward pass of the batch [δ, x + δ]."""
    perturbed = x + delta
    if clip:
        perturbed = perturbed.clamp(0, 1)
    feats = model.features(torch.cat([delta.unsqueeze(0), perturbed]), layer).flatten(1).float()
    return feats[:1], feats[1:]


def dominant_cosine(model: Classifier, delta: torch.Tensor, layer: str | None = None, clip: bool = False) -> Objective:
    """Ye et al. 2021, "pursuing insensitivity in feature space": mean over x of 1 - cos(g(δ), g(x + δ)).

    g is the model up to ``layer`` (``None``/``"logits"`` for the output). g(δ) is δ alone on a black
    image; gradients flow through both terms (δ and x + δ run in one forward pass; the model is in eval
    mode, so the batch entries do not interact). ``clip``: clip x + δ to [0,1] (the authors did not).
    """

    def fn(x: torch.Tensor) -> torch.Tensor:
        own, perturbed = _pattern_and_perturbed_features(model, delta, x, layer, clip)
        return (1 - F.cosine_similarity(own, perturbed, dim=1)).mean()

    return Objective(fn, f"dominant_cosine[{layer or 'logits'}]")


def dominant_kl(model: Classifier, delta: torch.Tensor, layer: str | None = None, clip: bool = False) -> Objective:
    """The KL variant of the dominant objective: KL(softmax g(δ) || softmax g(x + δ)), averaged over x.

    Log-softmax on the perturbed side; gradients flow through both terms.
    """

    def fn(x: torch.Tensor) -> torch.Tensor:
        own, perturbed = _pattern_and_perturbed_features(model, delta, x, layer, clip)
        target = F.log_softmax(own, dim=1)
        log_probs = F.log_softmax(perturbed, dim=1)
        return F.kl_div(log_probs, target.expand_as(log_probs), reduction="batchmean", log_target=True)

    return Objective(fn, f"dominant_kl[{layer or 'logits'}]")


def logit_sum(model: Classifier, delta: torch.Tensor) -> Objective:
    """A plain forward-and-backward objective (sum of logits on x + δ), for overhead measurements."""

    def fn(x: torch.Tensor) -> torch.Tensor:
        return model(x + delta).float().sum() / x.shape[0]

    return Objective(fn, "logit_sum")
