"""The console-script entry point, kept tiny: the heavy imports happen inside ``entrypoint``
so that Ctrl+C while they load ends quietly with 130 instead of a Python traceback."""

from __future__ import annotations

import sys


def entrypoint() -> None:
    try:
        from controller.cli.main import main
    except KeyboardInterrupt:
        sys.exit(130)
    except ModuleNotFoundError as exc:
        # An agent-only install (`pip install 'vpnbot[agent]'`) has the script but not the
        # controller's libraries.
        sys.exit(
            f"vpnbot: error: {exc.name} is not installed: the controller needs "
            "`pip install 'vpnbot[controller]'` (a VPN host needs only `vpn-node-agent`)"
        )
    sys.exit(main())
