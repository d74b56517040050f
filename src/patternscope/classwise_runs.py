"""Run folders for ``find classwise`` and ``scan``: load model and labelled data, search, measure, save.

Both commands take labelled images: an ImageFolder tree (one sub-folder per class; any image size or
channel count, converted and resized whole to the model's input) or a built-in set (``digits``,
``fashion-mnist``: its 10,000 test images).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from . import distributed, figures
from ._io import write_json
from ._version import __version__
from .classwise import (
    ClasswiseConfig,
    ClasswisePattern,
    choose_canvas,
    class_probabilities,
    find_classwise_pattern,
    other_classes,
    predicted,
    predictive_power,
    smallest_k,
    spread_examples,
)
from .data import image_folder, read_image
from .datasets import load_dataset
from .errors import DataError
from .models import Classifier, resolve_device
from .runs import RUN_FILES, ModelOptions, load_options_model, parse_model_kwargs, prepare_run_dir
from .scan import ScanConfig, ScanReport, format_scan, labelled_images, resize_to, scan_model, stratified_split

BUILTIN_LABELLED = ("digits", "fashion-mnist")
CLASSWISE_FILES = ("classwise.json", "scan.json", "scan_config.json", "classes")
# outputs removed by --overwrite too, so a stale trigger image never survives a new verdict
STALE_OUTPUTS = ("scan.txt", "gallery.png", "canvas_mask.png", "classwise_row.json", "trigger_class*.png")


@dataclass
class LabelledImages:
    images: torch.Tensor
    labels: torch.Tensor
    class_names: list[str] | None
    description: str


def open_labelled(spec: str, input_size: tuple[int, int, int]) -> LabelledImages:
    """Labelled images for a model: a built-in set's test split, or an ImageFolder tree."""
    if spec in BUILTIN_LABELLED:
        data = load_dataset(spec)
        return LabelledImages(
            resize_to(data.test_x, input_size), data.test_y, list(data.class_names), f"{spec} (test split)"
        )
    source = image_folder(spec)
    images, labels = labelled_images(source, input_size)
    return LabelledImages(images, labels, source.class_names, source.description)


def _model_and_data(opts: Any, log: Callable[[str], None]) -> tuple[Classifier, LabelledImages]:
    device = resolve_device(opts.device)
    model = load_options_model(opts, device, parse_model_kwargs(opts.model_kwargs))
    data = open_labelled(opts.data, model.input_size)
    if data.class_names and model._class_names is None and len(data.class_names) == model.num_classes:
        model._class_names = [n.split("_", 1)[-1] if n[:2].isdigit() else n for n in data.class_names]
    n_labels = int(data.labels.max()) + 1
    if n_labels > model.num_classes:
        raise DataError(
            f"{data.description} has labels up to {n_labels - 1} but the model has {model.num_classes} classes; "
            "the class folders must match the model's classes"
        )
    log(
        f"model {model.spec} on {device} ({model.num_classes} classes); "
        f"data: {data.description}, {len(data.labels)} images"
    )
    return model, data


def _check_run_dir(out: str | Path, resume: bool, overwrite: bool) -> Path:
    return prepare_run_dir(
        out, resume=resume, overwrite=overwrite, files=(*CLASSWISE_FILES, *RUN_FILES), stale=STALE_OUTPUTS
    )


# ---------------------------------------------------------------------------------------------------
# find classwise


@dataclass
class ClasswiseOptions(ModelOptions):
    """Options of ``patternscope find classwise`` (defaults: the paper's settings)."""

    out: str = "classwise-run"
    data: str = "digits"
    target: int | None = None
    all_classes: bool = False
    canvas: str | None = None
    holdout: float = 0.3
    max_search_images: int = 1800
    steps: int | None = None
    epochs: float = 5.0
    max_steps: int = 3000
    batch_size: int = 4
    lr: float = 0.02
    alpha: float = 0.2
    top_k: float = 0.05
    learn_canvas: bool = False
    success: float = 0.9
    seed: int = 0
    resume: bool = False
    overwrite: bool = False

    def config(self) -> ClasswiseConfig:
        return ClasswiseConfig(
            alpha=self.alpha,
            lr=self.lr,
            batch_size=self.batch_size,
            epochs=self.epochs,
            steps=self.steps,
            max_steps=self.max_steps,
            top_k=self.top_k,
            learn_canvas=self.learn_canvas,
            seed=self.seed,
        )


