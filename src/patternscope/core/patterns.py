"""Patterns in [0,1] pixel space, and their files.

- :class:`Pattern`: an additive C x H x W perturbation δ in an L∞ or L2 ball; applies as
  clip(x + δ, 0, 1) and projects onto its budget.
- :class:`ClasswisePattern`: a stamp (a {0,1} mask and colours) that overwrites the pixels it covers.

Both save as ``pattern.safetensors`` (the tensors, with their metadata embedded) + ``pattern.json`` (the
metadata) + ``pattern.png`` (the pattern made visible), every file written atomically. The metadata holds a
SHA-256 checksum of the tensors (``sha256``), checked on load: a file whose values were changed after it was
saved is refused (older files have no checksum and load as before). A pattern saved into a run folder carries
the run's id (``run_id``, :mod:`~patternscope.core.run_id`). :meth:`Pattern.load` also measures
the pattern's L∞ and L2 norms and refuses one larger than the budget its metadata declares (beyond
:data:`BUDGET_ATOL` + :data:`BUDGET_RTOL` x eps) unless ``allow_over_budget``.
"""

from __future__ import annotations

import hashlib
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

from .._version import __version__
from ..errors import PatternError
from .atomic import atomic_path, write_json
from .run_id import RUN_ID_KEY, run_id_for

NORMS = ("linf", "l2")
FORMAT = "patternscope.pattern/1"  # the metadata format of every pattern file
CHECKSUM = "sha256"  # the metadata key of the tensors' checksum (see :func:`tensor_checksum`)
# a pattern is over its budget eps when its norm exceeds eps * (1 + BUDGET_RTOL) + BUDGET_ATOL (pixel units):
# room for float rounding of a projected pattern, far below any change that matters (1/255 = 0.0039)
BUDGET_ATOL = 1e-4
BUDGET_RTOL = 1e-3


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
        if self.delta.ndim != 3 or self.delta.numel() == 0:
            raise PatternError(f"a pattern is C x H x W (none of them 0); got shape {tuple(self.delta.shape)}")
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

    @property
    def measured_linf(self) -> float:
        """max |δ| (pixel units), measured on the tensor."""
        return float(self.delta.abs().max()) if self.delta.numel() else 0.0

    @property
    def measured_l2(self) -> float:
        """||δ||₂ (pixel units), measured on the tensor."""
        return float(self.delta.norm(p=2))

    @property
    def over_budget(self) -> bool:
        """Whether δ's norm exceeds its declared budget ``eps`` beyond float rounding (:data:`BUDGET_ATOL`,
        :data:`BUDGET_RTOL`); only :meth:`load` with ``allow_over_budget`` hands out such a pattern."""
        return bool(self.size() > self.eps * (1 + BUDGET_RTOL) + BUDGET_ATOL)

    def budget_text(self) -> str:
        """The measured norm beside the declared budget, L∞ in /255 units:
        ``L∞ 50.0/255 but declares a budget of 10.0/255``."""
        if self.norm == "linf":
            return f"L∞ {self.measured_linf * 255:.1f}/255 but declares a budget of {self.eps * 255:.1f}/255"
        return f"L2 norm {self.measured_l2:.4g} but declares an L2 budget of {self.eps:.4g}"

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
        return {**_header("additive", self.shape, eps=self.eps, norm=self.norm), **self.meta}

    def save(self, folder: str | Path, extra_tensors: dict[str, torch.Tensor] | None = None) -> Path:
        """Write ``pattern.safetensors``, ``pattern.json`` and ``pattern.png`` into ``folder`` atomically."""
        tensors = {"delta": self.delta.contiguous().cpu()}
        for key, value in (extra_tensors or {}).items():
            # a copy: safetensors refuses tensors that share memory (with --keep best, the best δ *is* δ)
            tensors[key] = value.detach().float().contiguous().cpu().clone()
        return _write(Path(folder), "pattern", tensors, self.metadata(), self.visible())

    @classmethod
    def load(cls, path: str | Path, *, allow_over_budget: bool = False) -> Pattern:
        """Load from a run folder or a ``.safetensors`` file written by :meth:`save`.

        Refused with a :class:`PatternError`: a file whose tensors do not match their checksum, values that are
        not finite, and a pattern whose L∞ or L2 norm (as its budget's) exceeds the declared ``eps`` beyond
        float rounding, unless ``allow_over_budget`` (then :attr:`over_budget` is True and every output that
        measures it says so).
        """
        p, meta, tensors = _read(
            path, ("delta",), "pattern", " (expected a run folder or a pattern.safetensors file)", "pattern file"
        )
        if not tensors["delta"].is_floating_point():
            raise PatternError(
                f"{str(p)!r} holds its pattern as {tensors['delta'].dtype}, not as floating-point values"
            )
        if meta.get("kind", "additive") != "additive" or "eps" not in meta:
            raise PatternError(f"{str(p)!r} is not an additive patternscope pattern")
        known = {"format", "kind", "eps", "norm", "shape", CHECKSUM}
        rest = {k: v for k, v in meta.items() if k not in known}
        try:
            eps = float(meta["eps"])
        except (TypeError, ValueError):
            raise PatternError(f"{str(p)!r} declares an unreadable budget eps={meta['eps']!r}") from None
        if not math.isfinite(eps) or eps <= 0:
            raise PatternError(f"{str(p)!r} declares the budget eps={meta['eps']!r}; it must be positive")
        pattern = cls(tensors["delta"], eps, meta.get("norm", "linf"), rest)
        if not torch.isfinite(pattern.delta).all():
            raise PatternError(f"{str(p)!r} holds non-finite values (NaN or infinity); it is not a usable pattern")
        if pattern.over_budget and not allow_over_budget:
            raise PatternError(
                f"{str(p)!r} has {pattern.budget_text()}; its values were changed or it was made with another "
                "budget: pass --allow-over-budget (allow_over_budget=True in Python) to measure it anyway"
            )
        return pattern


