"""SGD-UAP (Shafahi, Najibi, Xu, Dickerson, Davis, Goldstein 2020, "Universal adversarial training").

Maximises the clamped cross-entropy of f(x + δ), minibatch by minibatch, over ||δ||∞ <= eps::

    minimise  -mean over x of min( CE(f(clip(x + δ)), y), β )

with y the labels (``labels=True``, data-dependent) or the clean predictions argmax f(x) (default,
label-free). Defaults: β = 12 (the authors' PyTorch code), signed steps of eps/10 (1/255 at eps 10/255;
the reference code takes a constant signed step of 0.8·eps per batch, which flips δ wholesale every
step), δ from zeros,
batch 32, x + δ clipped to [0,1] during the search as in the reference code.

Example (``model`` is any :class:`~patternscope.core.classifier.Classifier`, e.g.
``ps.load_model("efficientnet_lite0")``; the tests run this example on a tiny model)::

    >>> import patternscope as ps
    >>> outcome = ps.find_pattern(model, "photos", method="sgd-uap", budget=320, progress=False)
    >>> outcome.pattern.meta["method"], round(outcome.pattern.eps * 255)
    ('sgd-uap', 10)
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F

from ..core.classifier import Classifier
from ..core.objectives import Objective, perturbed
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


def clamped_cross_entropy(model: Classifier, delta: torch.Tensor, beta: float, clip: bool = True) -> Objective:
    """SGD-UAP (Shafahi et al. 2020): -mean over x of min(CE(f(x + δ), y), β).

    The batch is ``(x, y)``; where y < 0 (unlabelled, or the label-free variant) the target is the clean
    prediction argmax f(x). Capping each image's loss at ``β`` stops a few already-fooled images from
    dominating the gradient.
    """

    def fn(batch: tuple[torch.Tensor, torch.Tensor] | torch.Tensor) -> torch.Tensor:
        x, y = batch if isinstance(batch, tuple) else (batch, None)
        if y is None or (y < 0).any():
            with torch.no_grad():
                clean = model(x).argmax(1)
            y = clean if y is None else torch.where(y < 0, clean, y)
        ce = F.cross_entropy(model(perturbed(x, delta, clip)).float(), y, reduction="none")
        return -ce.clamp(max=beta).mean()

    return Objective(fn, f"clamped_cross_entropy[beta={beta:g}]")


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
