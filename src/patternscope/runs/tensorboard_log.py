"""``--tensorboard``: a run's searches and results as TensorBoard events, for researchers who follow runs there.

Each search writes ``<tag>/loss`` and ``<tag>/lr`` at every step and ``<tag>/pattern`` (the pattern scaled to
[0,1]: mid-grey is zero, black and white are ∓ε) every ``every`` steps and at the end; each result writes its
metrics (``<tag>/fooling_ratio``, ``<tag>/agreement``, ...) once. Events go into ``RUN/tensorboard/``: point
``tensorboard --logdir RUN/tensorboard`` at it. It needs the ``tensorboard`` package (``pip install
patternscope[tensorboard]``); without it the option is refused before any work.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from ..errors import PatternError
from ..methods.find import StepMonitor

TENSORBOARD_DIR = "tensorboard"
TENSORBOARD_HELP = (
    "also write TensorBoard events (loss, learning rate, the pattern, final metrics) into OUT/tensorboard"
)


def check_tensorboard() -> None:
    """Refuse ``--tensorboard`` in one line when the ``tensorboard`` package is missing."""
    try:
        from torch.utils.tensorboard import SummaryWriter  # noqa: F401
    except ImportError:
        raise PatternError(
            "--tensorboard needs the tensorboard package: pip install 'patternscope[tensorboard]' (or tensorboard)"
        ) from None


class TensorBoardLog:
    """TensorBoard events of a run folder (see the module docstring); a context manager that flushes on exit."""

    def __init__(self, out: str | Path, every: int = 25) -> None:
        check_tensorboard()
        from torch.utils.tensorboard import SummaryWriter

        self.folder = Path(out) / TENSORBOARD_DIR
        self.writer = SummaryWriter(log_dir=str(self.folder))
        self.every = max(1, int(every))

    def monitor(self, tag: str, eps: float | None) -> StepMonitor:
        """A search's step monitor (``find_pattern(..., monitor=...)``, ``find_classwise_pattern``'s) writing under
        ``tag``; ``eps`` scales an additive pattern, None takes the image as it is (a class-wise stamp)."""

        def step(n: int, loss: float, lr: float, delta: torch.Tensor) -> None:
            self.writer.add_scalar(f"{tag}/loss", loss, n)
            self.writer.add_scalar(f"{tag}/lr", lr, n)
            if n % self.every == 0 or n == 1:
                self.pattern(tag, delta, eps, n)

        return step

    def pattern(self, tag: str, delta: torch.Tensor, eps: float | None, step: int) -> None:
        """The pattern as an image (C x H x W): an additive one with zero mid-grey and ∓``eps`` black and white;
        with ``eps`` None, the image as it is, in [0,1]."""
        image = delta.detach().float().cpu()
        image = (image / (2 * eps) + 0.5 if eps is not None else image).clamp(0, 1)
        self.writer.add_image(f"{tag}/pattern", image, step)

    def metrics(self, tag: str, values: dict[str, Any], step: int = 0) -> None:
        """A result's numbers (those that are numbers) under ``tag``."""
        for key, value in values.items():
            if isinstance(value, int | float) and not isinstance(value, bool):
                self.writer.add_scalar(f"{tag}/{key}", float(value), step)

    def close(self) -> None:
        self.writer.flush()
        self.writer.close()

    def __enter__(self) -> TensorBoardLog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
