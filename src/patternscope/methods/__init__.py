"""Method recipes: each names its parametrisation, objective, data and paper defaults, and runs on
the one search loop in :mod:`patternscope.search`.

``METHODS`` maps every CLI name to its :class:`~patternscope.methods.recipe.Recipe`;
:func:`find_pattern` runs any of them by name.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from ..errors import PatternError
from ..models import Classifier
from . import cos_uap, df_uap, dominant, feature_fool, sgd_uap, uap
from .dominant import DominantConfig, find_dominant_pattern
from .recipe import DataSpec, Recipe, SearchOutcome, UAPConfig, run_recipe

METHODS: dict[str, Recipe] = {
    r.name: r
    for r in (
        dominant.RECIPE,
        sgd_uap.RECIPE,
        feature_fool.GD_UAP,
        feature_fool.FFF,
        cos_uap.RECIPE,
        df_uap.RECIPE,
        uap.RECIPE,
    )
}


def get_recipe(name: str) -> Recipe:
    """The recipe called ``name`` (raising :class:`PatternError` with the known names otherwise)."""
    try:
        return METHODS[name]
    except KeyError:
        raise PatternError(f"unknown method {name!r}; choose from {', '.join(METHODS)}") from None


def find_pattern(
    method: str,
    model: Classifier,
    data: DataSpec = None,
    config: UAPConfig | None = None,
    *,
    budget: float | None = None,
    device: str | torch.device | None = None,
    checkpoint: str | Path | None = None,
    checkpoint_every: int = 25,
    resume: bool = False,
    progress: bool = True,
    **overrides: Any,
) -> SearchOutcome:
    """Search a universal pattern with ``method`` (``dominant``, ``sgd-uap``, ``gd-uap``, ``fff``,
    ``cos-uap``, ``df-uap``, ``uap``) for ``model``.

    Args:
        method: a name in :data:`METHODS`.
        model: a :class:`~patternscope.models.Classifier` (inputs in [0,1]).
        data: proxy names, ``photos``, folders, tensors, ImageSets or a BatchStream; None: the method's
            own default data (none at all for FFF and GD-UAP).
        config: the method's settings dataclass; keyword ``overrides`` replace its fields
            (``eps=8/255``, ``steps=100``, ``beta=9``).
        budget: passes to spend (images through forward and backward; forward-only images count a
            third); replaces ``steps``, so methods with different batch sizes get equal compute.
        checkpoint, checkpoint_every, resume: atomic checkpoints, exact resume.
    """
    return run_recipe(
        get_recipe(method),
        model,
        data,
        config,
        budget=budget,
        device=device,
        checkpoint=checkpoint,
        checkpoint_every=checkpoint_every,
        resume=resume,
        progress=progress,
        **overrides,
    )


__all__ = [
    "METHODS",
    "DominantConfig",
    "Recipe",
    "SearchOutcome",
    "UAPConfig",
    "find_dominant_pattern",
    "find_pattern",
    "get_recipe",
]
