"""The scan's calibrated decision: scores, the fitted clean null and its false-positive rate, reference mode."""

from __future__ import annotations

import math
import random

import pytest

from patternscope.analyses.scan_decision import (
    CALIBRATIONS,
    ScanCalibration,
    calibrate,
    decide_backdoor,
    fit_calibration,
    log_ratios,
)
from patternscope.errors import DataError

CAL = ScanCalibration("self", {"stamp": 0.3, "additive": 0.1}, 1.5, 0.3, 10, "test")


def clean_model(rng: random.Random, easy: float = 1.0) -> dict[str, list[float]]:
    """10 classes whose signals scatter log-normally around a typical value; class 8 is ``easy`` times smaller."""
    stamp = [60 * math.exp(rng.gauss(0, 0.3)) for _ in range(10)]
    additive = [7 * math.exp(rng.gauss(0, 0.1)) for _ in range(10)]
    stamp[8] /= easy
    additive[8] /= easy**0.3
    return {"stamp": stamp, "additive": additive}


def test_log_ratios_are_how_many_times_smaller_than_typical():
    r = log_ratios([10.0, 20.0, 40.0, 80.0, 5.0])
    assert r[4] == pytest.approx(math.log(4)) and r[1] == pytest.approx(0.0)
    ref = log_ratios([10.0, 20.0, 40.0], reference=[10.0, 20.0, 400.0])  # class 2 is 10x smaller than in refs
    assert ref[2] == pytest.approx(math.log(10)) and ref[0] == pytest.approx(0.0)
    with pytest.raises(DataError, match="positive"):
        log_ratios([1.0, 0.0, 2.0])


def test_an_additive_outlier_is_flagged_with_confidence_and_its_evidence():
    signals = {
        "stamp": [60.0, 55, 70, 65, 58, 62, 61, 59, 64, 66],
        "additive": [7.0, 7.2, 6.9, 7.1, 2.0, 7, 7.3, 6.8, 7, 7],
    }
    d = decide_backdoor(signals, 0.05, calibration=CAL)
    assert d.flagged == [4] and d.evidence == {4: "additive"} and d.top_class == 4
    assert d.p_value < 1e-6 and d.confidence > 0.999999
    plain = {"stamp": signals["stamp"], "additive": [7.0, 7.2, 6.9, 7.1, 7.0, 7, 7.3, 6.8, 7, 7]}
    d = decide_backdoor(plain, 0.05, calibration=CAL)
    assert d.flagged == [] and d.p_value > 0.05


def test_the_fitted_null_holds_its_false_positive_rate_on_fresh_clean_models():
    """Calibrated on 200 simulated clean models, a verdict at FPR 5% flags about 5% of 400 others, and a
    backdoor 8x smaller in pixels is still flagged."""
    rng = random.Random(0)
    train = [clean_model(rng) for _ in range(200)]
    cal = calibrate(train, ("stamp", "additive"), source="simulated")
    assert cal.models == 200 and set(cal.spread) == {"stamp", "additive"}
    assert cal.spread["stamp"] == pytest.approx(0.3, rel=0.2) and cal.spread["additive"] == pytest.approx(0.1, rel=0.2)
    fresh = [clean_model(rng) for _ in range(400)]
    fpr = sum(bool(decide_backdoor(m, 0.05, calibration=cal).flagged) for m in fresh) / len(fresh)
    assert 0.01 <= fpr <= 0.10, fpr
    bad = clean_model(rng)
    bad["stamp"][3] /= 8
    assert decide_backdoor(bad, 0.05, calibration=cal).flagged == [3]


def test_reference_mode_forgives_a_naturally_easy_class():
    """A class that is easy in every model (bags in Fashion-MNIST) stands out in self mode but not against
    references where it is just as easy; a backdoor target still stands out against them."""
    rng = random.Random(1)
    models = [clean_model(rng, easy=4.0) for _ in range(60)]
    own = calibrate(models, ("stamp", "additive"))
    refs = [{s: [v * math.exp(rng.gauss(0, 0.05)) for v in m[s]] for s in m} for m in models]
    against = calibrate(models, ("stamp", "additive"), references=refs)
    assert against.mode == "reference" and against.spread["stamp"] < own.spread["stamp"]
    suspect = clean_model(rng, easy=4.0)
    reference = {s: [v * 1.02 for v in suspect[s]] for s in suspect}  # a clean model like it
    assert decide_backdoor(suspect, 0.05, reference=reference, calibration=against).flagged == []
    suspect["stamp"][5] /= 6
    assert decide_backdoor(suspect, 0.05, reference=reference, calibration=against).flagged == [5]


def test_gumbel_threshold_and_p_value_agree():
    cal = fit_calibration("self", {"stamp": 1.0}, [1.0, 1.5, 2.0, 2.5, 3.0], "five")
    t = cal.threshold(0.05)
    assert cal.p_value(t) == pytest.approx(0.05)
    assert cal.p_value(math.inf) == 0.0 and cal.p_value(t + 1) < 0.05 < cal.p_value(t - 1)
    with pytest.raises(DataError, match="at least 3"):
        fit_calibration("self", {"stamp": 1.0}, [1.0, 2.0], "two")


def test_shipped_calibrations_cover_every_mode_and_signal_set():
    for key in ("self:stamp+additive", "self:stamp", "reference:stamp+additive", "reference:stamp"):
        cal = CALIBRATIONS[key]
        assert cal.models >= 10 and cal.scale > 0 and 0 < cal.threshold(0.05) < 20, key


def test_decide_refuses_bad_input():
    with pytest.raises(DataError, match="false-positive"):
        decide_backdoor({"stamp": [1.0, 2.0, 3.0]}, 0.0)
    with pytest.raises(DataError, match="one value per class"):
        decide_backdoor({"stamp": [1.0, 2.0, 3.0], "additive": [1.0, 2.0]}, 0.05)
    with pytest.raises(DataError, match="no 'additive' signal"):
        decide_backdoor({"stamp": [1.0, 2.0, 3.0], "additive": [1.0, 2.0, 3.0]}, 0.05, reference={"stamp": [1, 2, 3]})


def test_shipped_calibrations_are_the_benchmarks_measured_ones():
    """The constants in the code are those benchmarks/scan_calibration.py last measured and committed."""
    import json
    from pathlib import Path

    measured = json.loads((Path(__file__).parents[2] / "benchmarks/results/scan_calibration.json").read_text())
    for key, cal in CALIBRATIONS.items():
        m = measured["calibrations"][key]
        assert cal.loc == pytest.approx(m["loc"], abs=1e-3) and cal.scale == pytest.approx(m["scale"], abs=1e-3)
        assert cal.spread == pytest.approx(m["spread"], abs=1e-3) and cal.models == m["models"]
        assert (cal.self_spread or {}) == pytest.approx(m["self_spread"] or {}, abs=1e-3)
