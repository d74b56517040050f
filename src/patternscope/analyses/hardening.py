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
from ..core.configs import option
from ..core.metrics import fooling_ratio
from ..core.models import on_device
from ..core.patterns import NORMS, project
from ..core.predict import predict
from ..core.search import SearchInterrupted
from ..core.train import Batch, train_epochs
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
    norm: str = option("linf", help="budget norm (default {default})", choices=("linf", "l2"))
    epochs: int = option(20, help="passes over the training images (default {default})")
    lr: float = option(1e-3, help="Adam learning rate of the model (default {default})")
    batch_size: int = option(64, help="images per step (default {default})")
    delta_steps: int = option(3, help="pattern ascent steps per batch (default {default})")
    delta_step: float | None = option(None, help="size of one pattern step (default eps/4)")
    pool: int = option(4, help="universal patterns trained in turn (default {default})")
    clean_weight: float = option(0.5, help="weight of the clean images' loss, in [0,1) (default {default})")
    loss_clamp: float | None = option(None, help="cap on each image's loss in the pattern step (default none)")
    max_accuracy_drop: float = option(
        0.02, help="largest allowed fall of held-out clean accuracy, absolute (default {default})"
    )
    objective: str = option(
        "mixed",
        help="what the training patterns maximise: the model's cross-entropy, the dominant-pattern objective, "
        "or both in turn (default {default})",
        choices=OBJECTIVES,
    )
    seed: int = option(0, help="seed (default {default})")

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> HardenConfig:
        """Check every setting (raising an error that names it); returns ``self``."""
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
        return self

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
    images: Images,
    labels: torch.Tensor,
    *,
    held_images: Images,
    held_labels: torch.Tensor,
    config: HardenConfig | None = None,
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
        images: training images (N x C x H x W in [0,1]; a tensor, or an image bank read batch by batch).
        labels: their labels (N).
        held_images: held-out images for the accuracy bound (never trained on).
        held_labels: their labels.
        config: :class:`HardenConfig` (defaults when None).
        device: where to train (default: the model's device; the model is moved there).
        checkpoint: a file for atomic checkpoints every ``checkpoint_every`` batches and at each
            epoch's end; removed by the caller when it no longer needs it.
        resume: continue from ``checkpoint`` when it exists (the same result as an uninterrupted run).
        on_epoch: called with each finished epoch (for logging).
    """
    config = (config or HardenConfig()).validate()
    model = on_device(model, device)
    _check_training_data(model, images, labels, held_images, held_labels, config)
    run = _Hardening.begin(model, config, held_images, held_labels, checkpoint)
    if resume and run.ckpt is not None and run.ckpt.is_file():
        run.restore(_load_checkpoint(run.ckpt, config))
    n_batches = math.ceil(len(images) / config.batch_size)

    from tqdm.auto import tqdm

    run.t0 = time.perf_counter()
    bar = tqdm(
        total=config.epochs * n_batches,
        initial=run.start_epoch * n_batches + run.start_batch,
        desc="harden",
        disable=not progress,
    )
    run.epoch_start = time.perf_counter()
    run.position = (run.start_epoch, run.start_batch)
    try:
        run.train(images, labels, held_images, held_labels, checkpoint_every, bar, on_epoch)
    except KeyboardInterrupt:
        raise run.interrupted(n_batches) from None
    finally:
        bar.close()
    return run.result(model)


def _check_training_data(
    model: Classifier, x: Images, y: torch.Tensor, held_x: Images, held_y: torch.Tensor, config: HardenConfig
) -> None:
    """Refuse images and labels that do not fit ``model`` or ``config``."""
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


@dataclass
class _Hardening:
    """One hardening run: the model being trained, the pattern pool and the progress a checkpoint holds."""

    config: HardenConfig
    device: torch.device
    work: Classifier
    opt: torch.optim.Optimizer
    deltas: torch.Tensor
    eval_batch: int
    accuracy_before: float
    bound: float  # the lowest held-out accuracy an epoch may keep
    ckpt: Path | None
    history: list[HardenEpoch] = field(default_factory=list)
    best_state: dict[str, torch.Tensor] | None = None
    best_epoch: int = 0
    start_epoch: int = 0
    start_batch: int = 0
    loss_sum: float = 0.0  # this epoch's summed training loss (over images)
    seen: int = 0  # this epoch's images so far
    spent: float = 0.0  # seconds of earlier sessions
    resumed_from: int | None = None
    t0: float = 0.0  # time.perf_counter() at this session's start
    epoch_start: float = 0.0
    position: tuple[int, int] = (0, 0)  # the next batch to run; everything before it is done
    undo: torch.Tensor | None = None  # the batch's pattern slot before its update, until the model step
    slot: int = 0

    @classmethod
    def begin(
        cls,
        model: Classifier,
        config: HardenConfig,
        held_x: Images,
        held_y: torch.Tensor,
        checkpoint: str | Path | None,
    ) -> _Hardening:
        """A fresh run on a trainable copy of ``model``, with its original held-out accuracy measured."""
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
        ckpt = Path(checkpoint) if checkpoint is not None else None
        return cls(config, device, work, opt, deltas, eval_batch, accuracy_before, bound, ckpt)

    def restore(self, state: dict[str, Any]) -> None:
        """Continue from checkpoint ``state``."""
        self.work.net.load_state_dict(state["net"])
        self.opt.load_state_dict(state["opt"])
        self.deltas = state["deltas"].to(self.device)
        self.history = [HardenEpoch(**h) for h in state["history"]]
        self.best_state, self.best_epoch = state["best_state"], state["best_epoch"]
        self.start_epoch, self.start_batch = state["epoch"], state["batch"]
        self.loss_sum, self.seen, self.spent = state["loss_sum"], state["seen"], state["seconds"]
        self.resumed_from = self.start_epoch

    def save(self, epoch: int, batch: int) -> None:
        """Checkpoint the run as it stands before batch ``batch`` of epoch ``epoch`` (0-based)."""
        if self.ckpt is None:
            return
        payload = {
            "version": CHECKPOINT_VERSION,
            "config": asdict(self.config),
            "net": _state_copy(self.work),
            "opt": self.opt.state_dict(),
            "deltas": self.deltas.cpu(),
            "history": [asdict(h) for h in self.history],
            "best_state": self.best_state,
            "best_epoch": self.best_epoch,
            "epoch": epoch,
            "batch": batch,
            "loss_sum": self.loss_sum,
            "seen": self.seen,
            "seconds": self.spent + time.perf_counter() - self.t0,
        }
        with atomic_path(self.ckpt) as tmp:
            torch.save(payload, tmp)

    def train(
        self,
        x: Images,
        y: torch.Tensor,
        held_x: Images,
        held_y: torch.Tensor,
        checkpoint_every: int,
        bar: Any,
        on_epoch: Callable[[HardenEpoch], None] | None,
    ) -> None:
        """The epochs and batches still to run (a resumed run starts at its saved position), on
        :func:`train_epochs`; each epoch's batch order depends only on the seed and the epoch."""
        config = self.config
        n_batches = math.ceil(len(x) / config.batch_size)

        def loss_of(batch: Batch) -> torch.Tensor:
            xb, yb = take(x, batch.indices).to(self.device), y[batch.indices].to(self.device)
            self.slot = (batch.epoch * n_batches + batch.number) % config.pool
            return self.batch_loss(xb, yb, batch.epoch)

        def after_step(batch: Batch, loss: torch.Tensor) -> None:
            epoch, done = batch.epoch, batch.number + 1
            self.loss_sum, self.seen, self.position = (
                self.loss_sum + float(loss.detach()) * len(batch.indices),
                self.seen + len(batch.indices),
                (epoch, done),
            )
            bar.update(1)
            bar.set_postfix(loss=f"{self.loss_sum / self.seen:.3f}", refresh=False)
            if checkpoint_every and done % checkpoint_every == 0 and done < n_batches:
                self.save(epoch, done)

        def after_epoch(epoch: int) -> None:
            record = self.end_epoch(epoch, held_x, held_y)
            if on_epoch is not None:
                on_epoch(record)

        train_epochs(
            self.opt,
            loss_of,
            len(x),
            config.batch_size,
            range(self.start_epoch, config.epochs),
            lambda epoch: torch.Generator().manual_seed(config.seed * 100_003 + epoch),
            start_batch=self.start_batch,
            before_step=self.keep_pattern,
            after_step=after_step,
            after_epoch=after_epoch,
        )

    def batch_loss(self, xb: torch.Tensor, yb: torch.Tensor, epoch: int) -> torch.Tensor:
        """The pattern update of pool slot ``self.slot`` on a batch, then the model's loss on it (the mean
        over images; the model step follows in :func:`train_epochs`)."""
        config, slot = self.config, self.slot
        self.undo = self.deltas[slot].clone()
        self.deltas[slot] = _ascend(self.work, self.deltas[slot], xb, yb, config, _slot_objective(config, slot))
        patterned = F.cross_entropy(self.work((xb + self.deltas[slot]).clamp(0, 1)), yb)
        loss = (1 - config.clean_weight) * patterned
        if config.clean_weight > 0:
            loss = loss + config.clean_weight * F.cross_entropy(self.work(xb), yb)
        value = float(loss.detach())
        if not math.isfinite(value):
            raise SearchDivergedError(f"hardening diverged (loss {value}) in epoch {epoch + 1}; lower --lr")
        return loss

    def keep_pattern(self, _batch: Batch, _loss: torch.Tensor) -> None:
        """Just before the model step: the batch's pattern update is no longer undone by Ctrl-C."""
        self.undo = None

    def end_epoch(self, epoch: int, held_x: Images, held_y: torch.Tensor) -> HardenEpoch:
        """Measure the finished ``epoch`` on held-out images, keep its weights if within the bound, checkpoint."""
        accuracy, pool_fooling = _held_out_scores(self.work, held_x, held_y, self.deltas, self.eval_batch)
        within = accuracy >= self.bound - 1e-12
        record = HardenEpoch(
            epoch=epoch + 1,
            loss=self.loss_sum / max(self.seen, 1),
            accuracy=accuracy,
            pool_fooling_ratio=pool_fooling,
            within_bound=within,
            seconds=round(time.perf_counter() - self.epoch_start, 2),
        )
        self.history.append(record)
        if within:
            self.best_state, self.best_epoch = _state_copy(self.work), epoch + 1
        self.loss_sum, self.seen, self.position = 0.0, 0, (epoch + 1, 0)
        self.epoch_start = time.perf_counter()
        self.save(epoch + 1, 0)
        return record

    def interrupted(self, n_batches: int) -> SearchInterrupted:
        """After Ctrl-C: undo a half-done batch, checkpoint the last finished position and say where it is."""
        if self.undo is not None:  # interrupted before the model step: the batch's pattern update is undone too
            self.deltas[self.slot] = self.undo
        if len(self.history) > self.position[0]:  # the epoch's record was made, the position not yet moved on
            self.position, self.loss_sum, self.seen = (len(self.history), 0), 0.0, 0
        self.save(*self.position)
        return SearchInterrupted(self.position[0] * n_batches + self.position[1], self.ckpt)

    def result(self, model: Classifier) -> HardenResult:
        """A frozen copy of ``model`` with the chosen epoch's weights (an error if no epoch stayed in bound)."""
        config, history = self.config, self.history
        seconds = self.spent + time.perf_counter() - self.t0
        if self.best_state is None:
            best = max(history, key=lambda h: h.accuracy)
            raise HardeningError(
                f"no epoch kept held-out clean accuracy within {config.max_accuracy_drop:g} of the original "
                f"{self.accuracy_before:.3f} (best {best.accuracy:.3f} after epoch {best.epoch}); lower --lr, raise "
                "--clean-weight or --max-accuracy-drop, or use a smaller --eps"
            )
        hardened = copy.deepcopy(model)
        hardened.net.load_state_dict(self.best_state)
        for p in hardened.parameters():
            p.requires_grad_(False)
        accuracy_after = next(h.accuracy for h in history if h.epoch == self.best_epoch)
        return HardenResult(
            model=hardened,
            config=config,
            accuracy_before=self.accuracy_before,
            accuracy_after=accuracy_after,
            chosen_epoch=self.best_epoch,
            history=history,
            patterns=self.deltas.detach().cpu(),
            seconds=seconds,
            resumed_from=self.resumed_from,
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
