"""Training batches that are a pure function of ``(seed, step)``, so a resumed search sees exactly the
batches an uninterrupted one would: :class:`BatchStream` (augmented crops of image sets mixed with
proxies) and :func:`epoch_batches` (a tensor or an image bank walked in a fresh seeded order each epoch)."""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..errors import DataError
from .bank import Images, take
from .image_set import ImageSet
from .images import CROP_FRACTION
from .loader import note_failed_read
from .proxies import PROXY_NAMES, jigsaw_images, noise_images


def _generator(seed: int, *parts: int) -> torch.Generator:
    key = hashlib.sha256(":".join(map(str, (seed, *parts))).encode()).digest()
    return torch.Generator().manual_seed(int.from_bytes(key[:8], "little") & (2**63 - 1))


def check_crop_scale(scale: tuple[float, float] | None) -> None:
    """Raise :class:`DataError` unless ``scale`` is None or (min, max) with 0 < min <= max <= 1."""
    if scale is not None and not 0 < scale[0] <= scale[1] <= 1:
        raise DataError(f"crop scale must satisfy 0 < min <= max <= 1, got {tuple(scale)}")


@dataclass
class BatchStream:
    """Training batches for pattern search, deterministic in ``(seed, step)``.

    Args:
        sources: any mix of :class:`ImageSet` (augmented crops) and proxy names
            (``jigsaw``/``gaussian``/``uniform``); each batch draws from them in turn, split evenly.
        input_size: (C, H, W) of the model.
        augment: random crops (shorter side resized to size/0.875, random crop) and random
            horizontal and vertical flips, as in the dominant-pattern paper.
        crop_scale: with ``augment``, also zoom: each crop covers a random share of the resized image's
            area in this range (aspect ratio 3/4 to 4/3) and is resized to the input size. ``None`` (the
            paper's fixed-scale crops). Zooming gives a handful of photos far more distinct views.
        seed: the seed; batch ``t`` depends only on ``(seed, t)`` and the sources.
        rank: this process's shard for data-parallel search (images differ per rank).
        world_size: the number of processes sharing each batch.
    """

    sources: list[ImageSet | str]
    input_size: tuple[int, int, int]
    seed: int = 0
    augment: bool = True
    crop_scale: tuple[float, float] | None = None
    rank: int = 0
    world_size: int = 1

    def __post_init__(self) -> None:
        self._orders: dict[tuple[int, int], torch.Tensor] = {}
        self._unreadable: set[int] = set()
        check_crop_scale(self.crop_scale)
        if not self.sources:
            raise DataError("no training data given")
        for s in self.sources:
            if isinstance(s, str) and s not in PROXY_NAMES:
                raise DataError(f"unknown proxy source {s!r}; use one of {PROXY_NAMES}")
            if isinstance(s, ImageSet) and len(s) == 0:
                raise DataError(f"training source {s.description!r} has no images")

    def steps_for_epochs(self, epochs: float, batch_size: int) -> int:
        """Steps in which every image source is walked ``epochs`` times (its share of each batch)."""
        if not epochs > 0:
            raise DataError(f"epochs must be positive, got {epochs}")
        sizes = [len(s) for s in self.sources if isinstance(s, ImageSet)]
        if not sizes:
            raise DataError("epochs need an image source (a folder or the bundled photos); give --steps instead")
        share = max(1, batch_size // len(self.sources)) * self.world_size
        return max(1, math.ceil(epochs * max(sizes) / share))

    def describe(self) -> str:
        return " + ".join(s if isinstance(s, str) else s.description for s in self.sources)

    def batch(self, step: int, batch_size: int) -> torch.Tensor:
        """The ``batch_size`` training images (N x C x H x W float in [0,1]) for search step ``step``."""
        return self.labelled_batch(step, batch_size)[0]

    def labelled_batch(self, step: int, batch_size: int) -> tuple[torch.Tensor, torch.Tensor]:
        """:meth:`batch` and the images' labels (``-1`` for proxy or unlabelled images)."""
        images, labels = self.host_batch(step, batch_size)
        return (images.float() / 255.0 if images.dtype == torch.uint8 else images), labels

    def host_images(self, step: int, batch_size: int) -> torch.Tensor:
        """:meth:`host_batch` without the labels (what a label-free search is given)."""
        return self.host_batch(step, batch_size)[0]

    def host_batch(self, step: int, batch_size: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The batch as the input pipeline holds it on the host, with its labels: **uint8** images when
        every source is a folder of files cropped at a fixed scale (the paper's recipe), float in [0,1]
        otherwise (proxies, zoomed crops and tensors, exactly as computed).
        :func:`~patternscope.data.loader.to_device` converts on the device."""
        counts = [batch_size // len(self.sources)] * len(self.sources)
        for i in range(batch_size - sum(counts)):
            counts[(step + i) % len(self.sources)] += 1
        parts, labels = [], []
        for index, (source, count) in enumerate(zip(self.sources, counts, strict=True)):
            if count == 0:
                continue
            gen = _generator(self.seed, step, index, self.rank)
            if isinstance(source, str):
                if source == "jigsaw":
                    parts.append(jigsaw_images(count, self.input_size, gen))
                else:
                    parts.append(noise_images(source, count, self.input_size, gen))
                labels.append(torch.full((count,), -1, dtype=torch.long))
            else:
                images, image_labels = self._crops(source, step, index, count, gen)
                parts.append(images)
                labels.append(image_labels)
        if len({p.dtype for p in parts}) > 1:
            parts = [p.float() / 255.0 if p.dtype == torch.uint8 else p for p in parts]
        return torch.cat(parts), torch.cat(labels)

    def _crops(
        self, images: ImageSet, step: int, index: int, count: int, gen: torch.Generator
    ) -> tuple[torch.Tensor, torch.Tensor]:
        c, h, w = self.input_size
        # Walk through a fresh permutation each epoch; rank r takes every world_size-th slot.
        per_step = count * self.world_size
        as_bytes = images.from_files and (self.crop_scale is None or not self.augment)
        out = torch.empty(count, c, h, w, dtype=torch.uint8 if as_bytes else torch.float32)
        labels = torch.full((count,), -1, dtype=torch.long)
        for j in range(count):
            slot = step * per_step + j * self.world_size + self.rank
            chosen, image = self._image_at(images, index, slot)
            label = images.items[chosen].label
            if label is not None:
                labels[j] = int(label)
            crop = self._crop(image, h, w, gen)
            if self.augment:
                flips = torch.rand(2, generator=gen)
                if flips[0] < 0.5:
                    crop = crop.flip(-1)
                if flips[1] < 0.5:
                    crop = crop.flip(-2)
            out[j] = crop
        return out, labels

    def _image_at(self, images: ImageSet, index: int, slot: int) -> tuple[int, torch.Tensor]:
        """The image at walk position ``slot`` (its index and pixels); an image that cannot be decoded is
        replaced by the next one in the same epoch's order (deterministic: the same in every process)."""
        c, h, w = self.input_size
        n = len(images)
        epoch, pos = divmod(slot, n)
        order = self._order(epoch, index, n)
        for offset in range(n):
            chosen = int(order[(pos + offset) % n])
            try:
                return chosen, images.load_host(chosen, c, shorter=math.ceil(max(h, w) / CROP_FRACTION))
            except DataError:
                if chosen not in self._unreadable:
                    self._unreadable.add(chosen)
                    note_failed_read(images.items[chosen].name)
        raise DataError(f"none of the {n} images in {images.description!r} can be decoded")

    def _order(self, epoch: int, index: int, n: int) -> torch.Tensor:
        key = (epoch, index)
        if key not in self._orders:
            if len(self._orders) > 8:
                self._orders.clear()
            self._orders[key] = torch.randperm(n, generator=_generator(self.seed, epoch, index, -1))
        return self._orders[key]

    def _crop(self, image: torch.Tensor, h: int, w: int, gen: torch.Generator) -> torch.Tensor:
        _, ih, iw = image.shape
        if not self.augment:
            top, left = (ih - h) // 2, (iw - w) // 2
            return image[:, top : top + h, left : left + w]
        if self.crop_scale is None:
            top = int(torch.randint(0, ih - h + 1, (1,), generator=gen))
            left = int(torch.randint(0, iw - w + 1, (1,), generator=gen))
            return image[:, top : top + h, left : left + w]
        lo, hi = self.crop_scale
        u = torch.rand(2, generator=gen)
        area = (lo + (hi - lo) * float(u[0])) * ih * iw
        aspect = math.exp(math.log(3 / 4) + (math.log(4 / 3) - math.log(3 / 4)) * float(u[1]))
        ch = min(ih, max(1, round(math.sqrt(area / aspect))))
        cw = min(iw, max(1, round(math.sqrt(area * aspect))))
        top = int(torch.randint(0, ih - ch + 1, (1,), generator=gen))
        left = int(torch.randint(0, iw - cw + 1, (1,), generator=gen))
        crop = image[None, :, top : top + ch, left : left + cw]
        as_float = crop.float() / 255.0 if crop.dtype == torch.uint8 else crop
        return F.interpolate(as_float, size=(h, w), mode="bilinear", align_corners=False, antialias=True)[0].clamp_(
            0, 1
        )


def epoch_batches(images: Images, seed: int) -> Callable[[int, int], torch.Tensor]:
    """Batches that walk through ``images`` (a tensor, or an :class:`~patternscope.data.bank.ImageBank` read
    batch by batch) in a fresh seeded order each epoch; a pure function of the step."""
    n = images.shape[0]
    orders: dict[int, torch.Tensor] = {}

    def order(epoch: int) -> torch.Tensor:
        if epoch not in orders:
            orders[epoch] = torch.randperm(n, generator=torch.Generator().manual_seed(seed * 100_003 + epoch))
        return orders[epoch]

    def batch(step: int, batch_size: int) -> torch.Tensor:
        positions = range(step * batch_size, (step + 1) * batch_size)
        idx = torch.stack([order(p // n)[p % n] for p in positions])
        return take(images, idx)

    return batch
