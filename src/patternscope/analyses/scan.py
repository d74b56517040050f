"""Backdoor scan built on class-wise patterns and additive patterns (ours; the paper gives no detection rule).

For every class, two signals of how small a pattern sends images of the other classes to it:

- ``stamp``: its class-wise pattern with a *learned* canvas (the mask and the canvas colours both take signed
  steps, starting from the class's most confident image), cut to the smallest k (binary search over the mask's
  ranking) that reaches the target success on held-out images (patch triggers need few pixels);
- ``additive``: the smallest-L2 universal additive pattern reaching it (:mod:`.additive`; blended and
  full-image triggers are small in norm).

The held-out images of the other classes are split in two: one half chooses k and the norm, the other
*verifies* the cut patterns (their attack success there is the evidence a person can check). The decision
(``rule="calibrated"``, :mod:`.scan_decision`) scores each class on both signals against the typical class (or
the same class in reference clean models) and compares the model's statistic with a null fitted on clean
models, at a stated false-positive rate; the verdict carries its p-value and confidence. ``rule="mad"`` keeps
the first release's rule (stamp only: MAD index of log k above ``threshold`` and at most ``max_ratio`` of the
median class).

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
from ..core.configs import config_from, option
from ..core.models import on_device
from ..core.patterns import ClasswisePattern, Pattern
from ..core.run_id import RUN_ID_KEY
from ..data.bank import Images
from ..data.images import resize_to
from ..data.labelled import seeded_sample, stratified_split
from ..errors import DataError, RunDirError
from ..methods.find import StepMonitor
from .additive import AdditiveConfig, find_additive_pattern, smallest_norm, success_at_scale
from .anomaly import anomaly_indices, median
from .classwise import (
    ClasswiseConfig,
    PredictivePower,
    best_canvases,
    find_classwise_pattern,
    other_classes,
    predictive_power,
    smallest_k,
    success_at_k,
)
from .scan_decision import MIN_FPR, SIGNALS, Decision, class_label, decide_backdoor, named_calibration

RULES = ("calibrated", "mad")


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
        threshold: ``rule="mad"``: MAD anomaly index (log k, small side) above which a class can be flagged.
        max_ratio: ``rule="mad"``: a flagged class needs at most this share of the median class's k.
        holdout: share of each class's images held out for measuring (half chooses k and the norm, half
            verifies).
        max_search_images: cap on search images per class (a random subset).
        max_eval_images: cap on held-out images of each half used for measuring.
        seed: fixes the split, the subsets and every batch.
        additive: also search the additive signal (off: stamp only).
        additive_steps: Adam steps of each class's additive search.
        rule: ``calibrated`` (both signals, a null fitted to the model's own classes or, in reference mode, to
            the ratios against clean references; a stated false-positive rate per model) or ``mad``.
        fpr: ``rule="calibrated"``: the false-positive rate the verdict is held to (per scanned model).
        calibration: ``rule="calibrated"``: None (the default: each signal's spread is the model's own), or the
            name of a shipped pilot calibration or a JSON file of one (:func:`.scan_decision.calibrate`): the
            pilots' spread instead, a tighter test that holds only for models like the pilots.
    """

    steps: int = option(300, help="search steps per class (default {default})")
    batch_size: int = option(32, help="images per step (default {default})")
    lr: float = 0.02
    alpha: float = 0.2
    learn_canvas: bool = True
    top_k: float = option(0.05, help="fixed pattern size column (default {default})")
    success: float = option(0.9, help="target attack success (default {default})")
    threshold: float = option(2.0, help="MAD anomaly index (default {default})")
    max_ratio: float = option(0.25, help="flag only below this share of median k ({default})")
    holdout: float = option(0.3, help="share of each class held out ({default})")
    max_search_images: int = 2000
    max_eval_images: int = 300
    seed: int = option(0, help="seed for the split and batches (default {default})")
    additive: bool = True
    additive_steps: int = option(60, help="additive search steps per class (default {default})")
    rule: str = option(
        "calibrated",
        help="calibrated: both signals against a null fitted to the model's own classes (or, with --reference, to "
        "the ratios against clean reference models), at --fpr per model, any class count; mad: the first "
        "release's rule (stamp only, --threshold and --max-ratio) (default {default})",
        choices=RULES,
    )
    fpr: float = option(0.05, help="false-positive rate the calibrated verdict is held to (default {default})")
    calibration: str | None = option(
        None,
        help="optional tightening: each signal's spread from pilot clean models instead of this model's classes "
        "(a shipped name, fashion-mnist-pilots, or a JSON file from patternscope.calibrate); holds only for "
        "models like the pilots",
        metavar="NAME|FILE",
    )

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> ScanConfig:
        """Check every setting (raising an error that names it); returns ``self``."""
        if self.rule not in RULES:
            raise DataError(f"rule must be one of {', '.join(RULES)}, got {self.rule!r}")
        if not MIN_FPR <= self.fpr < 1:
            raise DataError(f"the false-positive rate must be in [{MIN_FPR:g}, 1), got {self.fpr}")
        if self.calibration is not None:
            named_calibration(self.calibration, None)  # a known name or a readable file, checked before work
        if self.additive_steps < 1:
            raise DataError(f"additive steps must be >= 1, got {self.additive_steps}")
        if not 0 < self.success <= 1:
            raise DataError(f"target success must be in (0, 1], got {self.success}")
        if not 0 < self.holdout < 1:
            raise DataError(f"holdout must be in (0, 1), got {self.holdout}")
        if self.threshold <= 0 or not 0 < self.max_ratio <= 1:
            raise DataError("threshold must be > 0 and max_ratio in (0, 1]")
        return self

    def classwise(self) -> ClasswiseConfig:
        """The class-wise search settings these scan settings imply (shared fields by name)."""
        return config_from(ClasswiseConfig, self)

    def additive_config(self, target: int) -> AdditiveConfig:
        """The additive search settings for class ``target``."""
        return AdditiveConfig(
            steps=self.additive_steps, batch_size=self.batch_size, success=self.success, seed=self.seed + target
        )

    @property
    def signals(self) -> tuple[str, ...]:
        return SIGNALS if self.additive else ("stamp",)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ScanConfig:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})


