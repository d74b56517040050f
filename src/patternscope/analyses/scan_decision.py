"""The backdoor scan's decision: per class, how small a pattern reaches it; per model, a p-value whose null is
fitted to the model in front of it, for any class count.

Signals (per class t; both "how small a pattern sends images of the other classes to t"):

- ``stamp``: the fewest pixels of its class-wise stamp reaching the target success (patch triggers);
- ``additive``: the smallest L2 norm of a universal additive pattern reaching it (blended, full-image
  triggers).

Per signal, the most extreme class (the smallest value, in log space) is compared with the model's other
classes (:mod:`.scan_null`): z = (their mean - its value) / their standard deviation, and every class gets a z
on that location and scale. The null of the extreme class's z for C classes (Monte Carlo, a fixed seed) gives
each class's p-value, P(the most extreme of C clean classes reaches z): the order-statistic correction is in
it, so the stated false-positive rate is per model, for any C >= 3. Over the signals a class's p-value is the
Sidak correction of its smallest one; the model's p-value is its top class's; classes with p <= ``fpr`` are
flagged.

A class whose search never reached the success carries a cap, not a size: caps are left out (type II censored
in self mode, simulated so in the null); a signal with fewer than 3 measured classes is not used.

Modes (recorded in every verdict, with what its promise rests on, :class:`Basis`):

- ``self`` (the default): the values themselves, so the spread comes from the model's own classes;
- ``reference``: the ratios against the same class in the easiest of the reference clean models of the same
  task (a class that is naturally easy in every model is not an outlier of the ratios), for classes that are
  also below their own model's typical class;
- either with a :class:`ScanCalibration` (pilot clean models, :func:`calibrate`): the spread of each signal
  is taken from the pilots instead of this model's classes, a tighter test whose promise holds only for
  models whose classes spread like the pilots' (the verdict says so).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from ..errors import DataError
from . import scan_null
from .scan_null import DEFAULT_SHAPE, MIN_CLASSES, REPLICATES, extreme_scores

SIGNALS = ("stamp", "additive")
MIN_FPR = 20 / REPLICATES  # below it the Monte Carlo null has too few models beyond the threshold
MODES = ("self", "reference")
# where the promise was checked (benchmarks/scan_zoo.py and tests/analyses/test_scan_null.py); said in verdicts
CHECKED = (
    "simulated clean models at C = 10, 26, 100 and 1,000 classes; real clean and backdoored models of 6 small "
    "architectures on Fashion-MNIST (10 classes) and generated glyphs (20, 26 and 36 classes); not on "
    "ImageNet-scale models (docs: benchmarks, scan_zoo)"
)


@dataclass(frozen=True)
class ScanCalibration:
    """Per-signal spreads (the standard deviation of a clean model's classes' log values, pooled over clean
    pilot models) that replace a model's own spread estimate: ``mode`` is the mode they were
    measured in (self: the values; reference: the ratios against references)."""

    mode: str
    spread: dict[str, float]
    models: int
    classes: list[int]
    source: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ScanCalibration:
        try:
            return cls(
                str(data["mode"]),
                {str(k): float(v) for k, v in data["spread"].items()},
                int(data["models"]),
                [int(c) for c in data.get("classes", [])],
                str(data.get("source", "")),
            )
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise DataError(f"not a scan calibration ({exc!r}): it needs mode, spread and models") from None


# Pilot spreads measured by benchmarks/scan_calibration.py on 16 clean Fashion-MNIST models of the dev zoo
# (SmallCNN and LeNet5, seeds 300-307; reference mode: two other pilots of the same architecture as references).
# Optional tightening (ScanConfig.calibration / --calibration): they hold for 10-class Fashion-MNIST CNNs like
# those, not in general.
_PILOTS = "16 clean Fashion-MNIST pilot models (SmallCNN and LeNet5, seeds 300-307)"
CALIBRATIONS: dict[str, dict[str, ScanCalibration]] = {
    "fashion-mnist-pilots": {
        "self": ScanCalibration("self", {"stamp": 0.3514, "additive": 0.1831}, 16, [10], _PILOTS),
        "reference": ScanCalibration(
            "reference", {"stamp": 0.2185, "additive": 0.1478}, 16, [10], _PILOTS + ", 2 references each"
        ),
    }
}


def named_calibration(name: str | None, mode: str | None) -> ScanCalibration | None:
    """The pilot calibration ``name`` (a key of :data:`CALIBRATIONS`, or a JSON file holding one calibration or
    one per mode) for ``mode`` (None: only check that it exists); None for None."""
    if name is None:
        return None
    if name in CALIBRATIONS:
        by_mode = CALIBRATIONS[name]
    else:
        import json
        from pathlib import Path

        path = Path(name)
        if not path.is_file():
            raise DataError(
                f"calibration {name!r} is neither a shipped one ({', '.join(CALIBRATIONS)}) nor a JSON file"
            )
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            raise DataError(f"calibration file {name!r} cannot be read as JSON ({exc})") from None
        if not isinstance(data, dict):
            raise DataError(f"calibration file {name!r} holds no calibration")
        items = [data] if "spread" in data else list(data.values())
        by_mode = {c.mode: c for c in (ScanCalibration.from_dict(d) for d in items)}
    if mode is None:
        return None
    if mode not in by_mode:
        raise DataError(f"calibration {name!r} has no {mode}-mode spreads (it has {', '.join(by_mode)})")
    return by_mode[mode]


def calibrate(
    clean: Sequence[Mapping[str, Sequence[float]]],
    *,
    signals: Sequence[str] = SIGNALS,
    references: Sequence[Mapping[str, Sequence[float]]] | None = None,
    source: str = "",
) -> ScanCalibration:
    """Pilot spreads from clean models' scans (at least 3): ``clean[i]`` maps each signal to model i's value per
    class; ``references[i]`` (reference mode) the reference values it is compared with. Per signal, the pooled
    standard deviation of every clean model's classes around their own mean, in log space (all classes: the
    pilots are clean, so none is left out)."""
    if len(clean) < 3:
        raise DataError(f"a calibration needs at least 3 clean models, got {len(clean)}")
    if references is not None and len(references) != len(clean):
        raise DataError("one reference per clean model")
    spread = {}
    for s in signals:
        squares, dof = 0.0, 0
        for i, model in enumerate(clean):
            logs = [math.log(v) for v in _compared(model[s], None if references is None else references[i][s])]
            mean = sum(logs) / len(logs)
            squares += sum((v - mean) ** 2 for v in logs)
            dof += len(logs) - 1
        spread[s] = max(math.sqrt(squares / dof), 1e-6)
    mode = "self" if references is None else "reference"
    return ScanCalibration(mode, spread, len(clean), sorted({len(m[signals[0]]) for m in clean}), source)


@dataclass
class Basis:
    """What a verdict's stated false-positive rate rests on, and where this model is outside it."""

    mode: str
    classes: int
    signals: list[str]
    spread_from: str
    null: str
    assumes: str
    checked: str
    outside: list[str] = field(default_factory=list)
    censored: dict[str, int] = field(default_factory=dict)
    unused: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Decision:
    """The verdict of one scan. ``scores``: per signal, every class's z; ``class_p_values`` and
    ``class_scores`` (−log10 p) per class; ``statistic`` is the top class's score and ``threshold`` −log10
    ``fpr`` (a class is flagged when its score reaches it); ``z_thresholds``: the z each signal needs for that;
    ``basis``: what the false-positive rate rests on."""

    mode: str
    signals: list[str]
    scores: dict[str, list[float]]
    class_scores: list[float]
    class_p_values: list[float]
    statistic: float
    top_class: int
    p_value: float
    fpr: float
    threshold: float
    flagged: list[int]
    evidence: dict[int, str] = field(default_factory=dict)
    basis: Basis | None = None
    calibration: dict[str, Any] = field(default_factory=dict)
    z_thresholds: dict[str, float | None] = field(default_factory=dict)

    @property
    def confidence(self) -> float:
        return 1.0 - self.p_value

    @property
    def score(self) -> float:
        """A continuous per-model score for ROC curves: -log10 of the p-value (larger: more suspicious)."""
        return -math.log10(max(self.p_value, 1e-300))

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["confidence"] = self.confidence
        out["score"] = self.score
        out["evidence"] = {str(k): v for k, v in self.evidence.items()}
        return out


