"""``vpn-node-agent``: only --help and --version for now; `run` and `enroll` arrive with the
node agent issue."""

from __future__ import annotations

import argparse
import sys

from node_agent import __version__


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="vpn-node-agent",
        description=(
            "The vpnbot node agent: runs on each VPN host and serves the controller over mTLS "
            "gRPC. This version only reports its version; the `run` and `enroll` commands "
            "are not implemented yet."
        ),
    )
    parser.add_argument("--version", action="version", version=f"vpn-node-agent {__version__}")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    parser.parse_args(argv)
    parser.print_help(sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
