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

import json
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from ._io import atomic_path, write_json
from ._version import __version__
from .errors import DataError, PatternError
from .models import Classifier
from .search import SearchConfig, SearchResult, run_search


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

    alpha: float = 0.2
    lr: float = 0.02
    mask_init: float = 0.5
    batch_size: int = 4
    epochs: float = 5.0
    steps: int | None = None
    max_steps: int = 3000
    top_k: float = 0.05
    learn_canvas: bool = False
    seed: int = 0

    def __post_init__(self) -> None:
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

    def search_steps(self, n_images: int) -> int:
        if self.steps is not None:
            return self.steps
        return max(1, min(self.max_steps, round(self.epochs * n_images / self.batch_size)))

    def k_pixels(self, height: int, width: int) -> int:
        k = round(self.top_k * height * width) if self.top_k < 1 else int(self.top_k)
        return max(1, min(k, height * width))


class MaskCanvasParam:
    """The optimised tensors: a mask 1 x H x W in [0,1] and the canvas C x H x W (a leaf only if learned)."""

    def __init__(self, canvas: torch.Tensor, mask_init: float, learn_canvas: bool, device: torch.device) -> None:
        _, h, w = canvas.shape
        self.mask = torch.full((1, h, w), float(mask_init), device=device, requires_grad=True)
        self.canvas = canvas.detach().clone().float().to(device).requires_grad_(learn_canvas)
        self.learn_canvas = learn_canvas

    def tensors(self) -> dict[str, torch.Tensor]:
        out = {"mask": self.mask}
        if self.learn_canvas:
            out["canvas"] = self.canvas
        return out

    @torch.no_grad()
    def project_(self) -> None:
        self.mask.clamp_(0, 1)
        self.canvas.clamp_(0, 1)


