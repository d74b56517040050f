"""``downstream --head last-block`` trains the head and exactly the last block before it, on the papers'
architectures (random weights) and on user modules; a backbone without one is refused."""

from __future__ import annotations

import pytest
import timm
import torch
import torchvision
from torch import nn

from patternscope.analyses.downstream import DownstreamConfig, build_downstream, train_downstream
from patternscope.core.blocks import last_block
from patternscope.core.classifier import Classifier
from patternscope.errors import ModelSpecError

LAST_BLOCK = DownstreamConfig(head="last-block", epochs=1, batch_size=4)


def _wrap(net: nn.Module, size: int = 32) -> Classifier:
    return Classifier(net, mean=(0.5,) * 3, std=(0.25,) * 3, input_size=(3, size, size))


def _count(modules: list[nn.Module]) -> int:
    return sum(p.numel() for m in modules for p in m.parameters())


@pytest.mark.parametrize(
    ("arch", "head", "block"),
    [("resnet18", "fc", ["layer4.1"]), ("vgg11", "classifier.6", ["features.18", "features.19", "features.20"])],
)
def test_last_block_trains_exactly_the_head_and_the_last_block(arch, head, block):
    torch.manual_seed(0)
    backbone = _wrap(torchvision.models.get_model(arch, weights=None, num_classes=4))
    model = build_downstream(backbone, 3, LAST_BLOCK)
    modules = [model.net.get_submodule(name) for name in (head, *block)]
    assert _count(model.trainable) == _count(modules) < _count([model.net])
    assert model.head_name == head and model.block_names == block
    if arch == "vgg11":
        return  # training its 128M parameters takes seconds: the count says it
    # training moves the head and the block, and nothing else
    x, y = torch.rand(4, 3, 32, 32), torch.tensor([0, 1, 2, 0])
    before = {k: v.clone() for k, v in model.net.state_dict().items()}
    train_downstream(model, x, y, test_images=x, test_labels=y, config=LAST_BLOCK, progress=False)
    changed = {k.rpartition(".")[0] for k, v in model.net.state_dict().items() if not torch.equal(v, before[k])}
    inside = {k for k in changed if any(k == n or k.startswith(n + ".") for n in (head, *block))}
    assert changed == inside and head in changed and len(changed) > 1


@pytest.mark.parametrize(
    ("make", "head", "block"),
    [
        (lambda: torchvision.models.resnet50(weights=None), "fc", ["layer4.2"]),
        (lambda: torchvision.models.vgg11_bn(weights=None), "classifier.6", [f"features.{i}" for i in range(25, 29)]),
        (lambda: torchvision.models.efficientnet_b0(weights=None), "classifier.1", ["features.7.0"]),
        (lambda: timm.create_model("tf_efficientnet_lite0", pretrained=False), "classifier", ["blocks.6.0"]),
        (lambda: timm.create_model("vit_tiny_patch16_224", pretrained=False), "head", ["blocks.11"]),
        (lambda: torchvision.models.vit_b_16(weights=None), "heads.head", ["encoder.layers.encoder_layer_11"]),
        (lambda: timm.create_model("convnext_atto", pretrained=False), "head.fc", ["stages.3.blocks.1"]),
    ],
    ids=["resnet50", "vgg11_bn", "tv-efficientnet_b0", "timm-efficientnet_lite0", "timm-vit", "tv-vit", "convnext"],
)
def test_the_last_block_of_each_architecture(make, head, block):
    with torch.device("meta"):  # the structure only: no weights to initialise
        net = make()
    assert last_block(net, head) == block


class _ConvBlock(nn.Module):
    """A conv + norm + activation + pool module: a layer group, not a block (one weighted layer)."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.conv, self.bn, self.act, self.pool = (
            nn.Conv2d(cin, cout, 3, padding=1),
            nn.BatchNorm2d(cout),
            nn.ReLU(),
            nn.MaxPool2d(2),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool(self.act(self.bn(self.conv(x))))


class _UserNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.one, self.two = _ConvBlock(3, 8), _ConvBlock(8, 8)
        self.fc = nn.Linear(8 * 8 * 8, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.two(self.one(x)).flatten(1))


def test_user_modules_get_their_last_conv_group_or_a_one_line_refusal():
    assert last_block(_UserNet(), "fc") == ["two.conv", "two.bn", "two.act", "two.pool"]
    mlp = nn.Sequential(nn.Flatten(), nn.Linear(12, 16), nn.ReLU(), nn.Linear(16, 2))
    assert last_block(mlp, "3") == ["1", "2"]
    linear_only = _wrap(nn.Sequential(nn.Flatten(), nn.Linear(3 * 32 * 32, 2)))
    with pytest.raises(ModelSpecError, match="no block") as err:
        build_downstream(linear_only, 2, LAST_BLOCK)
    assert "\n" not in str(err.value)
