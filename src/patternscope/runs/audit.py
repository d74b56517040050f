"""``patternscope audit``: one command, one page that answers "what does this model let through?".

Each part runs into its own sub-folder of ``--out`` and resumes with ``--resume``:

1. ``patterns/``: the dominant pattern and the strongest baseline (PSP-UAP by default) at the same budget,
   searched label-free on the search data (default: the bundled photos and jigsaw proxies) and measured on
   ``--data`` (fooling ratio with Wilson intervals, agreement, dominance, perceptibility, random ±ε noise of
   the same budget): a comparison (:func:`~patternscope.runs.compare_run.compare_methods`);
2. ``transfer.json``: both patterns on every ``--also`` model;
3. ``scan/`` (with ``--labels``): the backdoor scan (:func:`~patternscope.runs.scan_run.scan_run`): every
   class's class-wise and additive patterns, the verdict with its p-value and what it rests on, each flagged
   class's recovered trigger; its class-wise patterns name the least and most robust classes.

``audit.json`` holds the verdict table (one plain sentence per finding, with its numbers) and each part's
numbers, versioned (``schema``) and valid against :data:`AUDIT_SCHEMA`; ``report.html`` opens with the same
table. ``--level`` sets every part's budget from one word (:data:`LEVELS`); ``--fail-on`` makes the exit code
a gate (1 when a listed finding holds).
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from .._version import __version__
from ..analyses.comparison import MethodFailed
from ..analyses.transfer import transfer_matrix
from ..core.atomic import write_json
from ..core.classifier import Classifier
from ..core.configs import comma_list
from ..core.models import load_model, resolve_device
from ..core.patterns import Pattern, parse_eps
from ..core.run_id import without_run_id
from ..data.bank import image_set_of
from ..data.image_set import ImageSet
from ..data.labelled import LabelledImages
from ..data.sources import open_images, training_sources
from ..errors import DataError, PatternError
from ..methods import METHODS, get_recipe
from ..report import audit as audit_report
from ..report.html import pct
from .audit_schema import AUDIT_SCHEMA, SCHEMA_ID
from .command import Command, indented_json
from .compare_run import CompareOptions, compare_methods
from .folders import prepare_run_dir, write_run_config
from .labelled import model_and_labelled_data
from .options import (
    DATA_HELP,
    LABELLED_HELP,
    LabelledDataOptions,
    ModelOptions,
    OutputFolder,
    PipelineOptions,
    comma_text,
    load_options_model,
    model_fields,
    option,
    parse_model_kwargs,
)
from .scan_run import ScanOptions, scan_run
from .search_data import DEFAULT_DATA
from .tensorboard_log import check_tensorboard

COMMAND_NAME = "audit"


@dataclass(frozen=True)
class Level:
    """What one ``--level`` word sets: the passes of each pattern search, the scan's steps per class, the
    additive scan's steps per class and the evaluation crops per image."""

    budget: float
    scan_steps: int
    additive_steps: int
    eval_views: int


# quick: a first look in minutes on a CPU; standard: the main job's budget (300 dominant steps at batch 32);
# thorough: ten times the quick budget again, and two crops per image
LEVELS = {
    "quick": Level(budget=1600, scan_steps=60, additive_steps=20, eval_views=1),
    "standard": Level(budget=9600, scan_steps=300, additive_steps=60, eval_views=1),
    "thorough": Level(budget=32000, scan_steps=600, additive_steps=120, eval_views=2),
}
GATES = ("backdoor", "fooling", "agreement", "transfer")
AUDIT_FILES = ("audit.json", "config.json", "patterns", "scan", "transfer.json")


@dataclass(frozen=True)
class Gate:
    """One ``--fail-on`` term: ``backdoor``, or a share (``fooling``, ``agreement``, ``transfer``) above a
    threshold in [0, 1]."""

    name: str
    threshold: float | None = None

    def text(self) -> str:
        return self.name if self.threshold is None else f"{self.name}>{self.threshold:g}"


