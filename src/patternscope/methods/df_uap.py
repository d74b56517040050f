"""DF-UAP (Zhang, Benz, Imtiaz, Kweon 2020, "Understanding adversarial examples from the mutual
influence of images and perturbations").

Label-free: push the logits of f(x + δ) away from the clean prediction c = argmax f(x), by a margin
that stops counting once it reaches κ::

    minimise  mean over x of max( z_c - max_{i != c} z_i , -κ ),   z = f(x + δ)

on proxy images (the paper used COCO or Places365 for ImageNet models; here the bundled photos by
default). Defaults from the authors' code: κ = 10, Adam lr 5e-3, batch 32, δ from zeros, x + δ not
clipped during the search.

Example::

    outcome = find_pattern("df-uap", model, "photos", budget=3000)
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..core.classifier import Classifier
from ..core.objectives import Objective, margin_from_clean
from ..errors import PatternError
from .recipe import Recipe, UAPConfig


@dataclass
class DFUAPConfig(UAPConfig):
    """DF-UAP settings; ``kappa``: the margin (logit units) beyond which an image stops counting."""

    lr: float = 5e-3
    kappa: float = 10.0

    def validate(self) -> DFUAPConfig:
        super().validate()
        if self.kappa < 0:
            raise PatternError(f"kappa must be >= 0, got {self.kappa}")
        return self


def objective(model: Classifier, delta: torch.Tensor, config: DFUAPConfig) -> Objective:
    return margin_from_clean(model, delta, config.kappa, clip=config.clip_during_search)


RECIPE = Recipe(
    name="df-uap",
    title="DF-UAP (Zhang et al. 2020)",
    config=DFUAPConfig,
    objective=objective,
    default_data=("photos",),
    step_cost=lambda c: c.batch_size * 4 / 3,
    batch_mean=True,
)
