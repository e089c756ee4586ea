"""The ``famix`` console script.

:func:`orchestrator.__main__.main` turns a Ctrl-C during a command into one line; this wrapper
does the same for a Ctrl-C that lands while Python still imports the commands or parses the
line (the first tenth of a second or so), which used to print a KeyboardInterrupt traceback.
"""

from __future__ import annotations

import sys


def run() -> None:
    """Run ``famix`` with ``sys.argv`` and exit with its status (130 after an interrupt)."""
    try:
        from orchestrator.__main__ import main

        code = main()
    except KeyboardInterrupt:
        print("famix: interrupted", file=sys.stderr)
        code = 130
    sys.exit(code)
