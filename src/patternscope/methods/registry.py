"""Every universal-pattern method by its name: ``METHODS`` maps each CLI name to its
:class:`~patternscope.methods.recipe.Recipe`.

A new method is one file in this package (its settings, its loss, its ``RECIPE``) and one line in the tuple
below; :func:`find_pattern`, ``compare``, ``harden`` and the reports then know it. A method kept outside the
package joins with :func:`register_method` (it is then not in the default ``compare`` list, which is the
label-free methods listed here).
"""

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


def register_method(recipe: Recipe) -> Recipe:
    """Add ``recipe`` to :data:`METHODS` under its name (the same recipe again is a no-op); returns it.

    Raises :class:`PatternError` when another recipe already has that name.
    """
    known = METHODS.get(recipe.name)
    if known is not None and known is not recipe:
        raise PatternError(f"a method called {recipe.name!r} exists already; give yours another name")
    METHODS[recipe.name] = recipe
    return recipe


def get_recipe(name: str) -> Recipe:
    """The recipe called ``name`` (raising :class:`PatternError` with the known names otherwise)."""
    try:
        return METHODS[name]
    except KeyError:
        raise PatternError(f"unknown method {name!r}; choose from {', '.join(METHODS)}") from None
