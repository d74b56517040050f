"""Labelled image files read on demand: :class:`ImageBank`, a tensor-like view of N model-sized images
(N x C x H x W in [0,1]) that decodes only the images a batch needs.

The labelled commands (``find classwise``, ``scan``, ``downstream``, ``harden``) index their data the way
they index a tensor: a slice, an index tensor or a boolean mask gives another view (nothing is read), an
integer gives one image, and :func:`take` gives a batch as a tensor. So memory is one batch plus a
bounded cache, whatever the number of files, and the pixel values are exactly those an eager load gives
(:func:`~patternscope.data.labelled.labelled_images`): each file is decoded and resized whole, as before.

Resized images are kept in a cache of at most ``cache_mb`` MB shared by every view of a bank (filled in
the order images are first read, never evicted), so multi-epoch commands decode a set that fits once.
Files are decoded on a few threads (PIL releases the GIL while it decodes).
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from pathlib import Path
from typing import Any

import torch

from ..errors import DataError
from ..runtime import release_free_memory
from .image_set import ImageItem, ImageSet, LazyImage, tensor_set
from .images import resize_to

DEFAULT_CACHE_MB = 2048.0
_MAX_THREADS = 8


def resized_whole(source: ImageSet, index: int, input_size: Sequence[int]) -> torch.Tensor:
    """Image ``index`` of ``source`` converted to the model's channels and resized whole (never cropped)
    to ``input_size`` (C x H x W float in [0,1]): the pixels every labelled command sees."""
    return resize_to(source.load(index, int(input_size[0]))[None], input_size)[0]


class _Store:
    """What every view of one bank shares: the files, the model's input size and the cache."""

    def __init__(self, source: ImageSet, input_size: Sequence[int], cache_mb: float, threads: int) -> None:
        self.source = source
        self.input_size = tuple(int(v) for v in input_size)
        self.limit = int(cache_mb * 2**20)
        self.threads = threads
        self.cache: dict[int, torch.Tensor] = {}
        self.cached_bytes = 0
        self.lock = threading.Lock()
        self.pool: ThreadPoolExecutor | None = None

    def one(self, index: int) -> torch.Tensor:
        """Image ``index`` resized whole to the model's size (C x H x W float in [0,1])."""
        with self.lock:
            hit = self.cache.get(index)
        if hit is not None:
            return hit
        # a file that cannot be decoded raises DataError naming it (labels must stay aligned: no skipping)
        image = resized_whole(self.source, index, self.input_size)
        size = image.numel() * image.element_size()
        with self.lock:
            if index not in self.cache and self.cached_bytes + size <= self.limit:
                self.cache[index] = image
                self.cached_bytes += size
        return image

    def many(self, indices: list[int]) -> torch.Tensor:
        """Images ``indices`` stacked (len x C x H x W); files not in the cache are decoded on threads."""
        out = torch.empty(len(indices), *self.input_size)
        with self.lock:
            missing = sum(1 for i in indices if i not in self.cache)
        if missing < 2 or self.threads < 2:
            for j, i in enumerate(indices):
                out[j] = self.one(i)
        else:
            if self.pool is None:
                self.pool = ThreadPoolExecutor(self.threads, thread_name_prefix="patternscope-bank")
            for j, image in enumerate(self.pool.map(self.one, indices)):
                out[j] = image
        if missing:
            # decoding leaves freed full-size buffers in every thread's arena, which the tuned allocator
            # keeps: without this, the resident size grows with the number of files read
            release_free_memory()
        return out

    def __getstate__(self) -> dict[str, Any]:  # worker processes get the files, not the cache or threads
        state = self.__dict__.copy()
        state.update(cache={}, cached_bytes=0, lock=None, pool=None)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self.lock = threading.Lock()


