"""``patternscope harden``: the run folder around :mod:`patternscope.analyses.hardening`.

Stages, each kept on ``--resume`` once finished:

1. ``before/seed_S/``: every requested pattern method (dominant and the baseline UAPs) searched on the
   original model with the same budget, and measured on held-out images (a ``compare`` folder), once
   per restart (seeds ``--seed`` to ``--seed + --restarts - 1``); the strongest restart counts.
2. hardening: universal adversarial training on the training split (``harden_checkpoint.pt`` while it
   runs), then ``hardened.safetensors`` (the network's state dict: load it with ``--weights``),
   ``training.json``, ``training_patterns.safetensors`` and ``training.png``.
3. ``after/seed_S/``: the same methods searched afresh on the hardened model, the same restarts.
4. ``classwise_before/`` and ``classwise_after/``: class-wise patterns of every class, before and after.
5. ``harden.json`` and ``harden.png``: clean accuracy and each method's strongest fooling ratio before
   and after, and the original model's strongest pattern measured on the hardened model.

The data split (``--holdout`` of each class held out, by ``--seed``) is the same for every stage: the
hardening never trains on a held-out image, and every fooling ratio and accuracy is measured on them.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from .._version import __version__
from ..analyses.comparison import DEFAULT_BUDGET, MethodFailed
from ..analyses.hardening import HardenConfig, HardenEpoch, HardenResult, harden_model
from ..core.atomic import write_atomic, write_json
from ..core.classifier import Classifier
from ..core.configs import config_from, from_config
from ..core.metrics import evaluate_pattern
from ..core.patterns import ClasswisePattern, Pattern, parse_eps
from ..core.run_id import run_metadata
from ..data.bank import image_set_of
from ..data.labelled import stratified_split
from ..errors import DataError, PatternError, RunDirError
from ..methods import LABEL_FREE_METHODS, get_recipe
from ..report import figures
from ..report import harden as harden_report
from .classwise_run import ClasswiseOptions, find_classwise_run
from .command import Command, indented_json
from .compare_run import CompareOptions, compare_methods
from .folders import prepare_run_dir, write_run_config
from .labelled import model_and_labelled_data
from .options import (
    LABELLED_HELP,
    LabelledDataOptions,
    ModelOptions,
    OutputFolder,
    comma_list,
    comma_text,
    model_fields,
    option,
)
from .tensorboard_log import check_tensorboard

_H = HardenConfig()


@dataclass
class HardenOptions(LabelledDataOptions, ModelOptions, OutputFolder):
    """Every option of ``patternscope harden``; the hardening settings default to
    :class:`~patternscope.analyses.hardening.HardenConfig`'s."""

    out: str = option("runs/harden", help="folder to write (created if missing)", metavar="DIR", required=True)
    data: str = option("", help=LABELLED_HELP, metavar="SOURCE", required=True)
    eps: str = option("10/255", help="budget of the training patterns (default {default})")
    norm: str = from_config(HardenConfig, "norm")
    epochs: int = from_config(HardenConfig, "epochs")
    lr: float = from_config(HardenConfig, "lr")
    batch_size: int = from_config(HardenConfig, "batch_size")
    delta_steps: int = from_config(HardenConfig, "delta_steps")
    delta_step: float | None = from_config(HardenConfig, "delta_step")
    pool: int = from_config(HardenConfig, "pool")
    clean_weight: float = from_config(HardenConfig, "clean_weight")
    loss_clamp: float | None = from_config(HardenConfig, "loss_clamp")
    max_accuracy_drop: float = from_config(HardenConfig, "max_accuracy_drop")
    holdout: float = option(0.3, help="share of each class held out (default {default})")
    methods: list[str] = option(
        factory=lambda: list(LABEL_FREE_METHODS),
        help="methods searched before and after, comma-separated ('' for none; default all)",
        parse=comma_list,
        text=comma_text,
    )
    budget: float = option(DEFAULT_BUDGET, help="passes per method search (default {default})")
    restarts: int = option(
        2,
        help="searches per method and model, seeds --seed, --seed+1, ...; the strongest counts (default {default})",
    )
    objective: str = from_config(HardenConfig, "objective")
    classwise: bool = option(True, help="skip the class-wise galleries", name="--no-classwise")
    classwise_steps: int = option(300, help="steps per class-wise pattern (default {default})")
    seed: int = from_config(HardenConfig, "seed")
    checkpoint_every: int = option(50, help="batches between hardening checkpoints (default {default})")
    resume: bool = option(False, help="continue an interrupted run in --out")
    overwrite: bool = option(False, help="replace a run already in --out")
    tensorboard: bool = option(
        False, help="also write the before/after searches as TensorBoard events (in each comparison's folder)"
    )
    eval_batch_size: int = 64

    def config(self) -> HardenConfig:
        """The validated hardening settings (budget parsed)."""
        return config_from(HardenConfig, self, eps=parse_eps(self.eps, self.norm))


