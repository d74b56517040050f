"""Small CNNs for real small data (digits, Fashion-MNIST), loadable as ``patternscope.kit.nets:SmallCNN``."""

from __future__ import annotations

import torch
from torch import nn


class SmallCNN(nn.Module):
    """Two conv blocks and two dense layers on [0,1] inputs (no normalisation needed).

    Args:
        channels: input channels.
        size: input height and width (square; divisible by 4).
        classes: output classes.
        width: channels of the first conv (the second has twice as many).
    """

    def __init__(self, channels: int = 1, size: int = 28, classes: int = 10, width: int = 16) -> None:
        super().__init__()
        if size % 4:
            raise ValueError(f"SmallCNN needs an input size divisible by 4, got {size}")
        self.input_size = (channels, size, size)
        self.mean = (0.0,) * channels
        self.std = (1.0,) * channels
        self.features = nn.Sequential(
            nn.Conv2d(channels, width, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(width, 2 * width, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
        )
        self.head = nn.Sequential(
            nn.Flatten(), nn.Linear(2 * width * (size // 4) ** 2, 64), nn.ReLU(), nn.Linear(64, classes)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


class LeNet5(nn.Module):
    """LeNet-5 (LeCun et al. 1998) with ReLU and max pooling, on [0,1] inputs: 5x5 convs of 6 and 16 channels,
    then dense layers of 120 and 84; a second architecture beside :class:`SmallCNN` for the backdoor zoo.

    Args:
        channels: input channels.
        size: input height and width (square, at least 16).
        classes: output classes.
    """

    def __init__(self, channels: int = 1, size: int = 28, classes: int = 10) -> None:
        super().__init__()
        if size < 16:
            raise ValueError(f"LeNet5 needs inputs of at least 16x16, got {size}")
        self.input_size = (channels, size, size)
        self.mean = (0.0,) * channels
        self.std = (1.0,) * channels
        self.features = nn.Sequential(
            nn.Conv2d(channels, 6, 5, padding=2),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(6, 16, 5),
            nn.ReLU(),
            nn.MaxPool2d(2),
        )
        side = ((size // 2) - 4) // 2
        self.head = nn.Sequential(
            nn.Flatten(),
            nn.Linear(16 * side * side, 120),
            nn.ReLU(),
            nn.Linear(120, 84),
            nn.ReLU(),
            nn.Linear(84, classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


class _ResidualBlock(nn.Module):
    """Two 3x3 conv + BN layers with an identity (or 1x1 strided) shortcut, ReLU after the sum."""

    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU(inplace=True)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride=stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        return self.relu(self.bn2(self.conv2(out)) + self.shortcut(x))


class TinyResNet(nn.Module):
    """A small residual CNN with batch norm (a stem conv, three stages of one residual block each at widths
    ``width``, 2 ``width``, 4 ``width``, strides 1, 2, 2; global average pooling; a linear head) on [0,1] inputs.

    Args:
        channels: input channels.
        size: input height and width (square, at least 8).
        classes: output classes.
        width: channels of the first stage.
    """

    def __init__(self, channels: int = 1, size: int = 28, classes: int = 10, width: int = 16) -> None:
        super().__init__()
        if size < 8:
            raise ValueError(f"TinyResNet needs inputs of at least 8x8, got {size}")
        self.input_size = (channels, size, size)
        self.mean = (0.0,) * channels
        self.std = (1.0,) * channels
        self.stem = nn.Sequential(
            nn.Conv2d(channels, width, 3, padding=1, bias=False), nn.BatchNorm2d(width), nn.ReLU(inplace=True)
        )
        self.layers = nn.Sequential(
            _ResidualBlock(width, width, 1),
            _ResidualBlock(width, 2 * width, 2),
            _ResidualBlock(2 * width, 4 * width, 2),
        )
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4 * width, classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.layers(self.stem(x)))


class MLP(nn.Module):
    """A fully connected network on flattened [0,1] pixels: ``hidden`` ReLU layers, then a linear head (no
    convolution, so no built-in translation structure).

    Args:
        channels: input channels.
        size: input height and width (square).
        classes: output classes.
        hidden: widths of the hidden layers.
    """

    def __init__(
        self, channels: int = 1, size: int = 28, classes: int = 10, hidden: tuple[int, ...] = (256, 128)
    ) -> None:
        super().__init__()
        self.input_size = (channels, size, size)
        self.mean = (0.0,) * channels
        self.std = (1.0,) * channels
        layers: list[nn.Module] = [nn.Flatten()]
        width = channels * size * size
        for h in hidden:
            layers += [nn.Linear(width, h), nn.ReLU()]
            width = h
        layers.append(nn.Linear(width, classes))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)
