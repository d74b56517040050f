"""A backdoor scan into a run folder (:func:`scan_run`, from ``patternscope scan``'s options): class-wise and
additive patterns of every class, the verdict, each flagged class's recovered trigger, ``scan.json`` and
``classes/NNN/``. ``audit`` runs it for its backdoor part."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any

from ..analyses.classwise import other_classes, spread_examples
from ..analyses.neural_cleanse import NeuralCleanseConfig, neural_cleanse
from ..analyses.scan import ScanConfig, ScanReport, check_scan_config, format_scan, scan_model
from ..analyses.scan_decision import class_label
from ..core import distributed
from ..core.atomic import write_json
from ..core.classifier import Classifier
from ..core.configs import config_from, from_config
from ..core.predict import predicted_class
from ..data.labelled import LabelledImages, stratified_split
from ..report import figures
from .folders import prepare_run_dir, share_run_id, write_run_config
from .labelled import LABELLED_RUN_FILES, LABELLED_STALE, model_and_labelled_data
from .options import (
    LABELLED_HELP,
    LabelledDataOptions,
    ModelOptions,
    OutputFolder,
    comma_list,
    comma_text,
    option,
    parse_classes,
)
from .reference_scans import ReferenceRecord, check_references, reference_values
from .tensorboard_log import TENSORBOARD_HELP, TensorBoardLog, check_tensorboard

COMMAND_NAME = "scan"  # what its config.json names
_S = ScanConfig()


_NC = NeuralCleanseConfig()


@dataclass
class ScanOptions(LabelledDataOptions, ModelOptions, OutputFolder):
    """Every option of ``patternscope scan``; the scan settings default to
    :class:`~patternscope.analyses.scan.ScanConfig`'s (``--natural-canvas`` turns ``learn_canvas`` off)."""

    out: str = option("scan-run", help="run folder to write (created if missing)", metavar="DIR", required=True)
    data: str = option("digits", help=f"clean {LABELLED_HELP}", metavar="SOURCE", required=True)
    classes: list[int] | None = option(
        None,
        help="only these classes, comma-separated (default all)",
        metavar="LIST",
        parse=parse_classes,
        text=comma_text,
    )
    steps: int = from_config(ScanConfig, "steps")
    batch_size: int = from_config(ScanConfig, "batch_size")
    success: float = from_config(ScanConfig, "success")
    top_k: float = from_config(ScanConfig, "top_k")
    rule: str = from_config(ScanConfig, "rule")
    fpr: float = from_config(ScanConfig, "fpr")
    calibration: str | None = from_config(ScanConfig, "calibration")
    reference: list[str] | None = option(
        None,
        help="clean reference models, comma-separated: weights files for the same --model, or folders of "
        "finished scans of clean models; the verdict then compares each class with the same class in them",
        metavar="LIST",
        parse=comma_list,
        text=comma_text,
    )
    reference_cache: str | None = option(
        None,
        help="folder keeping finished reference scans for reuse by later runs (default "
        "$PATTERNSCOPE_CACHE/reference-scans or ~/.cache/patternscope/reference-scans)",
        metavar="DIR",
    )
    no_additive: bool = option(not _S.additive, help="skip the additive signal (faster; misses blended triggers)")
    additive_steps: int = from_config(ScanConfig, "additive_steps")
    threshold: float = from_config(ScanConfig, "threshold")
    max_ratio: float = from_config(ScanConfig, "max_ratio")
    holdout: float = from_config(ScanConfig, "holdout")
    natural_canvas: bool = option(
        not _S.learn_canvas, help="keep the canvas colours fixed (the paper's method; weaker)"
    )
    seed: int = from_config(ScanConfig, "seed")
    neural_cleanse: bool = option(False, help="also run Neural Cleanse on the same data")
    nc_seeds: int = option(_NC.seeds, help="Neural Cleanse runs averaged per class (default {default})")
    nc_max_epochs: int = option(_NC.max_epochs, help="Neural Cleanse epoch cap per run (default {default})")
    resume: bool = option(False, help="keep finished classes, continue the rest")
    overwrite: bool = option(False, help="replace a scan already in --out")
    tensorboard: bool = option(False, help=TENSORBOARD_HELP)

    def config(self) -> ScanConfig:
        """The scan settings (validated)."""
        return config_from(ScanConfig, self, learn_canvas=not self.natural_canvas, additive=not self.no_additive)

    def run_options(self) -> dict[str, Any]:
        """The options that are not scan settings (``config.json`` keeps those apart, under ``scan``)."""
        settings = {f.name for f in fields(ScanConfig)} | {"natural_canvas", "no_additive"}
        return {k: v for k, v in asdict(self).items() if k not in settings}


@dataclass
class ScanSummary:
    """A finished scan: its folder, the report and Neural Cleanse's result when it ran."""

    out: Path
    report: ScanReport
    neural_cleanse: dict[str, Any] | None = None


