"""The input pipeline: batches built ahead of the model, in worker processes or one background thread,
uint8 on the host and converted to [0,1] floats on the device.

Two walks share it. :func:`step_batches` serves a search: batch ``t`` is ``batches(t, batch_size)``, a
pure function of the step, so the same run gives the same batches, bit for bit, with 0, 1 or N
workers, and a resumed run continues exactly. :func:`eval_batches` streams an :class:`ImageSet`'s
evaluation crops once, a few images at a time, so memory stays O(batch x workers) whatever the number
of images. ``workers=0`` builds batches on one background thread (one intra-op thread, so it does not
fight the model for the cores); ``workers >= 1`` uses :class:`torch.utils.data.DataLoader` worker
processes, with pinned memory and non-blocking copies on CUDA.

Images that cannot be decoded are skipped, never fatal to a worker: each is named once in a warning
and counted (:attr:`EvalBatch.skipped`).
"""

from __future__ import annotations

import os
import queue
import threading
import warnings
from collections.abc import Callable, Generator, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset

from ..errors import DataError
from ..runtime import use_default_allocator
from .image_set import ImageSet
from .images import check_views

Batch = torch.Tensor | tuple[torch.Tensor, ...]

_failed_reads: list[str] = []  # names of images this process could not decode, drained with each batch


def note_failed_read(name: str) -> None:
    """Record that image ``name`` could not be decoded (reported once, by the main process)."""
    _failed_reads.append(name)


def _drain_failed_reads() -> list[str]:
    names = list(_failed_reads)
    _failed_reads.clear()
    return names


def available_cpus() -> int:
    """CPU cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def default_workers(device: str | torch.device) -> int:
    """Worker processes for the input pipeline when ``--workers`` is not given.

    On a GPU: one per core up to 8, leaving one for the main process (which launches the kernels). On
    the CPU the model needs the cores itself: 0 (one background thread, measured at 0.95x or better of
    a loop with free batches on 2 cores).
    """
    if torch.device(device).type == "cpu":
        return 0
    return max(1, min(8, available_cpus() - 1))


def check_workers(workers: int | None) -> None:
    if workers is not None and not 0 <= workers <= 256:
        raise DataError(f"workers must be between 0 and 256, got {workers}")


def to_device(batch: Batch, device: torch.device) -> Batch:
    """A host batch on ``device``: uint8 images become float in [0,1] there (a quarter of the copy)."""

    def move(t: torch.Tensor) -> torch.Tensor:
        t = t.to(device, non_blocking=t.is_pinned())
        return t.float().div_(255.0) if t.dtype == torch.uint8 else t

    return tuple(move(t) for t in batch) if isinstance(batch, tuple) else move(batch)


class _Failure:
    """A worker's error, carried back as a value so that the main process raises it as one clear line."""

    def __init__(self, message: str) -> None:
        self.message = message


# ---------------------------------------------------------------------------------------------------
# Search batches: a pure function of the step


class _StepBatches(Dataset[Any]):
    def __init__(self, batches: Callable[[int, int], Batch], batch_size: int) -> None:
        self.batches = batches
        self.batch_size = batch_size

    def __getitem__(self, step: int) -> tuple[Batch, list[str]] | _Failure:
        try:
            batch = self.batches(step, self.batch_size)
        except DataError as exc:
            return _Failure(str(exc))
        return batch, _drain_failed_reads()


def step_batches(
    batches: Callable[[int, int], Batch],
    batch_size: int,
    steps: range,
    *,
    workers: int = 0,
    device: str | torch.device = "cpu",
) -> Generator[Batch, None, None]:
    """``batches(step, batch_size)`` for each step in ``steps``, built ahead (see the module), on the host.

    Pass each through :func:`to_device`. Stopping early is fine: closing the iterator stops the workers.
    """
    check_workers(workers)
    pin = torch.device(device).type == "cuda"
    warned: set[str] = set()
    for item in _prefetched(_StepBatches(batches, batch_size), steps, None, workers, pin):
        if isinstance(item, _Failure):
            raise DataError(item.message)
        batch, failed = item
        _warn_skipped(failed, warned)
        yield batch


# ---------------------------------------------------------------------------------------------------
# Evaluation batches: every image once


@dataclass
class EvalBatch:
    """Evaluation crops of a few images: ``images`` (N x C x H x W, uint8 for files, float in [0,1]
    for tensors), their ``labels`` (-1 where unknown), the index of the image each crop comes from,
    and the names of images in this slice that could not be decoded (skipped)."""

    images: torch.Tensor
    labels: torch.Tensor
    image_index: torch.Tensor
    skipped: list[str] = field(default_factory=list)