@dataclass
class HardenSummary:
    """A finished hardening run: its folder and everything in ``harden.json``."""

    out: Path
    payload: dict[str, Any]


def harden_run(opts: HardenOptions, *, progress: bool = True, log: Callable[[str], None] = print) -> HardenSummary:
    """Run ``patternscope harden`` end to end (see the module docstring) and write ``opts.out``."""
    config = opts.config()  # every setting is checked before anything slow runs
    if opts.tensorboard:
        check_tensorboard()
    if not opts.data:
        raise DataError("--data is required: labelled images (an ImageFolder tree, digits or fashion-mnist)")
    if not 0 < opts.holdout < 1:
        raise PatternError(f"--holdout must be between 0 and 1, got {opts.holdout}")
    for m in opts.methods:
        get_recipe(m)
    if len(set(opts.methods)) != len(opts.methods):
        raise PatternError("a method is listed twice in --methods")
    if opts.restarts < 1:
        raise PatternError(f"--restarts must be >= 1, got {opts.restarts}")
    if not opts.budget > 0:
        raise PatternError(f"--budget must be a positive number of passes, got {opts.budget}")
    if opts.classwise and opts.classwise_steps < 1:
        raise PatternError(f"--classwise-steps must be >= 1, got {opts.classwise_steps}")
    out = prepare_run_dir(
        opts.out, resume=opts.resume, overwrite=opts.overwrite, files=COMMAND.files, stale=COMMAND.stale
    )
    model, data = model_and_labelled_data(opts, log)
    train_idx, held_idx = stratified_split(data.labels, opts.holdout, opts.seed)
    x, y = data.images[train_idx], data.labels[train_idx]
    hx, hy = data.images[held_idx], data.labels[held_idx]
    if len(x) < config.batch_size:
        raise DataError(f"--batch-size {config.batch_size} is larger than the {len(x)} training images")
    write_run_config(out, COMMAND.name, opts)
    log(f"split: {len(x)} training images, {len(hx)} held out; eps {config.eps:.4f} ({config.norm})")
    held_out = image_set_of(hx, hy, name=f"held-out split of {data.description}")
    sources = ([image_set_of(x, name="training split")], held_out)

    def compare_on(net: Classifier, stage: str, weights: str | None) -> list[dict[str, Any]]:
        """One comparison per restart (seeds seed, seed+1, ...): a pattern search is a local search."""
        runs = []
        for seed in range(opts.seed, opts.seed + (opts.restarts if opts.methods else 0)):
            folder = out / stage / f"seed_{seed}"
            log(f"{stage} hardening, seed {seed}: searching {', '.join(opts.methods)} ({opts.budget:g} passes each)")
            settings = _compare_options(opts, folder, weights, seed)
            try:
                compare_methods(settings, progress=progress, log=log, model=net, sources=sources)
            except MethodFailed as exc:  # the other methods finished; the failure is reported at the end
                log(str(exc))
            runs.append(json.loads((folder / "compare.json").read_text()))
        return runs

    before = compare_on(model, "before", opts.weights)
    result = _hardened(model, x, y, hx, hy, config, opts, out, progress, log)
    after = compare_on(result.model, "after", str(out / "hardened.safetensors"))
    methods = _method_rows(result.model, before, after, out, hx, opts)
    classwise = _classwise_before_after(opts, out, progress, log) if opts.classwise else None
    payload = {
        "patternscope_version": __version__,
        "model": model.describe(),
        "data": data.description,
        "split": {"train": len(x), "held_out": len(hx), "holdout": opts.holdout, "seed": opts.seed},
        "eps": config.eps,
        "norm": config.norm,
        "budget_passes": opts.budget,
        "hardening": result.summary(),
        "hardened_weights": "hardened.safetensors",
        "methods": methods,
        "restarts": opts.restarts,
        "random_sign": {
            "before": before[0]["random_sign_fooling_ratio"] if before else None,
            "after": after[0]["random_sign_fooling_ratio"] if after else None,
        },
        "classwise": classwise,
    }
    if methods:
        figures.paired_bars(
            out / "harden.png",
            [r["method"] for r in methods],
            [r["before"] or 0.0 for r in methods],
            [r["after"] or 0.0 for r in methods],
            f"Fooling ratio of the strongest freshly searched pattern (of {opts.restarts} seeds), before and after "
            f"hardening ({len(hx)} held-out images)",
            "fooling ratio",
            ("original model", "hardened model"),
        )
    write_json(out / "harden.json", payload)
    failed = [r["method"] for r in methods if r["error"]]
    if failed:
        raise MethodFailed(
            f"method(s) {', '.join(failed)} failed in a before/after search (see their error.txt under {out}); "
            f"the other results are in {out / 'harden.json'}"
        )
    return HardenSummary(out, payload)