def scan_run(
    opts: ScanOptions,
    *,
    progress: bool = True,
    log: Callable[[str], None] = print,
    loaded: tuple[Classifier, LabelledImages] | None = None,
) -> ScanSummary | None:
    """``patternscope scan``: class-wise patterns of every class, anomaly test, verdict and trigger.

    ``loaded`` (the model and its labelled images, as :func:`~patternscope.runs.labelled.model_and_labelled_data`
    gives them for ``opts``) replaces loading them again: ``audit`` has them in memory already.

    Under torchrun the classes are split over the ranks (each writes its classes' folders), then rank 0
    gathers them from ``out/classes/``, decides and writes the outputs; the other ranks return None.
    A multi-node scan needs ``--out`` on a file system every node sees.
    """
    ctx, device = distributed.init(opts.device)
    if ctx.active:
        opts = replace(opts, device=device)
        log = log if ctx.is_main else (lambda _msg: None)
        progress = progress and ctx.is_main
    config = opts.config()  # every setting is checked before work
    if opts.tensorboard:
        check_tensorboard()
    check_references(opts, config)
    nc_config = NeuralCleanseConfig(seeds=opts.nc_seeds, max_epochs=opts.nc_max_epochs)
    distributed.on_main(
        lambda: prepare_run_dir(
            opts.out, resume=opts.resume, overwrite=opts.overwrite, files=LABELLED_RUN_FILES, stale=LABELLED_STALE
        ),
        ctx,
    )
    out = Path(opts.out)
    share_run_id(out, ctx)  # every rank saves its classes' patterns into the run
    model, data = loaded if loaded is not None else model_and_labelled_data(opts, log)
    if ctx.is_main:
        write_run_config(out, COMMAND_NAME, opts.run_options(), scan=asdict(config))
    classes, resume = opts.classes, opts.resume
    reference: dict[str, list[float]] | None = None
    records: list[ReferenceRecord] = []
    if ctx.is_main:
        cache = Path(opts.reference_cache) if opts.reference_cache else None
        reference, records = reference_values(opts, config, data, log, progress, cache)
    if ctx.active:
        targets = list(opts.classes) if opts.classes is not None else list(range(model.num_classes))
        distributed.on_main(lambda: check_scan_config(out, config, opts.resume), ctx)
        log(f"class-parallel scan: {len(targets)} classes over {ctx.world_size} processes ({ctx.backend})")
        mine = targets[ctx.rank :: ctx.world_size]
        distributed.run_everywhere(
            lambda: scan_model(
                model,
                data.images,
                data.labels,
                config=config,
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
    board = TensorBoardLog(out) if opts.tensorboard else None
    report = scan_model(
        model,
        data.images,
        data.labels,
        config=config,
        classes=classes,
        out=out,
        resume=resume,
        progress=progress,
        reference=reference,
        monitor=(lambda t: board.monitor(f"class {t}", None)) if board is not None else None,
    )
    if board is not None:
        for row in report.rows:
            board.metrics(f"class {row.target}", asdict(row))
        board.close()
    nc = None
    if opts.neural_cleanse:
        search_idx, _ = stratified_split(data.labels, config.holdout, config.seed)
        result = neural_cleanse(
            model,
            data.images[search_idx],
            config=nc_config,
            labels=data.labels[search_idx],
            classes=opts.classes,
            progress=progress,
        )
        nc = result.to_dict()
        log(f"Neural Cleanse: flagged {result.flagged or 'nothing'} in {result.seconds:.1f} s")
    _write_scan_outputs(out, model, data, report, nc, records)
    return ScanSummary(out, report, nc)


def _write_scan_outputs(
    out: Path,
    model: Classifier,
    data: LabelledImages,
    report: ScanReport,
    nc: dict[str, Any] | None,
    references: list[ReferenceRecord],
) -> None:
    names = model.class_names
    payload = report.to_dict()
    payload["data"] = data.description
    if references:
        payload["references"] = [asdict(r) for r in references]
    if nc is not None:
        payload["neural_cleanse"] = nc
    columns = []
    for row in report.rows:
        p = report.patterns[row.target]
        columns.append((class_label(row.target, row.name), [p.soft_mask.expand(p.shape), p.visible()]))
    figures.image_table(
        out / "gallery.png",
        columns,
        ["learned mask", "smallest pattern"],
        "Per-class patterns (smallest k reaching the target success); flagged: "
        + (", ".join(str(c) for c in report.flagged) or "none"),
    )
    _, held = stratified_split(data.labels, report.config["holdout"], report.config["seed"])
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
            f"recovered trigger of class {class_label(t, names[t])}: {p.k} px",
            cell=2.0,
        )
        hx, hy = other_classes(data.images[held], data.labels[held], target=t)
        show = spread_examples(hx, hy)
        before = predicted_class(model, show).tolist()
        changed = p.stamp(show)
        figures.stamped_examples(
            out / f"trigger_class{t}_examples.png",
            show,
            changed,
            before,
            predicted_class(model, changed).tolist(),
            names,
            f"recovered trigger of class {t} stamped on held-out images",
        )
        row = next(r for r in report.rows if r.target == t)
        entry: dict[str, Any] = {
            "image": f"trigger_class{t}.png",
            "pattern": f"classes/{t:03d}/pattern.safetensors",
            "k": p.k,
            "verified_stamp": row.verified_stamp,
            "evidence": row.evidence,
        }
        delta = report.additive.get(t)
        if delta is not None:
            changed = delta.apply(show)
            title = f"smallest additive pattern of class {t} (L2 {delta.eps:.3g}) added to held-out images"
            after = predicted_class(model, changed).tolist()
            figures.stamped_examples(
                out / f"additive_class{t}_examples.png", show, changed, before, after, names, title
            )
            entry |= {
                "additive_pattern": f"classes/{t:03d}/additive/pattern.safetensors",
                "additive_image": f"additive_class{t}_examples.png",
                "smallest_l2": row.smallest_l2,
                "verified_additive": row.verified_additive,
            }
        payload.setdefault("triggers", {})[str(t)] = entry
    write_json(out / "scan.json", payload)
    (out / "scan.txt").write_text(format_scan(report) + "\n")
