"""Loss functions for pattern search, one small function each, composable with ``+``, ``-`` and ``*``.

An :class:`Objective` maps a batch of images ``x`` (N x C x H x W in [0,1]) to a scalar loss to
*minimise*. It closes over the model and the pattern being searched, so recipes compose them freely::

    loss = dominant_cosine(model, delta) + 0.1 * other_objective(...)
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from .classifier import Classifier
from .params import MaskCanvasParam


class Objective:
    """A named loss ``fn(x) -> scalar`` that supports ``a + b``, ``a - b``, ``k * a`` and ``-a``."""

    def __init__(self, fn: Callable[[torch.Tensor], torch.Tensor], name: str) -> None:
        self.fn = fn
        self.name = name

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return self.fn(x)

    def __add__(self, other: Objective) -> Objective:
        return Objective(lambda x: self(x) + other(x), f"({self.name} + {other.name})")

    def __sub__(self, other: Objective) -> Objective:
        return Objective(lambda x: self(x) - other(x), f"({self.name} - {other.name})")

    def __mul__(self, k: float) -> Objective:
        return Objective(lambda x: k * self(x), f"{k:g}*{self.name}")

    __rmul__ = __mul__

    def __neg__(self) -> Objective:
        return -1.0 * self

    def __repr__(self) -> str:
        return f"Objective({self.name})"


def _pattern_and_perturbed_features(
    model: Classifier, delta: torch.Tensor, x: torch.Tensor, layer: str | None, clip: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    """g(δ) (1 x D) and g(x + δ) (N x D) in float32, from one forward pass of the batch [δ, x + δ]."""
    feats = model.features(_pattern_and_perturbed(delta, x, clip), layer).flatten(1).float()
    return feats[:1], feats[1:]


def _pattern_and_perturbed(delta: torch.Tensor, x: torch.Tensor, clip: bool) -> torch.Tensor:
    perturbed = x + delta
    if clip:
        perturbed = perturbed.clamp(0, 1)
    return torch.cat([delta.unsqueeze(0), perturbed])


def _features_with_class_term(
    model: Classifier,
    delta: torch.Tensor,
    x: torch.Tensor,
    layer: str | None,
    clip: bool,
    dominance: float,
    labels: torch.Tensor | None = None,
    label_weight: float = 0.0,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """g(δ), g(x + δ) and the terms on the logits (:func:`_own_class_term`, :func:`_true_class_term`),
    from one forward pass."""
    use_labels = labels is not None and label_weight > 0
    if not (dominance or use_labels) or layer in (None, "", "logits"):
        own, perturbed = _pattern_and_perturbed_features(model, delta, x, layer, clip)
        own_logits, perturbed_logits = own, perturbed
    else:
        feats, logits = model.features_and_logits(_pattern_and_perturbed(delta, x, clip), layer)
        feats, logits = feats.flatten(1).float(), logits.float()
        own, perturbed, own_logits, perturbed_logits = feats[:1], feats[1:], logits[:1], logits[1:]
    pull = _own_class_term(own_logits, perturbed_logits, dominance)
    if use_labels:
        assert labels is not None
        pull = pull + _true_class_term(perturbed_logits, labels, label_weight)
    return own, perturbed, pull


def _true_class_term(logits: torch.Tensor, labels: torch.Tensor, weight: float) -> torch.Tensor:
    """``weight`` x the mean over labelled images (label >= 0) of max(z_y - max_{k != y} z_k, 0): pushes
    the true class's logit below the best other one, and stops once it is (the labelled dominant variant)."""
    known = labels >= 0
    if not known.any():
        return torch.zeros((), device=logits.device)
    z, y = logits[known], labels[known]
    true = z.gather(1, y[:, None])[:, 0]
    other = z.scatter(1, y[:, None], float("-inf")).amax(1)
    return weight * (true - other).clamp(min=0).mean()


def _own_class_term(own: torch.Tensor, perturbed: torch.Tensor, dominance: float) -> torch.Tensor:
    """``dominance`` x the mean cross-entropy of the perturbed logits towards the pattern's own class
    argmax f(δ) (no label: the class is whatever δ alone is classified as, and may change each step)."""
    if not dominance:
        return torch.zeros((), device=perturbed.device)
    own_class = own.argmax(1).detach().expand(perturbed.shape[0])
    return dominance * F.cross_entropy(perturbed, own_class)


