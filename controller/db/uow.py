"""The unit of work: one transaction, the repositories bound to it, and after-commit hooks.

Services own transactions::

    async with uow_factory() as uow:
        user = await uow.users.get(user_id)
        ...
        await uow.commit()

Leaving the block without ``commit()`` rolls back; objects the block loaded stay
readable. Repositories never commit. Callbacks
registered with :meth:`UnitOfWork.after_commit` run only once the commit has succeeded (the
hub uses this to wake up for nodes whose desired revision the transaction bumped).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable
from types import TracebackType
from typing import Self

import sqlalchemy as sa
import structlog
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from controller.db.billing_repositories import (
    PaymentRepository,
    PromoRepository,
    ReferralRepository,
)
from controller.db.engine import READ_ONLY
from controller.db.node_repositories import ConfigRepository, NodeRepository, UsageRepository
from controller.db.repositories import (
    ActivityRepository,
    AppSettingsRepository,
    AuditRepository,
    PlanRepository,
    SubscriptionRepository,
    SupportRepository,
    UserRepository,
)

log = structlog.get_logger(__name__)

AfterCommit = Callable[[], Awaitable[None] | None]

# PostgreSQL NOTIFY channel on which committed desired-revision bumps are announced to every
# controller process (the payload is a comma-separated list of server ids).
NODES_CHANNEL = "vpnbot_nodes"
_NOTIFY_PAYLOAD_MAX = 7000  # NOTIFY payloads must stay under 8000 bytes


def _notify_payloads(server_ids: list[int]) -> list[str]:
    payloads: list[str] = []
    current: list[str] = []
    for server_id in server_ids:
        if current and len(",".join(current)) > _NOTIFY_PAYLOAD_MAX:
            payloads.append(",".join(current))
            current = []
        current.append(str(server_id))
    if current:
        payloads.append(",".join(current))
    return payloads


class NodeEvents:
    """In-process announcements of nodes whose desired state changed (the hub listens)."""

    def __init__(self) -> None:
        self._listeners: list[Callable[[list[int]], None]] = []

    def subscribe(self, listener: Callable[[list[int]], None]) -> Callable[[], None]:
        self._listeners.append(listener)
        return lambda: self._listeners.remove(listener)

    def publish(self, server_ids: list[int]) -> None:
        for listener in list(self._listeners):
            listener(server_ids)


class UnitOfWork:
    session: AsyncSession
    users: UserRepository
    plans: PlanRepository
    subscriptions: SubscriptionRepository
    promo: PromoRepository
    audit: AuditRepository
    activity: ActivityRepository
    app_settings: AppSettingsRepository
    nodes: NodeRepository
    configs: ConfigRepository
    usage: UsageRepository
    payments: PaymentRepository
    referrals: ReferralRepository
    support: SupportRepository

    def __init__(
        self,
        session_factory: async_sessionmaker[AsyncSession],
        events: NodeEvents | None = None,
    ) -> None:
        self._session_factory = session_factory
        self._events = events
        self._read_only = False
        self._after_commit: list[AfterCommit] = []

    def read_only(self) -> Self:
        """Use as ``async with uow_factory().read_only() as uow`` for work that only reads (on
        SQLite it then takes no write lock; on PostgreSQL each statement runs on its own, so
        row locks and a write are not available there)."""
        self._read_only = True
        return self

    async def __aenter__(self) -> Self:
        self.session = self._session_factory()
        if self._read_only:
            options: dict[str, object] = {READ_ONLY: True}
            if self.dialect == "postgresql":
                # Each statement its own transaction: the same per-statement snapshots as READ
                # COMMITTED in one transaction, without the BEGIN and ROLLBACK round trips,
                # and no "idle in transaction" session while the caller works.
                options["isolation_level"] = "AUTOCOMMIT"
            await self.session.connection(execution_options=options)
        self._after_commit = []
        self.users = UserRepository(self.session)
        self.plans = PlanRepository(self.session)
        self.subscriptions = SubscriptionRepository(self.session)
        self.promo = PromoRepository(self.session)
        self.audit = AuditRepository(self.session)
        self.activity = ActivityRepository(self.session)
        self.app_settings = AppSettingsRepository(self.session)
        self.nodes = NodeRepository(self.session)
        self.configs = ConfigRepository(self.session)
        self.usage = UsageRepository(self.session)
        self.payments = PaymentRepository(self.session)
        self.referrals = ReferralRepository(self.session)
        self.support = SupportRepository(self.session)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        # close() ends an uncommitted transaction with a rollback at the connection level but,
        # unlike Session.rollback(), leaves loaded objects readable for the caller.
        try:
            if exc_type is not None:
                await self.session.rollback()
        finally:
            await self.session.close()

    @property
    def dialect(self) -> str:
        return self.session.get_bind().dialect.name

    async def touch_nodes(self, server_ids: Iterable[int]) -> list[int]:
        """Bump the desired revision of these nodes in this transaction and wake the hub
        once it commits: in this process directly, in others by PostgreSQL NOTIFY (which is
        transactional, so a rolled-back change wakes nobody)."""
        bumped = await self.nodes.bump(sorted(set(server_ids)))
        if not bumped:
            return bumped
        if self.dialect == "postgresql":
            for payload in _notify_payloads(bumped):
                await self.session.execute(sa.select(sa.func.pg_notify(NODES_CHANNEL, payload)))
        events = self._events
        if events is not None:
            self.after_commit(lambda: events.publish(bumped))
        return bumped

    async def touch_subscriptions(self, subscription_ids: Iterable[int]) -> list[int]:
        """Bump every node that carries a config of these subscriptions."""
        return await self.touch_nodes(
            await self.nodes.servers_of_subscriptions(sorted(set(subscription_ids)))
        )

    async def touch_user(self, user_id: int) -> list[int]:
        return await self.touch_nodes(await self.nodes.servers_of_user(user_id))

    def after_commit(self, callback: AfterCommit) -> None:
        self._after_commit.append(callback)

    async def commit(self) -> None:
        await self.session.commit()
        callbacks, self._after_commit = self._after_commit, []
        for callback in callbacks:
            try:
                result = callback()
                if result is not None:
                    await result
            except Exception:  # a failed notification must not undo a committed change
                log.exception("after_commit_callback_failed")

    async def rollback(self) -> None:
        self._after_commit = []
        await self.session.rollback()


UnitOfWorkFactory = Callable[[], UnitOfWork]


def make_uow_factory(
    session_factory: async_sessionmaker[AsyncSession], events: NodeEvents | None = None
) -> UnitOfWorkFactory:
    return lambda: UnitOfWork(session_factory, events)
