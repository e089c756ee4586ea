"""Sweep-level user errors (one line, exit 2)."""

from __future__ import annotations

from famix_core.errors import ConfigError

__all__ = ["SweepError"]


class SweepError(ConfigError):
    """A mistake in a sweep file or on the command line: one line naming the file, dotted path and expectation."""
