"""Downstream attack with real weights and real data: EfficientNet-Lite0 (ImageNet) as the frozen
backbone, a new linear head trained on Fashion-MNIST images (a task it was never trained for), and the
backbone's dominant pattern (the main job's, 10/255) measured on it, unchanged, next to random noise of
the same budget and a dominant pattern searched on the downstream model itself.

Needs Debian's dataset-fashion-mnist. The pattern is the main job's run folder (`patternscope find
dominant --out runs/demo`, deterministic), made here if --pattern is not given (about 4 min).

    python benchmarks/downstream_effnet.py --pattern runs/demo      # about 8 min on one CPU core
    python benchmarks/downstream_effnet.py --pattern runs/demo --recipe paper \
        --out benchmarks/results/downstream_effnet_paper.json      # the authors' head training

``--recipe benchmark`` (the default) trains the head as the first release measured it (Adam 3e-3, 60 epochs,
batch 64, no augmentation); ``--recipe paper`` uses the authors' schedule (``downstream --recipe paper``:
Adam 1e-3, weight decay 1e-5, 20 epochs, lr x0.6 at epochs 4/8/12/16, batch 32, random flips and crops).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch
from _common import RESULTS, save, table

from patternscope.data import load_fashion_mnist, write_image_tree
from patternscope.runs.downstream import DownstreamOptions, downstream_run


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pattern", default=None, help="the backbone's run folder (default: run the main job)")
    parser.add_argument("--per-class", type=int, default=100, help="Fashion-MNIST images per class (100)")
    parser.add_argument("--own-steps", type=int, default=100, help="steps of the downstream model's own search")
    parser.add_argument("--out", default=None, help="JSON output (default benchmarks/results/downstream_effnet.json)")
    parser.add_argument("--recipe", choices=("benchmark", "paper"), default="benchmark", help="head training")
    args = parser.parse_args(argv)
    pattern = args.pattern
    if pattern is None:
        from patternscope.runs.find_dominant import FindOptions, find_dominant_run

        pattern = str(RESULTS / "downstream_effnet_pattern")
        if not (Path(pattern) / "pattern.safetensors").exists():
            find_dominant_run(FindOptions(out=pattern, device="cpu", overwrite=True))
    data = load_fashion_mnist()
    picks = torch.cat([torch.nonzero(data.test_y == c).flatten()[: args.per_class] for c in range(10)])
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tree = write_image_tree(Path(tmp) / "task", data.test_x[picks], data.test_y[picks], data.class_names)
        t0 = time.perf_counter()
        summary = downstream_run(
            DownstreamOptions(
                out=str(Path(tmp) / "run"),
                model="efficientnet_lite0",
                task_data=str(tree),
                pattern=pattern,
                head="linear",
                **({"recipe": "paper"} if args.recipe == "paper" else {"epochs": 60, "lr": 3e-3}),
                own_steps=args.own_steps,
                device="cpu",
            ),
            progress=False,
            log=lambda m: print(m, file=sys.stderr),
        )
        seconds = time.perf_counter() - t0
    r, t = summary.result, summary.payload["training"]
    rows.append(
        {
            "pattern on the downstream model": "the backbone's (unchanged)",
            "fooling ratio": round(r.transferred, 3),
            "x random": round(r.transferred / max(r.random_sign, 1e-9), 1),
        }
    )
    rows.append(
        {"pattern on the downstream model": "random ±eps", "fooling ratio": round(r.random_sign, 3), "x random": 1.0}
    )
    if r.own is not None:
        rows.append(
            {
                "pattern on the downstream model": f"searched on it ({args.own_steps} steps)",
                "fooling ratio": round(r.own, 3),
                "x random": round(r.own / max(r.random_sign, 1e-9), 1),
            }
        )
    print(table(rows, list(rows[0])))
    print(
        f"downstream accuracy {r.accuracy_clean:.3f} clean, {r.accuracy_transferred:.3f} with the backbone's pattern "
        f"(train {t['train_accuracy']:.3f}); {r.n_images} held-out images; {seconds:.0f} s"
    )
    path = save(
        "downstream_effnet",
        {**summary.payload, "seconds": round(seconds, 1), "per_class": args.per_class, "recipe": args.recipe},
        args.out,
    )
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
