"""Several processes, GPUs or machines through ``torch.distributed``, as started by ``torchrun``.

``torchrun --nproc-per-node N -m patternscope find dominant ...`` starts N copies of the command; each
calls :func:`init`, which joins the process group torchrun describes in the environment (``RANK``,
``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR``/``MASTER_PORT`` or a rendezvous endpoint). NCCL is used
on CUDA (rank r on GPU ``LOCAL_RANK``), gloo on CPU. Without torchrun everything here is a no-op.

Data-parallel search: every rank builds the same global batch of step t (batches are a pure function of
the seed and the step) and runs forward and backward on its own contiguous slice of it; gradients are
summed with weights (slice size / batch size), so every rank takes the same optimiser step and, for
objectives that are a mean over the batch (dominant, SGD-UAP, Cos-UAP, DF-UAP), the same step as one
process on the whole batch, up to float rounding. Rank 0 alone writes files.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, TypeVar

import torch

from ..errors import PatternscopeError

T = TypeVar("T")


@dataclass(frozen=True)
class DistContext:
    """This process's place in the group: ``rank`` of ``world_size`` (``local_rank`` on its machine)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    backend: str | None = None

    @property
    def active(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


_CURRENT = DistContext()


def current() -> DistContext:
    """The context :func:`init` set up (a single process when not under torchrun)."""
    return _CURRENT


def launched_by_torchrun() -> bool:
    return int(os.environ.get("WORLD_SIZE", "1")) > 1 and "RANK" in os.environ


def init(device: str = "auto") -> tuple[DistContext, str]:
    """Join torchrun's process group (once); return the context and the device this rank should use.

    ``device``: ``auto`` (CUDA when available), ``cpu``, ``cuda`` or ``cuda:N``; under torchrun a CUDA
    request becomes ``cuda:LOCAL_RANK`` with the NCCL backend, anything else uses gloo.
    """
    global _CURRENT
    if not launched_by_torchrun():
        return _CURRENT, device
    import torch.distributed as dist

    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    wants_cuda = device.startswith("cuda") or (device == "auto" and torch.cuda.is_available())
    if wants_cuda and not torch.cuda.is_available():
        raise PatternscopeError(f"--device {device} asked for CUDA, but torch sees no GPU on this machine")
    if wants_cuda:
        if local_rank >= torch.cuda.device_count():
            raise PatternscopeError(
                f"LOCAL_RANK {local_rank} but only {torch.cuda.device_count()} GPU(s): start at most that many "
                "processes per node (--nproc-per-node)"
            )
        device = f"cuda:{local_rank}"
        torch.cuda.set_device(local_rank)
    else:
        device = "cpu"
    if not dist.is_initialized():
        dist.init_process_group("nccl" if wants_cuda else "gloo")
    _CURRENT = DistContext(dist.get_rank(), dist.get_world_size(), local_rank, dist.get_backend())
    return _CURRENT, device


def shutdown() -> None:
    """Leave the process group (after the last collective call)."""
    global _CURRENT
    if _CURRENT.active:
        import torch.distributed as dist

        if dist.is_initialized():
            dist.destroy_process_group()
    _CURRENT = DistContext()


def shard(batch: Any, ctx: DistContext) -> tuple[Any, float]:
    """This rank's contiguous slice of ``batch`` (a tensor or a tuple of tensors along dim 0) and its
    share of the batch (slice size / batch size, the weight of its gradient)."""
    if not ctx.active:
        return batch, 1.0
    first = batch[0] if isinstance(batch, tuple | list) else batch
    total = int(first.shape[0])
    if total < ctx.world_size:
        raise PatternscopeError(
            f"batch of {total} images cannot be split over {ctx.world_size} processes: raise --batch-size "
            f"to at least {ctx.world_size} or start fewer processes"
        )
    bounds = [round(i * total / ctx.world_size) for i in range(ctx.world_size + 1)]
    lo, hi = bounds[ctx.rank], bounds[ctx.rank + 1]
    if isinstance(batch, tuple | list):
        return type(batch)(t[lo:hi] for t in batch), (hi - lo) / total
    return batch[lo:hi], (hi - lo) / total


def all_reduce_grads(tensors: Iterable[torch.Tensor], weight: float, ctx: DistContext) -> None:
    """Replace each tensor's gradient by the weighted sum over ranks (the whole batch's gradient)."""
    if not ctx.active:
        return
    import torch.distributed as dist

    for t in tensors:
        if t.grad is None:
            t.grad = torch.zeros_like(t)
        t.grad.mul_(weight)
        dist.all_reduce(t.grad)


def all_reduce_sum(value: float, ctx: DistContext, device: torch.device | str = "cpu") -> float:
    """``value`` summed over ranks (float64)."""
    if not ctx.active:
        return value
    import torch.distributed as dist

    buf = torch.tensor([value], dtype=torch.float64, device=device)
    dist.all_reduce(buf)
    return float(buf.item())


def barrier(ctx: DistContext) -> None:
    if ctx.active:
        import torch.distributed as dist

        dist.barrier()


def run_everywhere(fn: Callable[[], T], ctx: DistContext) -> T:
    """Run ``fn`` on every rank, then wait for all; a user error on any rank is raised on every rank."""
    if not ctx.active:
        return fn()
    import torch.distributed as dist

    result, failure = None, None
    try:
        result = fn()
    except PatternscopeError as exc:
        failure = exc
    boxes: list[Any] = [None] * ctx.world_size
    dist.all_gather_object(boxes, None if failure is None else (type(failure), str(failure)))
    if failure is not None:
        raise failure
    for box in boxes:
        if box is not None:
            kind, message = box
            raise kind(message)
    return result  # type: ignore[return-value]


def on_main(fn: Callable[[], T], ctx: DistContext) -> T | None:
    """Run ``fn`` on rank 0 only; a user error it raises is raised on every rank (so none waits forever)."""
    if not ctx.active:
        return fn()
    import torch.distributed as dist

    result, failure = None, None
    if ctx.is_main:
        try:
            result = fn()
        except PatternscopeError as exc:
            failure = exc
    box = [None if failure is None else (type(failure), str(failure))]
    dist.broadcast_object_list(box, src=0)
    if box[0] is not None:
        if failure is not None:
            raise failure
        kind, message = box[0]
        raise kind(message)
    return result


__all__ = [
    "DistContext",
    "all_reduce_grads",
    "all_reduce_sum",
    "barrier",
    "current",
    "init",
    "launched_by_torchrun",
    "on_main",
    "run_everywhere",
    "shard",
    "shutdown",
]
