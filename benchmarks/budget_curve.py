"""How each method's pattern improves with the search budget (issue 31): one search per method on
EfficientNet-Lite0, measured at checkpoints along the way (3.2k, 9.6k, 32k image passes; the dominant
default and PSP-UAP go on to 96k), never re-searched.

Every method searches the main job's data (the 14 bundled photos + jigsaw; the data ``compare`` gives every
method), ε = 10/255 L∞, seed 0, with its own default settings and a pass budget equal to its last mark. The
loop's checkpoint is paused at each mark (the δ there is exactly what a search with that budget returns, the
schedules being constant) and resumed for the next, so the marks are visited in order of cost: every
method at 3.2k, then every method at 9.6k, and so on. A killed run resumes from the last checkpoint and
never measures a point twice (``WORK/METHOD/mark_N.json``).

Each point is measured on two disjoint sets, with the library's ``evaluate_pattern``:

- ``photos-eval``: the 22 bundled evaluation photos, 10 views each (220 views);
- ``tuning``: 26 natural photos from public packages, 10 views each (260 views; how to get them is in
  ``dominant_seeds.py``'s docstring), the only set defaults may be chosen on;

for fooling ratio, fooling of the confidently classified views (> 0.5), agreement with the pattern's own
class, top-1 dominance, and the fooling ratio and agreement on EfficientNet-Lite1 (the pattern resized to
240 px), each with its Wilson 95% interval on the views and on the photos (one draw per photo, the
conservative bound). Random ±ε noise is measured once per set.

    # two workers, one thread each (split the methods between them), then the table, JSON and figure
    OMP_NUM_THREADS=1 python benchmarks/budget_curve.py run --tune DIR --methods dominant,psp-uap &
    OMP_NUM_THREADS=1 python benchmarks/budget_curve.py run --tune DIR --methods dominant-paper,cos-uap,sgd-uap &
    python benchmarks/budget_curve.py table
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).parent))
from _common import FIGURES, save, table

from patternscope import Pattern, bundled_photos, evaluate_pattern, find_pattern, load_model
from patternscope.analyses.transfer import fit_pattern
from patternscope.core.metrics import wilson_interval
from patternscope.core.search import SearchInterrupted
from patternscope.data.image_set import image_folder
from patternscope.methods.registry import get_recipe

MARKS = (3_200, 9_600, 32_000, 96_000)
# method -> its last mark (the search's pass budget)
METHODS: dict[str, int] = {
    "dominant": 96_000,
    "dominant-paper": 32_000,
    "psp-uap": 96_000,
    "cos-uap": 32_000,
    "sgd-uap": 32_000,
}
DATA = ["photos", "jigsaw"]
VIEWS = 10
SEED = 0


class _Pause(KeyboardInterrupt):
    """Raised from the step monitor at a mark: the loop saves its checkpoint and stops (resumable)."""


@dataclass
class Sets:
    """The measurement sets and models, loaded once per worker."""

    lite0: Any
    lite1: Any
    sets: dict[str, Any]


def load_sets(tune: Path) -> Sets:
    return Sets(
        load_model("efficientnet_lite0"),
        load_model("efficientnet_lite1"),
        {"photos-eval": bundled_photos("photos-eval"), "tuning": image_folder(tune)},
    )


def _share(value: float, n: int, photos: int) -> dict[str, Any]:
    return {
        "value": round(value, 4),
        "ci": [round(v, 4) for v in wilson_interval(value, n)],
        "ci_per_photo": [round(v, 4) for v in wilson_interval(value, photos)],
    }


def measure(pattern: Pattern, sets: Sets) -> dict[str, Any]:
    """The point's metrics on each set (no random baselines: those are measured once, :func:`noise`)."""
    out: dict[str, Any] = {}
    lite1_pattern = fit_pattern(pattern, sets.lite1.input_size)
    for name, images in sets.sets.items():
        ev = evaluate_pattern(sets.lite0, pattern, images, views=VIEWS, baselines=(), examples=0)
        tr = evaluate_pattern(sets.lite1, lite1_pattern, images, views=VIEWS, baselines=(), examples=0)
        n, photos = ev.n_images, ev.n_images // VIEWS
        out[name] = {
            "n": n,
            "photos": photos,
            "n_confident": ev.n_confident,
            "pattern_class": ev.pattern_class,
            "fooling": _share(ev.fooling_ratio, n, photos),
            "fooling_confident": _share(ev.fooling_ratio_confident, ev.n_confident, max(1, ev.n_confident // VIEWS)),
            "agreement": _share(ev.agreement, n, photos),
            "dominance_top1": round(ev.dominance["top1"]["perturbed"], 4),
            "lite1_fooling": _share(tr.fooling_ratio, n, photos),
            "lite1_agreement": _share(tr.agreement, n, photos),
            "lite1_pattern_class": tr.pattern_class,
        }
    return out


def noise(sets: Sets, eps: float) -> dict[str, Any]:
    """Random ±ε noise (signs, seed 0) on each set: the floor every method should clear."""
    zero = Pattern(torch.zeros(sets.lite0.input_size), eps, "linf")
    out = {}
    for name, images in sets.sets.items():
        ev = evaluate_pattern(sets.lite0, zero, images, views=VIEWS, baselines=("sign",), examples=0)
        sign = ev.random_baselines["sign"]
        out[name] = {"n": ev.n_images, "fooling": _share(sign["fooling_ratio"], ev.n_images, ev.n_images // VIEWS)}
    return out


class Curve:
    """One method's search, paused and measured at each mark it reaches."""

    def __init__(self, method: str, work: Path, sets: Sets) -> None:
        self.method, self.sets = method, sets
        self.final = METHODS[method]
        self.folder = work / method
        self.folder.mkdir(parents=True, exist_ok=True)
        self.config = get_recipe(method).config(seed=SEED)

    def point(self, mark: int) -> Path:
        return self.folder / f"mark_{mark}.json"

    def advance(self, mark: int) -> dict[str, Any]:
        """Search on to ``mark`` passes (resuming), pause there, measure the δ and save the point."""
        if self.point(mark).is_file():
            return json.loads(self.point(mark).read_text())
        cost = get_recipe(self.method).step_cost(self.config)
        if cost is None:
            raise SystemExit(f"{self.method}: its step cost varies, so its marks cannot be found from the step")
        kept: dict[str, Any] = {}

        def monitor(step: int, _loss: float, _lr: float, delta: torch.Tensor) -> None:
            # the last step that fits in ``mark``: what a search with that budget stops on
            if (step + 1) * cost > mark + 1e-6:
                kept.update(step=step, passes=step * cost, delta=delta.detach().cpu().clone())
                if mark < self.final:
                    raise _Pause

        t0 = time.perf_counter()
        try:
            outcome = find_pattern(
                self.sets.lite0,
                DATA,
                method=self.method,
                budget=self.final,
                checkpoint=self.folder / "search.pt",
                checkpoint_every=25,
                resume=True,
                progress=False,
                monitor=monitor,
                seed=SEED,
            )
            pattern = outcome.pattern
            kept.setdefault("step", outcome.result.steps_done)
            kept.setdefault("passes", outcome.result.steps_done * cost)
        except SearchInterrupted:
            pattern = Pattern(kept["delta"], self.config.eps, self.config.norm, {"method": self.method})
        search_s = time.perf_counter() - t0
        pattern.save(self.folder / f"pattern_{mark}")
        t1 = time.perf_counter()
        point = {
            "method": self.method,
            "mark": mark,
            "step": kept["step"],
            "passes": round(float(kept["passes"]), 1),
            "search_s": round(search_s, 1),
            "measure_s": 0.0,
            "threads": torch.get_num_threads(),
            **measure(pattern, self.sets),
        }
        point["measure_s"] = round(time.perf_counter() - t1, 1)
        tmp = self.point(mark).with_suffix(".tmp")
        tmp.write_text(json.dumps(point, indent=2) + "\n")
        tmp.replace(self.point(mark))
        return point


def run(args: argparse.Namespace) -> None:
    methods = args.methods.split(",") if args.methods != "all" else list(METHODS)
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        raise SystemExit(f"unknown methods {unknown}; choose from {', '.join(METHODS)}")
    marks = [int(m) for m in args.marks.split(",")]
    sets = load_sets(args.tune)
    args.work.mkdir(parents=True, exist_ok=True)
    noise_file = args.work / "noise.json"
    if not noise_file.is_file():
        noise_file.write_text(json.dumps(noise(sets, 10 / 255), indent=2) + "\n")
    curves = {m: Curve(m, args.work, sets) for m in methods}
    for mark in marks:
        for method, curve in curves.items():
            if mark > curve.final:
                continue
            point = curve.advance(mark)
            ev = point["photos-eval"]
            print(
                f"{method:15s} {mark:>6d} passes: step {point['step']}, search {point['search_s']} s, "
                f"fooling {ev['fooling']['value']:.3f} agreement {ev['agreement']['value']:.3f} "
                f"(tuning {point['tuning']['fooling']['value']:.3f} / {point['tuning']['agreement']['value']:.3f})",
                flush=True,
            )


def rows(work: Path) -> list[dict[str, Any]]:
    points = []
    for method in METHODS:
        for mark in MARKS:
            path = work / method / f"mark_{mark}.json"
            if path.is_file():
                points.append(json.loads(path.read_text()))
    return points


def figure(points: list[dict[str, Any]], noise_points: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [
        ("fooling", "fooling ratio"),
        ("agreement", "agreement with f(δ)'s class"),
        ("lite1_fooling", "Lite1 fooling (transfer)"),
        ("lite1_agreement", "Lite1 agreement (transfer)"),
    ]
    fig, axes = plt.subplots(2, 4, figsize=(17, 7.5), sharex=True)
    for row, data_set in enumerate(("photos-eval", "tuning")):
        for col, (key, title) in enumerate(panels):
            ax = axes[row][col]
            for method in METHODS:
                mine = sorted((p for p in points if p["method"] == method), key=lambda p: p["passes"])
                if not mine:
                    continue
                x = [p["passes"] for p in mine]
                y = [p[data_set][key]["value"] for p in mine]
                lo = [p[data_set][key]["ci"][0] for p in mine]
                hi = [p[data_set][key]["ci"][1] for p in mine]
                (line,) = ax.plot(x, y, marker="o", label=method)
                ax.fill_between(x, lo, hi, color=line.get_color(), alpha=0.12)
            if key == "fooling" and data_set in noise_points:
                ax.axhline(noise_points[data_set]["fooling"]["value"], color="grey", ls=":", label="random ±ε")
            ax.set_xscale("log")
            ax.set_ylim(0, 1)
            ax.grid(alpha=0.3)
            ax.set_title(f"{title}\n{data_set}", fontsize=9)
            if row == 1:
                ax.set_xlabel("image passes (log)")
    axes[0][0].legend(fontsize=8, loc="lower right")
    fig.suptitle("EfficientNet-Lite0, ε = 10/255: metric vs search budget (bands: Wilson 95% on the views)")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)


def _cell(share: dict[str, Any]) -> str:
    low, high = share["ci"]
    return f"{share['value']:.3f} [{low:.2f}, {high:.2f}]"


def markdown(points: list[dict[str, Any]]) -> str:
    """The docs' table: every point, both sets, with Wilson intervals on the views."""
    lines = [
        "| method | passes | photos-eval: fooling | conf > 0.5 | agreement | Lite1 fooling | Lite1 agreement "
        "| tuning: fooling | agreement | Lite1 fooling | Lite1 agreement | CPU s (1 thread) |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    spent: dict[str, float] = {}
    for p in points:
        spent[p["method"]] = spent.get(p["method"], 0.0) + p["search_s"]
        ev, tu = p["photos-eval"], p["tuning"]
        cells = [p["method"], f"{int(p['passes']):,}", _cell(ev["fooling"]), f"{ev['fooling_confident']['value']:.3f}"]
        cells += [_cell(ev[k]) for k in ("agreement", "lite1_fooling", "lite1_agreement")]
        cells += [_cell(tu[k]) for k in ("fooling", "agreement", "lite1_fooling", "lite1_agreement")]
        cells.append(f"{spent[p['method']]:,.0f}")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def report(args: argparse.Namespace) -> None:
    points = rows(args.work)
    if not points:
        raise SystemExit(f"no measured points under {args.work}")
    noise_file = args.work / "noise.json"
    noise_points = json.loads(noise_file.read_text()) if noise_file.is_file() else {}
    flat = []
    for p in points:
        ev, tu = p["photos-eval"], p["tuning"]
        flat.append(
            {
                "method": p["method"],
                "passes": int(p["passes"]),
                "eval fool": ev["fooling"]["value"],
                "eval conf": ev["fooling_confident"]["value"],
                "eval agr": ev["agreement"]["value"],
                "eval dom": ev["dominance_top1"],
                "L1 fool": ev["lite1_fooling"]["value"],
                "L1 agr": ev["lite1_agreement"]["value"],
                "tune fool": tu["fooling"]["value"],
                "tune agr": tu["agreement"]["value"],
                "L1 tune agr": tu["lite1_agreement"]["value"],
                "search s": p["search_s"],
            }
        )
    print(table(flat, list(flat[0])))
    print(markdown(points))
    measured = {m: sorted(int(p["mark"]) for p in points if p["method"] == m) for m in METHODS}
    missing = {m: [k for k in MARKS if k <= METHODS[m] and k not in measured[m]] for m in METHODS}
    path = save(
        "budget_curve",
        {
            "settings": {
                "model": "efficientnet_lite0",
                "transfer": "efficientnet_lite1",
                "eps": "10/255",
                "data": DATA,
                "views": VIEWS,
                "seed": SEED,
                "marks": list(MARKS),
                "budgets": METHODS,
            },
            "noise": noise_points,
            "not_measured": {m: v for m, v in missing.items() if v},
            "points": points,
        },
        args.out,
    )
    figure(points, noise_points, FIGURES / "budget_curve.png")
    print(f"wrote {path} and {FIGURES / 'budget_curve.png'}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    go = sub.add_parser("run", help="search and measure (resumable)")
    go.add_argument("--tune", type=Path, required=True, help="the folder of 26 tuning photos")
    go.add_argument("--methods", default="all", help=f"comma list of {', '.join(METHODS)} or 'all'")
    go.add_argument("--marks", default=",".join(str(m) for m in MARKS))
    go.add_argument("--work", type=Path, default=Path("runs/budget_curve"))
    show = sub.add_parser("table", help="the table, JSON and figure from the measured points")
    show.add_argument("--work", type=Path, default=Path("runs/budget_curve"))
    show.add_argument("--out", default=None)
    args = parser.parse_args()
    if os.environ.get("OMP_NUM_THREADS"):
        torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))
    run(args) if args.command == "run" else report(args)


if __name__ == "__main__":
    main()
