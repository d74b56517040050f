"""Finite image sets: files, folders, ImageFolder trees and tensors, with optional labels.

An :class:`ImageSet` is an ordered list of images (files or C x H x W tensors in [0,1]) with optional
labels; it gives evaluation tensors (resize the shorter side, centre crop) and, through
:class:`~patternscope.data.stream.BatchStream`, augmented training crops.
"""

from __future__ import annotations

import hashlib
import math
import os
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from PIL import Image, UnidentifiedImageError

from ..errors import DataError
from .images import (
    CROP_FRACTION,
    IMAGE_SUFFIXES,
    MAX_PIXELS,
    crop_views,
    decode_image,
    eval_views,
    read_image_levels,
    resize_shorter,
    to_channels,
)


@dataclass(frozen=True)
class LazyImage:
    """An image computed when it is read: ``read()`` gives C x H x W float in [0,1] (e.g. one image of an
    :class:`~patternscope.data.bank.ImageBank`, decoded and resized to a model's size); ``key`` names it."""

    read: Callable[[], torch.Tensor]
    key: str


@dataclass
class ImageItem:
    """One image: a file path, a C x H x W tensor in [0,1] or a :class:`LazyImage`, an optional label and
    a display name."""

    source: Path | torch.Tensor | LazyImage
    label: int | None = None
    name: str = ""

    def identity(self) -> str:
        """A key that is equal for the same image file (or the same tensor contents)."""
        if isinstance(self.source, Path):
            return str(self.source.resolve())
        if isinstance(self.source, LazyImage):
            return self.source.key
        digest = hashlib.sha1(self.source.detach().cpu().contiguous().numpy().tobytes()).hexdigest()
        return f"tensor:{digest}"


