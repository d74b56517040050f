"""Class-wise patterns (Zhao et al. 2021): for a target class t, a small stamp in pixel space that makes
the model predict t on images of other classes.

A mask m (1 x H x W, shared over channels, start 0.5) blends a canvas image x_c of class t into images
x_o of other classes, x' = m * x_c + (1 - m) * x_o, and signed steps of 0.02 (clipped to [0,1])
minimise ``alpha * CE(f(x'), t) + (1 - alpha) * sum(m) / (H W / 2)`` with alpha 0.2, batch 4. The
pattern is the canvas colours at the top-k mask pixels (about 5% by default), stamped by overwriting.

``learn_canvas=True`` also takes signed steps on the canvas colours (same loss): the backdoor scan uses
it, because a trigger whose colour the natural canvas lacks (a white patch where the canvas is black
background) cannot be expressed by any mask over the natural canvas.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from ..core.classifier import Classifier
from ..core.configs import option
from ..core.models import on_device
from ..core.objectives import classwise_loss
from ..core.params import MaskCanvasParam
from ..core.patterns import ClasswisePattern, top_k_count, top_k_mask
from ..core.predict import predicted_class, probability_batches
from ..core.search import SearchConfig, SearchResult, run_search
from ..data.bank import Images, take
from ..data.labelled import seeded_sample
from ..data.stream import epoch_batches
from ..errors import DataError, PatternError
from ..methods.find import StepMonitor

GRID_RATIO = 1.5  # the geometric step of the sizes smallest_k tries before bisecting


@dataclass
class ClasswiseConfig:
    """Settings of a class-wise pattern search (defaults: the paper's).

    Args:
        alpha: weight of the cross-entropy; the mask-size term gets ``1 - alpha``.
        lr: signed step on the mask (and canvas) in [0,1] units.
        mask_init: the mask's starting value everywhere.
        batch_size: search images per step.
        epochs: passes over the search set when ``steps`` is not given.
        steps: search steps (overrides ``epochs``).
        max_steps: cap on steps derived from ``epochs`` (big search sets).
        top_k: pattern size: a share of the H*W pixels if < 1, else a pixel count.
        learn_canvas: also optimise the canvas colours (for the backdoor scan).
        seed: fixes every batch and so the whole search.
    """

    alpha: float = option(0.2, help="weight of the cross-entropy (default {default})")
    lr: float = option(0.02, help="signed step on the mask (default {default})")
    mask_init: float = 0.5
    batch_size: int = option(4, help="images per step (default {default})")
    epochs: float = option(5.0, help="passes over the search images (default {default:g})")
    steps: int | None = option(None, help="search steps (default: --epochs over the search images)")
    max_steps: int = option(3000, help="cap on steps from --epochs (default {default})")
    top_k: float = option(
        0.05, help="pattern size: a share of the pixels if < 1, else a pixel count (default {default})"
    )
    learn_canvas: bool = option(False, help="also learn the canvas colours (as the scan does)")
    seed: int = option(0, help="seed for the split and batches (default {default})")

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> ClasswiseConfig:
        """Check every setting (raising an error that names it); returns ``self``."""
        if not 0 < self.alpha < 1:
            raise PatternError(f"alpha must be in (0, 1), got {self.alpha}")
        if not 0 <= self.mask_init <= 1:
            raise PatternError(f"mask_init must be in [0, 1], got {self.mask_init}")
        if self.lr <= 0 or self.batch_size < 1:
            raise PatternError("lr must be > 0 and batch_size >= 1")
        if self.steps is not None and self.steps < 1:
            raise PatternError(f"steps must be >= 1, got {self.steps}")
        if self.top_k <= 0:
            raise PatternError(f"top_k must be > 0 (a share of pixels below 1, else a count), got {self.top_k}")
        return self

    def search_steps(self, n_images: int) -> int:
        if self.steps is not None:
            return self.steps
        return max(1, min(self.max_steps, round(self.epochs * n_images / self.batch_size)))

    def k_pixels(self, height: int, width: int) -> int:
        """The pattern size in pixels (:func:`~patternscope.core.patterns.top_k_count`: 5% of 32x32 is 50)."""
        return top_k_count(self.top_k, height * width)


# ---------------------------------------------------------------------------------------------------
# Canvas and data


def choose_canvas(
    model: Classifier, images: Images, labels: torch.Tensor, *, target: int, probs: torch.Tensor | None = None
) -> int:
    """Index of the image labelled ``target`` that the model classifies as ``target`` most confidently.

    Falls back to the most confident ``target`` prediction among the images labelled ``target`` when the
    model classifies none of them as it, then among all images. ``probs`` (N x classes) reuses a softmax
    already computed; without it the images are streamed (:func:`best_canvases`).
    """
    if probs is None:
        return int(best_canvases(model, images, labels)[target])
    score = probs[:, target].clone()
    own = (labels == target) & (probs.argmax(1) == target)
    if own.any():
        score[~own] = -1
    elif (labels == target).any():
        score[labels != target] = -1
    return int(score.argmax())


@torch.no_grad()
def best_canvases(model: Classifier, images: Images, labels: torch.Tensor, *, batch_size: int = 256) -> torch.Tensor:
    """:func:`choose_canvas` for every class in one streamed pass (memory O(batch + classes), not
    O(images x classes)): the canvas index of each class (``classes``, int64; -1 when there are no images)."""
    k = model.num_classes
    best = torch.full((3, k), -1.0)  # tiers: labelled and classified as the class; labelled; any image
    where = torch.full((3, k), -1, dtype=torch.long)
    classes = torch.arange(k)
    start = 0
    for probs in probability_batches(model, images, batch_size):
        p = probs.cpu()
        y = labels[start : start + len(p)]
        labelled = y[:, None] == classes[None, :]
        tiers = (labelled & (p.argmax(1)[:, None] == classes[None, :]), labelled, torch.ones_like(labelled))
        for tier, mask in enumerate(tiers):
            score = torch.where(mask, p, torch.tensor(-1.0))
            at = score.argmax(0)  # the first of equal maxima, as argmax over the whole set picks
            top = score.gather(0, at[None])[0]
            better = top > best[tier]
            best[tier] = torch.where(better, top, best[tier])
            where[tier] = torch.where(better, at + start, where[tier])
        start += len(p)
    found = where[2].clone()
    for tier in (1, 0):  # a higher tier wins wherever it found an image
        found = torch.where(where[tier] >= 0, where[tier], found)
    return found


def spread_examples(images: Images, labels: torch.Tensor, n: int = 8) -> torch.Tensor:
    """Up to ``n`` images, one per class in turn (first of each class, then second, ...), for figures."""
    order: list[int] = []
    by_class = [torch.nonzero(labels == c).flatten().tolist() for c in torch.unique(labels).tolist()]
    depth = 0
    while len(order) < min(n, len(labels)):
        for idx in by_class:
            if depth < len(idx) and len(order) < n:
                order.append(idx[depth])
        depth += 1
    return take(images, torch.tensor(order, dtype=torch.long))


def other_classes(images: Images, labels: torch.Tensor, *, target: int) -> tuple[Images, torch.Tensor]:
    """The images (and labels) of every class but ``target`` (a view for an :class:`ImageBank`)."""
    keep = labels != target
    return images[keep], labels[keep]


# ---------------------------------------------------------------------------------------------------
# Search and measurement


@dataclass
class ClasswiseResult:
    """A found pattern, the canvas it came from and the search record."""

    pattern: ClasswisePattern
    canvas: torch.Tensor
    search: SearchResult
    steps: int

    def summary(self) -> dict[str, Any]:
        return {"target": self.pattern.target, "k": self.pattern.k, "steps": self.steps, **self.search.summary()}


def find_classwise_pattern(
    model: Classifier,
    images: Images,
    *,
    target: int,
    canvas: torch.Tensor,
    config: ClasswiseConfig | None = None,
    device: str | torch.device | None = None,
    progress: bool = True,
    checkpoint: Path | None = None,
    resume: bool = False,
    desc: str | None = None,
    monitor: StepMonitor | None = None,
) -> ClasswiseResult:
    """Search the class-wise pattern of ``target`` (Zhao et al. 2021).

    Args:
        model: the classifier (inputs in [0,1]).
        images: the search images, of the other classes (N x C x H x W in [0,1], the model's input size; a
            tensor or an :class:`~patternscope.data.bank.ImageBank` read batch by batch).
        target: the class index the pattern should make the model predict.
        canvas: an image of class ``target`` (C x H x W) whose pixels the pattern is cut from.
        config: :class:`ClasswiseConfig` (the paper's settings by default).
        device: where to search (default: the model's device; the model is moved there).
        progress: show a progress bar.
        checkpoint: a checkpoint file for exact resume; ``resume`` continues from it.
        resume: continue from ``checkpoint`` when it exists.
        desc: the progress bar's label.
        monitor: called after every step with ``(step, loss, lr, image)``, ``image`` the soft mask times the
            canvas (C x H x W in [0,1]): what the pattern stamps, e.g. for TensorBoard.
    """
    cfg = (config or ClasswiseConfig()).validate()
    model = on_device(model, device)
    _check_inputs(model, images, target, canvas, cfg)
    device = model.device
    param = MaskCanvasParam(canvas, cfg.mask_init, cfg.learn_canvas, device)
    steps = cfg.search_steps(images.shape[0])
    search_cfg = SearchConfig(
        steps=steps,
        batch_size=cfg.batch_size,
        optimizer="sign",
        lr=cfg.lr,
        device=str(device),
        seed=cfg.seed,
        checkpoint_path=checkpoint,
        resume=resume,
        checkpoint_every=max(50, steps // 20),
        window=max(1, min(50, steps // 10)),
        progress=progress,
        desc=desc or f"class {target}",
    )
    identity = {"method": "classwise", "target": target, **{k: v for k, v in asdict(cfg).items() if k != "steps"}}
    on_step = None
    if monitor is not None:
        watch = monitor

        def on_step(step: int, loss: float) -> None:  # the step just done, counted from 1
            with torch.no_grad():
                watch(step, loss, search_cfg.lr_at(step - 1), (param.mask * param.canvas).detach())

    result = run_search(
        param,
        classwise_loss(model, param, target, cfg.alpha),
        epoch_batches(images.cpu(), cfg.seed),
        search_cfg,
        identity=identity,
        on_step=on_step,
    )
    # The final tensors, not the best window's: the mask-size term keeps shrinking the mask to the end.
    soft = param.mask.detach().cpu()
    colours = param.canvas.detach().cpu()
    tie_key = last_gradient_key(model, param, target, cfg.alpha, images, seed=cfg.seed)
    k = cfg.k_pixels(*soft.shape[-2:])
    meta = {"model": model.spec, "weights": model.weights, "learn_canvas": cfg.learn_canvas, "config": asdict(cfg)}
    pattern = ClasswisePattern(target, top_k_mask(soft, k, tie_key), colours, soft, meta, tie_key)
    return ClasswiseResult(pattern, canvas.detach().cpu(), result, steps)


def _check_inputs(model: Classifier, images: Images, target: int, canvas: torch.Tensor, cfg: ClasswiseConfig) -> None:
    """Refuse a class, search images or a canvas that do not fit ``model`` or ``cfg``, naming the problem."""
    if not 0 <= target < model.num_classes:
        raise DataError(
            f"class {target} is out of range: the model has {model.num_classes} classes (0..{model.num_classes - 1})"
        )
    if images.ndim != 4 or images.shape[0] == 0:
        raise DataError(f"no search images of classes other than {target}")
    if cfg.batch_size > images.shape[0]:
        raise DataError(
            f"batch size {cfg.batch_size} is larger than the {images.shape[0]} search images of classes "
            f"other than {target}; use --batch-size {images.shape[0]} or less, or give more images"
        )
    if tuple(canvas.shape) != tuple(model.input_size) or tuple(images.shape[1:]) != tuple(model.input_size):
        raise DataError(
            f"images are {tuple(images.shape[1:])} and the canvas {tuple(canvas.shape)}, "
            f"but the model takes {tuple(model.input_size)}"
        )


def last_gradient_key(
    model: Classifier, param: MaskCanvasParam, target: int, alpha: float, images: Images, n: int = 64, seed: int = 0
) -> torch.Tensor:
    """The tie-breaking key of the mask's pixels (1 x H x W): minus the loss's gradient with respect to the mask
    on ``n`` search images (a seeded sample, :func:`~patternscope.data.seeded_sample`: the search images are
    often class-sorted, and the key should reflect all of them, not the first class), so among pixels of equal
    mask value (saturated at 0 or 1) those whose growth would lower the loss most rank first. Deterministic:
    a fixed batch for a seed."""
    x = take(images, seeded_sample(int(images.shape[0]), n, seed)).to(model.device)
    (grad,) = torch.autograd.grad(classwise_loss(model, param, target, alpha)(x), param.mask)
    return -grad.detach().cpu()


@dataclass
class PredictivePower:
    """Attack success of a class-wise pattern on held-out images of other classes, with the clean rate."""

    target: int
    k: int
    success: float
    clean_rate: float
    images: int
    per_class: dict[int, dict[str, float]]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def predictive_power(
    model: Classifier, pattern: ClasswisePattern, images: Images, labels: torch.Tensor
) -> PredictivePower:
    """Share of images of other classes classified as the target once stamped, overall and per source class,
    next to the share classified as the target without the pattern."""
    x, y = other_classes(images, labels, target=pattern.target)
    if x.shape[0] == 0:
        raise DataError(f"no evaluation images of classes other than {pattern.target}")
    hit = predicted_class(model, x, apply=pattern.stamp) == pattern.target
    clean = predicted_class(model, x) == pattern.target
    per = {
        int(c): {
            "success": float(hit[y == c].float().mean()),
            "clean_rate": float(clean[y == c].float().mean()),
            "images": int((y == c).sum()),
        }
        for c in torch.unique(y).tolist()
    }
    return PredictivePower(
        pattern.target, pattern.k, float(hit.float().mean()), float(clean.float().mean()), len(y), per
    )


@torch.no_grad()
def success_at_k(model: Classifier, pattern: ClasswisePattern, images: Images, k: int) -> float:
    """Attack success of ``pattern`` cut to its top ``k`` pixels on ``images`` (all of other classes)."""
    stamp = pattern.with_k(k).stamp
    return float((predicted_class(model, images, apply=stamp) == pattern.target).float().mean())


def geometric_sizes(largest: int, ratio: float = GRID_RATIO) -> list[int]:
    """1, 2, ... up to ``largest``, each about ``ratio`` times the one before (distinct integers, ``largest``
    last): where :func:`smallest_k` looks first."""
    out: list[int] = []
    value = 1.0
    while value < largest:
        if not out or round(value) > out[-1]:
            out.append(round(value))
        value *= ratio
    return [*out, largest] if not out or out[-1] < largest else out


def smallest_k(model: Classifier, pattern: ClasswisePattern, images: Images, rate: float = 0.9) -> tuple[int, float]:
    """The fewest top pixels whose stamp reaches ``rate`` success on ``images`` (other classes only), and the
    success there. k = H*W + 1 and the largest success seen when no size reaches it.

    Success need not grow with k: a learned canvas's pixels far from the trigger drift (signed steps move
    them whatever their tiny gradient), and stamping them can undo what the first pixels did (seen on a
    residual CNN: 93% at 240 pixels, 23% at 320; the full stamp reached it, and a bisection over all sizes
    answered 718). So the sizes of a geometric grid (:func:`geometric_sizes`, x1.5) are tried from the
    smallest up, and the first that reaches ``rate`` is refined by bisection down to the grid size before it."""
    _, h, w = pattern.shape
    below, best_seen = 0, 0.0
    for k in geometric_sizes(h * w):
        success = success_at_k(model, pattern, images, k)
        if success >= rate:
            lo, hi, best = below + 1, k, (k, success)
            while lo < hi:
                mid = (lo + hi) // 2
                s = success_at_k(model, pattern, images, mid)
                if s >= rate:
                    hi, best = mid, (mid, s)
                else:
                    lo = mid + 1
            return best
        below, best_seen = k, max(best_seen, success)
    return h * w + 1, best_seen
