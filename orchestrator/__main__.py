"""The ``famix`` command (``python -m orchestrator``): one entry point, subcommands registered by each package.

The orchestrator is the top layer (docs/ARCHITECTURE.md, "Layers"), so this is where the engine's,
the sweeps' and the reports' commands meet. Imports stay lazy so ``famix --help`` stays fast: each
package exposes ``register(subparsers)`` in a module that imports nothing heavy at top level, and
its command functions import torch / ray / mlflow when they run.

User errors (:class:`famix_core.errors.FamixError`) print one line and exit 2; notices
(:class:`famix_core.errors.FamixWarning`, e.g. a CPU fallback) print one line and go on.
"""

from __future__ import annotations

import argparse
import re
import sys
import warnings
from contextlib import contextmanager
from typing import Any, Callable, Iterator

from famix_core import cli_engine, cli_pretrain
from famix_core.data import cli as data_cli
from orchestrator import cli as sweep_cli
from reports import cli as report_cli


class OneLineErrors(argparse.ArgumentParser):
    """A parser whose command-line mistakes are one line, as every other user error is: the command,
    what was wrong, and where the usage is (argparse prints its whole usage block first)."""

    commands: dict[str, str] = {}
    """Each action word of the whole command tree -> the command it names (``report`` -> ``famix report``),
    filled by :func:`build_parser`: an action given to the wrong command says where it is."""

    def error(self, message: str):  # type: ignore[override]
        chosen = re.search(r"invalid choice: '([^']*)'", message)
        elsewhere = self.commands.get(chosen.group(1)) if chosen else None
        if elsewhere:  # `famix sweep report`: the report is `famix report`
            message += f" (did you mean '{elsewhere}'?)"
        self.exit(2, f"{self.prog}: error: {message} (see '{self.prog} --help')\n")

    def parse_known_args(self, args=None, namespace=None):  # type: ignore[override]
        self._misplaced_options(sys.argv[1:] if args is None else list(args))
        return super().parse_known_args(args, namespace)

    def _misplaced_options(self, args: list[str]) -> None:
        """An option of the action given before it (`famix sweep --max-parallel 2 run …`, `famix --config
        c.yaml train …`): argparse read its value as the action (``invalid choice: '2'``) or passed the
        option up. Refused by the action's parser, naming it; an abbreviation counts where it is one
        option's. A word that is an option's value (`--run-dir plan`) is not taken for the action."""
        for at, word in enumerate(args):
            chosen = _subcommand(self, word)
            if chosen is None:
                continue
            before = _option_of(chosen, args[at - 1]) if at and args[at - 1].startswith("-") and "=" not in args[at - 1] else None
            if before is not None and before.nargs != 0 and _option_of(self, args[at - 1]) is None:
                continue  # the value of the action's own option, given before it
            path = [(chosen, word)]  # and the actions named after it (`data synth`)
            for later in args[at + 1 :]:
                if (sub := _subcommand(path[-1][0], later)) is not None:
                    path.append((sub, later))
            for option in (w.split("=")[0] for w in args[:at] if w.startswith("-")):
                owner = next(((p, w) for p, w in path if _option_of(p, option) is not None), None)
                if owner is not None and _option_of(self, option) is None:
                    owner[0].error(f"{option} was given before '{word}': options of '{owner[0].prog}' go after '{owner[1]}'")
            return


def _actions_of(parser: argparse.ArgumentParser) -> argparse._SubParsersAction | None:
    """The subcommands ``parser`` takes, if any."""
    return next((a for a in parser._actions if isinstance(a, argparse._SubParsersAction)), None)


def _subcommand(parser: argparse.ArgumentParser, word: str | None) -> argparse.ArgumentParser | None:
    action = _actions_of(parser)
    return action.choices.get(word) if action is not None else None


def _option_of(parser: argparse.ArgumentParser, word: str) -> argparse.Action | None:
    """The option ``word`` names in ``parser``: exactly, or as an abbreviation of one option only."""
    name = word.split("=")[0]
    if name in parser._option_string_actions:
        return parser._option_string_actions[name]
    longer = {a for o, a in parser._option_string_actions.items() if name.startswith("--") and o.startswith(name)}
    return longer.pop() if len(longer) == 1 else None


