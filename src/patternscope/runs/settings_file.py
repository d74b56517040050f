"""A run's settings as a file: ``config.toml`` holds every option of the run by its long command-line name,
resolved (defaults included), so ``patternscope --config RUN/config.toml --out NEW`` runs it again. Written by
the run lifecycle (:mod:`~patternscope.runs.lifecycle`) at the end of a run started from the command line or
from :func:`patternscope.run`."""

from __future__ import annotations

import json
import math
import typing
from dataclasses import fields
from pathlib import Path
from typing import Any

from .._version import __version__
from ..core.atomic import write_atomic
from ..core.configs import field_default, flag_of

CONFIG_FILE = "config.toml"
# options that steer this invocation rather than describe the run: never written, never read from a file
NOT_SAVED = {"help", "config", "resume", "overwrite", "quiet", "json", "no_report"}


def options_settings(options: Any) -> dict[str, Any]:
    """Every command-line option of ``options`` (a command's options dataclass) by its long name, in its
    command-line form (a flag's ``text``), as the command line resolves them: on/off flags true when they differ
    from their default, unset (None) options and positional arguments left out."""
    hints = typing.get_type_hints(type(options))
    out: dict[str, Any] = {}
    for f in fields(options):
        flag = flag_of(f)
        if flag is None or flag.positional or (flag.dest or f.name) in NOT_SAVED:
            continue
        for alias in flag.flags_before:  # e.g. downstream's --backbone, written to another field
            given = getattr(options, str(alias.dest), None)
            if alias.name is not None and given is not None:
                out[alias.name[2:]] = given
        value = getattr(options, f.name)
        if value is None:
            continue
        name = (flag.name or "--" + f.name.replace("_", "-"))[2:]
        if hints[f.name] is bool:
            out[name] = value != field_default(f)
            continue
        out[name] = flag.text(value) if flag.text is not None else value
    return out


def write_settings_file(out: str | Path, command: str, settings: dict[str, Any]) -> Path:
    """Write ``config.toml`` into the run folder ``out``: ``command`` and its resolved ``settings``."""
    values = {"command": command, **settings}
    text = to_toml(values, f"patternscope {__version__}: rerun with  patternscope --config THIS_FILE --out NEW_DIR")
    path = Path(out) / CONFIG_FILE
    write_atomic(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))
    return path


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return repr(value)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    return json.dumps(str(value), ensure_ascii=False)  # a TOML basic string uses the same escapes


def to_toml(values: dict[str, Any], header: str = "") -> str:
    """Flat ``key = value`` TOML (strings, numbers, booleans, lists of those)."""
    lines = [f"# {line}" for line in header.splitlines()]
    for key, value in values.items():
        name = key if key.replace("-", "").replace("_", "").isalnum() else json.dumps(key)
        lines.append(f"{name} = {_toml_value(value)}")
    return "\n".join(lines) + "\n"
