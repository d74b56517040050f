"""Backdoor zoo: the scan (stamp + additive signals, calibrated decision) vs Neural Cleanse on Fashion-MNIST.

Trains 37 backdoored and 12 clean models on real Fashion-MNIST (Debian's dataset-fashion-mnist) with two
architectures (the kit's SmallCNN and LeNet5), seeds 0-99 (the pilot models the decision was calibrated on use
300+: benchmarks/scan_calibration.py, run before this). Triggers: solid patches of 3 sizes and several
positions, patterned patches (checker, L-shaped), blended noise at alpha 0.10 and 0.20, a blended grating
image, patches at 1.5% and 2% poison rates, a smooth warping (WaNet-like) trigger and 12 scattered pixels.
A second LeNet5 batch repeats the triggers (not the low-rate ones) at 10% poison with other seeds and targets:
at the first rates 6 of LeNet5's 13 did not implant. Each model is scanned once with the default settings; the
verdicts of both modes come from the same per-class values:

- self mode (the default when no reference is given);
- reference mode, with two clean pilot models of the same architecture as references;
- the first release's rule (stamp only, MAD index > 2 and at most 0.25 of the median) for comparison.

Neural Cleanse runs on the SmallCNN models (one seed, for time). Models whose trigger did not implant (attack
success < 0.8 on held-out images) are listed and kept out of the rates. Prints per-model and per-trigger-type
tables (TPR, FPR, target rank per signal and for Neural Cleanse, time) and writes
benchmarks/results/backdoor_zoo.json; every finished model is appended to a JSON lines file, so an interrupted
run resumes.

    python benchmarks/backdoor_zoo.py                # the full zoo (~45 min on 2 cores)
    python benchmarks/backdoor_zoo.py --no-nc        # scans only (~16 min)
    python benchmarks/backdoor_zoo.py --time 6       # time scan and Neural Cleanse alone on 6 SmallCNN models

The zoo's own timings are whatever the machine gave while it ran; ``--time N`` measures the time ratio with
nothing else running, on the first N SmallCNN models of the zoo (trained models come from the cache), and
writes benchmarks/results/backdoor_zoo_timing.json.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any

import torch
from _common import RESULTS, save, table
from _zoo import ARCHS, DEFENDER, ModelSpec, resumable, signals, trained

from patternscope.analyses.neural_cleanse import NeuralCleanseConfig, neural_cleanse
from patternscope.analyses.scan import ScanConfig, combine_references, mad_rule, scan_model
from patternscope.analyses.scan_decision import CALIBRATIONS, SIGNALS, decide_backdoor
from patternscope.data import load_fashion_mnist, stratified_split
from patternscope.kit import BlendTrigger, PatchTrigger, ScatterTrigger, Trigger, WarpTrigger

# (name, type, trigger, poison rate); targets and seeds differ by architecture
TRIGGERS: list[tuple[str, str, Trigger, float]] = [
    ("patch2-white-tr", "patch", PatchTrigger(2, "top-right"), 0.05),
    ("patch3-white-br", "patch", PatchTrigger(3, "bottom-right"), 0.05),
    ("patch5-grey-bl", "patch", PatchTrigger(5, "bottom-left", colour=0.6), 0.05),
    ("patch3-white-tl", "patch", PatchTrigger(3, "top-left"), 0.05),
    ("patch3-checker-centre", "patterned patch", PatchTrigger(3, "centre", pattern="checker"), 0.05),
    ("patch4-L-br", "patterned patch", PatchTrigger(4, "bottom-right", pattern="L"), 0.05),
    ("blend-noise-a0.10", "blended noise", BlendTrigger(0.10, "noise", seed=1), 0.05),
    ("blend-noise-a0.20", "blended noise", BlendTrigger(0.20, "noise", seed=2), 0.05),
    ("blend-grating-a0.15", "blended image", BlendTrigger(0.15, "grating", seed=3), 0.05),
    ("patch3-white-centre-1.5pct", "low poison rate", PatchTrigger(3, "centre"), 0.015),
    ("warp-s2.5", "warping", WarpTrigger(2.5, seed=4), 0.10),
    ("scatter-12px", "scattered pixels", ScatterTrigger(12, seed=5), 0.10),  # 10 px at 5% did not implant (pilot)
    # added after the 1.5% centre patch did not implant on SmallCNN (ASR 0.33): a low rate that does
    ("patch4-checker-br-2pct", "low poison rate", PatchTrigger(4, "bottom-right", pattern="checker"), 0.02),
]
CLEAN_PER_ARCH = 6
IMPLANTED_ASR = 0.8
NC_ARCH = "smallcnn"
NC_BENCH = NeuralCleanseConfig(seeds=1)
REFERENCE_SEEDS = (300, 301)  # pilot clean models (benchmarks/scan_calibration.py) used as references
OLD_RULE = ScanConfig(rule="mad")


def zoo() -> list[dict[str, Any]]:
    specs = []
    for a, arch in enumerate(ARCHS):
        for i, (name, kind, trig, rate) in enumerate(TRIGGERS):
            spec = ModelSpec(f"{name}-{arch}", arch, trig, (i + 3 * a) % 10, rate, i + 20 * a)
            specs.append({"spec": spec, "type": kind})
        for i in range(CLEAN_PER_ARCH):
            specs.append(
                {"spec": ModelSpec(f"clean-{arch}-{i}", arch, None, None, 0.0, 50 + i + 20 * a), "type": "clean"}
            )
    # added after the first run: LeNet5 (2 epochs) implanted 6 of its 13 triggers below ASR 0.8 at these rates;
    # the same triggers again at 10% poison (other seeds and targets), the low-rate patches left out
    for i, (name, kind, trig, _rate) in enumerate(TRIGGERS):
        if kind != "low poison rate":
            spec = ModelSpec(f"{name}-lenet5-p10", "lenet5", trig, (i + 6) % 10, 0.10, 80 + i)
            specs.append({"spec": spec, "type": kind})
    return specs


def references() -> dict[str, dict[str, list[float]]]:
    """Per architecture, the combined signals of the pilot clean reference models."""
    path = RESULTS / "scan_calibration.json"
    if not path.is_file():
        raise SystemExit("run benchmarks/scan_calibration.py first: the reference mode uses its pilot models")
    models = json.loads(path.read_text())["models"]
    out = {}
    for arch in ARCHS:
        picks = [m for m in models if m["arch"] == arch and not m["backdoored"] and m["seed"] in REFERENCE_SEEDS]
        out[arch] = combine_references([{s: m[s] for s in SIGNALS} for m in picks])
    return out


def rank(values: list[float], target: int) -> int:
    """1 + how many classes have a strictly smaller value than the target (1: the target is the smallest)."""
    return 1 + sum(v < values[target] for i, v in enumerate(values) if i != target)


def old_rule(row: dict[str, Any]) -> list[int]:
    ks = [float(k) for k in row["stamp"]]
    flags = mad_rule(ks, 28 * 28, OLD_RULE.threshold, OLD_RULE.max_ratio)
    return [t for t, flag in enumerate(flags) if flag]


def decisions(row: dict[str, Any], refs: dict[str, dict[str, list[float]]]) -> dict[str, Any]:
    sig = {s: row[s] for s in SIGNALS}
    own = decide_backdoor(sig, 0.05)
    ref = decide_backdoor(sig, 0.05, reference=refs[row["arch"]])
    stamp_only = decide_backdoor({"stamp": row["stamp"]}, 0.05)
    return {
        "self": {"flagged": own.flagged, "p": own.p_value, "statistic": own.statistic, "top": own.top_class},
        "reference": {"flagged": ref.flagged, "p": ref.p_value, "statistic": ref.statistic, "top": ref.top_class},
        "self, stamp only": {"flagged": stamp_only.flagged, "p": stamp_only.p_value},
        "first release rule": {"flagged": old_rule(row)},
    }


def outcome(row: dict[str, Any], flagged: list[int]) -> str:
    if row["backdoored"] and row["attack_success"] < IMPLANTED_ASR:
        return "-"
    if row["backdoored"]:
        return "TP" if row["target"] in flagged else "FN"
    return "FP" if flagged else "TN"


def rates(rows: list[dict[str, Any]], how: str) -> dict[str, Any]:
    outs = [outcome(r, r["decisions"][how]["flagged"]) for r in rows]
    n_bd = sum(o in ("TP", "FN") for o in outs)
    n_clean = sum(o in ("FP", "TN") for o in outs)
    return {
        "tp": outs.count("TP"),
        "backdoored": n_bd,
        "fp": outs.count("FP"),
        "clean": n_clean,
        "tpr": outs.count("TP") / n_bd if n_bd else None,
        "fpr": outs.count("FP") / n_clean if n_clean else None,
        "wrong_class_flags": sum(
            1 for r in rows if r["backdoored"] and any(c != r["target"] for c in r["decisions"][how]["flagged"])
        ),
    }


def timing(n: int, out: str | None) -> int:
    """Scan and Neural Cleanse, one after the other, on the first ``n`` SmallCNN models; the time ratio."""
    data = load_fashion_mnist()
    x, y = data.test_x[DEFENDER], data.test_y[DEFENDER]
    specs = [e["spec"] for e in zoo() if e["spec"].arch == NC_ARCH]
    picks = specs[: n // 2] + [s for s in specs if s.trigger is None][: n - n // 2]
    rows = []
    for spec in picks:
        model, _ = trained(spec, data)
        scan = scan_model(model, x, y, ScanConfig(seed=spec.seed), progress=False)
        stamp_only = scan_model(model, x, y, ScanConfig(seed=spec.seed, additive=False), progress=False)
        search_idx, _ = stratified_split(y, ScanConfig().holdout, spec.seed)
        nc = neural_cleanse(model, x[search_idx], NC_BENCH, labels=y[search_idx], progress=False)
        rows.append(
            {
                "model": spec.name,
                "scan s": round(scan.seconds, 1),
                "stamp only s": round(stamp_only.seconds, 1),
                "NC s": round(nc.seconds, 1),
                "ratio": round(scan.seconds / nc.seconds, 3),
            }
        )
        print(rows[-1], flush=True)
    total = {k: round(sum(r[k] for r in rows), 1) for k in ("scan s", "stamp only s", "NC s")}
    ratio = round(total["scan s"] / total["NC s"], 3)
    ratio_stamp = round(total["stamp only s"] / total["NC s"], 3)
    print(table(rows, list(rows[0])))
    print(f"scan (both signals) / NC: {ratio}; stamp only / NC: {ratio_stamp}")
    path = save(
        "backdoor_zoo_timing",
        {"models": rows, "total": total, "ratio_scan_over_nc": ratio, "ratio_stamp_only_over_nc": ratio_stamp},
        out,
    )
    print(f"wrote {path}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--no-nc", action="store_true", help="skip Neural Cleanse")
    parser.add_argument("--time", type=int, default=None, metavar="N", help="only time scan vs NC on N models")
    parser.add_argument("--only", default=None, help="comma-separated model names (default all)")
    parser.add_argument("--progress-file", default=str(RESULTS / "backdoor_zoo.partial.jsonl"))
    parser.add_argument("--out", default=None, help="JSON output (default benchmarks/results/backdoor_zoo.json)")
    args = parser.parse_args(argv)
    torch.set_num_threads(max(1, torch.get_num_threads()))
    if args.time:
        return timing(args.time, args.out)
    refs = references()
    data = load_fashion_mnist()
    x, y = data.test_x[DEFENDER], data.test_y[DEFENDER]
    entries = zoo()
    if args.only:
        wanted = set(args.only.split(","))
        entries = [e for e in entries if e["spec"].name in wanted]
    kinds = {e["spec"].name: e["type"] for e in entries}

    def run(spec: ModelSpec) -> dict[str, Any]:
        model, info = trained(spec, data)
        report = scan_model(model, x, y, ScanConfig(seed=spec.seed), progress=False)
        row = {**spec.describe(), "type": kinds[spec.name], **info, **signals(report)}
        if spec.arch == NC_ARCH and not args.no_nc:
            search_idx, _ = stratified_split(y, ScanConfig().holdout, spec.seed)
            nc = neural_cleanse(model, x[search_idx], NC_BENCH, labels=y[search_idx], progress=False)
            row |= {"nc_flagged": nc.flagged, "nc_s": round(nc.seconds, 1), "nc_l1": [round(v, 2) for v in nc.l1]}
        return row

    rows = resumable(Path(args.progress_file), [e["spec"] for e in entries], run)
    for r in rows:
        r["decisions"] = decisions(r, refs)
        if "nc_flagged" in r:
            r["decisions"]["neural cleanse"] = {"flagged": r["nc_flagged"]}
    implanted = [r for r in rows if not r["backdoored"] or r["attack_success"] >= IMPLANTED_ASR]
    failed = [f"{r['model']} (ASR {r['attack_success']:.2f})" for r in rows if r not in implanted]

    shown = []
    for r in rows:
        t = r["target"]
        line = {
            "model": r["model"],
            "target": "-" if t is None else t,
            "acc": r["accuracy"],
            "ASR": "-" if r["attack_success"] is None else round(r["attack_success"], 3),
        }
        for how, label in (("self", "self"), ("reference", "ref"), ("first release rule", "old")):
            line[label] = ",".join(map(str, r["decisions"][how]["flagged"])) or "-"
        line["p (self)"] = f"{r['decisions']['self']['p']:.2g}"
        line["rank k/L2"] = "-" if t is None else f"{rank(r['stamp'], t)}/{rank(r['additive'], t)}"
        line["NC"] = ",".join(map(str, r["nc_flagged"])) or "-" if "nc_flagged" in r else "n/a"
        line["NC rank"] = rank(r["nc_l1"], t) if "nc_l1" in r and t is not None else "-"
        line["scan s"] = r["scan_s"]
        line["NC s"] = r.get("nc_s", "-")
        shown.append(line)
    print(table(shown, list(shown[0])))

    hows = ["self", "reference", "self, stamp only", "first release rule"]
    summary: dict[str, Any] = {"implant_failed": failed, "by_rule": {h: rates(implanted, h) for h in hows}}
    nc_rows = [r for r in implanted if "nc_flagged" in r]
    if nc_rows:
        summary["neural_cleanse_on_" + NC_ARCH] = rates(nc_rows, "neural cleanse")
        for h in ("self", "reference"):
            summary[f"{h}_on_{NC_ARCH}"] = rates(nc_rows, h)
        timed = [r for r in rows if "nc_s" in r]
        summary["time_ratio_scan_over_nc"] = round(sum(r["scan_s"] for r in timed) / sum(r["nc_s"] for r in timed), 3)
    by_type: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in implanted:
        by_type[r["type"]].append(r)
    per_type = []
    for kind, group in by_type.items():
        bd = [r for r in group if r["backdoored"]]
        line = {"type": kind, "models": len(group)}
        for h, label in (("self", "self"), ("reference", "ref")):
            o = [outcome(r, r["decisions"][h]["flagged"]) for r in group]
            line[label] = f"{o.count('TP')}/{len(bd)}" if bd else f"FP {o.count('FP')}/{len(group)}"
        if bd:
            line["rank1 k"] = sum(rank(r["stamp"], r["target"]) == 1 for r in bd)
            line["rank1 L2"] = sum(rank(r["additive"], r["target"]) == 1 for r in bd)
            line["rank1 score"] = sum(r["decisions"]["self"]["top"] == r["target"] for r in bd)
            nc_bd = [r for r in bd if "nc_l1" in r]
            line["rank1 NC"] = f"{sum(rank(r['nc_l1'], r['target']) == 1 for r in nc_bd)}/{len(nc_bd)}"
        line["scan s"] = round(sum(r["scan_s"] for r in group) / len(group), 1)
        per_type.append(line)
    summary["per_type"] = per_type
    print()
    print(
        table(per_type, ["type", "models", "self", "ref", "rank1 k", "rank1 L2", "rank1 score", "rank1 NC", "scan s"])
    )
    bd_all = [r for r in implanted if r["backdoored"]]
    summary["target_ranked_first_by_score"] = (
        f"{sum(r['decisions']['self']['top'] == r['target'] for r in bd_all)}/{len(bd_all)}"
    )
    print()
    for h in hows:
        s = summary["by_rule"][h]
        print(
            f"{h:<20} TPR {s['tp']}/{s['backdoored']}  FPR {s['fp']}/{s['clean']}  extra flags {s['wrong_class_flags']}"
        )
    if nc_rows:
        s = summary["neural_cleanse_on_" + NC_ARCH]
        print(f"Neural Cleanse ({NC_ARCH}) TPR {s['tp']}/{s['backdoored']}  FPR {s['fp']}/{s['clean']}")
        print(f"scan time / NC time ({NC_ARCH} models): {summary['time_ratio_scan_over_nc']:.3f}")
    if failed:
        print(f"left out (ASR < {IMPLANTED_ASR}): {', '.join(failed)}")
    path = save(
        "backdoor_zoo",
        {
            "data": "Fashion-MNIST (Debian dataset-fashion-mnist); defender images test 0-2999, ASR on 3000-9999",
            "scan_config": ScanConfig().__dict__,
            "calibrations": {k: c.to_dict() for k, c in CALIBRATIONS.items()},
            "neural_cleanse_config": NC_BENCH.__dict__,
            "summary": summary,
            "models": rows,
        },
        args.out,
    )
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
