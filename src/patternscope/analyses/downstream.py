"""Downstream attack: does a pattern found on a backbone still fool a model fine-tuned from it?

The paper's transfer setting: a user takes a pretrained backbone, freezes it, and trains a new head on
their own task. :func:`build_downstream` makes that model (the backbone's last ``nn.Linear`` replaced
by a new head; optionally the last block before it unfrozen too), :func:`train_downstream` trains it on
labelled task images, and :func:`measure_downstream` measures the unchanged pattern's fooling ratio on
it, next to random noise of the same budget and to a pattern searched on the downstream model itself.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import nn

from ..core.blocks import last_block
from ..core.classifier import Classifier
from ..core.configs import option
from ..core.metrics import evaluate_pattern
from ..core.patterns import Pattern
from ..core.predict import predicted_class
from ..core.train import Batch, train_epochs
from ..data.bank import Images, take
from ..errors import ModelSpecError, PatternError

HEADS = ("linear", "last-block")


@dataclass
class DownstreamConfig:
    """Training of the downstream model (pixel space [0,1]).

    Args:
        head: ``linear`` (a new last layer on the frozen backbone) or ``last-block`` (that, plus the last
            block before it: see :func:`build_downstream`).
        epochs: passes over the task's training images.
        lr: Adam learning rate.
        batch_size: images per step.
        seed: initialisation and shuffling.
        weight_decay: Adam weight decay.
        milestones: epochs after which the learning rate is multiplied by ``gamma``.
        gamma: the learning-rate factor at each milestone.
        augment: random horizontal flips and random crops (reflection-padded by 1/8 of the side) of the
            training images, drawn anew each epoch (with a linear head the backbone then runs every epoch).

    :data:`PAPER_SCHEDULE` holds the authors' schedule (``patternscope downstream --recipe paper``).
    """

    head: str = option("linear", help="what is trained (default {default})", choices=HEADS)
    epochs: int = 30
    lr: float = 1e-2
    batch_size: int = 64
    seed: int = option(0, help="seed (default {default})")
    weight_decay: float = 0.0
    milestones: tuple[int, ...] = ()
    gamma: float = 1.0
    augment: bool = False

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> DownstreamConfig:
        """Check every setting (raising an error that names it); returns ``self``."""
        if self.head not in HEADS:
            raise PatternError(f"head must be one of {', '.join(HEADS)}, got {self.head!r}")
        if self.epochs < 1 or self.batch_size < 1 or not self.lr > 0:
            raise PatternError("epochs and batch_size must be >= 1 and lr > 0")
        if self.weight_decay < 0 or not self.gamma > 0 or any(m < 1 for m in self.milestones):
            raise PatternError("weight_decay must be >= 0, gamma > 0 and milestones >= 1")
        return self


# the authors' downstream training (Ye et al.'s code): Adam 1e-3, weight decay 1e-5, 20 epochs, lr x0.6
# after epochs 4, 8, 12 and 16, batch 32, with augmentation
PAPER_SCHEDULE: dict[str, Any] = {
    "epochs": 20,
    "lr": 1e-3,
    "batch_size": 32,
    "weight_decay": 1e-5,
    "milestones": (4, 8, 12, 16),
    "gamma": 0.6,
    "augment": True,
}


def augment_batch(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Random horizontal flips and random crops (reflection padding of 1/8 of the side, then a crop back
    to the same size) of a batch N x C x H x W in [0,1]; the draws come from ``generator`` (CPU)."""
    n, _, h, w = x.shape
    pad = max(1, min(h, w) // 8)
    flip = torch.rand(n, generator=generator) < 0.5
    tops = torch.randint(0, 2 * pad + 1, (n,), generator=generator).tolist()
    lefts = torch.randint(0, 2 * pad + 1, (n,), generator=generator).tolist()
    x = torch.where(flip.to(x.device)[:, None, None, None], x.flip(-1), x)
    padded = nn.functional.pad(x, (pad, pad, pad, pad), mode="reflect")
    crops = [padded[i, :, t : t + h, left : left + w] for i, (t, left) in enumerate(zip(tops, lefts, strict=True))]
    return torch.stack(crops)


def _last_linear(net: nn.Module) -> tuple[str, nn.Linear]:
    linears = [(n, m) for n, m in net.named_modules() if isinstance(m, nn.Linear)]
    if not linears:
        raise ModelSpecError("the backbone has no nn.Linear layer to replace with a new head")
    return linears[-1]


def _set_module(root: nn.Module, name: str, module: nn.Module) -> None:
    parent = root
    *path, last = name.split(".")
    for part in path:
        parent = getattr(parent, part)
    setattr(parent, last, module)


class DownstreamModel(Classifier):
    """A backbone with a new head: ``head_name`` names the replaced last linear layer, ``trainable`` holds
    the modules training updates (the head, and with ``last-block`` the last block before it, whose module
    names are ``block_names``: see :func:`patternscope.core.blocks.last_block`)."""

    head_name: str
    block_names: list[str]
    trainable: list[nn.Module]


def build_downstream(backbone: Classifier, num_classes: int, config: DownstreamConfig) -> DownstreamModel:
    """A copy of ``backbone`` whose last linear layer is a new ``num_classes``-way head (trainable), the
    rest frozen (``last-block``: the last block before the head trainable too, and nothing else: ResNet's
    ``layer4[-1]``, VGG's last conv + ReLU + pool, EfficientNet's last MBConv, a ViT's last transformer
    block; see :func:`patternscope.core.blocks.last_block`)."""
    config.validate()
    if num_classes < 2:
        raise PatternError(f"the task needs at least 2 classes, got {num_classes}")
    net = copy.deepcopy(backbone.net)
    name, old = _last_linear(net)
    torch.manual_seed(config.seed)
    head = nn.Linear(old.in_features, num_classes).to(old.weight.device)
    _set_module(net, name, head)
    model = DownstreamModel(
        net,
        mean=tuple(backbone.mean.flatten().tolist()),
        std=tuple(backbone.std.flatten().tolist()),
        input_size=backbone.input_size,
        spec=f"{backbone.spec} + {config.head} head ({num_classes} classes)",
        weights=None,
    )
    model.head_name = name
    model.block_names = last_block(net, name) if config.head == "last-block" else []
    if config.head == "last-block" and not model.block_names:
        raise ModelSpecError(
            f"--head last-block: the backbone has no block, convolution or linear layer before its head {name!r}; "
            "use --head linear"
        )
    model.trainable = [head, *(net.get_submodule(b) for b in model.block_names)]
    return model


@dataclass
class TrainReport:
    train_accuracy: float
    test_accuracy: float
    seconds: float
    history: list[float] = field(default_factory=list)


def train_downstream(
    model: DownstreamModel,
    images: Images,
    labels: torch.Tensor,
    *,
    test_images: Images,
    test_labels: torch.Tensor,
    config: DownstreamConfig,
    progress: bool = True,
) -> TrainReport:
    """Train the trainable parts of ``model`` (see :func:`build_downstream`) with cross-entropy.

    With a linear head the frozen backbone's features are computed once, so training costs one forward
    pass over the images plus cheap head updates. The report's ``history`` holds each epoch's mean
    training loss (per image), its ``seconds`` the wall time.
    """
    from tqdm.auto import trange

    config.validate()
    start = time.perf_counter()
    gen = torch.Generator().manual_seed(config.seed)
    params = [p for m in model.trainable for p in m.parameters()]
    for p in params:
        p.requires_grad_(True)
    opt = torch.optim.Adam(params, lr=config.lr, weight_decay=config.weight_decay)
    schedule = torch.optim.lr_scheduler.MultiStepLR(opt, list(config.milestones), config.gamma)
    history: list[float] = []
    total = [0.0]  # this epoch's summed loss (over images)

    def add(batch: Batch, loss: torch.Tensor) -> None:
        total[0] += float(loss.detach()) * len(batch.indices)

    def end_epoch(_epoch: int) -> None:
        history.append(total[0] / len(images))
        total[0] = 0.0
        schedule.step()

    loss_of = _head_loss(model, images, labels, config, gen)
    epochs = trange(config.epochs, desc="head", disable=not progress)
    train_epochs(opt, loss_of, len(images), config.batch_size, epochs, gen, after_step=add, after_epoch=end_epoch)
    for p in params:
        p.requires_grad_(False)
    model.passes.grad = model.passes.forward_only = 0
    return TrainReport(
        accuracy(model, images, labels), accuracy(model, test_images, test_labels), time.perf_counter() - start, history
    )


def _head_loss(
    model: DownstreamModel, x: Images, y: torch.Tensor, config: DownstreamConfig, gen: torch.Generator
) -> Callable[[Batch], torch.Tensor]:
    """A batch's cross-entropy for :func:`train_epochs`: on the frozen backbone's features, computed here
    once for a linear head on fixed images, else per batch (augmented with draws from ``gen`` if asked)."""
    device = model.device
    head = model.trainable[0]
    cached = config.head == "linear" and not config.augment  # fixed images: the backbone's features once
    if cached:
        with torch.no_grad():
            feats = torch.cat(
                [
                    model.features(take(x, slice(i, i + 128)).to(device), f"{model.head_name}:in").flatten(1)
                    for i in range(0, len(x), 128)
                ]
            )

    def loss_of(batch: Batch) -> torch.Tensor:
        idx = batch.indices
        target = y[idx].to(device)
        if cached:
            logits = head(feats[idx])
        else:
            images = take(x, idx).to(device)
            if config.augment:
                images = augment_batch(images, gen)
            if config.head == "linear":
                with torch.no_grad():
                    inputs = model.features(images, f"{model.head_name}:in").flatten(1)
                logits = head(inputs)
            else:
                logits = model.net(_normalise(model, images))
        return nn.functional.cross_entropy(logits, target)

    return loss_of


def _normalise(model: Classifier, x: torch.Tensor) -> torch.Tensor:
    return (x - model.mean) / model.std


def accuracy(model: Classifier, x: Images, y: torch.Tensor) -> float:
    """Top-1 accuracy of ``model`` on images ``x`` in [0,1] with labels ``y``."""
    with torch.no_grad():
        return float((predicted_class(model, x) == y).float().mean())


@dataclass
class DownstreamResult:
    """Fooling ratios on the downstream model's held-out task images (share of predictions changed)."""

    transferred: float
    random_sign: float
    random_uniform: float
    own: float | None
    accuracy_clean: float
    accuracy_transferred: float
    n_images: int
    details: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def measure_downstream(
    downstream: Classifier,
    pattern: Pattern,
    images: Images,
    labels: torch.Tensor,
    *,
    own: Pattern | None = None,
    seed: int = 0,
) -> DownstreamResult:
    """The backbone's ``pattern`` (unchanged) on the downstream model, random noise of its budget, and
    ``own`` (a pattern searched on the downstream model) if given."""
    if tuple(pattern.shape) != tuple(downstream.input_size):
        raise PatternError(
            f"the pattern is {tuple(pattern.shape)} but the downstream model takes {downstream.input_size}; "
            "use a pattern found on this backbone"
        )
    ev = evaluate_pattern(downstream, pattern, images, labels=labels, seed=seed)
    own_fr = (
        evaluate_pattern(downstream, own, images, labels=labels, baselines=(), seed=seed).fooling_ratio if own else None
    )
    return DownstreamResult(
        transferred=ev.fooling_ratio,
        random_sign=ev.random_baselines["sign"]["fooling_ratio"],
        random_uniform=ev.random_baselines["uniform"]["fooling_ratio"],
        own=own_fr,
        accuracy_clean=ev.accuracy["clean"]["top1"] if ev.accuracy else float("nan"),
        accuracy_transferred=ev.accuracy["perturbed"]["top1"] if ev.accuracy else float("nan"),
        n_images=ev.n_images,
        details={"top_classes": ev.top_classes, "agreement": ev.agreement},
    )


__all__ = [
    "HEADS",
    "DownstreamConfig",
    "DownstreamResult",
    "TrainReport",
    "accuracy",
    "build_downstream",
    "measure_downstream",
    "train_downstream",
]
