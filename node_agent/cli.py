"""``vpn-node-agent``: run the agent on a VPN host, or make its key and CSR."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import fcntl
import os
import signal
import sys
from collections.abc import Iterator
from pathlib import Path

import structlog

from node_agent import __version__
from node_agent.errors import AgentError

EXIT_OK, EXIT_FAILURE, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130

log = structlog.get_logger("node_agent")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="vpn-node-agent",
        description=(
            "The vpnbot node agent: runs on each VPN host, drives its VPN software and serves "
            "the controller over mutual-TLS gRPC."
        ),
    )
    parser.add_argument("--version", action="version", version=f"vpn-node-agent {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    run = commands.add_parser(
        "run",
        help="serve the controller",
        description=(
            "Restore the persisted state into the VPN backends, then serve the controller. "
            "The state directory must hold ca.pem, agent.key and agent.pem. The VPN backends "
            "come from [backends.NAME] tables of the config file (see the README). Stops "
            "cleanly on SIGTERM or Ctrl+C and leaves the VPN running (under systemd, use "
            "KillMode=process so stopping the unit spares wireguard-go)."
        ),
    )
    run.add_argument("--config", type=Path, help="TOML config file (env VPN_NODE_AGENT_CONFIG)")
    run.add_argument(
        "--state-dir", type=Path, help="state directory (env VPN_NODE_AGENT_STATE_DIR)"
    )
    run.add_argument(
        "--listen",
        help="HOST:PORT or unix:PATH to serve on "
        "(env VPN_NODE_AGENT_LISTEN; default 0.0.0.0:50051)",
    )

    enroll = commands.add_parser(
        "enroll",
        help="enroll with the controller using a token from `vpnbot node add`",
        description=(
            "Generate the agent key in the state directory (kept if it exists), send a CSR "
            "with the token to the controller's enrollment URL (the token pins the cluster "
            "CA) and store the signed certificate and the CA there. Then start the agent "
            "with `vpn-node-agent run`."
        ),
    )
    enroll.add_argument("--token", required=True, help="the token `vpnbot node add` printed")
    enroll.add_argument(
        "--state-dir",
        type=Path,
        required=True,
        help="the agent's state directory (e.g. /var/lib/vpn-node-agent)",
    )
    enroll.add_argument(
        "--timeout", type=float, default=30.0, help="seconds per request (default 30)"
    )

    csr = commands.add_parser(
        "csr",
        help="make the agent key and print a certificate signing request",
        description=(
            "Generate the agent's private key in the state directory (kept if it exists) and "
            "print a CSR for NODE_ID. Have the cluster CA sign it (vpnbot pki sign), then put "
            "the certificate in STATE_DIR/agent.pem and the CA in STATE_DIR/ca.pem."
        ),
    )
    csr.add_argument("--state-dir", type=Path, required=True)
    csr.add_argument("--node-id", required=True)
    csr.add_argument("--out", type=Path, help="write the CSR here instead of stdout")
    return parser


@contextlib.contextmanager
def _state_dir_lock(state_dir: Path) -> Iterator[None]:
    handle = (state_dir / "agent.lock").open("a")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        raise AgentError(f"another agent is running with {state_dir}") from None
    try:
        yield
    finally:
        handle.close()


async def _serve(args: argparse.Namespace) -> int:
    from common.logging import configure_logging
    from node_agent.agent import Agent
    from node_agent.backends.registry import build_backends
    from node_agent.config import load_config
    from node_agent.ledger import UsageLedger
    from node_agent.server import AgentServer
    from node_agent.state import StateStore
    from node_agent.tls import load_credentials

    config = load_config(args.config, {"state_dir": args.state_dir, "listen": args.listen})
    configure_logging(config.log_level, config.log_format)
    state_dir = config.state_dir
    state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    with _state_dir_lock(state_dir):
        credentials = load_credentials(state_dir)
        backends = build_backends(config)
        if not backends:
            log.warning("no_backends_configured")
        store = StateStore(state_dir / "state.db")
        ledger = UsageLedger(state_dir / "usage.db")
        agent = Agent(
            node_id=credentials.node_id,
            version=__version__,
            backends=backends,
            store=store,
            ledger=ledger,
        )
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await agent.boot()
        server = AgentServer(
            agent,
            credentials,
            config.listen,
            usage_interval=config.usage_interval,
            reconcile_interval=config.reconcile_interval,
        )
        await server.start()
        log.info(
            "serving",
            node_id=agent.node_id,
            listen=config.listen,
            revision=agent.revision,
            boot_id=agent.boot_id,
        )
        try:
            await stop.wait()
        finally:
            log.info("stopping")
            await server.stop()
            store.close()
            ledger.close()
    return EXIT_OK


def _csr(args: argparse.Namespace) -> int:
    from node_agent.tls import create_key_and_csr

    args.state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    try:
        pem = create_key_and_csr(args.state_dir, args.node_id)
    except ValueError as exc:
        raise AgentError(str(exc)) from None
    if args.out:
        args.out.write_bytes(pem)
    else:
        sys.stdout.write(pem.decode())
    return EXIT_OK


def _enroll(args: argparse.Namespace) -> int:
    from node_agent.enroll import enroll

    if not 0 < args.timeout <= 600:
        raise AgentError("--timeout must be between 0 and 600 seconds")
    node_id = enroll(args.token, args.state_dir, timeout=args.timeout)
    print(f"enrolled as node {node_id}; certificate in {args.state_dir}")
    print(
        "start the agent with a config file naming this state_dir and its VPN backends "
        "([backends.NAME] tables, see the README): vpn-node-agent run --config agent.toml"
    )
    return EXIT_OK


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    try:
        if args.command == "csr":
            return _csr(args)
        if args.command == "enroll":
            return _enroll(args)
        return asyncio.run(_serve(args))
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    except (AgentError, OSError) as exc:
        print(f"vpn-node-agent: error: {exc}", file=sys.stderr)
        return EXIT_FAILURE


def entrypoint() -> None:
    # SIGINT before the event loop owns it: exit 130 quietly rather than with a traceback.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())


if __name__ == "__main__":
    entrypoint()
