"""Complete runs: options -> model and data -> search -> pattern -> metrics -> a run folder.

A run folder holds ``config.json`` (the resolved options), ``checkpoint.pt`` (while and after the
search; ``--resume`` continues from it), ``pattern.safetensors`` / ``pattern.json`` / ``pattern.png``,
``metrics.json``, ``history.json``, ``examples.png`` and ``loss.png``. Every file is written atomically.
The CLI is a thin layer over :func:`find_dominant_run` and :func:`evaluate_run`.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import torch

from . import distributed, figures
from ._io import write_json
from ._version import __version__
from .data import BUNDLED_NAMES, PROXY_NAMES, ImageSet, disjoint_eval_set, open_images, training_sources
from .errors import DataError, ModelSpecError, PatternError, RunDirError
from .methods.dominant import DominantConfig, find_dominant_pattern
from .metrics import Evaluation, evaluate_pattern
from .models import DEFAULT_MODEL, Classifier, load_model, resolve_device
from .patterns import Pattern, parse_eps

RUN_FILES = (
    "config.json",
    "checkpoint.pt",
    "pattern.safetensors",
    "pattern.json",
    "pattern.png",
    "metrics.json",
    "history.json",
    "examples.png",
    "loss.png",
)
DEFAULT_DATA = ("photos", "jigsaw")
DEFAULT_EVAL = "photos-eval"
_DOM = DominantConfig()


@dataclass
class FindOptions:
    """Every option of ``patternscope find dominant`` (also the run's ``config.json``)."""

    out: str = "runs/dominant"
    model: str = DEFAULT_MODEL
    weights: str | None = None
    model_kwargs: str | None = None
    input_size: str | None = None
    data: list[str] = field(default_factory=lambda: list(DEFAULT_DATA))
    eval_data: str | None = None
    holdout: float = 0.2
    crop_scale: str | None = None
    eps: str = "10/255"
    # the method's settings: defaults are DominantConfig's (the paper's), so there is one source of truth
    norm: str = _DOM.norm
    steps: int = _DOM.steps
    batch_size: int = _DOM.batch_size
    lr: float = _DOM.lr
    weight_decay: float = _DOM.weight_decay
    layer: str = _DOM.layer
    loss: str = _DOM.loss
    clip_during_search: bool = _DOM.clip_during_search
    keep: str = _DOM.keep
    patience: int | None = _DOM.patience
    seed: int = _DOM.seed
    device: str = "auto"
    amp: str = "off"
    channels_last: bool = False
    eval_views: int = 1
    eval_batch_size: int = 64
    checkpoint_every: int = 25
    resume: bool = False
    overwrite: bool = False
    trust_pickle: bool = False
    allow_download: bool = False

    def dominant_config(self) -> DominantConfig:
        """The validated method settings (budget parsed, crop scale and amp converted)."""
        shared = {f.name: getattr(self, f.name) for f in fields(DominantConfig) if hasattr(self, f.name)}
        shared.update(
            eps=parse_eps(self.eps, self.norm),
            crop_scale=parse_crop_scale(self.crop_scale),
            amp=False if self.amp == "off" else self.amp,
        )
        return DominantConfig(**shared).validate()


@dataclass
class RunSummary:
    """What a finished run produced."""

    out: Path
    pattern: Pattern
    evaluation: Evaluation
    search: dict[str, Any]

    def headline(self) -> dict[str, Any]:
        ev = self.evaluation
        return {
            "out": str(self.out),
            "fooling_ratio": ev.fooling_ratio,
            "fooling_ratio_confident": ev.fooling_ratio_confident,
            "agreement": ev.agreement,
            "pattern_class": ev.pattern_class_name,
            "random_sign_fooling_ratio": ev.random_baselines.get("sign", {}).get("fooling_ratio"),
            "n_images": ev.n_images,
            "search_seconds": self.search.get("seconds"),
        }


# ---------------------------------------------------------------------------------------------------
# Run folders


def prepare_run_dir(
    out: str | Path,
    *,
    resume: bool,
    overwrite: bool,
    files: Sequence[str] = RUN_FILES,
    stale: Sequence[str] = (),
    resumable: bool = True,
) -> Path:
    """Check that ``out`` can take this run before any work starts.

    A folder holding any of ``files`` (names or glob patterns; files or folders) already holds a run:
    it needs ``resume`` (continue it) or ``overwrite`` (start again: ``files`` and the ``stale`` outputs
    of an earlier run are removed). An unwritable folder or a full disk is reported now, not after the
    search. ``resumable=False`` for commands without ``--resume``.
    """
    path = Path(out)
    if path.exists() and not path.is_dir():
        raise RunDirError(f"output path {str(path)!r} is a file; give a folder for --out")
    existing = [p for pattern in files for p in sorted(path.glob(pattern))] if path.is_dir() else []
    if existing and not (resume or overwrite):
        how = "pass --resume to continue it or --overwrite to start again" if resumable else "pass --overwrite"
        raise RunDirError(
            f"{str(path)!r} already holds a run ({', '.join(p.name for p in existing[:3])}); {how}, "
            "or choose another --out"
        )
    if resume and overwrite:
        raise RunDirError("--resume and --overwrite contradict each other; choose one")
    try:
        path.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".write-test-", dir=path)
        os.write(fd, b"0" * 4096)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise RunDirError(f"cannot write to output folder {str(path)!r}: {exc.strerror or exc}") from None
    free = shutil.disk_usage(path).free
    if free < 50 * 2**20:
        raise RunDirError(f"only {free / 2**20:.0f} MiB free on the disk of {str(path)!r}; need at least 50 MiB")
    if overwrite:
        for target in existing + [p for pattern in stale for p in sorted(path.glob(pattern))]:
            if target.is_dir():
                shutil.rmtree(target)
            elif target.exists():
                target.unlink()
    return path