@dataclass
class ImageSet:
    """A finite list of images with optional labels (``-1`` in tensors where an image has none).

    Decoded images are cached in memory (up to ``cache_limit_mb`` per process) so repeated crops are
    cheap. ``fast_decode`` resizes in PIL on uint8 with JPEG draft decoding (about 1.7x the images per
    second per core) instead of the exact torch resize every earlier release used (values within a
    level or two; see :func:`~patternscope.data.images.decode_image`).
    """

    items: list[ImageItem]
    description: str = ""
    class_names: list[str] | None = None
    cache_limit_mb: float = 2048.0
    fast_decode: bool = False
    _cache: dict[tuple[int, int, int | None], torch.Tensor] = field(default_factory=dict, repr=False)
    _cache_bytes: int = field(default=0, repr=False)

    def __len__(self) -> int:
        return len(self.items)

    @property
    def has_labels(self) -> bool:
        return bool(self.items) and all(item.label is not None for item in self.items)

    def labels(self) -> torch.Tensor:
        return torch.tensor([-1 if i.label is None else i.label for i in self.items], dtype=torch.long)

    @property
    def from_files(self) -> bool:
        """Whether every image is a file (decoded to uint8 by the input pipeline); tensors stay float."""
        return all(isinstance(item.source, Path) for item in self.items)

    def load(self, index: int, channels: int, shorter: int | None = None) -> torch.Tensor:
        """Image ``index`` as C x H x W float in [0,1], its shorter side resized to ``shorter`` if given."""
        image = self.load_host(index, channels, shorter)
        return image.float() / 255.0 if image.dtype == torch.uint8 else image

    def load_host(self, index: int, channels: int, shorter: int | None = None) -> torch.Tensor:
        """Image ``index`` as the input pipeline holds it on the host: C x H x W **uint8** for a file
        (decoded by :func:`~patternscope.data.images.decode_image`), float in [0,1] for a tensor.

        Decoded files are cached (up to ``cache_limit_mb`` per process) so repeated crops are cheap.
        """
        item = self.items[index]
        if not isinstance(item.source, Path):
            pixels = item.source.read() if isinstance(item.source, LazyImage) else item.source
            image = to_channels(pixels.detach().float().cpu(), channels).clamp(0, 1)
            return resize_shorter(image, shorter) if shorter is not None else image
        key = (index, channels, shorter)
        cached = self._cache.get(key)
        if cached is not None:
            return cached
        image = decode_image(item.source, channels, shorter, fast=self.fast_decode)
        if self._cache_bytes + image.numel() <= self.cache_limit_mb * 2**20:
            self._cache[key] = image
            self._cache_bytes += image.numel()
        return image

    def views(self, index: int, input_size: Sequence[int], views: int = 1) -> torch.Tensor:
        """Evaluation crops of image ``index`` (V x C x H x W): the shorter side resized to size/0.875,
        then centre (and corner, mirrored) crops. Float in [0,1], resized exactly as in every earlier
        release; uint8 with ``fast_decode``."""
        c, h, w = (int(v) for v in input_size)
        item = self.items[index]
        if isinstance(item.source, Path) and self.fast_decode:
            base = decode_image(item.source, c, math.ceil(max(h, w) / CROP_FRACTION), fast=True)
            return crop_views(base, (h, w), views)
        image = read_image_levels(item.source, c) if isinstance(item.source, Path) else self.load(index, c)
        return eval_views(image, (h, w), views) if image.shape[-2:] != (h, w) or views > 1 else image[None]

    def eval_tensors(self, input_size: Sequence[int], views: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
        """All images prepared for evaluation at once: (N*views) x C x H x W in [0,1] and their labels
        (-1 if none). Memory grows with the set: for small sets and figures; measuring streams instead
        (:func:`~patternscope.data.loader.eval_batches`)."""
        if not self.items:
            raise DataError(f"no images in {self.description or 'the evaluation set'}")
        images, labels = [], []
        for i, item in enumerate(self.items):
            stack = self.views(i, input_size, views)
            images.append(stack.float() / 255.0 if stack.dtype == torch.uint8 else stack)
            labels.extend([-1 if item.label is None else item.label] * stack.shape[0])
        return torch.cat(images), torch.tensor(labels, dtype=torch.long)

    def split(self, holdout: float, seed: int = 0) -> tuple[ImageSet, ImageSet]:
        """Deterministic split by file identity: (train, held-out) with about ``holdout`` of the images."""
        if not 0 < holdout < 1:
            raise DataError(f"holdout fraction must be in (0, 1), got {holdout}")

        def score(item: ImageItem) -> str:
            return hashlib.sha1(f"{seed}:{item.identity()}".encode()).hexdigest()

        ranked = sorted(self.items, key=score)
        n_eval = max(1, round(len(ranked) * holdout))
        if len(ranked) < 2:
            raise DataError(f"{self.description}: need at least 2 images to hold some out for evaluation")
        held = set(map(id, ranked[:n_eval]))
        train = [i for i in self.items if id(i) not in held]
        test = [i for i in self.items if id(i) in held]
        return (
            ImageSet(train, f"{self.description} (train split)", self.class_names),
            ImageSet(test, f"{self.description} (held-out split)", self.class_names),
        )


def image_folder(path: str | Path) -> ImageSet:
    """Images under ``path``: a single file, a flat folder, or an ImageFolder tree (one folder per class).

    In a tree, a folder named by an integer is that class index; otherwise classes are the sorted folder
    names, indexed from 0. Flat folders have no labels. Files that are not readable images (their header
    does not open) are skipped with one warning naming them, and so are images over
    :data:`~patternscope.data.images.MAX_PIXELS` (a decompression-bomb guard: refused from the header, never
    decoded) and images of no pixels, with the reason; a file that opens but fails to decode later stops the
    run with an error naming it.
    """
    root = Path(path)
    if not root.exists():
        raise DataError(f"data path {str(root)!r} does not exist")
    if root.is_file():
        if root.suffix.lower() not in IMAGE_SUFFIXES:
            raise DataError(f"{str(root)!r} is not an image file (expected one of {sorted(IMAGE_SUFFIXES)})")
        return ImageSet([ImageItem(root, None, root.name)], str(root))
    subdirs = sorted(d for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
    class_dirs = [d for d in subdirs if any(_images_in(d))]
    if class_dirs:
        numeric = all(d.name.isdigit() for d in class_dirs)
        names = [d.name for d in class_dirs]
        items: list[ImageItem] = []
        for index, d in enumerate(class_dirs):
            label = int(d.name) if numeric else index
            items.extend(ImageItem(f, label, f"{d.name}/{f.name}") for f in _images_in(d))
        items = _readable(items, root)
        class_names = None if numeric else names
        return ImageSet(items, f"{root} ({len(class_dirs)} classes)", class_names)
    files = list(_images_in(root))
    if not files:
        raise DataError(
            f"no images found in {str(root)!r} (looked for {', '.join(sorted(IMAGE_SUFFIXES))}, "
            "directly or one folder per class)"
        )
    return ImageSet(_readable([ImageItem(f, None, f.name) for f in files], root), str(root))


HEADER_CHECK = 1000  # files whose header is opened when a folder is listed


def _readable(items: list[ImageItem], root: Path) -> list[ImageItem]:
    """``items`` whose file opens as an image, the others skipped with a warning. Only the first
    :data:`HEADER_CHECK` headers are opened (a clear early error for a folder of non-images, and a listing
    of 100,000 files that still starts in seconds); a later file that fails to decode is skipped, with a
    warning, when it is read."""
    good, bad = [], []  # bad: (name, why it is skipped)
    for position, item in enumerate(items):
        if position >= HEADER_CHECK:
            good.append(item)
            continue
        try:
            with warnings.catch_warnings():  # PIL's own warning above MAX_PIXELS: the check below says more
                warnings.simplefilter("ignore", Image.DecompressionBombWarning)
                with Image.open(item.source) as im:  # type: ignore[arg-type]
                    width, height = im.size
        except Image.DecompressionBombError:
            bad.append((item.name, f"over the {MAX_PIXELS:,}-pixel limit (a decompression-bomb guard)"))
            continue
        except (UnidentifiedImageError, OSError, SyntaxError, ValueError):
            bad.append((item.name, "unreadable"))
            continue
        if width * height > MAX_PIXELS:
            guard = f"over the {MAX_PIXELS:,}-pixel limit (a decompression-bomb guard)"
            bad.append((item.name, f"{width} x {height} pixels, {guard}"))
        elif width < 1 or height < 1:
            bad.append((item.name, f"{width} x {height} pixels: no pixels"))
        else:
            good.append(item)
    if bad and not good:
        name, why = bad[0]
        raise DataError(f"none of the {len(bad)} image files in {str(root)!r} can be read (e.g. {name!r}: {why})")
    for name, why in bad[:20]:
        text = f"unreadable image file {name!r}" if why == "unreadable" else f"image file {name!r} ({why})"
        warnings.warn(f"skipped {text} in {str(root)!r}", stacklevel=3)
    if len(bad) > 20:
        warnings.warn(f"skipped {len(bad) - 20} more unreadable image files in {str(root)!r}", stacklevel=3)
    return good


def _images_in(folder: Path) -> list[Path]:
    """Image files directly in ``folder``, sorted by name (``os.scandir``: no stat call per file)."""
    with os.scandir(folder) as entries:
        names = [e.name for e in entries if e.is_file() and os.path.splitext(e.name)[1].lower() in IMAGE_SUFFIXES]
    return [folder / name for name in sorted(names)]


def tensor_set(
    images: torch.Tensor, labels: Sequence[int] | torch.Tensor | None = None, name: str = "tensors"
) -> ImageSet:
    """An :class:`ImageSet` from an N x C x H x W tensor in [0,1] (and optional labels)."""
    if not isinstance(images, torch.Tensor) or images.ndim != 4:
        raise DataError("images must be a tensor of shape N x C x H x W")
    if images.numel() == 0:
        raise DataError("the image tensor is empty")
    lo, hi = float(images.min()), float(images.max())
    if lo < 0 or hi > 1:
        raise DataError(f"image tensor values must be in [0,1] (got {lo:.3g}..{hi:.3g}); divide 0-255 images by 255")
    if labels is not None and len(labels) != images.shape[0]:
        raise DataError(f"{len(labels)} labels for {images.shape[0]} images")
    lab = [None] * images.shape[0] if labels is None else [int(v) for v in labels]
    return ImageSet([ImageItem(images[i], lab[i], f"{name}[{i}]") for i in range(images.shape[0])], name)
