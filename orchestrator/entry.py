"""The ``famix`` console script.

:func:`orchestrator.__main__.main` turns a Ctrl-C during a command into one line; this wrapper
does the same for a Ctrl-C that lands while Python still imports the commands or parses the
line (the first tenth of a second or so), which used to print a KeyboardInterrupt traceback.

Exit statuses: 0 done; 1 a stage failed (the sweep ran the rest); 2 a mistake of the input, one
line; 3 a bug of famix (the traceback, then one line saying so: Python's own 1 read as a failed
stage); 130 interrupted.
"""

from __future__ import annotations

import sys

INTERNAL_ERROR = 3
"""Exit status of an unexpected exception (Python's own is 1, which ``famix sweep run`` gives a failed stage)."""


def run() -> None:
    """Run ``famix`` with ``sys.argv`` and exit with its status (130 after an interrupt)."""
    try:
        from orchestrator.__main__ import main

        code = main()
    except KeyboardInterrupt:
        print("famix: interrupted", file=sys.stderr)
        code = 130
    except Exception as e:  # noqa: BLE001 - what no check foresaw: the traceback for a report, and its own status
        import traceback

        traceback.print_exc()
        print(f"famix: internal error ({type(e).__name__}): a bug of famix, not of your input; the traceback above"
              " says where (exit status 3)", file=sys.stderr)  # fmt: skip
        code = INTERNAL_ERROR
    sys.exit(code)