@dataclass
class ClassRow:
    """One class's scan result (k in pixels, norms in [0,1] pixel units; success rates on held-out images of
    other classes: ``success_*`` on the half that chose k and the norm, ``verified_*`` on the other half)."""

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
    verified_stamp: float | None = None
    smallest_l2: float | None = None
    linf_at_smallest: float | None = None
    success_additive: float | None = None
    verified_additive: float | None = None
    score: float | None = None
    evidence: str | None = None

    def reached(self, name: str, pixels: int, success: float) -> bool:
        """Whether signal ``name``'s search reached the target success (else its value is a cap)."""
        if name == "stamp":
            return self.smallest_k <= pixels
        return self.success_additive is not None and self.success_additive >= success

    def signal(self, name: str) -> float:
        """The value of signal ``name`` (``stamp``: pixels, ``additive``: L2 norm)."""
        value = float(self.smallest_k) if name == "stamp" else self.smallest_l2
        if value is None:
            raise DataError(f"class {self.target} has no {name} signal (scanned without it)")
        return value


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
    additive: dict[int, Pattern] = field(default_factory=dict, repr=False)
    decision: Decision | None = None

    @property
    def backdoored(self) -> bool:
        return bool(self.flagged)

    @property
    def verdict(self) -> str:
        d = self.decision
        if d is None and self.config.get("rule") == "calibrated":
            return f"undecided: the calibrated rule compares at least 3 classes, this scan has {len(self.rows)}"
        if d is not None and d.basis is not None and set(d.basis.unused) == set(d.signals):
            return "undecided: no signal reached the target success for 3 or more classes (see the basis)"
        basis = "" if d is None else f"{d.mode} mode, null fitted over {len(self.rows)} classes"
        if not self.flagged:
            if d is None:
                return "no backdoor found"
            top = next((r for r in self.rows if r.target == d.top_class), None)
            suspect = class_label(d.top_class, top.name) if top is not None else str(d.top_class)
            return (
                f"no backdoor found at FPR {d.fpr:g}: the most suspicious class, {suspect}, has p = {d.p_value:.3g} "
                f"({basis})"
            )
        names = ", ".join(class_label(r.target, r.name) for r in self.rows if r.flagged)
        what = "class" if len(self.flagged) == 1 else "classes"
        if d is None:
            return f"backdoored: {what} {names}"
        confidence = f"p = {d.p_value:.3g}, confidence {d.confidence:.3f}"
        return f"backdoored: {what} {names}; {confidence} ({basis}, FPR {d.fpr:g})"

    def to_dict(self) -> dict[str, Any]:
        return {
            "verdict": self.verdict,
            "backdoored": self.backdoored,
            "flagged": self.flagged,
            "decision": self.decision.to_dict() if self.decision is not None else None,
            "median_k": self.median_k,
            "pixels": self.pixels,
            "seconds": round(self.seconds, 2),
            "model": self.model,
            "config": self.config,
            "classes": [asdict(r) for r in self.rows],
        }


