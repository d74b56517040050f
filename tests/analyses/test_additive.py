"""The additive signal: the smallest-norm universal pattern that sends other classes to a target."""

from __future__ import annotations

import pytest
import torch

from patternscope.analyses.additive import AdditiveConfig, find_additive_pattern, smallest_norm, success_at_scale
from patternscope.analyses.anomaly import median
from patternscope.analyses.classwise import other_classes
from patternscope.core.patterns import Pattern
from patternscope.data import stratified_split
from patternscope.errors import DataError, PatternError
from patternscope.kit import attack_success_rate


@pytest.fixture(scope="module")
def norms(blended):
    """Every class's smallest additive L2 norm on the blended model, and the target's pattern."""
    data = blended.data
    search, held = stratified_split(data.test_y, 0.5, 0)
    out, patterns = [], {}
    for t in range(10):
        ox, _ = other_classes(data.test_x[search], data.test_y[search], target=t)
        hx, _ = other_classes(data.test_x[held], data.test_y[held], target=t)
        p = find_additive_pattern(blended.model, ox, target=t, config=AdditiveConfig(steps=60, seed=t))
        out.append(smallest_norm(blended.model, p, hx, target=t))
        patterns[t] = p
    return out, patterns


def test_a_blended_trigger_is_found_as_the_smallest_additive_pattern(blended, norms):
    sizes, _ = norms
    t = blended.target
    assert attack_success_rate(blended.net, blended.data.test_x, blended.data.test_y, blended.trigger, t) > 0.9
    l2 = [s.l2 for s in sizes]
    assert min(range(10), key=l2.__getitem__) == t, l2
    assert l2[t] < 0.6 * median(l2), l2
    assert all(s.reached for s in sizes) and sizes[t].success >= 0.9


def test_the_scaled_pattern_works_on_images_it_was_not_measured_on(blended, norms):
    sizes, patterns = norms
    t = blended.target
    fresh, _ = other_classes(blended.data.train_x, blended.data.train_y, target=t)
    delta = patterns[t].delta * sizes[t].scale
    assert success_at_scale(blended.model, delta, t, fresh, 1.0) > 0.8
    assert success_at_scale(blended.model, delta, t, fresh, 0.0) < 0.1  # without the pattern: rarely the target
    noise = torch.randn_like(delta)
    noise *= delta.norm() / noise.norm()
    assert success_at_scale(blended.model, noise, t, fresh, 1.0) < 0.2  # random, same L2: not the target


def test_unreachable_scale_is_reported_not_invented(blended, norms):
    _, patterns = norms
    tiny = patterns[0].delta * 1e-6

    far = smallest_norm(blended.model, Pattern(tiny, 1.0, "l2"), blended.data.test_x[:200], target=0, max_scale=4.0)
    assert not far.reached and far.l2 == pytest.approx(16.0) and far.linf == 1.0  # sqrt(1*16*16)


def test_additive_search_refuses_bad_settings(blended):
    with pytest.raises(PatternError, match="shrink"):
        AdditiveConfig(shrink=1.2)
    with pytest.raises(DataError, match="at least 32 images"):
        find_additive_pattern(blended.model, blended.data.test_x[:5], target=1)
