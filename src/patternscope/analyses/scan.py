"""Backdoor scan built on class-wise patterns (ours; the paper gives no detection rule).

For every class: search its class-wise pattern with a *learned* canvas (the mask and the canvas colours
both take signed steps, starting from the class's most confident image), then measure on held-out
images of the other classes its attack success at a fixed k and the smallest k (binary search over the
mask's ranking) that reaches a target success rate. A backdoor target class needs far fewer pixels than
the others. A class is flagged when its smallest k is an outlier on the small side by the MAD anomaly
index (in log space, index > 2, as Neural Cleanse) *and* it needs at most ``max_ratio`` of the median
class's pixels: the second condition keeps naturally easy classes (one class that simply needs fewer
pixels than the rest, e.g. bags in Fashion-MNIST) from being flagged when the other classes happen to
agree closely.

Finished classes are saved one by one, so an interrupted scan resumes where it stopped.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import torch

from ..core.atomic import write_json
from ..core.classifier import Classifier
from ..core.configs import config_from
from ..core.models import on_device
from ..core.patterns import ClasswisePattern
from ..data.bank import Images
from ..data.images import resize_to
from ..data.labelled import stratified_split
from ..errors import DataError, RunDirError
from .anomaly import anomaly_indices, median
from .classwise import (
    ClasswiseConfig,
    best_canvases,
    find_classwise_pattern,
    other_classes,
    predictive_power,
    smallest_k,
)


@dataclass
class ScanConfig:
    """Settings of the backdoor scan.

    Args:
        steps: signed steps per class (batch ``batch_size``).
        batch_size: search images per step.
        lr: signed step on mask and canvas ([0,1] units).
        alpha: weight of the cross-entropy (the mask-size term gets ``1 - alpha``).
        learn_canvas: optimise the canvas colours as well as the mask (off: the paper's natural canvas).
        top_k: the fixed pattern size for the predictive-power column (share of pixels if < 1).
        success: attack success the smallest k must reach on held-out images.
        threshold: MAD anomaly index (log k, small side) above which a class can be flagged.
        max_ratio: a flagged class needs at most this share of the median class's k.
        holdout: share of each class's images held out for measuring.
        max_search_images: cap on search images per class (a random subset).
        max_eval_images: cap on held-out images used for measuring.
        seed: fixes the split, the subsets and every batch.
    """

    steps: int = 300
    batch_size: int = 32
    lr: float = 0.02
    alpha: float = 0.2
    learn_canvas: bool = True
    top_k: float = 0.05
    success: float = 0.9
    threshold: float = 2.0
    max_ratio: float = 0.25
    holdout: float = 0.3
    max_search_images: int = 2000
    max_eval_images: int = 500
    seed: int = 0

    def __post_init__(self) -> None:
        if not 0 < self.success <= 1:
            raise DataError(f"target success must be in (0, 1], got {self.success}")
        if not 0 < self.holdout < 1:
            raise DataError(f"holdout must be in (0, 1), got {self.holdout}")
        if self.threshold <= 0 or not 0 < self.max_ratio <= 1:
            raise DataError("threshold must be > 0 and max_ratio in (0, 1]")

    def classwise(self) -> ClasswiseConfig:
        """The class-wise search settings these scan settings imply (shared fields by name)."""
        return config_from(ClasswiseConfig, self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ScanConfig:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})


@dataclass
class ClassRow:
    """One class's scan result (k in pixels; success rates on held-out images of other classes)."""

    target: int
    name: str
    canvas_index: int
    k_fixed: int
    success_fixed: float
    clean_rate: float
    smallest_k: int
    success_at_smallest: float
    seconds: float
    anomaly_index: float = 0.0
    flagged: bool = False


@dataclass
class ScanReport:
    """The verdict, flagged classes, per-class table and the recovered trigger of each flagged class."""

    rows: list[ClassRow]
    flagged: list[int]
    median_k: float
    pixels: int
    config: dict[str, Any]
    seconds: float
    model: dict[str, Any] = field(default_factory=dict)
    patterns: dict[int, ClasswisePattern] = field(default_factory=dict, repr=False)

    @property
    def backdoored(self) -> bool:
        return bool(self.flagged)

    @property
    def verdict(self) -> str:
        if not self.flagged:
            return "no backdoor found"
        names = ", ".join(f"{r.target} ({r.name})" for r in self.rows if r.flagged)
        return f"backdoored: class {names}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "verdict": self.verdict,
            "backdoored": self.backdoored,
            "flagged": self.flagged,
            "median_k": self.median_k,
            "pixels": self.pixels,
            "seconds": round(self.seconds, 2),
            "model": self.model,
            "config": self.config,
            "classes": [asdict(r) for r in self.rows],
        }


