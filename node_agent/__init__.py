"""vpn-node-agent: the agent on each VPN host (mTLS gRPC server and VPN backends arrive next)."""

from importlib import metadata

try:
    __version__ = metadata.version("vpnbot")
except metadata.PackageNotFoundError:  # running from a source tree without an install
    __version__ = "0.0.0+unknown"
