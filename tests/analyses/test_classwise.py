"""Class-wise patterns: the mask search, top-k extraction, stamping, predictive power and smallest k."""

from __future__ import annotations

import pytest
import torch

from patternscope.analyses.classwise import (
    ClasswiseConfig,
    choose_canvas,
    find_classwise_pattern,
    other_classes,
    predictive_power,
    smallest_k,
    success_at_k,
)
from patternscope.core.patterns import ClasswisePattern, top_k_mask
from patternscope.errors import DataError, PatternError

TARGET = 0  # digit 0: a clean model's natural pattern


@pytest.fixture(scope="module")
def zero_pattern(clean_small):
    data = clean_small.data
    model = clean_small.model
    canvas_i = choose_canvas(model, data.train_x, data.train_y, target=TARGET)
    search, _ = other_classes(data.train_x, data.train_y, target=TARGET)
    cfg = ClasswiseConfig(steps=400, batch_size=16, top_k=0.15)  # 16x16 digits: 5% is 13 px
    return find_classwise_pattern(model, search, target=TARGET, canvas=data.train_x[canvas_i], config=cfg), canvas_i


def test_canvas_is_a_confident_image_of_the_class(clean_small):
    data, model = clean_small.data, clean_small.model
    i = choose_canvas(model, data.train_x, data.train_y, target=TARGET)
    assert int(data.train_y[i]) == TARGET
    probs = model(data.train_x[i : i + 1]).softmax(1)[0]
    assert int(probs.argmax()) == TARGET and float(probs[TARGET]) > 0.9


def test_pattern_is_small_and_predictive_far_beyond_random_stamps(clean_small, zero_pattern):
    """The paper's finding on clean models: a few canvas pixels (15% of a 16x16 digit) make other digits a 0."""
    data, model = clean_small.data, clean_small.model
    found, _ = zero_pattern
    pattern = found.pattern
    assert pattern.k == round(0.15 * 16 * 16)
    assert found.steps == 400
    power = predictive_power(model, pattern, data.test_x, data.test_y)
    assert power.images == int((data.test_y != TARGET).sum())
    assert power.clean_rate < 0.05
    # the same number of canvas pixels at random positions
    gen = torch.Generator().manual_seed(0)
    random_rates = []
    for _ in range(5):
        soft = torch.rand(1, 16, 16, generator=gen)
        rnd = ClasswisePattern(TARGET, top_k_mask(soft, pattern.k), pattern.colours, soft)
        random_rates.append(predictive_power(model, rnd, data.test_x, data.test_y).success)
    assert power.success > max(random_rates) + 0.3, (power.success, random_rates)
    assert set(power.per_class) == set(range(10)) - {TARGET}
    assert all(0 <= v["success"] <= 1 for v in power.per_class.values())


def test_the_mask_shrinks_and_stays_in_range(zero_pattern):
    found, _ = zero_pattern
    soft = found.pattern.soft_mask
    assert float(soft.min()) >= 0 and float(soft.max()) <= 1
    assert float(soft.mean()) < 0.5  # started at 0.5 everywhere; the size term pulls it down
    assert found.search.history[-1] < found.search.history[0]


def test_natural_canvas_colours_are_the_canvas(clean_small, zero_pattern):
    found, canvas_i = zero_pattern
    assert torch.equal(found.pattern.colours, clean_small.data.train_x[canvas_i])


def test_stamp_overwrites_exactly_the_top_k_pixels():
    soft = torch.arange(16.0).view(1, 4, 4) / 16
    colours = torch.full((1, 4, 4), 0.7)
    p = ClasswisePattern(1, top_k_mask(soft, 3), colours, soft)
    assert p.k == 3 and p.mask.flatten()[-3:].tolist() == [1, 1, 1]
    x = torch.zeros(2, 1, 4, 4)
    out = p.stamp(x)
    assert torch.allclose(out[:, 0, 3, 1:], torch.tensor(0.7)) and float(out.sum()) == pytest.approx(2 * 3 * 0.7)
    assert p.with_k(5).k == 5
    with pytest.raises(PatternError, match="cannot be stamped"):
        p.stamp(torch.zeros(1, 3, 4, 4))


def test_smallest_k_is_the_boundary(clean_small, zero_pattern):
    data, model = clean_small.data, clean_small.model
    pattern = zero_pattern[0].pattern
    others, _ = other_classes(data.test_x, data.test_y, target=TARGET)
    k, rate = smallest_k(model, pattern, others, 0.8)
    assert rate >= 0.8
    assert rate == pytest.approx(success_at_k(model, pattern, others, k))
    if k > 1:
        assert success_at_k(model, pattern, others, k - 1) < 0.8 or k <= pattern.k


def test_save_and_load_round_trip(tmp_path, zero_pattern):
    pattern = zero_pattern[0].pattern
    pattern.save(tmp_path)
    back = ClasswisePattern.load(tmp_path)
    assert back.target == TARGET and back.k == pattern.k
    assert torch.equal(back.mask, pattern.mask) and torch.equal(back.colours, pattern.colours)
    assert (tmp_path / "pattern.png").is_file() and (tmp_path / "pattern.json").is_file()
    with pytest.raises(PatternError):
        ClasswisePattern.load(tmp_path / "missing")


def test_bad_settings_and_inputs_are_named(clean_small):
    with pytest.raises(PatternError, match="alpha"):
        ClasswiseConfig(alpha=1.5)
    with pytest.raises(PatternError, match="top_k"):
        ClasswiseConfig(top_k=0)
    data = clean_small.data
    with pytest.raises(DataError, match="out of range"):
        find_classwise_pattern(clean_small.model, data.train_x, target=10, canvas=data.train_x[0])
    with pytest.raises(DataError, match="model takes"):
        find_classwise_pattern(clean_small.model, torch.rand(4, 1, 8, 8), target=1, canvas=torch.rand(1, 8, 8))


def test_smallest_k_finds_the_first_size_that_works_when_success_is_not_monotone(monkeypatch):
    """On a residual CNN a learned canvas's far pixels can undo the first ones: success 0.9 at 225 pixels, 0.2
    from 300 to 700, 1.0 for the full stamp. The smallest k is 225, not what a bisection over all sizes finds."""
    import patternscope.analyses.classwise as cw

    def success(_model, _pattern, _images, k):
        return min(1.0, k / 250) if k < 300 else (0.2 if k < 700 else 1.0)

    monkeypatch.setattr(cw, "success_at_k", success)
    pattern = cw.ClasswisePattern(0, torch.zeros(1, 28, 28), torch.zeros(1, 28, 28), torch.rand(1, 28, 28))
    assert cw.smallest_k(None, pattern, None, 0.9) == (225, 0.9)
    monkeypatch.setattr(cw, "success_at_k", lambda *_args: 0.5)
    assert cw.smallest_k(None, pattern, None, 0.9) == (785, 0.5)  # never reached: H*W + 1


def test_smallest_norm_finds_the_first_scale_that_works(monkeypatch):
    import patternscope.analyses.additive as ad
    from patternscope.core.patterns import Pattern

    def success(_model, _delta, _target, _images, scale):  # 0.9 at 0.3; clipping undoes 0.6 to 2
        return min(1.0, 3 * scale) if scale < 0.6 else (0.3 if scale < 2 else 1.0)

    monkeypatch.setattr(ad, "success_at_scale", success)
    delta = Pattern(torch.full((1, 4, 4), 0.1), 10.0, "l2")
    size = ad.smallest_norm(None, delta, None, target=0, rate=0.9)
    assert size.reached and 0.3 <= size.scale <= 0.305 and size.success >= 0.9  # doubling from 1 found 2
