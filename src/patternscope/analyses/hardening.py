"""Hardening: fine-tune a classifier against its own universal patterns (universal adversarial training).

Universal adversarial training (Shafahi, Najibi, Xu, Dickerson, Davis, Goldstein, 2020) alternates two
updates on every batch of labelled images x, y (pixel space [0,1]):

1. pattern: ``delta_steps`` ascent steps on a universal δ (||δ|| <= eps) that raise the model's
   cross-entropy on clip(x + δ) (signed steps of ``delta_step`` for L∞, normalised steps for L2);
2. model: one Adam step on ``clean_weight * CE(f(x), y) + (1 - clean_weight) * CE(f(clip(x + δ)), y)``.

δ is universal (one per pool slot, shared by all images) and carried from batch to batch. A pool of a
few δs, used in turn, keeps the model from merely learning to ignore one pattern. The network is
fine-tuned in eval mode (BatchNorm statistics and dropout as deployed), every parameter trainable.

After every epoch the clean top-1 accuracy on held-out images is measured. The weights kept are those
of the last epoch whose accuracy is at least the original's minus ``max_accuracy_drop``; if no epoch
stays within that bound, :class:`HardeningError` says so and suggests what to change.

Long runs checkpoint atomically every ``checkpoint_every`` batches and at each epoch's end; ``resume``
continues to the same weights an uninterrupted run gives (the batch order depends only on the seed and
the epoch).
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from ..core.atomic import atomic_path
from ..core.classifier import Classifier
from ..core.metrics import fooling_ratio
from ..core.models import on_device
from ..core.patterns import NORMS, project
from ..core.predict import predict
from ..core.search import SearchInterrupted
from ..data.bank import Images, take
from ..errors import HardeningError, PatternError, SearchDivergedError

CHECKPOINT_VERSION = 1
OBJECTIVES = ("ce", "dominant", "mixed")


@dataclass
class HardenConfig:
    """Universal adversarial training settings (pixel space [0,1]).

    Args:
        eps: budget of the training patterns (L∞ by default: 10/255); match the patterns you defend against.
        norm: ``linf`` or ``l2``.
        epochs: passes over the training images.
        lr: Adam learning rate of the model update.
        batch_size: images per step.
        delta_steps: pattern ascent steps per batch.
        delta_step: size of one pattern step (None: eps / 4).
        pool: number of universal patterns trained in turn.
        clean_weight: weight of the clean images' loss in the model update, in [0, 1).
        loss_clamp: cap on each image's cross-entropy in the pattern update (Shafahi's clamped loss;
            None: no cap), so images already fooled stop steering the pattern.
        max_accuracy_drop: largest allowed fall of held-out clean accuracy (absolute, e.g. 0.02 = 2 points).
        objective: what the training patterns maximise: ``ce`` (the model's cross-entropy, as in Shafahi
            et al.), ``dominant`` (the dominant-pattern objective: f(x + δ) aligned with f(δ)) or
            ``mixed`` (pool slots alternate between the two; the default).
        seed: batch order.
    """

    eps: float = 10 / 255
    norm: str = "linf"
    epochs: int = 20
    lr: float = 1e-3
    batch_size: int = 64
    delta_steps: int = 3
    delta_step: float | None = None
    pool: int = 4
    clean_weight: float = 0.5
    loss_clamp: float | None = None
    max_accuracy_drop: float = 0.02
    objective: str = "mixed"
    seed: int = 0

    def __post_init__(self) -> None:
        problems = []
        if self.objective not in OBJECTIVES:
            problems.append(f"objective must be one of {', '.join(OBJECTIVES)}, got {self.objective!r}")
        if self.norm not in NORMS:
            problems.append(f"norm must be one of {', '.join(NORMS)}, got {self.norm!r}")
        if not (self.eps > 0 and math.isfinite(self.eps)):
            problems.append(f"eps must be a positive number, got {self.eps}")
        if self.norm == "linf" and self.eps > 1:
            problems.append(f"an L∞ eps of {self.eps} is larger than the whole [0,1] pixel range")
        for name in ("epochs", "batch_size", "delta_steps", "pool"):
            if getattr(self, name) < 1:
                problems.append(f"{name.replace('_', '-')} must be >= 1, got {getattr(self, name)}")
        if not (self.lr > 0 and math.isfinite(self.lr)):
            problems.append(f"lr must be a positive number, got {self.lr}")
        if self.delta_step is not None and not self.delta_step > 0:
            problems.append(f"delta-step must be > 0, got {self.delta_step}")
        if not 0 <= self.clean_weight < 1:
            problems.append(f"clean-weight must be in [0, 1) (1 never trains on patterns), got {self.clean_weight}")
        if self.loss_clamp is not None and not self.loss_clamp > 0:
            problems.append(f"loss-clamp must be > 0, got {self.loss_clamp}")
        if not 0 <= self.max_accuracy_drop <= 1:
            problems.append(f"max-accuracy-drop must be in [0, 1], got {self.max_accuracy_drop}")
        if problems:
            raise PatternError("; ".join(problems))

    @property
    def step_size(self) -> float:
        """The pattern step (``delta_step``, or eps / 4)."""
        return self.delta_step if self.delta_step is not None else self.eps / 4


@dataclass
class HardenEpoch:
    """One epoch of hardening: mean training loss, held-out clean accuracy, and the held-out fooling
    ratio of the training patterns (mean over the pool) on the model at the epoch's end."""

    epoch: int
    loss: float
    accuracy: float
    pool_fooling_ratio: float
    within_bound: bool
    seconds: float


