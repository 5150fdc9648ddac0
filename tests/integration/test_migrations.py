"""The migrations build exactly the models' schema on both backends, and are reversible."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy.ext.asyncio import AsyncEngine

from controller.db import migrate
from controller.db.engine import create_engine
from controller.db.models import Base
from tests.conftest import create_pg_database, drop_pg_database

# The seed's tables and the fields each must keep (with units made explicit where the seed
# used floats: money -> *_minor integers, traffic -> *_bytes).
SEED_FIELDS: dict[str, set[str]] = {
    "users": {
        "id",
        "telegram_id",
        "username",
        "first_name",
        "last_name",
        "language_code",
        "role",
        "is_active",
        "is_banned",
        "is_premium",
        "preferred_protocol",
        "auto_select_protocol",
        "registration_ip",
        "country_code",
        "created_at",
        "updated_at",
        "last_activity",
    },
    "servers": {
        "id",
        "name",
        "description",
        "country",
        "country_code",
        "city",
        "ip_address",
        "domain",
        "supported_protocols",
        "primary_protocol",
        "vless_config",
        "openvpn_config",
        "wireguard_config",
        "max_users",
        "current_users",
        "cpu_usage",
        "memory_usage",
        "disk_usage",
        "is_active",
        "is_maintenance",
        "created_at",
        "updated_at",
        "last_check",
        # design additions: identity, enrollment, convergence
        "node_uid",
        "cert_fingerprint",
        "enrollment_token_hash",
        "enrollment_token_expires_at",
        "desired_revision",
        "applied_revision",
    },
    "subscription_plans": {
        "id",
        "name",
        "description",
        "duration_days",
        "price_minor",
        "currency",
        "traffic_limit_gb",
        "device_limit",
        "is_active",
        "is_popular",
        "is_trial",
        "sort_order",
        "created_at",
        "updated_at",
    },
    "subscriptions": {
        "id",
        "user_id",
        "plan_id",
        "server_id",
        "status",
        "active_protocol",
        "started_at",
        "expires_at",
        "traffic_used_bytes",
        "traffic_limit_bytes",
        "auto_renew",
        "created_at",
        "updated_at",
    },
    "vpn_configs": {
        "id",
        "subscription_id",
        "server_id",
        "protocol",
        "client_id",
        "config_data",
        "connection_string",
        "qr_code_path",
        "qr_code_data",
        "is_active",
        "total_traffic_bytes",
        "last_used",
        "created_at",
        "updated_at",
        "secret_encrypted",
    },
    "payments": {
        "id",
        "user_id",
        "plan_id",
        "amount_minor",
        "currency",
        "status",
        "provider",
        "external_payment_id",
        "payment_method",
        "paid_at",
        "expires_at",
        "created_at",
        "updated_at",
    },
    "support_tickets": {
        "id",
        "user_id",
        "assigned_admin_id",
        "subject",
        "description",
        "status",
        "priority",
        "closed_at",
        "created_at",
        "updated_at",
    },
    "support_messages": {"id", "ticket_id", "sender_id", "message", "created_at"},
    "user_activity": {
        "id",
        "user_id",
        "action",
        "details",
        "ip_address",
        "user_agent",
        "created_at",
    },
    "server_stats": {
        "id",
        "server_id",
        "cpu_usage",
        "memory_usage",
        "disk_usage",
        "active_connections",
        "total_traffic_bytes",
        "recorded_at",
    },
    "address_allocations": {"id", "server_id", "vpn_config_id", "address"},
    "promo_codes": {"id", "code", "kind", "value", "max_uses", "uses_count"},
    "promo_redemptions": {"id", "promo_code_id", "user_id"},
    "referrals": {"id", "referrer_id", "referred_id"},
    "admin_audit_log": {"id", "actor", "action", "target_type", "target_id", "details"},
    "app_settings": {"key", "value"},
}

SEED_ENUM_VALUES: dict[tuple[str, str], set[str]] = {
    ("users", "role"): {"client", "admin", "support"},
    ("subscriptions", "status"): {"active", "expired", "suspended", "pending"},
    ("vpn_configs", "protocol"): {"vless", "openvpn", "wireguard", "ikev2"},
    ("payments", "status"): {"pending", "completed", "failed", "refunded", "cancelled"},
    ("support_tickets", "status"): {"open", "in_progress", "waiting_client", "closed"},
}


@pytest.fixture(params=["sqlite", "postgresql"])
async def empty_engine(
    request: pytest.FixtureRequest, tmp_path: Path
) -> AsyncIterator[AsyncEngine]:
    if request.param == "sqlite":
        url = f"sqlite+aiosqlite:///{tmp_path / 'fresh.db'}"
    else:
        url = await create_pg_database()
    engine = create_engine(url)
    yield engine
    await engine.dispose()
    if request.param == "postgresql":
        await drop_pg_database(url)


def _diff(connection: sa.Connection) -> list[object]:
    context = MigrationContext.configure(connection, opts={"compare_type": True})
    return list(compare_metadata(context, Base.metadata))


async def _diff_of(engine: AsyncEngine) -> list[object]:
    async with engine.connect() as connection:
        return await connection.run_sync(_diff)


async def _tables(engine: AsyncEngine) -> set[str]:
    async with engine.connect() as connection:
        return set(await connection.run_sync(lambda c: sa.inspect(c).get_table_names()))


async def test_migrated_schema_equals_models(empty_engine: AsyncEngine) -> None:
    await migrate.upgrade(empty_engine)
    assert await _diff_of(empty_engine) == []
    assert await migrate.is_up_to_date(empty_engine)


async def test_parity_check_can_fail(empty_engine: AsyncEngine) -> None:
    """The parity check notices a schema that drifted from the models."""
    await migrate.upgrade(empty_engine)
    async with empty_engine.begin() as connection:
        await connection.execute(sa.text("ALTER TABLE users ADD COLUMN stray INTEGER"))
    assert await _diff_of(empty_engine) != []


async def test_upgrade_downgrade_upgrade(empty_engine: AsyncEngine) -> None:
    await migrate.upgrade(empty_engine)
    await migrate.downgrade(empty_engine, "base")
    assert await _tables(empty_engine) <= {"alembic_version"}
    assert await migrate.current_revisions(empty_engine) == ()
    await migrate.upgrade(empty_engine)
    assert await _diff_of(empty_engine) == []
    assert await migrate.current_revisions(empty_engine) == (migrate.head_revision(),)


async def test_upgrade_is_idempotent(empty_engine: AsyncEngine) -> None:
    await migrate.upgrade(empty_engine)
    await migrate.upgrade(empty_engine)
    assert await migrate.current_revisions(empty_engine) == (migrate.head_revision(),)


async def test_newer_database_is_refused(empty_engine: AsyncEngine) -> None:
    await migrate.upgrade(empty_engine)
    async with empty_engine.begin() as connection:
        await connection.execute(sa.text("UPDATE alembic_version SET version_num = 'f00dfacef00d'"))
    with pytest.raises(migrate.DatabaseTooNewError, match=r"f00dfacef00d.*newer version"):
        await migrate.upgrade(empty_engine)
    with pytest.raises(migrate.DatabaseTooNewError):
        await migrate.is_up_to_date(empty_engine)
    # Nothing was touched.
    async with empty_engine.connect() as connection:
        version = (
            await connection.execute(sa.text("SELECT version_num FROM alembic_version"))
        ).scalar()
    assert version == "f00dfacef00d"


async def test_every_seed_table_and_field_exists(empty_engine: AsyncEngine) -> None:
    await migrate.upgrade(empty_engine)

    def columns(connection: sa.Connection) -> dict[str, set[str]]:
        inspector = sa.inspect(connection)
        return {
            t: {c["name"] for c in inspector.get_columns(t)} for t in inspector.get_table_names()
        }

    async with empty_engine.connect() as connection:
        found = await connection.run_sync(columns)
    for table, fields in SEED_FIELDS.items():
        assert table in found, f"missing table {table}"
        assert fields <= found[table], f"{table} lacks {sorted(fields - found[table])}"


async def test_seed_enums_accept_their_values_only(empty_engine: AsyncEngine) -> None:
    """Each enum column accepts exactly the seed's values (CHECK constraints in the DB)."""
    await migrate.upgrade(empty_engine)
    for (table, column), values in SEED_ENUM_VALUES.items():
        enum_type = Base.metadata.tables[table].c[column].type
        assert set(enum_type.enums) == values, (table, column)  # type: ignore[attr-defined]
    async with empty_engine.connect() as connection:
        with pytest.raises(sa.exc.IntegrityError):
            await connection.execute(
                sa.text(
                    "INSERT INTO users (telegram_id, language_code, role, is_active, is_banned,"
                    " is_premium, auto_select_protocol, referral_code, created_at, updated_at)"
                    " VALUES (1, 'ru', 'superuser', true, false, false, true, 'r1',"
                    " CURRENT_TIMESTAMP, CURRENT_TIMESTAMP)"
                )
            )


