"""Plans, subscriptions, VPN configs, payments and promo codes: billing and access together.

Money is an integer count of minor units (``price_minor``, ``amount_minor``) plus a currency
code, never a float. Traffic is counted in bytes (``*_bytes``); plans state their limit in
whole gigabytes (GiB) because that is what sellers type.
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column, relationship

from controller.db.base import Base, TimestampMixin, UTCDateTime, utcnow
from controller.db.models._types import (
    IdType,
    PaymentStatusType,
    PromoKindType,
    SubscriptionStatusType,
    SuspendReasonType,
    VpnProtocolType,
    fk,
)
from controller.domain.enums import (
    PaymentStatus,
    PromoKind,
    SubscriptionStatus,
    SuspendReason,
    VpnProtocol,
)

if TYPE_CHECKING:
    from controller.db.models.nodes import Server
    from controller.db.models.users import User


class SubscriptionPlan(TimestampMixin, Base):
    __tablename__ = "subscription_plans"
    __table_args__ = (
        sa.CheckConstraint("duration_days > 0", name="duration_positive"),
        sa.CheckConstraint("price_minor >= 0", name="price_non_negative"),
        sa.CheckConstraint("device_limit > 0", name="device_limit_positive"),
        sa.CheckConstraint(
            "traffic_limit_gb IS NULL OR traffic_limit_gb > 0", name="traffic_limit_positive"
        ),
        sa.Index(None, "is_active", "sort_order"),
    )

    id: Mapped[int] = mapped_column(IdType, primary_key=True)
    name: Mapped[str] = mapped_column(sa.String(128))
    description: Mapped[str | None] = mapped_column(sa.Text)
    duration_days: Mapped[int]
    price_minor: Mapped[int] = mapped_column(sa.BigInteger)
    currency: Mapped[str] = mapped_column(sa.String(4), default="RUB")
    traffic_limit_gb: Mapped[int | None]  # None = unlimited
    device_limit: Mapped[int] = mapped_column(default=1)
    is_active: Mapped[bool] = mapped_column(default=True)
    is_popular: Mapped[bool] = mapped_column(default=False)
    is_trial: Mapped[bool] = mapped_column(default=False)
    sort_order: Mapped[int] = mapped_column(default=0)


class Subscription(TimestampMixin, Base):
    """A user's right to use the VPN until ``expires_at``, within its traffic and device limits.

    Limits are copied from the plan when the subscription is created or renewed, so editing a
    plan never changes what a client already paid for.
    """

    __tablename__ = "subscriptions"
    __table_args__ = (
        sa.CheckConstraint("traffic_used_bytes >= 0", name="traffic_used_non_negative"),
        sa.CheckConstraint("device_limit > 0", name="device_limit_positive"),
        sa.Index(None, "status", "expires_at"),
        sa.Index(None, "user_id", "status"),
        sa.Index(None, "plan_id"),
        sa.Index(None, "server_id"),
    )

    id: Mapped[int] = mapped_column(IdType, primary_key=True)
    user_id: Mapped[int] = mapped_column(fk("users.id", "CASCADE"))
    # Plans are deactivated, not deleted, once anything refers to them.
    plan_id: Mapped[int | None] = mapped_column(fk("subscription_plans.id", "RESTRICT"))
    server_id: Mapped[int | None] = mapped_column(fk("servers.id", "SET NULL"))

    status: Mapped[SubscriptionStatus] = mapped_column(
        SubscriptionStatusType, default=SubscriptionStatus.PENDING
    )
    active_protocol: Mapped[VpnProtocol | None] = mapped_column(VpnProtocolType)
    started_at: Mapped[datetime | None]
    expires_at: Mapped[datetime | None]
    suspended_at: Mapped[datetime | None]
    suspend_reason: Mapped[SuspendReason | None] = mapped_column(SuspendReasonType)

    traffic_used_bytes: Mapped[int] = mapped_column(sa.BigInteger, default=0)
    traffic_limit_bytes: Mapped[int | None] = mapped_column(sa.BigInteger)  # None = unlimited
    device_limit: Mapped[int] = mapped_column(default=1)
    auto_renew: Mapped[bool] = mapped_column(default=False)

    user: Mapped[User] = relationship(back_populates="subscriptions")
    plan: Mapped[SubscriptionPlan | None] = relationship()
    vpn_configs: Mapped[list[VpnConfig]] = relationship(
        back_populates="subscription", passive_deletes=True
    )


class VpnConfig(TimestampMixin, Base):
    """One device's access on one server with one protocol.

    ``client_id`` is what the node knows the client by (WireGuard public key, VLESS UUID,
    OpenVPN common name). ``config_data`` holds public, non-secret parameters; private keys
    and issued profiles live only in ``secret_encrypted`` (AES-GCM under the master key).
    """

    __tablename__ = "vpn_configs"
    __table_args__ = (
        sa.UniqueConstraint("server_id", "protocol", "client_id"),
        sa.Index(None, "subscription_id"),
    )

    id: Mapped[int] = mapped_column(IdType, primary_key=True)
    subscription_id: Mapped[int] = mapped_column(fk("subscriptions.id", "CASCADE"))
    # A node that still carries configs cannot be deleted by accident.
    server_id: Mapped[int] = mapped_column(fk("servers.id", "RESTRICT"))
    protocol: Mapped[VpnProtocol] = mapped_column(VpnProtocolType)
    client_id: Mapped[str] = mapped_column(sa.String(255))
    device_name: Mapped[str | None] = mapped_column(sa.String(64))

    config_data: Mapped[dict[str, Any]] = mapped_column(sa.JSON, default=dict)
    secret_encrypted: Mapped[bytes | None] = mapped_column(sa.LargeBinary)
    connection_string: Mapped[str | None] = mapped_column(sa.Text)
    qr_code_path: Mapped[str | None] = mapped_column(sa.String(500))
    qr_code_data: Mapped[str | None] = mapped_column(sa.Text)

    is_active: Mapped[bool] = mapped_column(default=True)
    total_traffic_bytes: Mapped[int] = mapped_column(sa.BigInteger, default=0)
    last_used: Mapped[datetime | None]

    subscription: Mapped[Subscription] = relationship(back_populates="vpn_configs")
    server: Mapped[Server] = relationship(back_populates="vpn_configs")


class Payment(TimestampMixin, Base):
    """A payment attempt. ``(provider, external_payment_id)`` is unique so a provider's
    notification delivered twice can never be counted twice."""

    __tablename__ = "payments"
    __table_args__ = (
        sa.UniqueConstraint("provider", "external_payment_id"),
        sa.CheckConstraint("amount_minor >= 0", name="amount_non_negative"),
        sa.Index(None, "user_id", "created_at"),
        sa.Index(None, "status"),
    )

    id: Mapped[int] = mapped_column(IdType, primary_key=True)
    # Money history outlives nothing by accident: a user with payments cannot be deleted.
    user_id: Mapped[int] = mapped_column(fk("users.id", "RESTRICT"))
    plan_id: Mapped[int | None] = mapped_column(fk("subscription_plans.id", "RESTRICT"))
    subscription_id: Mapped[int | None] = mapped_column(fk("subscriptions.id", "SET NULL"))
    promo_code_id: Mapped[int | None] = mapped_column(fk("promo_codes.id", "SET NULL"))

    amount_minor: Mapped[int] = mapped_column(sa.BigInteger)
    currency: Mapped[str] = mapped_column(sa.String(4))
    status: Mapped[PaymentStatus] = mapped_column(PaymentStatusType, default=PaymentStatus.PENDING)
    provider: Mapped[str] = mapped_column(sa.String(32))
    external_payment_id: Mapped[str | None] = mapped_column(sa.String(255))
    payment_method: Mapped[str | None] = mapped_column(sa.String(50))
    details: Mapped[dict[str, Any] | None] = mapped_column(sa.JSON)

    paid_at: Mapped[datetime | None]
    expires_at: Mapped[datetime | None]
    refunded_at: Mapped[datetime | None]

    user: Mapped[User] = relationship(back_populates="payments")


class PromoCode(TimestampMixin, Base):
    """Extra days or a percent off, with an optional total usage limit; one use per user."""

    __tablename__ = "promo_codes"
    __table_args__ = (
        sa.CheckConstraint("value > 0", name="value_positive"),
        sa.CheckConstraint("uses_count >= 0", name="uses_non_negative"),
        sa.CheckConstraint("max_uses IS NULL OR max_uses > 0", name="max_uses_positive"),
        sa.CheckConstraint("max_uses IS NULL OR uses_count <= max_uses", name="within_max_uses"),
    )

    id: Mapped[int] = mapped_column(IdType, primary_key=True)
    code: Mapped[str] = mapped_column(sa.String(32), unique=True)
    kind: Mapped[PromoKind] = mapped_column(PromoKindType)
    value: Mapped[int]
    max_uses: Mapped[int | None]
    uses_count: Mapped[int] = mapped_column(default=0)
    # Plans are deactivated, not deleted; deleting one would erase (or, with SET NULL,
    # widen to every plan) the codes made for it and their redemption history.
    plan_id: Mapped[int | None] = mapped_column(fk("subscription_plans.id", "RESTRICT"))
    valid_from: Mapped[datetime | None]
    valid_until: Mapped[datetime | None]
    is_active: Mapped[bool] = mapped_column(default=True)
    description: Mapped[str | None] = mapped_column(sa.String(255))
    created_by_id: Mapped[int | None] = mapped_column(fk("users.id", "SET NULL"))


class PromoRedemption(Base):
    __tablename__ = "promo_redemptions"
    __table_args__ = (sa.UniqueConstraint("promo_code_id", "user_id"),)

    id: Mapped[int] = mapped_column(IdType, primary_key=True)
    promo_code_id: Mapped[int] = mapped_column(fk("promo_codes.id", "CASCADE"))
    user_id: Mapped[int] = mapped_column(fk("users.id", "CASCADE"))
    subscription_id: Mapped[int | None] = mapped_column(fk("subscriptions.id", "SET NULL"))
    payment_id: Mapped[int | None] = mapped_column(fk("payments.id", "SET NULL"))
    redeemed_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
