"""Data-free proxy images: jigsaw images (irregular grids of flat random colours) and noise."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from ..errors import DataError

PROXY_NAMES = ("jigsaw", "gaussian", "uniform")


def jigsaw_images(n: int, size: Sequence[int], generator: torch.Generator) -> torch.Tensor:
    """``n`` artificial jigsaw images (C x H x W in [0,1]): irregular grids of flat random colours.

    Each image gets 2-16 cells per side at random cut points, every cell one uniform random colour.
    """
    c, h, w = (int(v) for v in size)
    out = torch.empty(n, c, h, w)
    for i in range(n):
        rows = int(torch.randint(2, 17, (1,), generator=generator))
        cols = int(torch.randint(2, 17, (1,), generator=generator))
        row_cuts = _cuts(h, rows, generator)
        col_cuts = _cuts(w, cols, generator)
        colours = torch.rand(c, rows, cols, generator=generator)
        out[i] = colours[:, row_cuts][:, :, col_cuts]
    return out


def _cuts(length: int, parts: int, generator: torch.Generator) -> torch.Tensor:
    """For each of ``length`` pixels, the index of its cell among ``parts`` random-width cells."""
    points = torch.sort(torch.randperm(length - 1, generator=generator)[: parts - 1] + 1).values
    return torch.bucketize(torch.arange(length), points, right=True)


def noise_images(kind: str, n: int, size: Sequence[int], generator: torch.Generator) -> torch.Tensor:
    """``gaussian`` (mean 0.5, std 0.25, clipped) or ``uniform`` ([0,1]) noise images."""
    shape = (n, *(int(v) for v in size))
    if kind == "gaussian":
        return (0.5 + 0.25 * torch.randn(shape, generator=generator)).clamp_(0, 1)
    if kind == "uniform":
        return torch.rand(shape, generator=generator)
    raise DataError(f"unknown noise kind {kind!r}; use gaussian or uniform")
