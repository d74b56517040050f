"""Resolving data specs (``--data`` / ``--eval-data``): folders, files, bundled photos, proxies, tensors;
and keeping evaluation images out of the search data."""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from pathlib import Path

import torch

from ..errors import DataError
from .bank import ImageBank, image_set_of
from .image_set import ImageSet, image_folder
from .photos import BUNDLED_NAMES, bundled_photos
from .proxies import PROXY_NAMES


def open_images(spec: str | Path | ImageSet | torch.Tensor | ImageBank) -> ImageSet:
    """An :class:`ImageSet` from a path, ``photos``/``photos-eval``, a tensor, an image bank, or an ImageSet."""
    if isinstance(spec, ImageSet):
        return spec
    if isinstance(spec, (torch.Tensor, ImageBank)):
        return image_set_of(spec)
    text = str(spec)
    if text in BUNDLED_NAMES:
        return bundled_photos(text)
    if text in PROXY_NAMES:
        raise DataError(f"{text!r} is a generated proxy; evaluation needs real images (a folder or photos-eval)")
    return image_folder(text)


def training_sources(specs: Sequence[str | Path | ImageSet | torch.Tensor | ImageBank]) -> list[ImageSet | str]:
    """Resolve training data specs: proxy names stay names, everything else becomes an ImageSet."""
    out: list[ImageSet | str] = []
    for spec in specs:
        if isinstance(spec, str) and spec in PROXY_NAMES:
            out.append(spec)
        else:
            out.append(open_images(spec))
    return out


def disjoint_eval_set(
    train: Sequence[ImageSet | str], evaluation: ImageSet, holdout: float = 0.2, seed: int = 0
) -> tuple[list[ImageSet | str], ImageSet]:
    """Make sure no evaluation image is also a training image.

    If the evaluation set is one of the training sets (same files), it is split: ``holdout`` of it
    for evaluation, the rest for training. Other overlapping images are dropped from training.
    """
    eval_ids = {item.identity() for item in evaluation.items}
    result: list[ImageSet | str] = []
    for source in train:
        if isinstance(source, str):
            result.append(source)
            continue
        ids = {item.identity() for item in source.items}
        if ids == eval_ids:
            source, evaluation = source.split(holdout, seed)
            eval_ids = {item.identity() for item in evaluation.items}
        else:
            overlap = ids & eval_ids
            if overlap:
                warnings.warn(
                    f"{len(overlap)} evaluation images are also in {source.description}; "
                    "they are left out of the search",
                    stacklevel=2,
                )
                kept = [i for i in source.items if i.identity() not in eval_ids]
                if not kept:
                    raise DataError(f"every image of {source.description} is an evaluation image")
                source = ImageSet(kept, source.description, source.class_names)
        result.append(source)
    return result, evaluation
