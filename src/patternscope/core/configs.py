"""Building one settings dataclass from another: the fields they share by name, plus given values.

Command options carry a method's or an analysis's settings as fields of the same names; this is the one
place that copies them across, so no mapping is written field by field.
"""

from __future__ import annotations

from dataclasses import fields, is_dataclass
from typing import Any, TypeVar

T = TypeVar("T")


def config_from(config: type[T], source: Any, **given: Any) -> T:
    """A ``config`` instance from the fields of ``source`` (a dataclass) that ``config`` also has, with
    ``given`` values taking precedence; ``config``'s own defaults fill the rest."""
    if not is_dataclass(source):
        raise TypeError(f"config_from needs a dataclass instance, got {type(source).__name__}")
    shared = {f.name: getattr(source, f.name) for f in fields(config) if hasattr(source, f.name)}  # type: ignore[arg-type]
    return config(**{**shared, **given})
