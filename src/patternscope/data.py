"""Image sources: files and folders, tensors, data-free proxies, and the bundled real photos.

Everything here produces float tensors in [0,1] pixel space, N x C x H x W, sized for the model.

- :class:`ImageSet` is a finite, ordered list of images (files or tensors) with optional labels; it
  gives evaluation tensors (resize the shorter side, centre crop) and augmented training crops.
- Proxy sources need no data: ``gaussian``, ``uniform`` and ``jigsaw`` (patches of flat random colours).
- ``photos`` / ``photos-eval``: natural photos that ship inside installed packages (scikit-image,
  scikit-learn, matplotlib, foolbox), split once and for all into a training and a held-out set.
- A :class:`BatchStream` gives the training batch for step ``t`` as a pure function of
  ``(seed, t)``, so a resumed search sees exactly the batches an uninterrupted one would.
"""

from __future__ import annotations

import hashlib
import importlib.util
import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, UnidentifiedImageError

from .errors import DataError

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm"}
PROXY_NAMES = ("jigsaw", "gaussian", "uniform")
BUNDLED_NAMES = ("photos", "photos-eval")
CROP_FRACTION = 0.875  # evaluation: resize the shorter side to size / 0.875, then centre crop


# ---------------------------------------------------------------------------------------------------
# Reading and resizing single images


def read_image(path: str | Path, channels: int = 3) -> torch.Tensor:
    """Read an image file as a C x H x W float tensor in [0,1] with ``channels`` channels (1 or 3).

    Grey, RGBA (composited on white), palette, CMYK and 16-bit images are converted.
    Raises :class:`DataError` for unreadable or corrupt files.
    """
    try:
        with Image.open(path) as im:
            im.load()
            array = _pil_to_array(im)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise DataError(f"cannot read image {str(path)!r}: {exc}") from None
    return to_channels(torch.from_numpy(array).permute(2, 0, 1).contiguous(), channels)


def _pil_to_array(im: Image.Image) -> np.ndarray:
    """H x W x C float32 in [0,1] for any PIL mode."""
    if im.mode in ("I;16", "I;16B", "I;16L", "I"):
        a = np.asarray(im, dtype=np.float32)
        top = 65535.0 if im.mode.startswith("I;16") or a.max() > 255 else 255.0
        return np.clip(a / top, 0, 1)[..., None]
    if im.mode == "F":
        a = np.asarray(im, dtype=np.float32)
        a = a / a.max() if a.max() > 1 else a
        return np.clip(a, 0, 1)[..., None]
    if im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and "transparency" in im.info):
        rgba = im.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        im = Image.alpha_composite(background, rgba).convert("RGB")
    elif im.mode in ("1", "L"):
        im = im.convert("L")
    elif im.mode != "RGB":
        im = im.convert("RGB")
    a = np.asarray(im, dtype=np.float32) / 255.0
    return a[..., None] if a.ndim == 2 else a


def to_channels(image: torch.Tensor, channels: int) -> torch.Tensor:
    """Convert a C x H x W image to ``channels`` channels (grey <-> RGB; luma weights for RGB -> grey)."""
    c = image.shape[0]
    if c == channels:
        return image
    if channels == 1 and c == 3:
        weights = torch.tensor([0.299, 0.587, 0.114], dtype=image.dtype).view(3, 1, 1)
        return (image * weights).sum(0, keepdim=True)
    if c == 1:
        return image.expand(channels, -1, -1).contiguous()
    raise DataError(f"cannot convert a {c}-channel image to {channels} channels")


def resize_shorter(image: torch.Tensor, shorter: int) -> torch.Tensor:
    """Resize so that the shorter side is ``shorter`` pixels (bilinear, antialiased)."""
    _, h, w = image.shape
    scale = shorter / min(h, w)
    size = (max(shorter, round(h * scale)), max(shorter, round(w * scale)))
    if size == (h, w):
        return image
    out = F.interpolate(image[None], size=size, mode="bilinear", align_corners=False, antialias=True)[0]
    return out.clamp_(0, 1)


