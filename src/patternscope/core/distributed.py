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

import contextlib
import os
import signal
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, TypeVar

import torch

from ..errors import LostProcessError, PatternscopeError

# how long a collective waits for a process that stopped answering (hung, or its machine gone) before this one
# gives up; a process that dies closes its connections, and the others notice within a second
TIMEOUT_ENV = "PATTERNSCOPE_DIST_TIMEOUT"
DEFAULT_TIMEOUT_S = 1800.0
LOST_GRACE_S = 2.0  # how long the survivors wait for each other to answer "still here" after a failure

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
        dist.init_process_group("nccl" if wants_cuda else "gloo", timeout=timedelta(seconds=timeout_s()))
    _CURRENT = DistContext(dist.get_rank(), dist.get_world_size(), local_rank, dist.get_backend())
    _stop_on_sigterm()
    return _CURRENT, device


def timeout_s() -> float:
    """Seconds a collective waits for an unresponsive process (``$PATTERNSCOPE_DIST_TIMEOUT``, default 1800)."""
    raw = os.environ.get(TIMEOUT_ENV, "")
    if not raw:
        return DEFAULT_TIMEOUT_S
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not 0 < value < float("inf"):
        raise PatternscopeError(f"${TIMEOUT_ENV} must be a number of seconds > 0, got {raw!r}")
    return value


_IDENTIFYING = [False]  # True while the survivors of a failure find out who is missing


def _stop_on_sigterm() -> None:
    """torchrun stops the other processes with SIGTERM when one fails (or when it is itself told to stop):
    the survivors call the roll; a rank that does not answer makes it a :class:`LostProcessError` naming it,
    otherwise a KeyboardInterrupt (a checkpoint is saved). Ignored while this process already calls the roll."""

    def handler(_signum: int, _frame: Any) -> None:
        if _IDENTIFYING[0]:
            return
        lost = lost_ranks(_CURRENT)
        if lost:
            raise LostProcessError(
                f"lost contact with {_who(lost, _CURRENT)} (torchrun is stopping the group); "
                f"this process (rank {_CURRENT.rank}) stops"
            )
        raise KeyboardInterrupt

    with contextlib.suppress(ValueError):  # not the main thread: leave the default
        signal.signal(signal.SIGTERM, handler)


def lost_ranks(ctx: DistContext, grace: float = LOST_GRACE_S) -> list[int] | None:
    """After a failed collective: the ranks that do not answer "still here" within ``grace`` seconds, found
    through torchrun's key-value store (which outlives the processes); None when the store cannot be reached."""
    import torch.distributed as dist

    _IDENTIFYING[0] = True
    try:
        store = dist.distributed_c10d._get_default_store()
        prefix = "patternscope/still-here/"
        store.set(f"{prefix}{ctx.rank}", "1")
        deadline = time.monotonic() + grace
        missing = list(range(ctx.world_size))
        while missing and time.monotonic() < deadline:
            missing = [r for r in missing if not store.check([f"{prefix}{r}"])]
            if missing:
                time.sleep(0.05)
        return missing
    except Exception:  # the store went with the failure: nobody can be named
        return None
    finally:
        _IDENTIFYING[0] = False


def _who(lost: list[int] | None, ctx: DistContext) -> str:
    if lost:
        return f"rank {', '.join(map(str, lost))} of {ctx.world_size}"
    return f"another of the {ctx.world_size} processes"


@contextlib.contextmanager
def _collective(ctx: DistContext, what: str) -> Iterator[None]:
    """Turn a failed collective (a process died or timed out) into one :class:`LostProcessError` naming the
    lost ranks."""
    try:
        yield
    except RuntimeError as exc:  # gloo/NCCL report a lost peer or a timeout as RuntimeError subclasses
        who = _who(lost_ranks(ctx), ctx)
        reason = " ".join(str(exc).split()).split("] ", 1)[-1].split(". ", 1)[0][:160]
        raise LostProcessError(
            f"lost contact with {who} during {what} ({reason}); this process (rank {ctx.rank}) stops"
        ) from None


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
        with _collective(ctx, "the gradient exchange"):
            dist.all_reduce(t.grad)


def all_reduce_sum(value: float, ctx: DistContext, device: torch.device | str = "cpu") -> float:
    """``value`` summed over ranks (float64)."""
    if not ctx.active:
        return value
    import torch.distributed as dist

    buf = torch.tensor([value], dtype=torch.float64, device=device)
    with _collective(ctx, "a sum over processes"):
        dist.all_reduce(buf)
    return float(buf.item())


def barrier(ctx: DistContext) -> None:
    if ctx.active:
        import torch.distributed as dist

        with _collective(ctx, "a wait for every process"):
            dist.barrier()


def run_everywhere(fn: Callable[[], T], ctx: DistContext) -> T:
    """Run ``fn`` on every rank, then wait for all; a user error on any rank is raised on every rank."""
    if not ctx.active:
        return fn()
    import torch.distributed as dist

    result, failure = None, None
    try:
        result = fn()
    except LostProcessError:  # the group is broken: nothing more can be exchanged
        raise
    except PatternscopeError as exc:
        failure = exc
    boxes: list[Any] = [None] * ctx.world_size
    with _collective(ctx, "a wait for every process"):
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
        except LostProcessError:
            raise
        except PatternscopeError as exc:
            failure = exc
    box = [None if failure is None else (type(failure), str(failure))]
    with _collective(ctx, "a wait for rank 0"):
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
    "lost_ranks",
    "on_main",
    "run_everywhere",
    "shard",
    "shutdown",
    "timeout_s",
]
