"""How the scan's self-mode decision was chosen, on the dev zoo only (benchmarks/scan_zoo.py --zoo dev): the
variants measured and why they were or were not adopted. Nothing here touches the confirmation zoo.

1. The null's shape (normal, logistic, Student t with 5 degrees of freedom) and the location/scale estimator
   of the other classes (mean and SD; with the top 10% or both 10% tails trimmed): the flag rate on clean
   models resampled from the dev zoo's real clean classes (C = 10, 26, 100), and the TPR, FPR and AUROC on the
   dev zoo's models.
2. Signals that might tell a naturally easy class from a trigger without clean references, each scored by how
   well it separates the backdoor target from the easiest class of a clean model (AUROC; 0.5 is chance):
   - the steepness of a stamp's success curve, ln(k at 90% / k at 10%) (a trigger works all at once);
   - the lowest per-source-class success of the cut stamp (a trigger sends every source class to the
     target, a natural shortcut only its look-alikes);
   - the share of a class's pattern size a whole-canvas blend explains: a regression of each class's log size
     on the blend weight at which its canvases reach 50% (``--covariates``, which reloads the models);
   - a joint (Mahalanobis) test of the two signals, which are correlated over a clean model's classes.

    python benchmarks/scan_exploration.py                  # from the stored scans (seconds)
    python benchmarks/scan_exploration.py --covariates     # also the blend covariate (about 30 s a model)
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

import numpy as np
import torch
from _common import RESULTS, save, table
from _zoo import defender_slice, pilot_specs, trained, zoo
from scan_null_check import real_classes, simulate

from patternscope.analyses.scan import ScanConfig, verification_split
from patternscope.analyses.scan_decision import SIGNALS
from patternscope.data import stratified_split
from patternscope.data.datasets import load_fashion_mnist

DEV = RESULTS / "scan_zoo" / "dev.jsonl"
ALPHAS = [0.02 * 1.36**i for i in range(12)]


def auroc(pos: list[float], neg: list[float]) -> float:
    p, n = np.asarray(pos)[:, None], np.asarray(neg)[None, :]
    return float(((p > n).sum() + 0.5 * (p == n).sum()) / (p.size * n.size))


def rows() -> list[dict[str, Any]]:
    out = [json.loads(line) for line in DEV.read_text().splitlines() if line.strip()]
    return [r for r in out if not r["backdoored"] or r["attack_success"] >= 0.8]


# 1. shape and estimator -------------------------------------------------------------------------------------


def trimmed_z(logs: np.ndarray, top: float, bottom: float) -> np.ndarray:
    """Every class's z against the mean and SD of the other classes after the extreme, trimmed."""
    s = np.sort(logs, -1)
    rest = s[..., 1:]
    n = rest.shape[-1]
    lo, hi = int(np.ceil(bottom * n)), n - int(np.ceil(top * n))
    rest = rest[..., lo:hi]
    return (rest.mean(-1)[..., None] - logs) / rest.std(-1, ddof=1)[..., None]


_NULLS: dict[tuple, np.ndarray] = {}


def variant_p(model: dict[str, list[float]], shape: str, top: float, bottom: float) -> tuple[float, list[int]]:
    """A variant's model p-value and flagged classes (Sidak over the two signals, FPR 5%)."""
    classes = len(model["stamp"])
    key = (classes, shape, top, bottom)
    if key not in _NULLS:
        rng = np.random.default_rng(5)
        draw = {
            "normal": rng.standard_normal,
            "logistic": lambda s: rng.logistic(size=s),
            "t5": lambda s: rng.standard_t(5, size=s),
        }[shape]
        _NULLS[key] = np.sort(trimmed_z(draw((20000, classes)), top, bottom).max(-1))
    null = _NULLS[key]
    per = []
    for s in SIGNALS:
        z = trimmed_z(np.log(np.asarray(model[s], dtype=float)), top, bottom)
        per.append((len(null) - np.searchsorted(null, z) + 1) / (len(null) + 1))
    p = 1 - (1 - np.minimum(*per)) ** 2
    return float(p.min()), [int(t) for t in np.nonzero(p <= 0.05)[0]]


