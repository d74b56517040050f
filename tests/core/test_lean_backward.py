"""Lean backward: input gradients to the bit with the inputs of frozen convolutions and batch norms dropped."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import patternscope.core.lean_backward as lean_module
from patternscope.core.lean_backward import lean_backward
from patternscope.core.params import AdditiveParam
from patternscope.core.search import run_search
from tests.core.test_search import _setup


class _Inverted(nn.Module):
    """An MBConv-like block: 1x1 expand, BN, ReLU6, depthwise 3x3, BN, ReLU6, 1x1 project, BN, residual."""

    def __init__(self, c: int, e: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(c, e, 1, bias=False), nn.BatchNorm2d(e), nn.ReLU6(inplace=True),
            nn.Conv2d(e, e, 3, padding=1, groups=e, bias=False), nn.BatchNorm2d(e), nn.ReLU6(),
            nn.Conv2d(e, c, 1, bias=False), nn.BatchNorm2d(c),
        )  # fmt: skip

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


def _convnet() -> nn.Module:
    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Conv2d(3, 8, 3, stride=2, padding=1), nn.BatchNorm2d(8), nn.ReLU(inplace=True),
        _Inverted(8, 24), _Inverted(8, 24), nn.MaxPool2d(2),
        nn.Conv2d(8, 16, 3, padding=1), nn.GELU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 10),
    )  # fmt: skip
    for m in net.modules():  # running statistics that are not the identity
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
    return net.eval().requires_grad_(False)


def _transformer() -> nn.Module:
    torch.manual_seed(0)
    layer = nn.TransformerEncoderLayer(16, 2, 32, dropout=0.0, batch_first=True)
    return nn.Sequential(nn.Flatten(2), nn.Linear(64, 16), layer, nn.Flatten(), nn.Linear(3 * 16, 5)).eval()


def _input_grad(net: nn.Module, x: torch.Tensor, lean: bool) -> torch.Tensor:
    delta = torch.zeros_like(x[0]).requires_grad_()
    with lean_backward(lean):
        out = net((x + delta).clamp(0, 1))
    (out.log_softmax(1)[:, 1].mean() + out.pow(2).mean()).backward()
    assert delta.grad is not None
    return delta.grad


@pytest.mark.parametrize(
    ("make", "shape"), [(_convnet, (6, 3, 32, 32)), (lambda: _transformer().requires_grad_(False), (4, 3, 8, 8))]
)
def test_input_gradients_are_identical_to_the_bit(make, shape):
    net, x = make(), torch.rand(*shape, generator=torch.Generator().manual_seed(1))
    plain, lean = _input_grad(net, x, False), _input_grad(net, x, True)
    assert plain.abs().sum() > 0
    assert torch.equal(plain, lean)


def test_the_dropped_inputs_are_never_read(monkeypatch):
    """Placeholders full of NaN change nothing: the kernels do not read the dropped inputs at all."""
    net, x = _convnet(), torch.rand(5, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    plain = _input_grad(net, x, False)
    calls = []

    def nan_tensor(self):
        calls.append(self.size)
        return torch.full(self.size, float("nan"), dtype=self.dtype).as_strided(self.size, self.stride)

    monkeypatch.setattr(lean_module._Layout, "tensor", nan_tensor)
    assert torch.equal(plain, _input_grad(net, x, True))
    assert len(calls) >= 10  # convolutions and batch norms of every block were dropped


def test_less_is_saved(monkeypatch):
    """Of what autograd saves, the lean graph keeps the activations and the weights, not the dropped inputs."""
    net, x = _convnet(), torch.rand(8, 3, 64, 64)
    kept, dropped = [], []
    pack = lean_module._pack

    def recording(t):
        out = pack(t)
        (dropped if isinstance(out, lean_module._Layout) else kept).append(t.numel() * t.element_size())
        return out

    monkeypatch.setattr(lean_module, "_pack", recording)
    delta = torch.zeros_like(x[0]).requires_grad_()
    with lean_backward():
        net((x + delta).clamp(0, 1))
    assert sum(dropped) > 1.2 * sum(kept)  # most of what a frozen conv net saves is dropped


def test_layers_with_trainable_weights_keep_their_inputs():
    net = _convnet().requires_grad_(True)
    x = torch.rand(4, 3, 32, 32)
    grads = []
    for lean in (False, True):
        net.zero_grad()
        with lean_backward(lean):
            loss = net(x).pow(2).mean()
        loss.backward()
        grads.append([p.grad.clone() for p in net.parameters()])
    assert all(torch.equal(a, b) for a, b in zip(*grads, strict=True))


def test_the_search_loop_finds_the_same_pattern_lean_or_not(tiny_model, digits, monkeypatch):
    import patternscope.core.search as search_module

    monkeypatch.setattr(search_module, "LEAN_MIN_VALUES", 0)  # the tiny batches run lean too
    calls = []
    monkeypatch.setattr(lean_module, "_pack", lambda t, pack=lean_module._pack: calls.append(1) or pack(t))
    deltas = []
    for lean in (False, True):
        param, objective, stream, config = _setup(tiny_model, digits, 6, lean=lean)
        run_search(param, objective, stream.host_images, config)
        deltas.append(param.delta.detach().clone())
    assert deltas[0].abs().sum() > 0 and calls  # it searched, and the lean run packed through the mode
    assert torch.equal(deltas[0], deltas[1])
    assert isinstance(param, AdditiveParam)