def _compare_options(opts: HardenOptions, folder: Path, weights: str | None, seed: int) -> CompareOptions:
    return CompareOptions(
        **{**model_fields(opts), "weights": weights},
        out=str(folder),
        methods=list(opts.methods),
        eps=opts.eps,
        norm=opts.norm,
        budget=opts.budget,
        seed=seed,
        eval_batch_size=opts.eval_batch_size,
        resume=opts.resume,
        tensorboard=opts.tensorboard,
    )


def _hardened(
    model: Classifier,
    x: torch.Tensor,
    y: torch.Tensor,
    hx: torch.Tensor,
    hy: torch.Tensor,
    config: HardenConfig,
    opts: HardenOptions,
    out: Path,
    progress: bool,
    log: Callable[[str], None],
) -> HardenResult:
    """The hardening stage: kept from an earlier run on ``--resume``, else trained (resuming its checkpoint)."""
    weights, record = out / "hardened.safetensors", out / "training.json"
    if opts.resume and weights.is_file() and record.is_file():
        saved = json.loads(record.read_text())
        if saved.get("config") != asdict(config):
            raise RunDirError(f"{out} was hardened with other settings; pass --overwrite to start again")
        hardened = copy.deepcopy(model)
        hardened.net.load_state_dict(load_file(str(weights)))
        log(f"hardening: finished earlier (epoch {saved['chosen_epoch']} kept), weights loaded from {weights}")
        patterns_file = out / "training_patterns.safetensors"
        patterns = load_file(str(patterns_file))["patterns"] if patterns_file.is_file() else torch.zeros(0)
        return HardenResult(
            model=hardened,
            config=config,
            accuracy_before=saved["accuracy_before"],
            accuracy_after=saved["accuracy_after"],
            chosen_epoch=saved["chosen_epoch"],
            history=[HardenEpoch(**h) for h in saved["history"]],
            patterns=patterns,
            seconds=saved["seconds"],
            resumed_from=saved.get("resumed_from"),
        )
    checkpoint = out / "harden_checkpoint.pt"

    def report(epoch: Any) -> None:
        mark = "" if epoch.within_bound else "  (outside the accuracy bound)"
        log(
            f"hardening epoch {epoch.epoch}/{config.epochs}: loss {epoch.loss:.3f}, held-out accuracy "
            f"{epoch.accuracy:.3f}, training patterns fool {epoch.pool_fooling_ratio:.3f}{mark}"
        )

    log(
        f"hardening: {config.epochs} epochs, {config.delta_steps} pattern steps per batch, pool of {config.pool}, "
        f"accuracy may fall at most {config.max_accuracy_drop:g}"
    )
    result = harden_model(
        model,
        x,
        y,
        held_images=hx,
        held_labels=hy,
        config=config,
        checkpoint=checkpoint,
        checkpoint_every=opts.checkpoint_every,
        resume=opts.resume,
        progress=progress,
        on_epoch=report,
    )
    state = {k: v.detach().contiguous().cpu() for k, v in result.model.net.state_dict().items()}
    run = run_metadata(out)
    write_atomic(weights, lambda tmp: save_file(state, str(tmp), metadata=run))
    write_atomic(
        out / "training_patterns.safetensors",
        lambda tmp: save_file({"patterns": result.patterns.contiguous()}, str(tmp), metadata=run),
    )
    figures.hardening_curve(
        out / "training.png",
        [h.accuracy for h in result.history],
        [h.pool_fooling_ratio for h in result.history],
        result.accuracy_before,
        result.accuracy_before - config.max_accuracy_drop,
        result.chosen_epoch,
    )
    write_json(record, result.summary())
    checkpoint.unlink(missing_ok=True)
    log(
        f"hardened: epoch {result.chosen_epoch} kept; held-out accuracy {result.accuracy_before:.3f} -> "
        f"{result.accuracy_after:.3f}; weights in {weights}"
    )
    return result


