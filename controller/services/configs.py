"""Client configs: placing a device on a node, re-issuing and deleting it (rendering what a
device imports is ``config_render``).

Every change bumps the node's desired revision in the same transaction, so the hub pushes
it to the agent right after the commit.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import json
import secrets
import uuid
from collections.abc import Sequence
from dataclasses import dataclass

from controller.crypto import SecretBox, config_secret_context
from controller.db.models import Server, Subscription, User, VpnConfig
from controller.db.uow import UnitOfWork, UnitOfWorkFactory
from controller.domain import placement
from controller.domain.enums import VpnProtocol
from controller.domain.errors import (
    ConfigNotFound,
    InvalidInput,
    LimitReached,
    NoActiveSubscription,
    NoServerAvailable,
    Unavailable,
    UserBanned,
    UserNotFound,
)
from controller.services.base import Clock, Service
from controller.services.config_render import (
    VLESS_FLOWS,
    ConfigRenderer,
    ProfileIssuer,
    RenderedConfig,
    without_claim,
)
from controller.settings import VpnSettings
from controller.vpn import wireguard

MAX_DEVICE_NAME = 64
# Protocols this controller can place configs of.
PROVISIONED = frozenset({VpnProtocol.WIREGUARD, VpnProtocol.OPENVPN, VpnProtocol.VLESS})


def node_capacity(server: Server) -> int:
    """Configs the node can take: its max_users, and for WireGuard no more than its tunnel
    subnet has client addresses."""
    capacity = server.max_users
    addresses = (server.wireguard_config or {}).get("addresses") or []
    if addresses and served_protocols(server) == {VpnProtocol.WIREGUARD}:
        try:
            network = ipaddress.ip_interface(addresses[0]).network
        except ValueError:
            return 0
        hosts = network.num_addresses - (
            2 if network.version == 4 and network.prefixlen < 31 else 0
        )
        capacity = min(capacity, max(hosts - 1, 0))
    return capacity


def served_protocols(server: Server) -> frozenset[VpnProtocol]:
    """Protocols the node both supports (admin's choice) and has reported a backend for."""
    reported = {
        VpnProtocol.WIREGUARD: server.wireguard_config,
        VpnProtocol.OPENVPN: server.openvpn_config,
        VpnProtocol.VLESS: server.vless_config,
    }
    return frozenset(
        p for p, params in reported.items() if params and p.value in server.supported_protocols
    )


@dataclass(frozen=True, slots=True)
class DeviceView:
    config_id: int
    protocol: VpnProtocol
    device_name: str | None
    server_name: str
    country_code: str
    is_active: bool
    created_at: dt.datetime


@dataclass(frozen=True, slots=True)
class DeviceOverview:
    """The devices of the user's current subscription (none without an active one)."""

    subscription_id: int | None
    device_limit: int
    devices: list[DeviceView]


class ConfigService(Service):
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
        self._renderer = ConfigRenderer(uow_factory, clock, box, vpn, issuer)

    async def provision(
        self,
        telegram_id: int,
        protocol: VpnProtocol | None = None,
        *,
        device_name: str | None = None,
    ) -> VpnConfig:
        """Place a new device of the user's active subscription on a node."""
        if device_name is not None and (
            not 1 <= len(device_name.strip()) <= MAX_DEVICE_NAME or not device_name.isprintable()
        ):
            raise InvalidInput(
                f"a device name is 1-{MAX_DEVICE_NAME} printable characters on one line"
            )
        async with self._uow() as uow:
            user, subscription = await self._active(uow, telegram_id)
            config = await self._place(uow, user, subscription, protocol, device_name)
            await uow.commit()
            return config

    async def export(self, telegram_id: int, protocol: VpnProtocol | None = None) -> RenderedConfig:
        """The user's config of ``protocol`` (any, if None), provisioned on demand."""
        async with self._uow() as uow:
            user, subscription = await self._active(uow, telegram_id)
            existing = [
                c
                for c in await uow.configs.list_for_subscription(subscription.id)
                if c.is_active and (protocol is None or c.protocol is protocol)
            ]
            if existing:
                config = existing[0]
            else:
                config = await self._place(uow, user, subscription, protocol, None)
                await uow.commit()
        return await self.render(config.id)

    async def render_for(self, telegram_id: int, config_id: int) -> RenderedConfig:
        """Render one of the user's own configs (another user's is "not found")."""
        async with self._uow() as uow:
            user = await uow.users.get_by_telegram_id(telegram_id)
            if user is None:
                raise UserNotFound(f"no user with Telegram id {telegram_id}")
            await self._owned(uow, config_id, user.id)
        return await self.render(config_id)

    async def render(self, config_id: int) -> RenderedConfig:
        return await self._renderer.render(config_id)

    async def list_for_user(self, telegram_id: int) -> Sequence[VpnConfig]:
        async with self._uow() as uow:
            user = await uow.users.get_by_telegram_id(telegram_id)
            if user is None:
                raise UserNotFound(f"no user with Telegram id {telegram_id}")
            configs: list[VpnConfig] = []
            for subscription in await uow.subscriptions.list_for_user(user.id):
                configs.extend(await uow.configs.list_for_subscription(subscription.id))
            return configs

    async def devices(self, telegram_id: int) -> DeviceOverview:
        async with self._uow().read_only() as uow:
            user = await uow.users.get_by_telegram_id(telegram_id)
            if user is None:
                raise UserNotFound(f"no user with Telegram id {telegram_id}")
            subscription = await uow.subscriptions.current_active(user.id, self._now())
            if subscription is None:
                return DeviceOverview(subscription_id=None, device_limit=0, devices=[])
            configs = await uow.configs.list_for_subscription(subscription.id)
            return DeviceOverview(
                subscription_id=subscription.id,
                device_limit=subscription.device_limit,
                devices=[
                    DeviceView(
                        config_id=c.id,
                        protocol=c.protocol,
                        device_name=c.device_name,
                        server_name=c.server.name,
                        country_code=c.server.country_code,
                        is_active=c.is_active,
                        created_at=c.created_at,
                    )
                    for c in configs
                ],
            )

    async def available_protocols(self) -> list[VpnProtocol]:
        """Protocols a new device could get right now (some node has room for it)."""
        async with self._uow().read_only() as uow:
            candidates = await _candidates(uow)
        return [
            p
            for p in placement.AUTO_ORDER_RU
            if p in PROVISIONED and placement.choose_node(candidates, p) is not None
        ]

    async def reissue_for(self, telegram_id: int, config_id: int) -> VpnConfig:
        """Re-issue one of the user's own devices (another user's is "not found")."""
        async with self._uow() as uow:
            owner = await self._owner(uow, telegram_id, config_id)
            config = await self._reissue(uow, config_id, owner)
            await uow.commit()
            return config

    async def delete_for(self, telegram_id: int, config_id: int) -> None:
        """Delete one of the user's own devices (another user's is "not found")."""
        async with self._uow() as uow:
            owner = await self._owner(uow, telegram_id, config_id)
            await self._delete(uow, config_id, owner)
            await uow.commit()

    async def reissue(self, config_id: int, *, owner_user_id: int | None = None) -> VpnConfig:
        """New keys for a device (the old ones stop working once the node converges)."""
        async with self._uow() as uow:
            config = await self._reissue(uow, config_id, owner_user_id)
            await uow.commit()
            return config

    async def _reissue(
        self, uow: UnitOfWork, config_id: int, owner_user_id: int | None
    ) -> VpnConfig:
        config = await self._owned(uow, config_id, owner_user_id)
        if config.protocol is VpnProtocol.WIREGUARD:
            keys = wireguard.generate_keypair()
            config.client_id = keys.public_key
            config.secret_encrypted = self._seal(
                config.id, keys.private_key, wireguard.generate_preshared_key()
            )
            config.config_data = {**config.config_data, "public_key": keys.public_key}
        elif config.protocol is VpnProtocol.OPENVPN:
            # A new common name: the old certificate leaves the node's enabled set (and
            # so lands in its CRL); the new profile is issued on the next export.
            config.client_id = _common_name()
            config.secret_encrypted = None
            config.config_data = without_claim(config.config_data)
        elif config.protocol is VpnProtocol.VLESS:
            config.client_id = str(uuid.uuid4())
        else:
            raise Unavailable(f"{config.protocol.value} configs cannot be re-issued")
        await uow.touch_nodes([config.server_id])
        return config

    async def delete(self, config_id: int, *, owner_user_id: int | None = None) -> None:
        async with self._uow() as uow:
            await self._delete(uow, config_id, owner_user_id)
            await uow.commit()

    async def _delete(self, uow: UnitOfWork, config_id: int, owner_user_id: int | None) -> None:
        config = await self._owned(uow, config_id, owner_user_id)
        server_id = config.server_id
        await uow.configs.delete(config)
        await uow.touch_nodes([server_id])

    async def _owner(self, uow: UnitOfWork, telegram_id: int, config_id: int) -> int:
        """The user id behind ``telegram_id``; an unknown user owns nothing."""
        user = await uow.users.get_by_telegram_id(telegram_id)
        if user is None:
            raise ConfigNotFound(f"no config with id {config_id}")
        return user.id

    # -- internals ---------------------------------------------------------------------

    async def _active(self, uow: UnitOfWork, telegram_id: int) -> tuple[User, Subscription]:
        user = await uow.users.get_by_telegram_id(telegram_id)
        if user is None:
            raise UserNotFound(f"no user with Telegram id {telegram_id}")
        if user.is_banned:
            raise UserBanned("this user is banned")
        found = await uow.subscriptions.current_active(user.id, self._now())
        if found is None:
            raise NoActiveSubscription(
                f"user {telegram_id} has no active subscription (grant one first)"
            )
        # Locked: two devices added at once cannot both slip under the device limit.
        subscription = await uow.subscriptions.get(found.id, for_update=True)
        if subscription is None:
            raise NoActiveSubscription(f"user {telegram_id} has no active subscription")
        return user, subscription

    async def _owned(self, uow: UnitOfWork, config_id: int, owner_user_id: int | None) -> VpnConfig:
        config = await uow.configs.get(config_id, for_update=True)
        if config is None:
            raise ConfigNotFound(f"no config with id {config_id}")
        if owner_user_id is not None:
            subscription = await uow.subscriptions.get(config.subscription_id)
            if subscription is None or subscription.user_id != owner_user_id:
                raise ConfigNotFound(f"no config with id {config_id}")
        return config

    async def _place(
        self,
        uow: UnitOfWork,
        user: User,
        subscription: Subscription,
        protocol: VpnProtocol | None,
        device_name: str | None,
    ) -> VpnConfig:
        existing = await uow.configs.list_for_subscription(subscription.id)
        if len(existing) >= subscription.device_limit:
            raise LimitReached(
                f"the subscription allows {subscription.device_limit} device(s); delete one first"
            )
        servers = list(await uow.nodes.list_all(enrolled_only=True))
        candidates = await _candidates(uow, servers)
        order = placement.protocol_candidates(
            explicit=protocol,
            preferred=user.preferred_protocol,
            auto_select=user.auto_select_protocol,
            dpi_user=placement.is_dpi_user(user.language_code, user.country_code),
        )
        if protocol is not None and protocol not in PROVISIONED:
            raise Unavailable(f"{protocol.value} configs cannot be provisioned yet")
        for candidate in order:
            if candidate not in PROVISIONED:
                continue  # OpenVPN and VLESS provisioning arrive with their backends
            server_id = placement.choose_node(
                candidates,
                candidate,
                country=user.country_code,
                preferred_server_id=user.preferred_server_id,
            )
            if server_id is not None:
                server = next(s for s in servers if s.id == server_id)
                name = (device_name or "").strip() or f"{candidate.value}-{len(existing) + 1}"
                config = await self._new_config(uow, subscription, server, candidate, name)
                if subscription.server_id is None:
                    subscription.server_id = server.id
                subscription.active_protocol = candidate
                await uow.touch_nodes([server.id])
                return config
        wanted = protocol.value if protocol is not None else "any protocol"
        raise NoServerAvailable(f"no healthy node with free capacity serves {wanted} now")

    async def _new_config(
        self,
        uow: UnitOfWork,
        subscription: Subscription,
        server: Server,
        protocol: VpnProtocol,
        name: str,
    ) -> VpnConfig:
        if protocol is VpnProtocol.WIREGUARD:
            return await self._new_wireguard(uow, subscription, server, name)
        if protocol is VpnProtocol.OPENVPN:
            # The certificate is issued by the node on first export: the CA key never
            # leaves it, and a transaction must not wait on a network call.
            return await uow.configs.add(
                VpnConfig(
                    subscription_id=subscription.id,
                    server_id=server.id,
                    protocol=protocol,
                    client_id=_common_name(),
                    device_name=name[:MAX_DEVICE_NAME],
                    config_data={},
                )
            )
        params = server.vless_config or {}
        flow = params.get("flow") if params.get("flow") in VLESS_FLOWS else ""
        return await uow.configs.add(
            VpnConfig(
                subscription_id=subscription.id,
                server_id=server.id,
                protocol=protocol,
                client_id=str(uuid.uuid4()),
                device_name=name[:MAX_DEVICE_NAME],
                config_data={"flow": flow},
            )
        )

    async def _new_wireguard(
        self, uow: UnitOfWork, subscription: Subscription, server: Server, name: str
    ) -> VpnConfig:
        params = server.wireguard_config or {}
        addresses = params.get("addresses") or []
        if not addresses:
            raise NoServerAvailable(f"node {server.name} reported no WireGuard subnet")
        keys = wireguard.generate_keypair()
        psk = wireguard.generate_preshared_key()
        config = await uow.configs.add(
            VpnConfig(
                subscription_id=subscription.id,
                server_id=server.id,
                protocol=VpnProtocol.WIREGUARD,
                client_id=keys.public_key,
                device_name=name[:MAX_DEVICE_NAME],
                config_data={"public_key": keys.public_key},
            )
        )
        taken = await uow.configs.allocated_addresses(server.id)
        for address in wireguard.free_address(addresses[0], taken):
            if await uow.configs.allocate(server.id, config.id, address):
                break
        else:
            raise NoServerAvailable(f"node {server.name}'s WireGuard subnet is full")
        config.config_data = {"public_key": keys.public_key, "address": address}
        config.secret_encrypted = self._seal(config.id, keys.private_key, psk)
        return config

    def _seal(self, config_id: int, private_key: str, psk: str | None = None) -> bytes:
        return self._box.encrypt(
            json.dumps({"private_key": private_key, "preshared_key": psk}).encode(),
            config_secret_context(config_id),
        )


async def _candidates(
    uow: UnitOfWork, servers: Sequence[Server] | None = None
) -> list[placement.NodeCandidate]:
    """Every enrolled node as placement sees it."""
    if servers is None:
        servers = await uow.nodes.list_all(enrolled_only=True)
    counts = await uow.configs.counts_by_server()
    return [
        placement.NodeCandidate(
            server_id=s.id,
            status=s.status,
            is_active=s.is_active,
            is_maintenance=s.is_maintenance,
            protocols=served_protocols(s),
            country_code=s.country_code,
            configs=counts.get(s.id, 0),
            max_users=node_capacity(s),
        )
        for s in servers
    ]


def _common_name() -> str:
    """A fresh OpenVPN certificate common name: opaque, unique, safe in any file name."""
    return f"vpnbot-{secrets.token_hex(8)}"
