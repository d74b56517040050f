"""The search data of a run: the default proxies and evaluation set, and how ``--data`` / ``--eval-data`` /
``--holdout`` become search sources and a held-out evaluation set (shared by ``find dominant`` and
``compare``)."""

from __future__ import annotations

from ..data.image_set import ImageSet
from ..data.photos import BUNDLED_NAMES
from ..data.proxies import PROXY_NAMES
from ..data.sources import disjoint_eval_set, open_images, training_sources

DEFAULT_DATA = ("photos", "jigsaw")
DEFAULT_EVAL = "photos-eval"


def resolve_data(
    data: list[str], eval_data: str | None, holdout: float = 0.2, seed: int = 0
) -> tuple[list[ImageSet | str], ImageSet]:
    """Search sources and a disjoint evaluation set for ``--data`` / ``--eval-data``.

    Without ``eval_data``: the bundled ``photos-eval`` when the search data are bundled or generated,
    else a ``holdout`` share of the first image folder.
    """
    train = training_sources(data)
    if eval_data is not None:
        evaluation = open_images(eval_data)
    else:
        image_sets = [s for s in train if isinstance(s, ImageSet)]
        only_bundled = all(str(s) in BUNDLED_NAMES + PROXY_NAMES for s in data)
        if only_bundled or not image_sets:
            evaluation = open_images(DEFAULT_EVAL)
        else:  # hold part of the user's first image set out for evaluation
            evaluation = image_sets[0]
    return disjoint_eval_set(train, evaluation, holdout=holdout, seed=seed)


def describe_source(source: ImageSet | str) -> str:
    return source if isinstance(source, str) else source.description
