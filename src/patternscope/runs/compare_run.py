"""Pattern methods side by side: :func:`compare_patterns` (a model and images in, a table out) and
:func:`compare_methods` (the same from ``patternscope compare``'s options, into a run folder).
The settings, rows and result types are :mod:`patternscope.analyses.comparison`'s.

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
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import torch

from .._version import __version__
from ..analyses.comparison import (
    CompareConfig,
    Comparison,
    MethodFailed,
    MethodRow,
    check_method_data,
    method_data,
)
from ..core import distributed
from ..core.atomic import write_json
from ..core.classifier import Classifier
from ..core.configs import config_from, from_config
from ..core.metrics import evaluate_pattern
from ..core.models import resolve_device
from ..core.patterns import Pattern, parse_eps
from ..core.run_id import without_run_id
from ..data.image_set import ImageSet
from ..data.sources import open_images
from ..data.stream import BatchStream
from ..errors import PatternscopeError, RunDirError
from ..methods import METHODS, UAPConfig, find_pattern, get_recipe
from ..methods.recipe import (
    DataSpec,
    Recipe,
    make_stream,
    setting_of,
)
from ..report import figures
from .evaluation import evaluate_into, write_history
from .folders import prepare_run_dir, write_run_config
from .options import (
    DATA_HELP,
    ModelOptions,
    OutputFolder,
    PipelineOptions,
    load_options_model,
    option,
    parse_model_kwargs,
    use_fast_decode,
)
from .search_data import DEFAULT_DATA, resolve_data
from .tensorboard_log import TENSORBOARD_HELP, TensorBoardLog, check_tensorboard


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
    tensorboard: TensorBoardLog | None = None,
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
        tensorboard: also log each search (loss, learning rate, the pattern) and each row's numbers there,
            each method under its name (:class:`~patternscope.runs.tensorboard_log.TensorBoardLog`).

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
    if root is not None and ctx.is_main:
        root.mkdir(parents=True, exist_ok=True)  # the command line made it; a call from Python may not have
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
                recipe, model, stream, method_config, config, folder, evaluation, row, resume, progress, tensorboard
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
    tensorboard: TensorBoardLog | None = None,
) -> tuple[MethodRow, Pattern | None]:
    start = time.perf_counter()
    board = tensorboard if distributed.current().is_main else None
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
        monitor=board.monitor(recipe.name, method_config.eps) if board is not None else None,
    )
    seconds = time.perf_counter() - start
    if not distributed.current().is_main:  # rank 0 saves and evaluates
        return row, None
    pattern = outcome.pattern
    if folder is not None:
        pattern.save(folder)
        write_history(folder, outcome.result.history)
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
    if board is not None:
        board.pattern(recipe.name, pattern.delta, pattern.eps, row.steps)
        board.metrics(recipe.name, asdict(row), row.steps)
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


COMMAND_NAME = "compare"  # what its config.json names


@dataclass
class _MethodsFirst(OutputFolder):
    """``--out`` then ``--methods``: what ``compare`` reads before the model options."""

    methods: list[str] = from_config(CompareConfig, "methods")


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
    paper_data: bool = from_config(CompareConfig, "paper_data")
    eval_data: str | None = option(None, help="held-out evaluation images (default: photos-eval)", metavar="SOURCE")
    holdout: float = option(0.2, help="share of a --data folder held out ({default})")
    eps: str = from_config(CompareConfig, "eps")
    norm: str = from_config(CompareConfig, "norm")
    budget: float = from_config(CompareConfig, "budget")
    seed: int = from_config(CompareConfig, "seed")
    settings: dict[str, dict[str, Any]] = from_config(CompareConfig, "settings")
    amp: str = from_config(CompareConfig, "amp")
    channels_last: bool = option(False, help="NHWC memory layout (faster convolutions on GPUs)")
    eval_views: int = from_config(CompareConfig, "eval_views")
    resume: bool = option(False, help="keep finished methods, continue an interrupted one")
    overwrite: bool = option(False, help="replace a comparison already in --out")
    tensorboard: bool = option(False, help=TENSORBOARD_HELP)
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
    if opts.tensorboard:
        check_tensorboard()
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
        write_run_config(out, COMMAND_NAME, opts)
    board = TensorBoardLog(out) if opts.tensorboard and ctx.is_main else None
    try:
        return compare_patterns(
            model,
            train,
            config,
            eval_data=evaluation,
            progress=progress,
            out=out,
            resume=opts.resume,
            log=log,
            tensorboard=board,
        )
    finally:
        if board is not None:
            board.close()


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
