"""How much the dominant pattern depends on its seed, and whether a label-free score picks good seeds
(issue 16).

Tuning protocol, disjoint from the evaluation photos (``photos-eval``) and from the search photos:
every variant searches the main job's own data (the 14 bundled photos + jigsaw) and is measured on 10
views of each photo in ``--tune DIR``. The photos that decided the defaults (26; 260 views) are natural
photos shipped in public packages, collected with::

    # 22 photos from OpenCV's samples (the opencv-python sdist, samples/data): aero1, aero3, apple,
    # baboon, basketball1, building, butterfly, chicky_512, fruits, HappyFish, home, lena, messi5, orange,
    # squirrel_cls, smarties, stuff, graf1, leuvenA, aloeL, box_in_scene, licenseplate_motion
    # 4 from wheels: ultralytics/assets/{bus,zidane}.jpg, imgaug/quokka.jpg, insightface/data/images/t1.jpg

Each run also records a label-free score of its pattern at ``--early`` of the budget and at the end:
the share of held-out *proxy* images (64 jigsaw images and 64 crops of the search photos, drawn with a
seed the search never uses) whose prediction under x + δ is the pattern's own class, argmax f(δ). If that
score at 10-20% of the budget ranks the seeds like their final tuning agreement does, a search can start
several seeds briefly and continue the best one.

    python benchmarks/dominant_seeds.py --tune /tmp/tune/raw --seeds 0,1,2,3 --budget 3200
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from _common import save, table

from patternscope import DominantConfig, bundled_photos, evaluate_pattern, find_pattern, load_model
from patternscope.data.image_set import image_folder
from patternscope.data.proxies import jigsaw_images

VARIANTS: dict[str, dict] = {
    "default": {},
    "paper": {"dominance": 0.0},
    "lr0.1+uniform": {"lr": 0.1, "init": "uniform"},
    "lr0.1+uniform+cosine": {"lr": 0.1, "init": "uniform", "lr_schedule": "cosine", "lr_floor": 0.05},
    # the optional PSP-UAP prior stage: 0.38 of the steps is half of the passes (a PSP-UAP step costs 53.3)
    "prior0.38": {"prior_share": 0.38},
}


def proxy_holdout(size: tuple[int, int], seed: int = 9_999) -> torch.Tensor:
    """64 jigsaw images and 64 random crops of the bundled search photos (never the evaluation photos)."""
    gen = torch.Generator().manual_seed(seed)
    jig = jigsaw_images(64, size, generator=gen)
    photos = bundled_photos("photos")
    crops = []
    for i in range(64):
        image = photos.views(i % len(photos), size, views=5)[int(torch.randint(0, 5, (1,), generator=gen))]
        crops.append(image)
    return torch.cat([jig, torch.stack(crops)])


@torch.no_grad()
def proxy_agreement(model, delta: torch.Tensor, holdout: torch.Tensor) -> float:
    own = int(model(delta[None]).argmax(1))
    hits = sum(int((model((b + delta).clamp(0, 1)).argmax(1) == own).sum()) for b in holdout.split(64))
    return hits / len(holdout)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tune", type=Path, required=True, help="a folder of tuning photos")
    parser.add_argument("--variants", default="all", help=f"comma list of {', '.join(VARIANTS)} or 'all'")
    parser.add_argument("--seeds", default="0,1,2,3")
    parser.add_argument("--budget", type=float, default=3200, help="passes per run (default 3200)")
    parser.add_argument("--early", type=float, default=0.15, help="share of the budget for the early score (0: none)")
    parser.add_argument("--model", default="efficientnet_lite0")
    parser.add_argument("--out", default="benchmarks/results/dominance/seeds.json")
    args = parser.parse_args()
    names = list(VARIANTS) if args.variants == "all" else args.variants.split(",")
    seeds = [int(s) for s in args.seeds.split(",")]
    model = load_model(args.model)
    size = tuple(model.input_size)
    tune = image_folder(args.tune)
    holdout = proxy_holdout(size)
    rows = []
    for name in names:
        for seed in seeds:
            config = DominantConfig(**VARIANTS[name], seed=seed)
            t0 = time.perf_counter()
            early = None
            if args.early:
                early = find_pattern(
                    model, ["photos", "jigsaw"], config, budget=args.budget * args.early, progress=False
                )
            full = find_pattern(model, ["photos", "jigsaw"], config, budget=args.budget, progress=False)
            ev = evaluate_pattern(model, full.pattern, tune, views=10)
            row = {
                "variant": name,
                "seed": seed,
                "views": ev.n_images,
                "fooling": round(ev.fooling_ratio, 3),
                "fooling conf": round(ev.fooling_ratio_confident, 3),
                "agreement": round(ev.agreement, 3),
                "random ±eps": round(ev.random_baselines["sign"]["fooling_ratio"], 3),
                "class": ev.pattern_class,
                "early proxy agr": None
                if early is None
                else round(proxy_agreement(model, early.pattern.delta, holdout), 3),
                "final proxy agr": round(proxy_agreement(model, full.pattern.delta, holdout), 3),
                "s": round(time.perf_counter() - t0, 1),
                "search s": round(full.result.seconds, 1),
            }
            rows.append(row)
            print(table([row], list(row)), flush=True)
            save("dominant_seeds", {"settings": {**vars(args), "tune": str(args.tune)}, "results": rows}, args.out)
    print(table(rows, list(rows[0])))


if __name__ == "__main__":
    main()