def _compared(values: Sequence[float], reference: Sequence[float] | None) -> list[float]:
    """The values a mode compares: the values themselves, or their ratios to the reference's."""
    if any(not (v > 0 and math.isfinite(v)) for v in values):
        raise DataError("signal values must be positive and finite")
    if reference is None:
        return [float(v) for v in values]
    if len(reference) != len(values) or any(not (r > 0 and math.isfinite(r)) for r in reference):
        raise DataError("the reference values must be positive and finite, one per class")
    return [v / r for v, r in zip(values, reference, strict=True)]


def decide_backdoor(
    signals: Mapping[str, Sequence[float]],
    *,
    fpr: float = 0.05,
    reference: Mapping[str, Sequence[float]] | None = None,
    calibration: ScanCalibration | None = None,
    classes: Sequence[int] | None = None,
    capped: Mapping[str, Sequence[bool]] | None = None,
    shape: str = DEFAULT_SHAPE,
) -> Decision:
    """Score every class on each signal, give each class and the model a p-value under the null fitted to this
    model's classes (or the pilot spreads of ``calibration``), and flag the classes at or below ``fpr``.

    ``signals`` maps a signal name to one positive value per class (at least 3 classes); ``reference`` the same
    for reference clean models (reference mode); ``classes`` names the classes in ``top_class``, ``flagged`` and
    ``evidence`` (default 0, 1, ...); ``capped`` marks, per signal, the classes whose value is a cap, not a
    measurement (the search never reached the success; in reference mode also a cap in the references): in
    self mode they are the largest values, left out as type II censored (:mod:`.scan_null`); in reference mode
    they are left out of the comparison. The basis reports them. In reference mode a class can be flagged only
    if it is also below its own model's typical class (the other measured classes' mean log size).
    """
    names = _class_names(signals, fpr, classes)
    n = len(names)
    mode = "reference" if reference is not None else "self"
    if calibration is not None and calibration.mode != mode:
        raise DataError(f"a {calibration.mode}-mode calibration cannot decide a {mode}-mode scan")
    sigs = list(signals)
    scores: dict[str, list[float]] = {}
    p_signal: dict[str, list[float]] = {}
    z_thresholds: dict[str, float | None] = {}
    unused: list[str] = []
    per_signal = 1.0 - (1.0 - fpr) ** (1.0 / len(sigs))
    for s in sigs:
        found = _signal(s, signals[s], reference, calibration, capped, shape, per_signal)
        if found is None:  # too few measurements to compare: the signal says nothing
            scores[s], p_signal[s], z_thresholds[s] = [0.0] * n, [1.0] * n, None
            unused.append(s)
            continue
        scores[s], p_signal[s], z_thresholds[s] = found
    class_p = [scan_null.sidak(min(p_signal[s][t] for s in sigs), len(sigs)) for t in range(n)]
    class_scores = [0.0 - math.log10(p) for p in class_p]  # 0.0 - : no -0.0 for p = 1
    z_best = [max(scores[s][t] for s in sigs) for t in range(n)]
    top = min(range(n), key=lambda t: (class_p[t], -z_best[t], t))
    threshold = -math.log10(fpr)
    flagged = [t for t in range(n) if class_p[t] <= fpr]
    basis = _basis(mode, n, sigs, calibration, shape, capped, unused)
    return Decision(
        mode,
        sigs,
        scores,
        class_scores,
        class_p,
        class_scores[top],
        names[top],
        class_p[top],
        fpr,
        threshold,
        sorted(names[t] for t in flagged),
        {names[t]: min(sigs, key=lambda s: (p_signal[s][t], -scores[s][t])) for t in flagged},
        basis,
        calibration.to_dict() if calibration is not None else {},
        z_thresholds,
    )


