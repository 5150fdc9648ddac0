"""The `vpnbot` CLI against real databases: every command, and every refusal in one line."""

from __future__ import annotations

import os
import shutil
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from controller.cli.main import main
from controller.db import migrate
from tests.conftest import create_pg_database, drop_pg_database, need


class Cli:
    def __init__(self, capsys: pytest.CaptureFixture[str]) -> None:
        self._capsys = capsys

    def __call__(self, *args: str) -> tuple[int, str, str]:
        self._capsys.readouterr()
        code = main(list(args))
        out, err = self._capsys.readouterr()
        return code, out, err

    def ok(self, *args: str) -> str:
        code, out, err = self(*args)
        assert code == 0, (args, out, err)
        return out

    def fails(self, *args: str, code: int = 1) -> str:
        got, out, err = self(*args)
        assert got == code, (args, got, out, err)
        lines = err.strip().splitlines()
        assert len(lines) == 1, err
        assert lines[0].startswith("vpnbot: error: "), err
        assert "Traceback" not in err + out
        return lines[0]


async def _cli(
    kind: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> AsyncIterator[Cli]:
    monkeypatch.setenv("VPNBOT_DATA_DIR", str(tmp_path / "data"))
    url = None
    if kind == "postgresql":
        url = await create_pg_database()
        monkeypatch.setenv("VPNBOT_DATABASE__URL", url)
    yield Cli(capsys)
    if url is not None:
        await drop_pg_database(url)


@pytest.fixture(params=["sqlite", "postgresql"])
async def cli(
    request: pytest.FixtureRequest,
    clean_env: None,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> AsyncIterator[Cli]:
    async for c in _cli(request.param, monkeypatch, tmp_path, capsys):
        yield c


@pytest.fixture
async def sqlite_cli(
    clean_env: None,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> AsyncIterator[Cli]:
    async for c in _cli("sqlite", monkeypatch, tmp_path, capsys):
        yield c


@pytest.fixture
async def pg_cli(
    clean_env: None,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> AsyncIterator[Cli]:
    async for c in _cli("postgresql", monkeypatch, tmp_path, capsys):
        yield c


def test_help_and_version(cli: Cli) -> None:
    out = cli.ok("--help")
    for command in ("run", "db", "admin", "plan", "user", "backup", "restore"):
        assert f"  {command} " in out
    assert "vpnbot, version" in cli.ok("--version")
    assert "--role" in cli.ok("admin", "add", "--help")


@pytest.mark.parametrize(
    "args",
    [
        ("bogus",),
        ("admin", "add"),
        ("admin", "add", "abc"),
        ("admin", "add", "0"),
        ("admin", "add", "5", "--role", "king"),
        ("plan", "add", "--name", "X", "--days", "0", "--price", "1"),
        ("plan", "add", "--name", "X", "--days", "30"),
        ("user", "list", "--limit", "0"),
        ("run", "--port", "70000"),
    ],
)
def test_bad_arguments_exit_2_with_one_line(cli: Cli, args: tuple[str, ...]) -> None:
    cli.fails(*args, code=2)


def test_db_upgrade_and_current(cli: Cli) -> None:
    head = migrate.head_revision()
    assert cli.ok("db", "upgrade").strip() == f"database at revision {head}"
    assert cli.ok("db", "upgrade").strip() == f"database at revision {head}"
    assert f"database: {head}" in cli.ok("db", "current")
    assert "--yes" in cli.fails("db", "downgrade", "base", code=2)
    assert f"database: {head}" in cli.ok("db", "current")  # the refusal dropped nothing
    assert "(empty database)" in cli.ok("db", "downgrade", "base", "--yes")
    assert head in cli.ok("db", "upgrade")


def test_admin_plan_user_flow(cli: Cli) -> None:
    assert "user 123456 is now admin" in cli.ok("admin", "add", "123456")
    assert "user 777 is now support" in cli.ok("admin", "add", "777", "--role", "support")
    out = cli.ok(
        "plan",
        "add",
        "--name",
        "Месяц",
        "--days",
        "30",
        "--price",
        "199.90",
        "--traffic-gb",
        "100",
        "--devices",
        "3",
        "--popular",
    )
    assert "plan 1 created: Месяц, 30 days, 199.90 RUB, 100 GB, 3 device(s)" in out
    cli.ok("plan", "add", "--name", "Stars", "--days", "7", "--price", "50", "--currency", "xtr")
    listing = cli.ok("plan", "list")
    assert "199.90 RUB" in listing and "50 XTR" in listing
    users = cli.ok("user", "list")
    assert "123456" in users and "777" in users
    assert "support" in cli.ok("user", "list", "--role", "support")
    assert "123456" not in cli.ok("user", "list", "--role", "support")
    shown = cli.ok("user", "show", "123456")
    assert "role:          admin" in shown
    assert "user 777 is now client" in cli.ok("admin", "remove", "777")


def test_refusals_change_nothing(cli: Cli) -> None:
    assert "more than 2 decimal places" in cli.fails(
        "plan", "add", "--name", "X", "--days", "30", "--price", "1.999"
    )
    assert "unknown currency" in cli.fails(
        "plan", "add", "--name", "X", "--days", "30", "--price", "1", "--currency", "ABC"
    )
    assert "not a number" in cli.fails("plan", "add", "--name", "X", "--days", "3", "--price", "x")
    assert "no plans yet" in cli.ok("plan", "list", "--all")
    assert "no user with Telegram id 42" in cli.fails("user", "show", "42")
    assert "no user with Telegram id 42" in cli.fails("admin", "remove", "42")
    assert cli.ok("user", "list").strip() == "no users"


def test_settings_errors_name_the_variable(cli: Cli, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VPNBOT_API__PORT", "eighty")
    assert "VPNBOT_API__PORT" in cli.fails("plan", "list")
    monkeypatch.delenv("VPNBOT_API__PORT")
    monkeypatch.setenv("VPNBOT_DATABSE__URL", "sqlite:///x.db")
    assert "unknown setting VPNBOT_DATABSE__URL" in cli.fails("plan", "list")


def test_newer_database_refused(cli: Cli) -> None:
    cli.ok("db", "upgrade")
    cli.ok("plan", "add", "--name", "A", "--days", "1", "--price", "1")
    _stamp_future_revision()
    line = cli.fails("db", "upgrade")
    assert "newer version" in line
    assert "newer version" in cli.fails("plan", "list")


def _stamp_future_revision() -> None:
    import asyncio

    import sqlalchemy as sa

    from controller.db.engine import create_engine
    from controller.settings import load_settings

    async def stamp() -> None:
        engine = create_engine(load_settings().database_url)
        async with engine.begin() as connection:
            await connection.execute(
                sa.text("UPDATE alembic_version SET version_num='abcdef123456'")
            )
        await engine.dispose()

    asyncio.run(stamp())


def test_backup_and_restore(cli: Cli, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    if request.node.callspec.params["cli"] == "postgresql":
        need(shutil.which("pg_dump") is not None, "pg_dump is not installed")
    cli.ok("plan", "add", "--name", "Kept", "--days", "30", "--price", "100")
    target = tmp_path / "backup.file"
    assert f"backup written to {target}" in cli.ok("backup", "--out", str(target))
    assert target.stat().st_size > 0
    assert "already exists" in cli.fails("backup", "--out", str(target))
    cli.ok("plan", "add", "--name", "Lost", "--days", "30", "--price", "100")
    assert "--yes" in cli.fails("restore", str(target), code=2)
    assert "Lost" in cli.ok("plan", "list")  # the refused restore changed nothing
    out = cli.ok("restore", str(target), "--yes")
    listing = cli.ok("plan", "list")
    assert "Kept" in listing and "Lost" not in listing
    # The replaced contents were saved first, so the restore can be undone.
    saved = out.strip().splitlines()[-1].removeprefix("the previous contents are saved in ")
    assert "vpnbot-pre-restore-" in saved
    cli.ok("restore", saved, "--yes")
    assert "Lost" in cli.ok("plan", "list")
    default = cli.ok("backup")
    assert "backups/vpnbot-" in default


def test_restore_refuses_a_foreign_file(sqlite_cli: Cli, tmp_path: Path) -> None:
    cli = sqlite_cli
    cli.ok("plan", "add", "--name", "Kept", "--days", "30", "--price", "100")
    junk = tmp_path / "junk.sqlite3"
    junk.write_text("not a database")
    assert "not a vpnbot SQLite backup" in cli.fails("restore", str(junk), "--yes")
    assert "Kept" in cli.ok("plan", "list")


def test_pg_backup_without_pg_dump_is_a_clear_error(
    pg_cli: Cli, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    cli = pg_cli
    cli.ok("db", "upgrade")
    empty = tmp_path / "empty-bin"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))
    assert "pg_dump is not installed" in cli.fails("backup", "--out", str(tmp_path / "x"))


def test_backup_to_an_impossible_place_is_one_line(sqlite_cli: Cli, tmp_path: Path) -> None:
    cli = sqlite_cli
    cli.ok("db", "upgrade")
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    assert "cannot create" in cli.fails("backup", "--out", str(blocker / "b.sqlite3"))
    assert "cannot" in cli.fails("backup", "--out", "/proc/vpnbot-backup")


def test_pg_backup_failure_leaves_nothing_and_can_be_retried(
    pg_cli: Cli, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    need(shutil.which("pg_dump") is not None, "pg_dump is not installed")
    cli = pg_cli
    cli.ok("db", "upgrade")
    good_url = os.environ["VPNBOT_DATABASE__URL"]
    target = tmp_path / "b.pgdump"
    monkeypatch.setenv("VPNBOT_DATABASE__URL", good_url.rsplit("/", 1)[0] + "/no_such_db_x")
    assert "pg_dump failed" in cli.fails("backup", "--out", str(target))
    assert list(tmp_path.glob("*b.pgdump*")) == []
    monkeypatch.setenv("VPNBOT_DATABASE__URL", good_url)
    cli.ok("backup", "--out", str(target))
    assert target.stat().st_size > 0


def test_pg_url_options_work_for_the_app_and_for_backups(
    pg_cli: Cli, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """libpq's sslmode= and asyncpg's ssl= are both accepted; pg_dump gets neither in a URL."""
    need(shutil.which("pg_dump") is not None, "pg_dump is not installed")
    cli = pg_cli
    base = os.environ["VPNBOT_DATABASE__URL"].replace("postgresql+asyncpg://", "postgresql://")
    for option in ("sslmode=disable", "ssl=disable"):
        monkeypatch.setenv("VPNBOT_DATABASE__URL", f"{base}?{option}")
        cli.ok("db", "upgrade")
        cli.ok("plan", "add", "--name", option, "--days", "1", "--price", "1")
        target = tmp_path / f"{option}.pgdump"
        cli.ok("backup", "--out", str(target))
        cli.ok("restore", str(target), "--yes")
        assert option in cli.ok("plan", "list")


def test_pg_restore_refuses_a_newer_or_foreign_dump(pg_cli: Cli, tmp_path: Path) -> None:
    need(shutil.which("pg_restore") is not None, "pg_restore is not installed")
    cli = pg_cli
    cli.ok("plan", "add", "--name", "Current", "--days", "1", "--price", "1")
    current = tmp_path / "current.pgdump"
    cli.ok("backup", "--out", str(current))
    junk = tmp_path / "junk.pgdump"
    junk.write_bytes(b"PGDMP not really")
    assert "not a vpnbot PostgreSQL backup" in cli.fails("restore", str(junk), "--yes")
    _stamp_future_revision()
    newer = tmp_path / "newer.pgdump"
    cli.ok("backup", "--out", str(newer))
    assert "made by a newer vpnbot" in cli.fails("restore", str(newer), "--yes")
    cli.ok("restore", str(current), "--yes")  # the refusals changed nothing restorable
    assert "Current" in cli.ok("plan", "list")


def test_unexpected_values_are_one_line(cli: Cli, monkeypatch: pytest.MonkeyPatch) -> None:
    cli.fails(
        "plan",
        "add",
        "--name",
        "X",
        "--days",
        "1",
        "--price",
        "1",
        "--sort-order",
        "99999999999999999999",
        code=2,
    )
    cli.fails("user", "list", "--offset", "99999999999999999999999", code=2)
    assert "cannot upgrade to 'nope'" in cli.fails("db", "upgrade", "--revision", "nope")
    monkeypatch.setenv("VPNBOT_DATABASE", "notjson")
    assert "invalid setting VPNBOT_DATABASE" in cli.fails("plan", "list")
    monkeypatch.delenv("VPNBOT_DATABASE")
    Path(".env").write_bytes(b"\xff\xfe=1\n")
    assert "cannot read .env" in cli.fails("plan", "list")


def test_a_different_master_key_is_refused(
    cli: Cli, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """A database remembers its master key: another key (a fresh dev key from another data
    directory, a mistyped production key) is refused before anything is written."""
    from controller.settings import generate_master_key, load_settings

    url = load_settings().database_url  # pin it: SQLite lives in the first data directory
    monkeypatch.setenv("VPNBOT_DATABASE__URL", url)
    cli.ok("plan", "add", "--name", "A", "--days", "1", "--price", "1")
    monkeypatch.setenv("VPNBOT_DATA_DIR", str(tmp_path / "elsewhere"))
    assert "not the key this database was set up with" in cli.fails("plan", "list")
    monkeypatch.setenv("VPNBOT_SECURITY__MASTER_KEY", generate_master_key())
    assert "not the key this database was set up with" in cli.fails("plan", "list")
    monkeypatch.delenv("VPNBOT_SECURITY__MASTER_KEY")
    monkeypatch.setenv("VPNBOT_DATA_DIR", str(tmp_path / "data"))
    assert "A" in cli.ok("plan", "list")


def test_sqlite_backup_file_is_readable_from_read_only_media(
    sqlite_cli: Cli, tmp_path: Path
) -> None:
    """The live database runs in WAL mode; a backup file must not need a -shm file to open."""
    cli = sqlite_cli
    cli.ok("plan", "add", "--name", "Kept", "--days", "30", "--price", "100")
    target = tmp_path / "b.sqlite3"
    cli.ok("backup", "--out", str(target))
    header = target.read_bytes()[:20]
    assert header[18:20] == b"\x01\x01"  # rollback journal, not WAL (2, 2)


def test_pg_restore_leaves_no_table_of_the_replaced_schema(pg_cli: Cli, tmp_path: Path) -> None:
    import asyncio

    import sqlalchemy as sa

    from controller.db.engine import create_engine
    from controller.settings import load_settings

    need(shutil.which("pg_restore") is not None, "pg_restore is not installed")
    cli = pg_cli
    cli.ok("plan", "add", "--name", "Kept", "--days", "30", "--price", "100")
    target = tmp_path / "b.pgdump"
    cli.ok("backup", "--out", str(target))

    async def tables() -> set[str]:
        engine = create_engine(load_settings().database_url)
        async with engine.begin() as connection:
            await connection.execute(sa.text("CREATE TABLE IF NOT EXISTS stray (id int)"))
        await engine.dispose()
        engine = create_engine(load_settings().database_url)
        async with engine.connect() as connection:
            names = await connection.run_sync(lambda c: set(sa.inspect(c).get_table_names()))
        await engine.dispose()
        return names

    assert "stray" in asyncio.run(tables())
    cli.ok("restore", str(target), "--yes")

    async def after() -> set[str]:
        engine = create_engine(load_settings().database_url)
        async with engine.connect() as connection:
            names = await connection.run_sync(lambda c: set(sa.inspect(c).get_table_names()))
        await engine.dispose()
        return names

    remaining = asyncio.run(after())
    assert "stray" not in remaining and "users" in remaining
    cli.ok("db", "upgrade")


def test_pg_socket_url_works_for_the_app_and_backups(
    pg_cli: Cli, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    need(Path("/var/run/postgresql").is_dir(), "no local PostgreSQL socket directory")
    need(shutil.which("pg_dump") is not None, "pg_dump is not installed")
    cli = pg_cli
    database = os.environ["VPNBOT_DATABASE__URL"].rsplit("/", 1)[1]
    monkeypatch.setenv(
        "VPNBOT_DATABASE__URL", f"postgresql://postgres@/{database}?host=/var/run/postgresql"
    )
    cli.ok("plan", "add", "--name", "ViaSocket", "--days", "1", "--price", "1")
    target = tmp_path / "socket.pgdump"
    cli.ok("backup", "--out", str(target))
    cli.ok("restore", str(target), "--yes")
    assert "ViaSocket" in cli.ok("plan", "list")
