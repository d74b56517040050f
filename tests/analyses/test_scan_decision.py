"""The scan's decision: per-class scores and p-values against the model's own classes, reference mode, pilot
spreads as optional tightening, and what every verdict says its promise rests on."""

from __future__ import annotations

import json
import math
import random

import pytest

from patternscope.analyses.scan_decision import (
    CALIBRATIONS,
    ScanCalibration,
    calibrate,
    class_label,
    decide_backdoor,
    named_calibration,
)
from patternscope.errors import DataError


def logistic(rng: random.Random, sd: float) -> float:
    """A logistic draw with standard deviation ``sd`` (the shape of the scan's null)."""
    u = rng.random()
    return sd * math.sqrt(3) / math.pi * math.log(u / (1 - u))


def clean_model(rng: random.Random, easy: float = 1.0, classes: int = 10) -> dict[str, list[float]]:
    """Classes whose log signals scatter (logistically) around a typical value; class 8 is ``easy`` times smaller."""
    stamp = [60 * math.exp(logistic(rng, 0.3)) for _ in range(classes)]
    additive = [7 * math.exp(logistic(rng, 0.1)) for _ in range(classes)]
    stamp[8] /= easy
    additive[8] /= easy**0.3
    return {"stamp": stamp, "additive": additive}


def test_an_additive_outlier_is_flagged_with_its_evidence():
    signals = {
        "stamp": [60.0, 55, 70, 65, 58, 62, 61, 59, 64, 66],
        "additive": [7.0, 7.2, 6.9, 7.1, 2.0, 7, 7.3, 6.8, 7, 7],
    }
    d = decide_backdoor(signals, fpr=0.05)
    assert d.flagged == [4] and d.evidence == {4: "additive"} and d.top_class == 4
    assert d.p_value < 1e-3 and d.confidence > 0.999 and d.class_p_values[4] == d.p_value
    assert d.score == pytest.approx(-math.log10(d.p_value)) and d.mode == "self"
    plain = {"stamp": signals["stamp"], "additive": [7.0, 7.2, 6.9, 7.1, 7.0, 7, 7.3, 6.8, 7, 7]}
    d = decide_backdoor(plain, fpr=0.05)
    assert d.flagged == [] and d.p_value > 0.05 and all(p > 0.05 for p in d.class_p_values)


def test_a_class_is_flagged_exactly_when_its_score_passes_the_threshold():
    rng = random.Random(3)
    for _ in range(50):
        model = clean_model(rng)
        model["stamp"][rng.randrange(10)] /= rng.uniform(1, 6)
        d = decide_backdoor(model, fpr=0.05)
        over = sorted(t for t in range(10) if d.class_scores[t] >= d.threshold)
        assert d.flagged == over and d.threshold == pytest.approx(-math.log10(0.05))
        z_over = sorted(t for t in range(10) if max(d.scores[s][t] for s in d.scores) > d.z_thresholds["stamp"])
        assert z_over == over  # no class is capped: both signals need the same z


def test_reference_mode_forgives_a_naturally_easy_class():
    """A class that is easy in every model (bags in Fashion-MNIST) can stand out in self mode, but not against
    references where it is just as easy; a backdoor target still stands out against them."""
    rng = random.Random(1)
    suspect = clean_model(rng, easy=12.0)
    assert decide_backdoor(suspect, fpr=0.05).flagged == [8]  # self mode cannot tell it from a trigger
    reference = {s: [v * math.exp(rng.gauss(0, 0.05)) for v in suspect[s]] for s in suspect}
    d = decide_backdoor(suspect, fpr=0.05, reference=reference)
    assert d.mode == "reference" and d.flagged == [] and "ratios to the easiest reference" in d.basis.null
    suspect["stamp"][5] /= 6
    assert decide_backdoor(suspect, fpr=0.05, reference=reference).flagged == [5]


