"""patternscope: find the input-space patterns that dominate an image classifier's decisions.

Pixel space is [0,1] everywhere; budgets (eps) are L∞ in that space unless said otherwise.

One function per task, each taking ``(model, data, config, *, device, progress, ...)`` in that order::

    import patternscope as ps
    model = ps.load_model("efficientnet_lite0")
    outcome = ps.find_pattern(model, ["photos", "jigsaw"], ps.DominantConfig(steps=300))
    ev = ps.evaluate_pattern(model, outcome.pattern, ps.bundled_photos("photos-eval"))

Everything else stays importable from its subpackage: :mod:`patternscope.core` (the engine),
:mod:`~patternscope.data`, :mod:`~patternscope.methods`, :mod:`~patternscope.analyses`,
:mod:`~patternscope.runs` (run folders), :mod:`~patternscope.report`, :mod:`~patternscope.adapters` and
:mod:`~patternscope.kit` (the experiment kit, also reachable as ``ps.kit``).
"""

from typing import TYPE_CHECKING, Any

from . import kit
from ._version import __version__
from .analyses.additive import AdditiveConfig, find_additive_pattern, smallest_norm
from .analyses.canvas_sensitivity import CanvasSensitivity, canvas_sensitivity
from .analyses.classwise import (
    ClasswiseConfig,
    ClasswiseResult,
    PredictivePower,
    best_canvases,
    choose_canvas,
    find_classwise_pattern,
    other_classes,
    predictive_power,
)
from .analyses.comparison import CompareConfig, Comparison, MethodFailed
from .analyses.downstream import (
    DownstreamConfig,
    DownstreamResult,
    build_downstream,
    measure_downstream,
    train_downstream,
)
from .analyses.hardening import HardenConfig, HardenResult, harden_model
from .analyses.layers import LayerAnalysis, analyze_layers
from .analyses.neural_cleanse import NeuralCleanseConfig, NeuralCleanseReport, neural_cleanse
from .analyses.scan import ScanConfig, ScanReport, combine_references, scan_model, scan_reference
from .analyses.scan_decision import Decision, ScanCalibration, calibrate, decide_backdoor
from .analyses.settings import SettingsConfig, SettingsResult, run_settings
from .analyses.simplicity import gradient_x_input, pattern_simplicity
from .analyses.transfer import Transfer, transfer_matrix
from .core.classifier import Classifier
from .core.metrics import Evaluation, evaluate_pattern
from .core.models import list_models, load_model
from .core.patterns import ClasswisePattern, Pattern
from .data import (
    BatchStream,
    ImageBank,
    ImageSet,
    LabelledData,
    LabelledImages,
    bundled_photos,
    image_folder,
    load_digits,
    load_fashion_mnist,
    open_images,
    open_labelled,
    take,
    tensor_set,
)
from .errors import (
    DataError,
    HardeningError,
    ModelSpecError,
    PatternError,
    PatternscopeError,
    RunDirError,
    RunError,
    SearchDivergedError,
    WeightsError,
)
from .methods import (
    METHODS,
    DominantConfig,
    PaperDominantConfig,
    Recipe,
    SearchOutcome,
    UAPConfig,
    find_pattern,
    register_method,
)

if TYPE_CHECKING:  # run folders and reports draw figures: matplotlib is imported on first use
    from .runs.audit_schema import AUDIT_SCHEMA
    from .runs.compare_run import compare_patterns
    from .runs.lifecycle import audit_model, run
    from .runs.registry import write_report

_LAZY = {
    "compare_patterns": "compare_run",
    "run": "lifecycle",
    "audit_model": "lifecycle",
    "AUDIT_SCHEMA": "audit_schema",
    "write_report": "registry",
}

__all__ = [
    "AUDIT_SCHEMA",
    "METHODS",
    "AdditiveConfig",
    "BatchStream",
    "CanvasSensitivity",
    "Classifier",
    "ClasswiseConfig",
    "ClasswisePattern",
    "ClasswiseResult",
    "CompareConfig",
    "Comparison",
    "DataError",
    "Decision",
    "DominantConfig",
    "DownstreamConfig",
    "DownstreamResult",
    "Evaluation",
    "HardenConfig",
    "HardenResult",
    "HardeningError",
    "ImageBank",
    "ImageSet",
    "LabelledData",
    "LabelledImages",
    "LayerAnalysis",
    "MethodFailed",
    "ModelSpecError",
    "NeuralCleanseConfig",
    "NeuralCleanseReport",
    "PaperDominantConfig",
    "Pattern",
    "PatternError",
    "PatternscopeError",
    "PredictivePower",
    "Recipe",
    "RunDirError",
    "RunError",
    "ScanCalibration",
    "ScanConfig",
    "ScanReport",
    "SearchDivergedError",
    "SearchOutcome",
    "SettingsConfig",
    "SettingsResult",
    "Transfer",
    "UAPConfig",
    "WeightsError",
    "__version__",
    "analyze_layers",
    "audit_model",
    "best_canvases",
    "build_downstream",
    "bundled_photos",
    "calibrate",
    "canvas_sensitivity",
    "choose_canvas",
    "combine_references",
    "compare_patterns",
    "decide_backdoor",
    "evaluate_pattern",
    "find_additive_pattern",
    "find_classwise_pattern",
    "find_pattern",
    "gradient_x_input",
    "harden_model",
    "image_folder",
    "kit",
    "list_models",
    "load_digits",
    "load_fashion_mnist",
    "load_model",
    "measure_downstream",
    "neural_cleanse",
    "open_images",
    "open_labelled",
    "other_classes",
    "pattern_simplicity",
    "predictive_power",
    "register_method",
    "run",
    "run_settings",
    "scan_model",
    "scan_reference",
    "smallest_norm",
    "take",
    "tensor_set",
    "train_downstream",
    "transfer_matrix",
    "write_report",
]


def __dir__() -> list[str]:
    """Every public name, the lazily loaded ones too (PEP 562), so completion and help() show them."""
    return sorted({*globals(), *__all__})


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f".runs.{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module 'patternscope' has no attribute {name!r}")
