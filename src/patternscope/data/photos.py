"""The bundled real photos: files inside installed packages (scikit-image, scikit-learn, matplotlib,
foolbox), split once and for all into a search set (``photos``) and a held-out labelled set
(``photos-eval``). Nothing is downloaded."""

from __future__ import annotations

import importlib.util
import warnings
from pathlib import Path

from ..errors import DataError
from .image_set import ImageItem, ImageSet

BUNDLED_NAMES = ("photos", "photos-eval")

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
