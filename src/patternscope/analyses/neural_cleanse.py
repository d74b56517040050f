"""Neural Cleanse (Wang et al. 2019) in PyTorch, on the shared search loop: the comparison baseline of
the backdoor scan.

Per class t, a mask m (1 x H x W) and a pattern p (C x H x W), both in tanh space so they stay in [0,1],
minimise ``CE(f((1 - m) x + m p), t) + lambda * |m|_1`` with Adam (lr 0.1, betas 0.5/0.9) over clean
images of all classes. lambda starts at 0 and is tuned once per epoch so the attack success stays at or
above 99%: set to ``init_cost`` once success holds, times 1.5 after ``patience`` epochs above, divided
by 1.5^1.5 after ``patience`` epochs below; the smallest mask seen with success >= 99% is kept, and the
search stops once that has not improved for ``2 * patience`` epochs. Several seeds are averaged; a seed
that diverges (NaN) is dropped and reported. Classes are flagged with the MAD anomaly index on the
mask L1 norms (index > 2 on the small side).
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
import torch.nn.functional as F

from ..core.classifier import Classifier
from ..core.models import on_device
from ..core.params import TanhMaskParam
from ..core.search import SearchConfig, StopSearch, run_search
from ..data.bank import Images
from ..data.labelled import seeded_sample
from ..data.stream import epoch_batches
from ..errors import DataError, PatternError, SearchDivergedError
from .anomaly import anomaly_indices


@dataclass
class NeuralCleanseConfig:
    """Settings (defaults: the authors' for MNIST-size models, with a cap on epochs).

    Args:
        images: clean images used per class (``epoch`` = one pass over them).
        batch_size: images per step.
        lr: Adam learning rate on the tanh-space mask and pattern.
        init_cost: the first non-zero lambda.
        cost_multiplier: lambda's up factor (down: its 1.5th power).
        patience: epochs before lambda moves; early stop after twice this without a smaller mask.
        success: attack success a reversed trigger must keep (0.99).
        max_epochs: cap on epochs per class and seed.
        seeds: runs averaged per class.
        threshold: MAD anomaly index above which a class is flagged.
    """

    images: int = 1000
    batch_size: int = 32
    lr: float = 0.1
    init_cost: float = 1e-3
    cost_multiplier: float = 1.5
    patience: int = 5
    success: float = 0.99
    max_epochs: int = 60
    seeds: int = 3
    threshold: float = 2.0

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> NeuralCleanseConfig:
        """Check every setting (raising an error that names it); returns ``self``."""
        for name in ("images", "batch_size", "patience", "max_epochs", "seeds"):
            if getattr(self, name) < 1:
                raise PatternError(f"Neural Cleanse setting {name} must be >= 1, got {getattr(self, name)}")
        if self.lr <= 0 or not 0 < self.success <= 1 or self.cost_multiplier <= 1:
            raise PatternError("Neural Cleanse needs lr > 0, success in (0, 1] and cost_multiplier > 1")
        return self


@dataclass
class ReversedTrigger:
    """Best reversed trigger of one class and seed: mask L1 norm (pixels), success, mask and pattern."""

    target: int
    seed: int
    l1: float
    success: float
    epochs: int
    mask: torch.Tensor = field(repr=False)
    pattern: torch.Tensor = field(repr=False)
    diverged: bool = False


class _CostSchedule:
    """lambda tuning and best-mask tracking, once per epoch."""

    def __init__(self, cfg: NeuralCleanseConfig) -> None:
        self.cfg = cfg
        self.cost = 0.0
        self.cost_set = False
        self.up = self.down = 0
        self.best_l1 = math.inf
        self.best: tuple[torch.Tensor, torch.Tensor, float] | None = None
        self.stale = 0
        self.epochs = 0

    def end_epoch(self, success: float, l1: float, mask: torch.Tensor, pattern: torch.Tensor) -> bool:
        """Update lambda; return True when the search should stop."""
        cfg = self.cfg
        self.epochs += 1
        if success >= cfg.success and l1 < self.best_l1:
            self.best_l1, self.best, self.stale = l1, (mask, pattern, success), 0
        elif self.cost_set:
            self.stale += 1
        if not self.cost_set:
            self.up = self.up + 1 if success >= cfg.success else 0
            if self.up >= cfg.patience:
                self.cost, self.cost_set, self.up, self.down = cfg.init_cost, True, 0, 0
            return False
        if success >= cfg.success:
            self.up, self.down = self.up + 1, 0
        else:
            self.up, self.down = 0, self.down + 1
        if self.up >= cfg.patience:
            self.up, self.cost = 0, self.cost * cfg.cost_multiplier
        elif self.down >= cfg.patience:
            self.down, self.cost = 0, self.cost / cfg.cost_multiplier**1.5
        return self.stale >= 2 * cfg.patience


def reverse_trigger(
    model: Classifier, target: int, images: Images, cfg: NeuralCleanseConfig, seed: int
) -> ReversedTrigger:
    """One Neural Cleanse optimisation for class ``target`` over clean ``images`` (all classes, [0,1])."""
    device = model.device
    gen = torch.Generator().manual_seed(seed * 7919 + target)
    param = TanhMaskParam(tuple(model.input_size), gen, device)  # type: ignore[arg-type]
    sched = _CostSchedule(cfg)
    steps_per_epoch = max(1, math.ceil(images.shape[0] / cfg.batch_size))
    epoch_stats = {"hits": 0.0, "n": 0}

    def loss(x: torch.Tensor) -> torch.Tensor:
        m, p = param.mask(), param.pattern()
        logits = model((1 - m) * x + m * p).float()
        labels = torch.full((x.shape[0],), target, dtype=torch.long, device=x.device)
        epoch_stats["hits"] += float((logits.argmax(1) == target).sum())
        epoch_stats["n"] += x.shape[0]
        return F.cross_entropy(logits, labels) + sched.cost * m.sum()

    def on_step(step: int, _loss: float) -> None:
        if step % steps_per_epoch:
            return
        success = epoch_stats["hits"] / max(1, epoch_stats["n"])
        epoch_stats["hits"], epoch_stats["n"] = 0.0, 0
        with torch.no_grad():
            m, p = param.mask().detach().cpu(), param.pattern().detach().cpu()
        if sched.end_epoch(success, float(m.sum()), m, p):
            raise StopSearch

    config = SearchConfig(
        steps=cfg.max_epochs * steps_per_epoch,
        batch_size=cfg.batch_size,
        optimizer="adam",
        lr=cfg.lr,
        device=str(device),
        seed=seed,
        window=steps_per_epoch,
        progress=False,
        adam_betas=(0.5, 0.9),
    )
    try:
        run_search(param, loss, epoch_batches(images.cpu(), seed), config, on_step=on_step)
    except SearchDivergedError:
        return ReversedTrigger(target, seed, math.nan, 0.0, sched.epochs, torch.zeros(1), torch.zeros(1), True)
    if sched.best is None:  # never reached the success bar: the whole image is the honest size
        with torch.no_grad():
            m, p = param.mask().detach().cpu(), param.pattern().detach().cpu()
        _, h, w = model.input_size
        return ReversedTrigger(target, seed, float(h * w), 0.0, sched.epochs, m, p)
    m, p, s = sched.best
    return ReversedTrigger(target, seed, sched.best_l1, s, sched.epochs, m, p)


@dataclass
class NeuralCleanseReport:
    """Per-class mean mask L1 norms, anomaly indices, flagged classes and wall time."""

    l1: list[float]
    l1_per_seed: list[list[float]]
    anomaly_index: list[float]
    flagged: list[int]
    diverged_runs: int
    seconds: float
    config: dict[str, Any]
    triggers: dict[int, ReversedTrigger] = field(repr=False, default_factory=dict)

    @property
    def backdoored(self) -> bool:
        return bool(self.flagged)

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out.pop("triggers")
        out["backdoored"] = self.backdoored
        return out


def pool_indices(n_images: int, size: int, labels: torch.Tensor | None = None, seed: int = 0) -> torch.Tensor:
    """Which ``size`` of ``n_images`` images Neural Cleanse reverses triggers on (sorted indices):
    :func:`~patternscope.data.seeded_sample` with ``balanced=True``. With ``labels``, class-stratified: each
    class's images in a seeded random order, taken round-robin over the classes, so every class is represented
    as evenly as its count allows (a class-sorted folder would otherwise give only its first classes). Without
    labels, a seeded random subset."""
    return seeded_sample(n_images, size, seed, labels, balanced=True)


def neural_cleanse(
    model: Classifier,
    images: Images,
    *,
    config: NeuralCleanseConfig | None = None,
    labels: torch.Tensor | None = None,
    classes: list[int] | None = None,
    device: str | torch.device | None = None,
    progress: bool = True,
) -> NeuralCleanseReport:
    """Run Neural Cleanse on clean ``images`` (N x C x H x W in [0,1], any classes; a tensor or an image
    bank) for every class (or ``classes``), on ``device`` (default: the model's), with a progress bar
    over the classes. At most ``config.images`` of them are used: a class-stratified seeded subset when
    ``labels`` are given, else a seeded random one (:func:`pool_indices`)."""
    from tqdm.auto import tqdm

    cfg = (config or NeuralCleanseConfig()).validate()
    model = on_device(model, device)
    if images.ndim != 4 or images.shape[0] == 0:
        raise DataError("Neural Cleanse needs clean images (N x C x H x W)")
    pool = images[pool_indices(images.shape[0], cfg.images, labels)]
    targets = classes if classes is not None else list(range(model.num_classes))
    t0 = time.perf_counter()
    per_seed: list[list[float]] = []
    best: dict[int, ReversedTrigger] = {}
    diverged = 0
    for t in tqdm(targets, desc="neural cleanse", disable=not progress):
        runs = [reverse_trigger(model, t, pool, cfg, seed) for seed in range(cfg.seeds)]
        good = [r for r in runs if not r.diverged]
        diverged += len(runs) - len(good)
        per_seed.append([r.l1 for r in runs])
        if good:
            best[t] = min(good, key=lambda r: r.l1)
    _, h, w = model.input_size
    means = []
    for l1s in per_seed:
        finite = [v for v in l1s if math.isfinite(v)]
        means.append(sum(finite) / len(finite) if finite else float(h * w))
    index = anomaly_indices(means)
    flagged = [t for t, i in zip(targets, index, strict=True) if i < -cfg.threshold]
    return NeuralCleanseReport(means, per_seed, index, flagged, diverged, time.perf_counter() - t0, asdict(cfg), best)
