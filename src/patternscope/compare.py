"""Side-by-side comparison of pattern methods, and transfer of patterns across models.

:func:`compare_methods` runs every requested method on one model with the same ε, search data, seed
and compute budget (passes: images through forward and backward), evaluates each pattern on the same
held-out images, and writes ``compare.json``, ``compare.png`` and one sub-folder per method (its
pattern, metrics and examples). A method that fails does not stop the others; the comparison then
ends with :class:`MethodFailed` naming it. With ``resume``, finished methods are kept and an
interrupted one continues from its checkpoint.

:func:`transfer_matrix` measures saved patterns on other models: a fooling-ratio matrix (pattern x
model) as ``transfer.json`` and ``transfer.png``.
"""

from __future__ import annotations

import json
import time
import traceback
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from . import distributed, figures
from ._io import write_json
from ._version import __version__
from .data import BatchStream, ImageSet, open_images
from .errors import PatternError, PatternscopeError, RunDirError
from .methods import METHODS, get_recipe
from .methods.recipe import make_config, make_stream, run_recipe, setting_of, steps_for_budget
from .metrics import evaluate_pattern
from .models import DEFAULT_MODEL, Classifier, load_model, resolve_device
from .patterns import Pattern, parse_eps
from .runs import (
    DEFAULT_DATA,
    evaluate_into,
    load_options_model,
    parse_model_kwargs,
    prepare_run_dir,
    resolve_data,
)

DEFAULT_BUDGET = 3200  # passes: 100 steps of dominant patterns at batch 32 (about 75 s on 2 CPU cores)


class MethodFailed(PatternscopeError):
    """One or more methods of a comparison raised an error (the others finished and were saved)."""


@dataclass
class CompareOptions:
    """Every option of ``patternscope compare`` (also written to ``compare.json``).

    ``data=None`` gives every data-using method the same default search data (photos + jigsaw);
    ``paper_data=True`` gives each method its own paper's data instead (e.g. jigsaw for Cos-UAP).
    ``settings`` holds per-method overrides: ``{"sgd-uap": {"beta": 9}}``.
    """

    out: str = "runs/compare"
    methods: list[str] = field(default_factory=lambda: list(METHODS))
    model: str = DEFAULT_MODEL
    weights: str | None = None
    model_kwargs: str | None = None
    input_size: str | None = None
    data: list[str] | None = None
    paper_data: bool = False
    eval_data: str | None = None
    holdout: float = 0.2
    eps: str = "10/255"
    norm: str = "linf"
    budget: float = DEFAULT_BUDGET
    seed: int = 0
    settings: dict[str, dict[str, Any]] = field(default_factory=dict)
    device: str = "auto"
    amp: str = "off"
    channels_last: bool = False
    eval_views: int = 1
    eval_batch_size: int = 64
    resume: bool = False
    overwrite: bool = False
    trust_pickle: bool = False
    allow_download: bool = False


@dataclass
class MethodRow:
    """One method's line of the comparison."""

    method: str
    title: str = ""
    setting: str = ""
    data: str = ""
    clip_during_search: bool | None = None
    fooling_ratio: float | None = None
    fooling_ratio_confident: float | None = None
    dominance_top1: float | None = None
    agreement: float | None = None
    pattern_class: str | None = None
    seconds: float | None = None
    passes: float | None = None
    steps: int | None = None
    settings: dict[str, Any] = field(default_factory=dict)
    error: str | None = None


@dataclass
class Comparison:
    """The result of :func:`compare_methods`."""

    out: Path
    rows: list[MethodRow]
    random_sign: float | None
    random_sign_confident: float | None
    n_images: int
    eval_data: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "rows": [asdict(r) for r in self.rows],
            "random_sign_fooling_ratio": self.random_sign,
            "random_sign_fooling_ratio_confident": self.random_sign_confident,
            "n_images": self.n_images,
            "eval_data": self.eval_data,
        }


