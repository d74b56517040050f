"""Labelled image sets sized for a model: built-in sets (``digits``, ``fashion-mnist``, ``glyphs``) as tensors, or an
ImageFolder tree (one sub-folder per class) as an :class:`~patternscope.data.bank.ImageBank` read on
demand (images of any size or channel count resized whole, never cropped, so a corner trigger survives);
the stratified search / held-out split every labelled command uses, and the one seeded sample of a set's
images that every capped read uses (never a prefix: a class-sorted tree's first images are one class)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from ..errors import DataError
from .bank import DEFAULT_CACHE_MB, ImageBank, Images, resized_whole
from .datasets import load_dataset
from .image_set import ImageSet, image_folder
from .images import resize_to

BUILTIN_LABELLED = ("digits", "fashion-mnist", "glyphs")


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


def seeded_sample(
    n: int, cap: int, seed: int = 0, labels: torch.Tensor | None = None, *, balanced: bool = False
) -> torch.Tensor:
    """Indices of at most ``cap`` of ``n`` items, in increasing order (so streamed reads stay sequential).

    All of them when ``n <= cap``. Else, drawn with ``seed``: without ``labels`` a uniform random sample;
    with ``labels`` (n class indices, -1 counts as one more class) class-stratified: each class gets its
    share of ``cap`` in proportion to its count (floors, then one more to the largest remainders, ties to
    the smaller class), its images chosen at random; ``balanced=True`` takes the classes in turn instead, so
    every class is represented as evenly as its count allows (small classes whole).
    """
    if n <= cap:
        return torch.arange(n)
    cap = max(0, cap)
    gen = torch.Generator().manual_seed(seed)
    if labels is None:
        return torch.randperm(n, generator=gen)[:cap].sort().values
    labels = torch.as_tensor(labels).flatten()
    if labels.numel() != n:
        raise DataError(f"{labels.numel()} labels for {n} images")
    groups = []
    for c in torch.unique(labels).tolist():
        idx = torch.nonzero(labels == c).flatten()
        groups.append(idx[torch.randperm(idx.numel(), generator=gen)])
    if balanced:
        order = [int(g[i]) for i in range(max(len(g) for g in groups)) for g in groups if i < len(g)]
        return torch.tensor(order[:cap], dtype=torch.long).sort().values
    quotas = [len(g) * cap / n for g in groups]
    counts = [int(q) for q in quotas]
    by_remainder = sorted(range(len(groups)), key=lambda i: (-(quotas[i] - counts[i]), i))
    for i in by_remainder[: cap - sum(counts)]:
        counts[i] += 1
    return torch.cat([g[:k] for g, k in zip(groups, counts, strict=True)]).sort().values
