"""DF-UAP (Zhang, Benz, Imtiaz, Kweon 2020, "Understanding adversarial examples from the mutual
influence of images and perturbations").

Label-free: push the logits of f(x + δ) away from the clean prediction c = argmax f(x), by a margin
that stops counting once it reaches κ::

    minimise  mean over x of max( z_c - max_{i != c} z_i , -κ ),   z = f(x + δ)

on proxy images (the paper used COCO or Places365 for ImageNet models; here the bundled photos by
default). Defaults from the authors' code: κ = 10, Adam lr 5e-3, batch 32, δ from zeros, x + δ not
clipped during the search.

Example (``model`` is any :class:`~patternscope.core.classifier.Classifier`, e.g.
``ps.load_model("efficientnet_lite0")``; the tests run this example on a tiny model)::

    >>> import patternscope as ps
    >>> outcome = ps.find_pattern(model, "photos", method="df-uap", budget=320, progress=False)
    >>> outcome.pattern.meta["method"], round(outcome.pattern.eps * 255)
    ('df-uap', 10)
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..core.classifier import Classifier
from ..core.objectives import Objective, perturbed
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


def margin_from_clean(model: Classifier, delta: torch.Tensor, kappa: float, clip: bool = False) -> Objective:
    """DF-UAP (Zhang et al. 2020): mean over x of max(z_c - max_{i != c} z_i, -κ) on f(x + δ)'s logits z.

    c = argmax f(x) is the clean prediction (label-free). Images already pushed ``κ`` past the nearest
    other class stop contributing.
    """

    def fn(x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            clean = model(x).argmax(1)
        z = model(perturbed(x, delta, clip)).float()
        own = z.gather(1, clean[:, None]).squeeze(1)
        others = z.scatter(1, clean[:, None], float("-inf")).amax(1)
        return (own - others).clamp(min=-kappa).mean()

    return Objective(fn, f"margin_from_clean[kappa={kappa:g}]")


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
