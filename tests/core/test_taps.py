"""Feature taps on networks with in-place ops (torchvision ResNet-18, random weights, 32 x 32): a tapped
value is what its module produced, not what a later ``ReLU(inplace=True)`` or ``out += identity`` left."""

from __future__ import annotations

from typing import Any

import pytest
import torch
import torchvision
from torch import nn

from patternscope.core.classifier import Classifier


@pytest.fixture(scope="module")
def resnet() -> Classifier:
    torch.manual_seed(0)
    net = torchvision.models.resnet18(weights=None, num_classes=4)
    return Classifier(net, mean=(0.5,) * 3, std=(0.25,) * 3, input_size=(3, 32, 32), spec="resnet18")


def _reference(model: Classifier, x: torch.Tensor, name: str, where: str = "out") -> list[torch.Tensor]:
    """Every call's value at a tap, copied inside the hook (before anything later can touch it)."""
    module = dict(model.net.named_modules())[name]
    seen: list[torch.Tensor] = []

    def pre(_m: nn.Module, inputs: tuple[Any, ...]) -> None:
        seen.append(inputs[0].clone())

    def post(_m: nn.Module, _i: Any, output: torch.Tensor) -> None:
        seen.append(output.clone())

    handle = module.register_forward_pre_hook(pre) if where == "in" else module.register_forward_hook(post)
    try:
        with torch.no_grad():
            model(x)
    finally:
        handle.remove()
    return seen


def test_taps_read_values_before_in_place_ops(resnet):
    x = torch.rand(2, 3, 32, 32)
    # bn1 is followed by ReLU(inplace=True); layer1.0.bn2 by `out += identity` and the ReLU
    for name in ("bn1", "layer1.0.bn2"):
        ref = _reference(resnet, x, name)[0]
        assert ref.min() < 0
        with torch.no_grad():
            value, logits = resnet.features_and_logits(x, name)
        assert torch.equal(value, ref) and torch.equal(logits, resnet(x))
    # an input tap of an in-place module is read before it runs (layer1.0.relu's first input is bn1's output)
    with torch.no_grad():
        first_input = resnet.features(x, "layer1.0.relu:in")
    assert torch.equal(first_input, _reference(resnet, x, "layer1.0.bn1")[0]) and first_input.min() < 0


def test_activations_are_each_calls_own_values_and_keep_gradients(resnet):
    x = torch.rand(2, 3, 32, 32)
    layers = ["bn1", "layer1.0.bn1", "layer1.0.bn2"]
    refs = [_reference(resnet, x, name)[0] for name in layers]
    before = resnet.passes.forward_only
    with torch.no_grad():
        acts = resnet.activations(x, layers)
    assert resnet.passes.forward_only == before + 2  # a forward run again to copy overwritten taps is not counted
    assert len(acts) == 3 and all(torch.equal(a, r) for a, r in zip(acts, refs, strict=True))
    # with gradients: the same values, and the loss on them differentiates back to the input
    delta = torch.zeros(1, 3, 32, 32, requires_grad=True)
    acts = resnet.activations(x + delta, layers)
    assert all(torch.allclose(a, r, atol=1e-6) for a, r in zip(acts, refs, strict=True))
    sum(a.pow(2).sum() for a in acts).backward()
    assert delta.grad is not None and delta.grad.abs().sum() > 0
