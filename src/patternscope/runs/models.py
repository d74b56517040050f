"""``patternscope models``: what can be loaded (bundled, torchvision, timm), or one model's layer names."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass

from ..core.models import ModelEntry, list_models, load_model
from .command import Command
from .options import option


@dataclass
class ModelsOptions:
    """Every option of ``patternscope models``."""

    all: bool = option(False, help="include every torchvision and timm architecture")
    filter: str | None = option(None, help="only specs matching this (wildcards allowed)", metavar="PATTERN")
    layers: str | None = option(None, help="list the layer names of this model for --layer", metavar="SPEC")
    weights: str | None = option(None, help="weights for --layers (default: its own)", metavar="FILE")


@dataclass
class ModelListing:
    """Either the loadable models (``rows``) or one model's layer names (``layers``)."""

    rows: list[ModelEntry] | None = None
    layers: list[str] | None = None
    all: bool = False


def models_run(opts: ModelsOptions, *, progress: bool = True, log: Callable[[str], None] = print) -> ModelListing:
    """The listing ``patternscope models`` prints."""
    if opts.layers:
        return ModelListing(layers=load_model(opts.layers, opts.weights).layer_names())
    return ModelListing(rows=list_models(opts.filter, include_hubs=opts.all), all=opts.all)


def format_models(listing: ModelListing) -> str:
    """One model per line (spec, source, weights), or one layer name per line."""
    if listing.layers is not None:
        return "\n".join(listing.layers)
    rows = listing.rows or []
    width = max((len(r.spec) for r in rows), default=10) + 2
    lines = [f"{r.spec:<{width}}{r.source:<13}{r.weights}" for r in rows]
    if not listing.all:
        lines.append(
            "\n--all lists every torchvision:NAME and timm:NAME; your own model: module.path:Attr "
            "or file.py:Attr with --weights FILE"
        )
    return "\n".join(lines)


def models_json(listing: ModelListing) -> str:
    if listing.layers is not None:
        return json.dumps(listing.layers)
    return json.dumps([r.__dict__ for r in listing.rows or []], indent=2)


COMMAND = Command(
    name="models",
    summary="list the models that can be loaded",
    description="List loadable models (bundled; with --all also torchvision and timm).",
    options=ModelsOptions,
    run=models_run,
    text=format_models,
    json=models_json,
    folder=False,
)
