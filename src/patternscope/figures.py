"""Figures for run folders (matplotlib, no display needed): example grids and search curves."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import torch

from ._io import atomic_path


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


def _save(fig: plt.Figure, path: str | Path) -> Path:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)
    return Path(path)