@dataclass
class ClasswiseSummary:
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
    out = _check_run_dir(opts.out, opts.resume, opts.overwrite)
    model, data = _model_and_data(opts, log)
    targets = list(range(model.num_classes)) if opts.all_classes else [int(opts.target)]  # type: ignore[arg-type]
    for t in targets:
        if not 0 <= t < model.num_classes:
            raise DataError(
                f"class {t} is out of range: the model has {model.num_classes} classes (0..{model.num_classes - 1})"
            )
    canvas_image = None
    if opts.canvas:
        canvas_image = resize_to(read_image(opts.canvas, model.input_size[0])[None], model.input_size)[0]
    write_json(
        out / "config.json", {"command": "find classwise", "patternscope_version": __version__, "options": asdict(opts)}
    )
    search_idx, held_idx = stratified_split(data.labels, opts.holdout, opts.seed)
    sx, sy = data.images[search_idx], data.labels[search_idx]
    ex, ey = data.images[held_idx], data.labels[held_idx]
    probs = class_probabilities(model, sx)
    rows, columns = [], []
    for t in targets:
        folder = out / "classes" / f"{t:03d}" if opts.all_classes else out
        if opts.resume and (folder / "classwise_row.json").is_file():
            row = json.loads((folder / "classwise_row.json").read_text())
            pattern = ClasswisePattern.load(folder)
            canvas = pattern.colours if not pattern.meta.get("learn_canvas") else torch.zeros(model.input_size)
        else:
            row, pattern, canvas = _one_class(
                model, t, sx, sy, ex, ey, probs, canvas_image, config, opts, folder, progress
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
    sx: torch.Tensor,
    sy: torch.Tensor,
    ex: torch.Tensor,
    ey: torch.Tensor,
    probs: torch.Tensor,
    canvas_image: torch.Tensor | None,
    config: ClasswiseConfig,
    opts: ClasswiseOptions,
    folder: Path,
    progress: bool,
) -> tuple[dict[str, Any], ClasswisePattern, torch.Tensor]:
    if canvas_image is None:
        if not (sy == t).any():
            raise DataError(f"no images of class {t} to take a canvas from; pass --canvas IMAGE")
        canvas_index = choose_canvas(model, sx, sy, t, probs)
        canvas, canvas_from = sx[canvas_index], f"search image {canvas_index} (most confident of class {t})"
    else:
        canvas, canvas_from = canvas_image, str(opts.canvas)
    ox, _ = other_classes(sx, sy, t)
    if len(ox) > opts.max_search_images:
        keep = torch.randperm(len(ox), generator=torch.Generator().manual_seed(opts.seed + t))[: opts.max_search_images]
        ox = ox[keep.sort().values]
    found = find_classwise_pattern(
        model, t, ox, canvas, config, progress=progress, checkpoint=folder / "checkpoint.pt", resume=opts.resume
    )
    pattern = found.pattern
    pattern.meta.update({"canvas": canvas_from, "data": opts.data})
    power = predictive_power(model, pattern, ex, ey)
    hx, hy = other_classes(ex, ey, t)
    k_min, s_min = smallest_k(model, pattern, hx, opts.success)
    names = model.class_names
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
            predicted(model, show).tolist(),
            predicted(model, stamped).tolist(),
            names,
            f"class {t} ({names[t]}) pattern, {pattern.k} px, stamped on held-out images (red = now {names[t]})",
        )
    figures.image_table(
        folder / "canvas_mask.png",
        [
            ("canvas", [canvas]),
            ("mask", [pattern.soft_mask.expand_as(canvas)]),
            (f"top-{pattern.k}", [pattern.visible()]),
        ],
        [""],
        f"class {t} ({names[t]})",
        cell=2.0,
    )
    figures.loss_curve(folder / "loss.png", found.search.history, f"class {t} pattern search loss")
    write_json(folder / "classwise_row.json", row)
    (folder / "checkpoint.pt").unlink(missing_ok=True)
    return row, pattern, canvas


def format_classwise(summary: ClasswiseSummary) -> str:
    head = f"{'class':<18} {'k':>5} {'success':>8} {'clean':>6} {'min k':>6}"
    lines = [head, "-" * len(head)]
    for r in summary.rows:
        lines.append(
            f"{(str(r['target']) + ' ' + r['name'])[:18]:<18} {r['k']:>5} {r['success']:>8.1%} "
            f"{r['clean_rate']:>6.1%} {r['smallest_k']:>6}"
        )
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------------
# scan


@dataclass
class ScanOptions(ModelOptions):
    """Options of ``patternscope scan``; the scan settings are :class:`ScanConfig`'s."""

    out: str = "scan-run"
    data: str = "digits"
    classes: list[int] | None = None
    neural_cleanse: bool = False
    nc_seeds: int = 3
    nc_max_epochs: int = 60
    resume: bool = False
    overwrite: bool = False
    config: ScanConfig = field(default_factory=ScanConfig)


@dataclass
class ScanSummary:
    out: Path
    report: ScanReport
    neural_cleanse: dict[str, Any] | None = None


