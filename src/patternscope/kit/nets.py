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
