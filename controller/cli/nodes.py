"""``vpnbot node``, ``vpnbot user grant`` and ``vpnbot config export``: nodes and access."""

from __future__ import annotations

import os
from datetime import UTC, datetime
from pathlib import Path

import click

from controller.bootstrap import Container
from controller.cli.common import table, with_container
from controller.cli.manage import RECORD_ID, TELEGRAM_ID, user_group
from controller.db.models import Server, Subscription
from controller.domain import rules
from controller.domain.enums import VpnProtocol
from controller.services import Actor
from controller.services.config_render import RenderedConfig
from controller.services.nodes import NODE_PROTOCOLS, NodeDraft, Removal, enrollment_url
from controller.vpn import qr

PROTOCOLS = [p.value for p in NODE_PROTOCOLS]


def _protocols(value: str) -> tuple[VpnProtocol, ...]:
    names = [v.strip().lower() for v in value.split(",") if v.strip()]
    bad = [n for n in names if n not in PROTOCOLS]
    if bad or not names:
        raise click.BadParameter(
            f"use a comma-separated list of {', '.join(PROTOCOLS)}", param_hint="--protocols"
        )
    return tuple(VpnProtocol(n) for n in names)


@click.group("node")
def node_group() -> None:
    """VPN nodes: add one (prints its enrollment token), list, show, remove."""


def _print_token(server: Server, token: str, container: Container) -> None:
    expires = server.enrollment_token_expires_at
    when = expires.strftime("%Y-%m-%d %H:%M UTC") if expires else "?"
    click.echo(f"enrollment token (single use, valid until {when}):")
    click.echo(token)
    click.echo("")
    click.echo("on the node, as root:")
    click.echo(f"  vpn-node-agent enroll --token '{token}' --state-dir /var/lib/vpn-node-agent")
    url = enrollment_url(container.settings.enrollment)
    click.echo(f"(the node must reach {url}; set VPNBOT_ENROLLMENT__PUBLIC_URL if it cannot)")


@node_group.command("add")
@click.argument("name")
@click.option(
    "--address", required=True, help="Public IP or DNS name of the node (clients connect to it)."
)
@click.option(
    "--grpc-port",
    type=click.IntRange(1, 65535),
    default=50051,
    show_default=True,
    help="Port the node agent listens on.",
)
@click.option(
    "--protocols",
    default="wireguard",
    show_default=True,
    help=f"Comma-separated protocols the node serves ({', '.join(PROTOCOLS)}).",
)
@click.option("--country", default="", help="Two-letter country code, e.g. NL.")
@click.option("--city", default="", help="City shown to clients.")
@click.option(
    "--max-users",
    type=click.IntRange(1, 1_000_000),
    default=1000,
    show_default=True,
    help="Client configs the node may carry.",
)
@click.pass_context
def node_add(
    ctx: click.Context,
    name: str,
    address: str,
    grpc_port: int,
    protocols: str,
    country: str,
    city: str,
    max_users: int,
) -> None:
    """Add a node NAME and print its single-use enrollment token."""
    chosen = _protocols(protocols)

    async def action(c: Container) -> tuple[Server, str, Container]:
        draft = NodeDraft(
            name=name,
            address=address,
            grpc_port=grpc_port,
            protocols=chosen,
            country_code=country,
            city=city,
            max_users=max_users,
        )
        server, token = await c.services.nodes.add(Actor.cli(), draft)
        return server, token, c

    server, token, c = with_container(ctx, action)
    click.echo(f"node {server.name} added (id {server.node_uid})")
    _print_token(server, token, c)


@node_group.command("token")
@click.argument("name")
@click.pass_context
def node_token(ctx: click.Context, name: str) -> None:
    """Mint a new enrollment token for NAME; the old token dies. For an enrolled node this
    starts a re-enrollment: the certificate its host holds stops being accepted at once, until
    the host runs `vpn-node-agent enroll` with the new token (and restarts its agent)."""

    async def action(c: Container) -> tuple[Server, str, Container]:
        server, token = await c.services.nodes.mint_token(Actor.cli(), name)
        return server, token, c

    server, token, c = with_container(ctx, action)
    _print_token(server, token, c)


def _when(moment: datetime | None) -> str:
    return moment.strftime("%Y-%m-%d %H:%M UTC") if moment else "no"


def _ago(moment: datetime | None) -> str:
    if moment is None:
        return "never"
    seconds = int((datetime.now(UTC) - moment).total_seconds())
    if seconds < 120:
        return f"{max(seconds, 0)}s ago"
    if seconds < 7200:
        return f"{seconds // 60}m ago"
    return moment.strftime("%Y-%m-%d %H:%M UTC")


