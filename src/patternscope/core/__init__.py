"""The engine: no run folders, no command line. Pixel space is [0,1]; eps is L∞ in it unless said otherwise.

- :mod:`~patternscope.core.classifier`: :class:`Classifier`, the wrapper every search runs on
  (normalisation inside, eval mode, frozen, pass counting, layer taps);
- :mod:`~patternscope.core.blocks`: a network's blocks, and which one is the last before the head;
- :mod:`~patternscope.core.models`: :func:`load_model` from a spec string, :func:`list_models`;
- :mod:`~patternscope.core.patterns`: :class:`Pattern`, an additive δ with its budget, saved as safetensors;
- :mod:`~patternscope.core.params`: the parametrisations a search optimises (additive, rescaling,
  mask-on-canvas, tanh);
- :mod:`~patternscope.core.objectives`: what a loss is (composable :class:`Objective` s) and the class-wise
  loss; each method's own loss lives in its module in :mod:`patternscope.methods`;
- :mod:`~patternscope.core.configs`: settings dataclasses whose fields carry their command-line flag;
- :mod:`~patternscope.core.search`: the one search loop, its checkpoints and exact resume;
- :mod:`~patternscope.core.train`: the one training loop (the kit, downstream heads, hardening);
- :mod:`~patternscope.core.distributed`: ``torchrun`` process groups, sharding, all-reduce;
- :mod:`~patternscope.core.predict`: the one batched prediction;
- :mod:`~patternscope.core.metrics`: fooling ratio, dominance, agreement, accuracy, random baselines;
- :mod:`~patternscope.core.atomic`: atomic files (allocator tuning is :mod:`patternscope.runtime`, below every floor).

The engine persists its own objects (patterns, search checkpoints), always atomically, but never writes a
run folder: that is :mod:`patternscope.runs`.
"""

from .classifier import Classifier
from .metrics import Evaluation, evaluate_pattern
from .models import list_models, load_model
from .patterns import Pattern, parse_eps
from .predict import Predictions, predict
from .search import SearchConfig, SearchResult, run_search

__all__ = [
    "Classifier",
    "Evaluation",
    "Pattern",
    "Predictions",
    "SearchConfig",
    "SearchResult",
    "evaluate_pattern",
    "list_models",
    "load_model",
    "parse_eps",
    "predict",
    "run_search",
]
