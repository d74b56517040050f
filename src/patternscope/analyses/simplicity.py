"""How simple a class-wise pattern is (Zhao et al.: adversarially trained models learn simplified shape
patterns), and how it differs from a standard saliency map of its canvas.

Simplicity of a stamp (the top-k mask and its colours), four measures, all lower = simpler:

- ``components``: connected parts of the mask (8-connectivity);
- ``boundary_ratio``: boundary length / area, the mask's pixel edges that face a pixel outside it
  (4-neighbourhood; the image border counts as outside) per mask pixel: 4 for scattered single pixels,
  about 4/sqrt(k) for one compact square;
- ``compressed_bytes``: zlib size (level 9) of the stamp drawn on grey as 8-bit pixels;
- ``total_variation``: mean absolute difference between 4-neighbouring pixels of that drawing ([0,1] units).

Saliency: gradient x input of the canvas for the target class's logit (normalisation inside the model),
summed in absolute value over channels; ``saliency_overlap`` is the IoU of its top-k pixels with the
pattern's top-k mask (1: the two point at the same pixels).
"""

from __future__ import annotations

import zlib
from typing import Any

import numpy as np
import torch
from scipy import ndimage

from ..core.classifier import Classifier
from ..core.patterns import ClasswisePattern, top_k_mask

MEASURES = ("components", "boundary_ratio", "compressed_bytes", "total_variation")


def mask_components(mask: torch.Tensor) -> int:
    """Connected parts (8-connectivity) of a 1 x H x W (or H x W) {0,1} mask."""
    m = mask.detach().cpu().reshape(mask.shape[-2:]).numpy() > 0.5
    _, count = ndimage.label(m, structure=np.ones((3, 3), dtype=int))
    return int(count)


def boundary_ratio(mask: torch.Tensor) -> float:
    """Mask pixel edges facing outside (4-neighbourhood, border = outside) per mask pixel (0 for an empty mask)."""
    m = mask.detach().cpu().reshape(mask.shape[-2:]).float()
    area = float(m.sum())
    if area == 0:
        return 0.0
    padded = torch.nn.functional.pad(m, (1, 1, 1, 1))
    edges = (padded[1:-1, 1:-1] - padded[:-2, 1:-1]).abs() + (padded[1:-1, 1:-1] - padded[2:, 1:-1]).abs()
    edges += (padded[1:-1, 1:-1] - padded[1:-1, :-2]).abs() + (padded[1:-1, 1:-1] - padded[1:-1, 2:]).abs()
    return float((edges * m).sum()) / area


def drawing_measures(image: torch.Tensor) -> dict[str, float]:
    """zlib size of a C x H x W image in [0,1] as 8-bit pixels, and its mean 4-neighbour total variation."""
    x = image.detach().cpu().float().clamp(0, 1)
    pixels = (x * 255).round().to(torch.uint8).numpy().tobytes()
    tv = torch.cat([(x[:, 1:] - x[:, :-1]).abs().flatten(), (x[:, :, 1:] - x[:, :, :-1]).abs().flatten()])
    return {"compressed_bytes": float(len(zlib.compress(pixels, 9))), "total_variation": float(tv.mean())}


def pattern_simplicity(pattern: ClasswisePattern) -> dict[str, float]:
    """The four simplicity measures of a class-wise pattern (see the module docstring)."""
    return {
        "components": float(mask_components(pattern.mask)),
        "boundary_ratio": boundary_ratio(pattern.mask),
        **drawing_measures(pattern.visible()),
    }


def gradient_x_input(model: Classifier, image: torch.Tensor, target: int) -> torch.Tensor:
    """Gradient x input saliency of ``image`` (C x H x W in [0,1]) for class ``target``: H x W, >= 0."""
    x = image.detach()[None].to(model.device, torch.float32).requires_grad_(True)
    with torch.enable_grad():
        logit = model(x)[0, target]
        (grad,) = torch.autograd.grad(logit, x)
    return (grad * x).detach()[0].abs().sum(0).cpu()


def saliency_overlap(saliency: torch.Tensor, pattern: ClasswisePattern) -> float:
    """IoU of the top-k pixels of ``saliency`` (H x W) with the pattern's top-k mask (k = the pattern's)."""
    k = pattern.k
    if k == 0:
        return 0.0
    top = top_k_mask(saliency[None], k).bool().cpu()
    mask = pattern.mask.bool().cpu()
    union = int((top | mask).sum())
    return int((top & mask).sum()) / union if union else 0.0


def compare_settings(rows: dict[str, list[dict[str, float]]]) -> dict[str, dict[str, Any]]:
    """Per setting (e.g. natural / backdoored / adversarially trained), the mean and median of every
    simplicity measure over its classes' patterns (``rows[setting]`` = one dict per class)."""
    out: dict[str, dict[str, Any]] = {}
    for setting, per_class in rows.items():
        summary: dict[str, Any] = {"patterns": len(per_class)}
        for m in MEASURES:
            values = torch.tensor([r[m] for r in per_class], dtype=torch.float64)
            summary[m] = {"mean": float(values.mean()), "median": float(values.median())} if len(values) else {}
        out[setting] = summary
    return out
