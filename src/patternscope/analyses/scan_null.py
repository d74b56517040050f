"""The scan's null distribution, fitted to the model in front of it (after MM-BD's idea: the other classes of
the same model are the null; the design and code are ours).

For one signal (e.g. the fewest pixels of a class's stamp), a model with C classes gives C positive values v_t,
small meaning "easy to reach". In log space the most extreme class (the smallest value) is compared with the
other C - 1 classes:

    z = (mean of the other classes' ln v - ln v_min) / (standard deviation of the other classes' ln v)

and every class t gets z_t on the same location and scale. Under the null (a clean model) the C log values are
taken to be independent draws from one location-scale family (``shape``); then z's distribution depends on C and
the shape only, not on the model's location or spread, and it is computed by Monte Carlo (``replicates`` clean
models of C classes, a fixed seed, so every p-value is reproducible). That distribution already contains the
order-statistic correction for C classes: the p-value of the extreme class is P(the most extreme of C clean
classes reaches z), so the stated false-positive rate is per model, for any C >= 3.

Classes whose search never reached the target success carry a cap, not a measurement; they are the largest
values, so they are treated as type II censored: left out of the location, the scale and the candidates, and
the null is simulated with as many of each simulated model's largest values left out (the statistic's
distribution then depends on C, the number censored and the shape).

What it rests on, and says in every verdict: the clean classes' log values vary like independent draws from one
distribution whose lower tail is no heavier than ``shape``'s. A naturally easy class is part of that spread; a
model whose classes are far more unequal than that (one class far easier than every other in a clean model) is
outside the promise, and reference clean models (``mode="reference"``: the same comparison on the ratios
against the same class in clean references) are the remedy.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from functools import lru_cache
from typing import Any

import numpy as np

from ..errors import DataError

SHAPES = ("normal", "logistic", "t5")
# chosen on the dev zoo: real clean classes have a heavier lower tail than the normal (docs: benchmarks)
DEFAULT_SHAPE = "logistic"
MIN_CLASSES = 3
REPLICATES = 20000
NULL_SEED = 20240531


@dataclass(frozen=True)
class ExtremeScores:
    """One signal's scores: every class's z on the location and scale of the measured classes other than the
    most extreme one (``extreme``, the index of the smallest measured value); ``censored`` classes (values that
    are caps: the search never reached the success) are neither part of that location and scale nor
    candidates, and their z (from the cap) is only a bound."""

    z: list[float]
    extreme: int
    location: float
    scale: float
    censored: int = 0

    @property
    def statistic(self) -> float:
        return self.z[self.extreme]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


MIN_SCALE = 1e-6  # log units: the other classes all equal (a degenerate spread) still give a finite z


def extreme_scores(
    values: Sequence[float], scale: float | None = None, capped: Sequence[bool] | None = None
) -> ExtremeScores:
    """z per class (see the module docstring) of positive values, one per class (at least 3 measured);
    ``scale`` (in log units) replaces the other classes' standard deviation when the spread is known (pilot
    calibration); ``capped`` marks values that are caps, the largest of the model's (type II censoring)."""
    if len(values) < MIN_CLASSES:
        raise DataError(f"a scan statistic compares at least {MIN_CLASSES} classes, got {len(values)}")
    if any(not (v > 0 and math.isfinite(v)) for v in values):
        raise DataError("signal values must be positive and finite")
    marks = np.zeros(len(values), dtype=bool) if capped is None else np.asarray(capped, dtype=bool)
    if len(marks) != len(values):
        raise DataError(f"{len(marks)} cap marks for {len(values)} classes")
    logs = np.log(np.asarray(values, dtype=np.float64))
    measured = np.flatnonzero(~marks)
    if len(measured) < MIN_CLASSES:
        raise DataError(
            f"only {len(measured)} of {len(values)} classes were measured (the rest never reached the success): "
            f"a scan statistic needs at least {MIN_CLASSES}"
        )
    extreme = int(measured[np.argmin(logs[measured])])  # the first of equal minima
    rest = logs[measured[measured != extreme]]
    location = float(rest.mean())
    if scale is None:
        scale = float(rest.std(ddof=1))
    scale = max(scale, MIN_SCALE)
    return ExtremeScores(((location - logs) / scale).tolist(), extreme, location, scale, int(marks.sum()))