@node_group.command("list")
@click.pass_context
def node_list(ctx: click.Context) -> None:
    """List nodes with their health and convergence."""

    async def action(c: Container) -> tuple[list[Server], dict[int, int]]:
        return list(await c.services.nodes.list()), await c.services.nodes.config_counts()

    servers, counts = with_container(ctx, action)
    if not servers:
        click.echo("no nodes yet: add one with `vpnbot node add`")
        return
    rows = [
        (
            s.name,
            s.ip_address,
            s.country_code or "-",
            ",".join(s.supported_protocols),
            s.status.value if s.enrolled_at else "not enrolled",
            f"{s.applied_revision}/{s.desired_revision}",
            f"{counts.get(s.id, 0)}/{s.max_users}",
            _ago(s.last_seen_at),
        )
        for s in servers
    ]
    headers = ("NAME", "ADDRESS", "CC", "PROTOCOLS", "STATUS", "REVISION", "CONFIGS", "SEEN")
    click.echo(table(headers, rows))


@node_group.command("show")
@click.argument("name")
@click.pass_context
def node_show(ctx: click.Context, name: str) -> None:
    """Show one node: identity, health, reported parameters."""

    async def action(c: Container) -> tuple[Server, int]:
        server = await c.services.nodes.get(name)
        return server, (await c.services.nodes.config_counts()).get(server.id, 0)

    s, configs = with_container(ctx, action)
    wg = s.wireguard_config or {}
    lines = [
        f"node {s.name}",
        f"  id:            {s.node_uid}",
        f"  address:       {s.ip_address} (agent on port {s.grpc_port})",
        f"  location:      {s.country_code or '-'} {s.city}".rstrip(),
        f"  protocols:     {', '.join(s.supported_protocols)}",
        f"  enrolled:      {_when(s.enrolled_at)}",
        f"  certificate:   {s.cert_fingerprint or '-'}",
        f"  status:        {s.status.value}{f' ({s.status_reason})' if s.status_reason else ''}",
        f"  last seen:     {_ago(s.last_seen_at)}",
        f"  agent:         {s.agent_version or '-'} (boot {s.agent_boot_id or '-'})",
        f"  revision:      applied {s.applied_revision} of desired {s.desired_revision}",
        f"  configs:       {configs} of {s.max_users}",
        f"  load:          cpu {s.cpu_usage:.1f}%, memory {s.memory_usage:.1f}%, "
        f"disk {s.disk_usage:.1f}%, {s.current_users} client(s) online",
    ]
    if wg:
        lines.append(
            f"  wireguard:     {wg.get('public_key')} port {wg.get('listen_port')} "
            f"subnet {', '.join(wg.get('addresses') or [])}"
        )
    click.echo("\n".join(lines))


@node_group.command("remove")
@click.argument("name")
@click.option(
    "--force",
    is_flag=True,
    help="Delete the client configs it carries (the hub then empties the node), or remove "
    "a node that has not applied its last change.",
)
@click.pass_context
def node_remove(ctx: click.Context, name: str, force: bool) -> None:
    """Remove node NAME. A node carrying client configs is refused; --force deletes them
    and empties the node first, then remove it again once it has converged."""

    async def action(c: Container) -> Removal:
        return await c.services.nodes.remove(Actor.cli(), name, force=force)

    result = with_container(ctx, action)
    if result.removed:
        click.echo(f"node {name} removed; uninstall the agent on the host")
    else:
        click.echo(
            f"{result.configs_deleted} client config(s) of node {name} deleted; the hub is "
            f"emptying the node: run `vpnbot node remove {name}` once `vpnbot node list` "
            "shows it converged"
        )


@user_group.command("grant")
@click.argument("telegram_id", type=TELEGRAM_ID)
@click.option("--plan", "plan_id", type=RECORD_ID, default=None, help="Plan id.")
@click.option(
    "--days", type=click.IntRange(1, rules.MAX_DURATION_DAYS), default=None, help="Days of access."
)
@click.option(
    "--devices",
    type=click.IntRange(1, rules.MAX_DEVICE_LIMIT),
    default=None,
    help="Device limit [default: the plan's, or 1].",
)
@click.pass_context
def user_grant(
    ctx: click.Context, telegram_id: int, plan_id: int | None, days: int | None, devices: int | None
) -> None:
    """Give TELEGRAM_ID access without payment (audited): extends their subscription, or
    starts one. A Telegram id not seen before gets a user record."""
    if (plan_id is None) == (days is None):
        raise click.UsageError("give exactly one of --plan and --days")

    async def action(c: Container) -> Subscription:
        return await c.services.subscriptions.grant(
            Actor.cli(), telegram_id, plan_id=plan_id, days=days, devices=devices
        )

    subscription = with_container(ctx, action)
    expires = (
        subscription.expires_at.strftime("%Y-%m-%d %H:%M UTC") if subscription.expires_at else "-"
    )
    click.echo(
        f"subscription {subscription.id} of {telegram_id}: {subscription.status.value} "
        f"until {expires}, {subscription.device_limit} device(s)"
    )