def shapes_and_estimators(data: list[dict[str, Any]]) -> list[dict[str, Any]]:
    pool = real_classes()
    out = []
    variants = [
        ("normal", 0, 0),
        ("logistic", 0, 0),
        ("t5", 0, 0),
        ("normal", 0.1, 0),
        ("logistic", 0.1, 0),
        ("logistic", 0.1, 0.1),
    ]
    for shape, top, bottom in variants:
        line: dict[str, Any] = {"shape": shape, "trim top": top, "trim bottom": bottom}
        for classes, n in ((10, 1500), (26, 800), (100, 300)):
            rng = np.random.default_rng(classes + 1)
            models = simulate("resampled", classes, n, rng, pool)
            line[f"resampled FPR C={classes}"] = round(
                sum(bool(variant_p(m, shape, top, bottom)[1]) for m in models) / n, 3
            )
        pos, neg, tp, fp = [], [], 0, 0
        for r in data:
            p, flagged = variant_p({s: r[s] for s in SIGNALS}, shape, top, bottom)
            (pos if r["backdoored"] else neg).append(-np.log10(p))
            tp += r["backdoored"] and r["target"] in flagged
            fp += (not r["backdoored"]) and bool(flagged)
        line |= {"dev TPR": f"{tp}/{len(pos)}", "dev FPR": f"{fp}/{len(neg)}", "dev AUROC": round(auroc(pos, neg), 3)}
        out.append(line)
    return out


# 2. signals against naturally easy classes ----------------------------------------------------------------


def curve(row: dict[str, Any], t: int, signal: str) -> tuple[np.ndarray, list[float], np.ndarray, np.ndarray]:
    e = row["grids"]["classes"][t]
    grid = row["grids"]["k_grid"] if signal == "stamp" else e["additive_norms"]
    hits = np.asarray(e[signal], dtype=float)
    n = np.asarray(e["n"], dtype=float)
    sources = [s for s in range(row["classes"]) if s != t and n[s] > 0]
    return hits[:, sources].sum(1) / n[sources].sum(), grid, hits[:, sources], n[sources]


def reach(frac: np.ndarray, grid: list[float], rate: float) -> float:
    """The grid value where the success first reaches ``rate`` (log-interpolated)."""
    f = np.maximum.accumulate(frac)
    lg = np.log(np.asarray(grid, dtype=float))
    if f[-1] < rate:
        return float(np.exp(lg[-1] + np.log(2)))
    j = int(np.argmax(f >= rate))
    if j == 0:
        return float(np.exp(lg[0]))
    w = (rate - f[j - 1]) / max(f[j] - f[j - 1], 1e-9)
    return float(np.exp(lg[j - 1] + w * (lg[j] - lg[j - 1])))


def target_and_easiest(data: list[dict[str, Any]], value) -> tuple[list[float], list[float]]:
    """``value(row, t)`` of each backdoored model's target and of each clean model's easiest stamp class."""
    pos, neg = [], []
    for r in data:
        if not r.get("grids"):
            continue
        if r["backdoored"]:
            pos.append(value(r, r["target"]))
        else:
            neg.append(value(r, int(np.argmin(r["stamp"]))))
    return pos, neg


def steepness(r: dict[str, Any], t: int) -> float:
    frac, grid, _, _ = curve(r, t, "stamp")
    return -np.log(reach(frac, grid, 0.9) / reach(frac, grid, 0.1))  # larger: steeper, more trigger-like


def worst_source(r: dict[str, Any], t: int) -> float:
    frac, _, hits, n = curve(r, t, "stamp")
    j = int(np.argmax(frac >= 0.9)) if frac.max() >= 0.9 else len(frac) - 1
    return float((hits[j] / n).min())


def mahalanobis_auroc(data: list[dict[str, Any]]) -> float:
    """The two signals jointly: the largest one-sided Mahalanobis distance of a class from the others."""

    def stat(u: np.ndarray) -> float:
        best = 0.0
        for t in range(len(u)):
            rest = np.delete(u, t, 0)
            d = u[t] - rest.mean(0)
            if (d < 0).any():
                best = max(best, float(d @ np.linalg.solve(np.cov(rest.T), d)))
        return best

    pos = [stat(np.log(np.array([r["stamp"], r["additive"]], dtype=float)).T) for r in data if r["backdoored"]]
    neg = [stat(np.log(np.array([r["stamp"], r["additive"]], dtype=float)).T) for r in data if not r["backdoored"]]
    return auroc(pos, neg)


