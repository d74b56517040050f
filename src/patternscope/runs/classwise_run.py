"""Class-wise patterns into a run folder (:func:`find_classwise_run`, from ``patternscope find classwise``'s
options): the pattern of one class or of every class, its predictive power on held-out images of other
classes, patterns, figures and ``classwise.json``. ``harden`` runs it for its before/after galleries."""

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
from ..core.configs import config_from, from_config
from ..core.patterns import ClasswisePattern
from ..core.predict import predicted_class
from ..core.run_id import without_run_id
from ..data.bank import Images
from ..data.images import read_image, resize_to
from ..data.labelled import seeded_sample, stratified_split
from ..errors import DataError
from ..report import figures
from .folders import prepare_run_dir, write_run_config
from .labelled import LABELLED_RUN_FILES, LABELLED_STALE, model_and_labelled_data
from .options import LABELLED_HELP, LabelledDataOptions, ModelOptions, OutputFolder, option
from .tensorboard_log import TENSORBOARD_HELP, TensorBoardLog, check_tensorboard

COMMAND_NAME = "find classwise"  # what its config.json names
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
    steps: int | None = from_config(ClasswiseConfig, "steps")
    epochs: float = from_config(ClasswiseConfig, "epochs")
    max_steps: int = from_config(ClasswiseConfig, "max_steps")
    batch_size: int = from_config(ClasswiseConfig, "batch_size")
    lr: float = from_config(ClasswiseConfig, "lr")
    alpha: float = from_config(ClasswiseConfig, "alpha")
    top_k: float = from_config(ClasswiseConfig, "top_k")
    learn_canvas: bool = from_config(ClasswiseConfig, "learn_canvas")
    success: float = option(0.9, help="success rate for 'min k' (default {default})")
    canvases: int = option(
        1,
        help="also search from the class's N most confident images and measure how the patterns agree (default 1: off)",
    )
    seed: int = from_config(ClasswiseConfig, "seed")
    resume: bool = option(False, help="keep finished classes, continue the rest")
    overwrite: bool = option(False, help="replace a run already in --out")
    tensorboard: bool = option(False, help=TENSORBOARD_HELP)

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
    if opts.tensorboard:
        check_tensorboard()
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
    write_run_config(out, COMMAND_NAME, opts)
    search_idx, held_idx = stratified_split(data.labels, opts.holdout, opts.seed)
    sx, sy = data.images[search_idx], data.labels[search_idx]
    ex, ey = data.images[held_idx], data.labels[held_idx]
    canvases = best_canvases(model, sx, sy) if canvas_image is None else torch.empty(0, dtype=torch.long)
    board = TensorBoardLog(out) if opts.tensorboard else None
    rows, columns = [], []
    for t in targets:
        folder = out / "classes" / f"{t:03d}" if opts.all_classes else out
        if opts.resume and (folder / "classwise_row.json").is_file():
            row = without_run_id(json.loads((folder / "classwise_row.json").read_text()))
            pattern = ClasswisePattern.load(folder)
            canvas = pattern.colours if not pattern.meta.get("learn_canvas") else torch.zeros(model.input_size)
        else:
            row, pattern, canvas = _one_class(
                model, t, sx, sy, ex, ey, canvases, canvas_image, config, opts, folder, progress, board
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
    if board is not None:
        board.close()
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
    board: TensorBoardLog | None = None,
) -> tuple[dict[str, Any], ClasswisePattern, torch.Tensor]:
    if canvas_image is None:
        if not (sy == t).any():
            raise DataError(f"no images of class {t} to take a canvas from; pass --canvas IMAGE")
        canvas_index = int(canvases[t])
        canvas, canvas_from = sx[canvas_index], f"search image {canvas_index} (most confident of class {t})"
    else:
        canvas, canvas_from = canvas_image, str(opts.canvas)
    ox, _ = other_classes(sx, sy, target=t)
    ox = ox[seeded_sample(len(ox), opts.max_search_images, opts.seed + t)]
    found = find_classwise_pattern(
        model,
        ox,
        target=t,
        canvas=canvas,
        config=config,
        progress=progress,
        checkpoint=folder / "checkpoint.pt",
        resume=opts.resume,
        monitor=board.monitor(f"class {t}", None) if board is not None else None,
    )
    pattern = found.pattern
    pattern.meta.update({"canvas": canvas_from, "data": opts.data})
    power = predictive_power(model, pattern, ex, ey)
    hx, hy = other_classes(ex, ey, target=t)
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
            model,
            sx,
            sy,
            target=t,
            held_images=ex,
            held_labels=ey,
            config=config,
            n=opts.canvases,
            max_search_images=opts.max_search_images,
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
    if board is not None:
        board.metrics(f"class {t}", row, found.steps)
    return row, pattern, canvas