async def test_sqlite_table_rebuild_in_a_migration_keeps_child_rows(tmp_path: Path) -> None:
    """Batch migrations rebuild SQLite tables (copy, drop, rename); dropping the old parent
    table must not cascade into its children."""
    from alembic.operations import Operations

    engine = create_engine(f"sqlite+aiosqlite:///{tmp_path / 'batch.db'}")
    try:
        await migrate.upgrade(engine)
        async with engine.begin() as connection:
            await connection.execute(
                sa.text(
                    "INSERT INTO users (id, telegram_id, language_code, role, is_active,"
                    " is_banned, is_premium, auto_select_protocol, referral_code, created_at,"
                    " updated_at) VALUES (1, 5, 'ru', 'client', 1, 0, 0, 1, 'r', '2026-01-01',"
                    " '2026-01-01')"
                )
            )
            await connection.execute(
                sa.text(
                    "INSERT INTO subscriptions (user_id, status, traffic_used_bytes, device_limit,"
                    " auto_renew, created_at, updated_at) VALUES (1, 'active', 0, 1, 0,"
                    " '2026-01-01', '2026-01-01')"
                )
            )

        def rebuild_users(connection: sa.Connection) -> None:
            operations = Operations(MigrationContext.configure(connection))
            with operations.batch_alter_table("users", recreate="always"):
                pass

        async with migrate.migration_connection(engine) as connection:
            await connection.run_sync(rebuild_users)

        async with engine.connect() as connection:
            count = (
                await connection.execute(sa.text("SELECT count(*) FROM subscriptions"))
            ).scalar()
            enforced = (await connection.execute(sa.text("PRAGMA foreign_keys"))).scalar()
        assert count == 1
        assert enforced == 1  # enforcement is back on for the pooled connection
    finally:
        await engine.dispose()


