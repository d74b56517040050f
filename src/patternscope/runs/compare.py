"""Pattern methods side by side: :func:`compare_patterns` (a model and images in, a table out) and
``patternscope compare`` (:func:`compare_methods`: the same from command-line options, into a run folder).

Every requested method runs on one model with the same ε, search data, seed and compute budget (passes:
images through forward and backward), and each pattern is measured on the same held-out images. With an
output folder: ``compare.json``, ``compare.png`` and one sub-folder per method (its pattern, metrics,
examples and checkpoint). A method that fails does not stop the others; the comparison then ends with
:class:`MethodFailed` naming it. With ``resume``, finished methods are kept and an interrupted one
continues from its checkpoint.
"""

from __future__ import annotations

import json
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import torch

from .._version import __version__
from ..core import distributed
from ..core.atomic import write_json
from ..core.classifier import Classifier
from ..core.configs import config_from
from ..core.metrics import evaluate_pattern
from ..core.models import resolve_device
from ..core.patterns import Pattern, parse_eps
from ..core.run_id import without_run_id
from ..data.image_set import ImageSet
from ..data.sources import open_images
from ..data.stream import BatchStream
from ..errors import DataError, PatternError, PatternscopeError, RunDirError
from ..methods import LABEL_FREE_METHODS, METHODS, UAPConfig, find_pattern, get_recipe
from ..methods.recipe import (
    DataSpec,
    Recipe,
    labelled_sources,
    make_config,
    make_stream,
    search_sources,
    setting_of,
    steps_for_budget,
)
from ..report import compare as compare_report
from ..report import figures
from .command import Command, indented_json
from .evaluate import evaluate_into
from .find_dominant import DEFAULT_DATA, resolve_data
from .folders import prepare_run_dir, write_run_config
from .options import (
    DATA_HELP,
    EVAL_VIEWS,
    ModelOptions,
    OutputFolder,
    PipelineOptions,
    comma_list,
    comma_text,
    load_options_model,
    option,
    parse_model_kwargs,
    use_fast_decode,
)

DEFAULT_BUDGET = 3200  # passes: 100 steps of dominant patterns at batch 32 (about 75 s on 2 CPU cores)


class MethodFailed(PatternscopeError):
    """One or more methods of a comparison raised an error (the others finished and were saved)."""


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


def parse_settings(texts: list[str]) -> dict[str, dict[str, Any]]:
    """Every ``--set METHOD.KEY=VALUE`` as ``{method: {key: value}}``."""
    settings: dict[str, dict[str, Any]] = {}
    for text in texts:
        method, key, value = parse_setting(text)
        settings.setdefault(method, {})[key] = value
    return settings


def settings_text(settings: dict[str, dict[str, Any]]) -> list[str]:
    """``{method: {key: value}}`` as ``--set`` texts (the inverse of :func:`parse_settings`)."""
    return [f"{m}.{k}={json.dumps(v)}" for m, kv in settings.items() for k, v in kv.items()]


