"""``patternscope transfer``: saved patterns (run folders or pattern files) measured on several models
(:func:`~patternscope.analyses.transfer.transfer_matrix`), with ``transfer.json`` and ``transfer.png``."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path

from .._version import __version__
from ..analyses.transfer import Transfer, transfer_matrix
from ..core.atomic import write_json
from ..core.classifier import Classifier
from ..core.models import load_model, resolve_device
from ..core.patterns import Pattern
from ..data.sources import open_images
from ..errors import PatternError, RunDirError
from ..report import figures
from ..report import transfer as transfer_report
from .command import Command, indented_json
from .evaluation import ALLOW_OVER_BUDGET_HELP, pattern_budget
from .folders import start_run
from .lock import lock_run_dir
from .options import EVAL_VIEWS, PipelineOptions, option, parse_model_kwargs, use_fast_decode


@dataclass
class TransferOptions(PipelineOptions):
    """Every option of ``patternscope transfer``."""

    patterns: list[str] = option(
        factory=list, help="run folders or pattern files", metavar="RUN", many=True, required=True
    )
    models: list[str] = option(
        factory=list,
        help="model specs to measure them on, each optionally SPEC@WEIGHTS_FILE",
        metavar="SPEC",
        many=True,
        required=True,
    )
    data: str = option("photos-eval", help="evaluation images (default {default})", metavar="SOURCE")
    out: str | None = option(None, help="write transfer.json and transfer.png here", metavar="DIR")
    model_kwargs: str | None = option(None, help="keyword arguments for user model classes, as JSON", metavar="JSON")
    device: str = option("auto", help="auto, cpu, cuda or cuda:N (default {default})")
    eval_views: int = option(1, help="crops per image (default {default})", choices=EVAL_VIEWS)
    seed: int = option(0, help="seed of the random-noise control (default {default})")
    trust_pickle: bool = option(False, help="allow weights files that need full unpickling")
    allow_download: bool = option(False, help="let torchvision/timm download missing weights")
    allow_over_budget: bool = option(False, help=ALLOW_OVER_BUDGET_HELP)
    batch_size: int = 64


def pattern_file(path: str | Path) -> Path:
    """A run folder's ``pattern.safetensors``, or ``path`` itself when it is a file."""
    p = Path(path)
    return p / "pattern.safetensors" if p.is_dir() else p


def transfer_run(opts: TransferOptions, *, progress: bool = True, log: Callable[[str], None] = print) -> Transfer:
    """Measure each saved pattern on each model (``SPEC`` or ``SPEC@WEIGHTS``, loaded one at a time) and,
    with ``opts.out``, write ``transfer.json`` and ``transfer.png`` there (holding the folder's lock).

    A pattern over its declared budget is refused unless ``opts.allow_over_budget``; then its row is named
    ``... [OVER BUDGET]`` and ``transfer.json``'s ``budgets`` say so."""
    if not opts.patterns or not opts.models:
        raise PatternError("transfer needs at least one --patterns and one --models")
    kwargs = parse_model_kwargs(opts.model_kwargs)
    loaded = []
    for path in opts.patterns:
        pattern = Pattern.load(pattern_file(path), allow_over_budget=opts.allow_over_budget)
        if pattern.over_budget:
            log(f"{path}: OVER BUDGET, it has {pattern.budget_text()}")
        loaded.append((f"{path} [OVER BUDGET]" if pattern.over_budget else str(path), pattern))
    images = open_images(opts.data)
    use_fast_decode([images], opts.fast_decode)
    if opts.out is not None:
        try:
            Path(opts.out).mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise RunDirError(f"cannot write to output folder {opts.out!r}: {exc.strerror or exc}") from None
        lock_run_dir(opts.out)
        start_run(Path(opts.out), keep=False)  # transfer.json is rewritten whole: a new run each time
    device = resolve_device(opts.device)

    def loader(entry: str) -> Classifier:
        spec, _, weights = entry.partition("@")
        return load_model(
            spec,
            weights or None,
            device=device,
            model_kwargs=kwargs,
            trust_pickle=opts.trust_pickle,
            allow_download=opts.allow_download,
        )

    models = [(entry, partial(loader, entry)) for entry in opts.models]
    result = transfer_matrix(
        models,
        loaded,
        images,
        views=opts.eval_views,
        batch_size=opts.batch_size,
        seed=opts.seed,
        workers=opts.workers,
        log=log,
    )
    if opts.out is not None:
        out = Path(opts.out)
        budgets = [{"pattern": name, **pattern_budget(p)} for name, p in loaded]
        write_json(out / "transfer.json", {"patternscope_version": __version__, **result.to_dict(), "budgets": budgets})
        labels = [f"{p.meta.get('method', '?')} @ {p.meta.get('model', '?')} ({Path(n).name or n})" for n, p in loaded]
        figures.heatmap(
            out / "transfer.png",
            result.fooling,
            labels,
            list(opts.models),
            f"fooling ratio on {images.description} (random ±eps: "
            + ", ".join(f"{v:.2f}" for v in result.random_sign)
            + ")",
        )
    return result


def format_transfer(result: Transfer) -> str:
    """The fooling-ratio matrix as a plain-text table (each entry with its agreement in brackets), with the
    random ±eps row."""
    width = max(len(p) for p in result.patterns) + 2
    lines = [" " * width + "".join(f"{m[:34]:>36}" for m in result.models)]
    agreement = result.agreement or [[float("nan")] * len(result.models) for _ in result.patterns]
    for name, row, agree, cis in zip(result.patterns, result.fooling, agreement, result.intervals(), strict=True):
        cells = "".join(
            f"{f'{v:.3f} [{ci[0]:.2f},{ci[1]:.2f}] (agree {a:.3f})':>36}"
            for v, a, ci in zip(row, agree, cis, strict=True)
        )
        lines.append(f"{name:<{width}}" + cells)
    lines.append(f"{'random ±eps':<{width}}" + "".join(f"{v:>36.3f}" for v in result.random_sign))
    note = f"[ ]: Wilson 95% interval, n = {result.n_images} images"
    if result.views > 1:
        note += f" ({result.views} views of each photo, taken as independent; per photo: transfer.json)"
    lines.append(note)
    return "\n".join(lines)


COMMAND = Command(
    name="transfer",
    summary="fooling-ratio matrix of saved patterns on several models",
    description="Measure saved patterns (run folders or pattern files) on several models: a fooling-ratio "
    "matrix (pattern x model) with random-noise controls, as transfer.json and transfer.png.",
    options=TransferOptions,
    run=transfer_run,
    text=format_transfer,
    json=indented_json(lambda result: result.to_dict()),
    report=transfer_report.build,
    result_file="transfer.json",
)
