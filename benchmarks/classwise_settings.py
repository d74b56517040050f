"""Class-wise patterns in the paper's three settings, on real Fashion-MNIST: a clean model, a BadNets
backdoored model and a PGD adversarially trained model (same architecture, data and seed).

Uses the paper's method exactly (natural canvas: the class's most confident test image; mask 0.5 at the
start; signed steps 0.02; batch 4; 5 epochs over 1,800 search images of other classes; top 5% = 39
pixels) and measures each pattern's attack success on held-out images of other classes. Writes
docs/figures/classwise_settings.png and benchmarks/results/classwise_settings.json.

    python benchmarks/classwise_settings.py        # about 10 min on one CPU core
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch
from _common import save, table

from patternscope.analyses.classwise import (
    ClasswiseConfig,
    choose_canvas,
    find_classwise_pattern,
    other_classes,
    predictive_power,
)
from patternscope.core.classifier import Classifier
from patternscope.core.predict import class_probabilities
from patternscope.data import load_fashion_mnist, stratified_split
from patternscope.kit import (
    PatchTrigger,
    SmallCNN,
    TrainConfig,
    accuracy,
    attack_success_rate,
    pgd_attack,
    poison_dataset,
    train_classifier,
)
from patternscope.report import figures

FIGURE = Path(__file__).parent.parent / "docs" / "figures" / "classwise_settings.png"
TRIGGER = PatchTrigger(4, "bottom-right", colour=1.0)
TARGET = 1  # trouser
ADV_EPS = 0.1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--train-images", type=int, default=20000)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--figure", default=str(FIGURE))
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)
    data = load_fashion_mnist()
    x, y = data.train_x[: args.train_images], data.train_y[: args.train_images]
    poisoned = poison_dataset(x, y, TRIGGER, TARGET, rate=0.05, seed=0)
    settings = {
        "clean": (x, y, TrainConfig(epochs=args.epochs, seed=0)),
        f"BadNets (4x4 patch -> {data.class_names[TARGET]})": (
            poisoned.x,
            poisoned.y,
            TrainConfig(epochs=args.epochs, seed=0),
        ),
        f"PGD adv. trained (eps {ADV_EPS})": (
            x,
            y,
            TrainConfig(epochs=args.epochs, seed=0, adv_eps=ADV_EPS, adv_steps=7),
        ),
    }
    search_idx, held_idx = stratified_split(data.test_y, 0.5, seed=0)
    sx, sy = data.test_x[search_idx], data.test_y[search_idx]
    ex, ey = data.test_x[held_idx], data.test_y[held_idx]
    cfg = ClasswiseConfig()  # the paper's settings
    grid, rows, records = [], [], []
    for name, (tx, ty, tcfg) in settings.items():
        t0 = time.perf_counter()
        net = train_classifier(SmallCNN(), tx, ty, tcfg)
        train_s = time.perf_counter() - t0
        model = Classifier(net, mean=(0.0,), std=(1.0,), input_size=(1, 28, 28), spec=name)
        gen = torch.Generator().manual_seed(0)
        robust = accuracy(net, pgd_attack(net, ex[:1000], ey[:1000], ADV_EPS, 10, generator=gen), ey[:1000])
        probs = class_probabilities(model, sx)
        cells, successes = [], []
        t0 = time.perf_counter()
        for c in range(10):
            canvas_i = choose_canvas(model, sx, sy, c, probs)
            ox, _ = other_classes(sx, sy, c)
            ox = ox[torch.randperm(len(ox), generator=torch.Generator().manual_seed(c))[:1800]]
            found = find_classwise_pattern(model, c, ox, sx[canvas_i], cfg)
            power = predictive_power(model, found.pattern, ex, ey)
            successes.append(power.success)
            cells.append((f"{data.class_names[c]} {power.success:.0%}", found.pattern.visible()))
        search_s = time.perf_counter() - t0
        grid.append((name, cells))
        record = {
            "model": name,
            "accuracy": accuracy(net, ex, ey),
            "pgd_accuracy": robust,
            "backdoor_success": attack_success_rate(net, ex, ey, TRIGGER, TARGET),
            "pattern_success": dict(zip(data.class_names, successes, strict=True)),
            "mean_pattern_success": sum(successes) / 10,
            "train_s": round(train_s, 1),
            "search_s": round(search_s, 1),
        }
        records.append(record)
        rows.append(
            {
                "model": name,
                "acc": record["accuracy"],
                "PGD acc": robust,
                "trigger ASR": record["backdoor_success"],
                "mean pattern success": record["mean_pattern_success"],
                f"{data.class_names[TARGET]} pattern": successes[TARGET],
            }
        )
        print(f"{name}: done in {train_s + search_s:.0f} s", file=sys.stderr, flush=True)
    figures.labelled_grid(
        args.figure,
        grid,
        "Class-wise patterns (39 px = 5%, natural canvas) and their attack success on held-out Fashion-MNIST",
    )
    print(table(rows, list(rows[0])))
    path = save("classwise_settings", {"config": cfg.__dict__, "settings": records}, args.out)
    print(f"wrote {path} and {args.figure}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
