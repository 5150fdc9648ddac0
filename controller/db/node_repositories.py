"""Repositories of nodes, VPN configs and usage baselines (the hub's and provisioning's data)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import selectinload

from controller.db.base import utcnow
from controller.db.models import (
    AddressAllocation,
    Server,
    ServerStats,
    Subscription,
    UsageCounter,
    User,
    VpnConfig,
)
from controller.db.repositories import _Repository
from controller.domain.enums import VpnProtocol

# One statement never carries more ids than this (SQLite allows 32766 variables, asyncpg
# 32767 parameters).
CHUNK = 5000


def chunks(ids: Sequence[int], size: int = CHUNK) -> Iterable[Sequence[int]]:
    for start in range(0, len(ids), size):
        yield ids[start : start + size]


@dataclass(frozen=True, slots=True)
class Revisions:
    server_id: int
    desired: int
    applied: int


class NodeRepository(_Repository):
    async def get(self, server_id: int, *, for_update: bool = False) -> Server | None:
        return await self._one_or_none(
            sa.select(Server).where(Server.id == server_id), for_update=for_update
        )

    async def get_by_name(self, name: str, *, for_update: bool = False) -> Server | None:
        return await self._one_or_none(
            sa.select(Server).where(Server.name == name), for_update=for_update
        )

    async def get_by_token_hash(self, token_hash: str) -> Server | None:
        return await self._one_or_none(
            sa.select(Server).where(Server.enrollment_token_hash == token_hash), for_update=True
        )

    async def add(self, server: Server) -> Server:
        self.session.add(server)
        await self.session.flush()
        return server

    async def delete(self, server: Server) -> None:
        await self.session.delete(server)
        await self.session.flush()

    async def list_all(self, *, enrolled_only: bool = False) -> Sequence[Server]:
        stmt = sa.select(Server).order_by(Server.id)
        if enrolled_only:
            stmt = stmt.where(Server.enrolled_at.is_not(None))
        return (await self.session.execute(stmt)).scalars().all()

    async def revisions(self) -> list[Revisions]:
        """Desired and applied revisions of every enrolled, active node (one cheap query)."""
        stmt = sa.select(Server.id, Server.desired_revision, Server.applied_revision).where(
            Server.enrolled_at.is_not(None), Server.is_active.is_(True)
        )
        return [Revisions(*row) for row in (await self.session.execute(stmt)).all()]

    async def desired_revision(self, server_id: int) -> int | None:
        stmt = sa.select(Server.desired_revision).where(Server.id == server_id)
        return (await self.session.execute(stmt)).scalar_one_or_none()

    async def bump(self, server_ids: Sequence[int]) -> list[int]:
        """Increment ``desired_revision`` of these nodes; return the ids that exist."""
        bumped: list[int] = []
        for part in chunks(sorted(set(server_ids))):
            stmt = (
                sa.update(Server)
                .where(Server.id.in_(part))
                .values(desired_revision=Server.desired_revision + 1)
                .returning(Server.id)
                .execution_options(synchronize_session=False)
            )
            bumped.extend((await self.session.execute(stmt)).scalars().all())
        return sorted(bumped)

    async def raise_desired_revision(self, server_id: int, at_least: int) -> int:
        """Make ``desired_revision`` at least ``at_least`` (a node ahead of a restored
        database), and one more than before; return the new value."""
        stmt = (
            sa.update(Server)
            .where(Server.id == server_id)
            .values(
                desired_revision=sa.case(
                    (Server.desired_revision >= at_least, Server.desired_revision + 1),
                    else_=at_least,
                )
            )
            .returning(Server.desired_revision)
            .execution_options(synchronize_session=False)
        )
        return int((await self.session.execute(stmt)).scalar_one())

    async def update_fields(self, server_id: int, **values: Any) -> None:
        stmt = (
            sa.update(Server)
            .where(Server.id == server_id)
            .values(**values)
            .execution_options(synchronize_session=False)
        )
        await self.session.execute(stmt)

    async def servers_of_subscriptions(self, subscription_ids: Sequence[int]) -> list[int]:
        found: set[int] = set()
        for part in chunks(sorted(set(subscription_ids))):
            stmt = sa.select(VpnConfig.server_id).where(VpnConfig.subscription_id.in_(part))
            found.update((await self.session.execute(stmt.distinct())).scalars().all())
        return sorted(found)

    async def servers_of_user(self, user_id: int) -> list[int]:
        stmt = (
            sa.select(VpnConfig.server_id)
            .join(Subscription, Subscription.id == VpnConfig.subscription_id)
            .where(Subscription.user_id == user_id)
            .distinct()
        )
        return sorted((await self.session.execute(stmt)).scalars().all())

    async def add_stats(self, stats: ServerStats) -> None:
        self.session.add(stats)
        await self.session.flush()

    async def delete_stats_before(self, cutoff: datetime) -> int:
        stmt = sa.delete(ServerStats).where(ServerStats.recorded_at < cutoff)
        result = await self.session.execute(stmt)
        return int(getattr(result, "rowcount", 0) or 0)


class ConfigRepository(_Repository):
    async def get(self, config_id: int, *, for_update: bool = False) -> VpnConfig | None:
        return await self._one_or_none(
            sa.select(VpnConfig).where(VpnConfig.id == config_id), for_update=for_update
        )

    async def add(self, config: VpnConfig) -> VpnConfig:
        self.session.add(config)
        await self.session.flush()
        return config

    async def delete(self, config: VpnConfig) -> None:
        await self.session.delete(config)
        await self.session.flush()

    async def delete_for_server(self, server_id: int) -> None:
        await self.session.execute(sa.delete(VpnConfig).where(VpnConfig.server_id == server_id))

    async def list_for_subscription(self, subscription_id: int) -> Sequence[VpnConfig]:
        stmt = (
            sa.select(VpnConfig)
            .where(VpnConfig.subscription_id == subscription_id)
            .options(selectinload(VpnConfig.server))
            .order_by(VpnConfig.id)
        )
        return (await self.session.execute(stmt)).scalars().all()

    async def count_for_server(self, server_id: int) -> int:
        stmt = sa.select(sa.func.count()).where(VpnConfig.server_id == server_id)
        return int((await self.session.execute(stmt)).scalar_one())

    async def counts_by_server(self) -> dict[int, int]:
        stmt = sa.select(VpnConfig.server_id, sa.func.count()).group_by(VpnConfig.server_id)
        return {row[0]: row[1] for row in (await self.session.execute(stmt)).all()}

    async def node_rows(self, server_id: int) -> Sequence[Any]:
        """Everything the desired-state builder needs about one node's configs."""
        stmt = (
            sa.select(
                VpnConfig.id,
                VpnConfig.protocol,
                VpnConfig.client_id,
                VpnConfig.config_data,
                VpnConfig.secret_encrypted,
                VpnConfig.is_active,
                Subscription.status,
                Subscription.expires_at,
                User.is_banned,
            )
            .join(Subscription, Subscription.id == VpnConfig.subscription_id)
            .join(User, User.id == Subscription.user_id)
            .where(VpnConfig.server_id == server_id)
            .order_by(VpnConfig.id)
        )
        return (await self.session.execute(stmt)).all()

    async def by_client(
        self, server_id: int, protocol: VpnProtocol, client_ids: Sequence[str]
    ) -> dict[str, tuple[int, int]]:
        """client_id -> (config id, subscription id) for configs of this node."""
        found: dict[str, tuple[int, int]] = {}
        for start in range(0, len(client_ids), CHUNK):
            part = client_ids[start : start + CHUNK]
            stmt = sa.select(VpnConfig.client_id, VpnConfig.id, VpnConfig.subscription_id).where(
                VpnConfig.server_id == server_id,
                VpnConfig.protocol == protocol,
                VpnConfig.client_id.in_(part),
            )
            for client_id, config_id, subscription_id in (await self.session.execute(stmt)).all():
                found[client_id] = (config_id, subscription_id)
        return found

    async def add_traffic(self, config_id: int, delta_bytes: int, now: datetime) -> None:
        stmt = (
            sa.update(VpnConfig)
            .where(VpnConfig.id == config_id)
            .values(total_traffic_bytes=VpnConfig.total_traffic_bytes + delta_bytes, last_used=now)
            .execution_options(synchronize_session=False)
        )
        await self.session.execute(stmt)

    async def allocated_addresses(self, server_id: int) -> set[str]:
        stmt = sa.select(AddressAllocation.address).where(AddressAllocation.server_id == server_id)
        return set((await self.session.execute(stmt)).scalars().all())

    async def allocate(self, server_id: int, config_id: int, address: str) -> bool:
        """Claim ``address`` on the node for the config; False if another config has it.

        ON CONFLICT DO NOTHING on the unique (server_id, address): two transactions picking
        the same free address cannot both win, and the loser simply tries the next one.
        """
        stmt = (
            self._insert(AddressAllocation)
            .values(
                server_id=server_id, vpn_config_id=config_id, address=address, allocated_at=utcnow()
            )
            .on_conflict_do_nothing()
            .returning(AddressAllocation.id)
        )
        return (await self.session.execute(stmt)).scalar_one_or_none() is not None

    async def address_of(self, config_id: int) -> str | None:
        stmt = sa.select(AddressAllocation.address).where(
            AddressAllocation.vpn_config_id == config_id
        )
        return (await self.session.execute(stmt)).scalar_one_or_none()


class UsageRepository(_Repository):
    async def baselines(
        self, server_id: int, keys: Sequence[tuple[str, str]]
    ) -> dict[tuple[str, str], UsageCounter]:
        found: dict[tuple[str, str], UsageCounter] = {}
        clients = sorted({client for _, client in keys})
        for start in range(0, len(clients), CHUNK):
            part = clients[start : start + CHUNK]
            stmt = (
                sa.select(UsageCounter)
                .where(UsageCounter.server_id == server_id, UsageCounter.client_id.in_(part))
                .with_for_update()
            )
            for counter in (await self.session.execute(stmt)).scalars().all():
                found[(counter.backend, counter.client_id)] = counter
        return found

    def add(self, counter: UsageCounter) -> None:
        self.session.add(counter)