def eval_views(image: torch.Tensor, size: tuple[int, int], views: int = 1) -> torch.Tensor:
    """Deterministic evaluation crops (V x C x H x W): resize shorter side to size/0.875, then crop.

    ``views``: 1 centre; 2 centre + its mirror; 5 centre + four corners; 10 those five and mirrors.
    """
    if views not in (1, 2, 5, 10):
        raise DataError(f"eval views must be 1, 2, 5 or 10, got {views}")
    h, w = size
    base = resize_shorter(image, math.ceil(max(h, w) / CROP_FRACTION))
    _, bh, bw = base.shape
    tops = [(bh - h) // 2, 0, 0, bh - h, bh - h]
    lefts = [(bw - w) // 2, 0, bw - w, 0, bw - w]
    positions = [0] if views in (1, 2) else [0, 1, 2, 3, 4]
    crops = [base[:, tops[i] : tops[i] + h, lefts[i] : lefts[i] + w] for i in positions]
    if views in (2, 10):
        crops = crops + [c.flip(-1) for c in crops]
    return torch.stack(crops)


# ---------------------------------------------------------------------------------------------------
# Finite image sets


@dataclass
class ImageItem:
    """One image: a file path or a C x H x W tensor in [0,1], an optional label and a display name."""

    source: Path | torch.Tensor
    label: int | None = None
    name: str = ""

    def identity(self) -> str:
        """A key that is equal for the same image file (or the same tensor contents)."""
        if isinstance(self.source, Path):
            return str(self.source.resolve())
        digest = hashlib.sha1(self.source.detach().cpu().contiguous().numpy().tobytes()).hexdigest()
        return f"tensor:{digest}"


@dataclass
class ImageSet:
    """A finite list of images with optional labels (``-1`` in tensors where an image has none).

    Decoded images are cached in memory (up to ``cache_limit_mb``) so repeated crops are cheap.
    """

    items: list[ImageItem]
    description: str = ""
    class_names: list[str] | None = None
    cache_limit_mb: float = 2048.0
    _cache: dict[tuple[int, int, int | None], torch.Tensor] = field(default_factory=dict, repr=False)
    _cache_bytes: int = field(default=0, repr=False)

    def __len__(self) -> int:
        return len(self.items)

    @property
    def has_labels(self) -> bool:
        return bool(self.items) and all(item.label is not None for item in self.items)

    def labels(self) -> torch.Tensor:
        return torch.tensor([-1 if i.label is None else i.label for i in self.items], dtype=torch.long)

    def load(self, index: int, channels: int, shorter: int | None = None) -> torch.Tensor:
        """Image ``index`` as C x H x W in [0,1], its shorter side resized to ``shorter`` if given."""
        item = self.items[index]
        if isinstance(item.source, torch.Tensor):
            image = to_channels(item.source.detach().float().cpu(), channels).clamp(0, 1)
            return resize_shorter(image, shorter) if shorter is not None else image
        key = (index, channels, shorter)
        cached = self._cache.get(key)
        if cached is not None:
            return cached.float() / 255.0
        image = read_image(item.source, channels)
        if shorter is not None:
            image = resize_shorter(image, shorter)
        as_bytes = (image * 255.0).round().to(torch.uint8)
        if self._cache_bytes + as_bytes.numel() <= self.cache_limit_mb * 2**20:
            self._cache[key] = as_bytes
            self._cache_bytes += as_bytes.numel()
        return as_bytes.float() / 255.0

    def eval_tensors(self, input_size: Sequence[int], views: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
        """All images prepared for evaluation: (N*views) x C x H x W and their labels (-1 if none)."""
        c, h, w = (int(v) for v in input_size)
        if not self.items:
            raise DataError(f"no images in {self.description or 'the evaluation set'}")
        images, labels = [], []
        for i, item in enumerate(self.items):
            image = self.load(i, c)
            if image.shape[-2:] != (h, w) or views > 1:
                stack = eval_views(image, (h, w), views)
            else:
                stack = image[None]
            images.append(stack)
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
    does not open) are skipped with one warning naming them; a file that opens but fails to decode later
    stops the run with an error naming it.
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
        items = []
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


def _readable(items: list[ImageItem], root: Path) -> list[ImageItem]:
    """``items`` whose file opens as an image (the header only: cheap); the others skipped with a warning."""
    good, bad = [], []
    for item in items:
        try:
            with Image.open(item.source):  # type: ignore[arg-type]
                pass
            good.append(item)
        except (UnidentifiedImageError, OSError, SyntaxError, ValueError):
            bad.append(item.name)
    if bad and not good:
        raise DataError(f"none of the {len(bad)} image files in {str(root)!r} can be read (e.g. {bad[0]!r})")
    if bad:
        shown = ", ".join(bad[:3]) + (f" and {len(bad) - 3} more" if len(bad) > 3 else "")
        warnings.warn(f"skipped {len(bad)} unreadable image file(s) in {str(root)!r}: {shown}", stacklevel=3)
    return good


def _images_in(folder: Path) -> list[Path]:
    return sorted(f for f in folder.iterdir() if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES)


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


# ---------------------------------------------------------------------------------------------------
# Bundled real photos (files inside installed packages; nothing is downloaded)

# (package, relative path, ImageNet label or None). The evaluation split holds every labelled photo.
_TRAIN_PHOTOS = [
    ("skimage", "data/astronaut.png", None),
    ("skimage", "data/rocket.jpg", None),
    ("skimage", "data/motorcycle_left.png", None),
    ("skimage", "data/hubble_deep_field.jpg", None),
    ("skimage", "data/ihc.png", None),
    ("skimage", "data/retina.jpg", None),
    ("skimage", "data/brick.png", None),
    ("skimage", "data/grass.png", None),
    ("skimage", "data/gravel.png", None),
    ("skimage", "data/camera.png", None),
    ("skimage", "data/coins.png", None),
    ("sklearn", "datasets/images/china.jpg", None),
    ("sklearn", "datasets/images/flower.jpg", None),
    ("matplotlib", "mpl-data/sample_data/grace_hopper.jpg", None),
]
_EVAL_PHOTOS = [
    ("skimage", "data/chelsea.png", 285),
    ("skimage", "data/coffee.png", 967),
] + [
    ("foolbox", f"data/imagenet_{i:02d}_{label}.jpg", label)
    for i, label in enumerate(
        [243, 559, 438, 990, 949, 853, 609, 609, 915, 455, 541, 630, 741, 471, 129, 99, 251, 22, 317, 305]
    )
]


def _package_dir(package: str) -> Path | None:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def bundled_photos(split: str = "photos") -> ImageSet:
    """The bundled natural photos: ``photos`` (14 unlabelled, for searching) or ``photos-eval``
    (22 ImageNet-labelled photos: 20 from foolbox's samples, chelsea and coffee). The two never overlap."""
    if split not in BUNDLED_NAMES:
        raise DataError(f"unknown bundled set {split!r}; use one of {BUNDLED_NAMES}")
    table = _TRAIN_PHOTOS if split == "photos" else _EVAL_PHOTOS
    items, missing = [], []
    for package, rel, label in table:
        base = _package_dir(package)
        path = base / rel if base else None
        if path is None or not path.is_file():
            missing.append(f"{package}/{rel}")
            continue
        items.append(ImageItem(path, label, Path(rel).stem))
    if missing:
        warnings.warn(f"bundled photos not found (package missing?): {', '.join(missing)}", stacklevel=2)
    if not items:
        raise DataError(f"none of the bundled {split} images are installed; pip install scikit-image foolbox")
    return ImageSet(items, f"bundled {split} ({len(items)} photos)")


# ---------------------------------------------------------------------------------------------------
# Proxy generators (data-free)


def jigsaw_images(n: int, size: Sequence[int], generator: torch.Generator) -> torch.Tensor:
    """``n`` artificial jigsaw images (C x H x W in [0,1]): irregular grids of flat random colours.

    Each image gets 2-16 cells per side at random cut points, every cell one uniform random colour.
    """
    c, h, w = (int(v) for v in size)
    out = torch.empty(n, c, h, w)
    for i in range(n):
        rows = int(torch.randint(2, 17, (1,), generator=generator))
        cols = int(torch.randint(2, 17, (1,), generator=generator))
        row_cuts = _cuts(h, rows, generator)
        col_cuts = _cuts(w, cols, generator)
        colours = torch.rand(c, rows, cols, generator=generator)
        out[i] = colours[:, row_cuts][:, :, col_cuts]
    return out


def _cuts(length: int, parts: int, generator: torch.Generator) -> torch.Tensor:
    """For each of ``length`` pixels, the index of its cell among ``parts`` random-width cells."""
    points = torch.sort(torch.randperm(length - 1, generator=generator)[: parts - 1] + 1).values
    return torch.bucketize(torch.arange(length), points, right=True)


def noise_images(kind: str, n: int, size: Sequence[int], generator: torch.Generator) -> torch.Tensor:
    """``gaussian`` (mean 0.5, std 0.25, clipped) or ``uniform`` ([0,1]) noise images."""
    shape = (n, *(int(v) for v in size))
    if kind == "gaussian":
        return (0.5 + 0.25 * torch.randn(shape, generator=generator)).clamp_(0, 1)
    if kind == "uniform":
        return torch.rand(shape, generator=generator)
    raise DataError(f"unknown noise kind {kind!r}; use gaussian or uniform")


# ---------------------------------------------------------------------------------------------------
# Training batch streams


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
        rank, world_size: this process's shard for data-parallel search (images differ per rank).
    """

    sources: list[ImageSet | str]
    input_size: tuple[int, int, int]
    seed: int = 0
    augment: bool = True
    crop_scale: tuple[float, float] | None = None
    rank: int = 0
    world_size: int = 1

    def __post_init__(self) -> None:
        check_crop_scale(self.crop_scale)
        if not self.sources:
            raise DataError("no training data given")
        for s in self.sources:
            if isinstance(s, str) and s not in PROXY_NAMES:
                raise DataError(f"unknown proxy source {s!r}; use one of {PROXY_NAMES}")
            if isinstance(s, ImageSet) and len(s) == 0:
                raise DataError(f"training source {s.description!r} has no images")

    def describe(self) -> str:
        return " + ".join(s if isinstance(s, str) else s.description for s in self.sources)

    def batch(self, step: int, batch_size: int) -> torch.Tensor:
        """The ``batch_size`` training images (N x C x H x W in [0,1]) for search step ``step``."""
        return self.labelled_batch(step, batch_size)[0]

    def labelled_batch(self, step: int, batch_size: int) -> tuple[torch.Tensor, torch.Tensor]:
        """:meth:`batch` and the images' labels (``-1`` for proxy or unlabelled images)."""
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
        return torch.cat(parts), torch.cat(labels)

    def _crops(
        self, images: ImageSet, step: int, index: int, count: int, gen: torch.Generator
    ) -> tuple[torch.Tensor, torch.Tensor]:
        c, h, w = self.input_size
        n = len(images)
        # Walk through a fresh permutation each epoch; rank r takes every world_size-th slot.
        per_step = count * self.world_size
        out = torch.empty(count, c, h, w)
        labels = torch.full((count,), -1, dtype=torch.long)
        for j in range(count):
            slot = step * per_step + j * self.world_size + self.rank
            epoch, pos = divmod(slot, n)
            order = torch.randperm(n, generator=_generator(self.seed, epoch, index, -1))
            chosen = int(order[pos])
            if images.items[chosen].label is not None:
                labels[j] = int(images.items[chosen].label)
            image = images.load(chosen, c, shorter=math.ceil(max(h, w) / CROP_FRACTION))
            crop = self._crop(image, h, w, gen)
            if self.augment:
                flips = torch.rand(2, generator=gen)
                if flips[0] < 0.5:
                    crop = crop.flip(-1)
                if flips[1] < 0.5:
                    crop = crop.flip(-2)
            out[j] = crop
        return out, labels

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
        return F.interpolate(crop, size=(h, w), mode="bilinear", align_corners=False, antialias=True)[0].clamp_(0, 1)


# ---------------------------------------------------------------------------------------------------
# Resolving --data / --eval-data specs


def open_images(spec: str | Path | ImageSet | torch.Tensor) -> ImageSet:
    """An :class:`ImageSet` from a path, ``photos``/``photos-eval``, a tensor, or an ImageSet."""
    if isinstance(spec, ImageSet):
        return spec
    if isinstance(spec, torch.Tensor):
        return tensor_set(spec)
    text = str(spec)
    if text in BUNDLED_NAMES:
        return bundled_photos(text)
    if text in PROXY_NAMES:
        raise DataError(f"{text!r} is a generated proxy; evaluation needs real images (a folder or photos-eval)")
    return image_folder(text)


def training_sources(specs: Sequence[str | Path | ImageSet | torch.Tensor]) -> list[ImageSet | str]:
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
