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

Example (``model`` is any :class:`~patternscope.core.classifier.Classifier`, e.g.
``ps.load_model("efficientnet_lite0")``; the tests run this example on a tiny model)::

    >>> import patternscope as ps
    >>> outcome = ps.find_pattern(model, "photos", method="uap", budget=320, progress=False)
    >>> outcome.pattern.meta["method"], round(outcome.pattern.eps * 255)
    ('uap', 10)
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..core.classifier import Classifier
from ..core.objectives import Objective
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


def deepfool_update(
    model: Classifier,
    delta: torch.Tensor,
    norm: str = "linf",
    candidates: int = 10,
    max_iter: int = 10,
    overshoot: float = 0.02,
) -> Objective:
    """UAP (Moosavi-Dezfooli et al. 2017) as a loop objective: the DeepFool steps of a batch.

    For every image x of the batch that δ does not fool yet, DeepFool (``candidates`` most likely
    classes, at most ``max_iter`` linearisations, ``overshoot``) finds the smallest r (L∞ or L2) that
    moves x + δ across the nearest decision boundary. The objective's gradient with respect to δ is
    -sum of those r, so one plain SGD step with lr 1 adds them to δ (the loop then projects): the
    original adds them one image at a time; a batch adds them together (only those of images DeepFool
    moved across a boundary within ``max_iter``, as in the original). Its value is the share of the
    batch not fooled before the step. Cost per step: two forward-only passes of the batch and
    ``candidates`` passes per not-yet-fooled image per DeepFool iteration.
    """

    def fn(x: torch.Tensor) -> torch.Tensor:
        base = (x + delta.detach()).clamp(0, 1)
        with torch.no_grad():
            clean_logits = model(x).float()
            pert_pred = model(base).argmax(1)
        clean = clean_logits.argmax(1)
        active = pert_pred == clean
        step = torch.zeros_like(delta)
        if active.any():
            k = min(candidates, clean_logits.shape[1])
            classes = clean_logits[active].topk(k, dim=1).indices  # the clean class first
            r, converged = _deepfool(model, base[active], classes, norm, max_iter, overshoot)
            step = r[converged].sum(0)  # as in the original, only steps that crossed the boundary
        surrogate = -(delta * step).sum()
        unfooled = active.float().mean()
        return surrogate - surrogate.detach() + unfooled

    return Objective(fn, f"deepfool_update[{norm}]")


def _deepfool(
    model: Classifier, x: torch.Tensor, classes: torch.Tensor, norm: str, max_iter: int, overshoot: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Batched DeepFool: per image, the perturbation (with overshoot) that leaves class ``classes[:, 0]``,
    and whether it did so within ``max_iter`` linearisations."""
    n, k = classes.shape
    r = torch.zeros_like(x)
    running = torch.ones(n, dtype=torch.bool, device=x.device)
    for _ in range(max_iter):
        idx = running.nonzero().squeeze(1)
        if idx.numel() == 0:
            break
        z = ((x[idx] + (1 + overshoot) * r[idx]).clamp(0, 1)).detach()
        z = z.repeat(k, 1, 1, 1).requires_grad_(True)  # one copy per candidate class
        logits = model(z).float()
        cls = classes[idx].t().reshape(-1)  # copy j*m + i holds image i's candidate j
        picked = logits.gather(1, cls[:, None]).squeeze(1)
        (grads,) = torch.autograd.grad(picked.sum(), z)
        m = idx.numel()
        values = picked.detach().view(k, m)
        grads = grads.view(k, m, *x.shape[1:])
        still = logits.detach().view(k, m, -1)[0].argmax(1) == classes[idx, 0]
        w = grads[1:] - grads[:1]  # (k-1) x m x C x H x W
        f = (values[1:] - values[:1]).abs()  # (k-1) x m
        dual = w.flatten(2).abs().sum(2) if norm == "linf" else w.flatten(2).norm(dim=2)
        dist = f / (dual + 1e-8)
        best = dist.argmin(0)  # m
        w_best = w[best, torch.arange(m)]
        d_best = dist[best, torch.arange(m)]
        if norm == "linf":
            r_step = (d_best + 1e-4).view(-1, 1, 1, 1) * w_best.sign()
        else:
            r_step = (
                (d_best + 1e-4).view(-1, 1, 1, 1) * w_best / (w_best.flatten(1).norm(dim=1).view(-1, 1, 1, 1) + 1e-8)
            )
        r[idx[still]] += r_step[still]
        running[idx[~still]] = False
    if running.any():  # check the images still running after the last step
        idx = running.nonzero().squeeze(1)
        with torch.no_grad():
            pred = model((x[idx] + (1 + overshoot) * r[idx]).clamp(0, 1)).argmax(1)
        running[idx[pred != classes[idx, 0]]] = False
    return (1 + overshoot) * r, ~running


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
