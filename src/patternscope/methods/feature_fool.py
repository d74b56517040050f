"""FFF (Mopuri, Garg, Babu 2017, "Fast Feature Fool") and GD-UAP (Mopuri, Ganeshan, Babu 2018,
"Generalizable data-free objective for crafting universal adversarial perturbations").

Data-free: make δ excite every conv layer as much as possible, without any image::

    FFF:     minimise  -sum over layers of log mean |a_l(δ)|        (the product of mean activations)
    GD-UAP:  minimise  -sum over layers of log ||a_l(δ)||₂

a_l are the conv layers' activations (:meth:`~patternscope.core.classifier.Classifier.conv_layers`: the
activation modules, e.g. post-ReLU outputs, found automatically for any model). δ is fed on the
data-mean image (zero after the model's normalisation), as in the authors' code. GD-UAP's optional
priors feed x + δ instead: ``range`` (Gaussian samples, mean 0.5 and std 0.25 clipped, batch 25) or
``data`` (proxy images).

Defaults from the authors' code: δ from U(-eps, eps); Adam with lr 0.1 in 0-255 units at eps 10, i.e.
1% of eps per step (``lr_eps=0.01``, so it scales with the budget);
FFF halves δ every 300 steps; GD-UAP halves δ when over half of it sits at ±eps and that share stopped
changing (by < 1e-5 between steps). Not clipped. The authors stop on a validation fooling rate; here
the budget (or ``patience``) decides.

Example (``model`` is any :class:`~patternscope.core.classifier.Classifier`, e.g.
``ps.load_model("efficientnet_lite0")``; the tests run this example on a tiny model)::

    >>> import patternscope as ps
    >>> outcome = ps.find_pattern(model, method="gd-uap", budget=64, progress=False)  # no data at all
    >>> outcome.pattern.meta["method"], round(outcome.pattern.eps * 255)
    ('gd-uap', 10)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from ..core.classifier import Classifier
from ..core.objectives import Objective, perturbed
from ..core.params import RescalingParam
from ..errors import PatternError
from .recipe import Recipe, UAPConfig

PRIORS = ("none", "range", "data")


@dataclass
class FeatureFoolConfig(UAPConfig):
    """FFF / GD-UAP settings. ``prior``: ``none`` (data-free), ``range`` or ``data`` (GD-UAP only);
    ``layers``: comma-separated layer names (default: every conv layer's activation); ``rescale_every``
    (FFF) and ``saturation`` (GD-UAP's halving threshold)."""

    init: str = "uniform"
    lr_eps: float | None = 0.01
    batch_size: int = 25
    prior: str = "none"
    layers: str = ""
    rescale_every: int = 300
    saturation: float = 0.5

    def validate(self) -> FeatureFoolConfig:
        super().validate()
        if self.prior not in PRIORS:
            raise PatternError(f"prior must be one of {PRIORS}, got {self.prior!r}")
        if self.rescale_every < 1 or not 0 < self.saturation <= 1:
            raise PatternError("rescale_every must be >= 1 and saturation in (0, 1]")
        return self


def activation_log_norms(
    model: Classifier, delta: torch.Tensor, layers: list[str], kind: str = "l2", prior: str = "none", clip: bool = False
) -> Objective:
    """Data-free objectives over the conv layers' activations (``layers``), of δ alone or of x + δ.

    ``kind="l2"``: GD-UAP (Mopuri et al. 2018), -sum over layers of log ||act(δ)||₂.
    ``kind="mean"``: FFF (Mopuri et al. 2017), -sum over layers of log mean |act(δ)| (the log of the
    product of mean activations).
    ``prior``: ``none`` (δ on the data-mean image, which the model's normalisation maps to zero, as
    in the papers; the batch is ignored), ``range`` or ``data`` (x + δ for the batch x: Gaussian
    range-prior samples or proxy images); the log-norms are averaged over the batch.
    """
    if kind not in ("l2", "mean"):
        raise ValueError(f"kind must be l2 or mean, got {kind!r}")

    def fn(x: torch.Tensor) -> torch.Tensor:
        if prior == "none":
            inputs = (model.mean.to(delta.dtype) + delta).reshape(1, *delta.shape)
        else:
            inputs = perturbed(x, delta, clip)
        total = torch.zeros((), device=delta.device)
        for act in model.activations(inputs, layers):
            act = act.float()  # reduced over every axis but the batch: no flatten, so NHWC is never copied
            axes = tuple(range(1, act.dim()))
            size = torch.linalg.vector_norm(act, dim=axes) if kind == "l2" else act.abs().mean(axes)
            total = total + torch.log(size + 1e-12).mean()
        return -total

    return Objective(fn, f"activation_log_norms[{kind},{prior}]")


def _layers(model: Classifier, config: FeatureFoolConfig) -> list[str]:
    if not config.layers:
        return model.conv_layers()
    names = [n.strip() for n in config.layers.split(",") if n.strip()]
    for name in names:
        model.check_layer(name)
    return names


def _gd_uap_objective(model: Classifier, delta: torch.Tensor, config: FeatureFoolConfig) -> Objective:
    return activation_log_norms(model, delta, _layers(model, config), "l2", config.prior, config.clip_during_search)


def _fff_objective(model: Classifier, delta: torch.Tensor, config: FeatureFoolConfig) -> Objective:
    return activation_log_norms(model, delta, _layers(model, config), "mean", "none")


def rescaling_param(rule: str):
    """The recipe ``param`` of a δ halved by ``rule`` (:class:`RescalingParam`): ``every``
    ``config.rescale_every`` steps (FFF), or when ``config.saturation`` of it sits at ±ε (GD-UAP, PSP-UAP)."""

    def make(shape: tuple[int, int, int], config: Any, device: torch.device) -> RescalingParam:
        every = {"every": config.rescale_every} if rule == "every" else {}
        return RescalingParam(
            shape,
            config.eps,
            config.norm,
            device=device,
            init=config.init,
            seed=config.seed,
            rule=rule,
            threshold=config.saturation,
            **every,
        )

    return make


def _fff_check(config: FeatureFoolConfig) -> None:
    if config.prior != "none":
        raise PatternError("FFF has no priors; use gd-uap for the range or data prior")


GD_UAP = Recipe(
    name="gd-uap",
    title="GD-UAP (Mopuri et al. 2018)",
    config=FeatureFoolConfig,
    objective=_gd_uap_objective,
    default_data=("gaussian",),
    step_cost=lambda c: 1 if c.prior == "none" else c.batch_size,
    uses_data=lambda c: c.prior != "none",
    param=rescaling_param("saturation"),
)

FFF = Recipe(
    name="fff",
    title="FFF (Mopuri et al. 2017)",
    config=FeatureFoolConfig,
    objective=_fff_objective,
    check=_fff_check,
    default_data=(),
    step_cost=lambda _c: 1,
    uses_data=lambda _c: False,
    param=rescaling_param("every"),
)
