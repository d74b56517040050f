"""Backdoor zoo: our class-wise-pattern scan vs Neural Cleanse on Fashion-MNIST models.

Trains a zoo of small CNNs on real Fashion-MNIST (Debian's dataset-fashion-mnist): backdoored ones
(BadNets patches of several sizes, positions, colours and patterns; blended noise and stripe
triggers; several targets and poison rates) and clean ones trained the same way, then runs both
detectors on each with the same clean test images. Prints a per-model table and the true/false
positive rates and wall times side by side, and writes benchmarks/results/backdoor_zoo.json.

Each finished model is appended to a JSONL file, so an interrupted run resumes where it stopped.

    python benchmarks/backdoor_zoo.py                 # the full zoo (about 65 min on one CPU core)
    python benchmarks/backdoor_zoo.py --limit 2       # a quick look
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import torch
from _common import RESULTS, save, table

from patternscope.analyses.neural_cleanse import NeuralCleanseConfig, neural_cleanse
from patternscope.analyses.scan import ScanConfig, scan_model
from patternscope.core.classifier import Classifier
from patternscope.data import load_fashion_mnist
from patternscope.kit import (
    BlendTrigger,
    PatchTrigger,
    SmallCNN,
    TrainConfig,
    accuracy,
    attack_success_rate,
    poison_dataset,
    train_classifier,
)

# (name, trigger, target, poison rate); seeds differ from the pilot models the scan rule was set on (100+)
BACKDOORED: list[tuple[str, Any, int, float]] = [
    ("patch3-white-br", PatchTrigger(3, "bottom-right"), 0, 0.05),
    ("patch4-white-tl", PatchTrigger(4, "top-left"), 1, 0.10),
    ("patch3-checker-centre", PatchTrigger(3, "centre", pattern="checker"), 2, 0.05),
    ("patch2-white-tr", PatchTrigger(2, "top-right"), 3, 0.02),
    ("patch5-grey-bl", PatchTrigger(5, "bottom-left", colour=0.6), 4, 0.05),
    ("patch3-checker-tl", PatchTrigger(3, "top-left", pattern="checker"), 6, 0.03),
    ("patch4-white-centre-1pct", PatchTrigger(4, "centre"), 5, 0.01),
    ("blend-noise-a0.10", BlendTrigger(0.10, "noise", seed=1), 7, 0.05),
    ("blend-stripes-a0.10", BlendTrigger(0.10, "stripes"), 8, 0.05),
    ("blend-noise-a0.20", BlendTrigger(0.20, "noise", seed=2), 9, 0.10),
    # added after patch4-white-centre-1pct failed to implant (ASR 0.19): same trigger, 3% poison
    ("patch4-white-centre-3pct", PatchTrigger(4, "centre"), 5, 0.03),
]
# a model whose trigger works on fewer than this share of held-out images carries no working backdoor:
# it is listed, but left out of the true-positive rate (a detector cannot be blamed for missing it)
IMPLANTED_ASR = 0.5
CLEAN = 10
NC_BENCH = NeuralCleanseConfig(seeds=1)  # the defaults but one seed (as the authors ran it), for time: see README


def zoo() -> list[dict[str, Any]]:
    models = [
        {"name": n, "trigger": t, "target": tg, "rate": r, "seed": i} for i, (n, t, tg, r) in enumerate(BACKDOORED)
    ]
    models += [
        {"name": f"clean-{i}", "trigger": None, "target": None, "rate": 0.0, "seed": 50 + i} for i in range(CLEAN)
    ]
    return models


def run_one(
    spec: dict[str, Any], data: Any, train_n: int, epochs: int, nc_config: NeuralCleanseConfig
) -> dict[str, Any]:
    x, y = data.train_x[:train_n], data.train_y[:train_n]
    if spec["trigger"] is not None:
        poisoned = poison_dataset(x, y, spec["trigger"], spec["target"], spec["rate"], seed=spec["seed"])
        x, y = poisoned.x, poisoned.y
    t0 = time.perf_counter()
    net = train_classifier(SmallCNN(), x, y, TrainConfig(epochs=epochs, seed=spec["seed"]))
    train_s = time.perf_counter() - t0
    model = Classifier(net, mean=(0.0,), std=(1.0,), input_size=(1, 28, 28), spec=spec["name"])
    clean_x, clean_y = data.test_x[:3000], data.test_y[:3000]  # the defender's clean images
    row: dict[str, Any] = {
        "model": spec["name"],
        "backdoored": spec["trigger"] is not None,
        "target": spec["target"],
        "trigger": spec["trigger"].describe() if spec["trigger"] is not None else None,
        "poison_rate": spec["rate"],
        "accuracy": accuracy(net, data.test_x[3000:], data.test_y[3000:]),
        "attack_success": (
            attack_success_rate(net, data.test_x[3000:], data.test_y[3000:], spec["trigger"], spec["target"])
            if spec["trigger"] is not None
            else None
        ),
        "train_s": round(train_s, 1),
    }
    report = scan_model(model, clean_x, clean_y, ScanConfig(seed=spec["seed"]))
    row.update(
        scan_flagged=report.flagged,
        scan_s=round(report.seconds, 1),
        scan_k=[r.smallest_k for r in report.rows],
        scan_index=[r.anomaly_index for r in report.rows],
        scan_median_k=report.median_k,
    )
    from patternscope.data import stratified_split

    search_idx, _ = stratified_split(clean_y, 0.3, spec["seed"])
    nc = neural_cleanse(model, clean_x[search_idx], nc_config)
    row.update(
        nc_flagged=nc.flagged,
        nc_s=round(nc.seconds, 1),
        nc_l1=[round(v, 1) for v in nc.l1],
        nc_index=[round(-v, 2) for v in nc.anomaly_index],
        nc_diverged=nc.diverged_runs,
    )
    return row


def correct(flagged: list[int], row: dict[str, Any]) -> str:
    """TP: flags the target (extra flags are counted apart); FP: flags a clean model; "-": implant failed."""
    if row["backdoored"] and row["attack_success"] < IMPLANTED_ASR:
        return "-"
    if row["backdoored"]:
        return "TP" if row["target"] in flagged else "FN"
    return "FP" if flagged else "TN"


def target_rank(row: dict[str, Any], tool: str) -> int | None:
    """1 + how many classes need a strictly smaller pattern (scan: k; NC: mask L1) than the target."""
    if row["target"] is None:
        return None
    sizes = row["scan_k"] if tool == "scan" else row["nc_l1"]
    return 1 + sum(v < sizes[row["target"]] for i, v in enumerate(sizes) if i != row["target"])


def summarise(rows: list[dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    n_bd = sum(r["backdoored"] and r["attack_success"] >= IMPLANTED_ASR for r in rows)
    n_clean = sum(not r["backdoored"] for r in rows)
    out["backdoored_models"] = n_bd
    out["implant_failed"] = [r["model"] for r in rows if r["backdoored"] and r["attack_success"] < IMPLANTED_ASR]
    out["clean_models"] = n_clean
    for tool in ("scan", "nc"):
        outcomes = [correct(r[f"{tool}_flagged"], r) for r in rows]
        wrong_class = sum(1 for r in rows if r["backdoored"] and any(c != r["target"] for c in r[f"{tool}_flagged"]))
        out[tool] = {
            "tpr": outcomes.count("TP") / n_bd if n_bd else None,
            "fpr": outcomes.count("FP") / n_clean if n_clean else None,
            "true_positives": outcomes.count("TP"),
            "false_positives": outcomes.count("FP"),
            "backdoored_with_extra_flags": wrong_class,
            # threshold-free: the target has the smallest pattern of all classes (implanted backdoors only)
            "target_ranked_first": sum(
                1
                for r in rows
                if r["backdoored"] and r["attack_success"] >= IMPLANTED_ASR and target_rank(r, tool) == 1
            ),
            "seconds_total": round(sum(r[f"{tool}_s"] for r in rows), 1),
        }
    out["time_ratio_scan_over_nc"] = round(out["scan"]["seconds_total"] / out["nc"]["seconds_total"], 3)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--train-images", type=int, default=20000, help="training images per model (20000)")
    parser.add_argument("--epochs", type=int, default=2, help="training epochs per model (2)")
    parser.add_argument("--limit", type=int, default=None, help="only the first N backdoored and N clean models")
    parser.add_argument("--only", default=None, help="comma-separated model names to run (default all)")
    parser.add_argument("--nc-seeds", type=int, default=NC_BENCH.seeds, help=f"Neural Cleanse seeds ({NC_BENCH.seeds})")
    parser.add_argument("--progress-file", default=str(RESULTS / "backdoor_zoo.partial.jsonl"))
    parser.add_argument("--out", default=None, help="JSON output (default benchmarks/results/backdoor_zoo.json)")
    args = parser.parse_args(argv)
    torch.set_num_threads(max(1, torch.get_num_threads()))
    data = load_fashion_mnist()
    specs = zoo()
    if args.limit is not None:
        specs = [s for s in specs if s["trigger"] is not None][: args.limit] + [
            s for s in specs if s["trigger"] is None
        ][: args.limit]
    if args.only:
        wanted = set(args.only.split(","))
        specs = [s for s in specs if s["name"] in wanted]
    nc_config = NeuralCleanseConfig(seeds=args.nc_seeds)
    progress = Path(args.progress_file)
    done = {}
    if progress.is_file():
        for line in progress.read_text().splitlines():
            if line.strip():
                r = json.loads(line)
                done[r["model"]] = r
    rows = []
    for spec in specs:
        if spec["name"] in done:
            rows.append(done[spec["name"]])
            continue
        row = run_one(spec, data, args.train_images, args.epochs, nc_config)
        rows.append(row)
        progress.parent.mkdir(parents=True, exist_ok=True)
        with progress.open("a") as fh:
            fh.write(json.dumps(row) + "\n")
        print(
            f"{row['model']}: target {row['target']}, scan {row['scan_flagged']} ({row['scan_s']} s), "
            f"NC {row['nc_flagged']} ({row['nc_s']} s)",
            file=sys.stderr,
            flush=True,
        )
    summary = summarise(rows)
    shown = [
        {
            "model": r["model"],
            "target": "-" if r["target"] is None else r["target"],
            "acc": r["accuracy"],
            "ASR": "-" if r["attack_success"] is None else round(r["attack_success"], 3),
            "scan": ",".join(map(str, r["scan_flagged"])) or "-",
            "scan k(t)/median": "-" if r["target"] is None else f"{r['scan_k'][r['target']]}/{r['scan_median_k']:g}",
            "scan s": r["scan_s"],
            "scan rank": target_rank(r, "scan") or "-",
            "NC": ",".join(map(str, r["nc_flagged"])) or "-",
            "NC L1(t)/median": "-"
            if r["target"] is None
            else f"{r['nc_l1'][r['target']]:.0f}/{sorted(r['nc_l1'])[len(r['nc_l1']) // 2]:.0f}",
            "NC rank": target_rank(r, "nc") or "-",
            "NC s": r["nc_s"],
        }
        for r in rows
    ]
    print(table(shown, list(shown[0])))
    for tool, label in (("scan", "class-wise scan"), ("nc", "Neural Cleanse")):
        s = summary[tool]
        print(
            f"{label}: TPR {s['tpr']:.2f} ({s['true_positives']}/{summary['backdoored_models']}), "
            f"FPR {s['fpr']:.2f} ({s['false_positives']}/{summary['clean_models']}), "
            f"target smallest of all classes {s['target_ranked_first']}/{summary['backdoored_models']}, "
            f"{s['seconds_total']:.0f} s"
        )
    print(f"scan time / NC time: {summary['time_ratio_scan_over_nc']:.3f}")
    if summary["implant_failed"]:
        print(f"left out of the TPR (trigger ASR < {IMPLANTED_ASR}): {', '.join(summary['implant_failed'])}")
    path = save(
        "backdoor_zoo",
        {
            "data": "Fashion-MNIST (Debian dataset-fashion-mnist)",
            "train_images": args.train_images,
            "epochs": args.epochs,
            "scan_config": ScanConfig().__dict__,
            "neural_cleanse_config": nc_config.__dict__,
            "summary": summary,
            "models": rows,
        },
        args.out,
    )
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
