"""The ART adapter: ART's UniversalPerturbation runs on a patternscope model and gives a usable Pattern."""

from __future__ import annotations

import pytest

from patternscope import evaluate_pattern

pytest.importorskip("art", reason="the peers extra (adversarial-robustness-toolbox) is not installed")

from patternscope.adapters.art import art_universal_perturbation


@pytest.mark.slow
def test_art_uap_runs_side_by_side(tiny_model, digits):
    # ART's FGSM UAP varies a lot with the image order (seeded here: 0.21 and 0.47 for seeds 0 and 1)
    result = art_universal_perturbation(tiny_model, digits.train_x[:200], eps=0.2, attacker="fgsm", max_iter=10)
    pattern = result.pattern
    assert pattern.shape == tiny_model.input_size
    assert pattern.delta.abs().max() <= 0.2 + 1e-6
    assert pattern.meta["method"] == "art-uap" and "fooling_rate_on_training_images" in pattern.meta["peer"]
    assert result.seconds > 0 and result.passes >= 200  # ART's forwards and backwards went through our model
    ev = evaluate_pattern(tiny_model, pattern, digits.test_x)
    assert ev.fooling_ratio > 2 * max(ev.random_baselines["sign"]["fooling_ratio"], 0.03)
    again = art_universal_perturbation(tiny_model, digits.train_x[:200], eps=0.2, attacker="fgsm", max_iter=10)
    assert (again.pattern.delta == pattern.delta).all()  # the adapter seeds ART's shuffling


def test_art_adapter_checks_the_images(tiny_model, digits):
    from patternscope.errors import PatternError

    with pytest.raises(PatternError, match="images must be"):
        art_universal_perturbation(tiny_model, digits.train_x[:4, :, :8], eps=0.2)