@dataclass
class CompareConfig:
    """Settings of a side-by-side comparison (pixel space [0,1]).

    Args:
        methods: method names (:data:`~patternscope.methods.METHODS`), run in this order.
        eps: the shared budget, in [0,1] pixel units (``10/255``, ``0.0392``); L∞ unless ``norm="l2"``.
        norm: ``linf`` or ``l2``.
        budget: passes per method (images through forward and backward; forward-only images count a
            third), so methods with different batch sizes and costs get equal compute.
        seed: shared by every method.
        settings: per-method overrides of their settings, e.g. ``{"sgd-uap": {"beta": 9}}``.
        paper_data: give each data-using method its own paper's default data instead of the shared data
            (a labelled method keeps the shared data, which must be labelled: :func:`method_data`).
        amp: mixed precision: ``off``, ``bf16`` or ``fp16``.
        eval_views: evaluation crops per image (1, 2, 5 or 10).
        eval_batch_size: evaluation batch size.
        workers: input-pipeline worker processes (None: the device's default); results do not depend on it.
        fast_decode: decode images the fast way (PIL resize on uint8, JPEG draft; values within a level
            or two of the exact decoding).
    """

    methods: list[str] = field(default_factory=lambda: list(LABEL_FREE_METHODS))
    eps: str | float = "10/255"
    norm: str = "linf"
    budget: float = DEFAULT_BUDGET
    seed: int = 0
    settings: dict[str, dict[str, Any]] = field(default_factory=dict)
    paper_data: bool = False
    amp: str = "off"
    eval_views: int = 1
    eval_batch_size: int = 64
    workers: int | None = None
    fast_decode: bool = False

    def method_configs(self) -> dict[str, UAPConfig]:
        """Every method's validated settings (shared ε, norm, seed and mixed precision, then its overrides);
        raises :class:`~patternscope.errors.PatternError` for anything wrong, before any work."""
        if not self.methods:
            raise PatternError("no methods given; choose from " + ", ".join(METHODS))
        recipes = [get_recipe(m) for m in self.methods]
        if len(set(self.methods)) != len(self.methods):
            raise PatternError("a method is listed twice in --methods")
        for name in self.settings:
            if name not in self.methods:
                raise PatternError(f"settings for {name!r}, which is not in --methods")
        eps = parse_eps(self.eps, self.norm)
        if not self.budget > 0:
            raise PatternError(f"--budget must be a positive number of passes, got {self.budget}")
        amp = False if self.amp == "off" else self.amp
        configs = {}
        for recipe in recipes:
            overrides = {"eps": eps, "norm": self.norm, "seed": self.seed, "amp": amp}
            configs[recipe.name] = make_config(recipe, None, {**overrides, **self.settings.get(recipe.name, {})})
            steps_for_budget(recipe, configs[recipe.name], self.budget)
        return configs


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
    fooling_ci: list[float] | None = None
    agreement_ci: list[float] | None = None
    fooling_ci_per_photo: list[float] | None = None
    psnr_db: float | None = None
    ssim: float | None = None
    pattern_class: str | None = None
    seconds: float | None = None
    passes: float | None = None
    steps: int | None = None
    settings: dict[str, Any] = field(default_factory=dict)
    error: str | None = None


@dataclass
class Comparison:
    """The result of :func:`compare_patterns`: one row per method, the random ±eps control, the images;
    ``patterns`` holds each finished method's pattern (not in :meth:`to_dict`)."""

    out: Path | None
    rows: list[MethodRow]
    random_sign: float | None
    random_sign_confident: float | None
    n_images: int
    eval_data: str
    patterns: dict[str, Pattern] = field(default_factory=dict, repr=False)

    def to_dict(self) -> dict[str, Any]:
        return {
            "rows": [asdict(r) for r in self.rows],
            "random_sign_fooling_ratio": self.random_sign,
            "random_sign_fooling_ratio_confident": self.random_sign_confident,
            "n_images": self.n_images,
            "eval_data": self.eval_data,
        }


def method_data(recipe: Recipe, method_config: UAPConfig, config: CompareConfig, shared: DataSpec) -> DataSpec:
    """One method's search data: the data every method shares, or with ``config.paper_data`` (or a range
    prior) its paper's own (:attr:`~patternscope.methods.recipe.Recipe.papers_data`). A labelled method keeps
    the shared data even then: its paper searched on labelled images, and the proxies standing for them here
    (the bundled photos) carry no labels; :func:`check_method_data` makes sure the shared data have them."""
    own = config.paper_data or getattr(method_config, "prior", None) == "range"
    if not own or recipe.labelled(method_config):
        return shared
    return list(recipe.papers_data) or None


def check_method_data(configs: dict[str, UAPConfig], config: CompareConfig, shared: DataSpec) -> None:
    """Raise :class:`~patternscope.errors.DataError` naming the labelled methods whose search data
    (:func:`method_data`) carry no labels, before any search or file (they would fail at their turn)."""
    missing = []
    for name, method_config in configs.items():
        recipe = get_recipe(name)
        if not (recipe.labelled(method_config) and recipe.uses_data(method_config)):
            continue
        if not labelled_sources(search_sources(recipe, method_data(recipe, method_config, config, shared))):
            missing.append(name)
    if missing:
        paper = " (--paper-data too: their papers' data here carry no labels)" if config.paper_data else ""
        raise DataError(
            f"{', '.join(missing)} {'needs' if len(missing) == 1 else 'need'} labelled search images{paper}: "
            "give --data an ImageFolder tree "
            "(one sub-folder per class), or use the label-free variant"
        )


