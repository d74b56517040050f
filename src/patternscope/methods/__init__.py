"""Method recipes: each names its parametrisation, objective, data and paper defaults, and runs on
the one search loop in :mod:`patternscope.search`."""

from .dominant import DominantConfig, find_dominant_pattern

__all__ = ["DominantConfig", "find_dominant_pattern"]
