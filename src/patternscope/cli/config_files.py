"""Run options in a file: read a TOML or YAML config, write the fully resolved one into a run folder.

A config file holds any command-line option of one command under its long name (``batch-size = 32``;
``batch_size`` works too), plus ``command = "find dominant"`` so the file alone says what to run::

    command = "find dominant"
    model = "efficientnet_lite0"
    data = ["photos", "jigsaw"]
    eps = "10/255"
    steps = 500

Options given on the command line win over the file; a repeatable option given on the command line
(``--data``) replaces the file's list. Every run writes ``config.toml`` with all its options resolved,
so ``patternscope --config RUN/config.toml --out NEW`` runs it again.
"""

from __future__ import annotations

import argparse
import difflib
import reprlib
import tomllib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..errors import PatternscopeError
from ..runs.settings_file import CONFIG_FILE, NOT_SAVED, to_toml


class ConfigError(PatternscopeError):
    """A config file that cannot be read or names an option the command does not have."""


def load_config(path: str | Path) -> dict[str, Any]:
    """The options in a ``.toml`` or ``.yaml``/``.yml`` file, as a flat dict."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"config file {str(p)!r} does not exist")
    try:
        text = p.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"config file {str(p)!r} cannot be read ({exc})") from None
    if p.suffix.lower() in (".yaml", ".yml"):
        try:
            import yaml
        except ImportError:
            raise ConfigError("YAML config files need PyYAML: pip install pyyaml (or use TOML)") from None
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise ConfigError(f"config file {str(p)!r} is not valid YAML ({exc})") from None
        except RecursionError:
            raise ConfigError(f"config file {str(p)!r} nests lists or tables too deeply to read") from None
    elif p.suffix.lower() == ".toml":
        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"config file {str(p)!r} is not valid TOML ({exc})") from None
        except RecursionError:
            raise ConfigError(f"config file {str(p)!r} nests lists or tables too deeply to read") from None
    else:
        raise ConfigError(f"config file {str(p)!r}: use a .toml, .yaml or .yml file")
    if not isinstance(data, dict):
        raise ConfigError(f"config file {str(p)!r} must hold option = value pairs")
    return data


def _actions(parser: argparse.ArgumentParser) -> dict[str, argparse.Action]:
    """The parser's options by every name a config may use: long option without dashes, and dest."""
    out: dict[str, argparse.Action] = {}
    for action in parser._actions:
        if not action.option_strings or action.dest in NOT_SAVED:
            continue
        for opt in action.option_strings:
            if opt.startswith("--"):
                out[opt[2:]] = action
        out.setdefault(action.dest, action)
        out.setdefault(action.dest.replace("_", "-"), action)
    return out


def _long(action: argparse.Action) -> str:
    return next(o for o in action.option_strings if o.startswith("--"))


def _scalar(key: str, value: Any) -> str:
    if isinstance(value, bool) or value is None or isinstance(value, dict | list):
        # reprlib: a YAML file's aliases can make a list of 9**9 items (or one holding itself) in a few lines
        raise ConfigError(f"config option {key!r} must be a single value, got {reprlib.repr(value)}")
    return str(value)


def config_argv(
    parser: argparse.ArgumentParser, options: dict[str, Any], given: Sequence[str], source: str
) -> list[str]:
    """Command-line tokens for the file's ``options``, leaving out options present in ``given``."""
    known = _actions(parser)
    given_opts = {t.split("=", 1)[0] for t in given if t.startswith("--")}
    tokens: list[str] = []
    for key, value in options.items():
        action = known.get(key)
        if action is None:
            close = difflib.get_close_matches(key, list(known), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ConfigError(f"{source}: {key!r} is not an option of this command{hint}")
        if set(action.option_strings) & given_opts:
            continue
        flag = _long(action)
        if action.nargs == 0:  # store_true / store_false: the value says whether the flag is given
            if not isinstance(value, bool):
                raise ConfigError(f"{source}: {key!r} is an on/off option: write true or false")
            if value:
                tokens.append(flag)
        elif isinstance(action, argparse._AppendAction) or action.nargs in ("+", "*"):
            values = value if isinstance(value, list) else [value]
            if isinstance(action, argparse._AppendAction):
                for v in values:
                    tokens += [flag, _scalar(key, v)]
            else:
                tokens += [flag, *(_scalar(key, v) for v in values)]
        else:
            tokens += [flag, _scalar(key, value)]
    return tokens


def resolved_options(parser: argparse.ArgumentParser, args: argparse.Namespace) -> dict[str, Any]:
    """Every option of the run as parsed (defaults included), by long option name; None left out."""
    out: dict[str, Any] = {}
    for action in parser._actions:
        if not action.option_strings or action.dest in NOT_SAVED or action.dest == argparse.SUPPRESS:
            continue
        value = getattr(args, action.dest, None)
        if value is None:
            continue
        if action.nargs == 0 and isinstance(value, bool):  # an on/off flag: true when it was given
            value = value == action.const
        out[_long(action)[2:]] = value
    return out


__all__ = ["CONFIG_FILE", "ConfigError", "config_argv", "load_config", "resolved_options", "to_toml"]
