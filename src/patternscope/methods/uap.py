"""UAP (Moosavi-Dezfooli, Fawzi, Fawzi, Frossard 2017, "Universal adversarial perturbations").

For each image that δ does not fool yet, DeepFool finds the smallest r that moves x + δ across the
nearest decision boundary; δ <- project(δ + r). Here a step takes a batch of images and adds the r of
all of them at once (``batch_size=1`` is the original one-image-at-a-time order), on the one loop
with plain SGD at lr 1 (see :func:`~patternscope.core.objectives.deepfool_update`).

Label-free in this form: "fooled" means the prediction changed (the original uses the clean
prediction too). Defaults from the authors' code: 10 candidate classes, at most 10 DeepFool
iterations, overshoot 0.02, δ from zeros, x + δ clipped. The original stops when the training
fooling rate reaches 1 - 0.2; here the budget (or ``patience``) decides. Its cost per step varies
with how many images are still unfooled and how many DeepFool iterations they take.

ART's ``UniversalPerturbation`` is the reference numpy implementation (one image at a time); see
:mod:`patternscope.adapters.art` to run it side by side.

Example::

    outcome = find_pattern("uap", model, "photos", budget=3000)
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..core.classifier import Classifier
from ..core.objectives import Objective, deepfool_update
from ..errors import PatternError
from .recipe import Recipe, UAPConfig


@dataclass
class UAPDeepFoolConfig(UAPConfig):
    """UAP settings: ``candidates`` (classes DeepFool considers), ``max_iter`` (DeepFool
    linearisations per image), ``overshoot``. The update rule is fixed (SGD, lr 1)."""

    batch_size: int = 8
    optimizer: str = "sgd"
    lr: float = 1.0
    clip_during_search: bool = True
    candidates: int = 10
    max_iter: int = 10
    overshoot: float = 0.02

    def validate(self) -> UAPDeepFoolConfig:
        super().validate()
        if self.optimizer != "sgd" or self.lr != 1.0 or self.weight_decay != 0:
            raise PatternError(
                "uap's update rule is fixed (adds the DeepFool steps); leave optimizer, lr and weight decay"
            )
        if self.candidates < 2 or self.max_iter < 1 or self.overshoot < 0:
            raise PatternError("uap needs candidates >= 2, max_iter >= 1 and overshoot >= 0")
        return self


def objective(model: Classifier, delta: torch.Tensor, config: UAPDeepFoolConfig) -> Objective:
    return deepfool_update(model, delta, config.norm, config.candidates, config.max_iter, config.overshoot)


RECIPE = Recipe(
    name="uap",
    title="UAP / DeepFool (Moosavi-Dezfooli et al. 2017)",
    config=UAPDeepFoolConfig,
    objective=objective,
    default_data=("photos",),
    step_cost=lambda _c: None,
)