@click.group("config")
def config_group() -> None:
    """Client VPN configs."""


@config_group.command("export")
@click.argument("telegram_id", type=TELEGRAM_ID)
@click.option(
    "--protocol",
    type=click.Choice(PROTOCOLS),
    default=None,
    help="Protocol [default: the automatic choice].",
)
@click.option(
    "--out",
    type=click.Path(dir_okay=False, path_type=Path),
    required=True,
    help="Write the config here ('-' for stdout): a WireGuard .conf, an OpenVPN .ovpn, "
    "or the vless:// share link.",
)
@click.option(
    "--qr",
    "qr_path",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Also write a QR code (PNG) of the config (WireGuard, VLESS; an OpenVPN profile "
    "is too large for one).",
)
@click.option(
    "--config",
    "config_id",
    type=RECORD_ID,
    default=None,
    help="Export this config of theirs (see `vpnbot config list`) instead.",
)
@click.pass_context
def config_export(
    ctx: click.Context,
    telegram_id: int,
    protocol: str | None,
    out: Path,
    qr_path: Path | None,
    config_id: int | None,
) -> None:
    """Export TELEGRAM_ID's config of the protocol, placing one on a node first if they
    have none (as the bot does when a client picks a protocol)."""
    if config_id is not None and protocol is not None:
        raise click.UsageError("give --config or --protocol, not both")
    if qr_path is not None and protocol == VpnProtocol.OPENVPN.value:
        raise click.UsageError("an OpenVPN profile does not fit a QR code: import the .ovpn file")

    async def action(c: Container) -> RenderedConfig:
        if config_id is not None:
            return await c.services.configs.render_for(telegram_id, config_id)
        return await c.services.configs.export(
            telegram_id, VpnProtocol(protocol) if protocol else None
        )

    rendered = with_container(ctx, action)
    if str(out) == "-":
        click.echo(rendered.text, nl=False)
    else:
        _write_private(out, rendered.text.encode())
    if qr_path is not None and rendered.protocol is VpnProtocol.OPENVPN:
        click.echo(
            "vpnbot: no QR code: an OpenVPN profile does not fit one (import the .ovpn file)",
            err=True,
        )
        qr_path = None
    if qr_path is not None:
        _write_private(qr_path, qr.png(rendered.text))
    if str(out) != "-":
        click.echo(
            f"{rendered.protocol.value} config {rendered.config_id} on node "
            f"{rendered.server_name} written to {out}"
            + (f", QR code to {qr_path}" if qr_path else "")
        )


def _write_private(path: Path, data: bytes) -> None:
    """Config files hold private keys: owner-only from the first byte."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.fchmod(fd, 0o600)  # an existing file keeps its mode otherwise
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)


@config_group.command("list")
@click.argument("telegram_id", type=TELEGRAM_ID)
@click.pass_context
def config_list(ctx: click.Context, telegram_id: int) -> None:
    """List TELEGRAM_ID's configs (devices)."""

    async def action(c: Container) -> list[tuple[object, ...]]:
        configs = await c.services.configs.list_for_user(telegram_id)
        return [
            (
                cfg.id,
                cfg.subscription_id,
                cfg.protocol.value,
                cfg.server.name,
                cfg.device_name or "-",
                cfg.config_data.get("address", "-"),
                cfg.total_traffic_bytes,
                _ago(cfg.last_used),
            )
            for cfg in configs
        ]

    rows = with_container(ctx, action)
    if not rows:
        click.echo(f"user {telegram_id} has no configs")
        return
    headers = ("ID", "SUBSCRIPTION", "PROTOCOL", "NODE", "DEVICE", "ADDRESS", "BYTES", "USED")
    click.echo(table(headers, rows))


@config_group.command("reissue")
@click.argument("config_id", type=RECORD_ID)
@click.pass_context
def config_reissue(ctx: click.Context, config_id: int) -> None:
    """New keys for config CONFIG_ID; the old file stops working (export it again)."""

    async def action(c: Container) -> int:
        return (await c.services.configs.reissue(config_id)).id

    with_container(ctx, action)
    click.echo(f"config {config_id} has new keys; export it again for the client")


@config_group.command("delete")
@click.argument("config_id", type=RECORD_ID)
@click.pass_context
def config_delete(ctx: click.Context, config_id: int) -> None:
    """Delete config CONFIG_ID (the device loses access once its node converges)."""

    async def action(c: Container) -> None:
        await c.services.configs.delete(config_id)

    with_container(ctx, action)
    click.echo(f"config {config_id} deleted")