def _draw(shape: str, rng: np.random.Generator, size: tuple[int, int]) -> np.ndarray:
    if shape == "normal":
        return rng.standard_normal(size)
    if shape == "logistic":
        return rng.logistic(size=size)
    if shape == "t5":
        return rng.standard_t(5, size=size)
    raise DataError(f"unknown null shape {shape!r}; choose one of {', '.join(SHAPES)}")


@lru_cache(maxsize=256)
def null_statistics(
    classes: int,
    shape: str = DEFAULT_SHAPE,
    replicates: int = REPLICATES,
    known_scale: bool = False,
    censored: int = 0,
) -> np.ndarray:
    """The extreme-class statistic of ``replicates`` simulated clean models of ``classes`` classes (sorted),
    drawn with a fixed seed: the same array on every call and machine. ``known_scale``: the spread is known
    (the shape's own unit: a pilot calibration's spread stands for it), not estimated from the other classes;
    ``censored``: the largest ``censored`` values of each model are caps, left out as the scan leaves them."""
    if classes - censored < MIN_CLASSES:
        raise DataError(f"a scan statistic compares at least {MIN_CLASSES} measured classes, got {classes - censored}")
    if shape not in SHAPES:
        raise DataError(f"unknown null shape {shape!r}; choose one of {', '.join(SHAPES)}")
    unit = {"normal": 1.0, "logistic": math.pi / math.sqrt(3), "t5": math.sqrt(5 / 3)}[shape]  # its SD
    rng = np.random.default_rng([NULL_SEED, classes, SHAPES.index(shape), int(known_scale), censored])
    out = np.empty(replicates)
    chunk = max(1, 2_000_000 // classes)  # bounded memory for large class counts
    for start in range(0, replicates, chunk):
        n = min(chunk, replicates - start)
        x = np.sort(_draw(shape, rng, (n, classes)), axis=1)
        rest = x[:, 1 : classes - censored]
        spread = unit if known_scale else rest.std(1, ddof=1)
        out[start : start + n] = (rest.mean(1) - x[:, 0]) / spread
    out.sort()
    out.flags.writeable = False
    return out


def p_value(
    statistic: float, classes: int, shape: str = DEFAULT_SHAPE, *, known_scale: bool = False, censored: int = 0
) -> float:
    """P(the extreme class of a clean model with ``classes`` classes, ``censored`` of them capped, scores >=
    ``statistic``); never below 1 / (replicates + 1) (Monte Carlo resolution)."""
    null = null_statistics(classes, shape, known_scale=known_scale, censored=censored)
    if math.isnan(statistic):
        return 1.0
    above = len(null) - int(np.searchsorted(null, statistic, side="left"))
    return (above + 1) / (len(null) + 1)


def threshold(
    fpr: float, classes: int, shape: str = DEFAULT_SHAPE, *, known_scale: bool = False, censored: int = 0
) -> float:
    """The statistic a class must exceed to be flagged at false-positive rate ``fpr`` per model."""
    if not 0 < fpr < 1:
        raise DataError(f"the false-positive rate must be in (0, 1), got {fpr}")
    null = null_statistics(classes, shape, known_scale=known_scale, censored=censored)
    return float(np.quantile(null, 1 - fpr))


def sidak(p: float, tests: int) -> float:
    """The family-wise p-value of the smallest of ``tests`` p-values (Sidak; conservative when the tests are
    positively dependent, as two size signals of the same classes are)."""
    return 1.0 - (1.0 - p) ** tests