def test_pilot_spreads_tighten_the_test_for_models_like_the_pilots():
    """With the spread known from pilot clean models (calibrate), a class 4x smaller than typical is found that
    the model's own 9 other classes cannot pin down; on clean models spread like the pilots the stated rate
    holds; the verdict says its promise now rests on the pilots."""
    rng = random.Random(0)
    pilots = [clean_model(rng) for _ in range(40)]
    cal = calibrate(pilots, source="simulated pilots")
    assert cal.mode == "self" and cal.models == 40 and cal.classes == [10]
    assert cal.spread["stamp"] == pytest.approx(0.3, rel=0.15)
    assert cal.spread["additive"] == pytest.approx(0.1, rel=0.15)
    fresh = [clean_model(rng) for _ in range(600)]
    rate = sum(bool(decide_backdoor(m, fpr=0.05, calibration=cal).flagged) for m in fresh) / len(fresh)
    assert 0.02 <= rate <= 0.09, rate
    found = own = 0
    for _ in range(40):
        bad = clean_model(rng)
        bad["stamp"][3] /= 4
        found += decide_backdoor(bad, fpr=0.05, calibration=cal).flagged == [3]
        own += decide_backdoor(bad, fpr=0.05).flagged == [3]
    assert found >= 28 and found >= own + 5, (found, own)
    d = decide_backdoor(fresh[0], fpr=0.05, calibration=cal)
    assert "pilot clean models (simulated pilots)" in d.basis.spread_from
    assert any("pilots" in o for o in d.basis.outside)
    with pytest.raises(DataError, match="self-mode calibration cannot decide a reference-mode"):
        decide_backdoor(fresh[0], fpr=0.05, reference=fresh[1], calibration=cal)


def test_named_calibrations_shipped_and_from_a_file(tmp_path):
    assert named_calibration(None, "self") is None
    shipped = named_calibration("fashion-mnist-pilots", "reference")
    assert shipped is CALIBRATIONS["fashion-mnist-pilots"]["reference"] and shipped.models == 16
    cal = ScanCalibration("self", {"stamp": 0.3, "additive": 0.1}, 5, [26], "mine")
    path = tmp_path / "cal.json"
    path.write_text(json.dumps(cal.to_dict()))
    assert named_calibration(str(path), "self") == cal
    with pytest.raises(DataError, match="no reference-mode spreads"):
        named_calibration(str(path), "reference")
    with pytest.raises(DataError, match="neither a shipped one"):
        named_calibration(str(tmp_path / "none.json"), "self")
    path.write_text("{not json")
    with pytest.raises(DataError, match="cannot be read as JSON"):
        named_calibration(str(path), None)


def test_the_basis_says_where_the_model_is_outside_the_promise():
    d = decide_backdoor({"stamp": [10.0, 12.0, 9.0, 11.0]}, fpr=0.05)
    assert d.basis.classes == 4 and any("only 4 classes" in o for o in d.basis.outside)
    capped = decide_backdoor(
        {"stamp": [10.0, 12.0, 9.0, 11.0, 257.0, 257.0]}, fpr=0.05, capped={"stamp": [0, 0, 0, 0, 1, 1]}
    )
    assert any("only 4 of 6 classes were measured" in o for o in capped.basis.outside)
    assert "type II censored" in capped.basis.null and capped.basis.censored == {"stamp": 2}
    plain = decide_backdoor(clean_model(random.Random(2)), fpr=0.05)
    assert "this model's own classes" in plain.basis.spread_from
    assert len(plain.basis.outside) == 1 and "'none found' is weak evidence" in plain.basis.outside[0]
    many = decide_backdoor(clean_model(random.Random(2), classes=26), fpr=0.05)
    assert many.basis.outside == []  # 26 classes: nothing to warn about
    assert "1,000" in plain.basis.checked or "1000" in plain.basis.checked


def test_decide_refuses_bad_input():
    with pytest.raises(DataError, match="false-positive"):
        decide_backdoor({"stamp": [1.0, 2.0, 3.0]}, fpr=0.0)
    with pytest.raises(DataError, match="Monte Carlo resolution"):
        decide_backdoor({"stamp": [1.0, 2.0, 3.0]}, fpr=1e-4)
    with pytest.raises(DataError, match="one value per class"):
        decide_backdoor({"stamp": [1.0, 2.0, 3.0], "additive": [1.0, 2.0]}, fpr=0.05)
    with pytest.raises(DataError, match="no 'additive' signal"):
        decide_backdoor(
            {"stamp": [1.0, 2.0, 3.0], "additive": [1.0, 2.0, 3.0]}, fpr=0.05, reference={"stamp": [1, 2, 3]}
        )
    with pytest.raises(DataError, match="positive"):
        decide_backdoor({"stamp": [1.0, -2.0, 3.0]}, fpr=0.05)
    with pytest.raises(DataError, match="at least 3 clean models"):
        calibrate([clean_model(random.Random(0))])


def test_class_labels_do_not_repeat_the_index():
    assert class_label(7, "7") == "7" and class_label(7, "class 7") == "7"
    assert class_label(6, "shirt") == "6 (shirt)"


def test_shipped_calibration_is_the_benchmarks_measured_one():
    """The pilot spreads in the code are those benchmarks/scan_calibration.py last measured and committed."""
    from pathlib import Path

    measured = json.loads((Path(__file__).parents[2] / "benchmarks/results/scan_calibration.json").read_text())
    for name, by_mode in CALIBRATIONS.items():
        for mode, cal in by_mode.items():
            m = measured["calibrations"][name][mode]
            assert cal.spread == pytest.approx(m["spread"], abs=1e-4) and cal.models == m["models"]
            assert cal.mode == m["mode"] == mode and cal.classes == m["classes"]