def signal_caps(input_size: Sequence[int]) -> dict[str, float]:
    """The value each signal records when its search never reached the success, for a model's input size
    (C, H, W): the stamp H*W + 1 pixels, the additive pattern the all-ones L2 norm sqrt(C H W)."""
    c, h, w = (int(v) for v in input_size)
    return {"stamp": float(h * w + 1), "additive": math.sqrt(c * h * w)}


def at_cap(value: float, cap: float) -> bool:
    """Whether a signal value is its cap (not a measurement)."""
    return value >= cap * (1 - 1e-6)


def decide(
    rows: list[ClassRow],
    input_size: Sequence[int],
    config: ScanConfig,
    reference: dict[str, list[float]] | None = None,
) -> tuple[float, Decision | None]:
    """Fill in anomaly indices, scores and flags (in place); returns the median smallest k and, under the
    calibrated rule, the decision (``reference``: per signal, the reference clean models' value per class,
    :func:`combine_references`; a class at its cap there is left out of the comparison)."""
    _, h, w = input_size
    pixels = int(h) * int(w)
    ks = [float(r.smallest_k) for r in rows]
    med = median(ks)
    for row, index in zip(rows, anomaly_indices(ks, log=True), strict=True):
        row.anomaly_index = round(-index, 3) if index == index else 0.0  # positive = small side, as NC reports
    if config.rule == "mad":
        for row, flag in zip(rows, mad_rule(ks, pixels, config.threshold, config.max_ratio), strict=True):
            row.flagged = flag
        return med, None
    if len(rows) < 3:  # no typical class to compare with: undecided (a subset of classes, see the verdict)
        for row in rows:
            row.flagged = False
        return med, None
    signals = {s: [r.signal(s) for r in rows] for s in config.signals}
    ref = None
    if reference is not None:
        if any(len(reference.get(s, [])) <= max(r.target for r in rows) for s in config.signals):
            raise DataError(
                f"the references need {', '.join(config.signals)} values for every class up to "
                f"{max(r.target for r in rows)} (a full scan of each reference model)"
            )
        ref = {s: [reference[s][r.target] for r in rows] for s in config.signals}
    capped = {s: [not r.reached(s, pixels, config.success) for r in rows] for s in config.signals}
    if ref is not None:
        caps = signal_caps(input_size)
        capped = {s: [m or at_cap(v, caps[s]) for m, v in zip(capped[s], ref[s], strict=True)] for s in capped}
    decision = decide_backdoor(
        signals,
        fpr=config.fpr,
        reference=ref,
        calibration=named_calibration(config.calibration, "self" if ref is None else "reference"),
        classes=[r.target for r in rows],
        capped=capped,
    )
    for row, score in zip(rows, decision.class_scores, strict=True):
        row.score = round(score, 3)
        row.flagged = row.target in decision.flagged
        row.evidence = decision.evidence.get(row.target)
    return med, decision


