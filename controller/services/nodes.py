"""Nodes: adding them, enrollment tokens, enrolling an agent's CSR, listing and removal."""

from __future__ import annotations

import builtins
import ipaddress
import re
import secrets
import socket
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta

from controller.crypto import SecretBox
from controller.db.models import Server
from controller.db.models.nodes import new_node_uid
from controller.db.uow import UnitOfWork, UnitOfWorkFactory
from controller.domain.enums import NodeStatus, VpnProtocol
from controller.domain.errors import (
    AlreadyExists,
    Conflict,
    EnrollmentRefused,
    InvalidInput,
    NodeNotFound,
)
from controller.nodes.ca import ensure_ca, load_ca_certificate, load_ca_in
from controller.nodes.pki import PkiError, cert_to_pem, fingerprint
from controller.services import audit
from controller.services.base import Actor, Clock, Service
from controller.services.configs import node_capacity, served_protocols
from controller.settings import EnrollmentSettings
from proto.nodeapi.v1.enrollment import SECRET_BYTES, EnrollmentToken, hash_secret

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
_HOSTNAME = re.compile(
    r"^(?=.{1,253}$)([A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)*"
    r"[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?$"
)
# Protocols a node can serve through the agent (IKEv2 is in the data model only).
NODE_PROTOCOLS = (VpnProtocol.WIREGUARD, VpnProtocol.OPENVPN, VpnProtocol.VLESS)
MAX_USERS_LIMIT = 1_000_000
ENROLLMENT_URL_SETTING = "enrollment.url"


@dataclass(frozen=True, slots=True)
class NodeDraft:
    name: str
    address: str
    grpc_port: int = 50051
    protocols: tuple[VpnProtocol, ...] = (VpnProtocol.WIREGUARD,)
    country_code: str = ""
    city: str = ""
    max_users: int = 1000


@dataclass(frozen=True, slots=True)
class Removal:
    configs_deleted: int
    removed: bool


@dataclass(frozen=True, slots=True)
class LocationView:
    """A node as clients choose it: where it is, how full, and whether it takes devices."""

    server_id: int
    name: str
    country: str
    country_code: str
    city: str
    status: NodeStatus
    load_percent: int  # configs placed / capacity, 0..100
    protocols: frozenset[VpnProtocol]
    available: bool  # a new device could be placed there now


_HEALTHY = frozenset({NodeStatus.ONLINE, NodeStatus.DEGRADED})


@dataclass(frozen=True, slots=True)
class Enrolled:
    node_id: str
    certificate_pem: bytes
    ca_certificate_pem: bytes


def check_address(address: str) -> str:
    address = address.strip()
    try:
        return str(ipaddress.ip_address(address))
    except ValueError:
        pass
    if not _HOSTNAME.fullmatch(address):
        raise InvalidInput(f"{address!r} is neither an IP address nor a host name")
    return address.lower()


def _check_draft(draft: NodeDraft) -> NodeDraft:
    if not _NAME.fullmatch(draft.name):
        raise InvalidInput(
            "a node name is 1-64 letters, digits, dots, hyphens or underscores, "
            "starting with a letter or digit"
        )
    if not 1 <= draft.grpc_port <= 65535:
        raise InvalidInput("the gRPC port must be 1-65535")
    if not draft.protocols:
        raise InvalidInput("a node must serve at least one protocol")
    unknown = [p for p in draft.protocols if p not in NODE_PROTOCOLS]
    if unknown:
        raise InvalidInput(f"a node cannot serve {', '.join(p.value for p in unknown)}")
    country = draft.country_code.strip().upper()
    if country and not re.fullmatch(r"[A-Z]{2}", country):
        raise InvalidInput("the country must be a two-letter ISO code such as NL or DE")
    if len(draft.city) > 64:
        raise InvalidInput("the city name is too long (64 characters at most)")
    if not 1 <= draft.max_users <= MAX_USERS_LIMIT:
        raise InvalidInput(f"max users must be 1-{MAX_USERS_LIMIT}")
    return NodeDraft(
        name=draft.name,
        address=check_address(draft.address),
        grpc_port=draft.grpc_port,
        protocols=tuple(dict.fromkeys(draft.protocols)),
        country_code=country,
        city=draft.city.strip(),
        max_users=draft.max_users,
    )


