"""The class-wise paper's three settings on real data (Zhao et al. 2021): one architecture trained
naturally, with a BadNets backdoor, and with PGD adversarial training; the class-wise pattern of every
class of each, its attack success on held-out images, its simplicity and its overlap with a saliency map.

The paper's claim this measures: adversarially trained models learn simpler shape patterns (fewer
parts, shorter boundary, smaller compressed size) than natural ones, and a backdoored model's target
class has a small, highly predictive pattern at its trigger.

Example::

    from patternscope.analyses.settings import SettingsConfig, run_settings
    from patternscope.data import load_fashion_mnist
    result = run_settings(load_fashion_mnist(), SettingsConfig())
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import torch

from ..core.classifier import Classifier
from ..core.configs import option
from ..core.patterns import ClasswisePattern
from ..core.predict import class_probabilities
from ..data.datasets import LabelledData
from ..data.labelled import seeded_sample, stratified_split
from ..errors import PatternError
from ..kit import PatchTrigger, SmallCNN, TrainConfig, accuracy, attack_success_rate, pgd_attack, poison_dataset
from ..kit.train import train_classifier
from .classwise import ClasswiseConfig, choose_canvas, find_classwise_pattern, other_classes, predictive_power
from .simplicity import MEASURES, compare_settings, gradient_x_input, pattern_simplicity, saliency_overlap

SETTINGS = ("natural", "backdoored", "adversarial")
PGD_IMAGES = 1000  # held-out images each model's PGD accuracy is measured on (a seeded, class-stratified sample)


@dataclass
class SettingsConfig:
    """Settings of the three-setting experiment.

    Args:
        train_images: training images per model (the first N of the training split).
        epochs: training epochs per model.
        adv_eps: L∞ radius of PGD adversarial training, [0,1] pixel units (7 steps).
        trigger_size: side of the BadNets patch (white, bottom-right corner), pixels.
        target: the backdoor's target class.
        poison_rate: share of training images poisoned.
        search_images: cap on search images of other classes per class-wise search (the paper's 1,800).
        seed: fixes training, poisoning, the split and the searches.
        classwise: the class-wise search settings (default: the paper's).
    """

    train_images: int = option(20000, help="training images per model (default {default})")
    epochs: int = option(2, help="training epochs per model (default {default})")
    adv_eps: float = option(0.1, help="L-inf radius of PGD training, [0,1] units (default {default})")
    trigger_size: int = option(4, help="side of the white BadNets patch, pixels (default {default})")
    target: int = option(1, help="the backdoor's target class (default {default})")
    poison_rate: float = 0.05
    search_images: int = option(1800, help="search images per class-wise search (default {default})")
    seed: int = option(0, help="seed (default {default})")
    classwise: ClasswiseConfig = field(default_factory=ClasswiseConfig)

    def validate(self) -> SettingsConfig:
        if self.train_images < 10 or self.epochs < 1 or self.search_images < 1:
            raise PatternError("train_images (>= 10), epochs (>= 1) and search_images (>= 1) must be positive")
        if not 0 < self.adv_eps < 1:
            raise PatternError(f"adv_eps is an L∞ radius in [0,1] pixel units, got {self.adv_eps}")
        if not 0 < self.poison_rate < 1:
            raise PatternError(f"poison_rate must be in (0, 1), got {self.poison_rate}")
        return self


@dataclass
class SettingResult:
    """One setting: its model's numbers and one row per class (pattern, success, simplicity, saliency)."""

    name: str
    accuracy: float
    pgd_accuracy: float
    trigger_success: float
    classes: list[dict[str, Any]]
    patterns: list[ClasswisePattern] = field(default_factory=list, repr=False)
    saliency: list[torch.Tensor] = field(default_factory=list, repr=False)

    def summary(self) -> dict[str, Any]:
        successes = [r["success"] for r in self.classes]
        return {
            "name": self.name,
            "accuracy": self.accuracy,
            "pgd_accuracy": self.pgd_accuracy,
            "trigger_success": self.trigger_success,
            "mean_pattern_success": sum(successes) / len(successes),
            "mean_saliency_overlap": sum(r["saliency_overlap"] for r in self.classes) / len(self.classes),
            "classes": self.classes,
        }


@dataclass
class SettingsResult:
    """The whole experiment: one :class:`SettingResult` per setting and the simplicity comparison."""

    data: str
    class_names: tuple[str, ...]
    config: SettingsConfig
    settings: list[SettingResult]

    def simplicity(self) -> dict[str, dict[str, Any]]:
        return compare_settings({s.name: [r["simplicity"] for r in s.classes] for s in self.settings})

    def to_dict(self) -> dict[str, Any]:
        return {
            "data": self.data,
            "classes": list(self.class_names),
            "config": asdict(self.config),
            "settings": [s.summary() for s in self.settings],
            "simplicity": self.simplicity(),
            "measures": list(MEASURES),
        }


def train_setting(name: str, data: LabelledData, config: SettingsConfig) -> torch.nn.Module:
    """The model of setting ``name`` (``natural``, ``backdoored`` or ``adversarial``), trained on CPU/GPU as
    the kit does."""
    x, y = data.train_x[: config.train_images], data.train_y[: config.train_images]
    train = TrainConfig(epochs=config.epochs, seed=config.seed)
    if name == "backdoored":
        poisoned = poison_dataset(x, y, trigger(config), config.target, rate=config.poison_rate, seed=config.seed)
        x, y = poisoned.x, poisoned.y
    elif name == "adversarial":
        train = TrainConfig(epochs=config.epochs, seed=config.seed, adv_eps=config.adv_eps, adv_steps=7)
    elif name != "natural":
        raise PatternError(f"unknown setting {name!r}; choose from {', '.join(SETTINGS)}")
    channels, size = data.input_size[0], data.input_size[-1]
    with torch.random.fork_rng():  # the same initial weights in every setting and process
        torch.manual_seed(config.seed)
        net = SmallCNN(channels=channels, size=size, classes=data.num_classes)
    return train_classifier(net, x, y, train)


def trigger(config: SettingsConfig) -> PatchTrigger:
    """The BadNets trigger of the backdoored setting: a white square in the bottom-right corner."""
    return PatchTrigger(config.trigger_size, "bottom-right", colour=1.0)


def run_settings(
    data: LabelledData,
    config: SettingsConfig | None = None,
    *,
    settings: tuple[str, ...] = SETTINGS,
    on_setting: Callable[[SettingResult], None] | None = None,
    log: Callable[[str], None] = lambda _m: None,
    progress: bool = False,
) -> SettingsResult:
    """Train each setting's model and find every class's class-wise pattern (see the module docstring).

    The test split is cut in two halves per class: one gives canvases and search images, the other
    measures each pattern's attack success. ``on_setting`` runs after each setting (e.g. to save it).
    """
    config = (config or SettingsConfig()).validate()
    search_idx, held_idx = stratified_split(data.test_y, 0.5, seed=config.seed)
    sx, sy = data.test_x[search_idx], data.test_y[search_idx]
    ex, ey = data.test_x[held_idx], data.test_y[held_idx]
    pgd_sample = seeded_sample(len(ey), PGD_IMAGES, config.seed, ey)  # PGD is slow: a stratified sample
    results = []
    for name in settings:
        log(f"{name}: training")
        net = train_setting(name, data, config)
        model = Classifier(net, mean=(0.0,), std=(1.0,), input_size=data.input_size, spec=f"SmallCNN ({name})")
        model.adopt_class_names(data.class_names)
        gen = torch.Generator().manual_seed(config.seed)
        pgd_x, pgd_y = ex[pgd_sample], ey[pgd_sample]
        robust = accuracy(net, pgd_attack(net, pgd_x, pgd_y, config.adv_eps, 10, generator=gen), pgd_y)
        probs = class_probabilities(model, sx)
        result = SettingResult(
            name,
            accuracy(net, ex, ey),
            robust,
            attack_success_rate(net, ex, ey, trigger(config), config.target),
            [],
        )
        for c in range(data.num_classes):
            log(f"{name}: class {c} ({data.class_names[c]})")
            canvas = sx[choose_canvas(model, sx, sy, target=c, probs=probs)]
            ox, _ = other_classes(sx, sy, target=c)
            keep = torch.randperm(len(ox), generator=torch.Generator().manual_seed(config.seed + c))
            found = find_classwise_pattern(
                model,
                ox[keep[: config.search_images]],
                target=c,
                canvas=canvas,
                config=config.classwise,
                progress=progress,
            )
            power = predictive_power(model, found.pattern, ex, ey)
            saliency = gradient_x_input(model, canvas, c)
            result.classes.append(
                {
                    "target": c,
                    "name": data.class_names[c],
                    "k": found.pattern.k,
                    "success": power.success,
                    "clean_rate": power.clean_rate,
                    "simplicity": pattern_simplicity(found.pattern),
                    "saliency_overlap": saliency_overlap(saliency, found.pattern),
                }
            )
            result.patterns.append(found.pattern)
            result.saliency.append(saliency)
        results.append(result)
        if on_setting is not None:
            on_setting(result)
    return SettingsResult(data.name, data.class_names, config, results)