def test_capped_classes_are_censored_not_measured():
    """Half the classes never reached the success (their sizes are caps, as on a residual CNN): they are left
    out of the spread and the candidates, so a trigger among the measured classes is still found, and clean
    models with caps keep the stated rate."""
    rng = random.Random(5)
    found = 0
    for _ in range(20):
        model = {"stamp": clean_model(rng, classes=26)["stamp"]}
        caps = sorted(range(26), key=lambda t: -model["stamp"][t])[:13]
        marks = [t in caps for t in range(26)]
        for t in caps:
            model["stamp"][t] = 785.0
        victim = next(t for t in range(26) if not marks[t])
        model["stamp"][victim] = 60 / 12
        d = decide_backdoor(model, fpr=0.05, capped={"stamp": marks})
        assert not any(marks[t] for t in d.flagged) and d.basis.censored == {"stamp": 13}
        found += victim in d.flagged
        naive = decide_backdoor(model, fpr=0.05)  # caps taken as sizes: their spread hides the trigger
        assert naive.class_p_values[victim] >= d.class_p_values[victim]
    assert found >= 18, found
    flagged = 0
    for _ in range(400):
        model = {"stamp": clean_model(rng, classes=10)["stamp"]}
        caps = sorted(range(10), key=lambda t: -model["stamp"][t])[:3]
        for t in caps:
            model["stamp"][t] = 785.0
        flagged += bool(decide_backdoor(model, fpr=0.05, capped={"stamp": [t in caps for t in range(10)]}).flagged)
    assert flagged / 400 <= 0.08, flagged / 400


def test_a_class_capped_in_the_references_is_left_out_of_reference_mode():
    """A reference that never reached a class (its size is a cap) makes that class's ratio meaningless: it is
    left out rather than flagged for being far smaller than the cap."""
    rng = random.Random(6)
    model = clean_model(rng)
    reference = {s: list(v) for s, v in model.items()}
    reference["stamp"][2] = 785.0
    marks = {"stamp": [t == 2 for t in range(10)], "additive": [False] * 10}
    d = decide_backdoor(model, fpr=0.05, reference=reference, capped=marks)
    assert 2 not in d.flagged and d.class_p_values[2] > 0.5 and d.scores["stamp"][2] == 0.0
    assert "left out of the comparison" in d.basis.null
    assert 2 in decide_backdoor(model, fpr=0.05, reference=reference).flagged  # what happened without the mark


def test_a_signal_that_measured_too_few_classes_is_not_used():
    """A tiny or very robust model where the stamp never reached the success for most classes: the stamp says
    nothing, the verdict rests on the additive signal, and with no usable signal nothing is flagged."""
    values = {"stamp": [785.0] * 8 + [20.0, 30.0], "additive": [7.0, 7.2, 6.9, 7.1, 2.0, 7, 7.3, 6.8, 7, 7]}
    marks = {"stamp": [True] * 8 + [False, False], "additive": [False] * 10}
    d = decide_backdoor(values, fpr=0.05, capped=marks)
    assert d.flagged == [4] and d.basis.unused == ["stamp"] and d.z_thresholds["stamp"] is None
    assert any("stamp signal measured fewer than 3" in o for o in d.basis.outside)
    none = decide_backdoor({"stamp": [785.0, 785.0, 20.0]}, fpr=0.05, capped={"stamp": [True, True, False]})
    assert none.flagged == [] and none.p_value == 1.0 and none.basis.unused == ["stamp"]
    json.dumps(none.to_dict(), allow_nan=False)  # strict JSON


def test_reference_mode_flags_only_classes_easy_in_their_own_model():
    """A class the references struggled with (770 pixels in both) but this clean model finds at an ordinary
    size (78, its typical class ~55) is smaller than in the references, yet no trigger: it is not flagged. A
    class far below both its own model and the references still is."""
    rng = random.Random(8)
    model = clean_model(rng, classes=36)
    model["stamp"][9] = 78.0
    reference = {s: [v * math.exp(rng.gauss(0, 0.05)) for v in model[s]] for s in model}
    reference["stamp"][9] = 770.0
    d = decide_backdoor(model, fpr=0.05, reference=reference)
    assert 9 not in d.flagged and d.class_p_values[9] == 1.0 and d.scores["stamp"][9] > d.z_thresholds["stamp"]
    model["stamp"][20] = 6.0
    assert 20 in decide_backdoor(model, fpr=0.05, reference=reference).flagged