def parse_setting(text: str) -> tuple[str, str, Any]:
    """``METHOD.KEY=VALUE`` (from ``--set``) as (method, key, value); numbers, booleans and null parsed."""
    head, sep, raw = text.partition("=")
    method, dot, key = head.partition(".")
    if not sep or not dot or not key:
        raise PatternError(f"--set {text!r}: write METHOD.KEY=VALUE, e.g. sgd-uap.beta=9")
    get_recipe(method)
    try:
        value = json.loads(raw)
    except json.JSONDecodeError:
        value = raw
    return method, key, value


def compare_methods(
    opts: CompareOptions,
    *,
    progress: bool = True,
    log: Callable[[str], None] = print,
    model: Classifier | None = None,
    sources: tuple[list[ImageSet | str], ImageSet] | None = None,
) -> Comparison | None:
    """Run ``opts.methods`` side by side (see the module docstring) and write ``opts.out``.

    ``model`` (a loaded classifier) replaces ``opts.model``/``opts.weights``; ``sources`` (search
    sources, held-out evaluation set) replaces ``opts.data``/``opts.eval_data``. ``patternscope harden``
    uses both to compare methods on a model in memory, on its own data split.

    Under torchrun, methods whose objective is a mean over the batch search data-parallel, the others
    run whole on every rank; rank 0 writes and evaluates, the other ranks return None.
    """
    from dataclasses import replace

    ctx, device_name = distributed.init(opts.device)
    if ctx.active:
        opts = replace(opts, device=device_name)
        log = log if ctx.is_main else (lambda _msg: None)
        progress = progress and ctx.is_main
    if not opts.methods:
        raise PatternError("no methods given; choose from " + ", ".join(METHODS))
    recipes = [get_recipe(m) for m in opts.methods]
    if len(set(opts.methods)) != len(opts.methods):
        raise PatternError("a method is listed twice in --methods")
    for name in opts.settings:
        if name not in opts.methods:
            raise PatternError(f"settings for {name!r}, which is not in --methods")
    eps = parse_eps(opts.eps, opts.norm)
    if not opts.budget > 0:
        raise PatternError(f"--budget must be a positive number of passes, got {opts.budget}")
    amp = False if opts.amp == "off" else opts.amp
    # every method's settings are checked before anything slow runs
    configs = {}
    for recipe in recipes:
        overrides = {"eps": eps, "norm": opts.norm, "seed": opts.seed, "amp": amp, **opts.settings.get(recipe.name, {})}
        configs[recipe.name] = make_config(recipe, None, overrides)
        steps_for_budget(recipe, configs[recipe.name], opts.budget)
    model_kwargs = parse_model_kwargs(opts.model_kwargs)
    distributed.on_main(lambda: _prepare_compare_dir(Path(opts.out), opts), ctx)
    out = Path(opts.out)
    device = resolve_device(opts.device)
    if model is None:
        model = load_options_model(opts, device, model_kwargs)
    if sources is None:
        shared_data = list(opts.data) if opts.data else list(DEFAULT_DATA)
        sources = resolve_data(shared_data, opts.eval_data, opts.holdout, opts.seed)
    train, evaluation = sources
    if ctx.is_main:
        write_json(
            out / "config.json", {"command": "compare", "patternscope_version": __version__, "options": asdict(opts)}
        )
    log(
        f"model {model.spec} on {device}; budget {opts.budget:g} passes per method; eps {eps:.4f} ({opts.norm}); "
        f"evaluation: {evaluation.description}"
    )
    rows: list[MethodRow] = []
    for recipe in recipes:
        config = configs[recipe.name]
        folder = out / recipe.name
        if opts.resume and (folder / "row.json").exists():
            rows.append(MethodRow(**json.loads((folder / "row.json").read_text())))
            log(f"{recipe.name}: finished earlier, kept")
            continue
        if ctx.is_main:
            folder.mkdir(exist_ok=True)
        # the same search data for every method, unless asked for each paper's own (or a range prior)
        own = opts.paper_data or getattr(config, "prior", None) == "range"
        stream = make_stream(recipe, config, model, (list(recipe.default_data) or None) if own else train)
        row = MethodRow(
            method=recipe.name,
            title=recipe.title,
            setting=setting_of(recipe, config, stream),
            data=stream.describe() if stream is not None else "none",
            clip_during_search=config.clip_during_search,
            settings={k: v for k, v in asdict(config).items() if k not in ("eps", "norm", "seed", "amp")},
        )
        try:
            row = _run_one(recipe, model, stream, config, opts, folder, evaluation, row, progress)
        except (KeyboardInterrupt, PatternscopeError):
            raise
        except Exception as exc:  # one broken method must not hide the others' results
            row.error = f"{type(exc).__name__}: {exc}"
            if ctx.is_main:
                (folder / "error.txt").write_text(traceback.format_exc())
            log(f"{recipe.name}: FAILED ({row.error}); traceback in {folder / 'error.txt'}")
        rows.append(row)
    if not ctx.is_main:
        return None
    comparison = _finish(out, model, rows, evaluation, opts)
    failed = [r.method for r in rows if r.error]
    if failed:
        raise MethodFailed(
            f"method(s) {', '.join(failed)} failed (see {out}/<method>/error.txt); the other results are in "
            f"{out / 'compare.json'}"
        )
    return comparison


