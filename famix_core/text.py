"""Words for counts in the lines people read: ``count(1, "trial")`` is "1 trial", ``count(2, "trial")`` "2 trials"."""

from __future__ import annotations


def count(n: float, noun: str, plural: str | None = None) -> str:
    """``n`` and ``noun``, the noun plural unless ``n`` is one (``plural`` where adding "s" is wrong)."""
    number = f"{n:g}" if isinstance(n, float) else str(n)  # 2.0 CPUs reads "2", 1000000 trials stays digits
    return f"{number} {noun if n == 1 else plural or noun + 's'}"
