"""Command options as dataclasses whose fields carry their command-line flag.

Each command's options are one dataclass. A field made with :func:`option` carries a :class:`Flag` in its
metadata: the help text (``{default}`` and ``{default:g}`` stand for the default), the metavar, choices,
and how a command-line string becomes the field's value. :mod:`patternscope.cli` derives every flag from
these fields, in field order, so a default and its help text exist once. A field without a flag (made
with plain ``dataclasses.field`` or a bare default) is an API-only setting.

Shared blocks come from mixins: :class:`OutputFolder` (``--out``, first on the command line) and
:class:`ModelOptions` (``--model``, ``--weights``, ...). A dataclass lists the fields of its bases first,
last base first, so ``class FindOptions(ModelOptions, OutputFolder)`` reads ``--out``, then the model
options, then its own.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, fields
from typing import Any

import torch

from ..core.classifier import Classifier
from ..core.configs import Flag, comma_list, comma_text, field_default, flag_of, option
from ..core.models import BUNDLED, DEFAULT_MODEL, load_model
from ..data.bank import DEFAULT_CACHE_MB
from ..data.image_set import ImageSet
from ..data.images import EVAL_VIEWS
from ..data.labelled import BUILTIN_LABELLED
from ..data.photos import BUNDLED_NAMES
from ..data.proxies import PROXY_NAMES
from ..errors import DataError, ModelSpecError

DATA_HELP = (
    "a folder of images, an ImageFolder tree (one sub-folder per class), an image file, "
    f"a bundled set ({', '.join(BUNDLED_NAMES)}) or a generated proxy ({', '.join(PROXY_NAMES)})"
)
LABELLED_HELP = (
    "labelled images: an ImageFolder tree (one sub-folder per class; any size or channel count, resized "
    f"whole to the model's input) or a built-in set: {', '.join(BUILTIN_LABELLED)} (its test split)"
)


def recipe_values(opts: Any, settings: Mapping[str, Any]) -> dict[str, Any]:
    """The ``settings`` a recipe gives (field name -> value, e.g. a config's ``asdict``) that ``opts`` (a
    command's options) leaves to it: those that are no field of ``opts``, or a field left None.

    An option a recipe may set defaults to None, "not given" (its help names the value it then takes), so an
    option given explicitly always wins, even when it equals the default; the same holds whether it was given
    on the command line, in a config file (whose options become command-line tokens) or to the options
    dataclass in Python. Pass the result to :func:`~patternscope.core.configs.config_from`.
    """
    names = {f.name for f in fields(opts)}
    return {k: v for k, v in settings.items() if k not in names or getattr(opts, k) is None}


def options_from_values(options: type[Any], values: dict[str, Any]) -> Any:
    """Options of type ``options`` from command-line values by dest (None: the field's default), each
    parsed by its flag."""
    given = {}
    for f in fields(options):
        flag = flag_of(f)
        if flag is None:
            continue
        value = values.get(flag.dest or f.name)
        if value is None:
            continue
        given[f.name] = flag.parse(value) if flag.parse is not None else value
    return options(**given)


# ---------------------------------------------------------------------------------------------------
# Parsing command-line text


def parse_classes(text: str | Sequence[int] | None) -> list[int] | None:
    """``--classes 1,3`` as ``[1, 3]``; None or empty: every class."""
    if not text:
        return None
    if not isinstance(text, str):
        return [int(v) for v in text]
    try:
        return [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise DataError(f"--classes must be comma-separated class indices, got {text!r}") from None


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
    return size[0], size[1], size[2]


def parse_crop_scale(text: str | None) -> tuple[float, float] | None:
    """``--crop-scale MIN,MAX`` as a tuple (the range is checked by :func:`~patternscope.data.check_crop_scale`)."""
    if text in (None, "", "none"):
        return None
    try:
        lo, hi = (float(v) for v in str(text).split(","))
    except ValueError:
        raise DataError(f"--crop-scale {text!r}: write two numbers MIN,MAX such as 0.1,1") from None
    return lo, hi


def parse_model_kwargs(text: str | dict[str, Any] | None) -> dict[str, Any]:
    """``--model-kwargs`` JSON as a dict (empty when not given; a dict is returned as it is)."""
    if not text:
        return {}
    if isinstance(text, dict):
        return text
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        example = '{"classes": 10}'
        raise ModelSpecError(f"--model-kwargs is not valid JSON ({exc.msg}); write it like '{example}'") from None
    if not isinstance(value, dict):
        raise ModelSpecError("--model-kwargs must be a JSON object, like '{\"classes\": 10}'")
    return value


# ---------------------------------------------------------------------------------------------------
# Shared blocks of options


@dataclass
class OutputFolder:
    """``--out``: the folder a command writes (first on its command line)."""

    out: str = option("runs/out", help="run folder to write (created if missing)", metavar="DIR", required=True)


@dataclass
class PipelineOptions:
    """``--workers``: the input pipeline's worker processes (see :mod:`patternscope.data.loader`)."""

    workers: int | None = option(
        None,
        help="input-pipeline worker processes decoding images ahead of the model (default: 0 on the CPU, "
        "one background thread; on a GPU one per core up to 8); results are the same for any number",
        metavar="N",
    )
    fast_decode: bool = option(
        False,
        help="resize images in PIL on uint8 with JPEG draft decoding: about 1.7x the images/s per core, "
        "values within a level or two of the exact (default) decoding",
    )


@dataclass
class LabelledDataOptions:
    """``--cache-mb``: memory for an ImageFolder tree's model-sized images (files are read on demand; see
    :class:`~patternscope.data.bank.ImageBank`)."""

    cache_mb: float = option(
        DEFAULT_CACHE_MB,
        help="MB of labelled images (resized to the model) kept in memory once read, so later passes skip "
        "decoding (default {default:g}; 0: decode on every read); results are the same for any size",
        metavar="MB",
    )


def use_fast_decode(sources: Iterable[object], fast: bool) -> None:
    """Set ``fast_decode`` on every :class:`~patternscope.data.image_set.ImageSet` among ``sources``."""
    for source in sources:
        if isinstance(source, ImageSet):
            source.fast_decode = fast


MODEL_SPEC_HELP = (
    f"model spec: {', '.join(BUNDLED)}, torchvision:NAME, timm:NAME, module.path:Attr or file.py:Attr (default: "
)


@dataclass
class ModelOptions:
    """The model options every command that loads one model shares (``--model``, ``--weights``, ...)."""

    model: str = option(DEFAULT_MODEL, help=MODEL_SPEC_HELP + "{default})", metavar="SPEC")
    weights: str | None = option(
        None,
        help="state dict to load (.safetensors or .pth, read with weights_only); 'none' for random weights; "
        "default: the model's own pretrained weights from the local cache",
        metavar="FILE",
    )
    model_kwargs: str | None = option(
        None,
        help="keyword arguments for a user model class or factory, as JSON, e.g. '{\"classes\": 10}'",
        metavar="JSON",
    )
    input_size: str | None = option(
        None,
        help="the model's input size in pixels, e.g. 1,28,28 (default: the model's own input_size, else 3,224,224)",
        metavar="C,H,W",
    )
    device: str = option("auto", help="auto (CUDA if available), cpu, cuda or cuda:N (default {default})")
    trust_pickle: bool = option(False, help="allow weights files that need full unpickling (can run arbitrary code)")
    allow_download: bool = option(
        False, help="let torchvision/timm download missing pretrained weights (off: nothing is downloaded)"
    )


def model_fields(opts: ModelOptions) -> dict[str, Any]:
    """The :class:`ModelOptions` fields of a command's options, to hand the same model to another command."""
    return {f.name: getattr(opts, f.name) for f in fields(ModelOptions)}


def load_options_model(opts: Any, device: torch.device, model_kwargs: dict[str, Any]) -> Classifier:
    """The model named by a command's options (``model``, ``weights``, ``input_size``, ``trust_pickle``,
    ``allow_download``; ``channels_last`` when present) with ``model_kwargs`` already parsed (commands parse
    them before any folder is touched, so a typo costs nothing)."""
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


__all__ = [
    "DATA_HELP",
    "EVAL_VIEWS",
    "LABELLED_HELP",
    "Flag",
    "LabelledDataOptions",
    "ModelOptions",
    "OutputFolder",
    "comma_list",
    "comma_text",
    "field_default",
    "flag_of",
    "load_options_model",
    "model_fields",
    "option",
    "options_from_values",
    "parse_classes",
    "parse_crop_scale",
    "parse_input_size",
    "parse_model_kwargs",
    "recipe_values",
]
