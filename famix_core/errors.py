"""User-facing errors: the CLI prints their message as one line and exits 2, without a traceback."""

from __future__ import annotations

import difflib
from typing import Iterable


class FamixError(Exception):
    """A mistake the user can fix (bad config, missing data or weights, bad input file).

    The message must be one line naming the file / field / path and what was expected.
    """

    exit_code = 2


class InputErrors(FamixError):
    """Several independent problems found in one pass (a plan's data and weights, ``evaluate``'s domains):
    one line each, so that a user setting up real datasets fixes them all before the next try.

    Args:
        errors: the problems.
        what: what they are problems with, and what did not happen (``the sweep's inputs (nothing was run)``).
    """

    def __init__(self, errors: list[FamixError], what: str):
        self.errors = errors
        lines = "\n".join(f"  {e}" for e in errors)
        super().__init__(f"{len(errors)} problems with {what}:\n{lines}")


def raise_all(errors: list[FamixError], what: str) -> None:
    """Raise nothing, the one error as it is, or several (their messages deduplicated) as :class:`InputErrors`."""
    unique = list({str(e): e for e in errors}.values())
    if len(unique) == 1:
        raise unique[0]
    if unique:
        raise InputErrors(unique, what)


class ConfigError(FamixError, ValueError):
    """A user error in a config or an override: the message is one line, naming file/field and what was expected."""


def closest(word: str, choices: Iterable[str]) -> list[str]:
    """The valid choices ``word`` may have meant: the up to three it begins (``train.lr``:
    ``train.lr_backbone``, ``train.lr_decoder``, where the closest spelling would be ``train.min_lr``),
    else the closest spelling, else none."""
    choices = list(choices)
    same = [c for c in choices if c.casefold() == word.casefold() and c != word]
    if same:  # rn50: RN50, MixStyle: mixstyle
        return same[:1]
    starting = sorted(c for c in choices if c.startswith(word) and c != word) if word else []
    if 1 <= len(starting) <= 3:
        return starting
    return difflib.get_close_matches(word, choices, n=1, cutoff=0.6)


def suggest(word: str, choices: Iterable[str]) -> str:
    """`` (did you mean X?)`` (or ``X or Y``) for :func:`closest`, or ``""`` when nothing is close."""
    match = closest(word, choices)
    return f" (did you mean {' or '.join(match)}?)" if match else ""


def unknown(what: str, value: str, known: Iterable[str]) -> str:
    """``unknown backbone 'rn50' (known: RN50, RN101, famix-tiny) (did you mean RN50?)``."""
    known = list(known)
    return f"unknown {what} {value!r} (known: {', '.join(known)}){suggest(value, known)}"


class FamixWarning(UserWarning):
    """A notice for the user (e.g. a CPU fallback); the CLI prints its message as one line, without a source line."""


class FamixDeprecation(FamixWarning, FutureWarning):
    """A replaced config key read the old way (e.g. ``train.amp``): a one-line notice, and a FutureWarning."""


class DataError(FamixError):
    """A dataset root, folder or file is missing or unreadable."""


class WeightsError(FamixError):
    """Pretrained weights or a checkpoint are missing or do not match the architecture."""


class TrainingDiverged(FamixError):
    """The loss became NaN/inf; the message names the iteration."""

    exit_code = 1


class TrainingInterrupted(BaseException):
    """Training stopped on request (preemption) after checkpointing at an iteration boundary.

    A ``BaseException``, like ``KeyboardInterrupt``: it is not a failure, and a generic
    ``except Exception`` (a retry loop, a stage runner) must let it through to whoever asked for the stop.
    """

    def __init__(self, iteration: int, checkpoint: str | None):
        super().__init__(f"training stopped on request at iteration {iteration} (checkpoint: {checkpoint})")
        self.iteration = iteration
        self.checkpoint = checkpoint


class Interrupted(KeyboardInterrupt):
    """A command stopped by Ctrl-C or SIGTERM, with what the user can do next (the CLI prints
    ``famix: interrupted; <message>``). A ``KeyboardInterrupt``, so every handler of one still runs."""
