"""Additive targeted patterns: the backdoor scan's second signal (after L-RED, Xiang, Miller, Kesidis 2021;
the design here is ours).

For a target class t: one universal additive δ (C x H x W, pixel space [0,1]) that makes images of the other
classes predict t, searched with the smallest L2 budget that still works. The budget adapts during the
search (shrunk while the running attack success on the batches is at least ``success``, grown while it is
below), and the found direction is then measured on held-out images: the smallest multiple of δ whose
attack success reaches ``success`` (bisection on the scale), reported as its L2 and L∞ norms.

A blended or full-image trigger is small in norm though it touches every pixel, where a stamp of a few
pixels cannot express it; a patch trigger is small in pixels. The scan records both per class.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F

from ..core.classifier import Classifier
from ..core.objectives import Objective
from ..core.params import AdditiveParam
from ..core.patterns import Pattern
from ..core.predict import predicted_class
from ..core.search import SearchConfig, run_search
from ..data.bank import Images
from ..data.stream import epoch_batches
from ..errors import DataError, PatternError


@dataclass
class AdditiveConfig:
    """Settings of the smallest-norm additive targeted search.

    Args:
        steps: Adam steps (batch ``batch_size``).
        batch_size: search images per step.
        lr: Adam's learning rate on δ ([0,1] pixel units).
        start_rms: the starting L2 budget as a root-mean-square per value: eps = start_rms * sqrt(C H W).
        adapt_every: steps between budget updates (judged on the success over those steps' batches).
        shrink: factor on the budget while the success is at least ``success``.
        grow: factor on the budget while it is below.
        success: the attack success the budget must keep (and the measurement must reach).
        max_scale: the largest multiple of δ tried when measuring.
        seed: fixes every batch.
    """

    steps: int = 100
    batch_size: int = 32
    lr: float = 0.01
    start_rms: float = 0.1
    adapt_every: int = 5
    shrink: float = 0.9
    grow: float = 1.15
    success: float = 0.9
    max_scale: float = 8.0
    seed: int = 0

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> AdditiveConfig:
        """Check every setting (raising an error that names it); returns ``self``."""
        if self.steps < 1 or self.batch_size < 1 or self.adapt_every < 1:
            raise PatternError("steps, batch_size and adapt_every must be >= 1")
        if self.lr <= 0 or self.start_rms <= 0:
            raise PatternError("lr and start_rms must be > 0")
        if not 0 < self.shrink < 1 < self.grow:
            raise PatternError(f"need 0 < shrink < 1 < grow, got {self.shrink} and {self.grow}")
        if not 0 < self.success <= 1:
            raise PatternError(f"success must be in (0, 1], got {self.success}")
        if self.max_scale < 1:
            raise PatternError(f"max_scale must be >= 1, got {self.max_scale}")
        return self


def find_additive_pattern(
    model: Classifier,
    images: Images,
    *,
    target: int,
    config: AdditiveConfig | None = None,
    progress: bool = False,
) -> Pattern:
    """Search a universal additive δ (L2 ball, adaptive radius) that sends ``images`` (other classes,
    N x C x H x W in [0,1]) to ``target``. Returns the pattern with its final budget as ``eps`` (L2)."""
    cfg = (config or AdditiveConfig()).validate()
    if not 0 <= target < model.num_classes:
        raise DataError(f"class {target} is out of range: the model has {model.num_classes} classes")
    if images.ndim != 4 or images.shape[0] < cfg.batch_size:
        raise DataError(
            f"the additive search needs at least {cfg.batch_size} images of classes other than {target}, "
            f"got {images.shape[0] if images.ndim == 4 else 0}"
        )
    shape = tuple(model.input_size)
    full = math.sqrt(math.prod(shape))  # the L2 norm of an all-ones δ: nothing larger is useful
    param = AdditiveParam(shape, cfg.start_rms * full, "l2", model.device)  # type: ignore[arg-type]
    hits: list[float] = []

    def loss(x: torch.Tensor) -> torch.Tensor:
        logits = model((x + param.delta).clamp(0, 1))
        labels = torch.full((x.shape[0],), target, dtype=torch.long, device=x.device)
        hits.append(float((logits.detach().argmax(1) == target).float().mean()))
        return F.cross_entropy(logits.float(), labels)

    def adapt(step: int, _loss: float) -> None:
        if step % cfg.adapt_every:
            return
        recent = hits[-cfg.adapt_every :]
        rate = sum(recent) / len(recent)
        param.eps = min(full, param.eps * (cfg.shrink if rate >= cfg.success else cfg.grow))
        param.project_()

    search = SearchConfig(
        steps=cfg.steps,
        batch_size=cfg.batch_size,
        optimizer="adam",
        lr=cfg.lr,
        device=str(model.device),
        seed=cfg.seed,
        window=max(1, min(25, cfg.steps // 4)),
        progress=progress,
        desc=f"additive {target}",
    )
    run_search(
        param,
        Objective(loss, f"additive-targeted[{target}]"),
        epoch_batches(images.cpu(), cfg.seed),
        search,
        identity={"method": "additive-targeted", "target": target, **asdict(cfg)},
        on_step=adapt,
    )
    meta = {"method": "additive-targeted", "target": target, "model": model.spec, "config": asdict(cfg)}
    return Pattern(param.delta.detach().cpu(), float(param.eps), "l2", meta)


@dataclass
class SmallestNorm:
    """The smallest multiple of a pattern reaching the target success on held-out images."""

    scale: float
    l2: float
    linf: float
    success: float
    reached: bool


@torch.no_grad()
def success_at_scale(model: Classifier, delta: torch.Tensor, target: int, images: Images, scale: float) -> float:
    """Share of ``images`` (other classes) classified as ``target`` once ``scale * delta`` is added (clipped)."""
    d = (delta * scale).to(model.device)
    hit = predicted_class(model, images, apply=lambda x: (x + d.to(x.dtype)).clamp(0, 1)) == target
    return float(hit.float().mean())


def smallest_norm(
    model: Classifier,
    pattern: Pattern,
    images: Images,
    *,
    target: int,
    rate: float = 0.9,
    max_scale: float = 8.0,
    iterations: int = 6,
    min_scale: float = 1 / 32,
) -> SmallestNorm:
    """The smallest multiple s * δ whose attack success on ``images`` reaches ``rate``: the scales ``min_scale``,
    2 ``min_scale``, ... up to ``max_scale`` are tried from the smallest up (success need not grow with the
    scale once clipping to [0,1] bites), and the first that reaches it is refined by bisection down to the one
    before (``iterations`` halvings: 6 pin s to 1/64 of that bracket, about 1% of the norm). When no scale
    reaches it, the norms are those of the all-ones pattern (sqrt(C H W) and 1): the class is not reachable
    along this direction."""
    delta = pattern.delta
    below, scale, best_seen = 0.0, min_scale, 0.0
    while True:
        success = success_at_scale(model, delta, target, images, scale)
        if success >= rate:
            break
        best_seen = max(best_seen, success)
        if scale >= max_scale:
            return SmallestNorm(scale, math.sqrt(delta.numel()), 1.0, best_seen, False)
        below, scale = scale, min(max_scale, scale * 2)
    lo, hi, s_hi = below, scale, success
    for _ in range(iterations):
        mid = (lo + hi) / 2
        s = success_at_scale(model, delta, target, images, mid)
        if s >= rate:
            hi, s_hi = mid, s
        else:
            lo = mid
    scaled = delta * hi
    return SmallestNorm(hi, float(scaled.norm(p=2)), float(scaled.abs().max()), s_hi, True)
