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

Example::

    import patternscope as ps
    model = ps.load_model("efficientnet_lite0")
    outcome = ps.find_pattern(model, ["photos", "jigsaw"], ps.DominantConfig(steps=150))
    outcome.pattern.save("runs/demo")
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch

from ..core.classifier import Classifier
from ..core.objectives import Objective, dominant_cosine, dominant_kl
from ..errors import PatternError
from .psp_uap import step_cost as psp_step_cost
from .recipe import Recipe, UAPConfig

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

    steps: int = DEFAULT_STEPS
    weight_decay: float = 1e-5
    layer: str = "logits"
    loss: str = "cos"
    dominance: float = DEFAULT_DOMINANCE
    labels: bool = False
    label_weight: float = 1.0
    prior_share: float = DEFAULT_PRIOR_SHARE

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