def _class_names(signals: Mapping[str, Sequence[float]], fpr: float, classes: Sequence[int] | None) -> list[int]:
    """The classes' names (default 0, 1, ...), after checking ``fpr`` and that every signal has one value per
    class for at least :data:`MIN_CLASSES` classes."""
    if not MIN_FPR <= fpr < 1:
        raise DataError(
            f"the false-positive rate must be in [{MIN_FPR:g}, 1) (the null's Monte Carlo resolution), got {fpr}"
        )
    if not signals:
        raise DataError("no signal to decide on")
    lengths = {len(v) for v in signals.values()}
    if len(lengths) != 1 or min(lengths) < MIN_CLASSES:
        raise DataError(f"every signal needs one value per class, and at least {MIN_CLASSES} classes")
    n = lengths.pop()
    names = list(classes) if classes is not None else list(range(n))
    if len(names) != n:
        raise DataError(f"{len(names)} class names for {n} classes")
    return names


def _signal(
    s: str,
    values: Sequence[float],
    reference: Mapping[str, Sequence[float]] | None,
    calibration: ScanCalibration | None,
    capped: Mapping[str, Sequence[bool]] | None,
    shape: str,
    per_signal: float,
) -> tuple[list[float], list[float], float] | None:
    """Signal ``s`` (``values``, one per class): (z, p-value, z threshold) per class in the scan's mode, or None
    when fewer than :data:`MIN_CLASSES` classes were measured (not capped)."""
    n = len(values)
    ref = None
    if reference is not None:
        ref = reference.get(s)
        if ref is None:
            raise DataError(f"the references have no {s!r} signal")
    if calibration is not None and s not in calibration.spread:
        raise DataError(f"the calibration has no spread for the {s!r} signal")
    marks = [bool(m) for m in (capped or {}).get(s, [False] * n)]
    if len(marks) != n:
        raise DataError(f"{len(marks)} cap marks for the {s!r} signal's {n} classes")
    if n - sum(marks) < MIN_CLASSES:
        return None
    spread = calibration.spread[s] if calibration is not None else None
    if ref is None:
        return _self_signal(values, marks, spread, shape, per_signal)
    return _reference_signal(values, ref, marks, spread, shape, per_signal)


