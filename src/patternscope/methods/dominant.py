"""Dominant patterns (Ye, Qin, Chen, Huang, 2021): a universal δ whose features decide f(x + δ).

Label-free objective, minimised over ||δ||∞ <= eps (pixel space [0,1])::

    mean over x of  1 - cos( g(δ), g(x + δ) )        (or the KL variant)

g is the network up to ``layer`` (default: the logits). g(δ) is δ alone, and gradients flow through
both terms, so the pattern's own class moves with it: there is no fixed target.

plus, by default, ``dominance`` (1.0) x the cross-entropy of f(x + δ) towards argmax f(δ), the pattern's
own class: still label-free, it makes the perturbed outputs agree with the pattern on the top class, not
only point the same way (measured: more agreement at the same fooling ratio; docs: benchmarks).

Optionally a **prior stage** (``prior_share`` > 0): the first share of the steps run PSP-UAP's data-free
objective (:mod:`.psp_uap`: excite the early conv layers on pseudo-semantic samples of δ + a prior image),
and the dominant objective continues from that δ on the proxy data. The prior stage gives δ structure that
already disrupts the features of any image; the dominant stage then turns it towards one class of its own
(measured on tuning photos: a little more fooling and agreement per pass than the default, but PSP-UAP's
steps cost more time per pass, so not per second; docs: benchmarks).

The rest as in the authors' code (for the dominant stage, and the whole search with ``prior_share=0``):
δ starts at zero; Adam, lr 1e-2, weight decay 1e-5, constant lr;
projection before every forward; batch 32; x + δ is *not* clipped to [0,1] during the search
(``clip_during_search=True`` clips it); labels are never used. Evaluation always clips.
:class:`PaperDominantConfig` (method ``dominant-paper``, ``--recipe paper``) is the paper's recipe
exactly, without the class term or the prior stage.

Example (``model`` is any :class:`~patternscope.core.classifier.Classifier`, e.g.
``ps.load_model("efficientnet_lite0")``; the tests run this example on a tiny model)::

    >>> import patternscope as ps
    >>> outcome = ps.find_pattern(model, ["photos", "jigsaw"], ps.DominantConfig(steps=10), progress=False)
    >>> outcome.pattern.meta["method"], round(outcome.pattern.eps * 255)
    ('dominant', 10)
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F

from ..core.classifier import Classifier
from ..core.configs import option
from ..core.objectives import Objective
from ..errors import PatternError
from .psp_uap import RECIPE as PSP_RECIPE
from .psp_uap import PSPConfig
from .psp_uap import step_cost as psp_step_cost
from .recipe import FirstStage, Recipe, UAPConfig

DEFAULT_STEPS = 300  # about 4.5 minutes on 2 CPU cores for EfficientNet-Lite0 at batch 32 (see README)
DEFAULT_DOMINANCE = 1.0  # measured on held-out photos disjoint from photos-eval (docs: benchmarks)
DEFAULT_PRIOR_SHARE = 0.0  # opt-in: more fooling and agreement per pass, but not per second (docs: benchmarks)


# the dominant objective's losses: 1 - cosine, and the KL in our direction and in the authors' (see dominant_kl)
LOSSES = ("cos", "kl", "kl-authors")


@dataclass
class DominantConfig(UAPConfig):
    """Settings of a dominant-pattern search (the authors' defaults unless noted).

    Besides :class:`~patternscope.methods.recipe.UAPConfig`'s fields (eps 10/255 L∞, batch 32, Adam lr
    1e-2, δ from zeros, no clipping during the search):

    Args:
        weight_decay: Adam weight decay, 1e-5 (a tiny pull of δ towards zero).
        layer: feature layer for g: ``logits`` or a layer name (``classifier:in`` for the head's input).
        loss: ``cos`` (1 - cosine similarity), ``kl`` (KL(p(δ) || p(x+δ)), batch mean) or ``kl-authors``
            (KL(p(x+δ) || p(δ)), the direction the authors' code runs; a batch mean where their code sums,
            so its weight against ``dominance`` does not depend on the batch size or the process count).
        labels: the label-dependent variant (method ``dominant-labelled``; needs labelled images): adds
            ``label_weight`` x mean max(z_y - max_{k != y} z_k, 0) on the logits of x + δ, which pushes
            each image's true class below its best other class.
        label_weight: weight of that term (1.0).
        prior_share: share of ``steps`` (rounded down, at least one) run first with PSP-UAP's data-free
            objective and settings (:class:`~patternscope.methods.psp_uap.PSPConfig`: Adam lr 0.1, δ from
            U(-eps, eps), halving when saturated), the dominant search continuing from its δ; 0: none.
            L∞ budgets only (an L2 search has no prior stage). With a budget, the steps are those the
            budget pays for at the two stages' mean cost per step.
    """

    steps: int = option(DEFAULT_STEPS, help="search steps (default {default})")
    weight_decay: float = option(1e-5, help="Adam weight decay (default {default:g})")
    layer: str = option(
        "logits",
        help="feature layer g: logits (default), a layer name, or NAME:in for a layer's input "
        "(list names with `patternscope models --layers SPEC`)",
    )
    loss: str = option("cos", help="1 - cosine (default) or KL", choices=LOSSES)
    dominance: float = DEFAULT_DOMINANCE
    labels: bool = False
    label_weight: float = 1.0
    prior_share: float = option(
        DEFAULT_PRIOR_SHARE,
        help="share of the steps spent first on PSP-UAP's data-free objective, the rest on this recipe from its "
        "pattern (default {default:g}: none; ignored with --norm l2)",
        metavar="S",
    )

    def validate(self) -> DominantConfig:
        super().validate()
        if not 0 <= self.label_weight < float("inf"):
            raise PatternError(f"label_weight must be a weight >= 0, got {self.label_weight}")
        if self.loss not in LOSSES:
            raise PatternError(f"loss must be one of {', '.join(LOSSES)}, got {self.loss!r}")
        if not 0 <= self.dominance < float("inf"):
            raise PatternError(f"dominance must be a weight >= 0, got {self.dominance}")
        if not 0 <= self.prior_share < 1:
            raise PatternError(f"prior_share must be a share of the steps in [0, 1), got {self.prior_share}")
        return self


@dataclass
class PaperDominantConfig(DominantConfig):
    """The paper's recipe exactly (``--recipe paper``, method ``dominant-paper``): the cosine alone, no
    pull towards the pattern's class, Adam lr 1e-2, constant rate, δ from zeros, batch 32."""

    dominance: float = 0.0
    prior_share: float = 0.0


@dataclass
class LabelledDominantConfig(DominantConfig):
    """The label-dependent dominant variant (method ``dominant-labelled``): the default recipe plus a term
    on each image's true-class logit (see ``labels``); it needs labelled search images."""

    labels: bool = True


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


def dominant_objective(model: Classifier, delta: torch.Tensor, config: DominantConfig) -> Objective:
    layer = None if config.layer in ("", "logits") else config.layer
    weight = config.label_weight if config.labels else 0.0
    if config.loss == "cos":
        return dominant_cosine(
            model, delta, layer=layer, clip=config.clip_during_search, dominance=config.dominance, label_weight=weight
        )
    authors = config.loss == "kl-authors"
    return dominant_kl(
        model,
        delta,
        layer=layer,
        clip=config.clip_during_search,
        dominance=config.dominance,
        authors=authors,
        label_weight=weight,
    )


def active_prior_share(config: UAPConfig) -> float:
    """The share of a search's steps run as a prior stage: ``prior_share`` for an L∞ budget, else 0 (L2 searches
    have none: PSP-UAP starts δ inside the L∞ ball; configs without the field have none either)."""
    return getattr(config, "prior_share", 0.0) if config.norm == "linf" else 0.0


def prior_stage(config: DominantConfig) -> FirstStage | None:
    """The optional prior stage (``prior_share`` > 0, L∞ only): PSP-UAP's data-free objective with its own
    settings at this search's budget, seed, batch size and precision."""
    share = active_prior_share(config)
    if not share:
        return None

    def settings(steps: int) -> PSPConfig:
        return PSPConfig(
            eps=config.eps,
            norm=config.norm,
            seed=config.seed,
            batch_size=config.batch_size,
            steps=steps,
            amp=config.amp,
        ).validate()

    return FirstStage(name="prior", recipe=PSP_RECIPE, share=share, config=settings)


def step_cost(config: DominantConfig) -> float:
    """Passes per step: the batch and δ alone; with a prior stage, the steps' mean over both stages."""
    own = config.batch_size + 1
    share = active_prior_share(config)
    return share * psp_step_cost(config.batch_size) + (1 - share) * own if share else own


RECIPE = Recipe(
    name="dominant",
    title="Dominant patterns (Ye et al. 2021)",
    config=DominantConfig,
    objective=dominant_objective,
    default_data=("photos", "jigsaw"),
    step_cost=step_cost,
    batch_mean=True,
    paper_data=("photos",),  # the authors searched on natural proxy images (COCO), never jigsaw
    labelled=lambda c: c.labels,
    first_stage=prior_stage,
)
PAPER_RECIPE = replace(
    RECIPE,
    name="dominant-paper",
    title="Dominant patterns, the paper's recipe (Ye et al. 2021)",
    config=PaperDominantConfig,
)
LABELLED_RECIPE = replace(
    RECIPE,
    name="dominant-labelled",
    title="Dominant patterns, label-dependent variant",
    config=LabelledDominantConfig,
    default_data=("photos",),  # replaced by a labelled --data tree: the bundled photos carry no labels
)