def _chosen_action(parser: argparse.ArgumentParser, ns: argparse.Namespace) -> argparse.ArgumentParser | None:
    """The subcommand's parser ``parser`` handed the rest of the line to, if any."""
    action = _actions_of(parser)
    return action.choices.get(getattr(ns, action.dest, None)) if action is not None else None


TYPOGRAPHIC_DASHES = "\u2010\u2011\u2012\u2013\u2014\u2015\u2212"
"""Hyphen, non-breaking hyphen, figure dash, en dash, em dash, horizontal bar, minus: what an editor makes of ``--``."""


class OverridesParser(OneLineErrors):
    """A subcommand's parser: ``key=value`` / ``+key=value`` / ``~key`` overrides anywhere on the line
    (also after options, as ``make sweep ARGS=…`` puts them), and its own name for an unknown option."""

    def add_argument(self, *args, **kwargs):  # type: ignore[override]
        if args == ("overrides",):
            kwargs.setdefault("default", [])  # optional: argparse calls a "*" positional without a default required
        return super().add_argument(*args, **kwargs)

    def parse_known_args(self, args=None, namespace=None):  # type: ignore[override]
        for a in sys.argv[1:] if args is None else args:  # `—profile paper`, pasted: read as an override, "expected key=value"
            if isinstance(a, str) and a and a[0] in TYPOGRAPHIC_DASHES:
                fixed = "--" + a.lstrip(TYPOGRAPHIC_DASHES + "-")
                self.error(f"{a}: begins with a typographic dash (pasted from a document?); an option begins with two hyphens: {fixed}")
        ns, extras = super().parse_known_args(args, namespace)
        for action in self._actions:  # `--out "$OUT"` with OUT unset wrote over the run's own report (the default)
            value = getattr(ns, action.dest, None)
            if action.option_strings and isinstance(value, str) and not value.strip() and value != action.default:
                default = f"; default: {action.default}" if action.default not in (None, "") else ""
                self.error(f"argument {action.option_strings[-1]}: expected a value, got an empty string (an unset shell variable?{default})")
        if hasattr(ns, "overrides"):
            # a word left over is an override, to be checked as one ("train.iterations" without "="
            # gets "expected key=value", wherever it stands), unless it is an unknown option's value
            kv, rest = [], []
            for i, a in enumerate(extras):
                after_option = i > 0 and extras[i - 1].startswith("-") and "=" not in extras[i - 1]
                (rest if a.startswith("-") or (after_option and "=" not in a) else kv).append(a)
            ns.overrides = list(ns.overrides or []) + kv
            extras = rest
        # a leftover is named by the command it was given to, not by famix: a subcommand's own leftovers
        # end there, so those a command of subcommands gets are its own (`famix sweep --bogus [plan …]`)
        if extras:
            from famix_core.errors import suggest

            chosen = _chosen_action(self, ns)  # an unknown option before the action: the action's are close
            options = [o for p in (self, chosen) if p is not None for o in p._option_string_actions if o.startswith("--")]
            hint = next((suggest(a.split("=")[0], options) for a in extras if a.startswith("--")), "")
            self.error(f"unrecognized arguments: {' '.join(extras)}{hint}")
        return ns, extras


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineErrors(
        prog="famix",
        description="FAMix engine and experiment-sweep orchestrator (Freeze, Augment, Mix).",
    )
    # Every subcommand (and, by argparse's default, every nested one) takes key=value overrides anywhere.
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=OverridesParser)
    cli_engine.register(sub)  # mine-styles, train, evaluate
    cli_pretrain.register(sub)  # pretrain-clip
    data_cli.register(sub)  # data synth | synth-captions | check | bench
    sweep_cli.register(sub)  # sweep plan | run | status | cancel
    report_cli.register(sub, sweep_info=sweep_cli.report_sweep_info)  # report
    OneLineErrors.commands = dict(_command_words(parser))
    return parser


def _command_words(parser: argparse.ArgumentParser) -> Iterator[tuple[str, str]]:
    """(action word, the command it names) for every subcommand under ``parser``, outermost first."""
    action = _actions_of(parser)
    if action is None:
        return
    for word, sub in action.choices.items():
        yield word, sub.prog
    for sub in action.choices.values():
        yield from _command_words(sub)