@dataclass
class HardenResult:
    """A hardened model and how it got there.

    ``model`` holds the weights of ``chosen_epoch`` (the last epoch within the accuracy bound), frozen,
    in eval mode. ``patterns`` are the training pool's patterns at the end (pool x C x H x W).
    """

    model: Classifier
    config: HardenConfig
    accuracy_before: float
    accuracy_after: float
    chosen_epoch: int
    history: list[HardenEpoch]
    patterns: torch.Tensor
    seconds: float
    resumed_from: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def summary(self) -> dict[str, Any]:
        return {
            "config": asdict(self.config),
            "accuracy_before": self.accuracy_before,
            "accuracy_after": self.accuracy_after,
            "accuracy_bound": self.accuracy_before - self.config.max_accuracy_drop,
            "chosen_epoch": self.chosen_epoch,
            "history": [asdict(h) for h in self.history],
            "seconds": round(self.seconds, 2),
            "resumed_from": self.resumed_from,
        }


def _held_out_scores(
    model: Classifier, x: Images, y: torch.Tensor, deltas: torch.Tensor, batch_size: int
) -> tuple[float, float]:
    """(clean accuracy, mean fooling ratio of the pool's patterns) on held-out images."""
    clean = predict(model, x, batch_size).top1
    accuracy = float((clean == y).float().mean())
    fooled = [fooling_ratio(clean, predict(model, x, batch_size, d).top1) for d in deltas]
    return accuracy, sum(fooled) / len(fooled)


def trainable_copy(model: Classifier) -> Classifier:
    """A deep copy of ``model`` whose network parameters take gradients (still in eval mode)."""
    twin = copy.deepcopy(model)
    for p in twin.net.parameters():
        if p.is_floating_point():
            p.requires_grad_(True)
    return twin


def _ascend(
    model: Classifier, delta: torch.Tensor, x: torch.Tensor, y: torch.Tensor, config: HardenConfig, objective: str
) -> torch.Tensor:
    """``delta_steps`` steps on δ that raise the (optionally clamped) cross-entropy of clip(x + δ)
    (``ce``), or the cosine similarity of f(clip(x + δ)) to f(δ) (``dominant``: the dominant-pattern
    objective, label-free)."""
    for _ in range(config.delta_steps):
        d = delta.detach().requires_grad_(True)
        with torch.enable_grad():
            logits = model((x + d).clamp(0, 1))
            if objective == "dominant":
                gain = F.cosine_similarity(model(d[None]).expand_as(logits), logits, dim=1)
            else:
                gain = F.cross_entropy(logits, y, reduction="none")
                if config.loss_clamp is not None:
                    gain = gain.clamp(max=config.loss_clamp)
            (grad,) = torch.autograd.grad(gain.mean(), d)
        with torch.no_grad():
            if config.norm == "linf":
                step = grad.sign()
            else:
                step = grad / grad.norm().clamp_min(1e-12)
            delta = project(d.detach() + config.step_size * step, config.eps, config.norm)
    return delta.detach()


def _slot_objective(config: HardenConfig, slot: int) -> str:
    """The pattern objective of pool slot ``slot``: ``mixed`` alternates cross-entropy and dominant."""
    if config.objective != "mixed":
        return config.objective
    return "ce" if slot % 2 == 0 else "dominant"


def _state_copy(model: Classifier) -> dict[str, torch.Tensor]:
    return {k: v.detach().cpu().clone() for k, v in model.net.state_dict().items()}


