"""The ``vpnbot`` entry point: command tree and the one place errors become exit codes."""

from __future__ import annotations

import os
import sqlite3
import sys
import traceback
from pathlib import Path

import click
import structlog
from sqlalchemy.exc import DBAPIError, OperationalError

from controller import __version__
from controller.backup import BackupError, default_backup_path
from controller.bootstrap import SchemaOutOfDateError
from controller.cli.common import confirm_destructive, run, settings_from
from controller.cli.db import db_group
from controller.cli.manage import admin_group, plan_group, user_group
from controller.cli.nodes import config_group, node_group
from controller.cli.pki import agent_group, pki_group
from controller.db.engine import DatabaseUnavailableError
from controller.db.migrate import DatabaseTooNewError, MigrationError
from controller.domain.errors import DomainError
from controller.nodes.pki import PkiError
from controller.settings import SettingsError, generate_master_key

log = structlog.get_logger(__name__)

EXIT_FAILURE = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="vpnbot")
def cli() -> None:
    """vpnbot: the VPN business control plane (controller).

    Settings come from VPNBOT_* environment variables or a .env file in the current directory
    (see .env.example). With no settings at all it runs on an embedded SQLite database in
    ./data.
    """


@cli.command("run")
@click.option("--host", default=None, help="Listen address [default: VPNBOT_API__HOST].")
@click.option(
    "--port",
    type=click.IntRange(1, 65535),
    default=None,
    help="Listen port [default: VPNBOT_API__PORT].",
)
@click.pass_context
def run_command(ctx: click.Context, host: str | None, port: int | None) -> None:
    """Run the controller: HTTP API (/healthz), HTTPS enrollment listener, the hub that
    drives node agents, and the scheduler, in one process.

    The database is migrated first (unless VPNBOT_DATABASE__AUTO_MIGRATE=false).
    Stop with Ctrl+C or SIGTERM.
    """
    settings = settings_from(ctx)
    from controller.server import serve

    run(serve(settings, host=host or settings.api.host, port=port or settings.api.port))


@cli.command("backup")
@click.option(
    "--out",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Backup file [default: DATA_DIR/backups/vpnbot-<UTC time>.<kind>].",
)
@click.pass_context
def backup_command(ctx: click.Context, out: Path | None) -> None:
    """Back up the database (SQLite backup API, or pg_dump for PostgreSQL)."""
    from controller import backup

    settings = settings_from(ctx)
    target = out or default_backup_path(settings.data_dir, settings.database_url)
    written = run(backup.backup(settings.database_url, target))
    click.echo(f"backup written to {written}")


@cli.command("restore")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--yes", is_flag=True, help="Do not ask; replace the current database.")
@click.pass_context
def restore_command(ctx: click.Context, file: Path, yes: bool) -> None:
    """Replace the database with FILE (made by `vpnbot backup`). Stop `vpnbot run` first.

    The current contents are saved to DATA_DIR/backups first.
    """
    from controller import backup

    settings = settings_from(ctx)
    confirm_destructive(yes, f"Replace the current database with {file}?")
    safety = run(
        backup.restore(settings.database_url, file, safety_dir=settings.data_dir / "backups")
    )
    click.echo(f"database restored from {file}")
    if safety is not None:
        click.echo(f"the previous contents are saved in {safety}")


@cli.command("keygen")
def keygen_command() -> None:
    """Print a new random master key for VPNBOT_SECURITY__MASTER_KEY."""
    click.echo(generate_master_key())


cli.add_command(db_group)
cli.add_command(admin_group)
cli.add_command(plan_group)
cli.add_command(user_group)
cli.add_command(pki_group)
cli.add_command(agent_group)
cli.add_command(node_group)
cli.add_command(config_group)


def _fail(message: str, code: int = EXIT_FAILURE) -> int:
    click.echo(f"vpnbot: error: {message}", err=True)
    return code


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; every expected failure is one line on stderr and a non-zero exit code."""
    try:
        result = cli.main(args=argv, prog_name="vpnbot", standalone_mode=False)
    except click.UsageError as exc:
        hint = f" (see `{exc.ctx.command_path} --help`)" if exc.ctx else ""
        return _fail(exc.format_message() + hint, EXIT_USAGE)
    except click.ClickException as exc:
        return _fail(exc.format_message(), exc.exit_code or EXIT_FAILURE)
    except click.Abort as exc:
        if isinstance(exc.__cause__ or exc.__context__, KeyboardInterrupt):
            click.echo("", err=True)  # end the ^C line; an interrupt is not an error
            return EXIT_INTERRUPTED
        return _fail("aborted", EXIT_FAILURE)
    except (
        SettingsError,
        DomainError,
        BackupError,
        DatabaseTooNewError,
        DatabaseUnavailableError,
        MigrationError,
        SchemaOutOfDateError,
        PkiError,
    ) as exc:
        return _fail(str(exc))
    except OperationalError as exc:
        return _fail(f"cannot use the database: {_first_line(exc.orig or exc)}")
    except DBAPIError as exc:
        return _fail(f"database error: {_first_line(exc.orig or exc)}")
    except sqlite3.Error as exc:
        return _fail(f"SQLite: {_first_line(exc)}")
    except OSError as exc:
        return _fail(f"{exc.strerror or exc}: {exc.filename}" if exc.filename else str(exc))
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    except Exception as exc:  # a bug: still one line, the traceback on request
        if os.environ.get("VPNBOT_LOG__LEVEL", "").upper() == "DEBUG":
            traceback.print_exc()
        return _fail(
            f"unexpected {type(exc).__name__}: {_first_line(exc)} "
            "(set VPNBOT_LOG__LEVEL=DEBUG to see the traceback)"
        )
    return result if isinstance(result, int) else 0


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


if __name__ == "__main__":
    sys.exit(main())
