"""VPN servers (= nodes), their health samples and tunnel address allocations."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column, relationship

from controller.db.base import Base, TimestampMixin, UTCDateTime, utcnow
from controller.db.models._types import IdType, NodeStatusType, VpnProtocolType, fk
from controller.domain.enums import NodeStatus, VpnProtocol

if TYPE_CHECKING:
    from controller.db.models.billing import VpnConfig


def new_node_uid() -> str:
    return str(uuid.uuid4())


class Server(TimestampMixin, Base):
    """A VPN host running the node agent.

    ``node_uid`` is the identity written into the agent's certificate SAN. The hub drives
    the node until ``applied_revision`` (what the agent confirmed) reaches
    ``desired_revision`` (bumped by every change in the same transaction as the change).
    ``vless_config``, ``openvpn_config`` and ``wireguard_config`` hold the public parameters
    the node reports (public keys, ports, subnets, Reality server names): never secrets.
    """

    __tablename__ = "servers"
    __table_args__ = (
        sa.CheckConstraint("max_users >= 0", name="max_users_non_negative"),
        sa.CheckConstraint("current_users >= 0", name="current_users_non_negative"),
        sa.CheckConstraint("grpc_port BETWEEN 1 AND 65535", name="grpc_port_range"),
        sa.CheckConstraint("desired_revision >= 0", name="desired_revision_non_negative"),
        sa.Index(None, "country_code"),
        sa.Index(None, "is_active"),
        sa.Index(None, "primary_protocol"),
    )

    id: Mapped[int] = mapped_column(IdType, primary_key=True)
    name: Mapped[str] = mapped_column(sa.String(64), unique=True)
    description: Mapped[str | None] = mapped_column(sa.Text)

    country: Mapped[str] = mapped_column(sa.String(64), default="")
    country_code: Mapped[str] = mapped_column(sa.String(2), default="")
    city: Mapped[str] = mapped_column(sa.String(64), default="")

    ip_address: Mapped[str] = mapped_column(sa.String(255))
    domain: Mapped[str | None] = mapped_column(sa.String(255))
    grpc_port: Mapped[int] = mapped_column(default=50051)

    supported_protocols: Mapped[list[str]] = mapped_column(sa.JSON, default=list)
    primary_protocol: Mapped[VpnProtocol] = mapped_column(
        VpnProtocolType, default=VpnProtocol.VLESS
    )
    vless_config: Mapped[dict[str, Any] | None] = mapped_column(sa.JSON)
    openvpn_config: Mapped[dict[str, Any] | None] = mapped_column(sa.JSON)
    wireguard_config: Mapped[dict[str, Any] | None] = mapped_column(sa.JSON)

    max_users: Mapped[int] = mapped_column(default=100)
    current_users: Mapped[int] = mapped_column(default=0)
    cpu_usage: Mapped[float] = mapped_column(default=0.0)
    memory_usage: Mapped[float] = mapped_column(default=0.0)
    disk_usage: Mapped[float] = mapped_column(default=0.0)

    is_active: Mapped[bool] = mapped_column(default=True)
    is_maintenance: Mapped[bool] = mapped_column(default=False)
    last_check: Mapped[datetime | None]

    # Node identity and enrollment (mTLS).
    node_uid: Mapped[str] = mapped_column(sa.String(64), unique=True, default=new_node_uid)
    cert_fingerprint: Mapped[str | None] = mapped_column(sa.String(64))
    cert_serial: Mapped[str | None] = mapped_column(sa.String(64))
    cert_not_after: Mapped[datetime | None]
    enrollment_token_hash: Mapped[str | None] = mapped_column(sa.String(128), unique=True)
    enrollment_token_expires_at: Mapped[datetime | None]
    enrolled_at: Mapped[datetime | None]

    # Desired-state convergence and agent health.
    desired_revision: Mapped[int] = mapped_column(sa.BigInteger, default=0)
    applied_revision: Mapped[int] = mapped_column(sa.BigInteger, default=0)
    agent_boot_id: Mapped[str | None] = mapped_column(sa.String(64))
    agent_version: Mapped[str | None] = mapped_column(sa.String(32))
    status: Mapped[NodeStatus] = mapped_column(NodeStatusType, default=NodeStatus.UNKNOWN)
    status_reason: Mapped[str | None] = mapped_column(sa.String(500))
    last_seen_at: Mapped[datetime | None]

    vpn_configs: Mapped[list[VpnConfig]] = relationship(back_populates="server")

    def __repr__(self) -> str:
        return f"<Server id={self.id} name={self.name!r}>"


class ServerStats(Base):
    """One health sample of a node, as the hub recorded it (kept for a retention period)."""

    __tablename__ = "server_stats"
    __table_args__ = (
        sa.Index(None, "server_id", "recorded_at"),
        sa.Index(None, "recorded_at"),
    )

    id: Mapped[int] = mapped_column(IdType, primary_key=True)
    server_id: Mapped[int] = mapped_column(fk("servers.id", "CASCADE"))
    cpu_usage: Mapped[float]
    memory_usage: Mapped[float]
    disk_usage: Mapped[float]
    active_connections: Mapped[int] = mapped_column(default=0)
    total_traffic_bytes: Mapped[int] = mapped_column(sa.BigInteger, default=0)
    network_rx_bytes: Mapped[int] = mapped_column(sa.BigInteger, default=0)
    network_tx_bytes: Mapped[int] = mapped_column(sa.BigInteger, default=0)
    load_avg_1m: Mapped[float | None]
    uptime_seconds: Mapped[int | None] = mapped_column(sa.BigInteger)
    recorded_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class AddressAllocation(Base):
    """A tunnel address handed to one config on one server.

    The unique (server_id, address) pair is what makes allocation race-free: two
    transactions picking the same free address cannot both commit.
    """

    __tablename__ = "address_allocations"
    __table_args__ = (sa.UniqueConstraint("server_id", "address"),)

    id: Mapped[int] = mapped_column(IdType, primary_key=True)
    server_id: Mapped[int] = mapped_column(fk("servers.id", "CASCADE"))
    vpn_config_id: Mapped[int] = mapped_column(fk("vpn_configs.id", "CASCADE"), unique=True)
    address: Mapped[str] = mapped_column(sa.String(45))
    allocated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class UsageCounter(Base):
    """The last cumulative totals the controller counted for one client of one node.

    Agents report cumulative totals (never read-and-reset), so the traffic to add is the
    difference from these baselines: reading the same ledger entry twice adds nothing. A new
    ``ledger_id`` means the node's ledger was recreated and its totals restarted from zero.
    """

    __tablename__ = "usage_counters"
    __table_args__ = (
        sa.UniqueConstraint("server_id", "backend", "client_id"),
        sa.Index(None, "vpn_config_id"),
        sa.Index(None, "subscription_id"),
    )

    id: Mapped[int] = mapped_column(IdType, primary_key=True)
    server_id: Mapped[int] = mapped_column(fk("servers.id", "CASCADE"))
    backend: Mapped[str] = mapped_column(sa.String(64))
    client_id: Mapped[str] = mapped_column(sa.String(255))
    ledger_id: Mapped[str] = mapped_column(sa.String(64))
    # Whose traffic this is, fixed when the client is first seen: a client's last sample
    # arrives after a re-issue (new key) or a deletion, when no config has its id any more.
    vpn_config_id: Mapped[int | None] = mapped_column(fk("vpn_configs.id", "SET NULL"))
    subscription_id: Mapped[int | None] = mapped_column(fk("subscriptions.id", "SET NULL"))
    rx_total: Mapped[int] = mapped_column(sa.BigInteger, default=0)
    tx_total: Mapped[int] = mapped_column(sa.BigInteger, default=0)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