def _run_one(
    recipe: Any,
    model: Any,
    stream: BatchStream | None,
    config: Any,
    opts: CompareOptions,
    folder: Path,
    evaluation: ImageSet,
    row: MethodRow,
    progress: bool,
) -> MethodRow:
    start = time.perf_counter()
    outcome = run_recipe(
        recipe,
        model,
        stream,
        config,
        budget=opts.budget,
        checkpoint=folder / "checkpoint.pt",
        resume=opts.resume,
        progress=progress,
    )
    seconds = time.perf_counter() - start
    if not distributed.current().is_main:  # rank 0 saves and evaluates
        return row
    pattern = outcome.pattern
    pattern.save(folder)
    write_json(folder / "history.json", {"loss": outcome.result.history})
    summary = evaluate_into(
        folder,
        model,
        pattern,
        evaluation,
        opts.eval_views,
        opts.eval_batch_size,
        opts.seed,
        outcome.result.summary(),
    )
    ev = summary.evaluation
    row.fooling_ratio = ev.fooling_ratio
    row.fooling_ratio_confident = ev.fooling_ratio_confident
    row.dominance_top1 = ev.dominance["top1"]["perturbed"]
    row.agreement = ev.agreement
    row.pattern_class = ev.pattern_class_name
    # a resumed search reports the whole search's seconds; time here covers this process only
    row.seconds = round(outcome.result.seconds if outcome.result.resumed_from is None else seconds, 2)
    row.passes = outcome.result.passes
    row.steps = outcome.result.steps_done
    write_json(folder / "row.json", asdict(row))
    return row


def _prepare_compare_dir(out: Path, opts: CompareOptions) -> Path:
    if opts.resume and opts.overwrite:
        raise RunDirError("--resume and --overwrite contradict each other; choose one")
    if ((out / "compare.json").exists() or (out / "config.json").exists()) and not (opts.resume or opts.overwrite):
        raise RunDirError(
            f"{str(out)!r} already holds a comparison; pass --resume to continue it or --overwrite to start again"
        )
    path = prepare_run_dir(out, resume=True, overwrite=False)  # writability and free space
    if opts.overwrite:
        for name in ("compare.json", "compare.png", "config.json"):
            (path / name).unlink(missing_ok=True)
        for m in METHODS:
            sub = path / m
            if sub.is_dir():
                for f in sub.iterdir():
                    if f.is_file():
                        f.unlink()
    return path


