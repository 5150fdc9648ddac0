"""Use cases. Each service method owns its transaction through a unit of work."""

from __future__ import annotations

import os
from dataclasses import dataclass

from controller.crypto import SecretBox
from controller.db.base import utcnow
from controller.db.uow import UnitOfWorkFactory
from controller.payments import providers_from
from controller.services.base import Actor, Clock
from controller.services.config_render import ProfileIssuer
from controller.services.configs import ConfigService
from controller.services.nodes import NodeService
from controller.services.payments import PaymentService
from controller.services.plans import PlanService
from controller.services.promo import PromoService
from controller.services.subscriptions import SubscriptionService
from controller.services.support import SupportService
from controller.services.users import UserService
from controller.settings import EnrollmentSettings, PaymentSettings, ReferralSettings, VpnSettings


@dataclass(frozen=True, slots=True)
class Services:
    users: UserService
    plans: PlanService
    subscriptions: SubscriptionService
    promo: PromoService
    nodes: NodeService
    configs: ConfigService
    payments: PaymentService
    support: SupportService


def build_services(
    uow_factory: UnitOfWorkFactory,
    clock: Clock = utcnow,
    *,
    secrets: SecretBox | None = None,
    enrollment: EnrollmentSettings | None = None,
    vpn: VpnSettings | None = None,
    issuer: ProfileIssuer | None = None,
    payments: PaymentSettings | None = None,
    referral: ReferralSettings | None = None,
) -> Services:
    # Without a master key (unit tests) secrets are sealed under a throwaway key.
    box = secrets if secrets is not None else SecretBox(os.urandom(32))
    return Services(
        users=UserService(uow_factory, clock),
        plans=PlanService(uow_factory, clock),
        subscriptions=SubscriptionService(uow_factory, clock),
        promo=PromoService(uow_factory, clock),
        nodes=NodeService(uow_factory, clock, box, enrollment or EnrollmentSettings()),
        configs=ConfigService(uow_factory, clock, box, vpn or VpnSettings(), issuer),
        payments=PaymentService(
            uow_factory,
            clock,
            providers_from(payments or PaymentSettings()),
            referral or ReferralSettings(),
        ),
        support=SupportService(uow_factory, clock),
    )


__all__ = ["Actor", "Services", "build_services"]
