"""Rendering a client config into what a device imports: a WireGuard .conf, a VLESS share
link, an OpenVPN profile (issued once by the node's own CA and stored sealed).

Split from ``configs`` (placement and lifecycle); both read the sealed secrets the same way.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import secrets
from dataclasses import dataclass
from typing import Protocol

from controller.crypto import SecretBox, config_secret_context, open_config_secret
from controller.db.models import Server, VpnConfig
from controller.db.uow import UnitOfWorkFactory
from controller.domain.enums import VpnProtocol
from controller.domain.errors import ConfigNotFound, Unavailable
from controller.services.base import Clock, Service
from controller.settings import VpnSettings
from controller.vpn import vless, wireguard

VLESS_FLOWS = frozenset({"", "xtls-rprx-vision"})
# An export waits this long for another one issuing the same config's OpenVPN profile; a
# claim older than ISSUE_CLAIM_SECONDS belongs to a process that died mid-issuance.
ISSUE_WAIT_SECONDS = 30.0
ISSUE_CLAIM_SECONDS = 60.0


class ProfileIssuer(Protocol):
    """What only a node can make: an OpenVPN client certificate from the node's own CA."""

    async def issue_openvpn(
        self, *, node_id: str, host: str, port: int, backend: str, common_name: str
    ) -> str:
        """The node's inline profile for ``common_name`` (without `remote` lines)."""


@dataclass(frozen=True, slots=True)
class RenderedConfig:
    config_id: int
    protocol: VpnProtocol
    server_name: str
    device_name: str
    filename: str
    text: str