def harden_model(
    model: Classifier,
    x: Images,
    y: torch.Tensor,
    held_x: Images,
    held_y: torch.Tensor,
    config: HardenConfig | None = None,
    *,
    device: str | torch.device | None = None,
    checkpoint: str | Path | None = None,
    checkpoint_every: int = 50,
    resume: bool = False,
    progress: bool = True,
    on_epoch: Callable[[HardenEpoch], None] | None = None,
) -> HardenResult:
    """Fine-tune a copy of ``model`` against universal patterns of budget ``config.eps`` (see the module).

    Args:
        model: the classifier to harden (left unchanged; inputs in [0,1]).
        x: training images (N x C x H x W in [0,1]; a tensor, or an image bank read batch by batch).
        y: their labels (N).
        held_x: held-out images for the accuracy bound (never trained on).
        held_y: their labels.
        config: :class:`HardenConfig` (defaults when None).
        device: where to train (default: the model's device; the model is moved there).
        checkpoint: a file for atomic checkpoints every ``checkpoint_every`` batches and at each
            epoch's end; removed by the caller when it no longer needs it.
        resume: continue from ``checkpoint`` when it exists (the same result as an uninterrupted run).
        on_epoch: called with each finished epoch (for logging).
    """
    config = config or HardenConfig()
    model = on_device(model, device)
    if x.ndim != 4 or tuple(x.shape[1:]) != tuple(model.input_size):
        raise PatternError(f"training images must be N x {model.input_size}, got {tuple(x.shape)}")
    if len(x) != len(y) or len(held_x) != len(held_y):
        raise PatternError("images and labels differ in number")
    if len(x) < config.batch_size:
        raise PatternError(f"--batch-size {config.batch_size} is larger than the {len(x)} training images")
    if len(held_x) == 0:
        raise PatternError("no held-out images to check clean accuracy on")
    if int(max(y.max(), held_y.max())) >= model.num_classes:
        raise PatternError(
            f"labels go up to {int(max(y.max(), held_y.max()))} but the model has {model.num_classes} classes"
        )
    device = model.device
    work = trainable_copy(model)
    params = [p for p in work.net.parameters() if p.requires_grad]
    if not params:
        raise PatternError("the model has no floating-point parameters to fine-tune")
    opt = torch.optim.Adam(params, lr=config.lr)
    deltas = torch.zeros(config.pool, *model.input_size, device=device)
    eval_batch = max(config.batch_size, 256)
    accuracy_before = float((predict(model, held_x, eval_batch).top1 == held_y).float().mean())
    bound = accuracy_before - config.max_accuracy_drop
    history: list[HardenEpoch] = []
    best_state: dict[str, torch.Tensor] | None = None
    best_epoch = 0
    start_epoch, start_batch, loss_sum, seen, spent = 0, 0, 0.0, 0, 0.0
    resumed_from = None
    ckpt = Path(checkpoint) if checkpoint is not None else None
    if resume and ckpt is not None and ckpt.is_file():
        state = _load_checkpoint(ckpt, config)
        work.net.load_state_dict(state["net"])
        opt.load_state_dict(state["opt"])
        deltas = state["deltas"].to(device)
        history = [HardenEpoch(**h) for h in state["history"]]
        best_state, best_epoch = state["best_state"], state["best_epoch"]
        start_epoch, start_batch = state["epoch"], state["batch"]
        loss_sum, seen, spent = state["loss_sum"], state["seen"], state["seconds"]
        resumed_from = start_epoch
    n_batches = math.ceil(len(x) / config.batch_size)

    def save(epoch: int, batch: int) -> None:
        if ckpt is None:
            return
        payload = {
            "version": CHECKPOINT_VERSION,
            "config": asdict(config),
            "net": _state_copy(work),
            "opt": opt.state_dict(),
            "deltas": deltas.cpu(),
            "history": [asdict(h) for h in history],
            "best_state": best_state,
            "best_epoch": best_epoch,
            "epoch": epoch,
            "batch": batch,
            "loss_sum": loss_sum,
            "seen": seen,
            "seconds": spent + time.perf_counter() - t0,
        }
        with atomic_path(ckpt) as tmp:
            torch.save(payload, tmp)

    from tqdm.auto import tqdm

    t0 = time.perf_counter()
    bar = tqdm(
        total=config.epochs * n_batches,
        initial=start_epoch * n_batches + start_batch,
        desc="harden",
        disable=not progress,
    )
    epoch_start = time.perf_counter()
    position = (start_epoch, start_batch)  # the next batch to run; everything before it is done
    undo: torch.Tensor | None = None
    slot = 0
    try:
        for epoch in range(start_epoch, config.epochs):
            order = torch.randperm(len(x), generator=torch.Generator().manual_seed(config.seed * 100_003 + epoch))
            first = start_batch if epoch == start_epoch else 0
            for b in range(first, n_batches):
                idx = order[b * config.batch_size : (b + 1) * config.batch_size]
                xb, yb = take(x, idx).to(device), y[idx].to(device)
                slot = (epoch * n_batches + b) % config.pool
                undo = deltas[slot].clone()
                deltas[slot] = _ascend(work, deltas[slot], xb, yb, config, _slot_objective(config, slot))
                with torch.enable_grad():
                    patterned = F.cross_entropy(work((xb + deltas[slot]).clamp(0, 1)), yb)
                    loss = (1 - config.clean_weight) * patterned
                    if config.clean_weight > 0:
                        loss = loss + config.clean_weight * F.cross_entropy(work(xb), yb)
                    value = float(loss.detach())
                    if not math.isfinite(value):
                        raise SearchDivergedError(f"hardening diverged (loss {value}) in epoch {epoch + 1}; lower --lr")
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                undo = None
                opt.step()
                loss_sum, seen, position = loss_sum + value * len(idx), seen + len(idx), (epoch, b + 1)
                bar.update(1)
                bar.set_postfix(loss=f"{loss_sum / seen:.3f}", refresh=False)
                if checkpoint_every and (b + 1) % checkpoint_every == 0 and b + 1 < n_batches:
                    save(epoch, b + 1)
            accuracy, pool_fooling = _held_out_scores(work, held_x, held_y, deltas, eval_batch)
            within = accuracy >= bound - 1e-12
            record = HardenEpoch(
                epoch=epoch + 1,
                loss=loss_sum / max(seen, 1),
                accuracy=accuracy,
                pool_fooling_ratio=pool_fooling,
                within_bound=within,
                seconds=round(time.perf_counter() - epoch_start, 2),
            )
            history.append(record)
            if within:
                best_state, best_epoch = _state_copy(work), epoch + 1
            loss_sum, seen, position = 0.0, 0, (epoch + 1, 0)
            epoch_start = time.perf_counter()
            save(epoch + 1, 0)
            if on_epoch is not None:
                on_epoch(record)
    except KeyboardInterrupt:
        if undo is not None:  # interrupted before the model step: the batch's pattern update is undone too
            deltas[slot] = undo
        if len(history) > position[0]:  # the epoch's record was made, the position not yet moved on
            position, loss_sum, seen = (len(history), 0), 0.0, 0
        save(*position)
        raise SearchInterrupted(position[0] * n_batches + position[1], ckpt) from None
    finally:
        bar.close()
    seconds = spent + time.perf_counter() - t0
    if best_state is None:
        best = max(history, key=lambda h: h.accuracy)
        raise HardeningError(
            f"no epoch kept held-out clean accuracy within {config.max_accuracy_drop:g} of the original "
            f"{accuracy_before:.3f} (best {best.accuracy:.3f} after epoch {best.epoch}); lower --lr, raise "
            "--clean-weight or --max-accuracy-drop, or use a smaller --eps"
        )
    hardened = copy.deepcopy(model)
    hardened.net.load_state_dict(best_state)
    for p in hardened.parameters():
        p.requires_grad_(False)
    accuracy_after = next(h.accuracy for h in history if h.epoch == best_epoch)
    return HardenResult(
        model=hardened,
        config=config,
        accuracy_before=accuracy_before,
        accuracy_after=accuracy_after,
        chosen_epoch=best_epoch,
        history=history,
        patterns=deltas.detach().cpu(),
        seconds=seconds,
        resumed_from=resumed_from,
    )


def _load_checkpoint(path: Path, config: HardenConfig) -> dict[str, Any]:
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # a damaged file: say which and how to recover
        raise HardeningError(
            f"hardening checkpoint {str(path)!r} is unreadable ({type(exc).__name__}); delete it or pass --overwrite"
        ) from None
    if state.get("version") != CHECKPOINT_VERSION or state.get("config") != asdict(config):
        raise HardeningError(
            f"hardening checkpoint {str(path)!r} was made with other settings; resume with the same settings "
            "or pass --overwrite"
        )
    return state


__all__ = ["HardenConfig", "HardenEpoch", "HardenResult", "HardeningError", "harden_model", "trainable_copy"]