def compare_patterns(
    model: Classifier,
    data: DataSpec = None,
    config: CompareConfig | None = None,
    *,
    eval_data: ImageSet | torch.Tensor | str,
    device: str | torch.device | None = None,
    progress: bool = True,
    out: str | Path | None = None,
    resume: bool = False,
    log: Callable[[str], None] = print,
) -> Comparison | None:
    """Run ``config.methods`` side by side on ``model`` and measure each pattern on ``eval_data``.

    Args:
        model: a :class:`~patternscope.core.classifier.Classifier` (inputs in [0,1]).
        data: the search data every data-using method shares (proxy names, ``photos``, folders, tensors
            or ImageSets; default: the bundled photos and jigsaw images). Keep it disjoint from
            ``eval_data`` (:func:`~patternscope.data.disjoint_eval_set` does that).
        config: a :class:`CompareConfig` (default: every method, ε = 10/255, 3,200 passes each).
        eval_data: the held-out images every pattern is measured on (an ImageSet, an N x C x H x W
            tensor in [0,1], or a spec such as ``photos-eval``).
        device: where to search (default: the model's device; the model is moved there).
        progress: show progress bars.
        out: a folder for ``compare.json``, ``compare.png`` and one sub-folder per method (with
            checkpoints); None keeps everything in memory.
        resume: with ``out``, keep finished methods and continue an interrupted one from its checkpoint.
        log: where progress lines go.

    Returns:
        The :class:`Comparison`; None on a ``torchrun`` rank other than 0. Raises :class:`MethodFailed`
        after the others finished when a method crashed.
    """
    config = config or CompareConfig()
    configs = config.method_configs()
    shared = list(DEFAULT_DATA) if data is None else data
    check_method_data(configs, config, shared)
    ctx = distributed.current()
    if device is not None:
        model = model.to(resolve_device(device))
    evaluation = open_images(eval_data)
    use_fast_decode([evaluation], config.fast_decode)
    root = Path(out) if out is not None else None
    eps = parse_eps(config.eps, config.norm)
    log(
        f"model {model.spec} on {model.device}; budget {config.budget:g} passes per method; eps {eps:.4f} "
        f"({config.norm}); evaluation: {evaluation.description}"
    )
    rows: list[MethodRow] = []
    patterns: dict[str, Pattern] = {}
    for name, method_config in configs.items():
        recipe = get_recipe(name)
        folder = root / name if root is not None else None
        if resume and folder is not None and (folder / "row.json").exists():
            rows.append(MethodRow(**without_run_id(json.loads((folder / "row.json").read_text()))))
            if (folder / "pattern.safetensors").is_file():
                patterns[name] = Pattern.load(folder)
            log(f"{name}: finished earlier, kept")
            continue
        if ctx.is_main and folder is not None:
            folder.mkdir(exist_ok=True)
        # the same search data for every method, unless asked for each paper's own (or a range prior)
        stream = make_stream(recipe, method_config, model, method_data(recipe, method_config, config, shared))
        if stream is not None:
            use_fast_decode(stream.sources, config.fast_decode)
        row = MethodRow(
            method=name,
            title=recipe.title,
            setting=setting_of(recipe, method_config, stream),
            data=stream.describe() if stream is not None else "none",
            clip_during_search=method_config.clip_during_search,
            settings={k: v for k, v in asdict(method_config).items() if k not in ("eps", "norm", "seed", "amp")},
        )
        try:
            row, pattern = _run_one(
                recipe, model, stream, method_config, config, folder, evaluation, row, resume, progress
            )
            if pattern is not None:
                patterns[name] = pattern
        except (KeyboardInterrupt, PatternscopeError):
            raise
        except Exception as exc:  # one broken method must not hide the others' results
            row.error = f"{type(exc).__name__}: {exc}"
            where = ""
            if ctx.is_main and folder is not None:
                (folder / "error.txt").write_text(traceback.format_exc())
                where = f"; traceback in {folder / 'error.txt'}"
            log(f"{name}: FAILED ({row.error}){where}")
        rows.append(row)
    if not ctx.is_main:
        return None
    comparison = _finish(root, model, rows, evaluation, config)
    comparison.patterns = patterns
    failed = [r.method for r in rows if r.error]
    if failed:
        where = f" (see {out}/<method>/error.txt); the other results are in {root / 'compare.json'}" if root else ""
        raise MethodFailed(f"method(s) {', '.join(failed)} failed{where}")
    return comparison