def _strongest(runs: list[dict[str, Any]], method: str) -> tuple[float | None, int | None, list[float | None]]:
    """(highest fooling ratio over the restarts, its seed, every restart's) of ``method``; None if all failed."""
    values = [next((r.get("fooling_ratio") for r in run["rows"] if r["method"] == method), None) for run in runs]
    found = [(v, run["seed"]) for v, run in zip(values, runs, strict=True) if v is not None]
    if not found:
        return None, None, values
    best = max(found, key=lambda t: t[0])
    return best[0], best[1], values


def _method_rows(
    hardened: Classifier,
    before: list[dict[str, Any]],
    after: list[dict[str, Any]],
    out: Path,
    hx: torch.Tensor,
    opts: HardenOptions,
) -> list[dict[str, Any]]:
    """Per method: the strongest fresh pattern's fooling ratio (over the restarts) before and after, and
    the original model's strongest pattern measured on the hardened model (does the old pattern still work?)."""
    rows = []
    for name in opts.methods:
        b, b_seed, b_all = _strongest(before, name)
        a, a_seed, a_all = _strongest(after, name)
        carried = None
        old = out / "before" / f"seed_{b_seed}" / name / "pattern.safetensors"
        if b_seed is not None and old.is_file():
            carried = evaluate_pattern(
                hardened, Pattern.load(old), hx, baselines=(), batch_size=opts.eval_batch_size, seed=opts.seed
            ).fooling_ratio
        errors = [r["error"] for run in before + after for r in run["rows"] if r["method"] == name and r.get("error")]
        rows.append(
            {
                "method": name,
                "title": get_recipe(name).title,
                "before": b,
                "after": a,
                "before_restarts": b_all,
                "after_restarts": a_all,
                "before_seed": b_seed,
                "after_seed": a_seed,
                "original_pattern_on_hardened": carried,
                "error": errors[0] if errors else None,
            }
        )
    return rows


