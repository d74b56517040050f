"""Metrics against values computed by hand on toy examples."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from patternscope.core.classifier import Classifier
from patternscope.core.metrics import (
    agreement,
    dominance_ratio,
    evaluate_pattern,
    fooling_ratio,
    random_like,
    top_classes,
    topk_accuracy,
    wilson_interval,
)
from patternscope.core.patterns import Pattern


def test_pure_metrics_by_hand():
    clean = torch.tensor([0, 1, 2, 3, 4, 5, 6, 7])
    pert = torch.tensor([0, 9, 9, 9, 9, 5, 6, 2])
    assert fooling_ratio(clean, pert) == pytest.approx(5 / 8)
    assert top_classes(pert, 2) == [9, 0]  # 9 x4; ties (0,2,5,6 x1) go to the smaller index
    assert dominance_ratio(pert, 1) == pytest.approx(4 / 8)
    assert dominance_ratio(pert, 3) == pytest.approx(6 / 8)
    assert dominance_ratio(clean, 1) == pytest.approx(1 / 8)
    assert agreement(pert, 9) == pytest.approx(4 / 8)
    top = torch.tensor([[1, 2, 3], [4, 5, 6], [7, 8, 9]])
    labels = torch.tensor([1, 6, -1])  # the third is unlabelled
    assert topk_accuracy(top, labels, 1) == pytest.approx(1 / 2)
    assert topk_accuracy(top, labels, 3) == pytest.approx(2 / 2)


def test_random_baselines_have_the_pattern_norm():
    p = Pattern(torch.zeros(3, 5, 5), eps=0.05)
    sign = random_like(p, "sign")
    assert torch.allclose(sign.abs(), torch.full_like(sign, 0.05))
    assert random_like(p, "uniform").abs().max() <= 0.05
    q = Pattern(torch.zeros(3, 5, 5), eps=2.0, norm="l2")
    assert random_like(q, "uniform").norm().item() == pytest.approx(2.0, rel=1e-5)
    assert random_like(q, "sign").norm().item() == pytest.approx(2.0, rel=1e-5)


class _Brightness(nn.Module):
    """Logits [mean, 0.5, 1 - mean] of the image: class 0 for bright images, 2 for dark, 1 in between."""

    def forward(self, x):
        m = x.mean(dim=(1, 2, 3))
        return torch.stack([10 * (m - 0.6), torch.zeros_like(m), 10 * (0.4 - m)], dim=1)


def test_evaluate_pattern_by_hand():
    model = Classifier(_Brightness(), mean=(0.0,), std=(1.0,), input_size=(1, 2, 2))
    x = torch.stack([torch.full((1, 2, 2), v) for v in (0.05, 0.25, 0.5, 0.75, 0.95)])
    labels = torch.tensor([2, 2, 1, 0, 0])
    # clean predictions: 2, 2, 1, 0, 0 (all correct). A +0.3 shift (clipped) makes them 2, 1, 0, 0, 0.
    p = Pattern(torch.full((1, 2, 2), 0.3), eps=0.3)
    ev = evaluate_pattern(model, p, x, labels=labels)
    assert ev.n_images == 5
    assert ev.fooling_ratio == pytest.approx(2 / 5)
    assert ev.pattern_class == 2  # δ alone is a dark image (mean 0.3)
    assert ev.agreement == pytest.approx(1 / 5)
    assert ev.dominance["top1"]["perturbed"] == pytest.approx(3 / 5)
    assert ev.dominance["top1"]["clean"] == pytest.approx(2 / 5)
    assert not ev.dominance["top1"]["pattern_class_in_top"]
    assert ev.dominance["top3"]["pattern_class_in_top"]
    assert ev.accuracy["clean"]["top1"] == pytest.approx(1.0)
    assert ev.accuracy["perturbed"]["top1"] == pytest.approx(3 / 5)
    assert ev.accuracy["attack_success_on_correct"] == pytest.approx(2 / 5)
    assert ev.top_classes["perturbed"][0] == {"class": 0, "name": "class 0", "count": 3}
    # clipping: 0.95 + 0.3 is evaluated as 1.0, still class 0
    assert ev.details["perturbed_pred"][4].item() == 0
    assert ev.intervals["fooling_ratio"] == pytest.approx(wilson_interval(2 / 5, 5))
    assert ev.intervals["agreement"] == pytest.approx(wilson_interval(1 / 5, 5))


def test_wilson_interval_by_hand():
    # textbook values: 50 of 100 -> 0.4038..0.5962; 0 of 10 -> 0..0.2775; 10 of 10 -> 0.7225..1
    assert wilson_interval(0.5, 100) == pytest.approx([0.4038, 0.5962], abs=1e-4)
    assert wilson_interval(0.0, 10) == pytest.approx([0.0, 0.2775], abs=1e-4)
    assert wilson_interval(1.0, 10) == pytest.approx([0.7225, 1.0], abs=1e-4)
    assert wilson_interval(0.3, 0) == [0.0, 1.0] and wilson_interval(float("nan"), 5) == [0.0, 1.0]
    low, high = wilson_interval(0.6, 220)  # the compare tables' 220 views: about ±6.5 points
    assert 0.12 < high - low < 0.14


def test_random_baselines_of_a_pattern_over_its_budget_have_its_measured_norm():
    delta = torch.full((1, 4, 4), 0.2)
    over = Pattern(delta, eps=0.04)  # declares 0.04, measures 0.2
    assert random_like(over, "sign").abs().max().item() == pytest.approx(0.2)
    assert random_like(over, "uniform").abs().max().item() <= 0.2 + 1e-6
    assert random_like(over, "uniform").abs().max().item() > 0.04
    within = Pattern(delta * 0.1, eps=0.04)  # below its budget: noise at the budget
    assert random_like(within, "sign").abs().max().item() == pytest.approx(0.04)
    l2 = Pattern(torch.full((1, 4, 4), 1.0), eps=2.0, norm="l2")  # L2 norm 4, declares 2
    assert random_like(l2, "sign").norm().item() == pytest.approx(4.0)
