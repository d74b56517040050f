"""The one batched prediction every module uses: top-5 classes, confidence and optionally probabilities.

Images are N x C x H x W in [0,1] pixel space, on any device; they are moved to the model's device one
batch at a time (``batch_size`` images), and the results come back on the CPU.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .classifier import Classifier


@dataclass
class Predictions:
    """Top-5 classes (N x min(5, classes)), the top-1 softmax confidence (N) and, when asked for, every
    class's softmax probability (N x classes)."""

    top5: torch.Tensor
    confidence: torch.Tensor
    probabilities: torch.Tensor | None = None

    @property
    def top1(self) -> torch.Tensor:
        return self.top5[:, 0]


@torch.no_grad()
def predict(
    model: Classifier,
    images: torch.Tensor,
    batch_size: int = 64,
    delta: torch.Tensor | None = None,
    *,
    probabilities: bool = False,
) -> Predictions:
    """Predictions of ``model`` on ``images`` (N x C x H x W in [0,1]), on clip(x + delta, 0, 1) when given.

    ``probabilities=True`` also keeps the whole softmax (N x classes), e.g. to choose a canvas image.
    """
    device = model.device
    tops, confs, probs_all = [], [], []
    k = min(5, model.num_classes)
    d = delta.to(device) if delta is not None else None
    for start in range(0, images.shape[0], batch_size):
        x = images[start : start + batch_size].to(device)
        if d is not None:
            x = (x + d).clamp(0, 1)
        probs = model(x).float().softmax(dim=1)
        conf, top = probs.topk(k, dim=1)
        tops.append(top.cpu())
        confs.append(conf[:, 0].cpu())
        if probabilities:
            probs_all.append(probs.cpu())
    return Predictions(torch.cat(tops), torch.cat(confs), torch.cat(probs_all) if probabilities else None)


def class_probabilities(model: Classifier, images: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
    """Every class's softmax probability for each image (N x classes, on the CPU)."""
    probs = predict(model, images, batch_size, probabilities=True).probabilities
    assert probs is not None
    return probs


def predicted_class(model: Classifier, images: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
    """The top-1 class of ``model`` for each image (N, on the CPU)."""
    return predict(model, images, batch_size).top1