def enrollment_url(settings: EnrollmentSettings) -> str:
    if settings.public_url:
        return settings.public_url
    host = settings.host
    if host in ("0.0.0.0", "::", ""):  # noqa: S104 - comparing, not binding
        host = socket.gethostname()
    if ":" in host:
        host = f"[{host}]"
    return f"https://{host}:{settings.port}"


class NodeService(Service):
    def __init__(
        self,
        uow_factory: UnitOfWorkFactory,
        clock: Clock,
        secrets_box: SecretBox,
        enrollment: EnrollmentSettings,
    ) -> None:
        super().__init__(uow_factory, clock)
        self._box = secrets_box
        self._enrollment = enrollment
        self._ca_pem: bytes | None = None

    async def add(self, actor: Actor, draft: NodeDraft) -> tuple[Server, str]:
        """Create a node and its first enrollment token (printed once, stored hashed)."""
        draft = _check_draft(draft)
        ca = await ensure_ca(self._uow, self._box)
        async with self._uow() as uow:
            if await uow.nodes.get_by_name(draft.name) is not None:
                raise AlreadyExists(f"a node named {draft.name!r} exists")
            server = Server(
                name=draft.name,
                ip_address=draft.address,
                grpc_port=draft.grpc_port,
                supported_protocols=[p.value for p in draft.protocols],
                primary_protocol=draft.protocols[0],
                country_code=draft.country_code,
                city=draft.city,
                max_users=draft.max_users,
                status=NodeStatus.UNKNOWN,
            )
            await uow.nodes.add(server)
            token = self._new_token(server, fingerprint(ca.cert), await self._token_url(uow))
            await audit.record(
                uow,
                actor,
                "node.add",
                target_type="server",
                target_id=server.id,
                details={"name": server.name, "address": server.ip_address},
            )
            await uow.commit()
            return server, token

    async def mint_token(self, actor: Actor, name: str) -> tuple[Server, str]:
        """A fresh enrollment token for the node (the previous one stops working).

        For a node already enrolled this is a re-enrollment: the node gets a new identity at
        once, so the certificate its host holds now is no longer accepted by the hub (a
        leaked agent key is cut off); the host enrolls again with the new token.
        """
        ca = await ensure_ca(self._uow, self._box)
        async with self._uow() as uow:
            server = await _require(uow, name, for_update=True)
            rotated = server.enrolled_at is not None
            if rotated:
                server.node_uid = new_node_uid()
                server.agent_boot_id = None
            token = self._new_token(server, fingerprint(ca.cert), await self._token_url(uow))
            await audit.record(
                uow,
                actor,
                "node.token",
                target_type="server",
                target_id=server.id,
                details={"identity_rotated": rotated},
            )
            await uow.commit()
            return server, token

    async def publish_url(self, url: str) -> None:
        """Record the URL the running enrollment listener serves (for tokens made elsewhere)."""
        async with self._uow() as uow:
            await uow.app_settings.set(ENROLLMENT_URL_SETTING, url)
            await uow.commit()

    async def _token_url(self, uow: UnitOfWork) -> str:
        if self._enrollment.public_url:
            return self._enrollment.public_url
        published = await uow.app_settings.get(ENROLLMENT_URL_SETTING)
        if published is not None and isinstance(published.value, str):
            return published.value
        return enrollment_url(self._enrollment)

    def _new_token(self, server: Server, ca_fingerprint: str, url: str) -> str:
        secret = secrets.token_urlsafe(SECRET_BYTES)
        server.enrollment_token_hash = hash_secret(secret)
        server.enrollment_token_expires_at = self._now() + timedelta(
            minutes=self._enrollment.token_ttl_minutes
        )
        return EnrollmentToken(url, server.node_uid, ca_fingerprint, secret).encode()

    async def enroll(self, secret: str, csr_pem: bytes) -> Enrolled:
        """Sign an agent's CSR for the node whose token this is, burning the token in the
        same transaction. Every refusal looks alike to the caller."""
        if not isinstance(secret, str) or not secret:
            raise EnrollmentRefused("unknown, used or expired enrollment token")
        async with self._uow() as uow:
            # The token first: an unknown one costs one indexed lookup, not a CA key unsealing.
            server = await uow.nodes.get_by_token_hash(hash_secret(secret))
            now = self._now()
            expires = server.enrollment_token_expires_at if server is not None else None
            if server is None or expires is None or expires <= now:
                raise EnrollmentRefused("unknown, used or expired enrollment token")
            ca = await load_ca_in(uow, self._box)
            if ca is None:
                raise EnrollmentRefused("unknown, used or expired enrollment token")
            try:
                cert = ca.sign_node_csr(csr_pem, server.node_uid)
            except PkiError as exc:
                raise InvalidInput(str(exc)) from None
            server.enrollment_token_hash = None
            server.enrollment_token_expires_at = None
            server.cert_fingerprint = fingerprint(cert)
            server.cert_serial = format(cert.serial_number, "x")
            server.cert_not_after = cert.not_valid_after_utc
            server.enrolled_at = now
            # A re-enrolled host may be a fresh install: make the hub resend everything.
            server.agent_boot_id = None
            await audit.record(
                uow,
                Actor("enrollment"),
                "node.enroll",
                target_type="server",
                target_id=server.id,
                details={"serial": server.cert_serial},
            )
            await uow.commit()
            return Enrolled(server.node_uid, cert_to_pem(cert), ca.cert_pem)

    async def ca_certificate(self) -> bytes | None:
        """The cluster CA certificate (public; it never changes, so it is read once)."""
        if self._ca_pem is None:
            self._ca_pem = await load_ca_certificate(self._uow)
        return self._ca_pem

    async def list(self) -> Sequence[Server]:
        async with self._uow() as uow:
            return await uow.nodes.list_all()

    async def get(self, name: str) -> Server:
        async with self._uow() as uow:
            return await _require(uow, name)

    async def locations(self) -> builtins.list[LocationView]:
        """Active, enrolled nodes by country, city and name (for the client's choice)."""
        async with self._uow().read_only() as uow:
            servers = await uow.nodes.list_all(enrolled_only=True)
            counts = await uow.configs.counts_by_server()
        views: builtins.list[LocationView] = []
        for server in servers:
            if not server.is_active:
                continue
            capacity = node_capacity(server)
            placed = counts.get(server.id, 0)
            protocols = served_protocols(server)
            views.append(
                LocationView(
                    server_id=server.id,
                    name=server.name,
                    country=server.country,
                    country_code=server.country_code,
                    city=server.city,
                    status=server.status,
                    load_percent=min(100, placed * 100 // capacity) if capacity > 0 else 100,
                    protocols=protocols,
                    available=(
                        not server.is_maintenance
                        and server.status in _HEALTHY
                        and placed < capacity
                        and bool(protocols)
                    ),
                )
            )
        return sorted(views, key=lambda v: (v.country_code, v.city, v.name))

    async def config_counts(self) -> dict[int, int]:
        async with self._uow() as uow:
            return await uow.configs.counts_by_server()

    async def remove(self, actor: Actor, name: str, *, force: bool = False) -> Removal:
        """Remove a node, emptying it first.

        A node that carries client configs is refused; with ``force`` those configs are
        deleted and the node's desired revision bumped, so the hub empties the agent (its
        clients lose access) — the node itself stays until that is applied. A node with a
        change not yet applied is refused too unless ``force``: its agent keeps serving its
        last state until it is stopped.
        """
        async with self._uow() as uow:
            server = await _require(uow, name, for_update=True)
            count = await uow.configs.count_for_server(server.id)
            if count:
                if not force:
                    raise Conflict(
                        f"node {name!r} carries {count} client config(s); --force deletes them "
                        "and empties the node, then remove it again"
                    )
                await uow.configs.delete_for_server(server.id)
                await uow.touch_nodes([server.id])
                await audit.record(
                    uow,
                    actor,
                    "node.drain",
                    target_type="server",
                    target_id=server.id,
                    details={"name": name, "configs_deleted": count},
                )
                await uow.commit()
                return Removal(configs_deleted=count, removed=False)
            if (
                server.enrolled_at is not None
                and server.applied_revision < server.desired_revision
                and not force
            ):
                raise Conflict(
                    f"node {name!r} has not applied its last change yet (revision "
                    f"{server.applied_revision} of {server.desired_revision}): wait until "
                    "`vpnbot node list` shows it converged, or use --force (its agent then "
                    "keeps serving its last state until you stop it)"
                )
            await uow.nodes.delete(server)
            await audit.record(
                uow,
                actor,
                "node.remove",
                target_type="server",
                target_id=server.id,
                details={"name": name},
            )
            await uow.commit()
            return Removal(configs_deleted=0, removed=True)


async def _require(uow: UnitOfWork, name: str, *, for_update: bool = False) -> Server:
    server = await uow.nodes.get_by_name(name, for_update=for_update)
    if server is None:
        raise NodeNotFound(f"no node named {name!r} (see `vpnbot node list`)")
    return server
