"""vpnbot controller: the central service of the VPN business control plane."""

from importlib import metadata

try:
    __version__ = metadata.version("vpnbot")
except metadata.PackageNotFoundError:  # running from a source tree without an install
    __version__ = "0.0.0+unknown"
