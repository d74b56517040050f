"""The package's public names are all visible to completion and help(), the lazily loaded ones too."""

from __future__ import annotations

import patternscope


def test_dir_lists_every_public_name():
    """dir(patternscope) holds __all__, including the names loaded lazily on first use (issue 32)."""
    names = set(dir(patternscope))
    assert set(patternscope.__all__) <= names
    for lazy in ("compare_patterns", "write_report", "CompareConfig", "Comparison", "MethodFailed"):
        assert lazy in names and getattr(patternscope, lazy) is not None
