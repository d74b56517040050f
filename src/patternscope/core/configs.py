"""Settings dataclasses: each setting declared once, with its command-line flag, and copied by name.

A settings field made with :func:`option` carries a :class:`Flag` in its metadata: the help text
(``{default}`` and ``{default:g}`` stand for the default), the metavar, choices, and how a command-line
string becomes the field's value. A method's or an analysis's settings (``DominantConfig``, ``ScanConfig``,
...) declare theirs so; a command's options take each from there with :func:`from_config` (same default,
help and choices) and :mod:`patternscope.cli` derives every flag from the options' fields, in field order.
A field without a flag (plain ``dataclasses.field`` or a bare default) is an API-only setting.

:func:`config_from` copies the fields two settings dataclasses share by name, so no mapping is written field
by field.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import MISSING, dataclass, field, fields, is_dataclass, replace
from typing import Any, TypeVar

T = TypeVar("T")

KEEP: Any = object()  # Flag.cli_default: keep the field's own default on the command line


@dataclass(frozen=True)
class Flag:
    """How one options field appears on the command line.

    Attributes:
        help: the help text; ``{default}`` / ``{default:g}`` are replaced by the default.
        name: the long option (default ``--field-name``); ``positional`` makes it a positional argument.
        dest: the argparse destination when it differs from the field name (kept for config files).
        metavar, choices, required: as in argparse.
        repeat: the flag may be given several times (a list).
        many: the flag takes one or more values (``nargs="+"``).
        parse: turns the command-line value into the field's value (e.g. ``"a,b"`` -> ``["a", "b"]``).
        text: turns the field's default into its command-line form (e.g. ``",".join``).
        cli_default: the argparse default when it is not the field's (e.g. None for a repeatable flag).
        exclusive: a name shared by flags of which at most one may be given (``exclusive_required``:
            exactly one).
        flags_before: further flags (aliases writing to another ``dest``) placed just before this one.
    """

    help: str
    name: str | None = None
    dest: str | None = None
    metavar: str | None = None
    choices: tuple[Any, ...] | None = None
    required: bool = False
    positional: bool = False
    repeat: bool = False
    many: bool = False
    parse: Callable[[Any], Any] | None = None
    text: Callable[[Any], Any] | None = None
    cli_default: Any = KEEP
    exclusive: str | None = None
    exclusive_required: bool = False
    flags_before: tuple[Flag, ...] = ()


def option(default: Any = MISSING, *, factory: Callable[[], Any] | None = None, help: str, **flag: Any) -> Any:
    """A dataclass field with a command-line flag: ``option(300, help="search steps (default {default})")``.

    ``factory`` makes mutable defaults (lists); the remaining keywords are :class:`Flag`'s.
    """
    meta = {"flag": Flag(help=help, **flag)}
    if factory is not None:
        return field(default_factory=factory, metadata=meta)
    return field(default=default, metadata=meta)


def flag_of(f: Any) -> Flag | None:
    """The :class:`Flag` of a dataclass field, or None for an API-only setting."""
    return f.metadata.get("flag")


def field_default(f: Any) -> Any:
    """A dataclass field's default value (made fresh for mutable defaults)."""
    if f.default is not MISSING:
        return f.default
    if f.default_factory is not MISSING:
        return f.default_factory()
    return None


def from_config(config: type[Any], name: str, **flag: Any) -> Any:
    """A command's options field that is the setting ``name`` of ``config`` (a settings dataclass): the same
    default and the same :class:`Flag` (help, choices, ...), with ``flag`` keywords replacing parts of it."""
    found = {f.name: f for f in fields(config)}.get(name)
    meta = flag_of(found) if found is not None else None
    if found is None or meta is None:
        raise TypeError(f"{config.__name__} has no setting {name!r} with a command-line flag")
    metadata = {"flag": replace(meta, **flag) if flag else meta}
    if found.default_factory is not MISSING:
        return field(default_factory=found.default_factory, metadata=metadata)
    return field(default=found.default, metadata=metadata)


def config_from(config: type[T], source: Any, **given: Any) -> T:
    """A ``config`` instance from the fields of ``source`` (a dataclass) that ``config`` also has, with
    ``given`` values taking precedence; ``config``'s own defaults fill the rest."""
    if not is_dataclass(source):
        raise TypeError(f"config_from needs a dataclass instance, got {type(source).__name__}")
    shared = {f.name: getattr(source, f.name) for f in fields(config) if hasattr(source, f.name)}  # type: ignore[arg-type]
    return config(**{**shared, **given})


def comma_list(text: str | Sequence[str]) -> list[str]:
    """``"a, b,,c"`` as ``["a", "b", "c"]`` (a list is returned stripped)."""
    parts = text.split(",") if isinstance(text, str) else list(text)
    return [p.strip() for p in parts if p.strip()]


def comma_text(values: Sequence[Any]) -> str:
    return ",".join(str(v) for v in values)
