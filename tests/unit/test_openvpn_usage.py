"""Usage accounting of OpenVPN sessions: cumulative per client across reconnects, finished
sessions completed from the disconnect hook's files (written by the real hook script under
/bin/sh), nothing counted twice, everything kept across agent restarts."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from node_agent.backends.base import Counters
from node_agent.backends.openvpn.management import Session
from node_agent.backends.openvpn.render import render_hook
from node_agent.backends.openvpn.usage import CLOSED_RETENTION, UsageBook
from node_agent.errors import ConfigError

OWNERS = {"alice": "client-1", "bob": "client-2"}
T0 = 1_800_000_000.0


def session(cn: str, rx: int, tx: int, since: int = 1000, cid: int = 0) -> Session:
    return Session(cn, "192.0.2.7:5000", "10.9.0.2", rx, tx, since, cid)


def book_in(tmp_path: Path) -> UsageBook:
    return UsageBook(tmp_path / "usage.json", tmp_path / "sessions")


def finished(tmp_path: Path, cn: str, since: int, rx: int, tx: int) -> None:
    """Run the real client-disconnect hook as openvpn does when a session ends."""
    hook = tmp_path / "hook.sh"
    if not hook.exists():
        hook.write_text(render_hook(tmp_path / "sessions"))
        hook.chmod(0o700)
    env = {
        "common_name": cn,
        "time_unix": str(since),
        "bytes_received": str(rx),
        "bytes_sent": str(tx),
    }
    subprocess.run([str(hook)], env=env, check=True, timeout=10)


def test_live_sessions_add_what_they_carried_since_the_last_poll(tmp_path: Path) -> None:
    book = book_in(tmp_path)
    assert book.sample([session("alice", 100, 200)], OWNERS.get, T0) == {
        "client-1": Counters(100, 200)
    }
    assert book.sample([session("alice", 150, 260)], OWNERS.get, T0 + 30) == {
        "client-1": Counters(150, 260)
    }


def test_a_reconnect_continues_the_total(tmp_path: Path) -> None:
    book = book_in(tmp_path)
    book.sample([session("alice", 100, 200, since=1000)], OWNERS.get, T0)
    # The session ended with 120/230 (hook), a new one started and carried 10/20 so far.
    finished(tmp_path, "alice", 1000, 120, 230)
    counters = book.sample([session("alice", 10, 20, since=1005)], OWNERS.get, T0 + 30)
    assert counters == {"client-1": Counters(130, 250)}
    assert list((tmp_path / "sessions").iterdir()) == []  # read, counted, removed


def test_a_session_that_ended_after_the_poll_is_counted_once(tmp_path: Path) -> None:
    book = book_in(tmp_path)
    # The poll still saw it at 100/200; by the time the spool is read it ended at 110/220.
    finished(tmp_path, "alice", 1000, 110, 220)
    counters = book.sample([session("alice", 100, 200, since=1000)], OWNERS.get, T0)
    assert counters == {"client-1": Counters(110, 220)}
    # Later polls no longer list it: nothing more.
    assert book.sample([], OWNERS.get, T0 + 30) == {"client-1": Counters(110, 220)}


def test_a_session_never_seen_live_is_counted_whole(tmp_path: Path) -> None:
    book = book_in(tmp_path)
    finished(tmp_path, "bob", 2000, 500, 700)  # began and ended between two polls
    assert book.sample([], OWNERS.get, T0) == {"client-2": Counters(500, 700)}


def test_a_hook_file_read_again_after_a_crash_counts_nothing_twice(tmp_path: Path) -> None:
    book = book_in(tmp_path)
    finished(tmp_path, "bob", 2000, 500, 700)
    [path] = list((tmp_path / "sessions").iterdir())
    saved = path.read_text()
    book.sample([], OWNERS.get, T0)
    path.write_text(saved)  # the agent died after saving, before deleting it

    again = book_in(tmp_path)
    assert again.sample([], OWNERS.get, T0 + 30) == {"client-2": Counters(500, 700)}


def test_everything_survives_an_agent_restart(tmp_path: Path) -> None:
    book = book_in(tmp_path)
    book.sample([session("alice", 100, 200)], OWNERS.get, T0)

    again = book_in(tmp_path)
    assert again.epoch == book.epoch
    # The same session, further on: only the difference is added.
    assert again.sample([session("alice", 130, 250)], OWNERS.get, T0 + 30) == {
        "client-1": Counters(130, 250)
    }
    # A wiped book starts a new epoch: the ledger then takes its numbers as new.
    (tmp_path / "usage.json").unlink()
    assert book_in(tmp_path).epoch != book.epoch


def test_traffic_of_names_nobody_owns_is_not_counted(tmp_path: Path) -> None:
    book = book_in(tmp_path)
    counters = book.sample([session("mallory", 100, 200)], OWNERS.get, T0)
    assert counters == {}
    # Enabled later: what it carried before is not billed to the new owner.
    owners = {**OWNERS, "mallory": "client-3"}
    assert book.sample([session("mallory", 110, 220)], owners.get, T0 + 30) == {
        "client-3": Counters(10, 20)
    }


def test_no_answer_from_openvpn_ends_no_session(tmp_path: Path) -> None:
    book = book_in(tmp_path)
    book.sample([session("alice", 100, 200)], OWNERS.get, T0)
    book.sample(None, OWNERS.get, T0 + 30)  # management did not answer
    finished(tmp_path, "alice", 1000, 150, 250)
    assert book.sample(None, OWNERS.get, T0 + 60) == {"client-1": Counters(150, 250)}


def test_forgotten_clients_start_again_from_zero(tmp_path: Path) -> None:
    book = book_in(tmp_path)
    book.sample([session("alice", 100, 200)], OWNERS.get, T0)
    book.forget(["client-1"])
    book.save()
    assert book.counters() == {}
    assert book.sample([session("alice", 130, 260)], OWNERS.get, T0 + 30) == {
        "client-1": Counters(30, 60)
    }


def test_finished_sessions_are_forgotten_after_a_day(tmp_path: Path) -> None:
    book = book_in(tmp_path)
    book.sample([session("alice", 100, 200)], OWNERS.get, T0)
    book.sample([], OWNERS.get, T0 + 10)
    assert json.loads((tmp_path / "usage.json").read_text())["sessions"]
    book.sample([], OWNERS.get, T0 + 10 + CLOSED_RETENTION + 1)
    assert json.loads((tmp_path / "usage.json").read_text())["sessions"] == {}


def test_a_malformed_hook_file_is_skipped(tmp_path: Path) -> None:
    book = book_in(tmp_path)
    (tmp_path / "sessions" / "1.1.session").write_text("garbage\n")
    (tmp_path / "sessions" / ".2.tmp").write_text("alice\t1\t5\t5\n")  # not finished writing
    assert book.sample([], OWNERS.get, T0) == {}
    assert [p.name for p in (tmp_path / "sessions").iterdir()] == [".2.tmp"]


def test_a_damaged_book_is_a_config_error(tmp_path: Path) -> None:
    (tmp_path / "usage.json").write_text("{")
    with pytest.raises(ConfigError, match="remove it"):
        book_in(tmp_path)
