"""Enumerations shared by the data model, the services and the bots.

The values are what the database stores; never rename a value without a migration.
"""

from enum import StrEnum


class UserRole(StrEnum):
    CLIENT = "client"
    ADMIN = "admin"
    SUPPORT = "support"


class SubscriptionStatus(StrEnum):
    PENDING = "pending"
    ACTIVE = "active"
    EXPIRED = "expired"
    SUSPENDED = "suspended"


class VpnProtocol(StrEnum):
    VLESS = "vless"
    OPENVPN = "openvpn"
    WIREGUARD = "wireguard"
    IKEV2 = "ikev2"


class PaymentStatus(StrEnum):
    PENDING = "pending"
    COMPLETED = "completed"
    FAILED = "failed"
    REFUNDED = "refunded"
    CANCELLED = "cancelled"


class TicketStatus(StrEnum):
    OPEN = "open"
    IN_PROGRESS = "in_progress"
    WAITING_CLIENT = "waiting_client"
    CLOSED = "closed"


class TicketPriority(StrEnum):
    LOW = "low"
    MEDIUM = "medium"
    HIGH = "high"
    CRITICAL = "critical"


class NodeStatus(StrEnum):
    """Health of a node as the hub last saw it."""

    UNKNOWN = "unknown"
    ONLINE = "online"
    DEGRADED = "degraded"
    DOWN = "down"


class PromoKind(StrEnum):
    """What a promo code gives: extra days, or a percent off a plan's price."""

    DAYS = "days"
    PERCENT = "percent"


class SuspendReason(StrEnum):
    ADMIN = "admin"
    TRAFFIC_LIMIT = "traffic_limit"
    BANNED = "banned"
    PAYMENT = "payment"
