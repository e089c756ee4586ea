"""Interrupts of a long command (torch-free): Ctrl-C, SIGTERM, and a closed terminal.

A long command (a sweep's driver, ``famix train``, ``famix pretrain-clip``) keeps what it did when
interrupted: the training checkpoints the iteration it is in and stops, and the same command resumes
there. When the terminal closes (the window, the ssh connection), the kernel sends SIGHUP to the
command's process group, and every later write to that terminal fails with EIO: the hangup is an
interrupt too, once :func:`hangup_handler` has moved the output off the terminal that is gone, so
that the cleanup cannot fail halfway on a notice it prints. Under ``nohup`` it stays ignored.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
from contextlib import contextmanager
from typing import Any, Callable, Iterator

__all__ = [
    "InterruptWhenReaderGone",
    "counting",
    "hangup_handler",
    "handling_interrupts",
    "interrupt_when_reader_gone",
    "interrupts_seen",
    "stop_on_signals",
]

_SEEN = [0]  # interrupts (SIGINT, SIGTERM, SIGHUP) that reached a handler of this module's making


def interrupts_seen() -> int:
    """How many interrupts reached a handler made by :func:`counting` in this process so far."""
    return _SEEN[0]


def counting(handler: Callable[[int, Any], None]) -> Callable[[int, Any], None]:
    """``handler``, counting each signal it gets first (:func:`interrupts_seen`): an output whose reader
    went away then knows whether an interrupt is already under way (:class:`InterruptWhenReaderGone`)."""

    def counted(signum: int, frame: Any) -> None:
        _SEEN[0] += 1
        handler(signum, frame)

    return counted


def _to_devnull(fds: list[int]) -> None:
    """Point the descriptors ``fds`` at ``/dev/null``: output whose reader is gone (a closed terminal,
    a pipe nobody reads) is dropped instead of failing every write."""
    null = os.open(os.devnull, os.O_WRONLY)
    try:
        for fd in fds:
            os.dup2(null, fd)
    finally:
        os.close(null)


def _same_file(fd: int, st: os.stat_result) -> bool:
    try:
        here = os.fstat(fd)
    except OSError:
        return False
    return (here.st_dev, here.st_ino) == (st.st_dev, st.st_ino)


def hangup_handler(then: Callable[[int, Any], None] | None = None) -> Callable[[int, Any], None]:
    """A SIGHUP handler (the terminal was closed, the ssh connection dropped): the standard output
    and error that were a terminal when this was made now write to ``/dev/null``, then ``then``
    (the process's interrupt handler; None: nothing more) runs.

    After a hangup every write to the terminal fails with EIO: a notice printed while a training
    checkpoints, or the interrupt line, would raise in the middle of the cleanup. Output that goes
    to a file or a pipe is left alone. Whether a descriptor is a terminal is asked now, since a
    terminal that has hung up no longer answers.
    """
    ttys = [fd for fd in (1, 2) if os.isatty(fd)]

    def handler(signum: int, frame: Any) -> None:
        if ttys:
            _to_devnull(ttys)
            ttys.clear()
        if then is not None:
            then(signum, frame)

    return handler


class InterruptWhenReaderGone:
    """A text stream (a command's standard output) whose reader going away is an interrupt, as a
    closed terminal is: ``famix sweep run … | head``, or a pager quit early.

    Python ignores SIGPIPE, so a write to a pipe nobody reads raises ``BrokenPipeError`` wherever the
    command happens to print: a sweep's driver died in the middle of a progress line, its stages
    killed without a checkpoint and its MLflow runs left RUNNING. Here the first such write moves
    the descriptors that were that pipe (standard output, and standard error with ``2>&1``) to
    ``/dev/null`` and sends the process SIGINT, so the command's own interrupt handling runs (a
    training checkpoints, the runs end, the resume command goes to whatever output is left). Where
    an interrupt already reached the command since the stream was made (Ctrl-C under ``| tee``
    stops ``tee`` too), the output moves and nothing more is sent: a second interrupt would stop
    a training before its checkpoint. Everything else is the wrapped stream's.
    """

    def __init__(self, stream: Any):
        self._stream = stream
        self._gone = False
        self._seen = interrupts_seen()

    def write(self, text: str) -> int:
        try:
            return self._stream.write(text)
        except BrokenPipeError:
            self._reader_gone()
            return len(text)

    def flush(self) -> None:
        try:
            self._stream.flush()
        except BrokenPipeError:
            self._reader_gone()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)

    def _reader_gone(self) -> None:
        if self._gone:
            return
        self._gone = True
        gone = os.fstat(self._stream.fileno())
        _to_devnull([fd for fd in (1, 2) if _same_file(fd, gone)])
        if interrupts_seen() == self._seen:  # no interrupt under way: this is the first
            os.kill(os.getpid(), signal.SIGINT)


@contextmanager
def interrupt_when_reader_gone() -> Iterator[None]:
    """For the block, ``sys.stdout`` and ``sys.stderr`` are :class:`InterruptWhenReaderGone` streams (a
    rich Console made without a file writes to the current ``sys.stdout``); put back after."""
    saved = sys.stdout, sys.stderr
    sys.stdout, sys.stderr = InterruptWhenReaderGone(sys.stdout), InterruptWhenReaderGone(sys.stderr)
    try:
        yield
    finally:
        sys.stdout, sys.stderr = saved


@contextmanager
def handling_interrupts(handler: Callable[[int, Any], None]) -> Iterator[None]:
    """For the block, in the main thread: Ctrl-C, SIGTERM and a hangup go to ``handler`` (a hangup once
    :func:`hangup_handler` has moved the output off the terminal; an ignored one, under ``nohup``,
    stays ignored). The handlers there before are put back after. Elsewhere (a thread, where Python
    sets no handler) nothing changes."""
    if threading.current_thread() is not threading.main_thread():  # signals are the main thread's (tests call main())
        yield
        return
    handler = counting(handler)
    old = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    if signal.getsignal(signal.SIGHUP) is not signal.SIG_IGN:
        old[signal.SIGHUP] = signal.signal(signal.SIGHUP, hangup_handler(handler))
    try:
        yield
    finally:
        for sig, was in old.items():
            signal.signal(sig, was)


@contextmanager
def stop_on_signals(stop: threading.Event, notice: str | Callable[[], str]) -> Iterator[None]:
    """Around a training: Ctrl-C, SIGTERM or a hangup (:func:`handling_interrupts`) sets ``stop`` (the
    training checkpoints the iteration it is in and raises :class:`~famix_core.errors.TrainingInterrupted`)
    and prints ``notice`` (a callable: asked then, for a command whose stages answer a stop differently);
    a second one stops at once (``KeyboardInterrupt``). A forked child (a data loader worker: a
    terminal's Ctrl-C reaches it too) ignores the signal.
    """
    owner = os.getpid()

    def handler(signum: int, frame: Any) -> None:
        if os.getpid() != owner:  # a forked child (a data loader worker) that inherited it: its parent decides
            return
        if stop.is_set():
            raise KeyboardInterrupt
        stop.set()
        print(notice() if callable(notice) else notice, file=sys.stderr, flush=True)

    with handling_interrupts(handler):
        yield
