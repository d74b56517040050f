"""Dominant patterns on EfficientNet-Lite0 (real ImageNet weights), eps = 10/255, CPU-sized budgets.

Each variant searches a pattern from proxy data (bundled photos and/or jigsaw images, never the
evaluation photos) and is evaluated on the 22 held-out labelled photos (centre crop, and 10 crops per
photo = 220 views), next to random ±eps and uniform noise of the same budget. Reported: fooling ratio
(all / confidently classified > 0.5), agreement argmax f(x+δ) == argmax f(δ), dominance top-1, accuracy,
wall time.

    python benchmarks/dominant_effnet.py                         # the default settings only
    python benchmarks/dominant_effnet.py --variants all          # every variant side by side
    python benchmarks/dominant_effnet.py --variants default,jigsaw --steps 300
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _common import save, table

from patternscope import bundled_photos, evaluate_pattern, load_model
from patternscope.methods import find_dominant_pattern
from patternscope.methods.dominant import DEFAULT_STEPS

VARIANTS = {
    "default": {"data": ["photos", "jigsaw"]},
    "photos": {"data": ["photos"]},
    "jigsaw": {"data": ["jigsaw"]},
    "clip": {"data": ["photos", "jigsaw"], "clip_during_search": True},
    "penultimate": {"data": ["photos", "jigsaw"], "layer": "classifier:in"},
    "kl": {"data": ["photos", "jigsaw"], "loss": "kl"},
    "zoom": {"data": ["photos", "jigsaw"], "crop_scale": (0.1, 1.0)},
    "lr3e-3": {"data": ["photos", "jigsaw"], "lr": 3e-3},
    "lr3e-2": {"data": ["photos", "jigsaw"], "lr": 3e-2},
    "lr1e-1": {"data": ["photos", "jigsaw"], "lr": 1e-1},
    # the same number of image passes as the default, in twice the steps
    "batch16": {"data": ["photos", "jigsaw"], "batch_size": 16, "steps_factor": 2},
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--variants", default="default", help=f"comma list of {', '.join(VARIANTS)} or 'all'")
    parser.add_argument("--steps", type=int, default=DEFAULT_STEPS)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    names = list(VARIANTS) if args.variants == "all" else args.variants.split(",")
    unknown = [n for n in names if n not in VARIANTS]
    if unknown:
        parser.error(f"unknown variants {unknown}")

    model = load_model("efficientnet_lite0", device=args.device)
    held_out = bundled_photos("photos-eval")
    rows, results = [], []
    for name in names:
        spec = dict(VARIANTS[name])
        data = spec.pop("data")
        steps = args.steps * spec.pop("steps_factor", 1)
        spec.setdefault("batch_size", args.batch_size)
        t0 = time.perf_counter()
        outcome = find_dominant_pattern(model, data, steps=steps, seed=args.seed, progress=True, **spec)
        seconds = time.perf_counter() - t0
        for views in (1, 10):
            ev = evaluate_pattern(model, outcome.pattern, held_out, views=views)
            row = {
                "variant": name,
                "steps": steps,
                "views": ev.n_images,
                "fooling": ev.fooling_ratio,
                "fooling conf>0.5": ev.fooling_ratio_confident,
                "random ±eps": ev.random_baselines["sign"]["fooling_ratio"],
                "random ±eps conf": ev.random_baselines["sign"]["fooling_ratio_confident"],
                "uniform": ev.random_baselines["uniform"]["fooling_ratio"],
                "agreement": ev.agreement,
                "dominance top1": ev.dominance["top1"]["perturbed"],
                "clean top1 acc": ev.accuracy["clean"]["top1"],
                "perturbed top1 acc": ev.accuracy["perturbed"]["top1"],
                "pattern class": ev.pattern_class_name,
                "search s": round(seconds, 1),
            }
            rows.append(row)
            results.append(
                {
                    **row,
                    "settings": {"data": data, **spec, "steps": steps, "seed": args.seed},
                    "evaluation": ev.to_dict(),
                    "search": outcome.result.summary(),
                }
            )
            print(table([row], list(row)), flush=True)
    print()
    print(table(rows, list(rows[0])))
    path = save("dominant_effnet", {"settings": vars(args), "results": results}, args.out)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
