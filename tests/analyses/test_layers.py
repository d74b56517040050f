"""The layer analysis: on the tiny digits CNN a dominant pattern's features take over the network's
representation from some block on, and random noise of the same budget never does."""

from __future__ import annotations

import pytest
import torch

from patternscope import tensor_set
from patternscope.analyses.layers import analyze_layers, block_names
from patternscope.core.metrics import random_like
from patternscope.methods import find_dominant_pattern

EPS = 0.2


@pytest.fixture(scope="module")
def analysis(tiny_model, digits):
    found = find_dominant_pattern(tiny_model, [tensor_set(digits.train_x)], eps=EPS, steps=60, progress=False)
    noise = random_like(found.pattern, "sign")
    return analyze_layers(tiny_model, {"dominant": found.pattern, "noise": noise}, digits.test_x[:96], batch_size=32)


def test_blocks_open_containers_and_list_the_head_once(tiny_model):
    assert block_names(tiny_model) == [f"features.{i}" for i in range(6)] + ["fc"]


def test_dominant_pattern_takes_over_and_noise_never_does(analysis):
    assert analysis.blocks == [f"features.{i}" for i in range(6)] + ["logits"]
    dominant, noise = analysis.curve("dominant"), analysis.curve("noise")
    assert dominant.takeover is not None and noise.takeover is None
    # at the input side the image still wins, at the logits the pattern does (the paper's explanation)
    assert dominant.follows_x[0] > dominant.follows_delta[0]
    assert dominant.follows_delta[-1] > dominant.follows_x[-1] + 0.1
    assert dominant.follows_delta[-1] > noise.follows_delta[-1] + 0.2
    assert all(fx > 0.8 for fx in noise.follows_x)
    assert analysis.n_images == 96 and len(dominant.follows_delta) == len(analysis.blocks)


def test_batches_do_not_change_the_result(tiny_model, digits):
    delta = torch.rand(1, 16, 16) * 0.4 - 0.2
    one = analyze_layers(tiny_model, {"d": delta}, digits.test_x[:20], batch_size=20)
    many = analyze_layers(tiny_model, {"d": delta}, digits.test_x[:20], batch_size=3)
    assert one.curves[0].follows_delta == pytest.approx(many.curves[0].follows_delta, abs=1e-5)
    assert one.curves[0].follows_x == pytest.approx(many.curves[0].follows_x, abs=1e-5)
