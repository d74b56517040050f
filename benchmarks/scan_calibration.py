"""Calibrate the backdoor scan's decision on pilot clean models (none of them in the zoo benchmark).

Trains clean Fashion-MNIST models of both kit architectures (SmallCNN, LeNet5) with seeds 300+ (the zoo uses
0-99), scans each with the default settings, and fits the clean null of the scan statistic for each mode and
set of signals (:func:`patternscope.analyses.scan_decision.calibrate`): self mode, and reference mode where each
pilot model is compared with two other pilot models of its architecture. Prints the constants that
``patternscope.analyses.scan_decision.CALIBRATIONS`` holds and writes benchmarks/results/scan_calibration.json.
A few pilot backdoored models (seeds 400+) are scanned too, to see the rule fire before the zoo is run.

    python benchmarks/scan_calibration.py              # 16 clean + 6 backdoored pilot models (~10 min, 2 cores)
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import torch
from _common import RESULTS, save, table
from _zoo import ARCHS, DEFENDER, ModelSpec, resumable, signals, trained

from patternscope.analyses.scan import ScanConfig, combine_references, scan_model
from patternscope.analyses.scan_decision import SIGNALS, calibrate, calibration_key, decide_backdoor
from patternscope.data import load_fashion_mnist
from patternscope.kit import BlendTrigger, PatchTrigger, ScatterTrigger, WarpTrigger

PER_ARCH = 8
PILOT_BACKDOORED = [
    ("pilot-patch3", PatchTrigger(3, "bottom-right"), 1, 0.05),
    ("pilot-blend-noise", BlendTrigger(0.15, "noise", seed=11), 3, 0.05),
    ("pilot-blend-grating", BlendTrigger(0.12, "grating", seed=12), 5, 0.05),
    ("pilot-scatter", ScatterTrigger(10, seed=13), 7, 0.05),
    ("pilot-warp", WarpTrigger(2.5, seed=14), 9, 0.1),
    ("pilot-L", PatchTrigger(4, "top-right", pattern="L"), 0, 0.05),
]
SIGNAL_SETS = (SIGNALS, ("stamp",))


def pilot_specs() -> list[ModelSpec]:
    clean = [
        ModelSpec(f"pilot-clean-{arch}-{seed}", arch, None, None, 0.0, seed)
        for arch in ARCHS
        for seed in range(300, 300 + PER_ARCH)
    ]
    bad = [
        ModelSpec(f"{name}-{arch}", arch, trig, target, rate, 400 + i)
        for i, (name, trig, target, rate) in enumerate(PILOT_BACKDOORED)
        for arch in ARCHS
        if (i % 2 == 0) == (arch == "smallcnn")
    ]
    return clean + bad


def reference_for(rows: list[dict[str, Any]], i: int) -> dict[str, list[float]]:
    """The two next clean pilot models of the same architecture (cyclically), combined."""
    same = [r for r in rows if r["arch"] == rows[i]["arch"]]
    j = same.index(rows[i])
    picks = [same[(j + 1) % len(same)], same[(j + 2) % len(same)]]
    return combine_references([{s: p[s] for s in SIGNALS} for p in picks])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--progress-file", default=str(RESULTS / "scan_calibration.partial.jsonl"))
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)
    torch.set_num_threads(max(1, torch.get_num_threads()))
    data = load_fashion_mnist()
    x, y = data.test_x[DEFENDER], data.test_y[DEFENDER]

    def run(spec: ModelSpec) -> dict[str, Any]:
        model, info = trained(spec, data)
        report = scan_model(model, x, y, ScanConfig(seed=spec.seed), progress=False)
        return {**spec.describe(), **info, **signals(report)}

    rows = resumable(Path(args.progress_file), pilot_specs(), run)
    clean = [r for r in rows if not r["backdoored"]]
    source = f"{len(clean)} clean Fashion-MNIST pilot models (SmallCNN and LeNet5, seeds 300-{299 + PER_ARCH})"
    calibrations = {}
    for sigs in SIGNAL_SETS:
        models = [{s: r[s] for s in sigs} for r in clean]
        calibrations[calibration_key("self", sigs)] = calibrate(models, sigs, source=source)
        refs = [reference_for(clean, i) for i in range(len(clean))]
        calibrations[calibration_key("reference", sigs)] = calibrate(
            models, sigs, [{s: ref[s] for s in sigs} for ref in refs], source=source + ", 2 references each"
        )
    shown = []
    for key, cal in calibrations.items():
        shown.append(
            {
                "calibration": key,
                **{f"spread {s}": round(v, 4) for s, v in cal.spread.items()},
                "gumbel loc": round(cal.loc, 4),
                "gumbel scale": round(cal.scale, 4),
                "threshold @5%": round(cal.threshold(0.05), 3),
            }
        )
    print(table(shown, sorted({k for r in shown for k in r}, key=lambda k: (k != "calibration", k))))
    print("\nCALIBRATIONS = {")
    for key, cal in calibrations.items():
        spread = ", ".join(f'"{s}": {v:.4f}' for s, v in cal.spread.items())
        own = ", ".join(f'"{s}": {v:.4f}' for s, v in (cal.self_spread or {}).items())
        numbers = f"{cal.loc:.4f}, {cal.scale:.4f}, {cal.models}, SOURCE" + (f", {{{own}}}" if own else "")
        print(f'    "{key}": ScanCalibration("{cal.mode}", {{{spread}}}, {numbers}),')
    print("}")
    # the pilot models under the fitted rule (self mode, both signals), to see it fire before the zoo
    checks = []
    fitted = calibrations[calibration_key("self", SIGNALS)]
    for r in rows:
        d = decide_backdoor({s: r[s] for s in SIGNALS}, 0.05, calibration=fitted)
        checks.append(
            {
                "model": r["model"],
                "target": r["target"] if r["target"] is not None else "-",
                "ASR": "-" if r["attack_success"] is None else round(r["attack_success"], 3),
                "flagged": ",".join(map(str, d.flagged)) or "-",
                "statistic": round(d.statistic, 2),
                "p": round(d.p_value, 4),
                "scan s": r["scan_s"],
            }
        )
    print(table(checks, list(checks[0])))
    path = save(
        "scan_calibration",
        {
            "data": "Fashion-MNIST (Debian dataset-fashion-mnist), defender images test 0-2999",
            "scan_config": ScanConfig().__dict__,
            "calibrations": {k: c.to_dict() for k, c in calibrations.items()},
            "pilot_checks": checks,
            "models": rows,
        },
        args.out,
    )
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
