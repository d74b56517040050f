"""Median-absolute-deviation anomaly index, the outlier rule of Neural Cleanse (Wang et al. 2019)."""

from __future__ import annotations

import math
from collections.abc import Sequence

MAD_CONSISTENCY = 1.4826  # makes the MAD a consistent estimator of a normal distribution's sigma


def anomaly_indices(values: Sequence[float], log: bool = False) -> list[float]:
    """Signed index (v - median) / (1.4826 MAD) per value; negative on the small side.

    ``log`` measures in log space (for sizes such as pixel counts, where ratios matter). A zero MAD (all
    values equal but some) gives +-inf for the different values and 0 for the rest.
    """
    vals = [math.log(max(v, 1e-12)) if log else float(v) for v in values]
    if not vals:
        return []
    med = median(vals)
    mad = MAD_CONSISTENCY * median([abs(v - med) for v in vals])
    if mad == 0:
        return [0.0 if v == med else math.copysign(math.inf, v - med) for v in vals]
    return [(v - med) / mad for v in vals]


def flag_small(values: Sequence[float], threshold: float = 2.0, log: bool = False) -> list[bool]:
    """Which values are anomalously small: index < -threshold."""
    return [i < -threshold for i in anomaly_indices(values, log)]


def median(values: Sequence[float]) -> float:
    s = sorted(values)
    n = len(s)
    if n == 0:
        raise ValueError("median of no values")
    return s[n // 2] if n % 2 else (s[n // 2 - 1] + s[n // 2]) / 2
