"""Adapters to peer tools, so their reference implementations run side by side with ours.

:func:`art_universal_perturbation` runs IBM ART's ``UniversalPerturbation`` (the numpy, one image at
a time UAP many users know) on a patternscope :class:`~patternscope.core.classifier.Classifier` and returns a
:class:`~patternscope.core.patterns.Pattern` that every patternscope metric accepts. Needs the ``peers``
extra: ``pip install "patternscope[peers]"`` (adversarial-robustness-toolbox).
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from .._version import __version__
from ..core.classifier import Classifier
from ..core.patterns import Pattern, parse_eps
from ..errors import PatternError, PatternscopeError


@dataclass
class PeerResult:
    """A peer tool's pattern, its wall time, passes counted on our model, and what the tool reported."""

    pattern: Pattern
    seconds: float
    passes: float
    reported: dict[str, Any]


def art_universal_perturbation(
    model: Classifier,
    images: torch.Tensor,
    *,
    eps: float | str = 10 / 255,
    norm: str = "linf",
    attacker: str = "fgsm",
    attacker_params: dict[str, Any] | None = None,
    delta: float = 0.2,
    max_iter: int = 20,
    batch_size: int = 32,
    seed: int = 0,
) -> PeerResult:
    """Run ART's ``UniversalPerturbation`` on ``model`` over ``images`` (N x C x H x W in [0,1]).

    ART's own parameter names and defaults (``attacker``, ``delta``: stop once the fooling rate on
    ``images`` reaches 1 - delta, ``max_iter`` passes over the images, ``eps``, ``norm``); the
    normalisation stays inside the model, so ART sees [0,1] inputs with ``clip_values=(0, 1)``.
    ``attacker="fgsm"`` is ART's fast variant; ``"deepfool"`` the original UAP.
    """
    try:
        from art.attacks.evasion import UniversalPerturbation
        from art.estimators.classification import PyTorchClassifier
    except ImportError:
        raise PatternscopeError(
            "ART is not installed; install the peers extra: pip install 'patternscope[peers]'"
        ) from None
    eps_value = parse_eps(eps, norm)
    if images.ndim != 4 or tuple(images.shape[1:]) != tuple(model.input_size):
        raise PatternError(f"images must be N x {model.input_size}, got {tuple(images.shape)}")
    random.seed(seed)  # ART shuffles the images with Python's random module
    np.random.seed(seed)
    classifier = PyTorchClassifier(
        model=model,
        loss=torch.nn.CrossEntropyLoss(),
        input_shape=tuple(model.input_size),
        nb_classes=model.num_classes,
        clip_values=(0.0, 1.0),
        device_type="gpu" if model.device.type == "cuda" else "cpu",
    )
    attack = UniversalPerturbation(
        classifier,
        attacker=attacker,
        attacker_params=attacker_params,
        delta=delta,
        max_iter=max_iter,
        eps=eps_value,
        norm=np.inf if norm == "linf" else 2,
        batch_size=batch_size,
        verbose=False,
    )
    x = images.detach().cpu().numpy().astype(np.float32)
    before = model.passes.cost()
    start = time.perf_counter()
    attack.generate(x)
    seconds = time.perf_counter() - start
    noise = torch.from_numpy(np.asarray(attack.noise, dtype=np.float32)).reshape(model.input_size)
    reported = {
        "fooling_rate_on_training_images": float(attack.fooling_rate),
        "converged": bool(attack.converged),
        "attacker": attacker,
        "delta": delta,
        "max_iter": max_iter,
    }
    meta = {
        "method": "art-uap",
        "title": f"ART UniversalPerturbation ({attacker})",
        "model": model.spec,
        "weights": model.weights,
        "setting": "label-free",
        "label_free": True,
        "clip_during_search": True,
        "data": f"{x.shape[0]} images",
        "peer": reported,
        "patternscope_version": __version__,
    }
    pattern = Pattern(noise, eps_value, norm, meta).project_()
    return PeerResult(pattern, seconds, model.passes.cost() - before, reported)
