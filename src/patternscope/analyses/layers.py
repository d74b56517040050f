"""Where a pattern takes over inside the network (Ye et al.'s explanation: "insensitivity in the feature
space").

For every block l of the network and each image x, two cosines of flattened activations g_l:

    follows δ:  cos( g_l(x + δ), g_l(δ) )        follows x:  cos( g_l(x + δ), g_l(x) )

averaged over the images (x + δ clipped to [0,1], as in every evaluation). A dominant pattern's features
win (follows δ > follows x) from some block on; random noise of the same norm should never win. The
*takeover block* is the first block from which "follows δ" stays above "follows x" to the logits.

Blocks are the network's direct children, with containers (``nn.Sequential``, ``nn.ModuleList``,
``nn.ModuleDict``) opened recursively, so an EfficientNet's MBConv blocks or a ResNet's residual blocks are
listed one by one; modules that do not change the representation (dropout, identity, flatten) and modules
called more than once per forward are skipped. The logits come last.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..core.classifier import Classifier
from ..core.models import on_device
from ..core.patterns import Pattern
from ..data.bank import Images, take
from ..errors import DataError

_CONTAINERS = (nn.Sequential, nn.ModuleList, nn.ModuleDict)
_PASS_THROUGH = (nn.Dropout, nn.Dropout2d, nn.Identity, nn.Flatten)
DEFAULT_IMAGES = 64  # images the evaluation's layer analysis reads (a seeded, class-stratified sample of the set)


def block_names(model: Classifier) -> list[str]:
    """The blocks of ``model.net`` in definition order (see the module docstring), without the logits."""

    def walk(module: nn.Module, prefix: str) -> list[str]:
        names = []
        for name, child in module.named_children():
            full = f"{prefix}{name}"
            if isinstance(child, _CONTAINERS):
                names += walk(child, full + ".")
            elif not isinstance(child, _PASS_THROUGH):
                names.append(full)
        return names

    return walk(model.net, "")


@dataclass
class LayerCurve:
    """One perturbation's cosines per block (same order as :attr:`LayerAnalysis.blocks`)."""

    name: str
    follows_delta: list[float]
    follows_x: list[float]
    takeover: str | None  # the first block from which follows_delta > follows_x to the end (None: never)
    takeover_index: int | None


@dataclass
class LayerAnalysis:
    """The layer analysis of a pattern beside its baselines (JSON-ready through :meth:`to_dict`)."""

    blocks: list[str]
    curves: list[LayerCurve]
    n_images: int
    notes: list[str] = field(default_factory=list)

    def curve(self, name: str) -> LayerCurve:
        return next(c for c in self.curves if c.name == name)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _takeover(delta_wins: list[bool]) -> int | None:
    """The first index from which every later entry is True (None when the last one is False)."""
    index = None
    for i in range(len(delta_wins) - 1, -1, -1):
        if not delta_wins[i]:
            break
        index = i
    return index


@torch.no_grad()
def _block_outputs(
    model: Classifier, x: torch.Tensor, blocks: list[str]
) -> tuple[list[torch.Tensor | None], torch.Tensor]:
    """Each block's output for ``x`` (N x D, flattened; None for a block called more than once or not
    returning a tensor) and the logits. An output is the block's own, even when an in-place op after it (a
    ``ReLU(inplace=True)`` after a conv or batch norm) overwrites its memory later in the forward."""
    seen, logits = model.layer_outputs(x, blocks)  # as each block produced them, before any in-place op
    outs: list[torch.Tensor | None] = []
    for b in blocks:
        values = seen[b]
        ok = len(values) == 1 and isinstance(values[0], torch.Tensor) and values[0].shape[:1] == x.shape[:1]
        outs.append(values[0].flatten(1).float() if ok else None)
    return outs, logits.float()


def analyze_layers(
    model: Classifier,
    patterns: Mapping[str, Pattern | torch.Tensor],
    images: Images,
    *,
    batch_size: int = 8,
    device: str | torch.device | None = None,
) -> LayerAnalysis:
    """Per block, how much the features of x + δ follow δ rather than x, for each named pattern.

    Args:
        model: the classifier (inputs in [0,1]).
        patterns: name -> pattern (or a C x H x W tensor in pixel units), e.g. the dominant pattern, a
            baseline UAP and random ±ε noise of the same norm.
        images: N x C x H x W in [0,1] (a tensor or an image bank), read ``batch_size`` at a time (every
            block's activations of one batch are held at once: keep it small for large networks).
        device: where to run (default: the model's device).

    Returns:
        A :class:`LayerAnalysis`: the blocks (plus ``logits``) and one curve of mean cosines per pattern.
    """
    model = on_device(model, device)
    n = int(images.shape[0])
    if n == 0:
        raise DataError("the layer analysis needs at least one image")
    deltas = {
        k: (v.delta if isinstance(v, Pattern) else v).to(model.device, torch.float32) for k, v in patterns.items()
    }
    blocks = block_names(model)
    alone = {k: _block_outputs(model, d[None], blocks) for k, d in deltas.items()}
    # a block that is the head itself gives the logits again: it is listed once, as "logits"
    first, first_logits = next(iter(alone.values()))
    kept = [i for i, out in enumerate(first) if out is None or not torch.equal(out, first_logits.flatten(1))]
    blocks = [blocks[i] for i in kept]
    alone = {k: ([outs[i] for i in kept], logits) for k, (outs, logits) in alone.items()}
    sums = {
        k: (torch.zeros(len(blocks) + 1, dtype=torch.float64), torch.zeros(len(blocks) + 1, dtype=torch.float64))
        for k in deltas
    }
    usable = [True] * len(blocks)
    for start in range(0, n, batch_size):
        x = take(images, slice(start, start + batch_size)).to(model.device, torch.float32)
        clean, clean_logits = _block_outputs(model, x, blocks)
        for name, delta in deltas.items():
            pert, pert_logits = _block_outputs(model, (x + delta).clamp(0, 1), blocks)
            own, own_logits = alone[name]
            for i, (p, c, o) in enumerate(
                zip([*pert, pert_logits], [*clean, clean_logits], [*own, own_logits], strict=True)
            ):
                if p is None or c is None or o is None:
                    if i < len(blocks):
                        usable[i] = False
                    continue
                sums[name][0][i] += F.cosine_similarity(p, o.expand_as(p), dim=1).double().sum()
                sums[name][1][i] += F.cosine_similarity(p, c, dim=1).double().sum()
    keep = [i for i, ok in enumerate(usable) if ok] + [len(blocks)]
    names = [blocks[i] for i in keep[:-1]] + ["logits"]
    curves = []
    for name in deltas:
        fd = [float(sums[name][0][i] / n) for i in keep]
        fx = [float(sums[name][1][i] / n) for i in keep]
        t = _takeover([a > b for a, b in zip(fd, fx, strict=True)])
        curves.append(LayerCurve(name, fd, fx, names[t] if t is not None else None, t))
    notes = []
    if len(keep) - 1 < len(blocks):
        notes.append(f"{len(blocks) - len(keep) + 1} blocks skipped (called more than once or not a tensor per image)")
    return LayerAnalysis(names, curves, n, notes)