def _run_one(
    recipe: Recipe,
    model: Classifier,
    stream: BatchStream | None,
    method_config: UAPConfig,
    config: CompareConfig,
    folder: Path | None,
    evaluation: ImageSet,
    row: MethodRow,
    resume: bool,
    progress: bool,
) -> tuple[MethodRow, Pattern | None]:
    start = time.perf_counter()
    outcome = find_pattern(
        model,
        stream,
        method_config,
        method=recipe.name,
        budget=config.budget,
        checkpoint=folder / "checkpoint.pt" if folder is not None else None,
        resume=resume,
        progress=progress,
        workers=config.workers,
    )
    seconds = time.perf_counter() - start
    if not distributed.current().is_main:  # rank 0 saves and evaluates
        return row, None
    pattern = outcome.pattern
    if folder is not None:
        pattern.save(folder)
        write_json(folder / "history.json", {"loss": outcome.result.history})
        ev = evaluate_into(
            folder,
            model,
            pattern,
            evaluation,
            config.eval_views,
            config.eval_batch_size,
            config.seed,
            outcome.result.summary(),
            workers=config.workers,
        ).evaluation
    else:
        ev = evaluate_pattern(
            model,
            pattern,
            evaluation,
            views=config.eval_views,
            batch_size=config.eval_batch_size,
            seed=config.seed,
            workers=config.workers,
        )
    row.fooling_ratio = ev.fooling_ratio
    row.fooling_ratio_confident = ev.fooling_ratio_confident
    row.dominance_top1 = ev.dominance["top1"]["perturbed"]
    row.agreement = ev.agreement
    row.fooling_ci = [round(v, 4) for v in ev.intervals["fooling_ratio"]]
    row.agreement_ci = [round(v, 4) for v in ev.intervals["agreement"]]
    if "fooling_ratio_per_photo" in ev.intervals:
        row.fooling_ci_per_photo = [round(v, 4) for v in ev.intervals["fooling_ratio_per_photo"]]
    row.psnr_db = ev.perceptibility.get("psnr_db")
    row.ssim = ev.perceptibility.get("ssim")
    row.pattern_class = ev.pattern_class_name
    # a resumed search reports the whole search's seconds; time here covers this process only
    row.seconds = round(outcome.result.seconds if outcome.result.resumed_from is None else seconds, 2)
    row.passes = outcome.result.passes
    row.steps = outcome.result.steps_done
    if folder is not None:
        write_json(folder / "row.json", asdict(row))
    return row, pattern


def _finish(
    out: Path | None, model: Classifier, rows: list[MethodRow], evaluation: ImageSet, config: CompareConfig
) -> Comparison:
    probe = Pattern(torch.zeros(model.input_size), parse_eps(config.eps, config.norm), config.norm)
    ev = evaluate_pattern(
        model,
        probe,
        evaluation,
        views=config.eval_views,
        baselines=("sign",),
        seed=config.seed,
        batch_size=config.eval_batch_size,
        workers=config.workers,
        examples=0,
    )
    rnd = ev.random_baselines["sign"]
    comparison = Comparison(
        out=out,
        rows=rows,
        random_sign=rnd["fooling_ratio"],
        random_sign_confident=rnd["fooling_ratio_confident"],
        n_images=ev.n_images,
        eval_data=evaluation.description,
    )
    if out is None:
        return comparison
    payload = {
        "patternscope_version": __version__,
        "model": model.describe(),
        "eps": parse_eps(config.eps, config.norm),
        "norm": config.norm,
        "budget_passes": config.budget,
        "seed": config.seed,
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
            f"{model.spec}: eps {config.eps} ({config.norm}), {config.budget:g} passes each, "
            f"{comparison.n_images} held-out images",
        )
    return comparison


# ---------------------------------------------------------------------------------------------------
# patternscope compare


