"""Exceptions for user mistakes: each names the problem and the fix, and the CLI prints it without a traceback."""

from __future__ import annotations


class PatternscopeError(Exception):
    """Base class: a problem the user can fix (bad spec, bad file, bad option)."""


class ModelSpecError(PatternscopeError):
    """The model spec string cannot be resolved to a classifier."""


class WeightsError(PatternscopeError):
    """A weights file is missing, unreadable, unsafe or does not fit the architecture."""


class DataError(PatternscopeError):
    """An image source is missing, empty, unreadable or does not fit the model."""


class PatternError(PatternscopeError):
    """A pattern budget or pattern file is invalid or does not fit the model."""


class RunDirError(PatternscopeError):
    """The output folder cannot be used (not writable, holds another run, ...)."""


class SearchDivergedError(PatternscopeError):
    """The search produced NaN or infinite values; the last good checkpoint is kept."""


class HardeningError(PatternscopeError):
    """Hardening could not keep clean accuracy within its bound, or its checkpoint does not fit the run."""


class LostProcessError(PatternscopeError):
    """Under ``torchrun``, another process of the group died or stopped answering; this one stops too (its
    last checkpoint is kept, so the same command with ``--resume`` continues)."""


class RunError(PatternscopeError):
    """A run that cannot start as asked: an unknown command or option, a command ``torchrun`` cannot run."""
