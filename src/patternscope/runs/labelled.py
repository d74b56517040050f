"""What the commands on labelled images share (``find classwise``, ``scan``, ``harden``): the model and its
labelled data, and the files that mark a class-wise or scan run folder."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ..core.classifier import Classifier
from ..core.models import resolve_device
from ..data.labelled import LabelledImages, open_labelled
from ..errors import DataError
from .folders import RUN_FILES
from .options import load_options_model, parse_model_kwargs

# a folder holding any of these holds a class-wise or scan run (or another run: RUN_FILES)
LABELLED_RUN_FILES = ("classwise.json", "scan.json", "scan_config.json", "classes", "references", *RUN_FILES)
# outputs removed by --overwrite too, so a stale trigger image never survives a new verdict
LABELLED_STALE = (
    "scan.txt",
    "gallery.png",
    "canvas_mask.png",
    "classwise_row.json",
    "trigger_class*.png",
    "additive_class*.png",
)


def model_and_labelled_data(opts: Any, log: Callable[[str], None]) -> tuple[Classifier, LabelledImages]:
    """The model of ``opts`` (its :class:`~patternscope.runs.options.ModelOptions`) and its labelled images
    ``opts.data``, sized for it (files read on demand, at most ``opts.cache_mb`` MB of them kept); the
    data's class names name the model's classes when it has none."""
    device = resolve_device(opts.device)
    model = load_options_model(opts, device, parse_model_kwargs(opts.model_kwargs))
    data = open_labelled(opts.data, model.input_size, cache_mb=opts.cache_mb)
    if data.class_names:
        model.adopt_class_names([n.split("_", 1)[-1] if n[:2].isdigit() else n for n in data.class_names])
    n_labels = int(data.labels.max()) + 1
    if n_labels > model.num_classes:
        raise DataError(
            f"{data.description} has labels up to {n_labels - 1} but the model has {model.num_classes} classes; "
            "the class folders must match the model's classes"
        )
    log(
        f"model {model.spec} on {device} ({model.num_classes} classes); "
        f"data: {data.description}, {len(data.labels)} images"
    )
    return model, data
