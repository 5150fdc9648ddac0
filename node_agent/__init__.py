"""vpn-node-agent: the agent on each VPN host.

It serves the controller over mutual-TLS gRPC (``server``), converges WireGuard, OpenVPN,
Xray (VLESS-Reality) and 3X-UI backends to the desired state the controller pushes
(``agent``, ``backends/``), keeps that state and a durable usage ledger on disk (``state``,
``ledger``) so it serves on its own when the controller is away, and reports host metrics.
Installed alone on a VPN host (``pip install 'vpnbot[agent]'``): it imports only ``common``,
``proto`` and third-party libraries, never the controller.
"""

from importlib import metadata

try:
    __version__ = metadata.version("vpnbot")
except metadata.PackageNotFoundError:  # running from a source tree without an install
    __version__ = "0.0.0+unknown"