def resolve_data(
    data: list[str], eval_data: str | None, holdout: float = 0.2, seed: int = 0
) -> tuple[list[ImageSet | str], ImageSet]:
    """Search sources and a disjoint evaluation set for ``--data`` / ``--eval-data``.

    Without ``eval_data``: the bundled ``photos-eval`` when the search data are bundled or generated,
    else a ``holdout`` share of the first image folder.
    """
    train = training_sources(data)
    if eval_data is not None:
        evaluation = open_images(eval_data)
    else:
        image_sets = [s for s in train if isinstance(s, ImageSet)]
        only_bundled = all(str(s) in BUNDLED_NAMES + PROXY_NAMES for s in data)
        if only_bundled or not image_sets:
            evaluation = open_images(DEFAULT_EVAL)
        else:  # hold part of the user's first image set out for evaluation
            evaluation = image_sets[0]
    return disjoint_eval_set(train, evaluation, holdout=holdout, seed=seed)


def find_dominant_run(
    opts: FindOptions, *, progress: bool = True, log: Callable[[str], None] = print
) -> RunSummary | None:
    """Run ``patternscope find dominant`` end to end and write the run folder ``opts.out``.

    Under torchrun the search is data-parallel (see :mod:`patternscope.distributed`); rank 0 writes the
    run folder and evaluates, the other ranks return None. A multi-node run resumes from the checkpoint
    in ``--out``, which every node must see (a shared file system).
    """
    from dataclasses import replace

    from .data import BatchStream

    ctx, device_name = distributed.init(opts.device)
    if ctx.active:
        opts = replace(opts, device=device_name)
        log = log if ctx.is_main else (lambda _msg: None)
        progress = progress and ctx.is_main
    config = opts.dominant_config()  # validate budget and settings before anything slow
    if opts.eval_views not in (1, 2, 5, 10):
        raise PatternError(f"--eval-views must be 1, 2, 5 or 10, got {opts.eval_views}")
    if ctx.active and opts.batch_size < ctx.world_size:
        raise PatternError(
            f"--batch-size {opts.batch_size} cannot be split over {ctx.world_size} processes; "
            f"use at least {ctx.world_size}"
        )
    model_kwargs = parse_model_kwargs(opts.model_kwargs)

    def check_folder() -> None:
        prepare_run_dir(opts.out, resume=opts.resume, overwrite=opts.overwrite)
        if opts.resume and (Path(opts.out) / "config.json").exists():
            _check_same_options(Path(opts.out) / "config.json", opts)

    distributed.on_main(check_folder, ctx)
    out = Path(opts.out)
    device = resolve_device(opts.device)
    model = load_options_model(opts, device, model_kwargs)
    model.check_layer(opts.layer)
    train, evaluation = resolve_data(opts.data, opts.eval_data, opts.holdout, opts.seed)
    if ctx.is_main:
        write_json(
            out / "config.json",
            {"command": "find dominant", "patternscope_version": __version__, "options": asdict(opts)},
        )
    parallel = f"; data-parallel over {ctx.world_size} processes ({ctx.backend})" if ctx.active else ""
    log(
        f"model {model.spec} on {device}; search data: {' + '.join(describe_source(s) for s in train)}; "
        f"evaluation: {evaluation.description}{parallel}"
    )
    stream = BatchStream(train, model.input_size, seed=opts.seed, crop_scale=config.crop_scale)
    outcome = distributed.run_everywhere(
        lambda: find_dominant_pattern(
            model,
            stream,
            config,
            checkpoint=out / "checkpoint.pt",
            checkpoint_every=opts.checkpoint_every,
            resume=opts.resume,
            progress=progress,
        ),
        ctx,
    )
    if not ctx.is_main:
        return None
    pattern = outcome.pattern
    pattern.meta.update({"eval_data": evaluation.description, "device": str(device), "processes": ctx.world_size})
    pattern.save(out, extra_tensors={"delta_best": outcome.best.delta})
    write_json(out / "history.json", {"loss": outcome.result.history, "best_step": outcome.result.best_step})
    figures.loss_curve(out / "loss.png", outcome.result.history, f"dominant pattern search loss ({config.loss})")
    summary = evaluate_into(
        out, model, pattern, evaluation, opts.eval_views, opts.eval_batch_size, opts.seed, outcome.result.summary()
    )
    return summary


