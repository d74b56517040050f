"""Real labelled image sets that install offline, as tensors in [0,1] pixel space.

- ``digits``: scikit-learn's 1,797 handwritten 8x8 digits (always there with scikit-learn), upsampled.
- ``glyphs``: 26 capital letters rendered from matplotlib's bundled fonts (generated, :mod:`.glyphs`).
- ``fashion-mnist``: the full Fashion-MNIST (60,000 train + 10,000 test, 28x28 grey) from Debian's
  ``dataset-fashion-mnist`` package (``apt-get install dataset-fashion-mnist``), or any folder holding
  the four IDX ``.gz`` files (``$PATTERNSCOPE_FASHION_MNIST`` or ``root=``).

Nothing is downloaded. :func:`write_image_tree` saves a set as an ImageFolder tree (one folder per
class) for the CLI.
"""

from __future__ import annotations

import gzip
import os
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from ..errors import DataError

FASHION_MNIST_DIRS = ("/usr/share/datasets/fashion-mnist",)
FASHION_MNIST_CLASSES = (
    "t-shirt",
    "trouser",
    "pullover",
    "dress",
    "coat",
    "sandal",
    "shirt",
    "sneaker",
    "bag",
    "ankle-boot",
)
DIGIT_CLASSES = tuple(str(i) for i in range(10))


@dataclass
class LabelledData:
    """Train and test images (N x C x H x W, [0,1]) with integer labels and class names."""

    train_x: torch.Tensor
    train_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor
    class_names: tuple[str, ...]
    name: str

    @property
    def input_size(self) -> tuple[int, int, int]:
        return tuple(int(v) for v in self.train_x.shape[1:])  # type: ignore[return-value]

    @property
    def num_classes(self) -> int:
        return len(self.class_names)


def load_digits(size: int = 16, test_fraction: float = 0.22, seed: int = 0) -> LabelledData:
    """scikit-learn's 8x8 digits upsampled (bilinear) to ``size`` x ``size``, split at random by ``seed``."""
    from sklearn.datasets import load_digits as sk_digits

    bunch = sk_digits()
    x = torch.tensor(bunch.images, dtype=torch.float32)[:, None] / 16.0
    if size != 8:
        x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False).clamp(0, 1)
    y = torch.tensor(bunch.target, dtype=torch.long)
    perm = torch.randperm(len(y), generator=torch.Generator().manual_seed(seed))
    x, y = x[perm], y[perm]
    n_test = round(len(y) * test_fraction)
    return LabelledData(x[n_test:], y[n_test:], x[:n_test], y[:n_test], DIGIT_CLASSES, "digits")


def fashion_mnist_dir(root: str | Path | None = None) -> Path:
    """The folder holding Fashion-MNIST's IDX files, or a :class:`DataError` saying how to get them."""
    candidates = [Path(root)] if root is not None else []
    if root is None and os.environ.get("PATTERNSCOPE_FASHION_MNIST"):
        candidates.append(Path(os.environ["PATTERNSCOPE_FASHION_MNIST"]))
    if root is None:
        candidates.extend(Path(d) for d in FASHION_MNIST_DIRS)
    for folder in candidates:
        if (folder / "train-images-idx3-ubyte.gz").is_file():
            return folder
    raise DataError(
        "Fashion-MNIST not found (looked in "
        + ", ".join(str(c) for c in candidates)
        + "); install it with `apt-get install dataset-fashion-mnist` or point PATTERNSCOPE_FASHION_MNIST "
        "at a folder with the four IDX .gz files"
    )


def _read_idx(path: Path) -> np.ndarray:
    try:
        with gzip.open(path, "rb") as fh:
            raw = fh.read()
    except (OSError, EOFError) as exc:
        raise DataError(f"{path} cannot be read as a gzip IDX file ({exc})") from None
    if len(raw) < 4 or raw[:2] != b"\x00\x00" or raw[2] != 0x08:
        raise DataError(f"{path} is not an unsigned-byte IDX file")
    ndim = raw[3]
    dims = struct.unpack(f">{ndim}I", raw[4 : 4 + 4 * ndim])
    data = np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim)
    if data.size != int(np.prod(dims)):
        raise DataError(f"{path} is truncated: {data.size} values for shape {dims}")
    return data.reshape(dims)


def load_fashion_mnist(root: str | Path | None = None, train_limit: int | None = None) -> LabelledData:
    """Fashion-MNIST as 1 x 28 x 28 tensors in [0,1] (the first ``train_limit`` training images if given)."""
    folder = fashion_mnist_dir(root)
    parts = {}
    for split, prefix in (("train", "train"), ("test", "t10k")):
        images = _read_idx(folder / f"{prefix}-images-idx3-ubyte.gz")
        labels = _read_idx(folder / f"{prefix}-labels-idx1-ubyte.gz")
        if split == "train" and train_limit is not None:
            images, labels = images[:train_limit], labels[:train_limit]
        parts[split] = (
            torch.from_numpy(images.copy()).float().div_(255.0)[:, None],
            torch.from_numpy(labels.astype(np.int64)),
        )
    return LabelledData(*parts["train"], *parts["test"], FASHION_MNIST_CLASSES, "fashion-mnist")


def load_glyphs(
    train: int = 20000, test: int = 10400, size: int = 28, classes: int = 26, seed: int = 0
) -> LabelledData:
    """``glyphs``: capital letters rendered from matplotlib's bundled fonts (:mod:`.glyphs`), generated, 1 x
    ``size`` x ``size`` in [0,1]; ``classes`` letters from A (26: A-Z)."""
    from .glyphs import GLYPH_CLASSES, glyph_split

    return LabelledData(*glyph_split(train, test, size, classes, seed), GLYPH_CLASSES[:classes], "glyphs")


def load_dataset(name: str, **kwargs: object) -> LabelledData:
    """``digits``, ``fashion-mnist`` or ``glyphs`` by name."""
    if name == "digits":
        return load_digits(**kwargs)  # type: ignore[arg-type]
    if name in ("fashion-mnist", "fashion_mnist"):
        return load_fashion_mnist(**kwargs)  # type: ignore[arg-type]
    if name == "glyphs":
        return load_glyphs(**kwargs)  # type: ignore[arg-type]
    raise DataError(f"unknown data set {name!r}; choose digits, fashion-mnist or glyphs")


def write_image_tree(
    folder: str | Path, images: torch.Tensor, labels: torch.Tensor, class_names: tuple[str, ...] | None = None
) -> Path:
    """Save images as 8-bit PNGs in an ImageFolder tree, one sub-folder per class (``00_name`` or index)."""
    root = Path(folder)
    for i, (img, label) in enumerate(zip(images, labels, strict=True)):
        k = int(label)
        sub = f"{k:02d}_{class_names[k]}" if class_names else str(k)
        target = root / sub
        target.mkdir(parents=True, exist_ok=True)
        array = (img.clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()
        pil = Image.fromarray(array[..., 0], mode="L") if array.shape[-1] == 1 else Image.fromarray(array, mode="RGB")
        pil.save(target / f"{i:05d}.png")
    return root
