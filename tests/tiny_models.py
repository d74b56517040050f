"""Small models for tests, importable by spec (``tests/tiny_models.py:TinyCNN``)."""

from __future__ import annotations

import torch
from torch import nn


class TinyCNN(nn.Module):
    """A 2-conv CNN for 1 x 16 x 16 digits (10 classes). Carries its input size and normalisation."""

    input_size = (1, 16, 16)
    mean = (0.5,)
    std = (0.5,)

    def __init__(self, channels: int = 1, classes: int = 10) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(channels, 16, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(16, 32, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
        )
        self.fc = nn.Linear(32 * 4 * 4, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.features(x).flatten(1))
