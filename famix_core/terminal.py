"""The terminal a command runs in, and what its hangup does (torch-free).

When the terminal closes (the window, the ssh connection), the kernel sends SIGHUP to the command's
process group, and every later write to that terminal fails with EIO. A long command (a sweep's
driver, a pretraining) treats the hangup as an interrupt that keeps what it did, as Ctrl-C does;
:func:`hangup_handler` first moves its output off the terminal that is gone, so that the cleanup
cannot fail halfway on a notice it prints.
"""

from __future__ import annotations

import os
from typing import Any, Callable

__all__ = ["hangup_handler"]


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
            null = os.open(os.devnull, os.O_WRONLY)
            for fd in ttys:
                os.dup2(null, fd)
            os.close(null)
            ttys.clear()
        if then is not None:
            then(signum, frame)

    return handler