def _classwise_before_after(
    opts: HardenOptions, out: Path, progress: bool, log: Callable[[str], None]
) -> dict[str, Any]:
    """Class-wise patterns of every class on the original and on the hardened model, and a gallery of both."""
    runs = {}
    for stage, weights in (("before", opts.weights), ("after", str(out / "hardened.safetensors"))):
        cw = ClasswiseOptions(
            **{**model_fields(opts), "weights": weights},
            out=str(out / f"classwise_{stage}"),
            data=opts.data,
            all_classes=True,
            holdout=opts.holdout,
            steps=opts.classwise_steps,
            seed=opts.seed,
            resume=opts.resume,
        )
        log(f"class-wise patterns {stage} hardening ({opts.classwise_steps} steps per class)")
        runs[stage] = find_classwise_run(cw, progress=progress, log=lambda _msg: None).rows
    columns = []
    for b in runs["before"]:
        t = b["target"]
        images = [
            ClasswisePattern.load(out / f"classwise_{stage}" / "classes" / f"{t:03d}").visible()
            for stage in ("before", "after")
        ]
        columns.append((f"{t} {b['name']}", images))
    figures.image_table(
        out / "classwise_gallery.png",
        columns,
        ["before", "after"],
        "Class-wise pattern of every class, on the original (top) and the hardened model (bottom)",
    )
    rows = [
        {
            "target": b["target"],
            "name": b["name"],
            "k": b["k"],
            "success_before": b["success"],
            "success_after": a["success"],
            "smallest_k_before": b["smallest_k"],
            "smallest_k_after": a["smallest_k"],
        }
        for b, a in zip(runs["before"], runs["after"], strict=True)
    ]
    n = max(len(rows), 1)
    return {
        "steps": opts.classwise_steps,
        "classes": rows,
        "mean_success_before": sum(r["success_before"] for r in rows) / n,
        "mean_success_after": sum(r["success_after"] for r in rows) / n,
    }


def format_harden(summary: HardenSummary) -> str:
    p = summary.payload
    h = p["hardening"]
    lines = [
        f"clean accuracy (held out)   {h['accuracy_before']:.3f} -> {h['accuracy_after']:.3f}   "
        f"(bound {h['accuracy_bound']:.3f}; epoch {h['chosen_epoch']} of {h['config']['epochs']} kept)",
    ]
    if p["methods"]:
        head = f"{'method':<10} {'before':>7} {'after':>7} {'after/before':>13} {'old pattern now':>16}"
        lines += ["", "fooling ratio of a freshly searched pattern", head, "-" * len(head)]
        for r in p["methods"]:
            if r["error"]:
                lines.append(f"{r['method']:<10} failed: {r['error']}")
                continue
            ratio = r["after"] / r["before"] if r["before"] else float("nan")
            old = r["original_pattern_on_hardened"]
            lines.append(
                f"{r['method']:<10} {r['before']:>7.3f} {r['after']:>7.3f} {ratio:>13.2f} "
                f"{old if old is None else format(old, '.3f'):>16}"
            )
        rs = p["random_sign"]
        if rs["before"] is not None:
            lines.append(f"{'random ±ε':<10} {rs['before']:>7.3f} {rs['after']:>7.3f}")
    cw = p.get("classwise")
    if cw:
        lines.append(
            f"\nclass-wise patterns: mean success {cw['mean_success_before']:.3f} before, "
            f"{cw['mean_success_after']:.3f} after"
        )
    lines.append(f"hardened weights: {summary.out / p['hardened_weights']}  (load with --weights)")
    return "\n".join(lines)


COMMAND = Command(
    name="harden",
    summary="fine-tune a model against its own universal patterns, and measure it before and after",
    description="Universal adversarial training (Shafahi et al. 2020): on every batch a few steps make a universal "
    "pattern raise the model's loss, then one model step learns to classify clean and patterned images. Keeps "
    "the last epoch whose held-out clean accuracy is within --max-accuracy-drop of the original. Searches every "
    "--methods pattern afresh before and after, and class-wise patterns of every class before and after. Writes "
    "hardened.safetensors (load it with --weights), harden.json, harden.png, training.png, before/, after/, "
    "classwise_before/ and classwise_after/ into --out.",
    options=HardenOptions,
    run=harden_run,
    text=format_harden,
    json=indented_json(lambda summary: summary.payload),
    report=harden_report.build,
    result_file="harden.json",
    files=(
        "harden.json",
        "hardened.safetensors",
        "harden_checkpoint.pt",
        "training.json",
        "config.json",
        "before",
        "after",
        "classwise_before",
        "classwise_after",
    ),
    stale=("harden.png", "training.png", "training_patterns.safetensors", "classwise_gallery.png"),
)