def parse_fail_on(terms: str | Sequence[str] | None) -> list[Gate]:
    """``--fail-on backdoor,fooling>0.8`` (text or a list of terms) as gates; an unknown term is refused naming
    the known ones."""
    gates = []
    for term in comma_list(terms or []):
        m = re.fullmatch(r"(backdoor)|(fooling|agreement|transfer)\s*>\s*([0-9]*\.?[0-9]+)", term)
        if m is None:
            raise PatternError(
                f"--fail-on {term!r}: write backdoor, fooling>X, agreement>X or transfer>X (X a share in [0, 1]), "
                "comma-separated"
            )
        if m.group(1):
            gates.append(Gate("backdoor"))
            continue
        threshold = float(m.group(3))
        if not 0 <= threshold <= 1:
            raise PatternError(f"--fail-on {term!r}: the threshold is a share in [0, 1]")
        gates.append(Gate(m.group(2), threshold))
    return gates


@dataclass
class AuditOptions(PipelineOptions, LabelledDataOptions, ModelOptions, OutputFolder):
    """Every option of ``patternscope audit``."""

    out: str = option("runs/audit", help="run folder to write (created if missing)", metavar="DIR", required=True)
    data: str = option(
        "",
        help=f"the images to measure on: {DATA_HELP}; with --labels, {LABELLED_HELP}",
        metavar="SOURCE",
        required=True,
    )
    labels: bool = option(
        False, help="--data carries labels (an ImageFolder tree or a built-in set): also scan for backdoors"
    )
    also: list[str] | None = option(
        None,
        help="another model to measure both patterns on, SPEC or SPEC@WEIGHTS_FILE (repeatable)",
        metavar="MODEL",
        repeat=True,
    )
    reference: list[str] | None = option(
        None,
        help="with --labels: clean reference models for the backdoor scan, comma-separated weights files for the "
        "same --model (or finished scans of them); the verdict then compares each class with the same class in "
        "them, far sharper than a model alone",
        metavar="LIST",
        parse=comma_list,
        text=comma_text,
    )
    reference_cache: str | None = option(
        None, help="folder keeping finished reference scans for reuse (as scan's --reference-cache)", metavar="DIR"
    )
    level: str = option(
        "standard",
        help="every part's budget from one word: quick (minutes on a CPU), standard (the main job's 9,600 passes "
        "per search), thorough (default {default})",
        choices=tuple(LEVELS),
    )
    baseline: str = option("psp-uap", help="the method searched beside the dominant pattern (default {default})")
    search_data: list[str] = option(
        factory=lambda: list(DEFAULT_DATA),
        help=f"label-free search data, repeatable: {DATA_HELP} (default: photos and jigsaw)",
        metavar="SOURCE",
        repeat=True,
        cli_default=None,
    )
    eps: str = option("10/255", help="L-inf budget in [0,1] pixel units (default {default})")
    shown: int = option(3, help="class-wise patterns shown for the N least and N most robust classes ({default})")
    fail_on: list[str] | None = option(
        None,
        help="exit with 1 when any of these holds, comma-separated: backdoor (needs --labels), fooling>X, "
        "agreement>X, transfer>X (needs --also); X a share in [0, 1]",
        metavar="TERMS",
        parse=comma_list,
        text=comma_text,
    )
    seed: int = option(0, help="seed of every search and split (default {default})")
    tensorboard: bool = option(
        False,
        help="also write every search as TensorBoard events (OUT/patterns/tensorboard, OUT/scan/tensorboard)",
    )
    resume: bool = option(False, help="keep finished parts, continue the rest")
    overwrite: bool = option(False, help="replace an audit already in --out")


@dataclass
class AuditSummary:
    """A finished audit: its folder, ``audit.json``'s content and the ``--fail-on`` terms that hold."""

    out: Path
    payload: dict[str, Any]
    failed: list[str] = field(default_factory=list)

    @property
    def exit_code(self) -> int:
        return 1 if self.failed else 0


