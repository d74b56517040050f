"""Dominant patterns (Ye, Qin, Chen, Huang, 2021): a universal δ whose features decide f(x + δ).

Label-free objective, minimised over ||δ||∞ <= eps (pixel space [0,1])::

    mean over x of  1 - cos( g(δ), g(x + δ) )        (or the KL variant)

g is the network up to ``layer`` (default: the logits). g(δ) is δ alone, and gradients flow through
both terms, so the pattern's own class moves with it: there is no fixed target.

Defaults, as in the authors' code: δ starts at zero; Adam, lr 1e-2, weight decay 1e-5, constant lr;
projection before every forward; batch 32; x + δ is *not* clipped to [0,1] during the search
(``clip_during_search=True`` clips it); labels are never used. Evaluation always clips.

Example::

    from patternscope import load_model, find_dominant_pattern
    model = load_model("efficientnet_lite0")
    outcome = find_dominant_pattern(model, ["photos", "jigsaw"], steps=150)
    outcome.pattern.save("runs/demo")
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import torch

from .._version import __version__
from ..data import BatchStream, ImageSet, check_crop_scale, training_sources
from ..errors import PatternError
from ..models import Classifier
from ..objectives import dominant_cosine, dominant_kl
from ..patterns import AdditiveParam, Pattern, parse_eps
from ..search import SearchConfig, SearchResult, run_search

DEFAULT_STEPS = 300  # about 4.5 minutes on 2 CPU cores for EfficientNet-Lite0 at batch 32 (see README)


@dataclass
class DominantConfig:
    """Settings for :func:`find_dominant_pattern` (the authors' defaults unless noted).

    Args:
        eps: budget in [0,1] pixel units (L∞ default 10/255 = 0.0392).
        norm: ``linf`` (paper) or ``l2``.
        steps: search steps of ``batch_size`` images each.
        batch_size: 32.
        lr: Adam learning rate, 1e-2.
        weight_decay: Adam weight decay, 1e-5 (a tiny pull of δ towards zero).
        layer: feature layer for g: ``logits`` or a layer name (``classifier:in`` for the head's input).
        loss: ``cos`` (1 - cosine similarity) or ``kl``.
        clip_during_search: clip x + δ to [0,1] in the search (the authors did not).
        keep: return the ``last`` δ, or the ``best`` one (lowest mean loss over a window of steps).
        window: steps per window for ``best`` and early stopping.
        patience: stop after this many windows without improvement (None: run all steps).
        seed: fixes the batches and so the whole search.
        crop_scale: zoom range for crops of image sources, e.g. (0.1, 1.0); None: the paper's fixed-scale
            crops (see :class:`~patternscope.data.BatchStream`).
        amp: mixed precision (``False``, ``bf16``, ``fp16``).
    """

    eps: float = 10 / 255
    norm: str = "linf"
    steps: int = DEFAULT_STEPS
    batch_size: int = 32
    lr: float = 1e-2
    weight_decay: float = 1e-5
    layer: str = "logits"
    loss: str = "cos"
    clip_during_search: bool = False
    keep: str = "last"
    window: int = 10
    patience: int | None = None
    seed: int = 0
    crop_scale: tuple[float, float] | None = None
    amp: bool | str = False

    def validate(self) -> DominantConfig:
        self.eps = parse_eps(self.eps, self.norm)
        check_crop_scale(self.crop_scale)
        if self.loss not in ("cos", "kl"):
            raise PatternError(f"loss must be cos or kl, got {self.loss!r}")
        if self.keep not in ("last", "best"):
            raise PatternError(f"keep must be last or best, got {self.keep!r}")
        for name in ("steps", "batch_size", "window"):
            if int(getattr(self, name)) < 1:
                raise PatternError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.lr <= 0:
            raise PatternError(f"lr must be positive, got {self.lr}")
        return self


@dataclass
class SearchOutcome:
    """A found pattern and the search that made it."""

    pattern: Pattern
    result: SearchResult
    best: Pattern


def find_dominant_pattern(
    model: Classifier,
    data: BatchStream | list[str | Path | ImageSet | torch.Tensor] | str,
    config: DominantConfig | None = None,
    *,
    device: str | torch.device | None = None,
    checkpoint: str | Path | None = None,
    checkpoint_every: int = 25,
    resume: bool = False,
    progress: bool = True,
    **overrides: Any,
) -> SearchOutcome:
    """Search a dominant pattern for ``model`` over ``data`` (label-free).

    Args:
        model: a :class:`~patternscope.models.Classifier` (inputs in [0,1]).
        data: a :class:`~patternscope.data.BatchStream`, or data specs: proxy names (``jigsaw``,
            ``gaussian``, ``uniform``), ``photos``, image folders, tensors or ImageSets.
        config: a :class:`DominantConfig`; keyword ``overrides`` replace its fields (``steps=50``).
        device: defaults to the model's device.
        checkpoint: a checkpoint file, written atomically every ``checkpoint_every`` steps.
        resume: continue from ``checkpoint`` when it exists (same result as an uninterrupted run).
        progress: show a progress bar.
    """
    config = replace(config or DominantConfig(), **overrides).validate()
    model.check_layer(config.layer)
    dev = torch.device(device) if device is not None else model.device
    model = model.to(dev)
    if isinstance(data, BatchStream):
        stream = data
    else:
        specs = [data] if isinstance(data, (str, Path, ImageSet, torch.Tensor)) else list(data)
        stream = BatchStream(training_sources(specs), model.input_size, seed=config.seed, crop_scale=config.crop_scale)
    param = AdditiveParam(model.input_size, config.eps, config.norm, device=dev)
    make = dominant_cosine if config.loss == "cos" else dominant_kl
    layer = None if config.layer in ("", "logits") else config.layer
    objective = make(model, param.delta, layer=layer, clip=config.clip_during_search)
    loop = SearchConfig(
        steps=config.steps,
        batch_size=config.batch_size,
        optimizer="adam",
        lr=config.lr,
        weight_decay=config.weight_decay,
        device=str(dev),
        amp=config.amp,
        seed=config.seed,
        checkpoint_path=Path(checkpoint) if checkpoint is not None else None,
        checkpoint_every=checkpoint_every,
        resume=resume,
        window=config.window,
        patience=config.patience,
        progress=progress,
        desc="dominant pattern",
    )
    identity = {
        "method": "dominant",
        "model": model.spec,
        "eps": config.eps,
        "norm": config.norm,
        "layer": config.layer,
        "loss": config.loss,
        "clip": config.clip_during_search,
        "data": stream.describe(),
    }
    result = run_search(param, objective, stream.batch, loop, identity=identity)
    meta = {
        "method": "dominant",
        "model": model.spec,
        "weights": model.weights,
        "steps": result.steps_done,
        "seed": config.seed,
        "data": stream.describe(),
        "label_free": True,
        "settings": {k: v for k, v in asdict(config).items() if k not in ("eps", "norm")},
        "clip_during_search": config.clip_during_search,
        "patternscope_version": __version__,
    }
    last = Pattern(param.delta.detach().cpu(), config.eps, config.norm, dict(meta))
    best = Pattern(
        result.best_tensors["delta"], config.eps, config.norm, {**meta, "kept": "best", "best_step": result.best_step}
    )
    last.meta["kept"] = "last"
    chosen = best if config.keep == "best" else last
    return SearchOutcome(pattern=chosen, result=result, best=best)
