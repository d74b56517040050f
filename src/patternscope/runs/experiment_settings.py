"""``patternscope experiment settings``: the class-wise paper's three settings (natural, BadNets
backdoored, PGD adversarially trained) on a real data set, with the class-wise pattern of every class,
its attack success, its simplicity and its overlap with a saliency map of its canvas.

Writes ``settings.json`` (per setting: accuracy, PGD accuracy, trigger success, per-class rows, and the
simplicity comparison), ``gallery.png`` (every pattern, one row per setting), ``saliency.png`` (the same
canvases' gradient x input maps) and ``simplicity.png`` into ``--out``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .._version import __version__
from ..analyses.classwise import ClasswiseConfig
from ..analyses.settings import SettingsConfig, SettingsResult, run_settings
from ..analyses.simplicity import MEASURES
from ..core.atomic import write_json
from ..core.configs import from_config
from ..data.datasets import load_dataset
from ..errors import PatternError
from ..report import figures
from ..report import settings as settings_report
from .command import Command, indented_json
from .folders import prepare_run_dir, write_run_config
from .options import OutputFolder, option

_S = SettingsConfig()
DATA_SETS = ("fashion-mnist", "digits")


@dataclass
class SettingsOptions(OutputFolder):
    """Every option of ``patternscope experiment settings`` (defaults: :class:`SettingsConfig`'s)."""

    out: str = option("runs/settings", help="run folder to write (created if missing)", metavar="DIR", required=True)
    data: str = option(
        "fashion-mnist",
        help="built-in labelled data set (fashion-mnist needs Debian's dataset-fashion-mnist; default {default})",
        choices=DATA_SETS,
    )
    train_images: int = from_config(SettingsConfig, "train_images")
    epochs: int = from_config(SettingsConfig, "epochs")
    adv_eps: float = from_config(SettingsConfig, "adv_eps")
    target: int = from_config(SettingsConfig, "target")
    trigger_size: int = from_config(SettingsConfig, "trigger_size")
    search_images: int = from_config(SettingsConfig, "search_images")
    classwise_epochs: float = option(5.0, help="passes of each class-wise search (default {default:g}, the paper's)")
    seed: int = from_config(SettingsConfig, "seed")
    overwrite: bool = option(False, help="replace a run already in --out")

    def config(self) -> SettingsConfig:
        if self.classwise_epochs <= 0:
            raise PatternError(f"--classwise-epochs must be > 0, got {self.classwise_epochs}")
        return SettingsConfig(
            train_images=self.train_images,
            epochs=self.epochs,
            adv_eps=self.adv_eps,
            trigger_size=self.trigger_size,
            target=self.target,
            search_images=self.search_images,
            seed=self.seed,
            classwise=ClasswiseConfig(epochs=self.classwise_epochs, seed=self.seed),
        ).validate()


@dataclass
class SettingsSummary:
    """A finished run: its folder and ``settings.json``'s content."""

    out: Path
    payload: dict[str, Any]


def settings_run(
    opts: SettingsOptions, *, progress: bool = True, log: Callable[[str], None] = print
) -> SettingsSummary:
    """Run the three settings (see the module docstring) and write ``opts.out``."""
    config = opts.config()
    data = load_dataset(opts.data)
    if not 0 <= opts.target < data.num_classes:
        raise PatternError(f"--target {opts.target} is out of range: {opts.data} has classes 0..{data.num_classes - 1}")
    side = min(data.input_size[1:])
    if not 1 <= opts.trigger_size <= side - 1:  # the patch sits one pixel from the bottom-right corner
        raise PatternError(f"--trigger-size must be 1..{side - 1} pixels for {opts.data}, got {opts.trigger_size}")
    out = prepare_run_dir(opts.out, resume=False, overwrite=opts.overwrite, files=COMMAND.files, resumable=False)
    write_run_config(out, COMMAND.name, opts)
    result = run_settings(data, config, log=log, progress=progress)
    payload = {"patternscope_version": __version__, **result.to_dict()}
    draw(out, result)
    write_json(out / "settings.json", payload)
    return SettingsSummary(out, payload)


def draw(out: Path, result: SettingsResult) -> None:
    """``gallery.png``, ``saliency.png`` and ``simplicity.png`` of a finished experiment."""
    grid, maps = [], []
    for s in result.settings:
        grid.append(
            (
                s.name,
                [(f"{r['name']} {r['success']:.0%}", p.visible()) for r, p in zip(s.classes, s.patterns, strict=True)],
            )
        )
        maps.append(
            (
                s.name,
                [(r["name"], (m / m.max().clamp(min=1e-12))[None]) for r, m in zip(s.classes, s.saliency, strict=True)],
            )
        )
    k = result.settings[0].classes[0]["k"]
    figures.labelled_grid(out / "gallery.png", grid, f"Class-wise patterns ({k} px) and their attack success")
    figures.labelled_grid(out / "saliency.png", maps, "Gradient x input of the same canvases (brighter = more salient)")
    simple = result.simplicity()
    figures.grouped_bars(
        out / "simplicity.png",
        list(MEASURES),
        {
            name: [simple[name][m]["mean"] / max(simple[result.settings[0].name][m]["mean"], 1e-12) for m in MEASURES]
            for name in simple
        },
        f"Pattern simplicity, mean over classes, relative to {result.settings[0].name} (lower = simpler)",
    )


def format_settings(summary: SettingsSummary) -> str:
    """One line per setting: accuracy, robustness, trigger and pattern success, and mean simplicity."""
    head = (
        f"{'setting':<12} {'acc':>6} {'PGD acc':>7} {'trigger':>7} {'pattern':>7} {'parts':>6} {'edge/px':>7} "
        f"{'bytes':>6} {'TV':>6} {'~sal':>5}"
    )
    lines = [head, "-" * len(head)]
    simple = summary.payload["simplicity"]
    for s in summary.payload["settings"]:
        m = simple[s["name"]]
        lines.append(
            f"{s['name']:<12} {s['accuracy']:>6.3f} {s['pgd_accuracy']:>7.3f} {s['trigger_success']:>7.3f} "
            f"{s['mean_pattern_success']:>7.3f} {m['components']['mean']:>6.2f} {m['boundary_ratio']['mean']:>7.2f} "
            f"{m['compressed_bytes']['mean']:>6.1f} {m['total_variation']['mean']:>6.4f} "
            f"{s['mean_saliency_overlap']:>5.2f}"
        )
    lines.append(
        "means over classes; parts, edge/px, bytes, TV: pattern simplicity (lower = simpler); "
        f"~sal: IoU with the canvas's saliency map\nrun folder: {summary.out}"
    )
    return "\n".join(lines)


COMMAND = Command(
    name="experiment settings",
    summary="the class-wise paper's three settings: natural, backdoored, adversarially trained",
    description="Train one architecture three ways on a built-in data set (naturally, with a BadNets backdoor, "
    "with PGD adversarial training), find the class-wise pattern of every class of each, and compare their "
    "attack success, simplicity (connected parts, boundary per pixel, compressed size, total variation) and "
    "overlap with a gradient x input saliency map. Writes settings.json, gallery.png, saliency.png and "
    "simplicity.png into --out.",
    options=SettingsOptions,
    run=settings_run,
    text=format_settings,
    json=indented_json(lambda summary: summary.payload),
    report=settings_report.build,
    result_file="settings.json",
    files=("settings.json", "config.json", "gallery.png", "saliency.png", "simplicity.png"),
)
