"""Column helpers shared by the model modules."""

from __future__ import annotations

import sqlalchemy as sa

from controller.db.base import enum_column_type
from controller.domain import enums

# SQLite only auto-increments an INTEGER PRIMARY KEY; PostgreSQL gets a bigint identity.
IdType = sa.BigInteger().with_variant(sa.Integer(), "sqlite")

UserRoleType = enum_column_type(enums.UserRole, "user_role")
SubscriptionStatusType = enum_column_type(enums.SubscriptionStatus, "subscription_status")
VpnProtocolType = enum_column_type(enums.VpnProtocol, "vpn_protocol")
PaymentStatusType = enum_column_type(enums.PaymentStatus, "payment_status")
TicketStatusType = enum_column_type(enums.TicketStatus, "ticket_status")
TicketPriorityType = enum_column_type(enums.TicketPriority, "ticket_priority")
NodeStatusType = enum_column_type(enums.NodeStatus, "node_status")
PromoKindType = enum_column_type(enums.PromoKind, "promo_kind")
SuspendReasonType = enum_column_type(enums.SuspendReason, "suspend_reason")


def fk(target: str, ondelete: str) -> sa.ForeignKey:
    """Every foreign key states what happens when its target row is deleted."""
    return sa.ForeignKey(target, ondelete=ondelete)