def blend(mask: torch.Tensor, canvas: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """x' = m * x_c + (1 - m) * x for a batch ``x`` (N x C x H x W), mask 1 x H x W, canvas C x H x W."""
    return mask * canvas + (1 - mask) * x


def classwise_loss(
    model: Classifier, param: MaskCanvasParam, target: int, alpha: float
) -> Callable[[torch.Tensor], torch.Tensor]:
    """alpha * CE(f(blend), t) + (1 - alpha) * sum(m) / (H W / 2)."""
    _, h, w = param.mask.shape

    def loss(x: torch.Tensor) -> torch.Tensor:
        logits = model(blend(param.mask, param.canvas, x))
        labels = torch.full((x.shape[0],), target, dtype=torch.long, device=x.device)
        return alpha * F.cross_entropy(logits.float(), labels) + (1 - alpha) * param.mask.sum() / (h * w / 2)

    return loss


def epoch_batches(images: torch.Tensor, seed: int) -> Callable[[int, int], torch.Tensor]:
    """Batches that walk through ``images`` in a fresh seeded order each epoch; a pure function of the step."""
    n = images.shape[0]
    orders: dict[int, torch.Tensor] = {}

    def order(epoch: int) -> torch.Tensor:
        if epoch not in orders:
            orders[epoch] = torch.randperm(n, generator=torch.Generator().manual_seed(seed * 100_003 + epoch))
        return orders[epoch]

    def batch(step: int, batch_size: int) -> torch.Tensor:
        positions = range(step * batch_size, (step + 1) * batch_size)
        idx = torch.stack([order(p // n)[p % n] for p in positions])
        return images[idx]

    return batch


def top_k_mask(soft_mask: torch.Tensor, k: int) -> torch.Tensor:
    """A {0,1} mask (1 x H x W) with ones at the ``k`` largest values of ``soft_mask`` (ties: lower index)."""
    flat = soft_mask.detach().flatten().float().cpu()
    order = ranking(flat)
    out = torch.zeros_like(flat)
    out[order[: max(0, min(k, flat.numel()))]] = 1
    return out.view_as(soft_mask.cpu())


def ranking(flat: torch.Tensor) -> torch.Tensor:
    """Pixel indices sorted by mask value, largest first; stable, so equal values keep index order."""
    return torch.sort(flat, descending=True, stable=True).indices


@dataclass
class ClasswisePattern:
    """A stamp: ``mask`` (1 x H x W in {0,1}) and ``colours`` (C x H x W in [0,1]) for class ``target``.

    ``soft_mask`` keeps the learned mask, so the pattern can be re-cut at any k (:meth:`with_k`).
    """

    target: int
    mask: torch.Tensor
    colours: torch.Tensor
    soft_mask: torch.Tensor
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def k(self) -> int:
        return int(self.mask.sum())

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(self.colours.shape)  # type: ignore[return-value]

    def with_k(self, k: int) -> ClasswisePattern:
        return ClasswisePattern(
            self.target, top_k_mask(self.soft_mask, k), self.colours, self.soft_mask, dict(self.meta)
        )

    def stamp(self, x: torch.Tensor) -> torch.Tensor:
        """Overwrite the pattern's pixels of ``x`` (N x C x H x W or C x H x W, [0,1]) with its colours."""
        if tuple(x.shape[-3:]) != self.shape:
            raise PatternError(
                f"class-wise pattern of shape {self.shape} cannot be stamped on images of shape {tuple(x.shape[-3:])}"
            )
        m = self.mask.to(x.device, x.dtype)
        return x * (1 - m) + m * self.colours.to(x.device, x.dtype)

    def visible(self, background: float = 0.5) -> torch.Tensor:
        """The pattern's colours where it is on, ``background`` elsewhere (C x H x W)."""
        return self.colours * self.mask + background * (1 - self.mask)

    def save(self, folder: str | Path, name: str = "pattern") -> Path:
        """Write ``NAME.safetensors``, ``NAME.json`` and ``NAME.png`` into ``folder`` atomically."""
        from safetensors.torch import save_file

        from .patterns import to_pil

        out = Path(folder)
        meta = {
            "format": "patternscope.pattern/1",
            "kind": "classwise",
            "target": self.target,
            "k": self.k,
            "shape": list(self.shape),
            "patternscope_version": __version__,
            "created": datetime.now(UTC).isoformat(timespec="seconds"),
            **self.meta,
        }
        tensors = {
            "mask": self.mask.float().contiguous().cpu(),
            "colours": self.colours.float().contiguous().cpu(),
            "soft_mask": self.soft_mask.float().contiguous().cpu(),
        }
        with atomic_path(out / f"{name}.safetensors") as tmp:
            save_file(tensors, str(tmp), metadata={"patternscope": json.dumps(meta)})
        write_json(out / f"{name}.json", meta)
        with atomic_path(out / f"{name}.png") as tmp:
            to_pil(self.visible(), min_side=224).save(tmp, format="PNG")
        return out

    @classmethod
    def load(cls, path: str | Path) -> ClasswisePattern:
        """Load from a folder holding ``pattern.safetensors`` or from a ``.safetensors`` file."""
        from safetensors import SafetensorError, safe_open

        p = Path(path)
        if p.is_dir():
            p = p / "pattern.safetensors"
        if not p.is_file():
            raise PatternError(f"no class-wise pattern at {str(path)!r}")
        try:
            with safe_open(str(p), framework="pt") as fh:
                meta = json.loads((fh.metadata() or {}).get("patternscope", "{}"))
                tensors = {k: fh.get_tensor(k) for k in ("mask", "colours", "soft_mask")}
        except (SafetensorError, OSError, ValueError, json.JSONDecodeError) as exc:
            raise PatternError(f"{str(p)!r} is not a readable class-wise pattern file ({exc})") from None
        if meta.get("kind") != "classwise":
            raise PatternError(f"{str(p)!r} is not a class-wise pattern (kind {meta.get('kind')!r})")
        rest = {k: v for k, v in meta.items() if k not in {"format", "kind", "target", "k", "shape"}}
        return cls(int(meta["target"]), tensors["mask"], tensors["colours"], tensors["soft_mask"], rest)


# ---------------------------------------------------------------------------------------------------
# Canvas and data


@torch.no_grad()
def class_probabilities(model: Classifier, images: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
    """Softmax probabilities (N x classes) of ``model`` on ``images``."""
    out = [
        model(images[i : i + batch_size].to(model.device)).float().softmax(1).cpu()
        for i in range(0, images.shape[0], batch_size)
    ]
    return torch.cat(out)


def choose_canvas(
    model: Classifier, images: torch.Tensor, labels: torch.Tensor, target: int, probs: torch.Tensor | None = None
) -> int:
    """Index of the image labelled ``target`` that the model classifies as ``target`` most confidently.

    Falls back to the most confident ``target`` prediction among all images when no labelled image of the
    class is classified as it.
    """
    p = probs if probs is not None else class_probabilities(model, images)
    score = p[:, target].clone()
    own = (labels == target) & (p.argmax(1) == target)
    if own.any():
        score[~own] = -1
    elif (labels == target).any():
        score[labels != target] = -1
    return int(score.argmax())


def spread_examples(images: torch.Tensor, labels: torch.Tensor, n: int = 8) -> torch.Tensor:
    """Up to ``n`` images, one per class in turn (first of each class, then second, ...), for figures."""
    order: list[int] = []
    by_class = [torch.nonzero(labels == c).flatten().tolist() for c in torch.unique(labels).tolist()]
    depth = 0
    while len(order) < min(n, len(labels)):
        for idx in by_class:
            if depth < len(idx) and len(order) < n:
                order.append(idx[depth])
        depth += 1
    return images[torch.tensor(order, dtype=torch.long)]


def other_classes(images: torch.Tensor, labels: torch.Tensor, target: int) -> tuple[torch.Tensor, torch.Tensor]:
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
    target: int,
    search_images: torch.Tensor,
    canvas: torch.Tensor,
    config: ClasswiseConfig | None = None,
    *,
    progress: bool = False,
    checkpoint: Path | None = None,
    resume: bool = False,
    desc: str | None = None,
) -> ClasswiseResult:
    """Search the class-wise pattern of ``target`` over ``search_images`` (other classes only, [0,1])."""
    cfg = config or ClasswiseConfig()
    if not 0 <= target < model.num_classes:
        raise DataError(
            f"class {target} is out of range: the model has {model.num_classes} classes (0..{model.num_classes - 1})"
        )
    if search_images.ndim != 4 or search_images.shape[0] == 0:
        raise DataError(f"no search images of classes other than {target}")
    if cfg.batch_size > search_images.shape[0]:
        raise DataError(
            f"batch size {cfg.batch_size} is larger than the {search_images.shape[0]} search images of classes "
            f"other than {target}; use --batch-size {search_images.shape[0]} or less, or give more images"
        )
    if tuple(canvas.shape) != tuple(model.input_size) or tuple(search_images.shape[1:]) != tuple(model.input_size):
        raise DataError(
            f"images are {tuple(search_images.shape[1:])} and the canvas {tuple(canvas.shape)}, "
            f"but the model takes {tuple(model.input_size)}"
        )
    device = model.device
    param = MaskCanvasParam(canvas, cfg.mask_init, cfg.learn_canvas, device)
    steps = cfg.search_steps(search_images.shape[0])
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
    result = run_search(
        param,
        classwise_loss(model, param, target, cfg.alpha),
        epoch_batches(search_images.cpu(), cfg.seed),
        search_cfg,
        identity=identity,
    )
    # The final tensors, not the best window's: the mask-size term keeps shrinking the mask to the end.
    soft = param.mask.detach().cpu()
    colours = param.canvas.detach().cpu()
    k = cfg.k_pixels(*soft.shape[-2:])
    meta = {"model": model.spec, "weights": model.weights, "learn_canvas": cfg.learn_canvas, "config": asdict(cfg)}
    pattern = ClasswisePattern(target, top_k_mask(soft, k), colours, soft, meta)
    return ClasswiseResult(pattern, canvas.detach().cpu(), result, steps)


@torch.no_grad()
def predicted(model: Classifier, images: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
    return torch.cat(
        [
            model(images[i : i + batch_size].to(model.device)).argmax(1).cpu()
            for i in range(0, images.shape[0], batch_size)
        ]
    )


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
    model: Classifier, pattern: ClasswisePattern, images: torch.Tensor, labels: torch.Tensor
) -> PredictivePower:
    """Share of images of other classes classified as the target once stamped, overall and per source class,
    next to the share classified as the target without the pattern."""
    x, y = other_classes(images, labels, pattern.target)
    if x.shape[0] == 0:
        raise DataError(f"no evaluation images of classes other than {pattern.target}")
    hit = predicted(model, pattern.stamp(x)) == pattern.target
    clean = predicted(model, x) == pattern.target
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
def success_at_k(model: Classifier, pattern: ClasswisePattern, images: torch.Tensor, k: int) -> float:
    """Attack success of ``pattern`` cut to its top ``k`` pixels on ``images`` (all of other classes)."""
    return float((predicted(model, pattern.with_k(k).stamp(images)) == pattern.target).float().mean())


def smallest_k(
    model: Classifier, pattern: ClasswisePattern, images: torch.Tensor, rate: float = 0.9
) -> tuple[int, float]:
    """Binary search for the fewest top pixels whose stamp reaches ``rate`` success on ``images`` (other
    classes only). Returns (k, success at k); k = H*W + 1 and the full-stamp success when even every
    pixel falls short. Assumes success grows with k (true up to noise: more pixels of the same stamp)."""
    _, h, w = pattern.shape
    lo, hi = 1, h * w
    full = success_at_k(model, pattern, images, hi)
    if full < rate:
        return h * w + 1, full
    best = (hi, full)
    while lo < hi:
        mid = (lo + hi) // 2
        s = success_at_k(model, pattern, images, mid)
        if s >= rate:
            hi, best = mid, (mid, s)
        else:
            lo = mid + 1
    return best