def _check(opts: AuditOptions) -> tuple[Level, list[Gate]]:
    """Every option that can be checked before any work, one clear line each."""
    if not opts.data:
        raise DataError("--data is required: the images to measure on (a folder, a tree, or photos-eval)")
    if opts.level not in LEVELS:
        raise PatternError(f"--level must be one of {', '.join(LEVELS)}, got {opts.level!r}")
    if opts.baseline not in METHODS or opts.baseline.startswith("dominant"):
        raise PatternError(f"--baseline must be a method other than dominant: {', '.join(sorted(METHODS))}")
    baseline = get_recipe(opts.baseline)
    if baseline.labelled(baseline.config()):
        raise PatternError(f"--baseline {opts.baseline} needs labelled search data; choose a label-free method")
    if opts.shown < 0:
        raise PatternError(f"--shown must be >= 0, got {opts.shown}")
    parse_eps(opts.eps, "linf")
    if opts.tensorboard:
        check_tensorboard()
    gates = parse_fail_on(opts.fail_on)
    names = {g.name for g in gates}
    if "backdoor" in names and not opts.labels:
        raise PatternError("--fail-on backdoor needs the backdoor scan: give --labels with labelled --data")
    if opts.reference and not opts.labels:
        raise PatternError("--reference is for the backdoor scan: give --labels with labelled --data")
    if "transfer" in names and not opts.also:
        raise PatternError("--fail-on transfer>X needs other models: give --also MODEL")
    return LEVELS[opts.level], gates


def audit_run(opts: AuditOptions, *, progress: bool = True, log: Callable[[str], None] = print) -> AuditSummary:
    """Run ``patternscope audit`` (see the module docstring) into ``opts.out``."""
    level, gates = _check(opts)
    model_kwargs = parse_model_kwargs(opts.model_kwargs)
    out = prepare_run_dir(opts.out, resume=opts.resume, overwrite=opts.overwrite, files=AUDIT_FILES)
    started = time.perf_counter()
    model, labelled, evaluation = _model_and_data(opts, model_kwargs, log)
    write_run_config(out, COMMAND_NAME, opts)
    rate = _rate(model)
    plan = _plan(rate, level, evaluation, model.num_classes if labelled is not None else 0, opts)
    log(
        f"audit at level {opts.level}: {', '.join(plan)}; estimated time about {_minutes(sum(plan.values()))} "
        f"(this model runs {rate:.0f} images/s forward and backward here)"
    )
    clock = _Clock(plan, log)
    comparison = _patterns(opts, level, model, evaluation, out, progress, log)
    clock.done("patterns")
    transfer = _transfer(opts, level, out, evaluation, model_kwargs, log) if opts.also else None
    if opts.also:
        clock.done("transfer")
    scan = _scan(opts, level, out, (model, labelled), progress, log) if labelled is not None else None
    if opts.labels:
        clock.done("scan")
    payload = audit_payload(opts, level, model, evaluation, comparison, transfer, scan)
    failed = [g.text() for g in gates if _holds(g, payload)]
    payload["fail_on"] = {"terms": [g.text() for g in gates], "failed": failed}
    payload["seconds"] = round(time.perf_counter() - started, 1)
    write_json(out / "audit.json", payload)
    return AuditSummary(out, payload, failed)


def _model_and_data(
    opts: AuditOptions, model_kwargs: dict[str, Any], log: Callable[[str], None]
) -> tuple[Classifier, LabelledImages | None, ImageSet]:
    """The model, its labelled images (with ``--labels``; the scan reads them too) and the images the patterns
    are measured on."""
    if opts.labels:
        model, data = model_and_labelled_data(opts, log)
        return model, data, image_set_of(data.images, data.labels, name=data.description)
    model = load_options_model(opts, resolve_device(opts.device), model_kwargs)
    return model, None, open_images(opts.data)


