"""Every universal-pattern method by its name: ``METHODS`` maps each CLI name to its
:class:`~patternscope.methods.recipe.Recipe`. A new method is one file in this package and one line here."""

from __future__ import annotations

from ..errors import PatternError
from . import cos_uap, df_uap, dominant, feature_fool, psp_uap, sgd_uap, uap
from .recipe import Recipe

METHODS: dict[str, Recipe] = {
    r.name: r
    for r in (
        dominant.RECIPE,
        dominant.PAPER_RECIPE,
        dominant.LABELLED_RECIPE,
        sgd_uap.RECIPE,
        sgd_uap.LABELLED_RECIPE,
        feature_fool.GD_UAP,
        feature_fool.FFF,
        cos_uap.RECIPE,
        df_uap.RECIPE,
        psp_uap.RECIPE,
        uap.RECIPE,
    )
}

# what `compare` and `harden` run by default: every method that needs no labels (the labelled variants,
# dominant-labelled and sgd-uap-labelled, are opt-in: they need an ImageFolder tree as search data)
LABEL_FREE_METHODS: tuple[str, ...] = tuple(name for name, r in METHODS.items() if not r.labelled(r.config()))


def get_recipe(name: str) -> Recipe:
    """The recipe called ``name`` (raising :class:`PatternError` with the known names otherwise)."""
    try:
        return METHODS[name]
    except KeyError:
        raise PatternError(f"unknown method {name!r}; choose from {', '.join(METHODS)}") from None