@dataclass
class _MethodsFirst(OutputFolder):
    """``--out`` then ``--methods``: what ``compare`` reads before the model options."""

    methods: list[str] = option(
        factory=lambda: list(LABEL_FREE_METHODS),
        help=f"comma-separated methods (default all: {comma_text(list(LABEL_FREE_METHODS))})",
        parse=comma_list,
        text=comma_text,
    )


@dataclass
class CompareOptions(PipelineOptions, ModelOptions, _MethodsFirst):
    """Every option of ``patternscope compare`` (also written to its ``config.json``).

    ``data=None`` gives every data-using method the same default search data (photos + jigsaw);
    ``paper_data=True`` gives each method its own paper's data instead (e.g. jigsaw for Cos-UAP).
    ``settings`` holds per-method overrides: ``{"sgd-uap": {"beta": 9}}``. The fields of
    :class:`CompareConfig` are its settings.
    """

    out: str = option("runs/compare", help="folder to write (created if missing)", metavar="DIR", required=True)
    data: list[str] | None = option(
        None,
        help=f"search data shared by every method that uses data: {DATA_HELP} (default: photos and jigsaw)",
        metavar="SOURCE",
        repeat=True,
    )
    paper_data: bool = option(
        False, help="give each method its own paper's data instead (jigsaw for cos-uap, photos for df-uap, ...)"
    )
    eval_data: str | None = option(None, help="held-out evaluation images (default: photos-eval)", metavar="SOURCE")
    holdout: float = option(0.2, help="share of a --data folder held out ({default})")
    eps: str = option("10/255", help="L-inf budget in [0,1] pixel units (default {default})")
    norm: str = option("linf", help="budget norm (default {default})", choices=("linf", "l2"))
    budget: float = option(
        DEFAULT_BUDGET,
        help="passes per method: images through forward and backward, forward-only images count 1/3 "
        "(default {default})",
    )
    seed: int = option(0, help="seed shared by every method (default {default})")
    settings: dict[str, dict[str, Any]] = option(
        factory=dict,
        help="a method setting, repeatable: e.g. sgd-uap.beta=9, dominant.lr=0.03, gd-uap.prior=range",
        name="--set",
        dest="set",
        metavar="METHOD.KEY=VALUE",
        repeat=True,
        parse=parse_settings,
        text=settings_text,
    )
    amp: str = option("off", help="mixed precision (default {default})", choices=("off", "bf16", "fp16"))
    channels_last: bool = option(False, help="NHWC memory layout (faster convolutions on GPUs)")
    eval_views: int = option(1, help="crops per image (default {default})", choices=EVAL_VIEWS)
    resume: bool = option(False, help="keep finished methods, continue an interrupted one")
    overwrite: bool = option(False, help="replace a comparison already in --out")
    eval_batch_size: int = 64

    def config(self) -> CompareConfig:
        """The comparison's settings."""
        return config_from(CompareConfig, self)


def compare_methods(
    opts: CompareOptions,
    *,
    progress: bool = True,
    log: Callable[[str], None] = print,
    model: Classifier | None = None,
    sources: tuple[Sequence[ImageSet | str], ImageSet] | None = None,
) -> Comparison | None:
    """Run ``patternscope compare`` end to end: check everything, load the model and data, and run
    :func:`compare_patterns` into the folder ``opts.out`` (with its ``config.json``).

    ``model`` (a loaded classifier) replaces ``opts.model``/``opts.weights``; ``sources`` (search
    sources, held-out evaluation set) replaces ``opts.data``/``opts.eval_data``. ``patternscope harden``
    uses both to compare methods on a model in memory, on its own data split.

    Under torchrun, methods whose objective is a mean over the batch search data-parallel, the others
    run whole on every rank; rank 0 writes and evaluates, the other ranks return None.
    """
    ctx, device_name = distributed.init(opts.device)
    if ctx.active:
        opts = replace(opts, device=device_name)
        log = log if ctx.is_main else (lambda _msg: None)
        progress = progress and ctx.is_main
    config = opts.config()
    configs = config.method_configs()  # every method's settings are checked before anything slow runs
    model_kwargs = parse_model_kwargs(opts.model_kwargs)
    if sources is None:
        shared_data = list(opts.data) if opts.data else list(DEFAULT_DATA)
        sources = resolve_data(shared_data, opts.eval_data, opts.holdout, opts.seed)
    train, evaluation = sources
    check_method_data(configs, config, list(train))  # and every method's data, before the folder is written
    distributed.on_main(lambda: _prepare_compare_dir(Path(opts.out), opts), ctx)
    out = Path(opts.out)
    device = resolve_device(opts.device)
    if model is None:
        model = load_options_model(opts, device, model_kwargs)
    if ctx.is_main:
        write_run_config(out, COMMAND.name, opts)
    return compare_patterns(
        model, train, config, eval_data=evaluation, progress=progress, out=out, resume=opts.resume, log=log
    )