class _EvalViews(Dataset[Any]):
    def __init__(self, images: ImageSet, input_size: Sequence[int], views: int) -> None:
        self.images = images
        self.input_size = tuple(int(v) for v in input_size)
        self.views = views

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> tuple[int, torch.Tensor | None, int, str]:
        item = self.images.items[index]
        label = -1 if item.label is None else int(item.label)
        try:
            return index, self.images.views(index, self.input_size, self.views), label, item.name
        except DataError:
            return index, None, label, item.name


def _collate_views(items: list[tuple[int, torch.Tensor | None, int, str]]) -> EvalBatch:
    good = [(i, v, y) for i, v, y, _ in items if v is not None]
    skipped = [name for _, v, _, name in items if v is None]
    if not good:
        empty = torch.empty(0, dtype=torch.uint8)
        return EvalBatch(empty, torch.empty(0, dtype=torch.long), torch.empty(0, dtype=torch.long), skipped)
    stacks = [v for _, v, _ in good]
    if len({s.dtype for s in stacks}) > 1:  # a mix of files and tensors: all as floats
        stacks = [s.float() / 255.0 if s.dtype == torch.uint8 else s for s in stacks]
    counts = [s.shape[0] for s in stacks]
    index = torch.repeat_interleave(torch.tensor([i for i, _, _ in good]), torch.tensor(counts))
    labels = torch.repeat_interleave(torch.tensor([y for _, _, y in good], dtype=torch.long), torch.tensor(counts))
    return EvalBatch(torch.cat(stacks), labels, index, skipped)


def eval_batches(
    images: ImageSet,
    input_size: Sequence[int],
    *,
    views: int = 1,
    batch_size: int = 64,
    workers: int = 0,
    device: str | torch.device = "cpu",
) -> Iterator[EvalBatch]:
    """The evaluation crops of every image in ``images``, in order, about ``batch_size`` crops at a time.

    Memory is O(batch_size x workers) whatever ``len(images)``. Images that cannot be decoded are
    skipped (named once in a warning, listed in each batch's ``skipped``).
    """
    check_views(views)
    check_workers(workers)
    if len(images) == 0:
        raise DataError(f"no images in {images.description or 'the evaluation set'}")
    per_batch = max(1, batch_size // views)
    chunks = [list(range(s, min(s + per_batch, len(images)))) for s in range(0, len(images), per_batch)]
    pin = torch.device(device).type == "cuda"
    warned: set[str] = set()
    for batch in _prefetched(_EvalViews(images, input_size, views), chunks, _collate_views, workers, pin):
        _warn_skipped(batch.skipped, warned)
        yield batch


# ---------------------------------------------------------------------------------------------------
# Building ahead: worker processes or one thread


def _prefetched(
    dataset: Dataset[Any],
    order: Iterable[Any],
    collate: Callable[[Any], Any] | None,
    workers: int,
    pin_memory: bool,
) -> Iterator[Any]:
    """Items of ``dataset`` in ``order`` (single indices, or lists of them collated by ``collate``)."""
    batched = collate is not None
    loader: DataLoader[Any] = DataLoader(
        dataset,
        batch_size=1 if batched else None,  # 1: the DataLoader's "not set" when a batch sampler is given
        sampler=order if not batched else None,
        batch_sampler=order if batched else None,
        collate_fn=collate if batched else _identity,
        num_workers=workers,
        pin_memory=pin_memory,
        prefetch_factor=2 if workers > 0 else None,
        worker_init_fn=_default_allocator if workers > 0 else None,
    )
    if workers > 0:
        yield from loader
        return
    yield from _on_a_thread(iter(loader), ahead=2)


def _default_allocator(_worker: int) -> None:
    use_default_allocator()  # the main process may have raised the thresholds for its own buffers


def _identity(item: Any) -> Any:
    return item


_DONE = object()


def _on_a_thread(items: Iterator[Any], ahead: int) -> Iterator[Any]:
    """``items`` produced on a background thread (one intra-op thread), up to ``ahead`` ready in advance."""
    ready: queue.Queue[Any] = queue.Queue(maxsize=ahead)
    stop = threading.Event()

    def produce() -> None:
        torch.set_num_threads(1)
        try:
            for item in items:
                while not stop.is_set():
                    try:
                        ready.put((item, None), timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
            ready.put((_DONE, None))
        except BaseException as exc:  # handed to the consumer, raised there
            ready.put((_DONE, exc))

    thread = threading.Thread(target=produce, name="patternscope-batches", daemon=True)
    thread.start()
    try:
        while True:
            item, error = ready.get()
            if error is not None:
                raise error
            if item is _DONE:
                return
            yield item
    finally:
        stop.set()
        while thread.is_alive():
            try:
                ready.get_nowait()
            except queue.Empty:
                thread.join(timeout=0.05)


def _warn_skipped(names: list[str], warned: set[str]) -> None:
    new = [n for n in names if n not in warned]
    for name in new:
        warned.add(name)
        warnings.warn(f"skipped image {name!r}: it cannot be decoded", stacklevel=4)
