"""Additive patterns: a C x H x W perturbation δ in an L∞ or L2 ball, in [0,1] pixel space.

A :class:`Pattern` applies as clip(x + δ, 0, 1), projects onto its budget, and saves as
``pattern.safetensors`` (the tensor, with its metadata embedded) + ``pattern.json`` (the metadata) +
``pattern.png`` (δ rescaled to be visible).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from datetime import UTC, datetime
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from ._io import atomic_path, write_json
from ._version import __version__
from .errors import PatternError

NORMS = ("linf", "l2")


def parse_eps(value: str | float, norm: str = "linf") -> float:
    """Parse a budget such as ``10/255``, ``0.0392`` or ``4`` (L2), with checks for common mistakes.

    For L∞ the budget is in [0,1] pixel units: a value above 1 is almost always 0-255 units by mistake
    and is refused with a hint. Must be positive.
    """
    if norm not in NORMS:
        raise PatternError(f"norm must be one of {NORMS}, got {norm!r}")
    try:
        eps = float(Fraction(str(value).strip())) if not isinstance(value, float) else float(value)
    except (ValueError, ZeroDivisionError):
        raise PatternError(f"cannot read eps {value!r}; write it like 10/255 or 0.0392") from None
    if not math.isfinite(eps) or eps <= 0:
        raise PatternError(f"eps must be positive, got {value!r}")
    if norm == "linf" and eps > 1:
        raise PatternError(
            f"eps={value} is larger than the whole [0,1] pixel range; it looks like 0-255 units. "
            f"Did you mean {value}/255 (= {eps / 255:.4f})?"
        )
    return eps


def project(delta: torch.Tensor, eps: float, norm: str = "linf") -> torch.Tensor:
    """Project ``delta`` onto the ball ||δ|| <= eps (in place) and return it."""
    with torch.no_grad():
        if norm == "linf":
            delta.clamp_(-eps, eps)
        elif norm == "l2":
            size = delta.norm(p=2)
            if size > eps:
                delta.mul_(eps / size)
        else:
            raise PatternError(f"norm must be one of {NORMS}, got {norm!r}")
    return delta


@dataclass
class Pattern:
    """A universal additive pattern δ (C x H x W) with budget ``eps`` in ``norm``, pixel space [0,1].

    ``meta`` records how it was made: method, model spec, eps, norm, steps, seed, data, version, ...
    """

    delta: torch.Tensor
    eps: float
    norm: str = "linf"
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.delta.ndim != 3:
            raise PatternError(f"a pattern is C x H x W; got shape {tuple(self.delta.shape)}")
        if self.norm not in NORMS:
            raise PatternError(f"norm must be one of {NORMS}, got {self.norm!r}")
        self.delta = self.delta.detach().float()

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(self.delta.shape)  # type: ignore[return-value]

    def apply(self, x: torch.Tensor) -> torch.Tensor:
        """clip(x + δ, 0, 1) for a batch (N x C x H x W) or one image (C x H x W) in [0,1]."""
        if tuple(x.shape[-3:]) != self.shape:
            raise PatternError(
                f"pattern of shape {self.shape} cannot be added to images of shape {tuple(x.shape[-3:])}; "
                "it was made for a model with another input size"
            )
        return (x + self.delta.to(device=x.device, dtype=x.dtype)).clamp(0, 1)

    def project_(self) -> Pattern:
        project(self.delta, self.eps, self.norm)
        return self

    def size(self) -> float:
        """The pattern's norm (L∞ or L2, as its budget)."""
        return float(self.delta.abs().max() if self.norm == "linf" else self.delta.norm(p=2))

    def check_fits(self, input_size: tuple[int, ...]) -> None:
        """Raise :class:`PatternError` unless the pattern fits a model with ``input_size`` (C, H, W)."""
        if tuple(input_size) != self.shape:
            made = self.meta.get("model", "another model")
            raise PatternError(
                f"the pattern is {self.shape} (made for {made}) but the model takes {tuple(input_size)}; "
                "search a new pattern for this model"
            )

    def visible(self) -> torch.Tensor:
        """δ rescaled to [0,1] for viewing: 0.5 is zero, 0 and 1 are -max|δ| and +max|δ|."""
        top = float(self.delta.abs().max()) or 1.0
        return (self.delta / (2 * top) + 0.5).clamp(0, 1)

    # -- persistence ---------------------------------------------------------------------------------
    def metadata(self) -> dict[str, Any]:
        meta = {
            "format": "patternscope.pattern/1",
            "kind": "additive",
            "eps": self.eps,
            "norm": self.norm,
            "shape": list(self.shape),
            "patternscope_version": __version__,
            "created": datetime.now(UTC).isoformat(timespec="seconds"),
        }
        meta.update(self.meta)
        return meta

    def save(self, folder: str | Path, extra_tensors: dict[str, torch.Tensor] | None = None) -> Path:
        """Write ``pattern.safetensors``, ``pattern.json`` and ``pattern.png`` into ``folder`` atomically."""
        from safetensors.torch import save_file

        out = Path(folder)
        meta = self.metadata()
        tensors = {"delta": self.delta.contiguous().cpu()}
        for key, value in (extra_tensors or {}).items():
            tensors[key] = value.detach().float().contiguous().cpu()
        with atomic_path(out / "pattern.safetensors") as tmp:
            save_file(tensors, str(tmp), metadata={"patternscope": json.dumps(meta)})
        write_json(out / "pattern.json", meta)
        with atomic_path(out / "pattern.png") as tmp:
            to_pil(self.visible(), min_side=224).save(tmp, format="PNG")
        return out

    @classmethod
    def load(cls, path: str | Path) -> Pattern:
        """Load from a run folder or a ``.safetensors`` file written by :meth:`save`."""
        from safetensors import SafetensorError, safe_open

        p = Path(path)
        if p.is_dir():
            p = p / "pattern.safetensors"
        if not p.is_file():
            raise PatternError(f"no pattern at {str(path)!r} (expected a run folder or a pattern.safetensors file)")
        try:
            with safe_open(str(p), framework="pt") as fh:
                meta = json.loads((fh.metadata() or {}).get("patternscope", "{}"))
                delta = fh.get_tensor("delta")
        except (SafetensorError, OSError, ValueError, json.JSONDecodeError) as exc:
            raise PatternError(f"{str(p)!r} is not a readable pattern file ({exc})") from None
        if meta.get("kind", "additive") != "additive" or "eps" not in meta:
            raise PatternError(f"{str(p)!r} is not an additive patternscope pattern")
        known = {"format", "kind", "eps", "norm", "shape"}
        rest = {k: v for k, v in meta.items() if k not in known}
        return cls(delta, float(meta["eps"]), meta.get("norm", "linf"), rest)


def to_pil(image: torch.Tensor, min_side: int = 0) -> Image.Image:
    """A C x H x W tensor in [0,1] as a PIL image, upscaled (nearest) so its shorter side is >= min_side."""
    array = (image.detach().float().cpu().clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()
    pil = Image.fromarray(array[..., 0] if array.shape[2] == 1 else np.ascontiguousarray(array))
    shorter = min(pil.size)
    if min_side and shorter < min_side:
        factor = math.ceil(min_side / shorter)
        pil = pil.resize((pil.size[0] * factor, pil.size[1] * factor), Image.NEAREST)
    return pil


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

    def tensors(self) -> dict[str, torch.Tensor]:
        return {"delta": self.delta, "rescale_state": self.state}

    def tick(self) -> None:
        self.state[0] += 1

    def saturation(self) -> float:
        return float((self.delta.detach().abs() >= self.eps * (1 - 1e-4)).float().mean())

    def project_(self) -> None:
        super().project_()
        if self.state[0] <= self.state[1]:  # no step since the last check (loop start, resume)
            return
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