@dataclass
class ModelOptions:
    """The model options every command shares (``--model``, ``--weights``, ...), as run options' base."""

    model: str = DEFAULT_MODEL
    weights: str | None = None
    model_kwargs: str | None = None
    input_size: str | None = None
    device: str = "auto"
    trust_pickle: bool = False
    allow_download: bool = False


def model_fields(opts: ModelOptions) -> dict[str, Any]:
    """The :class:`ModelOptions` fields of a command's options, to hand the same model to another command."""
    return {f.name: getattr(opts, f.name) for f in fields(ModelOptions)}


def load_options_model(opts: Any, device: torch.device, model_kwargs: dict[str, Any]) -> Classifier:
    """The model named by a command's options (``model``, ``weights``, ``trust_pickle``, ``allow_download``)."""
    model = load_model(
        opts.model,
        opts.weights,
        device=device,
        trust_pickle=opts.trust_pickle,
        allow_download=opts.allow_download,
        model_kwargs=model_kwargs,
        input_size=parse_input_size(getattr(opts, "input_size", None)),
    )
    if getattr(opts, "channels_last", False):
        model.use_channels_last()
    return model


def parse_input_size(text: str | Sequence[int] | None) -> tuple[int, int, int] | None:
    """``--input-size C,H,W`` (e.g. ``1,28,28``) as a tuple; None keeps the model's own."""
    if text is None or text == "":
        return None
    parts = text.split(",") if isinstance(text, str) else list(text)
    try:
        size = tuple(int(v) for v in parts)
    except (TypeError, ValueError):
        size = ()
    if len(size) != 3 or min(size) <= 0:
        raise ModelSpecError(f"--input-size must be three positive integers C,H,W such as 3,224,224; got {text!r}")
    return size  # type: ignore[return-value]


def parse_crop_scale(text: str | None) -> tuple[float, float] | None:
    """``--crop-scale MIN,MAX`` as a tuple (the range is checked by :func:`~patternscope.data.check_crop_scale`)."""
    if text in (None, "", "none"):
        return None
    try:
        lo, hi = (float(v) for v in str(text).split(","))
    except ValueError:
        raise DataError(f"--crop-scale {text!r}: write two numbers MIN,MAX such as 0.1,1") from None
    return lo, hi


def parse_model_kwargs(text: str | None) -> dict[str, Any]:
    """``--model-kwargs`` JSON as a dict (empty when not given)."""
    if not text:
        return {}
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        example = '{"classes": 10}'
        raise ModelSpecError(f"--model-kwargs is not valid JSON ({exc.msg}); write it like '{example}'") from None
    if not isinstance(value, dict):
        raise ModelSpecError("--model-kwargs must be a JSON object, like '{\"classes\": 10}'")
    return value


def describe_source(source: ImageSet | str) -> str:
    return source if isinstance(source, str) else source.description


def _check_same_options(path: Path, opts: FindOptions) -> None:
    try:
        saved = json.loads(path.read_text())["options"]
    except (OSError, ValueError, KeyError):
        return
    ignore = {"resume", "overwrite", "steps", "device", "eval_views", "eval_batch_size", "out", "checkpoint_every"}
    ignore |= {"channels_last"}  # layout only: the same search
    now = asdict(opts)
    diff = {k: (saved.get(k), v) for k, v in now.items() if k not in ignore and saved.get(k) != v}
    if diff:
        detail = "; ".join(f"{k}: {a!r} then, {b!r} now" for k, (a, b) in diff.items())
        raise RunDirError(f"--resume with other options than the run in {str(path.parent)!r} ({detail})")


