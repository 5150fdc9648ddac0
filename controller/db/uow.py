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

from collections.abc import Awaitable, Callable
from types import TracebackType
from typing import Self

import structlog
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from controller.db.repositories import (
    ActivityRepository,
    AppSettingsRepository,
    AuditRepository,
    PlanRepository,
    PromoRepository,
    SubscriptionRepository,
    UserRepository,
)

log = structlog.get_logger(__name__)

AfterCommit = Callable[[], Awaitable[None] | None]


class UnitOfWork:
    session: AsyncSession
    users: UserRepository
    plans: PlanRepository
    subscriptions: SubscriptionRepository
    promo: PromoRepository
    audit: AuditRepository
    activity: ActivityRepository
    app_settings: AppSettingsRepository

    def __init__(self, session_factory: async_sessionmaker[AsyncSession]) -> None:
        self._session_factory = session_factory
        self._after_commit: list[AfterCommit] = []

    async def __aenter__(self) -> Self:
        self.session = self._session_factory()
        self._after_commit = []
        self.users = UserRepository(self.session)
        self.plans = PlanRepository(self.session)
        self.subscriptions = SubscriptionRepository(self.session)
        self.promo = PromoRepository(self.session)
        self.audit = AuditRepository(self.session)
        self.activity = ActivityRepository(self.session)
        self.app_settings = AppSettingsRepository(self.session)
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


def make_uow_factory(session_factory: async_sessionmaker[AsyncSession]) -> UnitOfWorkFactory:
    return lambda: UnitOfWork(session_factory)
