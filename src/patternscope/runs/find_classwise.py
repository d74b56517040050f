"""``patternscope find classwise``: the class-wise pattern of one class or of every class, its predictive
power on held-out images of other classes, and a run folder with patterns, figures and ``classwise.json``."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..analyses.canvas_sensitivity import canvas_sensitivity
from ..analyses.classwise import (
    ClasswiseConfig,
    best_canvases,
    find_classwise_pattern,
    other_classes,
    predictive_power,
    smallest_k,
    spread_examples,
)
from ..analyses.simplicity import gradient_x_input, pattern_simplicity, saliency_overlap
from ..core.atomic import write_json
from ..core.classifier import Classifier
from ..core.configs import config_from
from ..core.patterns import ClasswisePattern
from ..core.predict import predicted_class
from ..core.run_id import without_run_id
from ..data.bank import Images
from ..data.images import read_image, resize_to
from ..data.labelled import seeded_sample, stratified_split
from ..errors import DataError
from ..report import classwise as classwise_report
from ..report import figures
from .command import Command, indented_json
from .folders import prepare_run_dir, write_run_config
from .labelled import LABELLED_RUN_FILES, LABELLED_STALE, model_and_labelled_data
from .options import LABELLED_HELP, LabelledDataOptions, ModelOptions, OutputFolder, option

_C = ClasswiseConfig()


@dataclass
class ClasswiseOptions(LabelledDataOptions, ModelOptions, OutputFolder):
    """Every option of ``patternscope find classwise``; the search settings default to
    :class:`~patternscope.analyses.classwise.ClasswiseConfig`'s (the paper's)."""

    out: str = option("classwise-run", help="run folder to write (created if missing)", metavar="DIR", required=True)
    data: str = option("digits", help=LABELLED_HELP, metavar="SOURCE", required=True)
    target: int | None = option(
        None, help="the target class index", name="--class", metavar="N", exclusive="which", exclusive_required=True
    )
    all_classes: bool = option(
        False, help="every class, and a gallery of all patterns", exclusive="which", exclusive_required=True
    )
    canvas: str | None = option(
        None, help="canvas image of the class (default: its most confident image)", metavar="IMAGE"
    )
    holdout: float = option(0.3, help="share of each class held out (default {default})")
    max_search_images: int = option(
        1800, help="cap on search images of other classes (default {default}, as the paper)"
    )
    steps: int | None = option(_C.steps, help="search steps (default: --epochs over the search images)")
    epochs: float = option(_C.epochs, help="passes over the search images (default {default:g})")
    max_steps: int = option(_C.max_steps, help="cap on steps from --epochs (default {default})")
    batch_size: int = option(_C.batch_size, help="images per step (default {default})")
    lr: float = option(_C.lr, help="signed step on the mask (default {default})")
    alpha: float = option(_C.alpha, help="weight of the cross-entropy (default {default})")
    top_k: float = option(
        _C.top_k, help="pattern size: a share of the pixels if < 1, else a pixel count (default {default})"
    )
    learn_canvas: bool = option(_C.learn_canvas, help="also learn the canvas colours (as the scan does)")
    success: float = option(0.9, help="success rate for 'min k' (default {default})")
    canvases: int = option(
        1,
        help="also search from the class's N most confident images and measure how the patterns agree (default 1: off)",
    )
    seed: int = option(_C.seed, help="seed for the split and batches (default {default})")
    resume: bool = option(False, help="keep finished classes, continue the rest")
    overwrite: bool = option(False, help="replace a run already in --out")

    def config(self) -> ClasswiseConfig:
        """The search settings (validated)."""
        return config_from(ClasswiseConfig, self)


@dataclass
class ClasswiseSummary:
    """A finished ``find classwise`` run: its folder and one result row per class."""

    out: Path
    rows: list[dict[str, Any]] = field(default_factory=list)


def find_classwise_run(
    opts: ClasswiseOptions, *, progress: bool = True, log: Callable[[str], None] = print
) -> ClasswiseSummary:
    """``patternscope find classwise``: one class (``target``) or every class (``all_classes``)."""
    config = opts.config()  # validate settings before anything slow
    if (opts.target is None) == (not opts.all_classes):
        raise DataError("give either --class N or --all-classes")
    if opts.all_classes and opts.canvas:
        raise DataError("--canvas is one image of one class; use it with --class, not --all-classes")
    if opts.canvases < 1 or (opts.canvases > 1 and opts.canvas):
        raise DataError("--canvases must be >= 1, and > 1 only without --canvas (the canvases are the class's own)")
    out = prepare_run_dir(
        opts.out, resume=opts.resume, overwrite=opts.overwrite, files=LABELLED_RUN_FILES, stale=LABELLED_STALE
    )
    model, data = model_and_labelled_data(opts, log)
    targets = list(range(model.num_classes)) if opts.all_classes else [int(opts.target)]  # type: ignore[arg-type]
    for t in targets:
        if not 0 <= t < model.num_classes:
            raise DataError(
                f"class {t} is out of range: the model has {model.num_classes} classes (0..{model.num_classes - 1})"
            )
    canvas_image = None
    if opts.canvas:
        canvas_image = resize_to(read_image(opts.canvas, model.input_size[0])[None], model.input_size)[0]
    write_run_config(out, COMMAND.name, opts)
    search_idx, held_idx = stratified_split(data.labels, opts.holdout, opts.seed)
    sx, sy = data.images[search_idx], data.labels[search_idx]
    ex, ey = data.images[held_idx], data.labels[held_idx]
    canvases = best_canvases(model, sx, sy) if canvas_image is None else torch.empty(0, dtype=torch.long)
    rows, columns = [], []
    for t in targets:
        folder = out / "classes" / f"{t:03d}" if opts.all_classes else out
        if opts.resume and (folder / "classwise_row.json").is_file():
            row = without_run_id(json.loads((folder / "classwise_row.json").read_text()))
            pattern = ClasswisePattern.load(folder)
            canvas = pattern.colours if not pattern.meta.get("learn_canvas") else torch.zeros(model.input_size)
        else:
            row, pattern, canvas = _one_class(
                model, t, sx, sy, ex, ey, canvases, canvas_image, config, opts, folder, progress
            )
        rows.append(row)
        name = model.class_names[t]
        log(
            f"class {t} ({name}): {row['k']} px pattern -> {row['success']:.1%} of held-out other-class images "
            f"classified as {name} (without it {row['clean_rate']:.1%}); "
            f"{opts.success:.0%} needs {row['smallest_k']} px"
        )
        columns.append((f"{t} {name}", [canvas, pattern.soft_mask.expand_as(canvas), pattern.visible()]))
    if opts.all_classes:
        figures.image_table(
            out / "gallery.png",
            columns,
            ["canvas", "mask", f"top-{rows[0]['k']} pattern"],
            f"Class-wise patterns of {model.spec} (canvas, learned mask, pattern on grey)",
        )
    write_json(out / "classwise.json", {"model": model.describe(), "data": data.description, "classes": rows})
    return ClasswiseSummary(out, rows)


def _one_class(
    model: Classifier,
    t: int,
    sx: Images,
    sy: torch.Tensor,
    ex: Images,
    ey: torch.Tensor,
    canvases: torch.Tensor,
    canvas_image: torch.Tensor | None,
    config: ClasswiseConfig,
    opts: ClasswiseOptions,
    folder: Path,
    progress: bool,
) -> tuple[dict[str, Any], ClasswisePattern, torch.Tensor]:
    if canvas_image is None:
        if not (sy == t).any():
            raise DataError(f"no images of class {t} to take a canvas from; pass --canvas IMAGE")
        canvas_index = int(canvases[t])
        canvas, canvas_from = sx[canvas_index], f"search image {canvas_index} (most confident of class {t})"
    else:
        canvas, canvas_from = canvas_image, str(opts.canvas)
    ox, _ = other_classes(sx, sy, t)
    ox = ox[seeded_sample(len(ox), opts.max_search_images, opts.seed + t)]
    found = find_classwise_pattern(
        model, t, ox, canvas, config, progress=progress, checkpoint=folder / "checkpoint.pt", resume=opts.resume
    )
    pattern = found.pattern
    pattern.meta.update({"canvas": canvas_from, "data": opts.data})
    power = predictive_power(model, pattern, ex, ey)
    hx, hy = other_classes(ex, ey, t)
    k_min, s_min = smallest_k(model, pattern, hx, opts.success)
    names = model.class_names
    saliency = gradient_x_input(model, canvas, t)
    row = {
        "target": t,
        "name": names[t],
        "k": pattern.k,
        "success": power.success,
        "clean_rate": power.clean_rate,
        "smallest_k": k_min,
        "success_at_smallest_k": s_min,
        "images": power.images,
        "per_source_class": {names[c]: v for c, v in power.per_class.items()},
        "canvas": canvas_from,
        "simplicity": pattern_simplicity(pattern),
        "saliency_overlap": saliency_overlap(saliency, pattern),
        "search": found.summary(),
    }
    pattern.save(folder)
    with torch.no_grad():
        show = spread_examples(hx, hy)
        stamped = pattern.stamp(show)
        figures.stamped_examples(
            folder / "examples.png",
            show,
            stamped,
            predicted_class(model, show).tolist(),
            predicted_class(model, stamped).tolist(),
            names,
            f"class {t} ({names[t]}) pattern, {pattern.k} px, stamped on held-out images (red = now {names[t]})",
        )
    figures.image_table(
        folder / "canvas_mask.png",
        [
            ("canvas", [canvas]),
            ("mask", [pattern.soft_mask.expand_as(canvas)]),
            (f"top-{pattern.k}", [pattern.visible()]),
            ("saliency (grad x input)", [(saliency / saliency.max().clamp(min=1e-12))[None].expand_as(canvas)]),
        ],
        [""],
        f"class {t} ({names[t]})",
        cell=2.0,
    )
    figures.loss_curve(folder / "loss.png", found.search.history, f"class {t} pattern search loss")
    if opts.canvases > 1:
        sens = canvas_sensitivity(
            model, t, sx, sy, ex, ey, config, n=opts.canvases, max_search_images=opts.max_search_images
        )
        row["canvas_sensitivity"] = sens.summary()
        write_json(folder / "canvases.json", sens.to_dict())
        figures.image_table(
            folder / "canvases.png",
            [
                (f"canvas {i + 1}: {v:.0%}", [c, p.visible()])
                for i, (c, p, v) in enumerate(zip(sens.canvas_images, sens.patterns, sens.success, strict=True))
            ],
            ["canvas", "pattern"],
            f"class {t} ({names[t]}): patterns from its {len(sens.canvases)} most confident images (success)",
            cell=1.6,
        )
    write_json(folder / "classwise_row.json", row)
    (folder / "checkpoint.pt").unlink(missing_ok=True)
    return row, pattern, canvas


def format_classwise(summary: ClasswiseSummary) -> str:
    """One line per class: pattern size, success, clean rate and the smallest k."""
    head = f"{'class':<18} {'k':>5} {'success':>8} {'clean':>6} {'min k':>6} {'parts':>5} {'edge/px':>7} {'~sal':>5}"
    lines = [head, "-" * len(head)]
    for r in summary.rows:
        simple = r.get("simplicity") or {}  # rows resumed from before 0.4 have none
        lines.append(
            f"{(str(r['target']) + ' ' + r['name'])[:18]:<18} {r['k']:>5} {r['success']:>8.1%} "
            f"{r['clean_rate']:>6.1%} {r['smallest_k']:>6} {simple.get('components', float('nan')):>5.0f} "
            f"{simple.get('boundary_ratio', float('nan')):>7.2f} {r.get('saliency_overlap', float('nan')):>5.2f}"
        )
    lines.append("parts: connected parts of the stamp; edge/px: boundary per pixel; ~sal: IoU with the saliency map")
    for r in summary.rows:
        sens = r.get("canvas_sensitivity")
        if sens:
            lines.append(
                f"class {r['target']}: {sens['canvases']} canvases, success {sens['success_min']:.1%}-"
                f"{sens['success_max']:.1%}, mask IoU {sens['mean_pairwise_iou']:.2f} "
                f"(chance {sens['chance_iou']:.2f}), "
                f"centroids {sens['mean_centroid_distance_px']:.1f} px apart"
            )
    return "\n".join(lines)


COMMAND = Command(
    name="find classwise",
    summary="class-wise pattern (Zhao et al. 2021): a small stamp that makes the model predict a class",
    description="Search the class-wise pattern of one class (--class N) or of every class (--all-classes): "
    "a mask over a canvas image of the class, blended into images of other classes; the top-k mask pixels "
    "of the canvas are the pattern. Reports its attack success on held-out images of other classes, per "
    "source class, next to the rate without it. Writes pattern.*, examples.png, canvas_mask.png, "
    "classwise.json (and gallery.png with --all-classes) into --out.",
    options=ClasswiseOptions,
    run=find_classwise_run,
    text=lambda summary: f"{format_classwise(summary)}\nrun folder: {summary.out}",
    json=indented_json(lambda summary: {"out": str(summary.out), "classes": summary.rows}),
    report=classwise_report.build,
    result_file="classwise.json",
    files=LABELLED_RUN_FILES,
    stale=LABELLED_STALE,
)
