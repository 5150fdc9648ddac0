"""``vpnbot db``: schema migrations."""

from __future__ import annotations

import click

from controller.cli.common import confirm_destructive, run, settings_from
from controller.db import migrate
from controller.db.engine import create_engine, ping


@click.group("db")
def db_group() -> None:
    """Database schema: upgrade, downgrade, show the current revision."""


async def _with_engine(url: str, action: str, revision: str | None = None) -> str:
    engine = create_engine(url)
    try:
        await ping(engine)
        if action == "upgrade":
            await migrate.upgrade(engine, revision or "head")
        elif action == "downgrade":
            assert revision is not None
            await migrate.downgrade(engine, revision)
        revisions = await migrate.current_revisions(engine)
        migrate.check_known(revisions)
        return ", ".join(revisions) or "(empty database)"
    finally:
        await engine.dispose()


@db_group.command("upgrade")
@click.option("--revision", default="head", show_default=True, help="Target revision.")
@click.pass_context
def upgrade(ctx: click.Context, revision: str) -> None:
    """Apply migrations up to REVISION (default: the newest)."""
    settings = settings_from(ctx)
    current = run(_with_engine(settings.database_url, "upgrade", revision))
    click.echo(f"database at revision {current}")


@db_group.command("downgrade")
@click.argument("revision")
@click.option("--yes", is_flag=True, help="Do not ask; data in dropped tables is lost.")
@click.pass_context
def downgrade(ctx: click.Context, revision: str, yes: bool) -> None:
    """Revert migrations down to REVISION ('base' empties the schema: all data is lost).

    A relative target needs `--` before it: vpnbot db downgrade -- -1
    """
    settings = settings_from(ctx)
    confirm_destructive(yes, f"Downgrade the database to {revision}? Dropped data is lost.")
    current = run(_with_engine(settings.database_url, "downgrade", revision))
    click.echo(f"database at revision {current}")


@db_group.command("current")
@click.pass_context
def current(ctx: click.Context) -> None:
    """Show the database's revision and the newest one this vpnbot knows."""
    settings = settings_from(ctx)
    revision = run(_with_engine(settings.database_url, "current"))
    click.echo(f"database: {revision}\ncode head: {migrate.head_revision()}")


@db_group.command("revision", hidden=True)
@click.option("-m", "--message", required=True, help="Short slug for the file name.")
@click.option("--empty", is_flag=True, help="Do not autogenerate from the models.")
@click.pass_context
def revision(ctx: click.Context, message: str, empty: bool) -> None:
    """(developers) Write a new migration by diffing the models against the database."""
    settings = settings_from(ctx)

    async def _main() -> None:
        engine = create_engine(settings.database_url)
        try:
            await migrate.revision(engine, message, autogenerate=not empty)
        finally:
            await engine.dispose()

    run(_main())