def scan_run(opts: ScanOptions, *, progress: bool = True, log: Callable[[str], None] = print) -> ScanSummary | None:
    """``patternscope scan``: class-wise patterns of every class, anomaly test, verdict and trigger.

    Under torchrun the classes are split over the ranks (each writes its classes' folders), then rank 0
    gathers them from ``out/classes/``, decides and writes the outputs; the other ranks return None.
    A multi-node scan needs ``--out`` on a file system every node sees.
    """
    from dataclasses import replace

    from .neural_cleanse import NeuralCleanseConfig, neural_cleanse

    ctx, device = distributed.init(opts.device)
    if ctx.active:
        opts = replace(opts, device=device)
        log = log if ctx.is_main else (lambda _msg: None)
        progress = progress and ctx.is_main
    nc_config = NeuralCleanseConfig(seeds=opts.nc_seeds, max_epochs=opts.nc_max_epochs)  # checked before work
    distributed.on_main(lambda: _check_run_dir(opts.out, opts.resume, opts.overwrite), ctx)
    out = Path(opts.out)
    model, data = _model_and_data(opts, log)
    options = {k: v for k, v in asdict(opts).items() if k != "config"}
    if ctx.is_main:
        write_json(
            out / "config.json",
            {"command": "scan", "patternscope_version": __version__, "options": options, "scan": asdict(opts.config)},
        )
    classes, resume = opts.classes, opts.resume
    if ctx.active:
        from .scan import check_scan_config

        targets = list(opts.classes) if opts.classes is not None else list(range(model.num_classes))
        distributed.on_main(lambda: check_scan_config(out, opts.config, opts.resume), ctx)
        log(f"class-parallel scan: {len(targets)} classes over {ctx.world_size} processes ({ctx.backend})")
        mine = targets[ctx.rank :: ctx.world_size]
        distributed.run_everywhere(
            lambda: scan_model(
                model,
                data.images,
                data.labels,
                opts.config,
                classes=mine,
                out=out,
                resume=opts.resume,
                progress=progress,
                check_config=False,
                decide_verdict=False,
            ),
            ctx,
        )
        if not ctx.is_main:
            return None
        resume = True  # rank 0 reads every rank's finished classes back
    report = scan_model(
        model,
        data.images,
        data.labels,
        opts.config,
        classes=classes,
        out=out,
        resume=resume,
        progress=progress,
    )
    nc = None
    if opts.neural_cleanse:
        search_idx, _ = stratified_split(data.labels, opts.config.holdout, opts.config.seed)
        result = neural_cleanse(model, data.images[search_idx], nc_config, classes=opts.classes, progress=progress)
        nc = result.to_dict()
        log(f"Neural Cleanse: flagged {result.flagged or 'nothing'} in {result.seconds:.1f} s")
    _write_scan_outputs(out, model, data, report, nc)
    return ScanSummary(out, report, nc)


def _write_scan_outputs(
    out: Path, model: Classifier, data: LabelledImages, report: ScanReport, nc: dict[str, Any] | None
) -> None:
    names = model.class_names
    payload = report.to_dict()
    payload["data"] = data.description
    if nc is not None:
        payload["neural_cleanse"] = nc
    columns = []
    for row in report.rows:
        p = report.patterns[row.target]
        columns.append((f"{row.target} {row.name}", [p.soft_mask.expand(p.shape), p.visible()]))
    figures.image_table(
        out / "gallery.png",
        columns,
        ["learned mask", "smallest pattern"],
        "Per-class patterns (smallest k reaching the target success); flagged: "
        + (", ".join(str(c) for c in report.flagged) or "none"),
    )
    for t in report.flagged:
        p = report.patterns[t]
        figures.image_table(
            out / f"trigger_class{t}.png",
            [
                ("recovered trigger", [p.visible()]),
                ("its colours", [p.colours]),
                ("mask", [p.soft_mask.expand(p.shape)]),
            ],
            [""],
            f"recovered trigger of class {t} ({names[t]}): {p.k} px",
            cell=2.0,
        )
        _, held = stratified_split(data.labels, report.config["holdout"], report.config["seed"])
        hx, hy = other_classes(data.images[held], data.labels[held], t)
        show = spread_examples(hx, hy)
        stamped = p.stamp(show)
        figures.stamped_examples(
            out / f"trigger_class{t}_examples.png",
            show,
            stamped,
            predicted(model, show).tolist(),
            predicted(model, stamped).tolist(),
            names,
            f"recovered trigger of class {t} stamped on held-out images",
        )
        payload.setdefault("triggers", {})[str(t)] = {
            "image": f"trigger_class{t}.png",
            "pattern": f"classes/{t:03d}/pattern.safetensors",
            "k": p.k,
        }
    write_json(out / "scan.json", payload)
    (out / "scan.txt").write_text(format_scan(report) + "\n")


__all__ = [
    "ClasswiseOptions",
    "ScanOptions",
    "find_classwise_run",
    "format_classwise",
    "format_scan",
    "scan_run",
]