def _header(kind: str, shape: tuple[int, ...], **fields: Any) -> dict[str, Any]:
    """The metadata every pattern file starts with: format, kind, the kind's ``fields``, shape, version, time."""
    return {
        "format": FORMAT,
        "kind": kind,
        **fields,
        "shape": list(shape),
        "patternscope_version": __version__,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
    }


def tensor_checksum(tensors: dict[str, torch.Tensor]) -> str:
    """SHA-256 (hex) of the tensors as stored: for each name in sorted order, the name, a NUL byte, and the
    tensor's bytes (C order, as saved)."""
    digest = hashlib.sha256()
    for name in sorted(tensors):
        digest.update(name.encode() + b"\0")
        digest.update(tensors[name].detach().contiguous().cpu().view(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def _write(out: Path, name: str, tensors: dict[str, torch.Tensor], meta: dict[str, Any], visible: torch.Tensor) -> Path:
    """``NAME.safetensors`` (the tensors, ``meta`` with their checksum embedded), ``NAME.json`` and ``NAME.png`` in
    ``out``, atomically. Saved into a run folder, ``meta`` carries the run's id (:mod:`~.run_id`); outside one, none
    (a pattern loaded from a run and saved elsewhere no longer claims that run)."""
    from safetensors.torch import save_file

    meta = {k: v for k, v in meta.items() if k != RUN_ID_KEY}
    run_id = run_id_for(out)
    if run_id is not None:
        meta[RUN_ID_KEY] = run_id
    meta = {**meta, CHECKSUM: tensor_checksum(tensors)}
    with atomic_path(out / f"{name}.safetensors") as tmp:
        save_file(tensors, str(tmp), metadata={"patternscope": json.dumps(meta)})
    write_json(out / f"{name}.json", meta)
    with atomic_path(out / f"{name}.png") as tmp:
        to_pil(visible, min_side=224).save(tmp, format="PNG")
    return out


def _read(
    path: str | Path,
    names: tuple[str, ...],
    what: str,
    hint: str,
    file_kind: str,
    optional: tuple[str, ...] = (),
) -> tuple[Path, dict[str, Any], dict[str, torch.Tensor]]:
    """(file, metadata, tensors ``names`` and those of ``optional`` it holds) of the pattern file at ``path`` (a
    folder's ``pattern.safetensors`` or a file), or a :class:`PatternError` naming ``what`` is missing or
    unreadable, or the file changed after it was saved (its tensors do not match the metadata's checksum)."""
    from safetensors import SafetensorError, safe_open

    p = Path(path)
    if p.is_dir():
        p = p / "pattern.safetensors"
    if not p.is_file():
        raise PatternError(f"no {what} at {str(path)!r}{hint}")
    try:
        with safe_open(str(p), framework="pt") as fh:
            meta = json.loads((fh.metadata() or {}).get("patternscope", "{}"))
            if not isinstance(meta, dict):
                raise ValueError("its metadata is not a JSON object")
            held = set(fh.keys())
            missing = [k for k in names if k not in held]
            if missing:
                raise ValueError(f"it holds no tensor {missing[0]!r}")
            everything = {k: fh.get_tensor(k) for k in held}
    except (SafetensorError, OSError, ValueError, json.JSONDecodeError) as exc:
        raise PatternError(f"{str(p)!r} is not a readable {file_kind} ({exc})") from None
    declared = meta.get(CHECKSUM)
    if declared is not None:
        actual = tensor_checksum(everything)
        if actual != declared:
            raise PatternError(
                f"{str(p)!r} was changed after it was saved: checksum {actual[:12]}... != {str(declared)[:12]}... "
                "recorded in its metadata; use the original file"
            )
    tensors = {k: everything[k] for k in names} | {k: everything[k] for k in optional if k in held}
    return p, meta, tensors


def to_pil(image: torch.Tensor, min_side: int = 0) -> Image.Image:
    """A C x H x W tensor in [0,1] as a PIL image, upscaled (nearest) so its shorter side is >= min_side."""
    array = (image.detach().float().cpu().clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()
    pil = Image.fromarray(array[..., 0] if array.shape[2] == 1 else np.ascontiguousarray(array))
    shorter = min(pil.size)
    if min_side and shorter < min_side:
        factor = math.ceil(min_side / shorter)
        pil = pil.resize((pil.size[0] * factor, pil.size[1] * factor), Image.Resampling.NEAREST)
    return pil


# ---------------------------------------------------------------------------------------------------
# Class-wise patterns: stamps that overwrite pixels


def top_k_mask(soft_mask: torch.Tensor, k: int, tie_key: torch.Tensor | None = None) -> torch.Tensor:
    """A {0,1} mask (1 x H x W) with ones at the ``k`` largest values of ``soft_mask``; equal values are
    ordered by ``tie_key`` (larger first, same shape), then by index."""
    flat = soft_mask.detach().flatten().float().cpu()
    order = ranking(flat, None if tie_key is None else tie_key.detach().flatten().float().cpu())
    out = torch.zeros_like(flat)
    out[order[: max(0, min(k, flat.numel()))]] = 1
    return out.view_as(soft_mask.cpu())


def ranking(flat: torch.Tensor, tie_key: torch.Tensor | None = None) -> torch.Tensor:
    """Pixel indices sorted by mask value, largest first; equal values by ``tie_key`` (larger first), then
    by index (both sorts are stable)."""
    if tie_key is None:
        return torch.sort(flat, descending=True, stable=True).indices
    by_key = torch.sort(tie_key, descending=True, stable=True).indices
    return by_key[torch.sort(flat[by_key], descending=True, stable=True).indices]


def top_k_count(share: float, pixels: int) -> int:
    """The pattern size for ``share`` of ``pixels`` (a count when ``share`` >= 1), as the class-wise authors
    count it: the product rounded down, then down to a multiple of 50 once it is at least 50 (5% of 32x32 is
    50 and of 224x224 2,500, the sizes their code uses); at least 1, at most ``pixels``."""
    k = int(share) if share >= 1 else math.floor(share * pixels + 1e-9)
    if share < 1 and k >= 50:
        k -= k % 50
    return max(1, min(k, pixels))


@dataclass
class ClasswisePattern:
    """A stamp: ``mask`` (1 x H x W in {0,1}) and ``colours`` (C x H x W in [0,1]) for class ``target``.

    ``soft_mask`` keeps the learned mask, so the pattern can be re-cut at any k (:meth:`with_k`); ``tie_key``
    (1 x H x W, optional) orders pixels of equal mask value (larger first): the search's last gradient, how much
    each pixel still lowers the loss, so saturated pixels are not ranked by raster order.
    """

    target: int
    mask: torch.Tensor
    colours: torch.Tensor
    soft_mask: torch.Tensor
    meta: dict[str, Any] = field(default_factory=dict)
    tie_key: torch.Tensor | None = None

    @property
    def k(self) -> int:
        return int(self.mask.sum())

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(self.colours.shape)  # type: ignore[return-value]

    def with_k(self, k: int) -> ClasswisePattern:
        return ClasswisePattern(
            self.target,
            top_k_mask(self.soft_mask, k, self.tie_key),
            self.colours,
            self.soft_mask,
            dict(self.meta),
            self.tie_key,
        )

    def stamp(self, x: torch.Tensor) -> torch.Tensor:
        """Overwrite the pattern's pixels of ``x`` (N x C x H x W or C x H x W, [0,1]) with its colours."""
        if tuple(x.shape[-3:]) != self.shape:
            raise PatternError(
                f"class-wise pattern of shape {self.shape} cannot be stamped on images of shape {tuple(x.shape[-3:])}"
            )
        m = self.mask.to(x.device, x.dtype)
        return x * (1 - m) + m * self.colours.to(x.device, x.dtype)

    def visible(self, background: float = 0.5) -> torch.Tensor:
        """The pattern's colours where it is on, ``background`` elsewhere (C x H x W)."""
        return self.colours * self.mask + background * (1 - self.mask)

    def save(self, folder: str | Path, name: str = "pattern") -> Path:
        """Write ``NAME.safetensors``, ``NAME.json`` and ``NAME.png`` into ``folder`` atomically."""
        meta = {**_header("classwise", self.shape, target=self.target, k=self.k), **self.meta}
        tensors = {
            "mask": self.mask.float().contiguous().cpu(),
            "colours": self.colours.float().contiguous().cpu(),
            "soft_mask": self.soft_mask.float().contiguous().cpu(),
        }
        if self.tie_key is not None:
            tensors["tie_key"] = self.tie_key.float().contiguous().cpu()
        return _write(Path(folder), name, tensors, meta, self.visible())

    @classmethod
    def load(cls, path: str | Path) -> ClasswisePattern:
        """Load from a folder holding ``pattern.safetensors`` or from a ``.safetensors`` file."""
        p, meta, tensors = _read(
            path,
            ("mask", "colours", "soft_mask"),
            "class-wise pattern",
            "",
            "class-wise pattern file",
            optional=("tie_key",),
        )
        if meta.get("kind") != "classwise":
            raise PatternError(f"{str(p)!r} is not a class-wise pattern (kind {meta.get('kind')!r})")
        rest = {k: v for k, v in meta.items() if k not in {"format", "kind", "target", "k", "shape", CHECKSUM}}
        try:
            target = int(meta["target"])
        except (KeyError, TypeError, ValueError):
            raise PatternError(f"{str(p)!r} names no readable target class ({meta.get('target')!r})") from None
        return cls(target, tensors["mask"], tensors["colours"], tensors["soft_mask"], rest, tensors.get("tie_key"))
