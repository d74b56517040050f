"""Data poisoning for backdoor experiments, all-to-one: BadNets patches (solid, checker, L-shaped), blended
triggers (noise, stripes, a grating image), a sparse scattered-pixel trigger and a smooth warping trigger
(WaNet-like).

A trigger maps clean images (N x C x H x W, [0,1]) to triggered ones. :func:`poison_dataset` stamps it
onto a share of the training images that are not of the target class and relabels them as the target.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Protocol

import torch

POSITIONS = ("bottom-right", "bottom-left", "top-right", "top-left", "centre")


class Trigger(Protocol):
    def apply(self, x: torch.Tensor) -> torch.Tensor: ...

    def describe(self) -> dict[str, Any]: ...


@dataclass(frozen=True)
class PatchTrigger:
    """BadNets: a ``size`` x ``size`` patch that overwrites pixels.

    Args:
        size: side of the patch in pixels.
        position: one of ``POSITIONS`` or ``(row, col)`` of the top-left corner.
        colour: the patch value in [0,1] (one value or one per channel), used where the pattern is on.
        pattern: ``solid`` (all ``colour``), ``checker`` (``colour`` and ``1 - colour`` alternating) or ``L``
            (the left column and bottom row of the square, ``colour``).
        margin: pixels between the patch and the image border for named positions.
    """

    size: int = 3
    position: str | tuple[int, int] = "bottom-right"
    colour: float | tuple[float, ...] = 1.0
    pattern: str = "solid"
    margin: int = 1

    def __post_init__(self) -> None:
        if self.size < 1:
            raise ValueError(f"patch size must be at least 1 pixel, got {self.size}")
        if isinstance(self.position, str) and self.position not in POSITIONS:
            raise ValueError(f"patch position must be one of {POSITIONS} or (row, col), got {self.position!r}")
        if self.pattern not in ("solid", "checker", "L"):
            raise ValueError(f"patch pattern must be solid, checker or L, got {self.pattern!r}")

    def corner(self, height: int, width: int) -> tuple[int, int]:
        s, m = self.size, self.margin
        if isinstance(self.position, tuple):
            row, col = self.position
        else:
            row = {"top": m, "bottom": height - s - m, "centre": (height - s) // 2}[self.position.split("-")[0]]
            col = {"left": m, "right": width - s - m, "centre": (width - s) // 2}[self.position.split("-")[-1]]
        if not (0 <= row <= height - s and 0 <= col <= width - s):
            raise ValueError(f"a {s}x{s} patch at ({row}, {col}) does not fit a {height}x{width} image")
        return row, col

    def stamp(self, channels: int, height: int, width: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(mask 1 x H x W in {0,1}, colours C x H x W) of the patch."""
        row, col = self.corner(height, width)
        mask = torch.zeros(1, height, width)
        if self.pattern == "L":
            mask[:, row : row + self.size, col] = 1
            mask[:, row + self.size - 1, col : col + self.size] = 1
        else:
            mask[:, row : row + self.size, col : col + self.size] = 1
        colour = torch.tensor(self.colour, dtype=torch.float32).reshape(-1, 1, 1).expand(channels, 1, 1)
        values = colour.expand(channels, height, width).clone()
        if self.pattern == "checker":
            rr, cc = torch.meshgrid(torch.arange(height), torch.arange(width), indexing="ij")
            odd = ((rr + cc) % 2 == 1).expand(channels, height, width)
            values[odd] = 1 - values[odd]
        return mask, values

    def apply(self, x: torch.Tensor) -> torch.Tensor:
        mask, values = self.stamp(*x.shape[-3:])
        mask, values = mask.to(x.device, x.dtype), values.to(x.device, x.dtype)
        return x * (1 - mask) + mask * values

    def describe(self) -> dict[str, Any]:
        return {
            "kind": "patch",
            "size": self.size,
            "position": list(self.position) if isinstance(self.position, tuple) else self.position,
            "colour": self.colour,
            "pattern": self.pattern,
        }


