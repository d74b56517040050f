"""The figures a report adds to a run folder (matplotlib, PNG): pattern views, the dominance picture
(predicted-class histograms), search curves, and scan / class-wise summary charts.

Every function takes plain numbers read from a run's JSON files, so a report can be rebuilt from a
finished run folder without the model.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import torch

from .figures import _save, _short, _show

RED, BLUE, LIGHT, GREY = "#c0392b", "#3b6ea8", "#9cc0e6", "0.55"


def pattern_views(path: str | Path, delta: torch.Tensor, eps: float, title: str) -> Path:
    """An additive pattern δ (C x H x W, values in [-eps, eps]) three ways: rescaled to the full range,
    at its actual scale on mid-grey (0.5 + δ), and as |δ| per pixel with a colour bar in /255 units."""
    delta = delta.detach().float().cpu()
    top = float(delta.abs().max()) or 1.0
    fig, axes = plt.subplots(1, 3, figsize=(9.6, 3.6))
    _show(axes[0], delta / (2 * top) + 0.5)
    axes[0].set_title("rescaled: ±max|δ| → [0, 1]", fontsize=9)
    _show(axes[1], (delta + 0.5).clamp(0, 1))
    axes[1].set_title("actual scale: 0.5 + δ", fontsize=9)
    magnitude = delta.abs().amax(dim=0) * 255
    im = axes[2].imshow(magnitude.numpy(), cmap="magma", vmin=0, vmax=max(eps * 255, 1e-6), interpolation="nearest")
    axes[2].set_xticks([])
    axes[2].set_yticks([])
    axes[2].set_title("max over channels of |δ| (/255)", fontsize=9)
    fig.colorbar(im, ax=axes[2], fraction=0.046, pad=0.04)
    fig.suptitle(f"{title}  (L∞ budget ε = {eps:.4g} = {eps * 255:.1f}/255)", fontsize=10)
    fig.tight_layout()
    return _save(fig, path)


def class_histogram(
    path: str | Path,
    clean: Sequence[dict[str, Any]],
    perturbed: Sequence[dict[str, Any]],
    n_images: int,
    pattern_class: int | None = None,
    title: str = "Predicted classes before and after the pattern",
) -> Path:
    """Side-by-side bars of the share of images predicted as each class, clean vs with the pattern.

    ``clean`` / ``perturbed``: the most frequent classes as ``{"class", "name", "count"}`` (the
    ``top_classes`` entries of ``metrics.json``); classes in either list are shown, most frequent
    after the pattern first.
    """
    counts_c = {int(e["class"]): int(e["count"]) for e in clean}
    counts_p = {int(e["class"]): int(e["count"]) for e in perturbed}
    names = {int(e["class"]): str(e["name"]) for e in [*clean, *perturbed]}
    order = sorted(names, key=lambda c: (-counts_p.get(c, 0), -counts_c.get(c, 0), c))[:12]
    n = max(n_images, 1)
    ys = list(range(len(order)))
    fig, ax = plt.subplots(figsize=(7.0, 0.42 * len(order) + 1.6))
    ax.barh([y - 0.2 for y in ys], [counts_c.get(c, 0) / n for c in order], height=0.4, color=LIGHT, label="clean")
    ax.barh(
        [y + 0.2 for y in ys], [counts_p.get(c, 0) / n for c in order], height=0.4, color=BLUE, label="with pattern"
    )
    labels = [_short(f"{c}: {names[c]}", 28) + ("  ← f(δ)" if c == pattern_class else "") for c in order]
    ax.set_yticks(ys)
    ax.set_yticklabels(labels, fontsize=8)
    ax.invert_yaxis()
    ax.set_xlim(0, 1)
    ax.set_xlabel(f"share of the {n_images} evaluation images predicted as the class")
    ax.set_title(title, fontsize=10)
    ax.grid(axis="x", alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    return _save(fig, path)


def pattern_strip(path: str | Path, deltas: Sequence[torch.Tensor], labels: Sequence[str], title: str) -> Path:
    """Several additive patterns side by side, each rescaled by its own max |δ|."""
    n = max(len(deltas), 1)
    fig, axes = plt.subplots(1, n, figsize=(2.1 * n + 0.4, 2.7), squeeze=False)
    for ax, delta, label in zip(axes[0], deltas, labels, strict=False):
        top = float(delta.abs().max()) or 1.0
        _show(ax, delta.float().cpu() / (2 * top) + 0.5)
        ax.set_title(_short(label, 22), fontsize=8)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return _save(fig, path)


def scan_chart(
    path: str | Path,
    names: Sequence[str],
    smallest_k: Sequence[float],
    anomaly: Sequence[float],
    flagged: Sequence[int],
    median_k: float,
    max_ratio: float,
    threshold: float,
) -> Path:
    """Per class: the smallest pattern (pixels) reaching the target success, with the median and the
    flagging limit, and the MAD anomaly index with its threshold; flagged classes in red."""
    xs = list(range(len(names)))
    colours = [RED if i in set(flagged) else BLUE for i in xs]
    fig, axes = plt.subplots(2, 1, figsize=(max(6.0, 0.5 * len(xs) + 2), 5.6), sharex=True)
    axes[0].bar(xs, smallest_k, color=colours)
    axes[0].axhline(median_k, color=GREY, linestyle="--", linewidth=1, label=f"median ({median_k:g} px)")
    axes[0].axhline(
        max_ratio * median_k, color=RED, linestyle=":", linewidth=1, label=f"{max_ratio:g} × median (flag limit)"
    )
    axes[0].set_ylabel("smallest k (pixels)")
    axes[0].set_title("Smallest class-wise pattern that reaches the target success", fontsize=10)
    axes[0].legend(fontsize=7)
    axes[1].bar(xs, anomaly, color=colours)
    axes[1].axhline(threshold, color=RED, linestyle=":", linewidth=1, label=f"threshold {threshold:g}")
    axes[1].set_ylabel("anomaly index (MAD, log k)")
    axes[1].set_title("How far below the other classes (higher = more suspicious)", fontsize=10)
    axes[1].legend(fontsize=7)
    axes[1].set_xticks(xs)
    axes[1].set_xticklabels([_short(n, 14) for n in names], rotation=30, ha="right", fontsize=8)
    axes[1].set_xlabel("target class")
    fig.tight_layout()
    return _save(fig, path)


def success_bars(
    path: str | Path, names: Sequence[str], success: Sequence[float], clean: Sequence[float], k: Sequence[int]
) -> Path:
    """Per class: attack success of its class-wise pattern vs the rate without it (held-out images)."""
    xs = list(range(len(names)))
    fig, ax = plt.subplots(figsize=(max(6.0, 0.55 * len(xs) + 2), 3.8))
    ax.bar([x - 0.2 for x in xs], success, width=0.4, color=BLUE, label="with the pattern stamped")
    ax.bar([x + 0.2 for x in xs], clean, width=0.4, color=LIGHT, label="without (clean rate)")
    for x, v, kk in zip(xs, success, k, strict=True):
        ax.text(x - 0.2, v + 0.01, f"{v:.2f}\nk={kk}", ha="center", va="bottom", fontsize=6)
    ax.set_ylim(0, 1.18)
    ax.set_xticks(xs)
    ax.set_xticklabels([_short(n, 14) for n in names], rotation=30, ha="right", fontsize=8)
    ax.set_xlabel("target class")
    ax.set_ylabel("share of other-class images\npredicted as the target")
    ax.set_title("Predictive power of each class-wise pattern", fontsize=10)
    ax.legend(fontsize=7, loc="upper right")
    fig.tight_layout()
    return _save(fig, path)