def _finish(out: Path, model: Any, rows: list[MethodRow], evaluation: ImageSet, opts: CompareOptions) -> Comparison:
    x, _ = evaluation.eval_tensors(model.input_size, opts.eval_views)
    probe = Pattern(torch.zeros(model.input_size), parse_eps(opts.eps, opts.norm), opts.norm)
    ev = evaluate_pattern(model, probe, x, baselines=("sign",), seed=opts.seed, batch_size=opts.eval_batch_size)
    rnd = ev.random_baselines["sign"]
    comparison = Comparison(
        out=out,
        rows=rows,
        random_sign=rnd["fooling_ratio"],
        random_sign_confident=rnd["fooling_ratio_confident"],
        n_images=int(x.shape[0]),
        eval_data=evaluation.description,
    )
    payload = {
        "patternscope_version": __version__,
        "model": model.describe(),
        "eps": parse_eps(opts.eps, opts.norm),
        "norm": opts.norm,
        "budget_passes": opts.budget,
        "seed": opts.seed,
        **comparison.to_dict(),
    }
    write_json(out / "compare.json", payload)
    ok = [r for r in rows if r.error is None]
    if ok:
        figures.method_bars(
            out / "compare.png",
            [r.method for r in ok],
            [r.fooling_ratio or 0.0 for r in ok],
            [r.fooling_ratio_confident or 0.0 for r in ok],
            comparison.random_sign,
            f"{model.spec}: eps {opts.eps} ({opts.norm}), {opts.budget:g} passes each, {comparison.n_images} "
            f"held-out images",
        )
    return comparison


def format_comparison(comparison: Comparison) -> str:
    """The comparison as a plain-text table (ratios to the dominant pattern when it was run)."""
    ref = next((r.fooling_ratio for r in comparison.rows if r.method == "dominant" and r.fooling_ratio), None)
    head = (
        f"{'method':<9} {'setting':<14} {'fool':>6} {'conf.':>6} {'dom@1':>6} {'agree':>6} {'vs dom':>6} "
        f"{'passes':>7} {'time s':>7}  data"
    )
    lines = [head, "-" * len(head)]
    for r in comparison.rows:
        if r.error:
            lines.append(f"{r.method:<9} FAILED: {r.error}")
            continue
        ratio = f"{r.fooling_ratio / ref:6.2f}" if ref else f"{'-':>6}"
        lines.append(
            f"{r.method:<9} {r.setting:<14} {r.fooling_ratio:6.3f} {r.fooling_ratio_confident:6.3f} "
            f"{r.dominance_top1:6.3f} {r.agreement:6.3f} {ratio} {r.passes or 0:7.0f} {r.seconds or 0:7.1f}  {r.data}"
        )
    lines.append(
        f"random ±eps: fooling {comparison.random_sign:.3f} (confident {comparison.random_sign_confident:.3f}); "
        f"{comparison.n_images} images of {comparison.eval_data}"
    )
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------------
# Transfer


@dataclass
class Transfer:
    """Fooling ratios of saved patterns (rows) on models (columns), with random ±eps controls."""

    patterns: list[str]
    models: list[str]
    fooling: list[list[float]]
    random_sign: list[float]
    n_images: int
    eval_data: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _pattern_file(path: str | Path) -> Path:
    p = Path(path)
    return p / "pattern.safetensors" if p.is_dir() else p