def _rate(model: Classifier, batch: int = 32) -> float:
    """Images per second through the network, forward and backward (one warm-up batch first); measured on the
    bare network, so the model's pass counts stay as they were."""
    x = torch.rand(batch, *model.input_size, device=model.device)
    net, mean, std = model.net, model.mean.to(model.device), model.std.to(model.device)
    seconds = 0.0
    for _ in range(3):  # the first batches pay for one-off set-up (kernels, allocator)
        inputs = ((x - mean) / std).requires_grad_(True)
        start = time.perf_counter()
        net(inputs).float().sum().backward()
        seconds = time.perf_counter() - start
    return batch / max(seconds, 1e-6)


def _plan(rate: float, level: Level, evaluation: ImageSet, classes: int, opts: AuditOptions) -> dict[str, float]:
    """Each part's estimated seconds: its passes (forward-only images count a third) at ``rate`` images/s;
    ``classes`` the scan covers (0: no scan)."""
    views = len(evaluation) * level.eval_views
    plan = {"patterns": (2 * level.budget + 2 * views) / rate}  # two searches; clean, both patterns, noise
    if opts.also:
        plan["transfer"] = len(opts.also) * 2 * views / rate
    if classes:
        per_class = 32 * (level.scan_steps + level.additive_steps) + 4 * 300  # searches, then measuring
        plan["scan"] = classes * per_class / rate
    return plan


def _minutes(seconds: float) -> str:
    return f"{seconds / 60:.1f} min" if seconds >= 60 else f"{seconds:.0f} s"


class _Clock:
    """The ETA after each part: the parts left at the plan's rate, scaled by how the finished ones went."""

    def __init__(self, plan: dict[str, float], log: Callable[[str], None]) -> None:
        self.plan, self.log, self.start = plan, log, time.perf_counter()
        self.finished: list[str] = []

    def done(self, part: str) -> None:
        self.finished.append(part)
        spent = time.perf_counter() - self.start
        planned = sum(self.plan[p] for p in self.finished)
        left = sum(v for p, v in self.plan.items() if p not in self.finished) * spent / max(planned, 1e-6)
        tail = f"; about {_minutes(left)} left" if left > 0 else ""
        self.log(f"audit: {part} done ({_minutes(spent)} so far){tail}")


def _patterns(
    opts: AuditOptions,
    level: Level,
    model: Classifier,
    evaluation: ImageSet,
    out: Path,
    progress: bool,
    log: Callable[[str], None],
) -> dict[str, Any]:
    """The dominant pattern and the baseline at the same budget, measured on the audit's images."""
    settings = CompareOptions(
        **model_fields(opts),
        out=str(out / "patterns"),
        methods=["dominant", opts.baseline],
        eps=opts.eps,
        budget=level.budget,
        seed=opts.seed,
        eval_views=level.eval_views,
        workers=opts.workers,
        fast_decode=opts.fast_decode,
        resume=opts.resume and (out / "patterns" / "config.json").is_file(),
        tensorboard=opts.tensorboard,
    )
    log(f"patterns: dominant and {opts.baseline}, {level.budget:g} passes each")
    try:
        compare_methods(settings, progress=progress, log=log, model=model, sources=(_search(opts), evaluation))
    except MethodFailed as exc:  # the other method finished: the audit says which failed
        log(str(exc))
    return without_run_id(_read(out / "patterns" / "compare.json"))


def _read(path: Path) -> dict[str, Any]:
    return dict(json.loads(path.read_text(encoding="utf-8")))


def _search(opts: AuditOptions) -> list[ImageSet | str]:
    return training_sources(list(opts.search_data))