class ConfigRenderer(Service):
    def __init__(
        self,
        uow_factory: UnitOfWorkFactory,
        clock: Clock,
        box: SecretBox,
        vpn: VpnSettings,
        issuer: ProfileIssuer | None = None,
    ) -> None:
        super().__init__(uow_factory, clock)
        self._box = box
        self._vpn = vpn
        self._issuer = issuer

    async def render(self, config_id: int) -> RenderedConfig:
        async with self._uow() as uow:
            config = await uow.configs.get(config_id)
            if config is None:
                raise ConfigNotFound(f"no config with id {config_id}")
            server = await uow.nodes.get(config.server_id)
            assert server is not None
        name = config.device_name or f"{config.protocol.value}-{config.id}"
        stem = f"{_safe_filename(server.name)}-{config.id}"
        if config.protocol is VpnProtocol.WIREGUARD:
            text, filename = self._render_wireguard(config, server), f"{stem}.conf"
        elif config.protocol is VpnProtocol.OPENVPN:
            text, filename = await self._render_openvpn(config, server), f"{stem}.ovpn"
        elif config.protocol is VpnProtocol.VLESS:
            text, filename = self._render_vless(config, server, name), f"{stem}.txt"
        else:
            raise Unavailable(f"{config.protocol.value} configs cannot be exported")
        return RenderedConfig(config.id, config.protocol, server.name, name, filename, text)

    def open_secret(self, config: VpnConfig) -> dict[str, str | None]:
        return open_config_secret(self._box, config.id, config.secret_encrypted)

    async def _render_openvpn(self, config: VpnConfig, server: Server) -> str:
        params = server.openvpn_config or {}
        if not params.get("backend") or not params.get("port"):
            raise Unavailable(f"node {server.name} reports no OpenVPN server")
        profile = await self._openvpn_profile(config, server, str(params["backend"]))
        transport = "tcp" if params.get("transport") == "tcp" else "udp"
        host = server.domain or server.ip_address
        # Names go into a comment line: nothing in them may start a directive of its own.
        label = "".join(
            c for c in f"{config.device_name or 'OpenVPN'} @ {server.name}" if c.isprintable()
        )
        return (
            f"# {label} (vpnbot config {config.id})\n"
            f"remote {host} {int(params['port'])} {transport}\n" + profile
        )

    async def _openvpn_profile(self, config: VpnConfig, server: Server, backend: str) -> str:
        """The stored profile, or one the node issues now. One issuance per config at a
        time across every process (bot, CLI, API): the node revokes a common name's earlier
        certificate when it issues a new one, so two racing exports would leave one of them
        with a dead profile. The first export claims the config in the database; the others
        wait for its profile."""
        if self._issuer is None:
            raise Unavailable("this controller cannot reach nodes to issue OpenVPN profiles")
        token = secrets.token_hex(8)
        deadline = asyncio.get_running_loop().time() + ISSUE_WAIT_SECONDS
        while True:
            async with self._uow() as uow:
                current = await uow.configs.get(config.id, for_update=True)
                if current is None:
                    raise ConfigNotFound(f"no config with id {config.id}")
                stored = self.open_secret(current).get("profile")
                if stored:
                    return stored
                common_name = current.client_id
                claim = current.config_data.get("issuing")
                if not self._claim_alive(claim):
                    current.config_data = {
                        **current.config_data,
                        "issuing": {"by": token, "at": self._now().isoformat()},
                    }
                    await uow.commit()
                    break
            if asyncio.get_running_loop().time() > deadline:
                raise Unavailable("this config's profile is being issued right now; try again")
            await asyncio.sleep(0.2)
        try:
            profile = await self._issuer.issue_openvpn(
                node_id=server.node_uid or "",
                host=server.ip_address,
                port=server.grpc_port,
                backend=backend,
                common_name=common_name,
            )
        except BaseException:
            await self._release_claim(config.id, token)
            raise
        async with self._uow() as uow:
            current = await uow.configs.get(config.id, for_update=True)
            claim = current.config_data.get("issuing") if current is not None else None
            if (
                current is None
                or current.client_id != common_name
                or not isinstance(claim, dict)
                or claim.get("by") != token
            ):
                raise Unavailable("the config changed while its profile was issued; try again")
            current.secret_encrypted = self._box.encrypt(
                json.dumps({"profile": profile}).encode(), config_secret_context(config.id)
            )
            current.config_data = without_claim(current.config_data)
            await uow.commit()
        return profile

    def _claim_alive(self, claim: object) -> bool:
        if not isinstance(claim, dict):
            return False
        try:
            at = dt.datetime.fromisoformat(str(claim.get("at")))
        except ValueError:
            return False
        age = (self._now() - at).total_seconds()
        return 0 <= age < ISSUE_CLAIM_SECONDS

    async def _release_claim(self, config_id: int, token: str) -> None:
        async with self._uow() as uow:
            current = await uow.configs.get(config_id, for_update=True)
            claim = current.config_data.get("issuing") if current is not None else None
            if current is not None and isinstance(claim, dict) and claim.get("by") == token:
                current.config_data = without_claim(current.config_data)
                await uow.commit()

    def _render_vless(self, config: VpnConfig, server: Server, name: str) -> str:
        params = server.vless_config or {}
        short_ids = [i for i in params.get("short_ids") or [] if isinstance(i, str)]
        server_names = [n for n in params.get("server_names") or [] if isinstance(n, str)]
        if not params.get("public_key") or not server_names or not params.get("port"):
            raise Unavailable(f"node {server.name} reports no complete Reality parameters")
        flow = config.config_data.get("flow")
        try:
            return vless.share_link(
                uuid=config.client_id,
                host=server.domain or server.ip_address,
                port=int(params["port"]),
                public_key=str(params["public_key"]),
                # Spread clients over the node's short ids: one can be retired without all.
                short_id=short_ids[config.id % len(short_ids)] if short_ids else "",
                server_name=server_names[0],
                fingerprint=str(params.get("fingerprint") or "chrome"),
                flow=flow if isinstance(flow, str) and flow in VLESS_FLOWS else "",
                name=f"{server.name} {name}",
            )
        except ValueError as exc:
            raise Unavailable(f"node {server.name}: cannot make a VLESS link ({exc})") from None

    def _render_wireguard(self, config: VpnConfig, server: Server) -> str:
        params = server.wireguard_config or {}
        secret = self.open_secret(config)
        address = str(config.config_data.get("address", ""))
        if not address or not params.get("public_key") or not secret.get("private_key"):
            raise Unavailable("this config is incomplete (node parameters unknown)")
        return wireguard.render(
            wireguard.ClientConfig(
                private_key=str(secret["private_key"]),
                address=address + ("/128" if ":" in address else "/32"),
                dns=self._vpn.split(self._vpn.wireguard_dns),
                server_public_key=str(params["public_key"]),
                preshared_key=str(secret.get("preshared_key") or ""),
                endpoint=wireguard.endpoint(
                    server.domain or server.ip_address, int(params.get("listen_port", 51820))
                ),
                allowed_ips=self._vpn.split(self._vpn.wireguard_allowed_ips),
                persistent_keepalive=self._vpn.wireguard_keepalive,
            )
        )


def without_claim(data: dict[str, object]) -> dict[str, object]:
    return {k: v for k, v in data.items() if k != "issuing"}


def _safe_filename(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_" else "-" for c in name)[:40] or "vpn"
