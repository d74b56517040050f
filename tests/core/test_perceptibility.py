"""Perceptibility numbers against cases worked out by hand, and attack success top-k."""

from __future__ import annotations

import math

import pytest
import torch

from patternscope import evaluate_pattern
from patternscope.core.metrics import topk_attack_success
from patternscope.core.patterns import Pattern
from patternscope.core.perceptibility import PerceptibilityMeter, pattern_norms

EPS = 8 / 255


def signs(shape, seed=0):
    return torch.randint(0, 2, shape, generator=torch.Generator().manual_seed(seed)).float() * 2 - 1


def test_psnr_of_a_full_budget_sign_pattern_is_minus_20_log10_eps():
    grey = torch.full((6, 3, 32, 32), 0.5)
    meter = PerceptibilityMeter()
    meter.update(grey, signs((3, 32, 32)) * EPS)
    seen = meter.summary()
    assert seen["psnr_db"] == pytest.approx(-20 * math.log10(EPS), abs=1e-3)
    assert seen["psnr_db_min"] == pytest.approx(seen["psnr_db"], abs=1e-3)
    assert seen["clipped_share"] == 0 and seen["n_images"] == 6
    assert 0 < seen["ssim"] < 1


def test_unchanged_and_clipped_images():
    white = torch.ones(4, 1, 16, 16)
    meter = PerceptibilityMeter()
    meter.update(white, torch.full((1, 16, 16), EPS))  # every value is clipped back to 1: nothing changes
    seen = meter.summary()
    assert seen["clipped_share"] == 1.0 and seen["psnr_db"] == 100.0 and seen["ssim"] == pytest.approx(1.0)


def test_meter_stops_at_its_cap_and_a_weaker_pattern_is_less_visible():
    x = torch.rand(10, 3, 24, 24) * 0.6 + 0.2
    strong, weak = PerceptibilityMeter(max_images=7), PerceptibilityMeter(max_images=7)
    for batch in x.split(4):
        strong.update(batch, signs((3, 24, 24)) * EPS)
        weak.update(batch, signs((3, 24, 24)) * EPS / 4)
    assert strong.summary()["n_images"] == 7
    assert weak.summary()["psnr_db"] == pytest.approx(strong.summary()["psnr_db"] + 20 * math.log10(4), abs=1e-3)
    assert weak.summary()["ssim"] > strong.summary()["ssim"]


def test_norms_and_saturated_share():
    delta = torch.zeros(1, 4, 4)
    delta[0, 0, :2] = EPS
    delta[0, 1, 0] = -EPS / 2
    norms = pattern_norms(delta, EPS, "linf")
    assert norms["linf"] == pytest.approx(EPS)
    assert norms["l2"] == pytest.approx(math.sqrt(2 * EPS**2 + EPS**2 / 4))
    assert norms["saturated_share"] == pytest.approx(2 / 16)
    assert "saturated_share" not in pattern_norms(delta, 1.0, "l2")


def test_evaluation_reports_perceptibility(tiny_model, digits):
    pattern = Pattern(signs((1, 16, 16)) * 0.1, 0.1, "linf")
    ev = evaluate_pattern(tiny_model, pattern, digits.test_x[:50], digits.test_y[:50])
    seen = ev.perceptibility
    assert seen["n_images"] == 50 and seen["saturated_share"] == 1.0
    assert seen["l2"] == pytest.approx(0.1 * 16)
    assert seen["psnr_db"] > 20 and seen["clipped_share"] > 0  # digits are mostly 0: much is clipped
    assert set(ev.accuracy["attack_success"]) == {"top1", "top3", "top5"}


def test_attack_success_top_k_by_hand():
    labels = torch.tensor([0, 1, 2, -1])
    clean = torch.tensor([[0, 5, 6], [7, 1, 8], [9, 8, 7], [0, 1, 2]])
    pert = torch.tensor([[5, 0, 6], [7, 8, 9], [9, 8, 2], [3, 4, 5]])
    # top-1: only image 0 has its label first, and loses it
    assert topk_attack_success(clean, pert, labels, 1) == 1.0
    # top-2: images 0 and 1 qualify; image 0 keeps its label in the top 2, image 1 loses it
    assert topk_attack_success(clean, pert, labels, 2) == 0.5
    # top-3: images 0, 1 (lost) and 2 (not in clean top 3: excluded); the unlabelled image never counts
    assert topk_attack_success(clean, pert, labels, 3) == 0.5
    assert math.isnan(topk_attack_success(clean, pert, torch.tensor([3, 3, 3, -1]), 1))
