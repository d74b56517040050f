"""The generated ``glyphs`` set: letters from matplotlib's bundled fonts, reproducible, balanced, learnable."""

from __future__ import annotations

import pytest
import torch

from patternscope.data import load_dataset
from patternscope.data.glyphs import GLYPH_CLASSES, glyph_masters, render_glyphs
from patternscope.errors import DataError
from patternscope.kit import SmallCNN, TrainConfig, accuracy, train_classifier


def test_glyphs_are_reproducible_balanced_images_in_range():
    x, y = render_glyphs(520, seed=3)
    again, same = render_glyphs(520, seed=3)
    assert torch.equal(x, again) and torch.equal(y, same)
    other, _ = render_glyphs(520, seed=4)
    assert not torch.equal(x, other)
    assert x.shape == (520, 1, 28, 28) and float(x.min()) >= 0 and float(x.max()) <= 1
    assert torch.bincount(y, minlength=26).tolist() == [20] * 26
    ink = x.flatten(1).mean(1)
    assert float(ink.min()) > 0.005  # every image shows a glyph (a thinned I is the faintest)
    assert glyph_masters(26).shape[0] >= 15  # about 20 fonts ship with matplotlib


def test_a_small_cnn_learns_glyphs_far_above_chance():
    data = load_dataset("glyphs", train=3000, test=520, classes=26)
    assert data.class_names == GLYPH_CLASSES[:26] and data.num_classes == 26
    net = train_classifier(SmallCNN(classes=26), data.train_x, data.train_y, TrainConfig(epochs=2, seed=0))
    assert accuracy(net, data.test_x, data.test_y) > 0.25  # chance is 0.04; 20,000 images give 0.88


def test_glyphs_up_to_36_classes_and_bad_sizes():
    x, y = render_glyphs(72, seed=0, size=16, classes=36)
    assert x.shape == (72, 1, 16, 16) and int(y.max()) == 35 and GLYPH_CLASSES[35] == "9"
    with pytest.raises(DataError, match="2 to 36 classes"):
        render_glyphs(10, seed=0, classes=40)
    with pytest.raises(DataError, match="at least one image per class"):
        load_dataset("glyphs", train=10, test=10)
