"""Universal additive patterns: dominant patterns and the UAP baselines, each a recipe (its settings with
the paper's defaults, its objective, its default data) run by the one search loop in
:mod:`patternscope.core.search`.

:func:`find_pattern` runs any method; ``METHODS`` lists them by CLI name. A new method is one small file
here (its settings, its loss and its ``RECIPE``; see ``cos_uap.py`` for the shape) and one line in
:mod:`~patternscope.methods.registry` (or :func:`register_method` for a method kept outside the package).
"""

from __future__ import annotations

from typing import Any

from ..core.classifier import Classifier
from .cos_uap import CosUAPConfig
from .df_uap import DFUAPConfig
from .dominant import DominantConfig, PaperDominantConfig
from .feature_fool import FeatureFoolConfig
from .find import find_pattern
from .recipe import DataSpec, FirstStage, Recipe, SearchOutcome, UAPConfig
from .registry import LABEL_FREE_METHODS, METHODS, get_recipe, register_method
from .sgd_uap import SGDUAPConfig
from .uap import UAPDeepFoolConfig


def find_dominant_pattern(
    model: Classifier, data: DataSpec = None, config: DominantConfig | None = None, **options: Any
) -> SearchOutcome:
    """A dominant pattern (Ye et al. 2021) for ``model`` over ``data``, label-free: :func:`find_pattern`
    with ``method="dominant"``; ``options`` are :func:`find_pattern`'s (``budget``, ``checkpoint``,
    ``progress``, ...) and :class:`DominantConfig` field overrides (``steps=150``); a
    :class:`PaperDominantConfig` runs the paper's recipe (method ``dominant-paper``)."""
    return find_pattern(model, data, config, method=None if config is not None else "dominant", **options)


__all__ = [
    "LABEL_FREE_METHODS",
    "METHODS",
    "CosUAPConfig",
    "DFUAPConfig",
    "DataSpec",
    "DominantConfig",
    "FeatureFoolConfig",
    "FirstStage",
    "PaperDominantConfig",
    "Recipe",
    "SGDUAPConfig",
    "SearchOutcome",
    "UAPConfig",
    "UAPDeepFoolConfig",
    "find_dominant_pattern",
    "find_pattern",
    "get_recipe",
    "register_method",
]
