"""Command-line entry points: the project's own errors in one line and exit status 2.

The project raises ValueError naming the offending file, key or value, and a failed read or write is an
OSError naming its file; at the command line either is one line on stderr, not a traceback. Set
FACEMOGLE_TRACEBACK=1 to see the traceback. Any other exception is a bug and keeps its traceback.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable

TRACEBACK_VARIABLE = "FACEMOGLE_TRACEBACK"


def run_cli(main: Callable[[], object]) -> None:
    try:
        main()
    except (ValueError, OSError) as e:
        if os.environ.get(TRACEBACK_VARIABLE, "") not in ("", "0"):
            raise
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
