"""The example method of the design page's walkthrough ("how to add a method"): one file holding its
settings, its loss and its recipe. In the package it would be ``methods/confidence_drop.py`` plus one
line in ``methods/registry.py``; here a test registers it with ``register_method``.

Confidence drop: lower, label-free, the softmax probability of each image's clean prediction::

    minimise  mean over x of  p_c(x + δ),   c = argmax f(x)
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from patternscope.core.classifier import Classifier
from patternscope.core.objectives import Objective, perturbed
from patternscope.methods.recipe import Recipe, UAPConfig


@dataclass
class ConfidenceDropConfig(UAPConfig):
    """Confidence-drop settings: :class:`UAPConfig`'s, with Adam at lr 5e-3."""

    lr: float = 5e-3


def confidence_drop(model: Classifier, delta: torch.Tensor, clip: bool = False) -> Objective:
    """Mean over x of the softmax probability of the clean prediction on x + δ."""

    def fn(x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            clean = model(x).argmax(1)
        probs = model(perturbed(x, delta, clip)).float().softmax(1)
        return probs.gather(1, clean[:, None]).mean()

    return Objective(fn, "confidence_drop")


RECIPE = Recipe(
    name="confidence-drop",
    title="Confidence drop (walkthrough example)",
    config=ConfidenceDropConfig,
    objective=lambda model, delta, config: confidence_drop(model, delta, clip=config.clip_during_search),
    default_data=("jigsaw",),
    step_cost=lambda c: c.batch_size * 4 / 3,  # x + δ forward and backward, x forward only
    batch_mean=True,
)
