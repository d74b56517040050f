"""Every figure patternscope draws (matplotlib, PNG, no display needed), written atomically.

Run folders get example grids, search curves, galleries and bar charts; reports add pattern views, the
dominance picture (predicted-class histograms) and scan / class-wise summary charts. Every function takes
plain numbers or tensors, so a report can be rebuilt from a finished run folder without the model.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import torch
from matplotlib.ticker import MaxNLocator

from ..core.atomic import atomic_path

RED, BLUE, LIGHT, GREY = "#c0392b", "#3b6ea8", "#9cc0e6", "0.55"


def _show(ax: plt.Axes, image: torch.Tensor) -> None:
    array = image.detach().float().cpu().clamp(0, 1).permute(1, 2, 0).numpy()
    if array.shape[2] == 1:
        ax.imshow(array[..., 0], cmap="gray", vmin=0, vmax=1, interpolation="nearest")
    else:
        ax.imshow(array, interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([])


def _short(name: str, width: int = 18) -> str:
    return name if len(name) <= width else name[: width - 1] + "…"


def example_grid(
    path: str | Path,
    images: torch.Tensor,
    delta: torch.Tensor,
    clean_pred: Sequence[int],
    clean_conf: Sequence[float],
    perturbed_pred: Sequence[int],
    perturbed_conf: Sequence[float],
    class_names: Sequence[str],
    pattern_title: str = "pattern δ (rescaled)",
    max_examples: int = 8,
) -> Path:
    """Clean images (top row) and the same images with the pattern (bottom row), with predicted class
    names and confidences; the pattern itself, rescaled to be visible, on the left."""
    n = min(max_examples, images.shape[0])
    fig, axes = plt.subplots(2, n + 1, figsize=(2.0 * (n + 1), 4.6), squeeze=False)
    top = float(delta.abs().max()) or 1.0
    _show(axes[0, 0], (delta / (2 * top) + 0.5))
    axes[0, 0].set_title(pattern_title, fontsize=8)
    axes[1, 0].axis("off")
    axes[1, 0].text(0.0, 0.5, f"max |δ| = {top:.4f}\n= {top * 255:.1f}/255", fontsize=8, va="center")
    for i in range(n):
        changed = int(clean_pred[i]) != int(perturbed_pred[i])
        _show(axes[0, i + 1], images[i])
        axes[0, i + 1].set_title(f"{_short(class_names[int(clean_pred[i])])}\n{float(clean_conf[i]):.2f}", fontsize=8)
        _show(axes[1, i + 1], (images[i] + delta).clamp(0, 1))
        axes[1, i + 1].set_title(
            f"{_short(class_names[int(perturbed_pred[i])])}\n{float(perturbed_conf[i]):.2f}",
            fontsize=8,
            color="firebrick" if changed else "black",
        )
    axes[0, 1].set_ylabel("clean", fontsize=9)
    axes[1, 1].set_ylabel("with pattern", fontsize=9)
    fig.suptitle("Predictions on held-out images: clean (top) vs with the pattern (bottom; red = changed)", fontsize=10)
    fig.tight_layout()
    return _save(fig, path)


def loss_curve(path: str | Path, history: Sequence[float], title: str = "search loss") -> Path:
    """The search loss per step, with a moving average."""
    fig, ax = plt.subplots(figsize=(6, 3.2))
    steps = list(range(1, len(history) + 1))
    ax.plot(steps, history, color="0.75", linewidth=0.8, label="per step")
    window = max(1, len(history) // 20)
    if window > 1:
        t = torch.tensor(history, dtype=torch.float64)
        smooth = torch.nn.functional.avg_pool1d(t[None, None], window, stride=1).flatten().tolist()
        ax.plot(steps[window - 1 :], smooth, color="C0", linewidth=1.5, label=f"mean of {window}")
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return _save(fig, path)


def layer_curves(path: str | Path, blocks: Sequence[str], curves: Sequence[dict[str, Any]], title: str) -> Path:
    """Per block, cos(g(x+δ), g(δ)) (solid) and cos(g(x+δ), g(x)) (dashed) for each curve
    (``{"name", "follows_delta", "follows_x", "takeover_index"}``), with the takeover block marked."""
    fig, ax = plt.subplots(figsize=(max(6.0, 0.28 * len(blocks) + 2), 3.6))
    xs = list(range(len(blocks)))
    for i, curve in enumerate(curves):
        colour = f"C{i}"
        ax.plot(xs, curve["follows_delta"], color=colour, linewidth=1.6, label=f"{curve['name']}: follows δ")
        ax.plot(
            xs, curve["follows_x"], color=colour, linewidth=1.2, linestyle="--", label=f"{curve['name']}: follows x"
        )
        t = curve.get("takeover_index")
        if t is not None:
            ax.axvline(t, color=colour, alpha=0.35, linewidth=4)
    ax.set_xticks(xs)
    ax.set_xticklabels([_short(b, 14) for b in blocks], rotation=70, fontsize=7)
    ax.set_ylabel("mean cosine")
    ax.set_ylim(-0.05, 1.02)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    return _save(fig, path)


def grouped_bars(path: str | Path, groups: Sequence[str], series: dict[str, Sequence[float]], title: str) -> Path:
    """Bars per group (x axis) for each named series, side by side, with a line at 1."""
    fig, ax = plt.subplots(figsize=(1.6 * len(groups) + 2.5, 3.6))
    width = 0.8 / max(1, len(series))
    for i, (name, values) in enumerate(series.items()):
        ax.bar([g + (i - (len(series) - 1) / 2) * width for g in range(len(groups))], values, width=width, label=name)
    ax.axhline(1.0, color=GREY, linewidth=0.8)
    ax.set_xticks(range(len(groups)))
    ax.set_xticklabels([g.replace("_", " ") for g in groups])
    ax.set_title(title, fontsize=9)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return _save(fig, path)


def _save(fig: plt.Figure, path: str | Path) -> Path:
    """Write ``fig`` as a 110-dpi PNG at ``path`` atomically and close it."""
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)
    return Path(path)


def method_bars(
    path: str | Path,
    methods: Sequence[str],
    values: Sequence[float],
    confident: Sequence[float],
    random_sign: float | None,
    title: str,
) -> Path:
    """Bar chart of fooling ratios per method (all images and the confident subset), random ±eps line."""
    fig, ax = plt.subplots(figsize=(1.2 * len(methods) + 2.5, 3.6), dpi=110)
    xs = range(len(methods))
    ax.bar([x - 0.2 for x in xs], values, width=0.4, label="all images", color="#3b6ea8")
    ax.bar([x + 0.2 for x in xs], confident, width=0.4, label="confidently classified", color="#9cc0e6")
    for x, v in zip(xs, values, strict=True):
        ax.text(x - 0.2, v + 0.01, f"{v:.2f}", ha="center", va="bottom", fontsize=7)
    if random_sign is not None:
        ax.axhline(random_sign, color="#c0392b", linestyle="--", linewidth=1, label=f"random ±eps ({random_sign:.2f})")
    ax.set_xticks(list(xs))
    ax.set_xticklabels(methods, rotation=20, ha="right", fontsize=8)
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("fooling ratio (share of predictions changed)")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7, loc="upper right")
    fig.tight_layout()
    return _save(fig, path)  # the figure was made at 110 dpi: the same PNG as saving at its own dpi


def heatmap(
    path: str | Path,
    matrix: Sequence[Sequence[float]],
    rows: Sequence[str],
    cols: Sequence[str],
    title: str,
    xlabel: str = "target model",
    ylabel: str = "pattern (source)",
) -> Path:
    """A labelled heatmap of values in [0,1] (e.g. fooling ratios of patterns on models)."""
    fig, ax = plt.subplots(figsize=(1.3 * len(cols) + 3, 0.5 * len(rows) + 2), dpi=110)
    im = ax.imshow([list(r) for r in matrix], vmin=0, vmax=1, cmap="viridis", aspect="auto")
    for i, row in enumerate(matrix):
        for j, v in enumerate(row):
            ax.text(
                j,
                i,
                "n/a" if v != v else f"{v:.2f}",
                ha="center",
                va="center",
                fontsize=8,
                color="white" if v == v and v < 0.6 else "black",
            )
    ax.set_xticks(range(len(cols)))
    ax.set_xticklabels([_short(c, 24) for c in cols], rotation=20, ha="right", fontsize=8)
    ax.set_yticks(range(len(rows)))
    ax.set_yticklabels([_short(r, 28) for r in rows], fontsize=8)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=9)
    fig.colorbar(im, ax=ax, label="fooling ratio")
    fig.tight_layout()
    return _save(fig, path)  # the figure was made at 110 dpi: the same PNG as saving at its own dpi


def image_table(
    path: str | Path,
    columns: Sequence[tuple[str, Sequence[torch.Tensor]]],
    row_titles: Sequence[str],
    title: str,
    cell: float = 1.45,
) -> Path:
    """A grid of images: one column per (title, images) entry, one row per image kind (``row_titles``)."""
    n_cols, n_rows = len(columns), len(row_titles)
    fig, axes = plt.subplots(n_rows, n_cols, figsize=(cell * n_cols + 0.8, cell * n_rows + 0.7), squeeze=False)
    for j, (col_title, images) in enumerate(columns):
        for i in range(n_rows):
            ax = axes[i, j]
            if i < len(images):
                _show(ax, images[i])
            else:
                ax.axis("off")
            if i == 0:
                ax.set_title(_short(col_title, 16), fontsize=8)
            if j == 0:
                ax.set_ylabel(row_titles[i], fontsize=8)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return _save(fig, path)


def stamped_examples(
    path: str | Path,
    images: torch.Tensor,
    stamped: torch.Tensor,
    clean_pred: Sequence[int],
    stamped_pred: Sequence[int],
    class_names: Sequence[str],
    title: str,
) -> Path:
    """Held-out images (top) and the same images with a class-wise pattern stamped (bottom), with predictions."""
    n = images.shape[0]
    fig, axes = plt.subplots(2, n, figsize=(1.6 * n + 0.6, 3.9), squeeze=False)
    for i in range(n):
        _show(axes[0, i], images[i])
        axes[0, i].set_title(_short(class_names[int(clean_pred[i])], 12), fontsize=8)
        _show(axes[1, i], stamped[i])
        changed = int(clean_pred[i]) != int(stamped_pred[i])
        axes[1, i].set_title(
            _short(class_names[int(stamped_pred[i])], 12), fontsize=8, color="firebrick" if changed else "black"
        )
    axes[0, 0].set_ylabel("clean", fontsize=9)
    axes[1, 0].set_ylabel("stamped", fontsize=9)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return _save(fig, path)


def labelled_grid(
    path: str | Path,
    rows: Sequence[tuple[str, Sequence[tuple[str, torch.Tensor]]]],
    title: str,
    cell: float = 1.45,
) -> Path:
    """A grid of images with a title per cell: ``rows`` is [(row title, [(cell title, image), ...]), ...]."""
    n_rows, n_cols = len(rows), max(len(r[1]) for r in rows)
    fig, axes = plt.subplots(n_rows, n_cols, figsize=(cell * n_cols + 1.0, (cell + 0.35) * n_rows + 0.6), squeeze=False)
    for i, (row_title, cells) in enumerate(rows):
        for j in range(n_cols):
            ax = axes[i, j]
            if j >= len(cells):
                ax.axis("off")
                continue
            _show(ax, cells[j][1])
            ax.set_title(cells[j][0], fontsize=7)
        axes[i, 0].set_ylabel(row_title, fontsize=8)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return _save(fig, path)


def value_bars(path: str | Path, labels: Sequence[str], values: Sequence[float], title: str, ylabel: str) -> Path:
    """One bar per value in [0,1], labelled with its value."""
    fig, ax = plt.subplots(figsize=(1.7 * len(labels) + 2.0, 3.8))
    xs = list(range(len(labels)))
    colours = ["#3b6ea8"] + ["#9cc0e6"] * (len(labels) - 1)
    ax.bar(xs, values, color=colours[: len(labels)], width=0.6)
    for x, v in zip(xs, values, strict=True):
        ax.text(x, v + 0.01, f"{v:.2f}", ha="center", va="bottom", fontsize=8)
    ax.set_xticks(xs)
    ax.set_xticklabels(labels, fontsize=8)
    ax.set_ylim(0, 1.08)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=9)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    return _save(fig, path)


def paired_bars(
    path: str | Path,
    labels: Sequence[str],
    before: Sequence[float],
    after: Sequence[float],
    title: str,
    ylabel: str,
    legend: tuple[str, str] = ("before", "after"),
) -> Path:
    """Two bars per label (values in [0,1]), each labelled with its value: e.g. before and after hardening."""
    fig, ax = plt.subplots(figsize=(1.3 * len(labels) + 2.2, 3.8))
    xs = list(range(len(labels)))
    for offset, values, colour, name in ((-0.2, before, "#c0504d", legend[0]), (0.2, after, "#3b6ea8", legend[1])):
        ax.bar([x + offset for x in xs], values, width=0.38, color=colour, label=name)
        for x, v in zip(xs, values, strict=True):
            ax.text(x + offset, v + 0.01, f"{v:.2f}", ha="center", va="bottom", fontsize=7)
    ax.set_xticks(xs)
    ax.set_xticklabels(labels, fontsize=8)
    ax.set_ylim(0, 1.12)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=8, loc="upper right")
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    return _save(fig, path)


def hardening_curve(
    path: str | Path,
    accuracy: Sequence[float],
    fooling: Sequence[float],
    accuracy_before: float,
    bound: float,
    chosen_epoch: int,
) -> Path:
    """Held-out clean accuracy and the training patterns' fooling ratio per epoch of hardening, with the
    original accuracy, the accuracy bound and the epoch whose weights were kept."""
    epochs = list(range(1, len(accuracy) + 1))
    fig, ax = plt.subplots(figsize=(6.4, 3.6))
    ax.plot(epochs, accuracy, "o-", color="#3b6ea8", ms=3, label="clean accuracy (held out)")
    ax.plot(epochs, fooling, "s-", color="#c0504d", ms=3, label="training patterns' fooling ratio (held out)")
    ax.axhline(accuracy_before, color="#3b6ea8", ls=":", lw=1, label=f"original accuracy {accuracy_before:.3f}")
    ax.axhline(bound, color="grey", ls="--", lw=1, label=f"accuracy bound {bound:.3f}")
    if chosen_epoch:
        ax.axvline(chosen_epoch, color="black", ls="-.", lw=1, label=f"weights kept: epoch {chosen_epoch}")
    ax.set_xlabel("epoch")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylim(0, 1.02)
    ax.set_title("Hardening, epoch by epoch", fontsize=9)
    ax.legend(fontsize=7, loc="center right")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return _save(fig, path)


# ---------------------------------------------------------------------------------------------------
# Report figures


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
    score: Sequence[float | None],
    flagged: Sequence[int],
    median_k: float,
    threshold: float,
    *,
    score_label: str = "anomaly index (MAD, log k)",
    k_limit: float | None = None,
    smallest_l2: Sequence[float | None] | None = None,
) -> Path:
    """Per class: the smallest stamp (pixels) reaching the target success with the median (and a flagging
    limit ``k_limit``), the smallest additive pattern's L2 norm when given, and the class's score with the
    threshold; flagged classes in red."""
    xs = list(range(len(names)))
    colours = [RED if i in set(flagged) else BLUE for i in xs]
    # a score without a finite value (null in scan.json: e.g. the MAD was 0) draws no bar
    scores = [a if a is not None and math.isfinite(a) else math.nan for a in score]
    panels = 3 if smallest_l2 is not None else 2
    fig, axes = plt.subplots(panels, 1, figsize=(max(6.0, 0.5 * len(xs) + 2), 2.8 * panels), sharex=True)
    axes[0].bar(xs, smallest_k, color=colours)
    axes[0].axhline(median_k, color=GREY, linestyle="--", linewidth=1, label=f"median ({median_k:g} px)")
    if k_limit is not None:
        axes[0].axhline(k_limit, color=RED, linestyle=":", linewidth=1, label=f"flag limit ({k_limit:g} px)")
    axes[0].set_ylabel("smallest k (pixels)")
    axes[0].set_title("Smallest class-wise stamp that reaches the target success", fontsize=10)
    axes[0].legend(fontsize=7)
    if smallest_l2 is not None:
        l2 = [v if v is not None else math.nan for v in smallest_l2]
        axes[1].bar(xs, l2, color=colours)
        axes[1].set_ylabel("smallest L2 norm")
        axes[1].set_title("Smallest additive pattern that reaches the target success", fontsize=10)
    axes[-1].bar(xs, scores, color=colours)
    axes[-1].axhline(threshold, color=RED, linestyle=":", linewidth=1, label=f"threshold {threshold:.3g}")
    axes[-1].set_ylabel(score_label)
    axes[-1].set_title("How far below the other classes (higher = more suspicious)", fontsize=10)
    axes[-1].legend(fontsize=7)
    axes[-1].set_xticks(xs)
    axes[-1].set_xticklabels([_short(n, 14) for n in names], rotation=30, ha="right", fontsize=8)
    axes[-1].set_xlabel("target class")
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