def _prepare_compare_dir(out: Path, opts: CompareOptions) -> Path:
    if opts.resume and opts.overwrite:
        raise RunDirError("--resume and --overwrite contradict each other; choose one")
    if ((out / "compare.json").exists() or (out / "config.json").exists()) and not (opts.resume or opts.overwrite):
        raise RunDirError(
            f"{str(out)!r} already holds a comparison; pass --resume to continue it or --overwrite to start again"
        )
    # writability and free space; --overwrite (below) starts a new run, with a new run id
    path = prepare_run_dir(out, resume=True, overwrite=False, files=(), keep_run_id=opts.resume)
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


def _num(value: float | None, width: int, digits: int) -> str:
    return f"{value:{width}.{digits}f}" if value is not None else f"{'-':>{width}}"


def format_comparison(comparison: Comparison) -> str:
    """The comparison as a plain-text table (ratios to the dominant pattern when it was run)."""
    ref = next((r.fooling_ratio for r in comparison.rows if r.method == "dominant" and r.fooling_ratio), None)
    head = (
        f"{'method':<9} {'setting':<14} {'fool':>6} {'95% CI':>13} {'conf.':>6} {'dom@1':>6} {'agree':>6} "
        f"{'vs dom':>6} {'PSNR':>5} {'SSIM':>5} {'passes':>7} {'time s':>7}  data"
    )
    lines = [head, "-" * len(head)]
    for r in comparison.rows:
        if r.error:
            lines.append(f"{r.method:<9} FAILED: {r.error}")
            continue
        ratio = f"{(r.fooling_ratio or 0.0) / ref:6.2f}" if ref else f"{'-':>6}"
        ci = f"[{r.fooling_ci[0]:.3f},{r.fooling_ci[1]:.3f}]" if r.fooling_ci else "-"
        lines.append(
            f"{r.method:<9} {r.setting:<14} {r.fooling_ratio:6.3f} {ci:>13} {r.fooling_ratio_confident:6.3f} "
            f"{r.dominance_top1:6.3f} {r.agreement:6.3f} {ratio} {_num(r.psnr_db, 5, 1)} {_num(r.ssim, 5, 3)} "
            f"{r.passes or 0:7.0f} {r.seconds or 0:7.1f}  {r.data}"
        )
    lines.append(
        f"random ±eps: fooling {comparison.random_sign:.3f} (confident {comparison.random_sign_confident:.3f}); "
        f"{comparison.n_images} images of {comparison.eval_data}; CI: Wilson 95%, views taken as independent"
    )
    photo = [r for r in comparison.rows if r.fooling_ci_per_photo]
    if photo:
        lines.append(
            "per photo (its views as one draw): "
            + ", ".join(f"{r.method} [{c[0]:.3f},{c[1]:.3f}]" for r in photo if (c := r.fooling_ci_per_photo))
        )
    return "\n".join(lines)


COMMAND = Command(
    name="compare",
    summary="run several pattern methods side by side with the same data, eps, seed and budget",
    description="Run pattern methods side by side on one model with the same eps, search data, seed and "
    "compute budget (passes: images through forward and backward), evaluate each on the same held-out "
    "images, and write compare.json, compare.png and one sub-folder per method into --out.",
    options=CompareOptions,
    run=compare_methods,
    text=lambda comparison: f"{format_comparison(comparison)}\nfolder: {comparison.out}",
    json=indented_json(lambda comparison: comparison.to_dict()),
    report=compare_report.build,
    result_file="compare.json",
    files=("compare.json", "config.json"),
    torchrun="data-parallel",
)
