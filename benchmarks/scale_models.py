"""A deliberately light 224 x 224 classifier for the scale benchmarks: its forward pass costs far less
than decoding a JPEG, so a run over 20,000 images measures the pipeline and memory, not the network."""

from __future__ import annotations

import torch
from torch import nn


class Light224(nn.Module):
    """Strided convolutions down to 7 x 7, then 1000 logits (random weights are fine for timing)."""

    input_size = (3, 224, 224)

    def __init__(self, classes: int = 1000) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.features = nn.Sequential(
            nn.Conv2d(3, 16, 8, stride=8), nn.ReLU(), nn.Conv2d(16, 32, 4, stride=4), nn.ReLU()
        )
        self.head = nn.Linear(32 * 7 * 7, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x).flatten(1))
