"""Sweep-level user errors (one line, exit 2) and the 'did you mean' helper."""

from __future__ import annotations

import difflib
from typing import Iterable

from famix_core.errors import FamixError

__all__ = ["SweepError", "suggest"]


class SweepError(FamixError, ValueError):
    """A mistake in a sweep file or on the command line: one line naming the file, dotted path and expectation."""


def suggest(word: str, choices: Iterable[str]) -> str:
    """`` (did you mean X?)`` for the closest valid choice, or ``""`` when nothing is close."""
    match = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f" (did you mean {match[0]}?)" if match else ""