def _images_and_labels(
    batch: torch.Tensor | tuple[torch.Tensor, torch.Tensor],
) -> tuple[torch.Tensor, torch.Tensor | None]:
    return batch if isinstance(batch, tuple) else (batch, None)


def dominant_cosine(
    model: Classifier,
    delta: torch.Tensor,
    layer: str | None = None,
    clip: bool = False,
    dominance: float = 0.0,
    label_weight: float = 0.0,
) -> Objective:
    """Ye et al. 2021, "pursuing insensitivity in feature space": mean over x of 1 - cos(g(δ), g(x + δ)).

    g is the model up to ``layer`` (``None``/``"logits"`` for the output). g(δ) is δ alone on a black
    image; gradients flow through both terms (δ and x + δ run in one forward pass; the model is in eval
    mode, so the batch entries do not interact). ``clip``: clip x + δ to [0,1] (the authors did not).
    ``dominance`` > 0 adds that weight times the cross-entropy of f(x + δ) towards argmax f(δ), the
    pattern's own class, on the logits whatever ``layer`` is (still label-free): the cosine makes the
    features point the same way, this term makes the outputs agree on the top class.
    ``label_weight`` > 0 with a batch ``(x, y)`` adds the labelled term of :func:`_true_class_term` (the
    label-dependent variant, method ``dominant-labelled``).
    """

    def fn(batch: torch.Tensor | tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        x, y = _images_and_labels(batch)
        own, perturbed, pull = _features_with_class_term(model, delta, x, layer, clip, dominance, y, label_weight)
        return (1 - F.cosine_similarity(own, perturbed, dim=1)).mean() + pull

    suffix = f",dominance={dominance:g}" if dominance else ""
    suffix += f",labels={label_weight:g}" if label_weight else ""
    return Objective(fn, f"dominant_cosine[{layer or 'logits'}{suffix}]")


def dominant_kl(
    model: Classifier,
    delta: torch.Tensor,
    layer: str | None = None,
    clip: bool = False,
    dominance: float = 0.0,
    authors: bool = False,
    label_weight: float = 0.0,
) -> Objective:
    """The KL variant of the dominant objective, in one of two directions:

    - ``authors=False`` (loss ``kl``): KL(p(δ) || p(x + δ)), averaged over x, with p = softmax g;
    - ``authors=True`` (loss ``kl-authors``): KL(p(x + δ) || p(δ)), the direction the authors' code computes
      as it runs, also averaged over x. Their code sums it over the batch, which is the mean times the batch
      size: as the only term, the same Adam trajectory (Adam's step does not change when its loss is scaled,
      up to its epsilon; Adam's weight decay, 1e-5 x δ added to the gradient, is then that many times
      stronger against the mean than against their sum). Beside the mean pull term (``dominance``) a sum would
      weigh the KL batch-size times more, and under torchrun each rank's share-weighted sum would shrink by
      the number of processes; the mean keeps its ratio to the other terms independent of both.

    Gradients flow through both sides. ``dominance`` and ``label_weight`` as in :func:`dominant_cosine`.
    """

    def fn(batch: torch.Tensor | tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        x, y = _images_and_labels(batch)
        own, perturbed, pull = _features_with_class_term(model, delta, x, layer, clip, dominance, y, label_weight)
        log_own = F.log_softmax(own, dim=1).expand_as(perturbed)
        log_perturbed = F.log_softmax(perturbed, dim=1)
        if authors:  # kl_div(input, target) is KL(target || input): target p(x + δ); a mean over the batch
            return F.kl_div(log_own, log_perturbed, reduction="batchmean", log_target=True) + pull
        return F.kl_div(log_perturbed, log_own, reduction="batchmean", log_target=True) + pull

    name = "kl_authors" if authors else "kl"
    suffix = f",dominance={dominance:g}" if dominance else ""
    suffix += f",labels={label_weight:g}" if label_weight else ""
    return Objective(fn, f"dominant_{name}[{layer or 'logits'}{suffix}]")


def logit_sum(model: Classifier, delta: torch.Tensor) -> Objective:
    """A plain forward-and-backward objective (sum of logits on x + δ), for overhead measurements."""

    def fn(x: torch.Tensor) -> torch.Tensor:
        return model(x + delta).float().sum() / x.shape[0]

    return Objective(fn, "logit_sum")


# ---------------------------------------------------------------------------------------------------
# Baseline UAP objectives (each minimised; x is a batch in [0,1], or (x, labels) where noted)


def _perturbed(x: torch.Tensor, delta: torch.Tensor, clip: bool) -> torch.Tensor:
    return (x + delta).clamp(0, 1) if clip else x + delta


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
        ce = F.cross_entropy(model(_perturbed(x, delta, clip)).float(), y, reduction="none")
        return -ce.clamp(max=beta).mean()

    return Objective(fn, f"clamped_cross_entropy[beta={beta:g}]")


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
            inputs = _perturbed(x, delta, clip)
        total = torch.zeros((), device=delta.device)
        for act in model.activations(inputs, layers):
            act = act.float()  # reduced over every axis but the batch: no flatten, so NHWC is never copied
            axes = tuple(range(1, act.dim()))
            size = torch.linalg.vector_norm(act, dim=axes) if kind == "l2" else act.abs().mean(axes)
            total = total + torch.log(size + 1e-12).mean()
        return -total

    return Objective(fn, f"activation_log_norms[{kind},{prior}]")


def cosine_to_clean(model: Classifier, delta: torch.Tensor, clip: bool = False) -> Objective:
    """Cos-UAP (Zhang et al. 2021): mean over x of cos(f(x), f(x + δ)) on the logits.

    Minimising it turns the perturbed output away from the clean one; no labels, and data-free when the
    x are artificial jigsaw images.
    """

    def fn(x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            clean = model(x).float()
        perturbed = model(_perturbed(x, delta, clip)).float()
        return F.cosine_similarity(clean, perturbed, dim=1).mean()

    return Objective(fn, "cosine_to_clean")


def margin_from_clean(model: Classifier, delta: torch.Tensor, kappa: float, clip: bool = False) -> Objective:
    """DF-UAP (Zhang et al. 2020): mean over x of max(z_c - max_{i != c} z_i, -κ) on f(x + δ)'s logits z.

    c = argmax f(x) is the clean prediction (label-free). Images already pushed ``κ`` past the nearest
    other class stop contributing.
    """

    def fn(x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            clean = model(x).argmax(1)
        z = model(_perturbed(x, delta, clip)).float()
        own = z.gather(1, clean[:, None]).squeeze(1)
        others = z.scatter(1, clean[:, None], float("-inf")).amax(1)
        return (own - others).clamp(min=-kappa).mean()

    return Objective(fn, f"margin_from_clean[kappa={kappa:g}]")


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


# ---------------------------------------------------------------------------------------------------
# Mask-on-canvas objectives (class-wise patterns)


def blend(mask: torch.Tensor, canvas: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """x' = m * x_c + (1 - m) * x for a batch ``x`` (N x C x H x W), mask 1 x H x W, canvas C x H x W."""
    return mask * canvas + (1 - mask) * x


def classwise_loss(model: Classifier, param: MaskCanvasParam, target: int, alpha: float) -> Objective:
    """Class-wise patterns (Zhao et al. 2021): alpha * CE(f(blend(m, canvas, x)), t) + (1 - alpha) * sum(m) / (H W / 2).

    The mask-size term is the mask's L1 norm relative to half the pixels; ``alpha`` weighs the two.
    """
    _, h, w = param.mask.shape

    def loss(x: torch.Tensor) -> torch.Tensor:
        logits = model(blend(param.mask, param.canvas, x))
        labels = torch.full((x.shape[0],), target, dtype=torch.long, device=x.device)
        return alpha * F.cross_entropy(logits.float(), labels) + (1 - alpha) * param.mask.sum() / (h * w / 2)

    return Objective(loss, f"classwise[target={target}, alpha={alpha:g}]")
