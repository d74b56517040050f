"""The one batched prediction every module uses: top-5 classes, confidence and optionally probabilities.

Images are N x C x H x W in [0,1] pixel space: a tensor on any device or an
:class:`~patternscope.data.bank.ImageBank` of files; they are read and moved to the model's device one
batch at a time (``batch_size`` images), and the results come back on the CPU.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch

from ..data.bank import Images, take
from .classifier import Classifier

Transform = Callable[[torch.Tensor], torch.Tensor]

CPU_FORWARD_IMAGES = 8
"""Images per forward pass on the CPU, whatever the batch read at once. A forward pass holds a few of its
largest activations at a time (EfficientNet-Lite0 at 224 x 224: 96 x 112 x 112 floats, 4.8 MB an image), so
its memory grows with the images in it: 1.27 GB above the model for 64 images, 0.37 GB for 16, about 0.2 GB
for 8. oneDNN may pick other kernels for another count, so a logit can move in its last bits (measured on
Lite0: at most 2e-6); every metric `evaluate` reports was the same to the last digit on the bundled
evaluation photos (1 and 10 views) and on 200 COCO-size JPEGs (``benchmarks/memory_stages.py``)."""


def forward_images(model: Classifier, batch_size: int) -> int:
    """Images per forward pass for ``batch_size`` read at once: at most :data:`CPU_FORWARD_IMAGES` on the
    CPU, the whole batch on an accelerator (where the batch is what keeps it busy)."""
    return min(batch_size, CPU_FORWARD_IMAGES) if model.device.type == "cpu" else batch_size


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
def probability_batches(
    model: Classifier,
    images: Images,
    batch_size: int = 64,
    delta: torch.Tensor | None = None,
    apply: Transform | None = None,
) -> Iterator[torch.Tensor]:
    """The softmax of ``model`` (B x classes, on its device) for each batch of ``images`` in order, on
    ``apply(x)`` when given (e.g. a stamp) and on clip(x + delta, 0, 1) when ``delta`` is given."""
    device = model.device
    d = delta.to(device) if delta is not None else None
    for start in range(0, images.shape[0], batch_size):
        x = take(images, slice(start, start + batch_size)).to(device)
        if apply is not None:
            x = apply(x)
        if d is not None:
            x = (x + d).clamp(0, 1)
        yield model(x).float().softmax(dim=1)


def predict(
    model: Classifier,
    images: Images,
    batch_size: int = 64,
    delta: torch.Tensor | None = None,
    *,
    probabilities: bool = False,
    apply: Transform | None = None,
) -> Predictions:
    """Predictions of ``model`` on ``images`` (N x C x H x W in [0,1]), on clip(x + delta, 0, 1) when given
    and on ``apply(x)`` when given (applied to each batch on the model's device).

    ``probabilities=True`` also keeps the whole softmax (N x classes), e.g. to choose a canvas image.
    """
    tops, confs, probs_all = [], [], []
    k = min(5, model.num_classes)
    for probs in probability_batches(model, images, batch_size, delta, apply):
        conf, top = probs.topk(k, dim=1)
        tops.append(top.cpu())
        confs.append(conf[:, 0].cpu())
        if probabilities:
            probs_all.append(probs.cpu())
    if not tops:
        empty = torch.empty(0, k, dtype=torch.long)
        return Predictions(empty, torch.empty(0), torch.empty(0, model.num_classes) if probabilities else None)
    return Predictions(torch.cat(tops), torch.cat(confs), torch.cat(probs_all) if probabilities else None)


def class_probabilities(model: Classifier, images: Images, batch_size: int = 256) -> torch.Tensor:
    """Every class's softmax probability for each image (N x classes, on the CPU)."""
    probs = predict(model, images, batch_size, probabilities=True).probabilities
    assert probs is not None
    return probs


def predicted_class(
    model: Classifier, images: Images, batch_size: int = 256, *, apply: Transform | None = None
) -> torch.Tensor:
    """The top-1 class of ``model`` for each image (N, on the CPU), of ``apply(image)`` when given."""
    return predict(model, images, batch_size, apply=apply).top1
