"""A small trainer for test and benchmark models, with optional PGD (L-inf) adversarial training.

Networks take [0,1] pixel inputs (put any normalisation inside the network). Training is
deterministic for a given seed on CPU.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..core.train import Batch, train_epochs


@dataclass
class TrainConfig:
    """Training settings.

    Args:
        epochs: passes over the training set.
        batch_size: images per step.
        lr: Adam learning rate.
        seed: fixes initial order and shuffling.
        adv_eps: L-inf radius of PGD adversarial training in [0,1] pixel units (0: plain training).
        adv_steps: PGD steps per batch.
        adv_step_size: PGD step (default 2.5 * eps / steps).
        progress: show a tqdm bar.
    """

    epochs: int = 3
    batch_size: int = 64
    lr: float = 2e-3
    seed: int = 0
    adv_eps: float = 0.0
    adv_steps: int = 7
    adv_step_size: float | None = None
    progress: bool = False


def pgd_attack(
    net: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    eps: float,
    steps: int = 7,
    step_size: float | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """L-inf PGD (Madry et al. 2018) with a random start: images within ``eps`` of ``x`` that raise the CE."""
    alpha = step_size if step_size is not None else 2.5 * eps / steps
    noise = torch.rand(x.shape, generator=generator).to(x.device) * 2 - 1
    adv = (x + eps * noise).clamp(0, 1)
    was_training = net.training
    net.eval()
    for _ in range(steps):
        adv.requires_grad_(True)
        loss = F.cross_entropy(net(adv), y)
        (grad,) = torch.autograd.grad(loss, adv)
        with torch.no_grad():
            adv = adv + alpha * grad.sign()
            adv = torch.min(torch.max(adv, x - eps), x + eps).clamp(0, 1)
    net.train(was_training)
    return adv.detach()


def train_classifier(net: nn.Module, x: torch.Tensor, y: torch.Tensor, config: TrainConfig | None = None) -> nn.Module:
    """Train ``net`` on images ``x`` (N x C x H x W, [0,1]) and labels ``y``; returns it in eval mode."""
    from tqdm.auto import tqdm

    cfg = config or TrainConfig()
    gen = torch.Generator().manual_seed(cfg.seed)
    torch.manual_seed(cfg.seed)
    opt = torch.optim.Adam(net.parameters(), lr=cfg.lr)
    steps_per_epoch = (len(y) + cfg.batch_size - 1) // cfg.batch_size
    total = cfg.epochs * steps_per_epoch
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=cfg.lr, total_steps=total, pct_start=0.15)
    bar = tqdm(total=total, desc="train" + (" (PGD)" if cfg.adv_eps else ""), disable=not cfg.progress)

    def loss_of(batch: Batch) -> torch.Tensor:
        xb, yb = x[batch.indices], y[batch.indices]
        if cfg.adv_eps > 0:
            xb = pgd_attack(net, xb, yb, cfg.adv_eps, cfg.adv_steps, cfg.adv_step_size, gen)
        return F.cross_entropy(net(xb), yb)

    def after_step(_batch: Batch, _loss: torch.Tensor) -> None:
        sched.step()
        bar.update(1)

    net.train()
    train_epochs(opt, loss_of, len(y), cfg.batch_size, range(cfg.epochs), gen, after_step=after_step)
    bar.close()
    net.eval()
    return net


@torch.no_grad()
def accuracy(net: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int = 1024) -> float:
    """Top-1 accuracy of ``net`` on ``x``, ``y``."""
    was_training = net.training
    net.eval()
    correct = sum(
        int((net(x[i : i + batch_size]).argmax(1) == y[i : i + batch_size]).sum()) for i in range(0, len(y), batch_size)
    )
    net.train(was_training)
    return correct / max(1, len(y))