@torch.no_grad()
def blend_alpha(model: Any, x: torch.Tensor, y: torch.Tensor, seed: int, classes: int) -> list[float]:
    """Per class, the blend weight at which its 3 most confident canvases, blended whole into held-out images
    of the other classes, make half of them predict it (log-interpolated on a geometric grid)."""
    search, held = stratified_split(y, ScanConfig().holdout, seed)
    choose, _ = verification_split(y, held, seed)
    sx, sy, ex, ey = x[search], y[search], x[choose], y[choose]
    probs = torch.cat([model(sx[i : i + 1024]).softmax(1) for i in range(0, len(sx), 1024)])
    out = []
    for t in range(classes):
        score = probs[:, t].clone()
        score[sy != t] = -1
        canvases = sx[score.topk(3).indices]
        others = ex[ey != t]
        frac = []
        for a in ALPHAS:
            hit = [float((model((1 - a) * others + a * c).argmax(1) == t).float().mean()) for c in canvases]
            frac.append(sum(hit) / len(hit))
        out.append(reach(np.asarray(frac), ALPHAS, 0.5))
    return out


def covariate_auroc(data: list[dict[str, Any]]) -> dict[str, Any]:
    """Self-mode p-values of the stamp signal after regressing log k on the log blend weight (extreme class
    left out of the fit), against the plain ones: AUROC on the dev models, and the within-model correlation."""
    fm = load_fashion_mnist()
    specs = {s.name: s for s in [e["spec"] for e in zoo()] + pilot_specs()}
    part = defender_slice(fm)
    x, y = fm.test_x[part], fm.test_y[part]
    plain, adjusted, labels, corr = [], [], [], []
    for r in data:
        model, _ = trained(specs[r["model"]], fm)
        alpha = np.log(blend_alpha(model, x, y, r["seed"], r["classes"]))
        logk = np.log(np.asarray(r["stamp"], dtype=float))
        t = int(np.argmin(logk))
        keep = np.arange(len(logk)) != t
        corr.append(float(np.corrcoef(logk[keep], alpha[keep])[0, 1]))
        slope, intercept = np.polyfit(alpha[keep], logk[keep], 1)
        resid = logk - (intercept + slope * alpha)
        sd = resid[keep].std(ddof=2)
        adjusted.append(float(-resid[t] / sd))
        rest = logk[keep]
        plain.append(float((rest.mean() - logk[t]) / rest.std(ddof=1)))
        labels.append(r["backdoored"])
    pos_a = [v for v, b in zip(adjusted, labels, strict=True) if b]
    neg_a = [v for v, b in zip(adjusted, labels, strict=True) if not b]
    pos_p = [v for v, b in zip(plain, labels, strict=True) if b]
    neg_p = [v for v, b in zip(plain, labels, strict=True) if not b]
    return {
        "models": len(data),
        "mean within-model correlation of log k and log blend weight": round(float(np.mean(corr)), 3),
        "stamp statistic AUROC, plain": round(auroc(pos_p, neg_p), 3),
        "stamp statistic AUROC, blend-adjusted": round(auroc(pos_a, neg_a), 3),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--covariates", action="store_true")
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)
    torch.set_num_threads(max(1, torch.get_num_threads()))
    data = rows()
    first = shapes_and_estimators(data)
    print(table(first, list(first[0])))
    with_grids = [r for r in data if r.get("grids")]
    signals: dict[str, Any] = {"models with per-source grids": len(with_grids)}
    for name, fn in (("stamp steepness", steepness), ("worst source's success", worst_source)):
        pos, neg = target_and_easiest(with_grids, fn)
        signals[name] = {"target vs easiest clean class AUROC": round(auroc(pos, neg), 3), "n": [len(pos), len(neg)]}
    signals["two signals jointly (Mahalanobis), model AUROC"] = round(mahalanobis_auroc(data), 3)
    if args.covariates:
        signals["blend covariate"] = covariate_auroc(data)
    print(json.dumps(signals, indent=2))
    path = save(
        "scan_exploration", {"dev_models": len(data), "shape_and_estimator": first, "signals": signals}, args.out
    )
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
