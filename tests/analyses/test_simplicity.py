"""Simplicity measures and saliency overlap on masks worked out by hand."""

from __future__ import annotations

import pytest
import torch

from patternscope.analyses.simplicity import (
    boundary_ratio,
    compare_settings,
    gradient_x_input,
    mask_components,
    pattern_simplicity,
    saliency_overlap,
)
from patternscope.core.patterns import ClasswisePattern


def pattern_of(mask: torch.Tensor, colour: float = 1.0) -> ClasswisePattern:
    colours = torch.full((1, *mask.shape[-2:]), colour)
    return ClasswisePattern(0, mask[None].float(), colours, mask[None].float())


def square(side: int, at: int = 2, size: int = 16) -> torch.Tensor:
    m = torch.zeros(size, size)
    m[at : at + side, at : at + side] = 1
    return m


def scattered(n: int, size: int = 16) -> torch.Tensor:
    m = torch.zeros(size, size)
    for i in range(n):
        m[(i // 4) * 3 + 1, (i % 4) * 3 + 1] = 1
    return m


def test_square_vs_scattered_pixels():
    assert mask_components(square(3)) == 1
    assert boundary_ratio(square(3)) == pytest.approx(12 / 9)
    assert mask_components(scattered(9)) == 9
    assert boundary_ratio(scattered(9)) == pytest.approx(4.0)
    # the image border counts as outside: a full mask has boundary 4 x side per side^2 pixels
    assert boundary_ratio(torch.ones(4, 4)) == pytest.approx(16 / 16)
    # 8-connectivity: two pixels touching at a corner are one part
    diagonal = torch.zeros(5, 5)
    diagonal[1, 1] = diagonal[2, 2] = 1
    assert mask_components(diagonal) == 1


def test_every_measure_ranks_one_block_simpler_than_scattered_pixels():
    block, spread = pattern_simplicity(pattern_of(square(3))), pattern_simplicity(pattern_of(scattered(9)))
    for measure in ("components", "boundary_ratio", "compressed_bytes", "total_variation"):
        assert block[measure] < spread[measure], measure


def test_saliency_overlap_is_an_iou_of_top_k_pixels():
    mask = square(3)
    assert saliency_overlap(mask + 0.01 * torch.rand(16, 16), pattern_of(mask)) == pytest.approx(1.0)
    assert saliency_overlap(square(3, at=10), pattern_of(mask)) == 0.0
    shifted = square(3, at=3)  # shares a 2x2 corner with the pattern: IoU 4 / (9 + 9 - 4)
    assert saliency_overlap(shifted + 1e-3 * torch.rand(16, 16), pattern_of(mask)) == pytest.approx(4 / 14)


def test_gradient_x_input_is_zero_where_the_input_is_zero(tiny_model, digits):
    image = digits.test_x[0]
    sal = gradient_x_input(tiny_model, image, int(digits.test_y[0]))
    assert sal.shape == image.shape[-2:] and (sal >= 0).all() and sal.sum() > 0
    assert (sal[image[0] == 0] == 0).all()


def test_compare_settings_summarises_per_setting():
    rows = {"a": [{"components": 1, "boundary_ratio": 1, "compressed_bytes": 10, "total_variation": 0.1}] * 3}
    out = compare_settings(rows)
    assert out["a"]["patterns"] == 3 and out["a"]["components"] == {"mean": 1.0, "median": 1.0}
