"""How visible an additive pattern is: PSNR and SSIM of clip(x + δ, 0, 1) against x, the pattern's norms,
and how much of it sits at the budget or is cut by clipping.

PSNR (dB, data range 1) and SSIM (Gaussian window 11, σ 1.5, data range 1) come from torchmetrics and are
averaged over images; both are measured on at most :data:`MAX_IMAGES` crops of an evaluation, a seeded
sample of its images (class-stratified when labels are known; :func:`~patternscope.data.seeded_sample`), so
their cost stays bounded on large sets (the norms and the saturated share are exact, from δ alone).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

MAX_IMAGES = 512  # crops measured for PSNR / SSIM (a mean of a few hundred images is stable to ~0.1 dB)
SATURATION = 0.99  # |δ| >= 0.99 eps counts as "at the budget" (L∞)
SSIM_IMAGES = 4  # images per SSIM call: its windows hold ~36 MB an image at 224 x 224 (2.4 GB for 64), and
# per-image values in groups of 4 equal those of the whole batch to the bit (1 at a time does not)


def pattern_norms(delta: torch.Tensor, eps: float, norm: str) -> dict[str, float]:
    """The L∞ and L2 norms of δ (pixel units), and for an L∞ budget the share of its values at the
    budget (|δ| >= 0.99 eps)."""
    d = delta.detach().float()
    out = {"linf": float(d.abs().max()) if d.numel() else 0.0, "l2": float(d.norm())}
    if norm == "linf" and eps > 0:
        out["saturated_share"] = float((d.abs() >= SATURATION * eps).float().mean())
    return out


@dataclass
class PerceptibilityMeter:
    """Accumulates PSNR, SSIM and the clipped share of clip(x + δ, 0, 1) vs x over batches (at most
    ``max_images`` images), in O(1) memory. ``sample`` says how the images it is given were chosen (e.g.
    ``seed``, ``stratified``, ``of``); :meth:`summary` reports it as ``sample_*``."""

    max_images: int = MAX_IMAGES
    sample: dict[str, Any] = field(default_factory=dict)
    n: int = 0
    psnr_sum: float = 0.0
    psnr_min: float = float("inf")
    ssim_sum: float = 0.0
    clipped: float = 0.0
    values: float = 0.0

    @torch.no_grad()
    def update(self, x: torch.Tensor, delta: torch.Tensor) -> None:
        """Add a batch ``x`` (N x C x H x W in [0,1]) perturbed by ``delta`` (C x H x W)."""
        room = self.max_images - self.n
        if room <= 0:
            return
        from torchmetrics.functional.image import peak_signal_noise_ratio, structural_similarity_index_measure

        x = x[:room].float()
        raw = x + delta.to(x.device, torch.float32)
        y = raw.clamp(0, 1)
        psnr = peak_signal_noise_ratio(y, x, data_range=1.0, reduction="none", dim=(1, 2, 3))
        psnr = torch.nan_to_num(psnr, posinf=100.0)  # an unchanged image: cap at 100 dB
        side = min(x.shape[-2:])
        kernel = 11 if side >= 11 else (side if side % 2 else side - 1)
        parts = [
            structural_similarity_index_measure(
                y[i : i + SSIM_IMAGES],
                x[i : i + SSIM_IMAGES],
                data_range=1.0,
                reduction="none",
                kernel_size=kernel,
                sigma=1.5 * kernel / 11,
            )
            for i in range(0, x.shape[0], SSIM_IMAGES)
        ]
        ssim = torch.cat([p.reshape(-1) for p in parts if isinstance(p, torch.Tensor)])
        self.n += x.shape[0]
        self.psnr_sum += float(psnr.sum())
        self.psnr_min = min(self.psnr_min, float(psnr.min()))
        self.ssim_sum += float(ssim.sum())
        self.clipped += float((raw != y).sum())
        self.values += raw.numel()

    def summary(self) -> dict[str, Any]:
        """Mean PSNR (dB), lowest PSNR, mean SSIM, share of x + δ values clipped to [0,1], n, and the sample."""
        drawn = {f"sample_{k}": v for k, v in self.sample.items()}
        if self.n == 0:
            return {"n_images": 0, **drawn}
        return {
            "psnr_db": self.psnr_sum / self.n,
            "psnr_db_min": self.psnr_min,
            "ssim": self.ssim_sum / self.n,
            "clipped_share": self.clipped / self.values,
            "n_images": self.n,
            **drawn,
        }


def perceptibility(
    delta: torch.Tensor, eps: float, norm: str, meter: PerceptibilityMeter | None = None
) -> dict[str, Any]:
    """Every perceptibility number of a pattern: its norms (and saturated share), plus the image
    measures of ``meter`` when given."""
    out: dict[str, Any] = pattern_norms(delta, eps, norm)
    if meter is not None:
        out.update(meter.summary())
    return out
