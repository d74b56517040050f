"""patternscope: find the input-space patterns that dominate an image classifier's decisions.

Pixel space is [0,1] everywhere; budgets (eps) are L∞ in that space unless said otherwise.
"""

from ._version import __version__
from .classwise import ClasswiseConfig, ClasswisePattern, find_classwise_pattern, predictive_power
from .data import BatchStream, ImageSet, bundled_photos, image_folder, tensor_set
from .datasets import load_digits, load_fashion_mnist
from .errors import PatternscopeError
from .methods import METHODS, DominantConfig, find_dominant_pattern, find_pattern
from .metrics import Evaluation, evaluate_pattern
from .models import Classifier, list_models, load_model
from .neural_cleanse import NeuralCleanseConfig, neural_cleanse
from .patterns import Pattern, parse_eps
from .scan import ScanConfig, ScanReport, scan_model

__all__ = [
    "METHODS",
    "BatchStream",
    "Classifier",
    "ClasswiseConfig",
    "ClasswisePattern",
    "DominantConfig",
    "Evaluation",
    "ImageSet",
    "NeuralCleanseConfig",
    "Pattern",
    "PatternscopeError",
    "ScanConfig",
    "ScanReport",
    "__version__",
    "bundled_photos",
    "evaluate_pattern",
    "find_classwise_pattern",
    "find_dominant_pattern",
    "find_pattern",
    "image_folder",
    "list_models",
    "load_digits",
    "load_fashion_mnist",
    "load_model",
    "neural_cleanse",
    "parse_eps",
    "predictive_power",
    "scan_model",
    "tensor_set",
    "write_report",
]


def __getattr__(name: str) -> object:  # report drawing pulls in matplotlib: imported on first use
    if name == "write_report":
        from .report import write_report

        return write_report
    raise AttributeError(f"module 'patternscope' has no attribute {name!r}")
