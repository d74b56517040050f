"""The one training loop: epochs of shuffled batches, each a loss, a backward pass and an optimizer step.

:func:`train_epochs` owns the batching and the step order; what a batch's loss is (the forward pass,
adversarial or augmented inputs, cached features), what follows a step or an epoch (learning-rate
schedules, progress bars, loss histories, checkpoints) and where a resumed run starts belong to the
caller. The experiment kit's trainer (:mod:`patternscope.kit.train`), the downstream head
(:mod:`patternscope.analyses.downstream`) and hardening (:mod:`patternscope.analyses.hardening`) run on it.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Batch:
    """Where a step is: ``epoch`` and ``number`` (the batch within the epoch, both 0-based) and
    ``indices``, the positions of its examples in the training set (a CPU long tensor)."""

    epoch: int
    number: int
    indices: torch.Tensor


def train_epochs(
    optimizer: torch.optim.Optimizer,
    loss_of: Callable[[Batch], torch.Tensor],
    n: int,
    batch_size: int,
    epochs: Iterable[int],
    generator: torch.Generator | Callable[[int], torch.Generator],
    *,
    start_batch: int = 0,
    before_step: Callable[[Batch, torch.Tensor], None] | None = None,
    after_step: Callable[[Batch, torch.Tensor], None] | None = None,
    after_epoch: Callable[[int], None] | None = None,
) -> None:
    """Train over ``epochs`` (epoch numbers, e.g. ``range(10)`` or a progress bar over one) of ``n``
    examples in batches of ``batch_size`` (the last one may be smaller).

    Each epoch's order is ``torch.randperm(n)`` drawn from ``generator``, a CPU generator shared by every
    epoch (and by the caller's own draws in between), or from ``generator(epoch)``, one for that epoch alone.
    For each batch: ``loss = loss_of(batch)``, ``optimizer.zero_grad(set_to_none=True)``,
    ``loss.backward()`` (those three with gradients enabled, even inside ``torch.no_grad()``), then
    ``before_step(batch, loss)``, ``optimizer.step()`` and ``after_step(batch, loss)``; after an epoch's
    last batch, ``after_epoch(epoch)``. The first epoch starts at batch ``start_batch`` (a resumed run;
    its order is drawn as usual). An exception (Ctrl-C included) propagates at once, so a caller that
    checkpoints knows the last finished position from its own hooks.
    """
    n_batches = math.ceil(n / batch_size)
    first = start_batch
    for epoch in epochs:
        gen = generator if isinstance(generator, torch.Generator) else generator(epoch)
        order = torch.randperm(n, generator=gen)
        for number in range(first, n_batches):
            batch = Batch(epoch, number, order[number * batch_size : (number + 1) * batch_size])
            with torch.enable_grad():
                loss = loss_of(batch)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
            if before_step is not None:
                before_step(batch, loss)
            optimizer.step()
            if after_step is not None:
                after_step(batch, loss)
        first = 0
        if after_epoch is not None:
            after_epoch(epoch)


__all__ = ["Batch", "train_epochs"]