def _self_signal(
    values: Sequence[float], marks: list[bool], spread: float | None, shape: str, per_signal: float
) -> tuple[list[float], list[float], float]:
    """Self mode, one signal: (z, p-value, z threshold) per class. Caps are the largest values, left out as
    type II censored (simulated so in the null)."""
    n = len(values)
    known = spread is not None
    es = extreme_scores(_compared(values, None), scale=spread, capped=marks)
    p = [
        1.0 if m else scan_null.p_value(v, n, shape, known_scale=known, censored=es.censored)
        for v, m in zip(es.z, marks, strict=True)
    ]
    return es.z, p, scan_null.threshold(per_signal, n, shape, known_scale=known, censored=es.censored)


def _reference_signal(
    values: Sequence[float],
    reference: Sequence[float],
    marks: list[bool],
    spread: float | None,
    shape: str,
    per_signal: float,
) -> tuple[list[float], list[float], float]:
    """Reference mode, one signal: (z, p-value, z threshold) per class, on the ratios to the references. A ratio
    with a cap on either side is no measurement (and not the largest ratio): left out. A candidate must also be
    below its own model's typical class: one that is merely less hard than in the references, where a search
    struggled with it, is no trigger."""
    n = len(values)
    known = spread is not None
    ratios = _compared(values, reference)
    kept = [t for t in range(n) if not marks[t]]
    es = extreme_scores([ratios[t] for t in kept], scale=spread)
    below = extreme_scores(values, capped=marks).z
    z, p = [0.0] * n, [1.0] * n
    for j, t in enumerate(kept):
        z[t] = es.z[j]
        if below[t] > 0:
            p[t] = scan_null.p_value(es.z[j], len(kept), shape, known_scale=known)
    return z, p, scan_null.threshold(per_signal, len(kept), shape, known_scale=known)


def _basis(
    mode: str,
    n: int,
    signals: list[str],
    calibration: ScanCalibration | None,
    shape: str,
    capped: Mapping[str, Sequence[bool]] | None,
    unused: list[str],
) -> Basis:
    what = "log sizes" if mode == "self" else "log ratios to the easiest reference"
    if calibration is None:
        spread_from = (
            "this model's own classes: the measured ones other than the most extreme"
            if mode == "self"
            else "this model's own classes' ratios to the references: the measured ones other than the most extreme"
        )
    else:
        spread_from = f"pilot clean models ({calibration.source or f'{calibration.models} models'})"
    null = (
        f"the most extreme of {n} clean classes, {shape} {what}; {REPLICATES:,} simulated clean models of {n} classes "
        f"(Monte Carlo, fixed seed); Sidak over {len(signals)} signal{'s' if len(signals) > 1 else ''}"
    )
    assumes = (
        f"in a clean model the classes' {what} vary like independent draws from one distribution whose lower "
        f"tail is no heavier than the {shape}'s"
    )
    outside = []
    if n < 5:
        outside.append(
            f"only {n} classes: the spread comes from {n - 1}, so the test keeps its false-positive rate but "
            "finds little"
        )
    if calibration is not None:
        outside.append(
            f"the spread is the pilots' ({calibration.source or 'clean pilot models'}): the stated false-positive "
            "rate holds only if this model's classes spread like theirs; without it (the default) the spread is "
            "this model's own"
        )
    if mode == "self" and calibration is None and n < 20:
        outside.append(
            f"{n} classes give the spread from few classes: a class is flagged only when it lies far below the "
            "others (see z_thresholds, in their standard deviations), so 'none found' is weak evidence; clean "
            "reference models (--reference) compare each class with itself and are far sharper"
        )
    censored = {s: sum(bool(m) for m in marks) for s, marks in (capped or {}).items() if any(marks)}
    for s in unused:
        outside.append(
            f"the {s} signal measured fewer than {MIN_CLASSES} classes (the others never reached the target "
            "success): it was not used"
        )
    for s, count in censored.items():
        if s not in unused and n - count < 5 <= n:
            outside.append(
                f"only {n - count} of {n} classes were measured with the {s} signal (the rest never reached the "
                "target success): its spread comes from few classes, so it finds little"
            )
    if censored:
        left_out = "; ".join(f"{s}: {c} of {n} classes" for s, c in censored.items())
        how = "type II censored (the largest values)" if mode == "self" else "left out of the comparison"
        null += f"; caps, not measurements, {how}: {left_out}"
    return Basis(mode, n, signals, spread_from, null, assumes, CHECKED, outside, censored, unused)


def class_label(target: int, name: str) -> str:
    """A class as people read it: ``7`` when its name only repeats the index, else ``7 (shirt)``."""
    return str(target) if name in (str(target), f"class {target}") else f"{target} ({name})"


__all__ = [
    "MODES",
    "SIGNALS",
    "Basis",
    "Decision",
    "ScanCalibration",
    "calibrate",
    "class_label",
    "decide_backdoor",
]