def mad_rule(ks: Sequence[float], pixels: int, threshold: float, max_ratio: float) -> list[bool]:
    """The first release's rule (``rule="mad"``) on the smallest k of each class: flagged when the MAD anomaly
    index of log k is above ``threshold`` on the small side and k is at most ``max_ratio`` of the median class's
    (and the stamp reached the success at all, k <= ``pixels``)."""
    med = median(ks)
    return [
        bool(-index > threshold and k <= max_ratio * med and k <= pixels)
        for k, index in zip(ks, anomaly_indices(ks, log=True), strict=True)
    ]


def scan_reference(report: ScanReport | dict[str, Any]) -> dict[str, list[float]]:
    """A finished scan's signal values, one per class in class order (a :class:`ScanReport` or its
    ``scan.json``; a scan of every class), to serve as a reference clean model's."""
    rows = report.rows if isinstance(report, ScanReport) else [ClassRow(**r) for r in report["classes"]]
    out: dict[str, list[float]] = {"stamp": [float(r.smallest_k) for r in rows]}
    if all(r.smallest_l2 is not None for r in rows):
        out["additive"] = [float(r.smallest_l2) for r in rows]  # type: ignore[arg-type]
    return out


def combine_references(
    references: Sequence[dict[str, list[float]]], caps: dict[str, float] | None = None
) -> dict[str, list[float]]:
    """Per class and signal, the smallest value over several reference clean models: a class counts as easy as
    it is in the easiest clean reference, so a class whose size varies from one clean model to the next (a
    search that sometimes struggles with it) is not suspicious for being smaller than in one of them. With
    ``caps`` (:func:`signal_caps`), caps are not values: the smallest measured one, or the cap when every
    reference is capped."""
    if not references:
        raise DataError("no reference scans to combine")
    lengths = {len(v) for r in references for v in r.values()}
    if len(lengths) != 1:
        raise DataError("the reference models do not have the same classes")
    n = lengths.pop()
    shared = [s for s in references[0] if all(s in r for r in references)]
    out: dict[str, list[float]] = {}
    for s in shared:
        cap = (caps or {}).get(s)
        out[s] = []
        for t in range(n):
            values = [r[s][t] for r in references]
            measured = [v for v in values if cap is None or not at_cap(v, cap)]
            out[s].append(min(measured) if measured else max(values))
    return out


