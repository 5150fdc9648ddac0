"""Which process is our openvpn (pid file checked against /proc), stopping it, and its log
(tail for error reasons, rotation by copy and truncate) — with real processes."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from node_agent.backends.openvpn.management import ManagementClient
from node_agent.backends.openvpn.process import OpenVpnProcess


@pytest.fixture
def process(tmp_path: Path) -> OpenVpnProcess:
    return OpenVpnProcess(
        name="main",
        command=["openvpn"],
        config_path=tmp_path / "server.conf",
        pid_path=tmp_path / "openvpn.pid",
        log_path=tmp_path / "openvpn.log",
        management=ManagementClient(tmp_path / "management.sock", timeout=1),
        start_timeout=5,
    )


@pytest.fixture
def lookalike(process: OpenVpnProcess) -> Iterator[subprocess.Popen[bytes]]:
    """A process whose command line names our config, as `openvpn --config PATH` does."""
    # Not `sh -c "sleep 30"`: dash execs the last command itself, and the command line
    # naming our config would vanish under the test.
    child = subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(30)", "--config", str(process.config_path)]
    )
    # Popen may return before the child has exec'd (its command line is still ours then).
    deadline = time.monotonic() + 10
    while str(process.config_path).encode() not in Path(f"/proc/{child.pid}/cmdline").read_bytes():
        assert time.monotonic() < deadline, "the lookalike never started"
        time.sleep(0.01)
    yield child
    child.kill()
    child.wait()


def test_the_pid_file_is_believed_only_for_a_live_process_running_our_config(
    process: OpenVpnProcess, lookalike: subprocess.Popen[bytes]
) -> None:
    assert process.pid() is None  # no pid file

    process.pid_path.write_text(f"{os.getpid()}\n")  # alive, but not ours (a reused pid)
    assert process.pid() is None

    process.pid_path.write_text(f"{lookalike.pid}\n")
    assert process.pid() == lookalike.pid

    lookalike.kill()
    lookalike.wait()
    assert process.pid() is None

    process.pid_path.write_text("garbage")
    assert process.pid() is None


async def test_stop_ends_our_process(
    process: OpenVpnProcess, lookalike: subprocess.Popen[bytes]
) -> None:
    process.pid_path.write_text(f"{lookalike.pid}\n")
    await process.stop()
    assert lookalike.wait(timeout=5) != 0
    assert process.pid() is None
    await process.stop()  # nothing to stop: no error


def test_the_log_tail_gives_the_last_lines(process: OpenVpnProcess) -> None:
    assert process.log_tail() == ""
    process.log_path.write_text("".join(f"line {i}\n" for i in range(100_000)))
    assert process.log_tail(2) == "line 99998 | line 99999"


def test_the_log_is_rotated_by_copy_and_truncate(process: OpenVpnProcess) -> None:
    assert not process.rotate_log(100)  # no log yet
    process.log_path.write_text("x" * 50)
    assert not process.rotate_log(100)

    # openvpn keeps its descriptor open with O_APPEND: it writes on at the new end.
    with process.log_path.open("a") as openvpn_log:
        openvpn_log.write("y" * 100)
        openvpn_log.flush()
        assert process.rotate_log(100)
        openvpn_log.write("after\n")
    assert process.log_path.read_text() == "after\n"
    assert (process.log_path.parent / "openvpn.log.1").read_text() == "x" * 50 + "y" * 100
