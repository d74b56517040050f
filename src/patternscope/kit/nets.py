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
