"""Use cases. Each service method owns its transaction through a unit of work."""

from __future__ import annotations

from dataclasses import dataclass

from controller.db.base import utcnow
from controller.db.uow import UnitOfWorkFactory
from controller.services.base import Actor, Clock
from controller.services.plans import PlanService
from controller.services.promo import PromoService
from controller.services.subscriptions import SubscriptionService
from controller.services.users import UserService


@dataclass(frozen=True, slots=True)
class Services:
    users: UserService
    plans: PlanService
    subscriptions: SubscriptionService
    promo: PromoService


def build_services(uow_factory: UnitOfWorkFactory, clock: Clock = utcnow) -> Services:
    return Services(
        users=UserService(uow_factory, clock),
        plans=PlanService(uow_factory, clock),
        subscriptions=SubscriptionService(uow_factory, clock),
        promo=PromoService(uow_factory, clock),
    )


__all__ = ["Actor", "Services", "build_services"]