def evaluate_into(
    out: Path,
    model: Classifier,
    pattern: Pattern,
    evaluation: ImageSet,
    views: int,
    batch_size: int,
    seed: int,
    search: dict[str, Any] | None,
) -> RunSummary:
    ev = evaluate_pattern(model, pattern, evaluation, views=views, batch_size=batch_size, seed=seed)
    metrics = {
        "patternscope_version": __version__,
        "model": model.describe(),
        "pattern": {
            "method": pattern.meta.get("method"),
            "eps": pattern.eps,
            "norm": pattern.norm,
            "kept": pattern.meta.get("kept"),
            "clip_during_search": pattern.meta.get("clip_during_search"),
            "data": pattern.meta.get("data"),
            "label_free": pattern.meta.get("label_free"),
        },
        "eval_data": {"description": evaluation.description, "images": len(evaluation), "views": views},
        "evaluation": ev.to_dict(),
        "search": search,
    }
    write_json(out / "metrics.json", metrics)
    d = ev.details
    order = _example_order(len(d["clean_pred"]))
    figures.example_grid(
        out / "examples.png",
        d["images"][order],
        pattern.delta,
        d["clean_pred"][order].tolist(),
        d["clean_conf"][order].tolist(),
        d["perturbed_pred"][order].tolist(),
        d["perturbed_conf"][order].tolist(),
        model.class_names,
    )
    return RunSummary(out=out, pattern=pattern, evaluation=ev, search=search or {})


def _example_order(count: int, n: int = 8) -> torch.Tensor:
    """Up to ``n`` example indices spread evenly over ``count`` images (deterministic)."""
    return torch.arange(0, count, max(1, count // n))[:n]


def evaluate_run(
    pattern_path: str | Path,
    data: str,
    *,
    model_spec: str | None = None,
    weights: str | None = None,
    model_kwargs: str | None = None,
    input_size: str | None = None,
    out: str | Path | None = None,
    device: str = "auto",
    views: int = 1,
    batch_size: int = 64,
    seed: int = 0,
    trust_pickle: bool = False,
    allow_download: bool = False,
    overwrite: bool = False,
) -> RunSummary | Evaluation:
    """Measure a saved pattern on a model (default: the model it was made for) and images.

    With ``out``, writes ``metrics.json`` and ``examples.png`` there and returns a :class:`RunSummary`.
    """
    pattern = Pattern.load(pattern_path)
    if views not in (1, 2, 5, 10):
        raise PatternError(f"--eval-views must be 1, 2, 5 or 10, got {views}")
    spec = model_spec or pattern.meta.get("model") or DEFAULT_MODEL
    if out is not None:
        out_path = Path(out)
        if (
            out_path.resolve() != Path(pattern_path).resolve()
            and (out_path / "metrics.json").exists()
            and not overwrite
        ):
            raise RunDirError(f"{str(out_path)!r} already has metrics.json; pass --overwrite or another --out")
        out_path.mkdir(parents=True, exist_ok=True)
    model = load_model(
        spec,
        weights,
        device=device,
        trust_pickle=trust_pickle,
        allow_download=allow_download,
        model_kwargs=parse_model_kwargs(model_kwargs),
        input_size=parse_input_size(input_size),
    )
    pattern.check_fits(model.input_size)
    images = open_images(data)
    if out is None:
        return evaluate_pattern(model, pattern, images, views=views, batch_size=batch_size, seed=seed)
    return evaluate_into(Path(out), model, pattern, images, views, batch_size, seed, None)


def format_evaluation(ev: Evaluation) -> str:
    """A short human-readable table of an evaluation."""

    def baseline(kind: str, key: str = "fooling_ratio") -> float:
        return ev.random_baselines.get(kind, {}).get(key, float("nan"))

    dom = {k: ev.dominance[f"top{k}"] for k in (1, 3, 5)}
    lines = [
        f"images evaluated               {ev.n_images}",
        f"fooling ratio                  {ev.fooling_ratio:.3f}   "
        f"(random ±eps: {baseline('sign'):.3f}, uniform: {baseline('uniform'):.3f})",
        f"  on confident (> {ev.confidence_threshold:.2f}, n={ev.n_confident:<4}) {ev.fooling_ratio_confident:.3f}   "
        f"(random ±eps: {baseline('sign', 'fooling_ratio_confident'):.3f})",
        f"pattern's own class            {ev.pattern_class} {ev.pattern_class_name!r}",
        f"agreement f(x+δ) == f(δ)       {ev.agreement:.3f}",
        "dominance top-1/3/5 perturbed  " + " / ".join(f"{dom[k]['perturbed']:.3f}" for k in (1, 3, 5)),
        "dominance top-1/3/5 clean      " + " / ".join(f"{dom[k]['clean']:.3f}" for k in (1, 3, 5)),
    ]
    if ev.accuracy:
        acc = ev.accuracy
        lines.append(
            f"top-1 accuracy clean/perturbed {acc['clean']['top1']:.3f} / {acc['perturbed']['top1']:.3f}  "
            f"(n={acc['n_labelled']}; attack success on correct {acc['attack_success_on_correct']:.3f})"
        )
    return "\n".join(lines)