def _subset(n: int, cap: int, seed: int) -> torch.Tensor:
    if n <= cap:
        return torch.arange(n)
    return torch.randperm(n, generator=torch.Generator().manual_seed(seed))[:cap].sort().values


def decide(rows: list[ClassRow], pixels: int, config: ScanConfig) -> float:
    """Fill in anomaly indices and flags (in place); returns the median smallest k."""
    ks = [float(r.smallest_k) for r in rows]
    med = median(ks)
    for row, index in zip(rows, anomaly_indices(ks, log=True), strict=True):
        row.anomaly_index = round(-index, 3) if index == index else 0.0  # positive = small side, as NC reports
        row.flagged = bool(
            -index > config.threshold and row.smallest_k <= config.max_ratio * med and row.smallest_k <= pixels
        )
    return med


def scan_model(
    model: Classifier,
    images: Images,
    labels: torch.Tensor,
    config: ScanConfig | None = None,
    *,
    classes: Sequence[int] | None = None,
    out: Path | None = None,
    resume: bool = False,
    device: str | torch.device | None = None,
    progress: bool = True,
    log: Callable[[str], None] | None = None,
    check_config: bool = True,
    decide_verdict: bool = True,
) -> ScanReport:
    """Scan ``model`` for backdoors with labelled clean images (N x C x H x W in [0,1], labels N; a tensor
    or an :class:`~patternscope.data.bank.ImageBank` of files, read batch by batch).

    With ``out``, each finished class is saved to ``out/classes/NNN/`` (pattern and row) and ``resume``
    skips classes already there. ``check_config=False`` skips checking and writing ``scan_config.json``
    and ``decide_verdict=False`` only searches ``classes`` (no verdict): how the ranks of a class-parallel
    scan share the classes before rank 0 decides over all of them.
    """
    from tqdm.auto import tqdm

    cfg = config or ScanConfig()
    model = on_device(model, device)
    num = model.num_classes
    if images.ndim != 4 or images.shape[0] != labels.shape[0] or images.shape[0] == 0:
        raise DataError("scan needs labelled images: N x C x H x W and N labels")
    if tuple(images.shape[1:]) != tuple(model.input_size):
        if not isinstance(images, torch.Tensor):
            raise DataError(f"images are {tuple(images.shape[1:])} but the model takes {tuple(model.input_size)}")
        images = resize_to(images, model.input_size)
    bad = labels[(labels < 0) | (labels >= num)]
    if len(bad):
        raise DataError(
            f"label {int(bad[0])} is out of range for a model with {num} classes (0..{num - 1}); "
            "check the class folders match the model's classes"
        )
    targets = list(classes) if classes is not None else list(range(num))
    for t in targets:
        if not 0 <= t < num:
            raise DataError(f"class {t} is out of range: the model has {num} classes (0..{num - 1})")
    if len(targets) < 3 and classes is None:
        raise DataError(f"a scan needs at least 3 classes to compare, the model has {num}")
    names = model.class_names
    search_idx, held_idx = stratified_split(labels, cfg.holdout, cfg.seed)
    sx, sy = images[search_idx], labels[search_idx]
    ex, ey = images[held_idx], labels[held_idx]
    if len(held_idx) == 0 or len(search_idx) == 0:
        raise DataError("too few images to hold some out; give at least 2 images per class")
    smallest_pool = min(min(int((sy != t).sum()), cfg.max_search_images) for t in targets)
    if cfg.batch_size > smallest_pool:
        raise DataError(
            f"batch size {cfg.batch_size} is larger than the {smallest_pool} search images some class gets (images "
            f"of the other classes, after holding {cfg.holdout:.0%} out); use --batch-size {smallest_pool} or less"
        )
    canvases = best_canvases(model, sx, sy)
    if out is not None and check_config:
        check_scan_config(out, cfg, resume)
    rows: list[ClassRow] = []
    patterns: dict[int, ClasswisePattern] = {}
    t_start = time.perf_counter()
    bar = tqdm(targets, desc="scan", unit="class", disable=not progress)
    for t in bar:
        folder = out / "classes" / f"{t:03d}" if out is not None else None
        if folder is not None and resume and (folder / "row.json").is_file():
            rows.append(ClassRow(**json.loads((folder / "row.json").read_text())))
            patterns[t] = ClasswisePattern.load(folder)
            continue
        t0 = time.perf_counter()
        if not (sy == t).any():
            raise DataError(f"no images of class {t} ({names[t]}) to take a canvas from")
        canvas_i = int(canvases[t])
        ox, _ = other_classes(sx, sy, t)
        ox = ox[_subset(len(ox), cfg.max_search_images, cfg.seed + t)]
        found = find_classwise_pattern(model, t, ox, sx[canvas_i], cfg.classwise(), progress=False)
        hx, hy = other_classes(ex, ey, t)
        keep = _subset(len(hx), cfg.max_eval_images, cfg.seed + 1000 + t)
        hx, hy = hx[keep], hy[keep]
        power = predictive_power(model, found.pattern, hx, hy)
        k_min, s_min = smallest_k(model, found.pattern, hx, cfg.success)
        row = ClassRow(
            target=t,
            name=names[t],
            canvas_index=int(search_idx[canvas_i]),
            k_fixed=power.k,
            success_fixed=round(power.success, 4),
            clean_rate=round(power.clean_rate, 4),
            smallest_k=int(k_min),
            success_at_smallest=round(s_min, 4),
            seconds=round(time.perf_counter() - t0, 3),
        )
        pattern = found.pattern.with_k(min(k_min, found.pattern.soft_mask.numel()))
        pattern.meta.update({"smallest_k": k_min, "success": s_min})
        if folder is not None:
            pattern.save(folder)
            write_json(folder / "row.json", asdict(row))
        rows.append(row)
        patterns[t] = pattern
        bar.set_postfix(k=k_min, refresh=False)
        if log is not None:
            log(
                f"class {t} ({names[t]}): smallest k {k_min} px for {cfg.success:.0%}, "
                f"{power.k} px: {power.success:.1%}"
            )
    _, h, w = model.input_size
    if not decide_verdict:
        return ScanReport(
            rows, [], math.nan, h * w, asdict(cfg), time.perf_counter() - t_start, model.describe(), patterns
        )
    med = decide(rows, h * w, cfg)
    flagged = [r.target for r in rows if r.flagged]
    return ScanReport(
        rows,
        flagged,
        med,
        h * w,
        asdict(cfg),
        time.perf_counter() - t_start,
        model.describe(),
        patterns,
    )


