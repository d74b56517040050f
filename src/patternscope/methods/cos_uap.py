"""Cos-UAP (Zhang, Benz, Karjauv, Kweon 2021, "Data-free universal adversarial perturbation and
black-box attack").

Turns the perturbed output away from the clean one, label-free::

    minimise  mean over x of cos( f(x), f(x + δ) )        (logits)

Data-free when x are artificial jigsaw images (flat random colours in random cells; the default
data here). Defaults: Adam lr 5e-3, batch 32, δ from zeros, x + δ not clipped during the search.

Example::

    outcome = find_pattern("cos-uap", model, "jigsaw", budget=3000)
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..core.classifier import Classifier
from ..core.objectives import Objective, cosine_to_clean
from .recipe import Recipe, UAPConfig


@dataclass
class CosUAPConfig(UAPConfig):
    """Cos-UAP settings (see the module docstring)."""

    lr: float = 5e-3


def objective(model: Classifier, delta: torch.Tensor, config: CosUAPConfig) -> Objective:
    return cosine_to_clean(model, delta, clip=config.clip_during_search)


RECIPE = Recipe(
    name="cos-uap",
    title="Cos-UAP (Zhang et al. 2021)",
    config=CosUAPConfig,
    objective=objective,
    default_data=("jigsaw",),
    step_cost=lambda c: c.batch_size * 4 / 3,  # x + δ forward and backward, x forward only
    batch_mean=True,
)
