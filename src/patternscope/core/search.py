"""The one search loop every method runs on.

A method supplies a *parametrisation* (the tensors being optimised and how to project them back into
their constraint set), an *objective* (batch -> scalar loss) and a *batch source* (step -> batch).
The loop owns everything else: optimiser (Adam, signed steps or SGD), projection after every step,
device and mixed precision, tqdm progress with the current loss, best-window tracking, early stopping,
NaN guards, and atomic checkpoints every N steps that make an interrupted search resume to exactly the
result of an uninterrupted one (batches are a pure function of the seed and the step).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

import torch

from ..data.loader import Batch, step_batches, to_device
from ..errors import LostProcessError, RunDirError, SearchDivergedError
from ..runtime import release_free_memory, tune_cpu_allocator
from . import distributed
from .atomic import atomic_path
from .lean_backward import lean_backward

CHECKPOINT_FORMAT = 1


class Parametrisation(Protocol):
    """What the loop optimises: named leaf tensors, and a projection back into the constraint set."""

    def tensors(self) -> dict[str, torch.Tensor]: ...

    def project_(self) -> None: ...


class SearchInterrupted(Exception):
    """Ctrl-C during a search: a checkpoint was saved at ``step`` and the search can be resumed."""

    def __init__(self, step: int, checkpoint: Path | None) -> None:
        self.step = step
        self.checkpoint = checkpoint
        where = f"; checkpoint saved to {checkpoint}" if checkpoint else ""
        super().__init__(f"search interrupted at step {step}{where}")


class StopSearch(Exception):
    """Raised by an ``on_step`` callback to end the search after the current step (its own stopping rule)."""


class SignedSteps(torch.optim.Optimizer):
    """Signed gradient steps: p <- p - lr * sign(grad) (FGSM-style, as in class-wise patterns)."""

    def __init__(self, params: Any, lr: float = 0.01) -> None:
        super().__init__(params, {"lr": lr})

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> None:  # type: ignore[override]
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is not None:
                    p.add_(p.grad.sign(), alpha=-group["lr"])


LEAN_MIN_VALUES = 1 << 20  # input values per batch from which the search runs under lean_backward


def _input_values(x: Any) -> int:
    """How many input values a batch holds (its first tensor's, for a batch of images and labels)."""
    first = x[0] if isinstance(x, (tuple, list)) else x
    return int(first.numel()) if isinstance(first, torch.Tensor) else 0


@dataclass
class SearchConfig:
    """Settings of the search loop.

    Args:
        steps: optimisation steps (one batch each).
        batch_size: images per step.
        optimizer: ``adam``, ``sign`` (signed steps) or ``sgd``.
        lr: step size (Adam/SGD learning rate, or the signed step in pixel units).
        weight_decay: L2 pull towards 0 (Adam/SGD).
        device: ``cpu``, ``cuda``, ``cuda:N``.
        amp: mixed precision: ``False``, ``"bf16"`` or ``"fp16"`` (fp16 uses a gradient scaler; CUDA only).
        seed: fixes every batch (with the batch source) and so the whole search.
        checkpoint_path: where to save checkpoints (``None``: no checkpoints).
        checkpoint_every: steps between checkpoints.
        resume: continue from ``checkpoint_path`` if it exists.
        window: steps per window for best-pattern tracking and early stopping (mean loss over a window).
        patience: stop after this many windows without improvement (``None``: never stop early).
        min_delta: improvement that counts for early stopping.
        progress: show a tqdm progress bar with the current loss.
        desc: the progress bar's label.
        adam_betas: Adam's (beta1, beta2).
        budget: stop before the passes counted by ``run_search``'s ``meter`` would exceed this (one
            pass = one image through forward and backward); ``steps`` then is only a cap. The next step
            is assumed to cost what the last one did, so fixed-cost recipes never exceed the budget.
        data_parallel: under torchrun (see :mod:`patternscope.core.distributed`), split each batch over the
            ranks and all-reduce the gradients; rank 0 alone writes checkpoints and shows progress.
            Not part of the checkpoint's settings: a run may be resumed with another number of ranks.
        replicated: under torchrun, every rank runs this same search (whole batches, no all-reduce);
            rank 0 alone writes checkpoints and shows progress.
        workers: input-pipeline worker processes building batches ahead (0: one background thread).
            Batches are a pure function of the step, so the result is the same for any number; not part
            of the checkpoint's settings.
        lr_schedule: ``constant`` or ``cosine`` (from ``lr`` down to ``lr * lr_floor`` over ``steps``,
            after a linear warm-up over ``warmup`` steps); the rate is a pure function of the step, so a
            resumed search is exact.
        warmup: warm-up steps of the cosine schedule (0: none).
        lr_floor: the cosine schedule's last rate, as a share of ``lr``.
        lean: keep only what the input gradient needs from the forward pass
            (:func:`~patternscope.core.lean_backward.lean_backward`; the same gradients to the bit, a
            fraction of the memory) for batches of at least :data:`LEAN_MIN_VALUES` input values; smaller
            ones save little and pay its Python overhead (10-15% on the tests' tiny models, 4% on
            EfficientNet-Lite0 at 224). Not part of the checkpoint's settings.
    """

    steps: int = 1000
    batch_size: int = 32
    optimizer: str = "adam"
    lr: float = 1e-2
    weight_decay: float = 0.0
    device: str = "cpu"
    amp: bool | str = False
    seed: int = 0
    checkpoint_path: Path | None = None
    checkpoint_every: int = 50
    resume: bool = False
    window: int = 20
    patience: int | None = None
    min_delta: float = 1e-4
    progress: bool = True
    desc: str = "search"
    budget: float | None = None
    adam_betas: tuple[float, float] = (0.9, 0.999)
    data_parallel: bool = False
    replicated: bool = False
    workers: int = 0
    lr_schedule: str = "constant"
    warmup: int = 0
    lr_floor: float = 0.0
    lean: bool = True

    def fingerprint(self) -> dict[str, Any]:
        """Settings that must match for a checkpoint to be resumed (not ``steps``, so runs can be extended,
        except under a schedule, whose rates depend on it)."""
        keys: tuple[str, ...] = ("batch_size", "optimizer", "lr", "weight_decay", "seed", "window")
        if self.lr_schedule != "constant":
            keys += ("lr_schedule", "warmup", "lr_floor", "steps")
        return {k: asdict(self)[k] for k in keys}

    def lr_at(self, step: int) -> float:
        """The learning rate of ``step`` (0-based) under the schedule."""
        if self.lr_schedule == "constant":
            return self.lr
        if self.lr_schedule != "cosine":
            raise ValueError(f"lr_schedule must be constant or cosine, got {self.lr_schedule!r}")
        if step < self.warmup:
            return self.lr * (step + 1) / (self.warmup + 1)
        span = max(1, self.steps - self.warmup - 1)
        t = min(1.0, (step - self.warmup) / span)
        return self.lr * (self.lr_floor + (1 - self.lr_floor) * 0.5 * (1 + math.cos(math.pi * t)))


@dataclass
class SearchResult:
    """What the loop did: losses per step, the best window's tensors, timing."""

    steps_done: int
    history: list[float]
    best_loss: float
    best_step: int
    best_tensors: dict[str, torch.Tensor] = field(repr=False)
    stopped_early: bool
    seconds: float
    resumed_from: int | None
    images_seen: int
    passes: float | None = None

    def summary(self) -> dict[str, Any]:
        return {
            "steps_done": self.steps_done,
            "final_loss": self.history[-1] if self.history else None,
            "best_window_loss": self.best_loss,
            "best_step": self.best_step,
            "stopped_early": self.stopped_early,
            "seconds": round(self.seconds, 3),
            "resumed_from": self.resumed_from,
            "images_seen": self.images_seen,
            "passes": None if self.passes is None else round(self.passes, 2),
        }


def make_optimizer(params: list[torch.Tensor], config: SearchConfig) -> torch.optim.Optimizer:
    if config.optimizer == "adam":
        return torch.optim.Adam(params, lr=config.lr, betas=config.adam_betas, weight_decay=config.weight_decay)
    if config.optimizer == "sign":
        return SignedSteps(params, lr=config.lr)
    if config.optimizer == "sgd":
        return torch.optim.SGD(params, lr=config.lr, weight_decay=config.weight_decay)
    raise ValueError(f"optimizer must be adam, sign or sgd, got {config.optimizer!r}")


def _amp_dtype(amp: bool | str, device: torch.device) -> torch.dtype | None:
    if not amp:
        return None
    if amp is True or amp == "bf16":
        return torch.bfloat16
    if amp == "fp16":
        return torch.float16 if device.type == "cuda" else torch.bfloat16
    raise ValueError(f"amp must be False, 'bf16' or 'fp16', got {amp!r}")


def _save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    with atomic_path(path) as tmp:
        torch.save(state, tmp)


def load_checkpoint(path: Path) -> dict[str, Any]:
    """Read a checkpoint written by the loop (tensors and plain data only; ``weights_only``)."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # a corrupt file must not look like a crash deep in torch
        raise RunDirError(f"checkpoint {path} cannot be read ({type(exc).__name__}); delete it to start over") from None
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        raise RunDirError(f"{path} is not a patternscope checkpoint; delete it to start over")
    return state


def run_search(
    param: Parametrisation,
    objective: Callable[[Any], torch.Tensor],
    batches: Callable[[int, int], Batch],
    config: SearchConfig,
    *,
    identity: dict[str, Any] | None = None,
    on_step: Callable[[int, float], None] | None = None,
    meter: Callable[[], float] | None = None,
) -> SearchResult:
    """Optimise ``param`` to minimise ``objective`` over ``batches(step, batch_size)``.

    A batch is a tensor or a tuple of tensors (e.g. images and labels); the objective gets it as is.
    ``on_step(step, loss)`` runs after each step and may raise :class:`StopSearch` to end the search.
    ``meter`` returns the passes spent so far (e.g. ``model.passes.cost``); with ``config.budget`` the
    search stops before exceeding it.

    ``identity`` (method, model, eps, ...) is stored in checkpoints with the loop settings; resuming with
    different values is refused. Raises :class:`SearchDivergedError` on NaN/inf (the last good
    checkpoint is kept) and :class:`SearchInterrupted` on Ctrl-C (after saving a checkpoint).
    """
    loop = _SearchLoop.start_for(param, config, identity, meter)
    ckpt = config.checkpoint_path
    if config.resume and ckpt is not None and ckpt.exists():
        loop.restore(load_checkpoint(ckpt))
    param.project_()
    host_batches = step_batches(
        batches, config.batch_size, range(loop.start, config.steps), workers=config.workers, device=loop.device
    )
    bar = loop.progress_bar()
    t0 = time.perf_counter()
    loop.step = loop.start
    try:
        loop.run(host_batches, objective, bar, on_step, meter)
    except KeyboardInterrupt:
        loop.save()
        raise SearchInterrupted(loop.step, ckpt) from None
    except LostProcessError as exc:  # mid-step, the ranks may disagree: the last periodic checkpoint is exact
        kept = (
            f"the checkpoint of step {load_checkpoint(ckpt)['step']} is kept; run the same torchrun command with "
            "--resume to continue"
            if ckpt is not None and ckpt.exists()
            else "no checkpoint was written yet"
        )
        raise LostProcessError(f"{exc} at step {loop.step}; {kept}") from None
    finally:
        bar.close()
        host_batches.close()
        release_free_memory()  # the steps' blocks, kept for reuse while searching, are not needed after it
    return loop.result(t0, meter)


@dataclass
class _SearchLoop:
    """One search's settings and its state between steps (the state is what a checkpoint holds)."""

    param: Parametrisation
    config: SearchConfig
    device: torch.device
    ctx: distributed.DistContext
    writer: bool  # this rank writes checkpoints and shows progress
    tensors: dict[str, torch.Tensor]
    optimizer: torch.optim.Optimizer
    amp_dtype: torch.dtype | None
    scaler: torch.amp.GradScaler
    fingerprint: dict[str, Any]
    best: dict[str, Any]
    start: int = 0
    step: int = 0
    history: list[float] = field(default_factory=list)
    stale_windows: int = 0
    spent: float = 0.0  # passes so far
    step_cost: float = 0.0  # passes of the last step
    stopped_early: bool = False
    resumed_from: int | None = None

    @classmethod
    def start_for(
        cls,
        param: Parametrisation,
        config: SearchConfig,
        identity: dict[str, Any] | None,
        meter: Callable[[], float] | None,
    ) -> _SearchLoop:
        """A fresh loop: device, optimiser, mixed precision and the checkpoint fingerprint set up."""
        ctx = distributed.current() if config.data_parallel else distributed.DistContext()
        writer = distributed.current().is_main if (config.data_parallel or config.replicated) else True
        device = torch.device(config.device)
        if device.type == "cpu":
            tune_cpu_allocator()
        tensors = param.tensors()
        optimizer = make_optimizer(list(tensors.values()), config)
        amp_dtype = _amp_dtype(config.amp, device)
        scaler = torch.amp.GradScaler("cuda", enabled=amp_dtype is torch.float16 and device.type == "cuda")
        fingerprint = {**config.fingerprint(), **(identity or {})}
        if config.budget is not None:
            if meter is None:
                raise ValueError("a budget needs a meter of passes")
            fingerprint["budget"] = config.budget
        best = {"loss": math.inf, "step": 0, "tensors": {k: v.detach().clone() for k, v in tensors.items()}}
        return cls(param, config, device, ctx, writer, tensors, optimizer, amp_dtype, scaler, fingerprint, best)

    def restore(self, state: dict[str, Any]) -> None:
        """Continue from checkpoint ``state`` (refused if it was made with other settings)."""
        if state["fingerprint"] != self.fingerprint:
            diff = {
                k: (state["fingerprint"].get(k), v)
                for k, v in self.fingerprint.items()
                if state["fingerprint"].get(k) != v
            }
            raise RunDirError(
                f"checkpoint {self.config.checkpoint_path} was made with other settings {diff} (saved, now); "
                "resume with the same settings or start a new run folder"
            )
        with torch.no_grad():
            for name, value in state["tensors"].items():
                self.tensors[name].copy_(value.to(self.device))
        self.optimizer.load_state_dict(state["optimizer"])
        if state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])
        self.start, self.history = int(state["step"]), list(state["history"])
        self.best = {
            "loss": state["best"]["loss"],
            "step": state["best"]["step"],
            "tensors": {k: v.to(self.device) for k, v in state["best"]["tensors"].items()},
        }
        self.stale_windows = int(state.get("stale_windows", 0))
        self.spent, self.step_cost = float(state.get("spent", 0.0)), float(state.get("step_cost", 0.0))
        self.resumed_from = self.start

    def snapshot(self) -> dict[str, Any]:
        """The checkpoint of the current step."""
        return {
            "format": CHECKPOINT_FORMAT,
            "step": self.step,
            "fingerprint": self.fingerprint,
            "tensors": {k: v.detach().cpu().clone() for k, v in self.tensors.items()},
            "optimizer": self.optimizer.state_dict(),
            "scaler": self.scaler.state_dict() if self.scaler.is_enabled() else None,
            "history": self.history,
            "best": {
                "loss": self.best["loss"],
                "step": self.best["step"],
                "tensors": {k: v.cpu() for k, v in self.best["tensors"].items()},
            },
            "stale_windows": self.stale_windows,
            "spent": self.spent,
            "step_cost": self.step_cost,
        }

    def save(self) -> None:
        """Write the checkpoint of the current step (if there is a checkpoint path and this rank writes)."""
        if self.config.checkpoint_path is not None and self.writer:
            _save_checkpoint(self.config.checkpoint_path, self.snapshot())

    def progress_bar(self) -> Any:
        """A tqdm bar counting steps, or passes under a budget."""
        from tqdm.auto import tqdm

        config, budget = self.config, self.config.budget
        return tqdm(
            total=int(budget) if budget is not None else config.steps,
            initial=min(round(self.spent), int(budget)) if budget is not None else self.start,
            unit="pass" if budget is not None else "step",
            desc=config.desc,
            disable=not config.progress or not self.writer,
            dynamic_ncols=True,
            leave=True,
        )

    def over_budget(self) -> bool:
        """Whether one more step like the last one would exceed the budget."""
        budget = self.config.budget
        return budget is not None and self.spent + self.step_cost > budget + 1e-6

    def run(
        self,
        host_batches: Iterator[Batch],
        objective: Callable[[Any], torch.Tensor],
        bar: Any,
        on_step: Callable[[int, float], None] | None,
        meter: Callable[[], float] | None,
    ) -> None:
        """Step until ``config.steps``, the budget, early stopping or :class:`StopSearch`, checkpointing on the way."""
        config, ckpt, budget = self.config, self.config.checkpoint_path, self.config.budget
        while self.step < config.steps:
            if budget is not None and self.step > self.start and self.over_budget():
                break
            x, share = distributed.shard(to_device(next(host_batches), self.device), self.ctx)
            loss_value = self.advance(x, share, objective, meter)
            self.track_window()
            last = self.step == config.steps or self.over_budget()
            if (
                ckpt is not None
                and self.writer
                and (self.step % config.checkpoint_every == 0 or last or self.stopped_early)
            ):
                _save_checkpoint(ckpt, self.snapshot())
            if on_step is not None:
                try:
                    on_step(self.step, loss_value)
                except StopSearch:
                    self.stopped_early = True
                    self.save()
            if budget is not None:
                bar.update(min(round(self.spent), int(budget)) - bar.n)
            else:
                bar.update(1)
            if self.step % 5 == 0 or last:
                bar.set_postfix(loss=f"{loss_value:.4f}", refresh=False)
            if self.stopped_early:
                break

    def advance(
        self, x: Any, share: float, objective: Callable[[Any], torch.Tensor], meter: Callable[[], float] | None
    ) -> float:
        """One optimisation step on batch ``x`` (this rank's ``share`` of it); returns the whole batch's loss."""
        config, device, ckpt = self.config, self.device, self.config.checkpoint_path
        before = meter() if meter is not None else 0.0
        if config.lr_schedule != "constant":
            for group in self.optimizer.param_groups:
                group["lr"] = config.lr_at(self.step)
        self.optimizer.zero_grad(set_to_none=True)
        with (
            lean_backward(config.lean and _input_values(x) >= LEAN_MIN_VALUES),
            torch.autocast(device.type, dtype=self.amp_dtype or torch.float32, enabled=self.amp_dtype is not None),
        ):
            loss = objective(x)
        loss_value = float(loss.detach())
        if self.ctx.active:  # the whole batch's loss: every rank sees the same value and stops together
            loss_value = distributed.all_reduce_sum(loss_value * share, self.ctx, device)
        if not math.isfinite(loss_value):
            raise SearchDivergedError(_diverged_message(self.step, loss_value, ckpt))
        self.scaler.scale(loss).backward()
        distributed.all_reduce_grads(self.tensors.values(), share, self.ctx)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.param.project_()
        if any(not torch.isfinite(t).all() for t in self.tensors.values()):
            raise SearchDivergedError(_diverged_message(self.step, math.nan, ckpt))
        self.history.append(loss_value)
        self.step += 1
        if meter is not None:
            self.step_cost = distributed.all_reduce_sum(meter() - before, self.ctx, device)
            self.spent += self.step_cost
        return loss_value

    def track_window(self) -> None:
        """At a window's end: keep the tensors if its mean loss is the best, and count stale windows."""
        config = self.config
        if self.step % config.window == 0:
            window_loss = sum(self.history[-config.window :]) / config.window
            if window_loss < self.best["loss"] - config.min_delta:
                self.best = {
                    "loss": window_loss,
                    "step": self.step,
                    "tensors": {k: v.detach().clone() for k, v in self.tensors.items()},
                }
                self.stale_windows = 0
            else:
                self.stale_windows += 1
            if config.patience is not None and self.stale_windows >= config.patience:
                self.stopped_early = True

    def result(self, t0: float, meter: Callable[[], float] | None) -> SearchResult:
        """The finished search (started at ``time.perf_counter()`` ``t0``)."""
        if self.best["loss"] == math.inf:  # fewer steps than one window: the best is the last
            self.best = {
                "loss": self.history[-1] if self.history else math.inf,
                "step": self.step,
                "tensors": {k: v.detach().clone() for k, v in self.tensors.items()},
            }
        return SearchResult(
            steps_done=self.step,
            history=self.history,
            best_loss=float(self.best["loss"]),
            best_step=int(self.best["step"]),
            best_tensors={k: v.detach().cpu() for k, v in self.best["tensors"].items()},
            stopped_early=self.stopped_early,
            seconds=time.perf_counter() - t0,
            resumed_from=self.resumed_from,
            images_seen=(self.step - self.start) * self.config.batch_size,
            passes=self.spent if meter is not None else None,
        )


def _diverged_message(step: int, value: float, ckpt: Path | None) -> str:
    kept = f"; the last good checkpoint is kept at {ckpt}" if ckpt is not None and ckpt.exists() else ""
    return (
        f"the search produced a non-finite loss ({value}) at step {step}{kept}. "
        "Lower the learning rate, turn off mixed precision (--amp off), or check the model's outputs"
    )
