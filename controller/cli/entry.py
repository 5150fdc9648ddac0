"""The console-script entry point, kept tiny: the heavy imports happen inside ``entrypoint``
so that Ctrl+C while they load ends quietly with 130 instead of a Python traceback."""

from __future__ import annotations

import sys


def entrypoint() -> None:
    try:
        from controller.cli.main import main
    except KeyboardInterrupt:
        sys.exit(130)
    sys.exit(main())