def _transfer(
    opts: AuditOptions,
    level: Level,
    out: Path,
    evaluation: ImageSet,
    model_kwargs: dict[str, Any],
    log: Callable[[str], None],
) -> dict[str, Any]:
    """Both patterns on every ``--also`` model (loaded one at a time)."""
    if opts.resume and (out / "transfer.json").is_file():
        log("transfer: finished earlier, kept")
        return without_run_id(_read(out / "transfer.json"))
    patterns = {}
    for method in ("dominant", opts.baseline):
        if (out / "patterns" / method / "pattern.safetensors").is_file():
            patterns[method] = Pattern.load(out / "patterns" / method)
    device = resolve_device(opts.device)

    def loader(entry: str) -> Callable[[], Classifier]:
        spec, _, weights = entry.partition("@")
        return lambda: load_model(
            spec,
            weights or None,
            device=device,
            model_kwargs=model_kwargs,
            trust_pickle=opts.trust_pickle,
            allow_download=opts.allow_download,
        )

    models = {entry: loader(entry) for entry in opts.also or []}
    result = transfer_matrix(models, patterns, evaluation, views=level.eval_views, seed=opts.seed, log=log)
    payload = result.to_dict()
    write_json(out / "transfer.json", payload)
    return payload


def _scan(
    opts: AuditOptions,
    level: Level,
    out: Path,
    loaded: tuple[Classifier, LabelledImages],
    progress: bool,
    log: Callable[[str], None],
) -> dict[str, Any]:
    """The backdoor scan on the labelled images, with the model and images already loaded."""
    folder = out / "scan"
    settings = ScanOptions(
        **model_fields(opts),
        out=str(folder),
        data=opts.data,
        steps=level.scan_steps,
        additive_steps=level.additive_steps,
        seed=opts.seed,
        cache_mb=opts.cache_mb,
        reference=opts.reference,
        reference_cache=opts.reference_cache,
        resume=opts.resume and (folder / "config.json").is_file(),
        tensorboard=opts.tensorboard,
    )
    log(f"scan: every class, {level.scan_steps} steps per class")
    scan_run(settings, progress=progress, log=log, loaded=loaded)
    return without_run_id(_read(folder / "scan.json"))


def _row(comparison: dict[str, Any], method: str) -> dict[str, Any] | None:
    return next((r for r in comparison["rows"] if r["method"] == method and r.get("error") is None), None)


def audit_payload(
    opts: AuditOptions,
    level: Level,
    model: Classifier,
    evaluation: ImageSet,
    comparison: dict[str, Any],
    transfer: dict[str, Any] | None,
    scan: dict[str, Any] | None,
) -> dict[str, Any]:
    """``audit.json``: the verdict table and each part's numbers, read from the parts' own JSON."""
    dominant, baseline = _row(comparison, "dominant"), _row(comparison, opts.baseline)
    patterns = {
        "folder": "patterns",
        "eps": comparison["eps"],
        "norm": comparison["norm"],
        "budget_passes": comparison["budget_passes"],
        "n_images": comparison["n_images"],
        "random_sign_fooling_ratio": comparison["random_sign_fooling_ratio"],
        "dominant": dominant,
        "baseline": baseline,
    }
    payload: dict[str, Any] = {
        "schema": SCHEMA_ID,
        "patternscope_version": __version__,
        "model": model.describe(),
        "data": evaluation.description,
        "labels": opts.labels,
        "level": {"name": opts.level, **level.__dict__},
        "patterns": patterns,
        "transfer": _transfer_part(transfer),
        "backdoor": _backdoor_part(scan),
        "classes": _classes_part(scan, opts.shown),
    }
    payload["verdict"] = verdict_rows(payload, opts.baseline)
    return payload


def _transfer_part(transfer: dict[str, Any] | None) -> dict[str, Any] | None:
    if transfer is None:
        return None
    return {
        "models": transfer["models"],
        "patterns": transfer["patterns"],
        "fooling": transfer["fooling"],
        "fooling_ci": transfer["fooling_ci"],
        "agreement": transfer["agreement"],
        "random_sign": transfer["random_sign"],
        "n_images": transfer["n_images"],
    }


