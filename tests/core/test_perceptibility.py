"""Perceptibility numbers against cases worked out by hand, and attack success top-k."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from patternscope import evaluate_pattern
from patternscope.core.classifier import Classifier
from patternscope.core.metrics import topk_attack_success, topk_attack_success_clean_topk
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


def test_perceptibility_reads_a_stratified_sample_not_the_first_crops():
    """A class-sorted set whose first 512 images are all black (class 0) and the rest grey (class 1): ±eps
    clips half the values of a black image and none of a grey one. The first 512 would give 0.5; the
    class-stratified sample of 512 gives the share of the whole set, and says how it was drawn."""
    x = torch.cat([torch.zeros(768, 1, 4, 4), torch.full((256, 1, 4, 4), 0.5)])
    labels = torch.cat([torch.zeros(768, dtype=torch.long), torch.ones(256, dtype=torch.long)])
    model = Classifier(nn.Sequential(nn.Flatten(), nn.Linear(16, 3)), mean=(0.0,), std=(1.0,), input_size=(1, 4, 4))
    delta = torch.tensor([1.0, -1.0] * 8).view(1, 4, 4) * EPS  # half of a black image's values are clipped
    ev = evaluate_pattern(model, Pattern(delta, EPS), x, labels=labels, baselines=(), batch_size=100)
    seen = ev.perceptibility
    assert seen["n_images"] == 512
    assert seen["clipped_share"] == pytest.approx(0.5 * 384 / 512)  # 384 black and 128 grey, as 3 : 1
    assert seen["sample_seed"] == 0 and seen["sample_stratified"] is True and seen["sample_of"] == 1024
    unlabelled = evaluate_pattern(model, Pattern(delta, EPS), x, baselines=(), batch_size=100).perceptibility
    assert unlabelled["sample_stratified"] is False and 0.3 < unlabelled["clipped_share"] < 0.45


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
    ev = evaluate_pattern(tiny_model, pattern, digits.test_x[:50], labels=digits.test_y[:50])
    seen = ev.perceptibility
    assert seen["n_images"] == 50 and seen["saturated_share"] == 1.0
    assert seen["l2"] == pytest.approx(0.1 * 16)
    assert seen["psnr_db"] > 20 and seen["clipped_share"] > 0  # digits are mostly 0: much is clipped
    assert set(ev.accuracy["attack_success"]) == {"top1", "top3", "top5"}


def test_attack_success_top_k_by_hand():
    """The authors' definition: of the images whose clean top-1 is right, the share whose label leaves the
    perturbed top k; our variant counts the images whose label is in the clean top k instead."""
    labels = torch.tensor([0, 1, 2, -1])
    clean = torch.tensor([[0, 5, 6], [7, 1, 8], [2, 8, 7], [0, 1, 2]])
    pert = torch.tensor([[5, 0, 6], [7, 8, 9], [9, 8, 7], [3, 4, 5]])
    # correct at top 1: images 0 and 2; image 1 (label second in the clean top 3) never counts
    assert topk_attack_success(clean, pert, labels, 1) == 1.0
    assert topk_attack_success(clean, pert, labels, 2) == 0.5  # image 0 keeps its label in the top 2
    assert topk_attack_success(clean, pert, labels, 3) == 0.5
    # the variant: images 0, 1 and 2 have their label in the clean top 2 (and 3); 1 and 2 lose it
    assert topk_attack_success_clean_topk(clean, pert, labels, 1) == 1.0
    assert topk_attack_success_clean_topk(clean, pert, labels, 2) == pytest.approx(2 / 3)
    assert topk_attack_success_clean_topk(clean, pert, labels, 3) == pytest.approx(2 / 3)
    assert math.isnan(topk_attack_success(clean, pert, torch.tensor([3, 3, 3, -1]), 1))
    assert math.isnan(topk_attack_success_clean_topk(clean, pert, torch.tensor([3, 3, 3, -1]), 1))


# logits by hand: image i (a 1 x 1 x 1 image of value i/10) and image i + 5 (with the pattern, δ = 0.5) rank
# the six classes in these orders
_RANKS = [
    [0, 1, 2, 3, 4, 5],  # image 0, label 0: right
    [0, 1, 2, 3, 4, 5],  # image 1, label 1: wrong at top 1, in the clean top 3
    [2, 0, 1, 3, 4, 5],  # image 2, label 2: right
    [0, 1, 2, 3, 4, 5],  # image 3, label 3: wrong, in the clean top 5 only
    [4, 0, 1, 2, 3, 5],  # image 4, label 4: right
    [1, 2, 3, 0, 4, 5],  # image 0 + δ: label 0 out of the top 3, in the top 5
    [0, 2, 3, 4, 5, 1],  # image 1 + δ: label 1 out of the top 5
    [2, 0, 1, 3, 4, 5],  # image 2 + δ: unchanged
    [0, 1, 2, 4, 5, 3],  # image 3 + δ: label 3 out of the top 5
    [0, 1, 2, 3, 5, 4],  # image 4 + δ: label 4 out of the top 5
]


class _Table(nn.Module):
    """Logits looked up by the image's value (x = i/10 gives row i of :data:`_RANKS`)."""

    def __init__(self) -> None:
        super().__init__()
        logits = torch.zeros(len(_RANKS), 6)
        for row, order in enumerate(_RANKS):
            logits[row, order] = torch.arange(6, 0, -1, dtype=torch.float32)
        self.register_buffer("logits", logits)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.logits[(x.flatten(1)[:, 0] * 10).round().long()]


