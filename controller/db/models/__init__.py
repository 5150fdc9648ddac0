"""Every table of the controller. Importing this module registers them all on ``Base.metadata``."""

from controller.db.base import Base
from controller.db.models.admin import AdminAuditLog, AppSetting
from controller.db.models.billing import (
    Payment,
    PromoCode,
    PromoRedemption,
    Subscription,
    SubscriptionPlan,
    VpnConfig,
)
from controller.db.models.nodes import AddressAllocation, Server, ServerStats, UsageCounter
from controller.db.models.support import SupportMessage, SupportTicket
from controller.db.models.users import Referral, User, UserActivity

__all__ = [
    "AddressAllocation",
    "AdminAuditLog",
    "AppSetting",
    "Base",
    "Payment",
    "PromoCode",
    "PromoRedemption",
    "Referral",
    "Server",
    "ServerStats",
    "Subscription",
    "SubscriptionPlan",
    "SupportMessage",
    "SupportTicket",
    "UsageCounter",
    "User",
    "UserActivity",
    "VpnConfig",
]
