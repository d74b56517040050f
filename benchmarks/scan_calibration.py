"""The shipped pilot calibration of the scan (optional tightening, ``--calibration fashion-mnist-pilots``): each
signal's spread measured on clean pilot models, for models like them.

The default decision needs no calibration (its null is fitted to each model's own classes). A calibration
replaces the spread a model's own classes give with one pooled over clean pilot models: a tighter test that
holds only for models whose classes spread like the pilots' (10-class Fashion-MNIST CNNs here).

The pilots are 16 clean Fashion-MNIST models of the dev zoo (SmallCNN and LeNet5, seeds 300-307), scanned by
``benchmarks/scan_zoo.py --zoo dev`` with the default settings; this script reads their per-class values, fits
the spreads (:func:`patternscope.analyses.scan_decision.calibrate`; reference mode: each pilot against the next
two pilots of its architecture), prints the constants ``CALIBRATIONS`` holds and writes
benchmarks/results/scan_calibration.json (a test checks that the shipped constants are these).

    python benchmarks/scan_zoo.py --zoo dev        # first (scans every dev model, the pilots among them)
    python benchmarks/scan_calibration.py
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from _common import RESULTS, save

from patternscope.analyses.scan import combine_references
from patternscope.analyses.scan_decision import SIGNALS, calibrate

SOURCE = "16 clean Fashion-MNIST pilot models (SmallCNN and LeNet5, seeds 300-307)"


def pilots() -> list[dict[str, Any]]:
    path = RESULTS / "scan_zoo" / "dev.jsonl"
    if not path.is_file():
        raise SystemExit("run benchmarks/scan_zoo.py --zoo dev first: the pilots are dev zoo models")
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    found = sorted((r for r in rows if r["model"].startswith("pilot-clean-")), key=lambda r: (r["arch"], r["seed"]))
    if len(found) != 16:
        raise SystemExit(f"the dev zoo holds {len(found)} of the 16 pilot models; finish it first")
    return found


def reference_for(rows: list[dict[str, Any]], i: int) -> dict[str, list[float]]:
    """The next two clean pilot models of the same architecture (cyclically), combined."""
    same = [r for r in rows if r["arch"] == rows[i]["arch"]]
    j = same.index(rows[i])
    picks = [same[(j + 1) % len(same)], same[(j + 2) % len(same)]]
    return combine_references([{s: p[s] for s in SIGNALS} for p in picks])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default=None)
    parser.parse_args(argv)
    rows = pilots()
    models = [{s: r[s] for s in SIGNALS} for r in rows]
    own = calibrate(models, signals=SIGNALS, source=SOURCE)
    refs = [reference_for(rows, i) for i in range(len(rows))]
    against = calibrate(models, signals=SIGNALS, references=refs, source=SOURCE + ", 2 references each")
    for cal in (own, against):
        spread = ", ".join(f'"{s}": {v:.4f}' for s, v in cal.spread.items())
        print(f'"{cal.mode}": ScanCalibration("{cal.mode}", {{{spread}}}, {cal.models}, {cal.classes}, ...)')
    path = save(
        "scan_calibration",
        {
            "data": "Fashion-MNIST (Debian dataset-fashion-mnist), defender images test 0-2999",
            "pilots": [r["key"] for r in rows],
            "calibrations": {"fashion-mnist-pilots": {"self": own.to_dict(), "reference": against.to_dict()}},
        },
        parser.parse_args(argv).out,
    )
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