def passive_omp_threads() -> None:
    """Make idle OpenMP threads sleep instead of spinning (``OMP_WAIT_POLICY=PASSIVE``) unless the user chose.

    Read once, when torch's OpenMP runtime starts, so it is set before torch is imported; stage
    subprocesses and workers inherit it. On a machine with more busy threads than cores, spinning
    threads of a 2-thread torch wait for each other's time slices: a famix-tiny training step
    measured 10.5 s with spinning and 0.19 s passive (2 threads, load 13 on 2 cores).
    """
    import os

    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def _one_line_notices(show: Callable[..., None]) -> Callable[..., None]:
    """A ``warnings.showwarning`` that prints a :class:`FamixWarning` as ``famix: warning: <message>``
    (one line, no Python source line) and passes any other warning to ``show``."""
    from famix_core.errors import FamixWarning

    def showwarning(message, category, filename, lineno, file=None, line=None) -> None:
        if issubclass(category, FamixWarning):
            print(f"famix: warning: {message}", file=sys.stderr, flush=True)
        else:
            show(message, category, filename, lineno, file, line)

    return showwarning


@contextmanager
def _signals_interrupt() -> Iterator[None]:
    """SIGTERM (``kill``, a job scheduler's stop) and SIGHUP (the terminal closed, the ssh connection
    dropped) end the command as Ctrl-C does: with ``famix: interrupted`` and the cleanup of every
    ``KeyboardInterrupt`` handler (MLflow runs ended, half-written folders removed), not a silent
    exit 143 or 129. Only where nobody chose another handler (under ``nohup`` SIGHUP stays ignored);
    a sweep's driver installs its own around the stages (a training checkpoints first)."""
    import signal
    import threading

    from famix_core.interrupts import counting, hangup_handler

    if threading.current_thread() is not threading.main_thread():
        yield
        return

    @counting  # an output whose reader went away then sends no second one (famix_core.interrupts)
    def interrupt(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    # a hangup (the terminal closed) too, once the output is off the terminal that is gone; Ctrl-C
    # stays Python's KeyboardInterrupt, counted
    mine = {signal.SIGTERM: interrupt, signal.SIGHUP: hangup_handler(interrupt), signal.SIGINT: interrupt}
    default = {signal.SIGTERM: signal.SIG_DFL, signal.SIGHUP: signal.SIG_DFL, signal.SIGINT: signal.default_int_handler}
    mine = {sig: handler for sig, handler in mine.items() if signal.getsignal(sig) is default[sig]}
    for sig, handler in mine.items():
        signal.signal(sig, handler)
    try:
        yield
    finally:
        for sig in mine:
            signal.signal(sig, default[sig])


def main(argv: list[str] | None = None) -> int:
    passive_omp_threads()
    from famix_core.errors import FamixError

    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        with warnings.catch_warnings(), _signals_interrupt():  # both restored on return, for in-process callers (tests)
            warnings.showwarning = _one_line_notices(warnings.showwarning)
            rc = args.func(args)
    except FamixError as e:
        print(f"famix: error: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt as e:  # an Interrupted says what to do next
        print(f"famix: interrupted{'; ' + str(e) if str(e) else ''}", file=sys.stderr)
        return 130
    except OSError as e:
        import errno

        where = f"{e.filename}: " if e.filename else ""
        if e.errno == errno.ENAMETOOLONG:  # a sweep name, --run-dir or --out the filesystem cannot hold
            print(f"famix: error: {where}{e.strerror}; choose a shorter name or folder", file=sys.stderr)
            return 2
        if e.errno not in (errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOSPC, errno.EDQUOT):
            raise
        # a folder that cannot be written (read-only filesystem, immutable, full): the user's to fix
        print(f"famix: error: {where}cannot write ({e.strerror})", file=sys.stderr)
        return 2
    return int(rc or 0)


if __name__ == "__main__":  # `python -m orchestrator`: the console script's statuses (3 for a bug) and Ctrl-C
    from orchestrator.entry import run

    run()
