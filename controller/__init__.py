"""vpnbot controller: the central service of the VPN business control plane."""

from __future__ import annotations

from typing import Any


def __getattr__(name: str) -> Any:
    # Computed on first use: importing the package stays instant, so Ctrl+C during start-up
    # reaches the entry point's handler instead of interrupting importlib.metadata.
    if name == "__version__":
        from importlib import metadata

        try:
            version = metadata.version("vpnbot")
        except metadata.PackageNotFoundError:  # a source tree without an install
            version = "0.0.0+unknown"
        globals()["__version__"] = version
        return version
    raise AttributeError(f"module 'controller' has no attribute {name!r}")
