"""Canvas sensitivity: patterns of one class from several of its images, and how their locations agree."""

from __future__ import annotations

import pytest
import torch

from patternscope.analyses.canvas_sensitivity import (
    canvas_sensitivity,
    chance_iou,
    mask_centroid,
    mask_iou,
    top_canvases,
)
from patternscope.analyses.classwise import ClasswiseConfig, choose_canvas
from patternscope.errors import DataError

TARGET = 0


def test_mask_agreement_by_hand():
    a = torch.zeros(1, 8, 8)
    a[0, :2, :2] = 1
    b = torch.zeros(1, 8, 8)
    b[0, 1:3, 1:3] = 1
    assert mask_iou(a, a) == 1.0 and mask_iou(a, b) == pytest.approx(1 / 7)
    assert mask_centroid(a) == (0.5, 0.5) and mask_centroid(b) == (1.5, 1.5)
    # random k-pixel masks: simulated mean IoU matches the formula
    gen = torch.Generator().manual_seed(0)
    sims = []
    for _ in range(2000):
        m1, m2 = torch.zeros(64), torch.zeros(64)
        m1[torch.randperm(64, generator=gen)[:8]] = 1
        m2[torch.randperm(64, generator=gen)[:8]] = 1
        sims.append(mask_iou(m1, m2))
    assert sum(sims) / len(sims) == pytest.approx(chance_iou(8, 64), abs=0.01)


def test_top_canvases_are_the_class_most_confident(clean_small):
    data, model = clean_small.data, clean_small.model
    top = top_canvases(model, data.train_x, data.train_y, TARGET, 4)
    assert len(top) == 4 and (data.train_y[top] == TARGET).all()
    assert int(top[0]) == choose_canvas(model, data.train_x, data.train_y, target=TARGET)
    with pytest.raises(DataError, match="no images of class 3"):
        top_canvases(model, data.train_x[data.train_y != 3], data.train_y[data.train_y != 3], 3, 2)


def test_patterns_from_several_canvases_agree_more_than_chance(clean_small):
    data, model = clean_small.data, clean_small.model
    cfg = ClasswiseConfig(steps=300, batch_size=16, top_k=0.15)
    sens = canvas_sensitivity(
        model,
        data.train_x,
        data.train_y,
        target=TARGET,
        held_images=data.test_x,
        held_labels=data.test_y,
        config=cfg,
        n=3,
        max_search_images=600,
    )
    summary = sens.summary()
    assert summary["canvases"] == 3 and len(set(sens.canvases)) == 3 and len(sens.pairwise_iou) == 3
    assert all(0 <= s <= 1 for s in sens.success) and summary["success_min"] <= summary["success_max"]
    # a digit's patterns sit where its strokes are: their locations agree far above random masks
    assert summary["mean_pairwise_iou"] > 2 * summary["chance_iou"]
    assert "patterns" not in sens.to_dict() and sens.to_dict()["summary"] == summary