def check_scan_config(out: Path, cfg: ScanConfig, resume: bool) -> None:
    """Refuse to resume a scan in ``out`` made with other settings; record ``cfg`` there."""
    path = out / "scan_config.json"
    if resume and path.is_file():
        saved = json.loads(path.read_text())
        if saved != asdict(cfg):
            diff = {k: (saved.get(k), v) for k, v in asdict(cfg).items() if saved.get(k) != v}
            raise RunDirError(
                f"{out} holds a scan with other settings {diff} (saved, now); use the same or a new folder"
            )
    write_json(path, asdict(cfg))


def format_scan(report: ScanReport) -> str:
    """The per-class table and the verdict, as text."""
    head = f"{'class':<18} {'k@5%':>5} {'success':>8} {'clean':>6} {'min k':>6} {'index':>6}  flag"
    lines = [head, "-" * len(head)]
    for r in report.rows:
        label = f"{r.target} {r.name}"[:18]
        k_min = f"{r.smallest_k}" if r.smallest_k <= report.pixels else ">all"
        lines.append(
            f"{label:<18} {r.k_fixed:>5} {r.success_fixed:>8.1%} {r.clean_rate:>6.1%} {k_min:>6} "
            f"{r.anomaly_index:>6.2f}  {'FLAG' if r.flagged else ''}"
        )
    lines.append(f"median smallest k: {report.median_k:g} px of {report.pixels}; verdict: {report.verdict}")
    return "\n".join(lines)
