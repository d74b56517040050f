"""The scan's self-fitted null: its stated false-positive rate holds on simulated clean models of 10, 26, 100
and 1,000 classes (the statistic of the first release grew with the class count), whatever their typical size
and spread, and a backdoor is still found."""

from __future__ import annotations

import math

import numpy as np
import pytest

from patternscope.analyses import scan_null
from patternscope.analyses.scan_decision import decide_backdoor
from patternscope.errors import DataError


def wilson(k: int, n: int, z: float = 2.576) -> tuple[float, float]:
    """The Wilson interval of k successes in n trials (99% by default)."""
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return centre - half, centre + half


def clean_models(rng: np.random.Generator, count: int, classes: int, shape: str = "logistic") -> list[dict]:
    """Clean models: per class a stamp size and an additive norm, log-scattered around a random typical value
    with a random spread (the null must not depend on either)."""
    out = []
    for _ in range(count):
        model = {}
        for signal, typical in (("stamp", 80.0), ("additive", 7.0)):
            centre = math.log(typical) + rng.normal(0, 0.5)
            spread = rng.uniform(0.05, 0.6)
            if shape == "logistic":  # the null's own shape: the rate must be the stated one
                noise = rng.logistic(size=classes)
            elif shape == "normal":  # lighter tails than the null's: the rate may only be lower
                noise = rng.standard_normal(classes)
            elif shape == "uniform":  # a lighter tail than the null's: the rate may only be lower
                noise = rng.uniform(-1.7, 1.7, classes)
            else:
                raise ValueError(shape)
            model[signal] = np.exp(centre + spread * noise).tolist()
        out.append(model)
    return out


@pytest.mark.parametrize(("classes", "count"), [(10, 1500), (26, 1000), (100, 600), (1000, 200)])
def test_stated_false_positive_rate_holds_at_any_class_count(classes, count):
    """Flag rate of clean models at FPR 5% within the 99% binomial interval of 5% (two independent signals:
    Sidak makes the model-level rate exactly the stated one)."""
    rng = np.random.default_rng(classes)
    flagged = sum(bool(decide_backdoor(m, fpr=0.05).flagged) for m in clean_models(rng, count, classes))
    lo, hi = wilson(flagged, count)
    assert lo <= 0.05 <= hi, (classes, flagged / count)


@pytest.mark.parametrize("shape", ["normal", "uniform"])
@pytest.mark.parametrize("classes", [10, 100])
def test_lighter_tails_only_lower_the_false_positive_rate(classes, shape):
    rng = np.random.default_rng(7)
    count = 800
    flagged = sum(bool(decide_backdoor(m, fpr=0.05).flagged) for m in clean_models(rng, count, classes, shape))
    assert wilson(flagged, count)[0] <= 0.05, flagged / count


@pytest.mark.parametrize("classes", [10, 26, 100, 1000])
def test_a_backdoor_stands_out_at_any_class_count(classes):
    """A class whose stamp is 15 times smaller than typical (classes spread by 0.3 in log units) is flagged,
    named and attributed to the stamp signal, at every class count."""
    rng = np.random.default_rng(1)
    model = clean_models(rng, 1, classes)[0]
    model["stamp"] = np.exp(np.log(80) + 0.3 * rng.standard_normal(classes)).tolist()
    model["stamp"][classes // 2] = 80.0 / 15
    d = decide_backdoor(model, fpr=0.05)
    assert d.flagged == [classes // 2] and d.top_class == classes // 2 and d.evidence == {classes // 2: "stamp"}
    assert d.p_value < 0.05 and d.basis.classes == classes


def test_null_is_the_order_statistic_of_the_class_count():
    """The p-value of a class's z is that of the most extreme of C classes: the same z is less surprising among
    1,000 classes than among 10, and the threshold follows (the first release's Gumbel did not move)."""
    z = 3.5
    assert scan_null.p_value(z, 10) < scan_null.p_value(z, 1000)
    for classes in (10, 26, 100, 1000):
        t = scan_null.threshold(0.05, classes)
        assert scan_null.p_value(t, classes) == pytest.approx(0.05, abs=0.003)
    # reproducible: a fixed seed, the same array every time
    assert scan_null.null_statistics(26) is scan_null.null_statistics(26)
    scan_null.null_statistics.cache_clear()
    again = scan_null.null_statistics(26)
    assert np.array_equal(again, np.sort(again)) and 1.5 < again[len(again) // 2] < 3.0


def test_extreme_scores_use_the_other_classes():
    es = scan_null.extreme_scores([10.0, 20.0, 40.0, 20.0, 1.0])
    logs = np.log([10.0, 20.0, 40.0, 20.0])
    assert es.extreme == 4 and es.location == pytest.approx(logs.mean())
    assert es.scale == pytest.approx(logs.std(ddof=1))
    assert es.statistic == pytest.approx((logs.mean() - 0.0) / logs.std(ddof=1))
    flat = scan_null.extreme_scores([5.0, 5.0, 5.0, 1.0])
    assert flat.statistic > 1e5 and flat.z[0] == 0.0  # finite (strict JSON), far beyond any threshold
    with pytest.raises(DataError, match="at least 3"):
        scan_null.extreme_scores([1.0, 2.0])
    with pytest.raises(DataError, match="positive"):
        scan_null.extreme_scores([1.0, 0.0, 2.0])
