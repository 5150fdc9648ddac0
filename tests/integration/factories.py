"""Small builders shared by the service tests: real rows made through the real services."""

from __future__ import annotations

from controller.services import Actor, Services
from controller.services.plans import PlanDraft
from controller.services.users import TelegramProfile

ADMIN = Actor.cli()
GIB = 1024**3


async def make_user(services: Services, telegram_id: int = 42) -> int:
    return (await services.users.register(TelegramProfile(telegram_id=telegram_id))).user.id


async def make_plan(
    services: Services,
    *,
    days: int = 30,
    price: int = 100,
    traffic_gb: int | None = None,
    devices: int = 1,
    name: str = "plan",
) -> int:
    plan = await services.plans.create(
        ADMIN,
        PlanDraft(
            name=name,
            duration_days=days,
            price_minor=price,
            traffic_limit_gb=traffic_gb,
            device_limit=devices,
        ),
    )
    return plan.id