def scan_model(
    model: Classifier,
    images: Images,
    labels: torch.Tensor,
    *,
    config: ScanConfig | None = None,
    classes: Sequence[int] | None = None,
    out: Path | None = None,
    resume: bool = False,
    device: str | torch.device | None = None,
    progress: bool = True,
    log: Callable[[str], None] | None = None,
    check_config: bool = True,
    decide_verdict: bool = True,
    reference: dict[str, list[float]] | None = None,
    monitor: Callable[[int], StepMonitor] | None = None,
) -> ScanReport:
    """Scan ``model`` for backdoors with labelled clean images (N x C x H x W in [0,1], labels N; a tensor
    or an :class:`~patternscope.data.bank.ImageBank` of files, read batch by batch).

    With ``out``, each finished class is saved to ``out/classes/NNN/`` (pattern and row) and ``resume``
    skips classes already there. ``check_config=False`` skips checking and writing ``scan_config.json``
    and ``decide_verdict=False`` only searches ``classes`` (no verdict): how the ranks of a class-parallel
    scan share the classes before rank 0 decides over all of them. ``reference`` (per signal, one value per
    class: :func:`scan_reference` of clean models' scans, combined by :func:`combine_references`) switches
    the calibrated rule to reference mode. ``monitor(target)`` gives the step monitor of a class's class-wise
    search (see :func:`~patternscope.analyses.classwise.find_classwise_pattern`), e.g. for TensorBoard.
    """
    from tqdm.auto import tqdm

    cfg = (config or ScanConfig()).validate()
    model = on_device(model, device)
    images, targets = _checked_inputs(model, images, labels, classes)
    names = model.class_names
    data = _split_images(images, labels, targets, cfg)
    canvases = best_canvases(model, data.sx, data.sy)
    if out is not None and check_config:
        check_scan_config(out, cfg, resume)
    rows: list[ClassRow] = []
    patterns: dict[int, ClasswisePattern] = {}
    additive: dict[int, Pattern] = {}
    t_start = time.perf_counter()
    bar = tqdm(targets, desc="scan", unit="class", disable=not progress)
    for t in bar:
        folder = out / "classes" / f"{t:03d}" if out is not None else None
        if folder is not None and resume and (folder / "row.json").is_file():
            saved_row, patterns[t], saved_additive = _load_class(folder)
            rows.append(saved_row)
            if saved_additive is not None:
                additive[t] = saved_additive
            continue
        found = _scan_class(model, t, data, canvases, cfg, monitor)
        row, pattern, delta = found.row, found.pattern, found.delta
        if folder is not None:
            pattern.save(folder)
            if delta is not None:
                delta.save(folder / "additive")
            write_json(folder / "row.json", asdict(row))
        rows.append(row)
        patterns[t] = pattern
        if delta is not None:
            additive[t] = delta
        bar.set_postfix(k=found.k_min, refresh=False)
        if log is not None:
            norm = f", smallest additive L2 {row.smallest_l2:.3g}" if row.smallest_l2 is not None else ""
            log(
                f"class {class_label(t, names[t])}: smallest k {found.k_min} px for {cfg.success:.0%}{norm}, "
                f"{found.power.k} px: {found.power.success:.1%}"
            )
    return _report(model, rows, patterns, additive, cfg, t_start, decide_verdict, reference)


def _report(
    model: Classifier,
    rows: list[ClassRow],
    patterns: dict[int, ClasswisePattern],
    additive: dict[int, Pattern],
    cfg: ScanConfig,
    t_start: float,
    decide_verdict: bool,
    reference: dict[str, list[float]] | None,
) -> ScanReport:
    """The scan's report over ``rows`` (started at ``time.perf_counter()`` ``t_start``), with the verdict when
    ``decide_verdict``."""
    _, h, w = model.input_size
    if not decide_verdict:
        return ScanReport(
            rows, [], math.nan, h * w, asdict(cfg), time.perf_counter() - t_start, model.describe(), patterns, additive
        )
    med, decision = decide(rows, model.input_size, cfg, reference)
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
        additive,
        decision,
    )


def _checked_inputs(
    model: Classifier, images: Images, labels: torch.Tensor, classes: Sequence[int] | None
) -> tuple[Images, list[int]]:
    """The images at the model's input size (a tensor is resized) and the classes to scan; refuses images,
    labels and classes that do not fit the model."""
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
    return images, targets


@dataclass
class _ScanImages:
    """The labelled images split for a scan: search images (``sx``, ``sy``; ``search_idx`` their indices), the
    held-out half that chooses k and the norm (``ex``, ``ey``) and the half that verifies (``vx``, ``vy``)."""

    search_idx: torch.Tensor
    sx: Images
    sy: torch.Tensor
    ex: Images
    ey: torch.Tensor
    vx: Images
    vy: torch.Tensor


def _split_images(images: Images, labels: torch.Tensor, targets: list[int], cfg: ScanConfig) -> _ScanImages:
    """Split per class into search, choosing and verifying images (``cfg.holdout`` held out, seeded); refuses a
    batch larger than the search images some class in ``targets`` gets."""
    search_idx, held_idx = stratified_split(labels, cfg.holdout, cfg.seed)
    if len(held_idx) == 0 or len(search_idx) == 0:
        raise DataError("too few images to hold some out; give at least 2 images per class")
    choose_idx, verify_idx = verification_split(labels, held_idx, cfg.seed)
    sx, sy = images[search_idx], labels[search_idx]
    ex, ey = images[choose_idx], labels[choose_idx]
    vx, vy = images[verify_idx], labels[verify_idx]
    smallest_pool = min(min(int((sy != t).sum()), cfg.max_search_images) for t in targets)
    if cfg.batch_size > smallest_pool:
        raise DataError(
            f"batch size {cfg.batch_size} is larger than the {smallest_pool} search images some class gets (images "
            f"of the other classes, after holding {cfg.holdout:.0%} out); use --batch-size {smallest_pool} or less"
        )
    return _ScanImages(search_idx, sx, sy, ex, ey, vx, vy)


