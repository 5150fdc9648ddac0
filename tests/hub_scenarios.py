"""Small builders for the hub integration tests, on top of ``tests.hub_support``: users with
placed configs, reads of the rows the hub writes, services that commit without waking the hub
in-process (as another controller process would), and hubs run under a test's control."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import sqlalchemy as sa

from controller.db.engine import create_session_factory
from controller.db.models import ServerStats, Subscription, VpnConfig
from controller.db.uow import make_uow_factory
from controller.nodes.hub import Hub
from controller.services import Services, build_services
from controller.settings import HubSettings
from tests.hub_support import FAST_HUB, ControllerHarness, Node
from tests.integration.factories import ADMIN


def hub_settings(**changes: Any) -> HubSettings:
    """FAST_HUB with some intervals changed."""
    return FAST_HUB.model_copy(update=changes)


async def give_config(
    harness: ControllerHarness,
    telegram_id: int,
    *,
    days: int | None = 30,
    plan_id: int | None = None,
    services: Services | None = None,
) -> VpnConfig:
    """Grant a subscription (days or a plan) and export a WireGuard config for it."""
    services = services or harness.services
    if plan_id is not None:
        await services.subscriptions.grant(ADMIN, telegram_id, plan_id=plan_id)
    else:
        await services.subscriptions.grant(ADMIN, telegram_id, days=days)
    rendered = await services.configs.export(telegram_id)
    return await config_row(harness, rendered.config_id)


async def config_row(harness: ControllerHarness, config_id: int) -> VpnConfig:
    async with harness.uow_factory() as uow:
        found = await uow.configs.get(config_id)
        assert found is not None
        return found


async def subscription_row(harness: ControllerHarness, subscription_id: int) -> Subscription:
    async with harness.uow_factory() as uow:
        found = await uow.subscriptions.get(subscription_id)
        assert found is not None
        return found


async def placed_on(harness: ControllerHarness, node: Node) -> set[str]:
    """Client ids of the active configs the database places on ``node``."""
    async with harness.uow_factory() as uow:
        rows = await uow.session.execute(
            sa.select(VpnConfig.client_id).where(
                VpnConfig.server_id == node.server_id, VpnConfig.is_active.is_(True)
            )
        )
        return set(rows.scalars())


async def stats_rows(harness: ControllerHarness, node: Node) -> list[ServerStats]:
    async with harness.uow_factory() as uow:
        rows = await uow.session.execute(
            sa.select(ServerStats)
            .where(ServerStats.server_id == node.server_id)
            .order_by(ServerStats.recorded_at, ServerStats.id)
        )
        return list(rows.scalars())


async def wait_peers(
    harness: ControllerHarness, node: Node, expected: set[str], *, within: float = 10.0
) -> None:
    await harness.wait_for(
        lambda: node.peers() == expected,
        within=within,
        what=f"peers of {node.name} to become {sorted(expected)} (have {sorted(node.peers())})",
    )


def quiet_services(harness: ControllerHarness) -> Services:
    """Services on the harness's database, box and clock whose commits publish no in-process
    event: the hub hears of them only the way it hears of another process's changes."""
    factory = make_uow_factory(create_session_factory(harness.engine))
    return build_services(factory, harness.clock, secrets=harness.box)


@contextlib.asynccontextmanager
async def running(hub: Hub) -> AsyncIterator[asyncio.Task[None]]:
    """Run a hub for the block; the task is yielded so a test may stop it early."""
    task = asyncio.create_task(hub.run())
    try:
        yield task
    finally:
        await stop(task)


async def stop(task: asyncio.Task[None]) -> None:
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
