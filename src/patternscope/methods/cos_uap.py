"""Cos-UAP (Zhang, Benz, Karjauv, Kweon 2021, "Data-free universal adversarial perturbation and
black-box attack").

Turns the perturbed output away from the clean one, label-free::

    minimise  mean over x of cos( f(x), f(x + δ) )        (logits)

Data-free when x are artificial jigsaw images (flat random colours in random cells; the default
data here). Defaults: Adam lr 5e-3, batch 32, δ from zeros, x + δ not clipped during the search.

Example (``model`` is any :class:`~patternscope.core.classifier.Classifier`, e.g.
``ps.load_model("efficientnet_lite0")``; the tests run this example on a tiny model)::

    >>> import patternscope as ps
    >>> outcome = ps.find_pattern(model, "jigsaw", method="cos-uap", budget=320, progress=False)
    >>> outcome.pattern.meta["method"], round(outcome.pattern.eps * 255)
    ('cos-uap', 10)
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..core.classifier import Classifier
from ..core.objectives import Objective, perturbed
from .recipe import Recipe, UAPConfig


@dataclass
class CosUAPConfig(UAPConfig):
    """Cos-UAP settings (see the module docstring)."""

    lr: float = 5e-3


def cosine_to_clean(model: Classifier, delta: torch.Tensor, clip: bool = False) -> Objective:
    """Cos-UAP (Zhang et al. 2021): mean over x of cos(f(x), f(x + δ)) on the logits.

    Minimising it turns the perturbed output away from the clean one; no labels, and data-free when the
    x are artificial jigsaw images.
    """

    def fn(x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            clean = model(x).float()
        moved = model(perturbed(x, delta, clip)).float()
        return F.cosine_similarity(clean, moved, dim=1).mean()

    return Objective(fn, "cosine_to_clean")


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
