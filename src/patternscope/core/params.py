"""Parametrisations: the tensors a search optimises and how each is projected back into its constraint set.

Every pattern the loop in :mod:`patternscope.core.search` searches is one of these (pixel space [0,1]):

- :class:`AdditiveParam`: an additive δ in an L∞ or L2 ball (dominant patterns and the UAP baselines);
- :class:`RescalingParam`: an additive δ that is halved now and then (FFF, GD-UAP);
- :class:`MaskCanvasParam`: a mask over a canvas image, the canvas optionally learned (class-wise patterns);
- :class:`TanhMaskParam`: a mask and free content in tanh space (Neural Cleanse).

Each has ``tensors()`` (the named leaf tensors the optimiser steps; checkpoints save them) and
``project_()`` (called after every step).
"""

from __future__ import annotations

import torch

from ..errors import PatternError
from .patterns import NORMS, project


class AdditiveParam:
    """The search-time form of an additive pattern: one leaf tensor δ, projected onto its ball.

    ``init``: ``zeros`` (the dominant-pattern default) or ``uniform`` (U(-eps, eps), L∞ only).
    """

    def __init__(
        self,
        shape: tuple[int, int, int],
        eps: float,
        norm: str = "linf",
        device: str | torch.device = "cpu",
        init: str = "zeros",
        seed: int = 0,
    ) -> None:
        if norm not in NORMS:
            raise PatternError(f"norm must be one of {NORMS}, got {norm!r}")
        self.eps, self.norm = eps, norm
        if init == "zeros":
            delta = torch.zeros(shape)
        elif init == "uniform":
            gen = torch.Generator().manual_seed(seed)
            delta = (torch.rand(shape, generator=gen) * 2 - 1) * eps
        else:
            raise PatternError(f"init must be zeros or uniform, got {init!r}")
        self.delta = delta.to(device).requires_grad_(True)

    def tensors(self) -> dict[str, torch.Tensor]:
        return {"delta": self.delta}

    def project_(self) -> None:
        project(self.delta.data, self.eps, self.norm)


class RescalingParam(AdditiveParam):
    """An additive δ that is halved now and then, as in FFF and GD-UAP (Mopuri et al. 2017, 2018).

    ``rule="every"``: halve every ``every`` steps (FFF). ``rule="saturation"``: halve when more than
    ``threshold`` of δ's entries sit at ±eps and that share changed by less than ``min_change`` since the
    previous step (GD-UAP). :meth:`tick` must be called once per step (the recipe's objective does);
    the counters live in a tensor so checkpoints carry them and a resumed search rescales exactly as an
    uninterrupted one.
    """

    def __init__(
        self,
        shape: tuple[int, int, int],
        eps: float,
        norm: str = "linf",
        device: str | torch.device = "cpu",
        init: str = "uniform",
        seed: int = 0,
        rule: str = "saturation",
        every: int = 300,
        threshold: float = 0.5,
        min_change: float = 1e-5,
    ) -> None:
        super().__init__(shape, eps, norm, device, init, seed)
        if rule not in ("every", "saturation"):
            raise PatternError(f"rescale rule must be every or saturation, got {rule!r}")
        self.rule, self.every, self.threshold, self.min_change = rule, every, threshold, min_change
        # steps taken, steps already checked, last saturation, halvings so far
        self.state = torch.zeros(4, dtype=torch.float64, device=device)
        self._ticked = False

    def tensors(self) -> dict[str, torch.Tensor]:
        return {"delta": self.delta, "rescale_state": self.state}

    def tick(self) -> None:
        """Mark a step as started; it is counted when it completes (:meth:`project_`), so a step aborted
        mid-way (Ctrl-C) leaves no trace in the checkpoint."""
        self._ticked = True

    def saturation(self) -> float:
        return float((self.delta.detach().abs() >= self.eps * (1 - 1e-4)).float().mean())

    def project_(self) -> None:
        super().project_()
        if not self._ticked:  # no step since the last check (loop start, resume)
            return
        self._ticked = False
        self.state[0] += 1
        self.state[1] = self.state[0]
        sat = self.saturation()
        if self.rule == "every":
            halve = int(self.state[0]) % self.every == 0
        else:
            halve = sat > self.threshold and abs(sat - float(self.state[2])) < self.min_change
        if halve:
            self.delta.data.mul_(0.5)
            self.state[3] += 1
            sat = self.saturation()
        self.state[2] = sat


class MaskCanvasParam:
    """Class-wise patterns' parametrisation: a mask 1 x H x W in [0,1] over a canvas C x H x W (a leaf, and
    stepped, only when ``learn_canvas``); both clamped to [0,1]."""

    def __init__(self, canvas: torch.Tensor, mask_init: float, learn_canvas: bool, device: torch.device) -> None:
        _, h, w = canvas.shape
        self.mask = torch.full((1, h, w), float(mask_init), device=device, requires_grad=True)
        self.canvas = canvas.detach().clone().float().to(device).requires_grad_(learn_canvas)
        self.learn_canvas = learn_canvas

    def tensors(self) -> dict[str, torch.Tensor]:
        out = {"mask": self.mask}
        if self.learn_canvas:
            out["canvas"] = self.canvas
        return out

    @torch.no_grad()
    def project_(self) -> None:
        self.mask.clamp_(0, 1)
        self.canvas.clamp_(0, 1)


class TanhMaskParam:
    """Neural Cleanse's parametrisation: a mask (1 x H x W) and a pattern (C x H x W), both in tanh space
    so that ``mask()`` and ``pattern()`` stay in [0,1] without projection; raw values start U(-2, 2)."""

    def __init__(self, shape: tuple[int, int, int], gen: torch.Generator, device: torch.device) -> None:
        c, h, w = shape
        self.mask_raw = (torch.rand(1, h, w, generator=gen) * 4 - 2).to(device).requires_grad_(True)
        self.pattern_raw = (torch.rand(c, h, w, generator=gen) * 4 - 2).to(device).requires_grad_(True)

    def tensors(self) -> dict[str, torch.Tensor]:
        return {"mask_raw": self.mask_raw, "pattern_raw": self.pattern_raw}

    def project_(self) -> None:  # tanh keeps both in [0,1]; nothing to project
        return None

    def mask(self) -> torch.Tensor:
        return torch.tanh(self.mask_raw) / 2 + 0.5

    def pattern(self) -> torch.Tensor:
        return torch.tanh(self.pattern_raw) / 2 + 0.5
