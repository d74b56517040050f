"""SGD-UAP (Shafahi, Najibi, Xu, Dickerson, Davis, Goldstein 2020, "Universal adversarial training").

Maximises the clamped cross-entropy of f(x + δ), minibatch by minibatch, over ||δ||∞ <= eps::

    minimise  -mean over x of min( CE(f(clip(x + δ)), y), β )

with y the labels (``labels=True``, data-dependent) or the clean predictions argmax f(x) (default,
label-free). Defaults: β = 12 (the authors' PyTorch code), signed steps of eps/10 (1/255 at eps 10/255;
the reference code takes a constant signed step of 0.8·eps per batch, which flips δ wholesale every
step), δ from zeros,
batch 32, x + δ clipped to [0,1] during the search as in the reference code.

Example::

    outcome = find_pattern("sgd-uap", model, "photos", budget=3000)
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch

from ..core.classifier import Classifier
from ..core.objectives import Objective, clamped_cross_entropy
from ..errors import PatternError
from .recipe import Recipe, UAPConfig


@dataclass
class SGDUAPConfig(UAPConfig):
    """SGD-UAP settings (see the module docstring). ``beta``: the per-image loss cap; ``labels``: use
    the images' labels (needs an ImageFolder tree) instead of the clean predictions."""

    optimizer: str = "sign"
    lr_eps: float | None = 0.1
    clip_during_search: bool = True
    beta: float = 12.0
    labels: bool = False

    def validate(self) -> SGDUAPConfig:
        super().validate()
        if self.beta <= 0:
            raise PatternError(f"beta must be positive, got {self.beta}")
        return self


@dataclass
class LabelledSGDUAPConfig(SGDUAPConfig):
    """SGD-UAP on the images' labels (method ``sgd-uap-labelled``; needs labelled search images)."""

    labels: bool = True


def objective(model: Classifier, delta: torch.Tensor, config: SGDUAPConfig) -> Objective:
    return clamped_cross_entropy(model, delta, config.beta, clip=config.clip_during_search)


RECIPE = Recipe(
    name="sgd-uap",
    title="SGD-UAP (Shafahi et al. 2020)",
    config=SGDUAPConfig,
    objective=objective,
    default_data=("photos",),
    step_cost=lambda c: c.batch_size * (1 if c.labels else 4 / 3),  # + clean forward when label-free
    labelled=lambda c: c.labels,
    batch_mean=True,
)
LABELLED_RECIPE = replace(
    RECIPE, name="sgd-uap-labelled", title="SGD-UAP on labels (Shafahi et al. 2020)", config=LabelledSGDUAPConfig
)