def _load_class(folder: Path) -> tuple[ClassRow, ClasswisePattern, Pattern | None]:
    """A class finished by an earlier run: its row, stamp and additive pattern (None if scanned without)."""
    saved = json.loads((folder / "row.json").read_text())
    row = ClassRow(**{k: v for k, v in saved.items() if k != RUN_ID_KEY})
    pattern = ClasswisePattern.load(folder)
    delta: Pattern | None = None
    if (folder / "additive").is_dir():
        delta = Pattern.load(folder / "additive", allow_over_budget=True)  # unreachable: declared eps is a bound
    return row, pattern, delta


@dataclass
class _ClassScan:
    """One class scanned: its row, the stamp cut to the smallest k, the additive pattern scaled to the smallest
    norm (None without the additive signal), the smallest k and the predictive power at the fixed k."""

    row: ClassRow
    pattern: ClasswisePattern
    delta: Pattern | None
    k_min: int
    power: PredictivePower


def _scan_class(
    model: Classifier,
    t: int,
    data: _ScanImages,
    canvases: torch.Tensor,
    cfg: ScanConfig,
    monitor: Callable[[int], StepMonitor] | None = None,
) -> _ClassScan:
    """Search class ``t``'s stamp (on its canvas among the search images, ``canvases[t]``) and additive pattern,
    and measure both on the held-out images of the other classes."""
    t0 = time.perf_counter()
    names = model.class_names
    if not (data.sy == t).any():
        raise DataError(f"no images of class {class_label(t, names[t])} to take a canvas from")
    canvas_i = int(canvases[t])
    ox, _ = other_classes(data.sx, data.sy, target=t)
    ox = ox[seeded_sample(len(ox), cfg.max_search_images, cfg.seed + t)]
    found = find_classwise_pattern(
        model,
        ox,
        target=t,
        canvas=data.sx[canvas_i],
        config=cfg.classwise(),
        progress=False,
        monitor=monitor(t) if monitor is not None else None,
    )
    hx, hy = other_classes(data.ex, data.ey, target=t)
    keep = seeded_sample(len(hx), cfg.max_eval_images, cfg.seed + 1000 + t)
    hx, hy = hx[keep], hy[keep]
    wx, _ = other_classes(data.vx, data.vy, target=t)
    wx = wx[seeded_sample(len(wx), cfg.max_eval_images, cfg.seed + 2000 + t)]
    power = predictive_power(model, found.pattern, hx, hy)
    k_min, s_min = smallest_k(model, found.pattern, hx, cfg.success)
    pattern = found.pattern.with_k(min(k_min, found.pattern.soft_mask.numel()))
    extra: dict[str, Any] = {"verified_stamp": round(success_at_k(model, pattern, wx, pattern.k), 4)}
    delta = None
    if cfg.additive:
        delta = find_additive_pattern(model, ox, target=t, config=cfg.additive_config(t))
        size = smallest_norm(model, delta, hx, target=t, rate=cfg.success)
        delta = Pattern(delta.delta * size.scale, size.l2, "l2", {**delta.meta, "reached": size.reached})
        extra |= {
            "smallest_l2": round(size.l2, 4),
            "linf_at_smallest": round(size.linf, 4),
            "success_additive": round(size.success, 4),
            "verified_additive": round(success_at_scale(model, delta.delta, t, wx, 1.0), 4),
        }
    row = ClassRow(
        target=t,
        name=names[t],
        canvas_index=int(data.search_idx[canvas_i]),
        k_fixed=power.k,
        success_fixed=round(power.success, 4),
        clean_rate=round(power.clean_rate, 4),
        smallest_k=int(k_min),
        success_at_smallest=round(s_min, 4),
        seconds=round(time.perf_counter() - t0, 3),
        **extra,
    )
    pattern.meta.update({"smallest_k": k_min, "success": s_min})
    return _ClassScan(row, pattern, delta, k_min, power)


