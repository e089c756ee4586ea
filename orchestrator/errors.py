"""Sweep-level errors, one line each: user mistakes (exit 2) and a backend lost mid-sweep (exit 1)."""

from __future__ import annotations

from famix_core.errors import ConfigError, FamixError, InputErrors
from famix_core.errors import raise_all as _raise_all

__all__ = ["SweepError", "BackendLost", "InputErrors", "raise_all"]


class SweepError(ConfigError):
    """A mistake in a sweep file or on the command line: one line naming the file, dotted path and expectation."""


class BackendLost(FamixError):
    """The backend itself went away mid-sweep (a Ray cluster whose head stopped answering): one line
    saying so, exit 1. The driver adds what is kept and how to go on."""

    exit_code = 1


def raise_all(errors: list[FamixError]) -> None:
    """:func:`famix_core.errors.raise_all` for the sweep's inputs: several problems are one
    :class:`~famix_core.errors.InputErrors` saying nothing was run."""
    _raise_all(errors, "the sweep's inputs (nothing was run)")
