"""Labelled image sets sized for a model: built-in sets (``digits``, ``fashion-mnist``) as tensors, or an
ImageFolder tree (one sub-folder per class) as an :class:`~patternscope.data.bank.ImageBank` read on
demand (images of any size or channel count resized whole, never cropped, so a corner trigger survives);
and the stratified search / held-out split every labelled command uses."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from ..errors import DataError
from .bank import DEFAULT_CACHE_MB, ImageBank, Images, resized_whole
from .datasets import load_dataset
from .image_set import ImageSet, image_folder
from .images import resize_to

BUILTIN_LABELLED = ("digits", "fashion-mnist")


@dataclass
class LabelledImages:
    """Images (N x C x H x W in [0,1], sized for a model: a tensor, or an :class:`ImageBank` for files),
    integer labels (N), class names and a description."""

    images: Images
    labels: torch.Tensor
    class_names: list[str] | None
    description: str


def open_labelled(spec: str, input_size: Sequence[int], *, cache_mb: float = DEFAULT_CACHE_MB) -> LabelledImages:
    """Labelled images for a model: a built-in set's test split (a tensor), or an ImageFolder tree (an
    :class:`ImageBank`: files read on demand, at most ``cache_mb`` MB of resized images kept)."""
    if spec in BUILTIN_LABELLED:
        data = load_dataset(spec)
        return LabelledImages(
            resize_to(data.test_x, input_size), data.test_y, list(data.class_names), f"{spec} (test split)"
        )
    source = image_folder(spec)
    _check_labelled(source)
    bank = ImageBank(source, input_size, cache_mb=cache_mb)
    return LabelledImages(bank, source.labels(), source.class_names, source.description)


def labelled_images(source: ImageSet, input_size: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
    """All images of a labelled set (an ImageFolder tree) as model-sized tensors, whole images resized, at
    once (memory grows with the set: :func:`open_labelled` reads on demand instead)."""
    _check_labelled(source)
    images = torch.stack([resized_whole(source, i, input_size) for i in range(len(source))])
    return images, source.labels()


def _check_labelled(source: ImageSet) -> None:
    if not source.has_labels:
        raise DataError(
            f"{source.description}: images need class labels; give an ImageFolder tree (one sub-folder per class)"
        )


def stratified_split(labels: torch.Tensor, holdout: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(search indices, held-out indices): ``holdout`` of each class held out, at random by ``seed``."""
    gen = torch.Generator().manual_seed(seed)
    search, held = [], []
    for c in torch.unique(labels).tolist():
        idx = torch.nonzero(labels == c).flatten()
        idx = idx[torch.randperm(len(idx), generator=gen)]
        n_held = max(1, round(len(idx) * holdout)) if len(idx) > 1 else 0
        held.append(idx[:n_held])
        search.append(idx[n_held:])
    return torch.cat(search).sort().values, torch.cat(held).sort().values