async def test_sqlite_migration_leaving_broken_foreign_keys_is_rolled_back(tmp_path: Path) -> None:
    engine = create_engine(f"sqlite+aiosqlite:///{tmp_path / 'broken.db'}")
    try:
        await migrate.upgrade(engine)
        with pytest.raises(migrate.MigrationError, match="broken foreign key"):
            async with migrate.migration_connection(engine) as connection:
                await connection.execute(
                    sa.text(
                        "INSERT INTO user_activity (user_id, action, created_at)"
                        " VALUES (999, 'x', '2026-01-01')"
                    )
                )
        async with engine.connect() as connection:
            rows = (
                await connection.execute(sa.text("SELECT count(*) FROM user_activity"))
            ).scalar()
        assert rows == 0
    finally:
        await engine.dispose()


def _check_constraints(connection: sa.Connection) -> dict[str, set[str]]:
    inspector = sa.inspect(connection)
    return {
        table: {str(c["name"]) for c in inspector.get_check_constraints(table)}
        for table in inspector.get_table_names()
        if table != "alembic_version"
    }


async def test_migrations_create_every_check_constraint_of_the_models(
    empty_engine: AsyncEngine, tmp_path: Path
) -> None:
    """Alembic's autogenerate does not compare CHECK constraints, so compare them here: the
    migrated schema against one built straight from the models on the same backend."""
    await migrate.upgrade(empty_engine)
    if empty_engine.dialect.name == "sqlite":
        reference_url = f"sqlite+aiosqlite:///{tmp_path / 'reference.db'}"
    else:
        reference_url = await create_pg_database()
    reference = create_engine(reference_url)
    try:
        async with reference.begin() as connection:
            await connection.run_sync(Base.metadata.create_all)
        async with reference.connect() as connection:
            expected = await connection.run_sync(_check_constraints)
        async with empty_engine.connect() as connection:
            migrated = await connection.run_sync(_check_constraints)
    finally:
        await reference.dispose()
        if empty_engine.dialect.name != "sqlite":
            await drop_pg_database(reference_url)
    assert sum(len(names) for names in expected.values()) >= 20  # the comparison has teeth
    assert migrated == expected