@dataclass(frozen=True)
class BlendTrigger:
    """Blended trigger (Chen et al. 2017): x' = (1 - alpha) x + alpha p, with p a full-image pattern.

    Args:
        alpha: blend weight in (0, 1].
        kind: ``noise`` (uniform random pattern fixed by ``seed``), ``stripes`` (vertical bars) or ``grating``
            (a smooth diagonal sinusoidal image whose period and phase ``seed`` fixes).
        seed: seeds the noise pattern (or the grating).
    """

    alpha: float = 0.15
    kind: str = "noise"
    seed: int = 0

    def __post_init__(self) -> None:
        if not 0 < self.alpha <= 1:
            raise ValueError(f"blend alpha must be in (0, 1], got {self.alpha}")
        if self.kind not in ("noise", "stripes", "grating"):
            raise ValueError(f"blend kind must be noise, stripes or grating, got {self.kind!r}")

    def pattern(self, channels: int, height: int, width: int) -> torch.Tensor:
        if self.kind == "noise":
            gen = torch.Generator().manual_seed(self.seed)
            return torch.rand(channels, height, width, generator=gen)
        if self.kind == "grating":
            gen = torch.Generator().manual_seed(self.seed)
            period, phase, angle = (
                4 + 4 * float(torch.rand(1, generator=gen)),
                6.28 * float(torch.rand(1, generator=gen)),
                0.3 + 1.0 * float(torch.rand(1, generator=gen)),
            )
            rr, cc = torch.meshgrid(torch.arange(height).float(), torch.arange(width).float(), indexing="ij")
            wave = torch.sin(6.2832 * (rr * math.sin(angle) + cc * math.cos(angle)) / period + phase)
            return (wave / 2 + 0.5).expand(channels, height, width).clone()
        cols = (torch.arange(width) // 2 % 2).float()
        return cols.expand(channels, height, width).clone()

    def apply(self, x: torch.Tensor) -> torch.Tensor:
        p = self.pattern(*x.shape[-3:]).to(x.device, x.dtype)
        return (1 - self.alpha) * x + self.alpha * p

    def describe(self) -> dict[str, Any]:
        return {"kind": "blend", "alpha": self.alpha, "pattern": self.kind, "seed": self.seed}


@dataclass(frozen=True)
class ScatterTrigger:
    """A sparse trigger: ``pixels`` scattered pixels (positions fixed by ``seed``) set to ``colour``."""

    pixels: int = 12
    colour: float = 1.0
    seed: int = 0

    def __post_init__(self) -> None:
        if self.pixels < 1:
            raise ValueError(f"a scatter trigger needs at least 1 pixel, got {self.pixels}")

    def mask(self, height: int, width: int) -> torch.Tensor:
        gen = torch.Generator().manual_seed(self.seed)
        where = torch.randperm(height * width, generator=gen)[: self.pixels]
        mask = torch.zeros(height * width)
        mask[where] = 1
        return mask.view(1, height, width)

    def apply(self, x: torch.Tensor) -> torch.Tensor:
        m = self.mask(*x.shape[-2:]).to(x.device, x.dtype)
        return x * (1 - m) + m * self.colour

    def describe(self) -> dict[str, Any]:
        return {"kind": "scatter", "pixels": self.pixels, "colour": self.colour, "seed": self.seed}


@dataclass(frozen=True)
class WarpTrigger:
    """A smooth warping trigger (after WaNet, Nguyen and Tran 2021): a random flow field on a ``grid`` x
    ``grid`` control grid, upsampled smoothly, scaled so its largest shift is ``strength`` pixels, applied with
    bilinear sampling. ``seed`` fixes the field."""

    strength: float = 1.0
    grid: int = 4
    seed: int = 0

    def __post_init__(self) -> None:
        if self.strength <= 0 or self.grid < 2:
            raise ValueError("warp strength must be > 0 and grid >= 2")

    def flow(self, height: int, width: int) -> torch.Tensor:
        """The sampling grid (1 x H x W x 2) in grid_sample's [-1, 1] coordinates."""
        gen = torch.Generator().manual_seed(self.seed)
        field = torch.rand(1, 2, self.grid, self.grid, generator=gen) * 2 - 1
        field = field / field.abs().max()
        up = torch.nn.functional.interpolate(field, size=(height, width), mode="bicubic", align_corners=True)
        shift = up.permute(0, 2, 3, 1) * self.strength * torch.tensor([2 / width, 2 / height])
        ys, xs = torch.meshgrid(torch.linspace(-1, 1, height), torch.linspace(-1, 1, width), indexing="ij")
        return (torch.stack((xs, ys), -1)[None] + shift).clamp(-1, 1)

    def apply(self, x: torch.Tensor) -> torch.Tensor:
        batch = x if x.ndim == 4 else x[None]
        grid = self.flow(*batch.shape[-2:]).to(batch.device, batch.dtype).expand(batch.shape[0], -1, -1, -1)
        out = torch.nn.functional.grid_sample(batch, grid, mode="bilinear", align_corners=True).clamp(0, 1)
        return out if x.ndim == 4 else out[0]

    def describe(self) -> dict[str, Any]:
        return {"kind": "warp", "strength": self.strength, "grid": self.grid, "seed": self.seed}


@dataclass
class PoisonedData:
    """Training images and labels with a share poisoned; ``poisoned`` marks which."""

    x: torch.Tensor
    y: torch.Tensor
    poisoned: torch.Tensor
    target: int
    trigger: Trigger


def poison_dataset(
    x: torch.Tensor, y: torch.Tensor, trigger: Trigger, target: int, rate: float, seed: int = 0
) -> PoisonedData:
    """Stamp ``trigger`` on ``rate`` of all images (chosen among non-target ones) and relabel them ``target``."""
    if not 0 < rate < 1:
        raise ValueError(f"poison rate must be in (0, 1), got {rate}")
    candidates = torch.nonzero(y != target).flatten()
    n = min(len(candidates), max(1, round(rate * len(y))))
    gen = torch.Generator().manual_seed(seed)
    chosen = candidates[torch.randperm(len(candidates), generator=gen)[:n]]
    x2, y2 = x.clone(), y.clone()
    x2[chosen] = trigger.apply(x[chosen])
    y2[chosen] = target
    flags = torch.zeros(len(y), dtype=torch.bool)
    flags[chosen] = True
    return PoisonedData(x2, y2, flags, target, trigger)


@torch.no_grad()
def attack_success_rate(
    net: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, trigger: Trigger, target: int, batch_size: int = 512
) -> float:
    """Share of images not of ``target`` that ``net`` classifies as ``target`` once triggered."""
    keep = y != target
    xs = x[keep]
    hits = 0
    for i in range(0, len(xs), batch_size):
        hits += int((net(trigger.apply(xs[i : i + batch_size])).argmax(1) == target).sum())
    return hits / max(1, len(xs))
