"""Shared by the backdoor benchmarks: Fashion-MNIST models with and without triggers, trained once and cached,
and the per-class signals of a scan, stored as JSON lines so an interrupted benchmark resumes."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from patternscope.analyses.scan import ScanReport, scan_reference
from patternscope.core.classifier import Classifier
from patternscope.kit import (
    LeNet5,
    SmallCNN,
    TrainConfig,
    Trigger,
    accuracy,
    attack_success_rate,
    poison_dataset,
    train_classifier,
)

ARCHS: dict[str, Callable[[], torch.nn.Module]] = {"smallcnn": SmallCNN, "lenet5": LeNet5}
CACHE = Path(os.environ.get("PATTERNSCOPE_ZOO_CACHE", Path.home() / ".cache" / "patternscope-zoo"))
TRAIN_IMAGES, EPOCHS = 20000, 2
# the defender's clean images are test images 0..2999; attack success and accuracy use 3000..9999
DEFENDER = slice(0, 3000)
MEASURE = slice(3000, None)


@dataclass(frozen=True)
class ModelSpec:
    """One zoo model: architecture, trigger (None: clean), target class, poison rate and training seed."""

    name: str
    arch: str
    trigger: Trigger | None
    target: int | None
    rate: float
    seed: int

    def describe(self) -> dict[str, Any]:
        return {
            "model": self.name,
            "arch": self.arch,
            "backdoored": self.trigger is not None,
            "trigger": self.trigger.describe() if self.trigger is not None else None,
            "target": self.target,
            "poison_rate": self.rate,
            "seed": self.seed,
        }


def trained(spec: ModelSpec, data: Any) -> tuple[Classifier, dict[str, Any]]:
    """The model of ``spec`` (trained on 20,000 Fashion-MNIST images for 2 epochs, or read from the cache) and
    its accuracy, attack success and training time."""
    x, y = data.train_x[:TRAIN_IMAGES], data.train_y[:TRAIN_IMAGES]
    if spec.trigger is not None:
        poisoned = poison_dataset(x, y, spec.trigger, spec.target, spec.rate, seed=spec.seed)
        x, y = poisoned.x, poisoned.y
    net = ARCHS[spec.arch]()
    path = CACHE / f"{spec.name}.pt"
    t0 = time.perf_counter()
    if path.is_file():
        net.load_state_dict(torch.load(path, weights_only=True))
        net.eval()
    else:
        net = train_classifier(net, x, y, TrainConfig(epochs=EPOCHS, seed=spec.seed))
        CACHE.mkdir(parents=True, exist_ok=True)
        torch.save(net.state_dict(), path)
    info = {
        "train_s": round(time.perf_counter() - t0, 1),
        "accuracy": accuracy(net, data.test_x[MEASURE], data.test_y[MEASURE]),
        "attack_success": (
            attack_success_rate(net, data.test_x[MEASURE], data.test_y[MEASURE], spec.trigger, spec.target)
            if spec.trigger is not None
            else None
        ),
    }
    return Classifier(net, mean=(0.0,), std=(1.0,), input_size=(1, 28, 28), spec=spec.name), info


def signals(report: ScanReport) -> dict[str, Any]:
    """The per-class values both decisions need, and the scan's time."""
    return {
        **scan_reference(report),
        "verified_stamp": [r.verified_stamp for r in report.rows],
        "verified_additive": [r.verified_additive for r in report.rows],
        "scan_s": round(report.seconds, 1),
    }


def resumable(path: Path, specs: Iterable[ModelSpec], run: Callable[[ModelSpec], dict[str, Any]]) -> list[dict]:
    """``run(spec)`` for every spec not already in the JSON lines file ``path`` (appended as each finishes)."""
    done: dict[str, dict] = {}
    if path.is_file():
        for line in path.read_text().splitlines():
            if line.strip():
                row = json.loads(line)
                done[row["model"]] = row
    rows = []
    for spec in specs:
        if spec.name not in done:
            row = run(spec)
            path.parent.mkdir(parents=True, exist_ok=True)
            with path.open("a") as fh:
                fh.write(json.dumps(row) + "\n")
            done[spec.name] = row
            print(f"{spec.name}: {json.dumps({k: v for k, v in row.items() if not isinstance(v, list)})}", flush=True)
        rows.append(done[spec.name])
    return rows
