"""`UsageLedger`: raw samples become cumulative totals that never decrease or double-count."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from pathlib import Path

import pytest

from node_agent.backends.base import Counters
from node_agent.errors import InvalidStateError
from node_agent.ledger import LedgerPage, UsageLedger

T0 = dt.datetime(2026, 1, 15, 12, 0, tzinfo=dt.UTC)
WG = "wg"


def at(minutes: int) -> dt.datetime:
    return T0 + dt.timedelta(minutes=minutes)


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "usage.db"


@pytest.fixture
def ledger(db_path: Path) -> Iterator[UsageLedger]:
    ledger = UsageLedger(db_path)
    yield ledger
    ledger.close()


def record(ledger: UsageLedger, epoch: str, minute: int = 0, **raw: tuple[int, int]) -> int:
    counters = {cid: Counters(rx, tx) for cid, (rx, tx) in raw.items()}
    return ledger.record(WG, epoch, counters, at(minute))


def totals(ledger: UsageLedger) -> dict[str, tuple[int, int]]:
    return {cid: (c.rx_bytes, c.tx_bytes) for cid, c in ledger.totals(WG).items()}


def page_totals(page: LedgerPage) -> dict[str, tuple[int, int]]:
    return {e.client_id: (e.rx_bytes, e.tx_bytes) for e in page.entries}


# --- arithmetic ---------------------------------------------------------------------------


def test_growing_counters_add_their_differences(ledger: UsageLedger) -> None:
    assert record(ledger, "e1", 0, a=(100, 10), b=(5, 7)) == 2
    assert record(ledger, "e1", 1, a=(250, 30), b=(5, 9)) == 2
    assert record(ledger, "e1", 2, a=(1000, 31)) == 1

    assert totals(ledger) == {"a": (1000, 31), "b": (5, 9)}


def test_a_counter_that_goes_down_counts_its_whole_new_value(ledger: UsageLedger) -> None:
    record(ledger, "e1", 0, a=(1000, 500))
    # rx went down: the counter restarted, so all 40 (and all 600 of tx) are new traffic.
    record(ledger, "e1", 1, a=(40, 600))
    assert totals(ledger) == {"a": (1040, 1100)}

    record(ledger, "e1", 2, a=(90, 650))
    assert totals(ledger) == {"a": (1090, 1150)}


def test_a_new_epoch_counts_all_raw_even_when_it_is_larger(ledger: UsageLedger) -> None:
    record(ledger, "e1", 0, a=(100, 100))
    # A larger raw value in a new epoch is not a difference of 50: it is 150 new bytes.
    record(ledger, "e2", 1, a=(150, 120))
    assert totals(ledger) == {"a": (250, 220)}

    record(ledger, "e2", 2, a=(160, 120))
    assert totals(ledger) == {"a": (260, 220)}


def test_reset_baseline_counts_all_traffic_of_a_recreated_client(ledger: UsageLedger) -> None:
    record(ledger, "e1", 0, a=(100, 100), b=(100, 100))
    ledger.reset_baseline(WG, ["a"])
    # "a" was re-created: its counter restarted from 0 and is already past the old raw value.
    record(ledger, "e1", 1, a=(150, 130), b=(150, 130))

    assert totals(ledger) == {"a": (250, 230), "b": (150, 130)}


def test_reset_baseline_with_no_clients_or_unknown_clients_is_harmless(
    ledger: UsageLedger,
) -> None:
    record(ledger, "e1", 0, a=(100, 100))
    ledger.reset_baseline(WG, [])
    ledger.reset_baseline(WG, ["never-seen"])
    record(ledger, "e1", 1, a=(120, 100))

    assert totals(ledger) == {"a": (120, 100)}


def test_backends_are_counted_separately(ledger: UsageLedger) -> None:
    ledger.record("wg", "e1", {"a": Counters(10, 20)}, T0)
    ledger.record("ovpn", "e1", {"a": Counters(1, 2)}, T0)

    assert ledger.totals("wg") == {"a": Counters(10, 20)}
    assert ledger.totals("ovpn") == {"a": Counters(1, 2)}


def test_totals_survive_reopening_the_database(db_path: Path) -> None:
    first = UsageLedger(db_path)
    record(first, "e1", 0, a=(100, 50))
    first.close()

    second = UsageLedger(db_path)
    try:
        assert totals(second) == {"a": (100, 50)}
        # The raw baseline survived too: the same epoch keeps counting differences.
        record(second, "e1", 1, a=(130, 50))
        assert totals(second) == {"a": (130, 50)}
        assert page_totals(second.read(0)) == {"a": (130, 50)}
    finally:
        second.close()


# --- entries ------------------------------------------------------------------------------


def test_no_entry_for_a_client_first_seen_with_zero_counters(ledger: UsageLedger) -> None:
    assert record(ledger, "e1", 0, idle=(0, 0)) == 0

    assert ledger.read(0).entries == []
    assert ledger.pending() == 0
    assert totals(ledger) == {"idle": (0, 0)}


def test_unchanged_counters_add_no_entry(ledger: UsageLedger) -> None:
    record(ledger, "e1", 0, a=(100, 10))
    page = ledger.read(0)
    ledger.acknowledge(page.last_cursor)

    assert record(ledger, "e1", 1, a=(100, 10)) == 0
    # A new epoch whose raw counters are still 0 adds no traffic, so no entry either.
    assert record(ledger, "e2", 2, a=(0, 0)) == 0

    assert ledger.read(page.last_cursor).entries == []
    assert ledger.pending() == 0
    assert totals(ledger) == {"a": (100, 10)}


def test_entries_carry_totals_and_sample_time(ledger: UsageLedger) -> None:
    record(ledger, "e1", 0, a=(100, 10))
    record(ledger, "e1", 5, a=(300, 20))

    page = ledger.read(0)

    assert len(page.entries) == 1
    entry = page.entries[0]
    assert (entry.backend, entry.client_id, entry.rx_bytes, entry.tx_bytes) == (WG, "a", 300, 20)
    assert entry.sampled_at == at(5)
    assert page.last_cursor == entry.cursor
    assert page.ledger_id == ledger.ledger_id
    assert page.more is False


def test_read_pages_with_more(ledger: UsageLedger) -> None:
    for i in range(5):
        ledger.record(WG, "e1", {f"c{i}": Counters(i + 1, 0)}, at(i))

    first = ledger.read(0, limit=2)
    second = ledger.read(first.last_cursor, limit=2)
    third = ledger.read(second.last_cursor, limit=2)
    empty = ledger.read(third.last_cursor, limit=2)

    assert [e.client_id for e in first.entries] == ["c0", "c1"]
    assert [e.client_id for e in second.entries] == ["c2", "c3"]
    assert [e.client_id for e in third.entries] == ["c4"]
    assert (first.more, second.more, third.more) == (True, True, False)
    assert first.last_cursor < second.last_cursor < third.last_cursor
    assert empty.entries == [] and empty.more is False
    assert empty.last_cursor == third.last_cursor  # nothing new: the cursor stays put


def test_read_with_exactly_limit_entries_has_no_more(ledger: UsageLedger) -> None:
    record(ledger, "e1", 0, a=(1, 1), b=(2, 2))

    page = ledger.read(0, limit=2)

    assert len(page.entries) == 2
    assert page.more is False


def test_a_newer_sample_supersedes_the_pending_entry_of_that_client(ledger: UsageLedger) -> None:
    record(ledger, "e1", 0, a=(100, 10), b=(7, 7))
    record(ledger, "e1", 1, a=(200, 20))
    record(ledger, "e1", 2, a=(300, 30))

    page = ledger.read(0)

    assert ledger.pending() == 2
    assert sorted(page_totals(page).items()) == [("a", (300, 30)), ("b", (7, 7))]


def test_rereading_after_a_lost_response_counts_nothing_twice(ledger: UsageLedger) -> None:
    """A reader that keeps its last total per client adds the same traffic the ledger saw."""
    seen: dict[str, tuple[int, int]] = {}
    billed = {"rx": 0, "tx": 0}

    def consume(page: LedgerPage) -> None:
        for e in page.entries:
            last_rx, last_tx = seen.get(e.client_id, (0, 0))
            billed["rx"] += e.rx_bytes - last_rx
            billed["tx"] += e.tx_bytes - last_tx
            seen[e.client_id] = (e.rx_bytes, e.tx_bytes)

    record(ledger, "e1", 0, a=(100, 10), b=(50, 5))
    consume(ledger.read(0))  # the reader processed it, but the acknowledgement never arrived
    record(ledger, "e1", 1, a=(180, 12))
    consume(ledger.read(0))  # re-read from the old cursor: a again (superseded), b again
    page = ledger.read(0)
    consume(page)
    ledger.acknowledge(page.last_cursor)
    record(ledger, "e2", 2, b=(20, 1))
    consume(ledger.read(page.last_cursor))

    assert billed == {"rx": 180 + 70, "tx": 12 + 6}
    assert seen == {"a": (180, 12), "b": (70, 6)}
    assert totals(ledger) == seen


def test_acknowledge_deletes_entries_up_to_the_cursor(ledger: UsageLedger) -> None:
    record(ledger, "e1", 0, a=(1, 1))
    record(ledger, "e1", 1, b=(2, 2))
    record(ledger, "e1", 2, c=(3, 3))
    entries = ledger.read(0).entries

    assert ledger.acknowledge(entries[1].cursor) == entries[1].cursor

    assert ledger.pending() == 1
    assert [e.client_id for e in ledger.read(0).entries] == ["c"]
    # Acknowledging an older cursor again is harmless and does not move the mark back.
    assert ledger.acknowledge(entries[0].cursor) == entries[1].cursor
    assert ledger.pending() == 1


def test_acknowledge_refuses_a_cursor_never_issued(ledger: UsageLedger) -> None:
    with pytest.raises(InvalidStateError, match="never issued"):
        ledger.acknowledge(1)

    record(ledger, "e1", 0, a=(1, 1))
    last = ledger.read(0).last_cursor
    with pytest.raises(InvalidStateError, match="never issued"):
        ledger.acknowledge(last + 1)

    assert ledger.pending() == 1  # the refused acknowledgement dropped nothing
    assert ledger.acknowledge(last) == last
    assert ledger.pending() == 0


def test_acknowledge_zero_on_an_empty_ledger_is_allowed(ledger: UsageLedger) -> None:
    assert ledger.acknowledge(0) == 0


def test_cursors_keep_growing_after_acknowledgement(ledger: UsageLedger) -> None:
    record(ledger, "e1", 0, a=(1, 1))
    first = ledger.read(0)
    ledger.acknowledge(first.last_cursor)
    record(ledger, "e1", 1, a=(2, 2))

    second = ledger.read(first.last_cursor)

    assert [e.cursor > first.last_cursor for e in second.entries] == [True]


# --- identity -----------------------------------------------------------------------------


def test_ledger_id_is_stable_across_reopen_and_new_for_a_new_file(tmp_path: Path) -> None:
    first = UsageLedger(tmp_path / "one.db")
    ledger_id = first.ledger_id
    first.close()
    reopened = UsageLedger(tmp_path / "one.db")
    other = UsageLedger(tmp_path / "two.db")
    try:
        assert reopened.ledger_id == ledger_id
        assert other.ledger_id != ledger_id
        assert ledger_id
    finally:
        reopened.close()
        other.close()
