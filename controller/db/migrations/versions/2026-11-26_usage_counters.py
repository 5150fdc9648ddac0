"""usage counters: the controller's baselines of each node's cumulative usage

Revision ID: 4b1d0c2e7a91
Revises: 76219494ff0e
Create Date: 2026-11-26 10:00:00+00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "4b1d0c2e7a91"
down_revision: str | None = "76219494ff0e"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "usage_counters",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column(
            "server_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column("backend", sa.String(length=64), nullable=False),
        sa.Column("client_id", sa.String(length=255), nullable=False),
        sa.Column("ledger_id", sa.String(length=64), nullable=False),
        sa.Column(
            "vpn_config_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=True
        ),
        sa.Column(
            "subscription_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=True
        ),
        sa.Column("rx_total", sa.BigInteger(), nullable=False),
        sa.Column("tx_total", sa.BigInteger(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["server_id"],
            ["servers.id"],
            name=op.f("fk_usage_counters_server_id_servers"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["vpn_config_id"],
            ["vpn_configs.id"],
            name=op.f("fk_usage_counters_vpn_config_id_vpn_configs"),
            ondelete="SET NULL",
        ),
        sa.ForeignKeyConstraint(
            ["subscription_id"],
            ["subscriptions.id"],
            name=op.f("fk_usage_counters_subscription_id_subscriptions"),
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_usage_counters")),
        sa.UniqueConstraint(
            "server_id",
            "backend",
            "client_id",
            name=op.f("uq_usage_counters_server_id_backend_client_id"),
        ),
    )
    op.create_index(
        op.f("ix_usage_counters_vpn_config_id"), "usage_counters", ["vpn_config_id"], unique=False
    )
    op.create_index(
        op.f("ix_usage_counters_subscription_id"),
        "usage_counters",
        ["subscription_id"],
        unique=False,
    )


def downgrade() -> None:
    op.drop_index(op.f("ix_usage_counters_subscription_id"), table_name="usage_counters")
    op.drop_index(op.f("ix_usage_counters_vpn_config_id"), table_name="usage_counters")
    op.drop_table("usage_counters")