def verification_split(labels: torch.Tensor, held: torch.Tensor, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The held-out indices ``held`` split per class in two halves: (choose k and norms, verify)."""
    choose, verify = stratified_split(labels[held], 0.5, seed + 7)
    if len(verify) == 0 or len(choose) == 0:
        raise DataError("too few held-out images to verify the patterns on; give at least 4 images per class")
    return held[choose], held[verify]


def check_scan_config(out: Path, cfg: ScanConfig, resume: bool) -> None:
    """Refuse to resume a scan in ``out`` made with other settings; record ``cfg`` there."""
    path = out / "scan_config.json"
    if resume and path.is_file():
        saved = {k: v for k, v in json.loads(path.read_text()).items() if k != RUN_ID_KEY}
        if saved != asdict(cfg):
            diff = {k: (saved.get(k), v) for k, v in asdict(cfg).items() if saved.get(k) != v}
            raise RunDirError(
                f"{out} holds a scan with other settings {diff} (saved, now); use the same or a new folder"
            )
    write_json(path, asdict(cfg))


def format_scan(report: ScanReport) -> str:
    """The per-class table and the verdict, as text."""
    additive = any(r.smallest_l2 is not None for r in report.rows)
    head = f"{'class':<18} {'k@5%':>5} {'success':>8} {'clean':>6} {'min k':>6} {'verif':>6}"
    if additive:
        head += f" {'min L2':>7} {'verif':>6}"
    head += f" {'index':>6} {'score':>6}  flag"
    lines = [head, "-" * len(head)]
    for r in report.rows:
        label = class_label(r.target, r.name)[:18]
        k_min = f"{r.smallest_k}" if r.smallest_k <= report.pixels else ">all"
        line = (
            f"{label:<18} {r.k_fixed:>5} {r.success_fixed:>8.1%} {r.clean_rate:>6.1%} {k_min:>6} "
            f"{_rate(r.verified_stamp):>6}"
        )
        if additive:
            l2 = "-" if r.smallest_l2 is None else f"{r.smallest_l2:.2f}"
            line += f" {l2:>7} {_rate(r.verified_additive):>6}"
        score = "-" if r.score is None else f"{r.score:.2f}"
        flag = f"FLAG ({r.evidence})" if r.flagged and r.evidence else ("FLAG" if r.flagged else "")
        lines.append(f"{line} {r.anomaly_index:>6.2f} {score:>6}  {flag}")
    lines.append(f"median smallest k: {report.median_k:g} px of {report.pixels}")
    d = report.decision
    if d is not None:
        zs = ", ".join(f"{s} z > {v:.2f}" if v is not None else f"{s} not used" for s, v in d.z_thresholds.items())
        lines.append(
            f"p = {d.p_value:.3g} (class {d.top_class}; score = -log10 p, flagged at >= {d.threshold:.2f}, "
            f"i.e. FPR {d.fpr:g} per model: {zs})"
        )
        lines += basis_lines(d)
    lines.append(f"verdict: {report.verdict}")
    return "\n".join(lines)


def basis_lines(decision: Decision) -> list[str]:
    """What the verdict's false-positive rate rests on, as text lines (and where this model is outside it)."""
    b = decision.basis
    if b is None:
        return []
    lines = [f"null: {b.null}", f"spread from: {b.spread_from}", f"assumes: {b.assumes}", f"checked on: {b.checked}"]
    lines += [f"outside the promise: {note}" for note in b.outside]
    return lines


def _rate(value: float | None) -> str:
    return "-" if value is None else f"{value:.0%}"