def _backdoor_part(scan: dict[str, Any] | None) -> dict[str, Any] | None:
    if scan is None:
        return None
    decision = scan["decision"]
    return {
        "folder": "scan",
        "flagged": scan["flagged"],
        "verdict": scan["verdict"],
        "p_value": decision.get("p_value"),
        "top_class": decision.get("top_class"),
        "mode": decision.get("mode"),
        "classes": len(scan["classes"]),
        "fpr": decision.get("fpr"),
        "basis": decision.get("basis", {}),
        "triggers": scan.get("triggers", {}),
    }


def _classes_part(scan: dict[str, Any] | None, shown: int) -> dict[str, Any] | None:
    """The least and most robust classes: the smallest and largest class-wise patterns (pixels) that reach
    the scan's success on images of other classes."""
    if scan is None:
        return None
    rows = sorted(scan["classes"], key=lambda r: (r["smallest_k"], r["target"]))

    def entry(r: dict[str, Any]) -> dict[str, Any]:
        return {
            "class": r["target"],
            "name": r["name"],
            "k": r["smallest_k"],
            "verified": r["verified_stamp"],
            "pattern": f"scan/classes/{r['target']:03d}/pattern.safetensors",
        }

    n = min(shown, len(rows) // 2)
    return {
        "least_robust": [entry(r) for r in rows[:n]],
        "most_robust": [entry(r) for r in rows[len(rows) - n :][::-1]],
        "gallery": "scan/gallery.png",
        "pixels": scan["pixels"],
    }


def _ci(row: dict[str, Any], key: str) -> str:
    ci = row.get(key)
    return f" [{ci[0] * 100:.0f}, {ci[1] * 100:.0f}]" if ci else ""


def verdict_rows(payload: dict[str, Any], baseline_name: str) -> list[dict[str, Any]]:
    """One plain sentence per finding, with the number it rests on (the same numbers as the parts' JSON)."""
    p = payload["patterns"]
    eps = f"{p['eps'] * 255:.0f}/255" if p["norm"] == "linf" else f"L2 {p['eps']:g}"
    rows: list[dict[str, Any]] = []
    dom, base = p["dominant"], p["baseline"]
    if dom is not None:
        rows.append(
            {
                "finding": "universal pattern",
                "text": f"one pattern at {eps} changes {pct(dom['fooling_ratio'])}{_ci(dom, 'fooling_ci')} of "
                f"predictions; random noise of that size: {pct(p['random_sign_fooling_ratio'])}",
                "value": dom["fooling_ratio"],
                "ci": dom.get("fooling_ci"),
                "control": p["random_sign_fooling_ratio"],
            }
        )
        rows.append(
            {
                "finding": "dominance",
                "text": f"the pattern's own class becomes the prediction for {pct(dom['agreement'])}"
                f"{_ci(dom, 'agreement_ci')} of images",
                "value": dom["agreement"],
                "ci": dom.get("agreement_ci"),
                "control": None,
            }
        )
    if base is not None:
        rows.append(
            {
                "finding": "baseline",
                "text": f"the baseline {baseline_name} at the same budget changes {pct(base['fooling_ratio'])}"
                f"{_ci(base, 'fooling_ci')}",
                "value": base["fooling_ratio"],
                "ci": base.get("fooling_ci"),
                "control": p["random_sign_fooling_ratio"],
            }
        )
    rows += _transfer_rows(payload["transfer"])
    rows += _backdoor_rows(payload["backdoor"], payload["classes"])
    return rows


def _transfer_rows(transfer: dict[str, Any] | None) -> list[dict[str, Any]]:
    if transfer is None or "dominant" not in transfer["patterns"]:
        return []
    i = transfer["patterns"].index("dominant")
    rows = []
    for j, name in enumerate(transfer["models"]):
        value, ci = transfer["fooling"][i][j], transfer["fooling_ci"][i][j]
        rows.append(
            {
                "finding": "transfer",
                "text": f"on {name} the dominant pattern changes {pct(value)} [{ci[0] * 100:.0f}, {ci[1] * 100:.0f}]; "
                f"random noise: {pct(transfer['random_sign'][j])}",
                "value": value,
                "ci": ci,
                "control": transfer["random_sign"][j],
            }
        )
    return rows


def _backdoor_rows(backdoor: dict[str, Any] | None, classes: dict[str, Any] | None) -> list[dict[str, Any]]:
    if backdoor is None:
        return []
    basis = backdoor["basis"] or {}
    how = f"{basis.get('mode', backdoor['mode'])}-calibrated over {backdoor['classes']} classes"
    if backdoor["flagged"]:
        named = ", ".join(f"class {t}" for t in backdoor["flagged"])
        text = f"backdoor: {named} flagged, p = {backdoor['p_value']:.2g} ({how})"
    else:
        text = f"backdoor: none found, p = {backdoor['p_value']:.2g} ({how})"
    rows = [{"finding": "backdoor", "text": text, "value": backdoor["p_value"], "ci": None, "control": None}]
    if classes and classes["least_robust"]:
        weakest = ", ".join(f"{c['name']} ({c['k']} px)" for c in classes["least_robust"])
        rows.append(
            {
                "finding": "least robust classes",
                "text": f"smallest class-wise patterns of {classes['pixels']} pixels: {weakest}",
                "value": None,
                "ci": None,
                "control": None,
            }
        )
    return rows


def _holds(gate: Gate, payload: dict[str, Any]) -> bool:
    """Whether a ``--fail-on`` term holds for this audit."""
    dom = payload["patterns"]["dominant"] or {}
    if gate.name == "backdoor":
        return bool(payload["backdoor"] and payload["backdoor"]["flagged"])
    threshold = float(gate.threshold or 0.0)
    if gate.name == "fooling":
        return (dom.get("fooling_ratio") or 0.0) > threshold
    if gate.name == "agreement":
        return (dom.get("agreement") or 0.0) > threshold
    transfer = payload["transfer"]
    if not transfer or "dominant" not in transfer["patterns"]:
        return False
    return max(transfer["fooling"][transfer["patterns"].index("dominant")], default=0.0) > threshold


def format_audit(summary: AuditSummary) -> str:
    """The verdict table as text, the gate's result and the folder."""
    lines = [f"- {row['text']}" for row in summary.payload["verdict"]]
    if summary.payload["fail_on"]["terms"]:
        held = ", ".join(summary.failed) or "none"
        lines.append(f"--fail-on {', '.join(summary.payload['fail_on']['terms'])}: holds: {held}")
    lines.append(f"run folder: {summary.out}")
    return "\n".join(lines)


COMMAND = Command(
    name="audit",
    summary="what does this model let through: universal patterns, transfer, class-wise patterns, backdoors",
    description="Audit a model in one run: the dominant pattern and the strongest baseline at the same budget "
    "(fooling, agreement, dominance, perceptibility, random-noise control, Wilson intervals), their transfer to "
    "--also models and, with --labels, the backdoor scan (verdict, p-value, what it rests on, recovered triggers) "
    "and the least and most robust classes. --level sets every part's budget; --fail-on makes the exit code a "
    "gate (1 when a listed finding holds). Writes audit.json (schema "
    f"{SCHEMA_ID}), report.html and one sub-folder per part into --out.",
    options=AuditOptions,
    run=audit_run,
    text=format_audit,
    json=indented_json(lambda summary: summary.payload),
    report=audit_report.build,
    result_file="audit.json",
    files=AUDIT_FILES,
    exit_code=lambda summary: summary.exit_code,
)

__all__ = ["AUDIT_SCHEMA", "LEVELS", "AuditOptions", "AuditSummary", "audit_run", "parse_fail_on"]