def transfer_matrix(
    patterns: list[str],
    models: list[str],
    data: str | ImageSet,
    *,
    out: str | Path | None = None,
    device: str = "auto",
    views: int = 1,
    batch_size: int = 64,
    seed: int = 0,
    model_kwargs: str | dict[str, Any] | None = None,
    trust_pickle: bool = False,
    allow_download: bool = False,
    log: Callable[[str], None] = print,
) -> Transfer:
    """Measure each saved pattern (run folder or pattern file) on each model, on images ``data``.

    ``models`` are specs, each optionally with a weights file: ``SPEC@WEIGHTS``. ``model_kwargs``
    (JSON text or a dict) go to every user model class or factory among them.

    A pattern whose size differs from a model's input is resized (bilinear; values stay within its
    budget) and marked in the log. With ``out``, writes ``transfer.json`` and ``transfer.png`` there.
    """
    if not patterns or not models:
        raise PatternError("transfer needs at least one --patterns and one --models")
    kwargs = model_kwargs if isinstance(model_kwargs, dict) else parse_model_kwargs(model_kwargs)
    loaded = [(str(p), Pattern.load(_pattern_file(p))) for p in patterns]
    images = open_images(data)
    if out is not None:
        out_path = Path(out)
        out_path.mkdir(parents=True, exist_ok=True)
    fooling = [[float("nan")] * len(models) for _ in loaded]
    random_sign = []
    n_images = 0
    for j, entry in enumerate(models):
        spec, _, weights = entry.partition("@")
        model = load_model(
            spec,
            weights or None,
            device=resolve_device(device),
            model_kwargs=kwargs,
            trust_pickle=trust_pickle,
            allow_download=allow_download,
        )
        x, _ = images.eval_tensors(model.input_size, views)
        n_images = int(x.shape[0])
        sign = None
        for i, (name, pattern) in enumerate(loaded):
            fitted = _fit(pattern, model.input_size)
            if fitted is not pattern:
                log(f"{name}: resized from {tuple(pattern.shape)} to {model.input_size} for {entry}")
            ev = evaluate_pattern(
                model, fitted, x, baselines=("sign",) if sign is None else (), seed=seed, batch_size=batch_size
            )
            fooling[i][j] = ev.fooling_ratio
            if sign is None:
                sign = ev.random_baselines["sign"]["fooling_ratio"]
        random_sign.append(float(sign))
        log(f"{entry}: " + ", ".join(f"{row[j]:.3f}" for row in fooling))
    result = Transfer([n for n, _ in loaded], list(models), fooling, random_sign, n_images, images.description)
    if out is not None:
        write_json(Path(out) / "transfer.json", {"patternscope_version": __version__, **result.to_dict()})
        labels = [f"{p.meta.get('method', '?')} @ {p.meta.get('model', '?')} ({Path(n).name or n})" for n, p in loaded]
        figures.heatmap(
            Path(out) / "transfer.png",
            fooling,
            labels,
            models,
            f"fooling ratio on {images.description} (random ±eps: " + ", ".join(f"{v:.2f}" for v in random_sign) + ")",
        )
    return result


def _fit(pattern: Pattern, input_size: tuple[int, ...]) -> Pattern:
    if tuple(pattern.shape) == tuple(input_size):
        return pattern
    if pattern.shape[0] != input_size[0]:
        raise PatternError(
            f"pattern has {pattern.shape[0]} channels but the model takes {input_size[0]}; it cannot transfer"
        )
    delta = torch.nn.functional.interpolate(
        pattern.delta[None], size=tuple(input_size[1:]), mode="bilinear", align_corners=False
    )[0]
    return Pattern(delta, pattern.eps, pattern.norm, dict(pattern.meta)).project_()


def format_transfer(result: Transfer) -> str:
    width = max(len(p) for p in result.patterns) + 2
    lines = [" " * width + "".join(f"{m[:22]:>24}" for m in result.models)]
    for name, row in zip(result.patterns, result.fooling, strict=True):
        lines.append(f"{name:<{width}}" + "".join(f"{v:>24.3f}" for v in row))
    lines.append(f"{'random ±eps':<{width}}" + "".join(f"{v:>24.3f}" for v in result.random_sign))
    return "\n".join(lines)


__all__ = [
    "CompareOptions",
    "Comparison",
    "MethodFailed",
    "MethodRow",
    "Transfer",
    "compare_methods",
    "format_comparison",
    "format_transfer",
    "parse_setting",
    "transfer_matrix",
]