def test_evaluation_reports_the_authors_attack_success_and_the_variant():
    model = Classifier(_Table(), mean=(0.0,), std=(1.0,), input_size=(1, 1, 1))
    x = torch.arange(5, dtype=torch.float32).view(5, 1, 1, 1) / 10
    ev = evaluate_pattern(model, Pattern(torch.full((1, 1, 1), 0.5), eps=0.5), x, labels=torch.arange(5), baselines=())
    acc = ev.accuracy
    assert acc["n_correct"] == 3
    # authors: of the 3 correctly classified images (0, 2, 4), the label left the top 1 / 3 / 5 of 2 / 2 / 1
    assert acc["attack_success"] == pytest.approx({"top1": 2 / 3, "top3": 2 / 3, "top5": 1 / 3})
    assert acc["attack_success"]["top1"] == acc["attack_success_on_correct"]
    # ours: of the images with the label in the clean top k (3 / 4 / 5 of them)
    assert acc["attack_success_clean_topk"] == pytest.approx({"top1": 2 / 3, "top3": 3 / 4, "top5": 3 / 5})
    assert acc["n_correct_topk"] == {"top1": 3, "top3": 4, "top5": 5}


def test_ssim_in_small_groups_equals_ssim_of_the_whole_batch():
    """The meter runs SSIM a few images at a time (memory); the per-image values, and so their sum, are the
    whole batch's to the bit."""
    from torchmetrics.functional.image import structural_similarity_index_measure

    gen = torch.Generator().manual_seed(3)
    x = torch.rand(11, 3, 40, 40, generator=gen)
    delta = signs((3, 40, 40), seed=4) * EPS
    meter = PerceptibilityMeter()
    meter.update(x, delta)
    whole = structural_similarity_index_measure(
        (x + delta).clamp(0, 1), x, data_range=1.0, reduction="none", kernel_size=11, sigma=1.5
    )
    assert isinstance(whole, torch.Tensor)
    assert meter.ssim_sum == float(whole.sum())
    assert 0 < meter.ssim_sum < 11


def test_the_cpu_forward_passes_take_a_few_images_at_a_time():
    """evaluate_pattern reads 64 images at a time but runs the model on at most CPU_FORWARD_IMAGES (memory)."""
    from patternscope.core.predict import CPU_FORWARD_IMAGES

    seen = []

    class Counting(nn.Module):
        def forward(self, x):
            seen.append(x.shape[0])
            return x.mean(dim=(2, 3)) @ torch.eye(3, 4)

    model = Classifier(Counting(), mean=(0.0,), std=(1.0,), input_size=(3, 8, 8))
    images = torch.rand(70, 3, 8, 8, generator=torch.Generator().manual_seed(5))
    ev = evaluate_pattern(model, Pattern(signs((3, 8, 8)) * EPS, EPS, "linf"), images, batch_size=64)
    assert ev.n_images == 70
    assert max(seen[1:]) == CPU_FORWARD_IMAGES < 64
