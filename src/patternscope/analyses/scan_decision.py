"""The backdoor scan's decision: two signals per class, one statistic per model, a null fitted on clean models.

Signals (per class t; both "how small a pattern sends other classes to t"):

- ``stamp``: the fewest pixels of its class-wise stamp reaching the target success (patch triggers);
- ``additive``: the smallest L2 norm of a universal additive pattern reaching it (blended, full-image
  triggers).

Per signal, a class's score is how many times smaller its value is than the model's typical class, in log
space and in units of that signal's spread over clean models' classes: z_t = ln(median / v_t) / spread. With
reference clean models (``mode="reference"``) a class must also be small against the same class in the
references (ratio centred on the median class, over its own spread), and the smaller of the two z counts: a
class that is naturally easy (small in every model) does not stand out against the references, and a class
that happens to be hard in a reference does not stand out against its own model. A class's score is its larger
z over the signals, and the model's statistic is the largest class score.

The null distribution of that statistic is a Gumbel (the law of maxima) fitted by moments to clean models'
statistics (:data:`CALIBRATIONS`, measured by ``benchmarks/scan_calibration.py`` on pilot models that are not
in the zoo benchmark). The p-value of a model is 1 - G(statistic); the verdict is "backdoored" when it is below
``fpr``, and its confidence is 1 - p. So on clean models like the calibration's, at most a share ``fpr`` of
scans is expected to say "backdoored"; on other architectures and data the references are what keep that
promise, which is why the mode is part of every verdict.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from ..errors import DataError
from .anomaly import median

SIGNALS = ("stamp", "additive")
EULER_GAMMA = 0.5772156649015329


@dataclass(frozen=True)
class ScanCalibration:
    """A clean-model null of the scan statistic: per-signal spreads and a Gumbel (loc, scale). In reference mode
    ``spread`` is that of the ratios against the references and ``self_spread`` that of the self-mode ratios."""

    mode: str
    spread: dict[str, float]
    loc: float
    scale: float
    models: int
    source: str
    self_spread: dict[str, float] | None = None

    def p_value(self, statistic: float) -> float:
        """P(a clean model's statistic >= ``statistic``) under the fitted Gumbel."""
        if math.isinf(statistic):
            return 0.0 if statistic > 0 else 1.0
        return 1.0 - math.exp(-math.exp(-(statistic - self.loc) / self.scale))

    def threshold(self, fpr: float) -> float:
        """The statistic above which a clean model is flagged with probability ``fpr``."""
        return self.loc - self.scale * math.log(-math.log(1.0 - fpr))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def fit_calibration(
    mode: str,
    spreads: Mapping[str, float],
    statistics_: Sequence[float],
    source: str,
    self_spread: Mapping[str, float] | None = None,
) -> ScanCalibration:
    """A Gumbel fitted by moments to clean models' statistics (at least 3), with the spreads they used."""
    if len(statistics_) < 3:
        raise DataError(f"a calibration needs at least 3 clean models, got {len(statistics_)}")
    sd = statistics.stdev(statistics_)
    scale = max(sd * math.sqrt(6) / math.pi, 1e-6)
    loc = statistics.fmean(statistics_) - EULER_GAMMA * scale
    own = dict(self_spread) if self_spread is not None else None
    return ScanCalibration(mode, dict(spreads), loc, scale, len(statistics_), source, own)


def calibrate(
    clean: Sequence[Mapping[str, Sequence[float]]],
    signals: Sequence[str],
    references: Sequence[Mapping[str, Sequence[float]]] | None = None,
    source: str = "",
) -> ScanCalibration:
    """Fit the null from clean models' scans: ``clean[i]`` maps each signal to model i's value per class;
    ``references[i]`` (reference mode) the reference values it is compared with. The spread of each signal is
    1.4826 x the MAD of the clean classes' log ratios; the Gumbel is fitted to the models' statistics."""
    if references is not None and len(references) != len(clean):
        raise DataError("one reference per clean model")
    own = _spreads([{s: log_ratios(m[s]) for s in signals} for m in clean], signals)
    spread, self_spread = own, None
    if references is not None:
        ratios = [{s: log_ratios(m[s], references[i][s]) for s in signals} for i, m in enumerate(clean)]
        spread, self_spread = _spreads(ratios, signals), own
    probe = ScanCalibration("self" if references is None else "reference", spread, 0.0, 1.0, 0, "", self_spread)
    stats = []
    for i, m in enumerate(clean):
        scores = signal_scores(m, probe, None if references is None else references[i])
        stats.append(max(max(v) for v in scores.values()))
    return fit_calibration(probe.mode, spread, stats, source, self_spread)


def _spreads(ratios: Sequence[Mapping[str, Sequence[float]]], signals: Sequence[str]) -> dict[str, float]:
    out = {}
    for s in signals:
        pooled = [r for model in ratios for r in model[s]]
        mid = median(pooled)
        out[s] = max(1.4826 * median([abs(r - mid) for r in pooled]), 1e-6)
    return out


# Measured by benchmarks/scan_calibration.py (see docs/benchmarks.md "scan_calibration"); the zoo benchmark's
# models are never among the calibration's.
# Keyed by mode and the signals used ("self:stamp+additive").
_PILOTS = "16 clean Fashion-MNIST pilot models (SmallCNN and LeNet5, seeds 300-307)"
_REFERENCED = _PILOTS + ", 2 references each"
CALIBRATIONS: dict[str, ScanCalibration] = {
    "self:stamp+additive": ScanCalibration("self", {"stamp": 0.3582, "additive": 0.1109}, 1.8528, 0.5275, 16, _PILOTS),
    "reference:stamp+additive": ScanCalibration(
        "reference",
        {"stamp": 0.1407, "additive": 0.0738},
        0.9183,
        0.6510,
        16,
        _REFERENCED,
        {"stamp": 0.3582, "additive": 0.1109},
    ),
    "self:stamp": ScanCalibration("self", {"stamp": 0.3582}, 1.1947, 0.6275, 16, _PILOTS),
    "reference:stamp": ScanCalibration(
        "reference", {"stamp": 0.1407}, 0.6832, 0.5909, 16, _REFERENCED, {"stamp": 0.3582}
    ),
}


def calibration_key(mode: str, signals: Sequence[str]) -> str:
    """The :data:`CALIBRATIONS` key of a mode and a set of signals."""
    return f"{mode}:{'+'.join(s for s in SIGNALS if s in signals)}"


def log_ratios(values: Sequence[float], reference: Sequence[float] | None = None) -> list[float]:
    """ln(typical / v_t) per class: the median class (``reference`` None) or the same class in the references,
    centred on the median class; positive means smaller than typical."""
    if any(not v > 0 for v in values):
        raise DataError("signal values must be positive")
    logs = [math.log(v) for v in values]
    if reference is None:
        mid = median(logs)
        return [mid - v for v in logs]
    if len(reference) != len(values) or any(not r > 0 for r in reference):
        raise DataError("the reference values must be positive, one per class")
    diff = [math.log(r) - v for r, v in zip(reference, logs, strict=True)]
    mid = median(diff)
    return [d - mid for d in diff]


def signal_scores(
    signals: Mapping[str, Sequence[float]],
    calibration: ScanCalibration,
    reference: Mapping[str, Sequence[float]] | None = None,
) -> dict[str, list[float]]:
    """Per signal, every class's z score (see the module docstring)."""
    out = {}
    for name, values in signals.items():
        if reference is None:
            out[name] = [r / calibration.spread[name] for r in log_ratios(values)]
            continue
        ref = reference.get(name)
        if ref is None:
            raise DataError(f"the references have no {name!r} signal")
        own_spread = (calibration.self_spread or calibration.spread)[name]
        own = [r / own_spread for r in log_ratios(values)]
        against = [r / calibration.spread[name] for r in log_ratios(values, ref)]
        out[name] = [min(a, b) for a, b in zip(own, against, strict=True)]
    return out


@dataclass
class Decision:
    """The verdict of one scan: the statistic, its p-value under the clean null, which classes are flagged."""

    mode: str
    signals: list[str]
    scores: dict[str, list[float]]
    class_scores: list[float]
    statistic: float
    top_class: int
    p_value: float
    fpr: float
    threshold: float
    flagged: list[int]
    evidence: dict[int, str] = field(default_factory=dict)
    calibration: dict[str, Any] = field(default_factory=dict)

    @property
    def confidence(self) -> float:
        return 1.0 - self.p_value

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["confidence"] = self.confidence
        out["evidence"] = {str(k): v for k, v in self.evidence.items()}
        return out


def decide_backdoor(
    signals: Mapping[str, Sequence[float]],
    fpr: float = 0.05,
    reference: Mapping[str, Sequence[float]] | None = None,
    calibration: ScanCalibration | None = None,
    classes: Sequence[int] | None = None,
) -> Decision:
    """Score every class on each signal, take the model's statistic, and flag the classes whose score is
    above the clean null's ``fpr`` threshold. ``signals`` maps a signal name to one value per class;
    ``classes`` names those classes in the decision's ``top_class``, ``flagged`` and ``evidence`` (default
    0, 1, ...)."""
    if not 0 < fpr < 1:
        raise DataError(f"the false-positive rate must be in (0, 1), got {fpr}")
    if not signals:
        raise DataError("no signal to decide on")
    lengths = {len(v) for v in signals.values()}
    if len(lengths) != 1 or min(lengths) < 3:
        raise DataError("every signal needs one value per class, and at least 3 classes")
    n = lengths.pop()
    names = list(classes) if classes is not None else list(range(n))
    if len(names) != n:
        raise DataError(f"{len(names)} class names for {n} classes")
    mode = "reference" if reference is not None else "self"
    cal = calibration
    if cal is None:
        key = calibration_key(mode, list(signals))
        if key not in CALIBRATIONS:
            raise DataError(f"no calibration for {key!r}; known: {', '.join(CALIBRATIONS)}")
        cal = CALIBRATIONS[key]
    scores = signal_scores(signals, cal, reference)
    per_class = [max(scores[s][t] for s in scores) for t in range(n)]
    top = max(range(n), key=lambda t: (per_class[t], -t))
    statistic = per_class[top]
    threshold = cal.threshold(fpr)
    flagged = [t for t in range(n) if per_class[t] > threshold]
    return Decision(
        mode,
        list(signals),
        scores,
        per_class,
        statistic,
        names[top],
        cal.p_value(statistic),
        fpr,
        threshold,
        sorted(names[t] for t in flagged),
        {names[t]: max(scores, key=lambda s: scores[s][t]) for t in flagged},
        cal.to_dict(),
    )
