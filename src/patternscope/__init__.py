"""patternscope: find the input-space patterns that dominate an image classifier's decisions.

Pixel space is [0,1] everywhere; budgets (eps) are L∞ in that space unless said otherwise.
"""

from ._version import __version__
from .data import BatchStream, ImageSet, bundled_photos, image_folder, tensor_set
from .errors import PatternscopeError
from .methods import METHODS, DominantConfig, find_dominant_pattern, find_pattern
from .metrics import Evaluation, evaluate_pattern
from .models import Classifier, list_models, load_model
from .patterns import Pattern, parse_eps

__all__ = [
    "METHODS",
    "BatchStream",
    "Classifier",
    "DominantConfig",
    "Evaluation",
    "ImageSet",
    "Pattern",
    "PatternscopeError",
    "__version__",
    "bundled_photos",
    "evaluate_pattern",
    "find_dominant_pattern",
    "find_pattern",
    "image_folder",
    "list_models",
    "load_model",
    "parse_eps",
    "tensor_set",
]
