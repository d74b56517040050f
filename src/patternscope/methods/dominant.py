"""Dominant patterns (Ye, Qin, Chen, Huang, 2021): a universal δ whose features decide f(x + δ).

Label-free objective, minimised over ||δ||∞ <= eps (pixel space [0,1])::

    mean over x of  1 - cos( g(δ), g(x + δ) )        (or the KL variant)

g is the network up to ``layer`` (default: the logits). g(δ) is δ alone, and gradients flow through
both terms, so the pattern's own class moves with it: there is no fixed target.

Defaults, as in the authors' code: δ starts at zero; Adam, lr 1e-2, weight decay 1e-5, constant lr;
projection before every forward; batch 32; x + δ is *not* clipped to [0,1] during the search
(``clip_during_search=True`` clips it); labels are never used. Evaluation always clips.

Example::

    import patternscope as ps
    model = ps.load_model("efficientnet_lite0")
    outcome = ps.find_pattern(model, ["photos", "jigsaw"], ps.DominantConfig(steps=150))
    outcome.pattern.save("runs/demo")
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..core.classifier import Classifier
from ..core.objectives import Objective, dominant_cosine, dominant_kl
from ..errors import PatternError
from .recipe import Recipe, UAPConfig

DEFAULT_STEPS = 300  # about 4.5 minutes on 2 CPU cores for EfficientNet-Lite0 at batch 32 (see README)


@dataclass
class DominantConfig(UAPConfig):
    """Settings of a dominant-pattern search (the authors' defaults unless noted).

    Besides :class:`~patternscope.methods.recipe.UAPConfig`'s fields (eps 10/255 L∞, batch 32, Adam lr
    1e-2, δ from zeros, no clipping during the search):

    Args:
        weight_decay: Adam weight decay, 1e-5 (a tiny pull of δ towards zero).
        layer: feature layer for g: ``logits`` or a layer name (``classifier:in`` for the head's input).
        loss: ``cos`` (1 - cosine similarity) or ``kl``.
    """

    steps: int = DEFAULT_STEPS
    weight_decay: float = 1e-5
    layer: str = "logits"
    loss: str = "cos"

    def validate(self) -> DominantConfig:
        super().validate()
        if self.loss not in ("cos", "kl"):
            raise PatternError(f"loss must be cos or kl, got {self.loss!r}")
        return self


def dominant_objective(model: Classifier, delta: torch.Tensor, config: DominantConfig) -> Objective:
    make = dominant_cosine if config.loss == "cos" else dominant_kl
    layer = None if config.layer in ("", "logits") else config.layer
    return make(model, delta, layer=layer, clip=config.clip_during_search)


RECIPE = Recipe(
    name="dominant",
    title="Dominant patterns (Ye et al. 2021)",
    config=DominantConfig,
    objective=dominant_objective,
    default_data=("photos", "jigsaw"),
    step_cost=lambda c: c.batch_size + 1,  # the batch, and δ alone
    batch_mean=True,
)
