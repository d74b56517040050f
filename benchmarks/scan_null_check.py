"""Does the scan's stated false-positive rate hold at any class count? Clean models of C = 10, 26, 100 and 1,000
classes, simulated two ways, decided by the current rule and by the first release's:

- ``normal``: log sizes drawn from a normal distribution with a random typical size and spread per model;
- ``resampled``: each class a (stamp, additive) pair drawn with replacement from the real clean models' classes
  (log values centred on their model's mean; the dev zoo's clean models, benchmarks/scan_zoo.py), so the real
  spread, the tails and the two signals' correlation are kept.

The first release's rule (a class score ln(median / v) / spread with spreads fitted on 16 Fashion-MNIST pilots,
the largest over classes and signals, against a Gumbel fitted to those 10-class pilots' maxima) is reproduced
here from its published constants for comparison. Rates carry Wilson 95% intervals.

    python benchmarks/scan_null_check.py          # about a minute
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from typing import Any

import numpy as np
from _common import RESULTS, save, table

from patternscope.analyses.scan_decision import SIGNALS, decide_backdoor
from patternscope.core.metrics import wilson_interval

CLASS_COUNTS = (10, 26, 100, 1000)
MODELS = {10: 2000, 26: 2000, 100: 1000, 1000: 300}
FPR = 0.05
# the first release's self-mode constants (scan_decision.CALIBRATIONS["self:stamp+additive"] in 0.3)
OLD_SPREAD = {"stamp": 0.3582, "additive": 0.1109}
OLD_LOC, OLD_SCALE = 1.8528, 0.5275


def old_rule_flags(model: dict[str, list[float]]) -> bool:
    """The first release's verdict: the largest class score against its Gumbel, at FPR 5%."""
    stat = -math.inf
    for s in SIGNALS:
        logs = np.log(model[s])
        stat = max(stat, float(((np.median(logs) - logs) / OLD_SPREAD[s]).max()))
    p = 1.0 - math.exp(-math.exp(-(stat - OLD_LOC) / OLD_SCALE))
    return p < FPR


def real_classes() -> np.ndarray:
    """(stamp, additive) log values of every clean dev-zoo model's classes, centred per model: N x 2."""
    path = RESULTS / "scan_zoo" / "dev.jsonl"
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    pairs = []
    for r in rows:
        if r["backdoored"]:
            continue
        logs = np.log(np.array([r["stamp"], r["additive"]], dtype=float)).T
        pairs.append(logs - logs.mean(0))
    return np.concatenate(pairs)


def simulate(kind: str, classes: int, count: int, rng: np.random.Generator, pool: np.ndarray) -> list[dict]:
    out = []
    for _ in range(count):
        if kind == "normal":
            model = {}
            for s, typical, spread in (("stamp", 80.0, 0.35), ("additive", 7.0, 0.15)):
                sd = spread * rng.uniform(0.5, 1.5)
                model[s] = np.exp(math.log(typical) + sd * rng.standard_normal(classes)).tolist()
        else:
            picks = pool[rng.integers(0, len(pool), classes)]
            model = {"stamp": np.exp(math.log(80.0) + picks[:, 0]).tolist()}
            model["additive"] = np.exp(math.log(7.0) + picks[:, 1]).tolist()
        out.append(model)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)
    pool = real_classes()
    rows: list[dict[str, Any]] = []
    for kind in ("normal", "resampled"):
        for classes in CLASS_COUNTS:
            rng = np.random.default_rng(classes + (0 if kind == "normal" else 1))
            models = simulate(kind, classes, MODELS[classes], rng, pool)
            new = sum(bool(decide_backdoor(m, fpr=FPR).flagged) for m in models)
            old = sum(old_rule_flags(m) for m in models)
            n = len(models)
            rows.append(
                {
                    "clean models": kind,
                    "classes": classes,
                    "n": n,
                    "flagged now": round(new / n, 3),
                    "now 95%": [round(v, 3) for v in wilson_interval(new / n, n)],
                    "flagged by 0.3's rule": round(old / n, 3),
                    "0.3 95%": [round(v, 3) for v in wilson_interval(old / n, n)],
                }
            )
            print(rows[-1], flush=True)
    print(table(rows, list(rows[0])))
    path = save(
        "scan_null_check",
        {"fpr": FPR, "resampled_from": f"{len(pool)} classes of the dev zoo's clean models", "rows": rows},
        args.out,
    )
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
