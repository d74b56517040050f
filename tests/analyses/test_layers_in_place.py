"""The layer analysis on a network with in-place ReLUs (torchvision ResNet-18, random weights, 32 x 32):
each block's entry is the block's own output, as on the same network with every ReLU out of place."""

from __future__ import annotations

import pytest
import torch
import torchvision
from helpers import out_of_place

from patternscope.analyses.layers import analyze_layers
from patternscope.core.classifier import Classifier


def test_resnet_blocks_are_recorded_before_the_in_place_relu():
    torch.manual_seed(0)
    net = torchvision.models.resnet18(weights=None, num_classes=4)
    model = Classifier(net, mean=(0.5,) * 3, std=(0.25,) * 3, input_size=(3, 32, 32))
    images, delta = torch.rand(6, 3, 32, 32), (torch.rand(3, 32, 32) - 0.5) * 0.1
    got = analyze_layers(model, {"d": delta}, images, batch_size=3)
    want = analyze_layers(out_of_place(model), {"d": delta}, images, batch_size=3)
    assert got.blocks[:3] == ["conv1", "bn1", "relu"] and got.blocks == want.blocks
    # bn1 (pre-ReLU) and relu (post-ReLU) are different representations, not the same overwritten tensor
    assert got.curves[0].follows_x[1] != pytest.approx(got.curves[0].follows_x[2], abs=1e-4)
    assert got.curves[0].follows_delta == pytest.approx(want.curves[0].follows_delta, abs=1e-5)
    assert got.curves[0].follows_x == pytest.approx(want.curves[0].follows_x, abs=1e-5)
