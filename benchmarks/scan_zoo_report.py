"""The backdoor scan's decision on the zoos of benchmarks/scan_zoo.py: TPR, FPR and AUROC with intervals, per
zoo, architecture, data set and trigger kind, beside Neural Cleanse; ROC curves as a figure and JSON.

Every decision is recomputed from the stored per-class values with the library's own code
(:func:`patternscope.analyses.scan_decision.decide_backdoor`), so the numbers are those a user's scan gives:

- ``self``: the default, a null fitted to each model's own classes;
- ``reference``: each class against the same class in two clean models of the same architecture and data
  (the zoo's clean models 0 and 1; those two are compared with clean models 2 and 3);
- ``pilots``: self mode with the shipped Fashion-MNIST pilot spreads (optional tightening; stated to hold only
  for models like the pilots);
- Neural Cleanse where it ran (its continuous score: the largest small-side MAD anomaly index of the mask norms).

A model counts when its trigger implanted (attack success >= 0.8 on held-out images; the others are listed).
The per-model score for ROC curves is -log10 p (Neural Cleanse: its anomaly index). AUROC intervals: 2,000
bootstrap resamples of the models (stratified by clean / backdoored); rates: Wilson 95%.

    python benchmarks/scan_zoo_report.py                 # every zoo found in benchmarks/results/scan_zoo/
    python benchmarks/scan_zoo_report.py --zoo confirm
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np
from _common import FIGURES, RESULTS, save, table

from patternscope.analyses.anomaly import anomaly_indices
from patternscope.analyses.scan import at_cap, combine_references, signal_caps
from patternscope.analyses.scan_decision import SIGNALS, decide_backdoor, named_calibration
from patternscope.core.metrics import wilson_interval

ZOO_DIR = RESULTS / "scan_zoo"
IMPLANTED_ASR = 0.8
FPR = 0.05
HOWS = ("self", "reference", "pilots", "neural cleanse")


def load(zoo: str) -> list[dict[str, Any]]:
    """A zoo's rows: ``<zoo>.jsonl`` and the parts ``<zoo>.<part>.jsonl`` of parallel runs."""
    rows = []
    for path in sorted(ZOO_DIR.glob(f"{zoo}.jsonl")) + sorted(ZOO_DIR.glob(f"{zoo}.*.jsonl")):
        rows += [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return rows


def group_key(row: dict[str, Any]) -> tuple[str, str]:
    return row["data"], row["arch"]


def reference_rows(rows: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    """Per model key, the two clean models of its architecture and data it is compared with in reference mode."""
    clean: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
    for r in rows:
        if not r["backdoored"]:
            clean[group_key(r)].append(r)
    out = {}
    for r in rows:
        pool = sorted(clean[group_key(r)], key=lambda c: c["seed"])
        others = [c for c in pool if c["key"] != r["key"]]
        out[r["key"]] = others[:2] if len(others) >= 2 else []
    return out


def nc_score(row: dict[str, Any]) -> float | None:
    """Neural Cleanse's per-model score: the largest small-side MAD anomaly index of its mask L1 norms."""
    if "nc_l1" not in row:
        return None
    idx = anomaly_indices(row["nc_l1"])
    return max(-v if v == v else 0.0 for v in idx)


def decisions(row: dict[str, Any], refs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    sig = {s: row[s] for s in SIGNALS}
    caps = signal_caps((1, 28, 28))
    capped = {s: [at_cap(v, caps[s]) for v in row[s]] for s in SIGNALS}
    out = {}
    own = decide_backdoor(sig, fpr=FPR, capped=capped)
    out["self"] = {"flagged": own.flagged, "p": own.p_value, "score": own.score, "top": own.top_class}
    if refs:
        reference = combine_references([{s: c[s] for s in SIGNALS} for c in refs], caps)
        both = {s: [m or at_cap(v, caps[s]) for m, v in zip(capped[s], reference[s], strict=True)] for s in SIGNALS}
        ref = decide_backdoor(sig, fpr=FPR, reference=reference, capped=both)
        out["reference"] = {"flagged": ref.flagged, "p": ref.p_value, "score": ref.score, "top": ref.top_class}
    pilots = decide_backdoor(sig, fpr=FPR, calibration=named_calibration("fashion-mnist-pilots", "self"), capped=capped)
    out["pilots"] = {"flagged": pilots.flagged, "p": pilots.p_value, "score": pilots.score, "top": pilots.top_class}
    if "nc_flagged" in row:
        out["neural cleanse"] = {"flagged": row["nc_flagged"], "score": nc_score(row)}
    return out


def outcome(row: dict[str, Any], flagged: list[int]) -> str:
    if row["backdoored"]:
        return "TP" if row["target"] in flagged else "FN"
    return "FP" if flagged else "TN"


def auroc(pos: list[float], neg: list[float]) -> float | None:
    """The probability that a backdoored model scores above a clean one (ties count half)."""
    if not pos or not neg:
        return None
    p, n = np.asarray(pos)[:, None], np.asarray(neg)[None, :]
    return float(((p > n).sum() + 0.5 * (p == n).sum()) / (p.size * n.size))


def auroc_interval(pos: list[float], neg: list[float], resamples: int = 2000) -> list[float] | None:
    if not pos or not neg:
        return None
    rng = np.random.default_rng(0)
    p, n = np.asarray(pos), np.asarray(neg)
    values = []
    for _ in range(resamples):
        values.append(auroc(list(rng.choice(p, p.size)), list(rng.choice(n, n.size))))
    return [round(float(np.quantile(values, 0.025)), 3), round(float(np.quantile(values, 0.975)), 3)]


def summarise(rows: list[dict[str, Any]], how: str) -> dict[str, Any]:
    scored = [r for r in rows if how in r["decisions"]]
    outs = [outcome(r, r["decisions"][how]["flagged"]) for r in scored]
    tp, fn, fp, tn = (outs.count(k) for k in ("TP", "FN", "FP", "TN"))
    pos = [r["decisions"][how]["score"] for r in scored if r["backdoored"]]
    neg = [r["decisions"][how]["score"] for r in scored if not r["backdoored"]]
    wrong = sum(1 for r in scored if r["backdoored"] and any(c != r["target"] for c in r["decisions"][how]["flagged"]))
    out: dict[str, Any] = {"models": len(scored), "backdoored": tp + fn, "clean": fp + tn, "tp": tp, "fp": fp}
    if tp + fn:
        out["tpr"] = round(tp / (tp + fn), 3)
        out["tpr_interval"] = [round(v, 3) for v in wilson_interval(tp / (tp + fn), tp + fn)]
        out["wrong_class_flags"] = wrong
    if fp + tn:
        out["fpr"] = round(fp / (fp + tn), 3)
        out["fpr_interval"] = [round(v, 3) for v in wilson_interval(fp / (fp + tn), fp + tn)]
    a = auroc(pos, neg)
    if a is not None:
        out["auroc"] = round(a, 3)
        out["auroc_interval"] = auroc_interval(pos, neg)
    if how != "neural cleanse" and pos:
        out["target_ranked_first"] = sum(r["decisions"][how]["top"] == r["target"] for r in scored if r["backdoored"])
    return out


def roc_points(rows: list[dict[str, Any]], how: str) -> dict[str, list[float]]:
    scored = [r for r in rows if how in r["decisions"]]
    pos = sorted((r["decisions"][how]["score"] for r in scored if r["backdoored"]), reverse=True)
    neg = [r["decisions"][how]["score"] for r in scored if not r["backdoored"]]
    cuts = sorted({*pos, *neg}, reverse=True)
    fpr, tpr = [0.0], [0.0]
    for c in cuts:
        fpr.append(sum(v >= c for v in neg) / max(1, len(neg)))
        tpr.append(sum(v >= c for v in pos) / max(1, len(pos)))
    return {"fpr": [*fpr, 1.0], "tpr": [*tpr, 1.0]}


def figure(curves: dict[str, dict[str, dict[str, list[float]]]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    zoos = list(curves)
    fig, axes = plt.subplots(1, len(zoos), figsize=(4.2 * len(zoos), 4.0), squeeze=False)
    for ax, zoo in zip(axes[0], zoos, strict=True):
        for how, pts in curves[zoo].items():
            ax.step(pts["fpr"], pts["tpr"], where="post", label=how)
        ax.plot([0, 1], [0, 1], ":", color="grey", lw=0.8)
        ax.set_title(f"{zoo} zoo")
        ax.set_xlabel("false-positive rate (clean models flagged)")
        ax.set_ylabel("true-positive rate (backdoors flagged)")
        ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--zoo", default=None, help="one zoo (default: every zoo found)")
    parser.add_argument("--out", default=None, help="JSON output (default benchmarks/results/scan_zoo.json)")
    parser.add_argument("--no-figure", action="store_true")
    args = parser.parse_args(argv)
    zoos = [args.zoo] if args.zoo else sorted({p.name.split(".")[0] for p in ZOO_DIR.glob("*.jsonl")})
    payload: dict[str, Any] = {"fpr": FPR, "implanted_asr": IMPLANTED_ASR, "zoos": {}}
    curves: dict[str, dict[str, dict[str, list[float]]]] = {}
    pooled_rows: dict[str, list[dict[str, Any]]] = {}
    for zoo in zoos:
        rows = load(zoo)
        refs = reference_rows(rows)
        for r in rows:
            r["decisions"] = decisions(r, refs[r["key"]])
        failed = [r for r in rows if r["backdoored"] and r["attack_success"] < IMPLANTED_ASR]
        kept = [r for r in rows if r not in failed]
        entry: dict[str, Any] = {
            "models": len(rows),
            "implant_failed": [f"{r['key']} (ASR {r['attack_success']:.2f})" for r in failed],
            "overall": {h: summarise(kept, h) for h in HOWS},
        }
        groups: dict[str, list[dict[str, Any]]] = defaultdict(list)
        kinds: dict[str, list[dict[str, Any]]] = defaultdict(list)
        for r in kept:
            groups[f"{r['data']} / {r['arch']} ({r['classes']} classes)"].append(r)
            if r["backdoored"]:
                kinds[r["type"]].append(r)
        entry["by_model_family"] = {g: {h: summarise(v, h) for h in HOWS} for g, v in groups.items()}
        clean = [r for r in kept if not r["backdoored"]]
        entry["by_trigger"] = {k: {h: summarise(v + clean, h) for h in HOWS} for k, v in kinds.items()}
        timed = [r for r in kept if "nc_s" in r]
        if timed:
            entry["time_ratio_scan_over_nc"] = round(sum(r["scan_s"] for r in timed) / sum(r["nc_s"] for r in timed), 3)
        entry["per_model"] = [
            {
                "key": r["key"],
                "type": r["type"],
                "target": r["target"],
                "asr": r["attack_success"],
                "accuracy": round(r["accuracy"], 3),
                "scan_s": r["scan_s"],
                **{h: r["decisions"][h] for h in HOWS if h in r["decisions"]},
            }
            for r in rows
        ]
        payload["zoos"][zoo] = entry
        pooled_rows[zoo] = kept
        curves[zoo] = {h: roc_points(kept, h) for h in HOWS if any(h in r["decisions"] for r in kept)}
        shown = []
        for h in HOWS:
            s = entry["overall"][h]
            if not s["models"]:
                continue
            shown.append(
                {
                    "zoo": zoo,
                    "decision": h,
                    "TPR": f"{s.get('tp', 0)}/{s['backdoored']} {s.get('tpr_interval', '')}",
                    "FPR": f"{s.get('fp', 0)}/{s['clean']} {s.get('fpr_interval', '')}",
                    "AUROC": f"{s.get('auroc', '-')} {s.get('auroc_interval', '')}",
                }
            )
        print(table(shown, ["zoo", "decision", "TPR", "FPR", "AUROC"]))
        fam = []
        for g, by in entry["by_model_family"].items():
            s = by["self"]
            ref = by["reference"]
            fam.append(
                {
                    "family": g,
                    "self TPR": f"{s.get('tp', 0)}/{s['backdoored']}",
                    "self FPR": f"{s.get('fp', 0)}/{s['clean']}",
                    "self AUROC": s.get("auroc", "-"),
                    "ref TPR": f"{ref.get('tp', 0)}/{ref['backdoored']}",
                    "ref FPR": f"{ref.get('fp', 0)}/{ref['clean']}",
                    "ref AUROC": ref.get("auroc", "-"),
                    "target first (self / ref)": f"{s.get('target_ranked_first', 0)} / "
                    f"{ref.get('target_ranked_first', 0)} of {s['backdoored']}",
                }
            )
        print(table(fam, list(fam[0])) if fam else "")
        kind_rows = []
        for k, by in entry["by_trigger"].items():
            line = {"trigger": k}
            for h in HOWS:
                s = by[h]
                if s["backdoored"]:
                    line[h] = f"{s['tp']}/{s['backdoored']}"
            kind_rows.append(line)
        print(table(kind_rows, ["trigger", *HOWS]) if kind_rows else "")
        if failed:
            print("left out (trigger did not implant):", ", ".join(entry["implant_failed"]))
        print()
    unseen = [z for z in payload["zoos"] if z.startswith("confirm")]
    if len(unseen) > 1:  # the confirmation zoos pooled: every architecture the decision was not tuned on
        pooled = [r for z in unseen for r in pooled_rows[z]]
        payload["confirmation_pooled"] = {"zoos": unseen, **{h: summarise(pooled, h) for h in HOWS}}
        shown = []
        for h in HOWS:
            s = payload["confirmation_pooled"][h]
            if s["models"]:
                shown.append(
                    {
                        "zoos": "+".join(unseen),
                        "decision": h,
                        "TPR": f"{s.get('tp', 0)}/{s['backdoored']} {s.get('tpr_interval', '')}",
                        "FPR": f"{s.get('fp', 0)}/{s['clean']} {s.get('fpr_interval', '')}",
                        "AUROC": f"{s.get('auroc', '-')} {s.get('auroc_interval', '')}",
                    }
                )
        print(table(shown, ["zoos", "decision", "TPR", "FPR", "AUROC"]))
        print()
    payload["roc"] = curves
    if not args.no_figure:
        figure(curves, FIGURES / "scan_zoo_roc.png")
    path = save("scan_zoo", payload, args.out)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
