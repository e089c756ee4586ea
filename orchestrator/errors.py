"""Sweep-level errors, one line each: user mistakes (exit 2) and a backend lost mid-sweep (exit 1)."""

from __future__ import annotations

from famix_core.errors import ConfigError, FamixError

__all__ = ["SweepError", "BackendLost", "InputErrors", "raise_all"]


class SweepError(ConfigError):
    """A mistake in a sweep file or on the command line: one line naming the file, dotted path and expectation."""


class BackendLost(FamixError):
    """The backend itself went away mid-sweep (a Ray cluster whose head stopped answering): one line
    saying so, exit 1. The driver adds what is kept and how to go on."""

    exit_code = 1


class InputErrors(FamixError):
    """Several independent problems found in one pass (the plan's data and weights checks): one line
    each, so that a user setting up real datasets fixes them all before the next try."""

    def __init__(self, errors: list[FamixError]):
        self.errors = errors
        lines = "\n".join(f"  {e}" for e in errors)
        super().__init__(f"{len(errors)} problems with the sweep's inputs (nothing was run):\n{lines}")


def raise_all(errors: list[FamixError]) -> None:
    """Raise nothing, the one error as it is, or several (their messages deduplicated) as :class:`InputErrors`."""
    unique = list({str(e): e for e in errors}.values())
    if len(unique) == 1:
        raise unique[0]
    if unique:
        raise InputErrors(unique)