class ImageBank:
    """N labelled image files as a read-on-demand N x C x H x W tensor in [0,1] (see the module).

    Indexing mirrors a tensor's first dimension: ``bank[3]`` is one image (C x H x W tensor);
    ``bank[2:10]``, ``bank[index_tensor]`` and ``bank[bool_mask]`` are views (banks) that read nothing;
    :meth:`load` (or :func:`take`) reads a view into a tensor.

    Args:
        source: the image files (an :class:`ImageSet`; its own decode cache is turned off, the bank keeps
            model-sized images instead).
        input_size: (C, H, W) every image is converted and resized to, whole (never cropped).
        cache_mb: megabytes of resized images kept in memory (0: none; every read decodes).
        threads: decoding threads (default: the cores this process may use, at most 8).
    """

    ndim = 4
    dtype = torch.float32

    def __init__(
        self,
        source: ImageSet,
        input_size: Sequence[int],
        *,
        cache_mb: float = DEFAULT_CACHE_MB,
        threads: int | None = None,
    ) -> None:
        if cache_mb < 0:
            raise DataError(f"the image cache (--cache-mb) must be >= 0 MB, got {cache_mb:g}")
        if len(input_size) != 3:
            raise DataError(f"input size must be (C, H, W), got {tuple(input_size)}")
        from .loader import available_cpus

        source.cache_limit_mb = 0.0
        n_threads = threads if threads is not None else min(_MAX_THREADS, available_cpus())
        self._store = _Store(source, input_size, cache_mb, max(1, n_threads))
        self._index = torch.arange(len(source))

    @classmethod
    def _view(cls, store: _Store, index: torch.Tensor) -> ImageBank:
        view = cls.__new__(cls)
        view._store, view._index = store, index
        return view

    @property
    def shape(self) -> torch.Size:
        return torch.Size((len(self._index), *self._store.input_size))

    @property
    def device(self) -> torch.device:
        return torch.device("cpu")

    @property
    def indices(self) -> torch.Tensor:
        """Positions of this view's images in the source set (N, int64)."""
        return self._index

    def file_keys(self) -> list[str]:
        """Per image of this view, a key of its source: a file's resolved path, size and modification time (not
        its bytes), else the item's identity (e.g. a tensor's digest)."""
        out = []
        for i in self._index.tolist():
            item = self._store.source.items[i]
            key = item.identity()
            if isinstance(item.source, Path):
                stat = item.source.stat()
                key += f"|{stat.st_size}:{stat.st_mtime_ns}"
            out.append(key)
        return out

    @property
    def cached_bytes(self) -> int:
        """Bytes of resized images held in the cache this bank's views share."""
        return self._store.cached_bytes

    def __len__(self) -> int:
        return len(self._index)

    def __repr__(self) -> str:
        return f"ImageBank({len(self)} x {self._store.input_size} of {self._store.source.description!r})"

    def __getitem__(self, key: int | slice | torch.Tensor | Sequence[int]) -> Any:
        if isinstance(key, int) or (isinstance(key, torch.Tensor) and key.ndim == 0 and not key.is_floating_point()):
            return self._store.one(int(self._index[int(key)])).clone()  # never the cached tensor itself
        if isinstance(key, slice):
            return ImageBank._view(self._store, self._index[key])
        index = torch.as_tensor(key)
        if index.dtype == torch.bool:
            if index.shape != self._index.shape:
                raise IndexError(f"a mask of {tuple(index.shape)} does not fit {len(self)} images")
            return ImageBank._view(self._store, self._index[index])
        if index.is_floating_point():
            raise IndexError("images are indexed by integers or a boolean mask")
        return ImageBank._view(self._store, self._index[index.long()])

    def load(self) -> torch.Tensor:
        """This view's images as one tensor (N x C x H x W, float in [0,1])."""
        return self._store.many(self._index.tolist())

    def as_image_set(self, labels: Sequence[int] | torch.Tensor | None = None, name: str | None = None) -> ImageSet:
        """This view as an :class:`ImageSet` of model-sized images read on demand (what a search's batch
        stream takes, e.g. ``find_pattern(model, bank)``), with ``labels`` (N) if given, described as
        ``name`` (default: the files' description)."""
        source, n = self._store.source, len(self)
        if labels is not None and len(labels) != n:
            raise DataError(f"{len(labels)} labels for {n} images")
        items = []
        for j, i in enumerate(self._index.tolist()):
            item = source.items[i]
            key = f"{item.identity()}@{'x'.join(map(str, self._store.input_size))}"
            label = None if labels is None else int(labels[j])
            items.append(ImageItem(LazyImage(partial(self._store.one, i), key), label, item.name))
        class_names = source.class_names if labels is not None else None
        return ImageSet(items, name or source.description, class_names)

    def cpu(self) -> ImageBank:
        """This bank (it lives on the CPU; batches go to a device through :func:`take`)."""
        return self

    def __getstate__(self) -> dict[str, Any]:
        return {"_store": self._store, "_index": self._index}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self._store, self._index = state["_store"], state["_index"]


Images = torch.Tensor | ImageBank


def image_set_of(images: Images, labels: Sequence[int] | torch.Tensor | None = None, name: str = "tensors") -> ImageSet:
    """An :class:`ImageSet` of an N x C x H x W tensor in [0,1] or of an :class:`ImageBank` (read on demand),
    with optional ``labels`` (N), described as ``name``."""
    if isinstance(images, ImageBank):
        return images.as_image_set(labels, name)
    return tensor_set(images, labels, name)


def take(images: Images, key: int | slice | torch.Tensor | Sequence[int]) -> torch.Tensor:
    """``images[key]`` as a tensor: the same indexing for an N x C x H x W tensor and an :class:`ImageBank`."""
    part = images[key]
    return part.load() if isinstance(part, ImageBank) else part


__all__ = ["DEFAULT_CACHE_MB", "ImageBank", "Images", "image_set_of", "take"]
