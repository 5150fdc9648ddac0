"""`vpnbot run` as a real process: the embedded default starts, answers /healthz, migrates
its SQLite database, stops gracefully on SIGTERM; bad settings stop it with one line."""

from __future__ import annotations

import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import httpx

ENTRY = [sys.executable, "-c", "from controller.cli.entry import entrypoint; entrypoint()"]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("VPNBOT_")}
    # Every run gets its own enrollment port: tests may run beside a developer's controller.
    env["VPNBOT_ENROLLMENT__PORT"] = str(_free_port())
    env.update(extra)
    return env


def _wait_healthy(
    url: str, process: subprocess.Popen[bytes], timeout: float = 60
) -> httpx.Response:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"vpnbot run exited early with {process.returncode}")
        try:
            return httpx.get(url, timeout=2)
        except httpx.TransportError:
            time.sleep(0.2)
    raise AssertionError("vpnbot run did not answer /healthz in time")


def test_run_serves_healthz_on_embedded_sqlite_and_stops_gracefully(tmp_path: Path) -> None:
    port = _free_port()
    log = tmp_path / "run.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [*ENTRY, "run", "--port", str(port)],
            cwd=tmp_path,
            env=_env(),
            stdout=out,
            stderr=subprocess.STDOUT,
        )
        try:
            response = _wait_healthy(f"http://127.0.0.1:{port}/healthz", process)
            assert response.status_code == 200
            body = response.json()
            assert body["status"] == "ok" and body["database"] == "ok"
            process.send_signal(signal.SIGTERM)
            assert process.wait(timeout=30) == 0
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()
    text = log.read_text()
    assert "Traceback" not in text
    assert "scheduler_started" in text and "scheduler_stopped" in text
    # The embedded default lives in ./data: migrated database and a private master key.
    database = tmp_path / "data" / "vpnbot.db"
    with sqlite3.connect(database) as connection:
        tables = {r[0] for r in connection.execute("SELECT name FROM sqlite_master")}
    assert {"users", "subscriptions", "payments", "alembic_version"} <= tables
    assert (tmp_path / "data" / "master.key").stat().st_mode & 0o777 == 0o600


def test_run_refuses_bad_settings_in_one_line(tmp_path: Path) -> None:
    result = subprocess.run(
        [*ENTRY, "run"],
        cwd=tmp_path,
        env=_env(VPNBOT_API__PORT="http"),
        capture_output=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 1
    err = result.stderr.decode().strip().splitlines()
    assert err == [err[0]] and err[0].startswith("vpnbot: error: invalid setting VPNBOT_API__PORT")


def test_run_reports_unreachable_database_in_one_line(tmp_path: Path) -> None:
    port = _free_port()  # nothing listens there
    result = subprocess.run(
        [*ENTRY, "run"],
        cwd=tmp_path,
        env=_env(VPNBOT_DATABASE__URL=f"postgresql://nobody@127.0.0.1:{port}/none"),
        capture_output=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 1
    lines = result.stderr.decode().strip().splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith(
        f"vpnbot: error: cannot connect to the PostgreSQL database 'none' at 127.0.0.1:{port}: "
    ), lines
    assert "Traceback" not in result.stderr.decode()


def test_bad_arguments_never_print_a_traceback(tmp_path: Path) -> None:
    result = subprocess.run(
        [*ENTRY, "plan", "add", "--days", "x"],
        cwd=tmp_path,
        env=_env(),
        capture_output=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    assert len(result.stderr.decode().strip().splitlines()) == 1
    assert b"Traceback" not in result.stderr


def test_run_on_a_busy_port_fails_clearly(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = subprocess.run(
            [*ENTRY, "run", "--port", str(port)],
            cwd=tmp_path,
            env=_env(),
            capture_output=True,
            timeout=60,
            check=False,
        )
    assert result.returncode == 1
    err = result.stderr.decode()
    assert "Traceback" not in err
    assert err.strip().splitlines()[-1] == (
        f"vpnbot: error: could not listen on 127.0.0.1:{port} (see the log above)"
    )
    assert "address already in use" in err
    assert "scheduler_started" not in err  # no job ran for a server that never listened


def test_ctrl_c_at_any_moment_is_quiet(tmp_path: Path) -> None:
    """Ctrl+C while loading, migrating or serving: exit 130 (or 0 once serving), no traceback."""
    for delay in (0.05, 0.4, 0.8, 1.5):
        port = _free_port()
        process = subprocess.Popen(
            # A shell's background jobs ignore SIGINT; a terminal's Ctrl+C does not. env(1)
            # restores it: a preexec_fn would fork this gRPC-using process the slow way, and
            # gRPC's fork handlers then abort the child before it execs.
            ["env", "--default-signal=INT", *ENTRY, "run", "--port", str(port)],
            cwd=tmp_path,
            env=_env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        time.sleep(delay)
        process.send_signal(signal.SIGINT)
        out, _ = process.communicate(timeout=60)
        if b"Fatal Python error: init_import_site" in out:
            continue  # a loaded machine: the signal hit the interpreter before any of our code
        assert process.returncode in (0, 130), (delay, process.returncode, out)
        assert b"Traceback" not in out, (delay, out)


def test_a_busy_enrollment_port_fails_the_run_with_one_line(tmp_path: Path) -> None:
    """A component that cannot start stops the whole controller, and the exit says why."""
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        taken = busy.getsockname()[1]
        process = subprocess.run(
            [*ENTRY, "run", "--port", str(_free_port())],
            cwd=tmp_path,
            env=_env(VPNBOT_ENROLLMENT__HOST="127.0.0.1", VPNBOT_ENROLLMENT__PORT=str(taken)),
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert process.returncode == 1, process.stderr[-2000:]
    last = process.stderr.strip().splitlines()[-1]
    assert last == (
        f"vpnbot: error: could not listen for enrollment on 127.0.0.1:{taken} "
        "(VPNBOT_ENROLLMENT__PORT)"
    )
