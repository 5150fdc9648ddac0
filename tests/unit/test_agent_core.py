"""`Agent`: all-or-nothing validation, revisions, persistence, usage around changes, failures.

Two fake backends: "one" holds WireGuard peers (validated like a device), "two" OpenVPN
clients (ids only). Everything lives in ``tmp_path``.
"""

from __future__ import annotations

import base64
import datetime as dt
from collections.abc import Iterable, Iterator
from pathlib import Path

import pytest

from node_agent import convert
from node_agent.agent import Agent, ApplyOutcome
from node_agent.backends.base import BackendStatus, Counters, Health
from node_agent.backends.fake import FakeBackend
from node_agent.errors import InvalidStateError, RevisionMismatchError
from node_agent.ledger import UsageLedger
from node_agent.model import Client, DesiredState, OpenVpnClient, WireGuardPeer
from node_agent.state import StateStore
from proto.nodeapi.v1 import node_agent_pb2 as pb


def key(n: int) -> str:
    return base64.b64encode(n.to_bytes(32, "big")).decode()


def wg(client_id: str, n: int, keepalive: int = 0) -> Client:
    return Client(client_id, WireGuardPeer(key(n), None, (f"10.8.0.{n + 1}/32",), keepalive))


def ovpn(client_id: str) -> Client:
    return Client(client_id, OpenVpnClient(f"cn-{client_id}"))


def desired(one: Iterable[Client] = (), two: Iterable[Client] = ()) -> DesiredState:
    return DesiredState({k: tuple(v) for k, v in (("one", one), ("two", two)) if tuple(v)})


def by_id(*clients: Client) -> dict[str, Client]:
    return {c.id: c for c in clients}


class Clock:
    def __init__(self) -> None:
        self.now = dt.datetime(2026, 1, 15, 12, 0, tzinfo=dt.UTC)

    def __call__(self) -> dt.datetime:
        self.now += dt.timedelta(seconds=1)
        return self.now


class Node:
    """An agent over a state directory, with fresh fake backends (a process start)."""

    def __init__(self, state_dir: Path) -> None:
        self.state_dir = state_dir
        self.one = FakeBackend("one")
        self.two = FakeBackend("two")
        self.store = StateStore(state_dir / "state.db")
        self.ledger = UsageLedger(state_dir / "usage.db")
        self.agent = Agent(
            node_id="node-1",
            version="test",
            backends={"one": self.one, "two": self.two},
            store=self.store,
            ledger=self.ledger,
            clock=Clock(),
        )

    def close(self) -> None:
        self.store.close()
        self.ledger.close()

    def snapshot(self) -> tuple[object, ...]:
        """Everything a rejected request must leave alone."""
        return (
            dict(self.one.clients),
            dict(self.two.clients),
            self.one.apply_calls,
            self.two.apply_calls,
            self.agent.revision,
            DesiredState(self.agent.state.backends),  # a copy: the agent updates in place
            self.store.load(),
        )


@pytest.fixture
def node(tmp_path: Path) -> Iterator[Node]:
    node = Node(tmp_path)
    yield node
    node.close()


def base() -> DesiredState:
    # A new object every time: the agent keeps the state it applied and updates it in place.
    return desired(one=[wg("a", 1), wg("b", 2)], two=[ovpn("x")])


async def applied(node: Node, revision: int = 1, state: DesiredState | None = None) -> ApplyOutcome:
    return await node.agent.apply_full(revision, state or base(), force=False)


def reports(outcome: ApplyOutcome) -> dict[str, tuple[int, int, int]]:
    return {o.name: (o.report.added, o.report.updated, o.report.removed) for o in outcome.backends}


# --- full state ---------------------------------------------------------------------------


async def test_full_apply_converges_the_backends(node: Node) -> None:
    outcome = await applied(node)

    assert outcome.revision == 1
    assert node.one.clients == by_id(wg("a", 1), wg("b", 2))
    assert node.two.clients == by_id(ovpn("x"))
    assert reports(outcome) == {"one": (2, 0, 0), "two": (1, 0, 0)}
    assert all(o.status.health is Health.OK for o in outcome.backends)
    assert {o.name: o.status.clients for o in outcome.backends} == {"one": 2, "two": 1}
    assert (node.agent.revision, node.agent.state) == (1, base())


async def test_applying_the_same_state_again_changes_nothing(node: Node) -> None:
    await applied(node)
    before = (dict(node.one.clients), dict(node.two.clients))

    outcome = await applied(node, 2)

    assert reports(outcome) == {"one": (0, 0, 0), "two": (0, 0, 0)}
    assert (dict(node.one.clients), dict(node.two.clients)) == before
    assert node.agent.revision == 2


async def test_a_full_state_adds_updates_and_removes(node: Node) -> None:
    await applied(node)
    new = desired(one=[wg("a", 1, keepalive=25), wg("c", 3)])

    outcome = await applied(node, 2, new)

    assert reports(outcome) == {"one": (1, 1, 1), "two": (0, 0, 1)}
    assert node.one.clients == by_id(wg("a", 1, keepalive=25), wg("c", 3))
    assert node.two.clients == {}


@pytest.mark.parametrize(
    "state",
    [
        pytest.param(
            desired(
                one=[wg("a", 1), Client("bad", WireGuardPeer("not-a-key", None, ("10.8.0.9/32",)))],
                two=[ovpn("x"), ovpn("y")],
            ),
            id="bad-key-in-one",
        ),
        pytest.param(
            desired(one=[wg("a", 1), wg("c", 3)], two=[ovpn("x"), ovpn("")]), id="empty-id-in-two"
        ),
        pytest.param(
            desired(one=[wg("a", 1), wg("c", 1)], two=[ovpn("y")]), id="same-key-twice-in-one"
        ),
        pytest.param(
            DesiredState({"one": (wg("c", 3),), "three": (ovpn("z"),)}), id="unknown-backend"
        ),
    ],
)
async def test_a_state_with_one_invalid_part_changes_nothing(
    node: Node, state: DesiredState
) -> None:
    await applied(node)
    before = node.snapshot()

    with pytest.raises(InvalidStateError):
        await node.agent.apply_full(2, state, force=False)

    assert node.snapshot() == before


def test_a_duplicate_backend_never_reaches_the_agent() -> None:
    """The model is a mapping by backend name; the wire conversion refuses a name twice."""
    message = pb.DesiredState(backends=[pb.BackendState(name="one"), pb.BackendState(name="one")])

    with pytest.raises(InvalidStateError, match="'one' appears twice"):
        convert.state_from_pb(message)


def pb_client(client: Client) -> pb.Client:
    spec = client.spec
    if isinstance(spec, WireGuardPeer):
        peer = pb.WireGuardPeer(
            public_key=spec.public_key,
            allowed_ips=list(spec.allowed_ips),
            persistent_keepalive=spec.persistent_keepalive,
        )
        return pb.Client(id=client.id, wireguard=peer)
    assert isinstance(spec, OpenVpnClient)
    return pb.Client(id=client.id, openvpn=pb.OpenVpnClient(common_name=spec.common_name))


async def test_a_wire_state_converts_to_the_model(node: Node) -> None:
    message = pb.DesiredState(
        backends=[
            pb.BackendState(name="one", clients=[pb_client(wg("a", 1)), pb_client(wg("b", 2))]),
            pb.BackendState(name="two", clients=[pb_client(ovpn("x"))]),
        ]
    )

    await node.agent.apply_full(1, convert.state_from_pb(message), force=False)

    assert node.agent.state == base()
    assert node.one.clients == by_id(wg("a", 1), wg("b", 2))


async def test_a_wire_state_with_a_duplicate_client_id_changes_nothing(node: Node) -> None:
    await applied(node)
    before = node.snapshot()
    message = pb.DesiredState(
        backends=[
            pb.BackendState(name="one", clients=[pb_client(wg("a", 1)), pb_client(wg("a", 3))])
        ]
    )

    with pytest.raises(InvalidStateError, match="duplicate client id 'a'"):
        await node.agent.apply_full(2, convert.state_from_pb(message), force=False)

    assert node.snapshot() == before


async def test_an_older_full_state_needs_force(node: Node) -> None:
    await applied(node, 5)
    before = node.snapshot()
    older = desired(one=[wg("a", 1)])

    with pytest.raises(RevisionMismatchError, match="older"):
        await node.agent.apply_full(3, older, force=False)
    assert node.snapshot() == before

    await node.agent.apply_full(3, older, force=True)
    assert node.agent.revision == 3
    assert node.store.load() == (3, older)
    assert node.one.clients == by_id(wg("a", 1))


async def test_the_same_revision_may_be_resent(node: Node) -> None:
    await applied(node, 5)

    await node.agent.apply_full(5, desired(two=[ovpn("y")]), force=False)

    assert node.two.clients == by_id(ovpn("y"))
    assert node.one.clients == {}


# --- deltas -------------------------------------------------------------------------------


async def test_a_delta_adds_updates_and_removes(node: Node) -> None:
    await applied(node)

    outcome = await node.agent.apply_delta(
        1,
        2,
        upserts={"one": [wg("a", 1, keepalive=25), wg("c", 3)], "two": [ovpn("y")]},
        removals={"one": ["b"], "two": ["x"]},
    )

    expected = desired(one=[wg("a", 1, keepalive=25), wg("c", 3)], two=[ovpn("y")])
    assert outcome.revision == 2
    assert reports(outcome) == {"one": (1, 1, 1), "two": (1, 0, 1)}
    assert node.one.clients == by_id(*expected.clients("one"))
    assert node.two.clients == by_id(*expected.clients("two"))
    assert (node.agent.revision, node.agent.state) == (2, expected)
    assert node.store.load() == (2, expected)


async def test_a_delta_removing_every_client_of_a_backend(node: Node) -> None:
    await applied(node)

    await node.agent.apply_delta(1, 2, upserts={}, removals={"two": ["x"]})

    assert node.two.clients == {}
    assert node.agent.state == desired(one=[wg("a", 1), wg("b", 2)])
    assert node.store.load() == (2, node.agent.state)


@pytest.mark.parametrize("base", [0, 2, 7])
async def test_a_delta_on_the_wrong_base_changes_nothing(node: Node, base: int) -> None:
    await applied(node)
    before = node.snapshot()

    with pytest.raises(RevisionMismatchError, match="send the full state"):
        await node.agent.apply_delta(base, base + 1, upserts={"one": [wg("c", 3)]}, removals={})

    assert node.snapshot() == before


@pytest.mark.parametrize("revision", [1, 0])
async def test_a_delta_must_move_the_revision_forward(node: Node, revision: int) -> None:
    await applied(node)
    before = node.snapshot()

    with pytest.raises(InvalidStateError, match="greater than its base"):
        await node.agent.apply_delta(1, revision, upserts={"one": [wg("c", 3)]}, removals={})

    assert node.snapshot() == before


@pytest.mark.parametrize(
    ("upserts", "removals"),
    [
        pytest.param({"one": [wg("c", 3)], "two": [ovpn("")]}, {}, id="bad-id-in-two"),
        pytest.param({"one": [wg("c", 1)], "two": [ovpn("y")]}, {}, id="key-of-a"),
        pytest.param({"two": [ovpn("y")], "three": [ovpn("z")]}, {}, id="unknown-upsert"),
        pytest.param({"one": [wg("c", 3)]}, {"three": ["z"]}, id="unknown-removal"),
    ],
)
async def test_an_invalid_delta_changes_nothing(
    node: Node, upserts: dict[str, list[Client]], removals: dict[str, list[str]]
) -> None:
    await applied(node)
    before = node.snapshot()

    with pytest.raises(InvalidStateError):
        await node.agent.apply_delta(1, 2, upserts=upserts, removals=removals)

    assert node.snapshot() == before


async def test_a_delta_may_hand_a_key_from_a_removed_client_to_a_new_one(node: Node) -> None:
    await applied(node)

    await node.agent.apply_delta(1, 2, upserts={"one": [wg("c", 1)]}, removals={"one": ["a"]})

    assert node.one.clients == by_id(wg("b", 2), wg("c", 1))


# --- persistence --------------------------------------------------------------------------


async def test_state_and_revision_survive_a_restart(node: Node, tmp_path: Path) -> None:
    await applied(node)
    await node.agent.apply_delta(
        1, 2, upserts={"one": [wg("c", 3)]}, removals={"one": ["a"], "two": ["x"]}
    )
    expected = desired(one=[wg("b", 2), wg("c", 3)])
    node.close()

    fresh_store = StateStore(tmp_path / "state.db")
    try:
        assert fresh_store.load() == (2, expected)
    finally:
        fresh_store.close()

    restarted = Node(tmp_path)
    try:
        assert (restarted.agent.revision, restarted.agent.state) == (2, expected)
        assert restarted.one.clients == {}
        await restarted.agent.boot()
        assert restarted.one.started and restarted.two.started
        assert restarted.one.clients == by_id(wg("b", 2), wg("c", 3))
        assert restarted.two.clients == {}
        # And it carries on from there: the next delta is based on the restored revision.
        await restarted.agent.apply_delta(2, 3, upserts={"two": [ovpn("y")]}, removals={})
        assert restarted.store.load()[0] == 3
    finally:
        restarted.close()


async def test_boot_on_an_empty_state_dir(node: Node) -> None:
    await node.agent.boot()

    assert (node.agent.revision, node.agent.state) == (0, DesiredState())
    assert node.one.started and node.one.clients == {}


# --- usage --------------------------------------------------------------------------------


def total(node: Node, backend: str, client_id: str) -> tuple[int, int]:
    counters = node.ledger.totals(backend).get(client_id, Counters(0, 0))
    return counters.rx_bytes, counters.tx_bytes


async def test_traffic_before_a_delta_removal_is_counted(node: Node) -> None:
    await applied(node)
    node.one.add_traffic("a", 100, 10)  # never sampled before the removal
    node.two.add_traffic("x", 7, 3)

    await node.agent.apply_delta(1, 2, upserts={}, removals={"one": ["a"], "two": ["x"]})

    assert "a" not in node.one.clients
    assert total(node, "one", "a") == (100, 10)
    assert total(node, "two", "x") == (7, 3)


async def test_traffic_before_a_full_state_removal_is_counted(node: Node) -> None:
    await applied(node)
    node.one.add_traffic("b", 300, 30)

    await applied(node, 2, desired(one=[wg("a", 1)]))

    assert total(node, "one", "b") == (300, 30)


async def test_a_removed_and_readded_client_keeps_counting(node: Node) -> None:
    await applied(node)
    node.one.add_traffic("a", 100, 10)
    await node.agent.sample_usage()
    await node.agent.apply_delta(1, 2, upserts={}, removals={"one": ["a"]})
    await node.agent.apply_delta(2, 3, upserts={"one": [wg("a", 1)]}, removals={})
    # The re-created peer's counter restarted from 0 and is now past the old raw value.
    node.one.add_traffic("a", 150, 15)

    await node.agent.sample_usage()
    await node.agent.sample_usage()

    assert total(node, "one", "a") == (250, 25)


async def test_an_updated_client_keeps_its_counters(node: Node) -> None:
    await applied(node)
    node.one.add_traffic("a", 100, 10)
    await node.agent.sample_usage()
    await node.agent.apply_delta(1, 2, upserts={"one": [wg("a", 1, keepalive=25)]}, removals={})
    node.one.add_traffic("a", 50, 5)

    await node.agent.sample_usage()

    assert total(node, "one", "a") == (150, 15)


async def test_a_backend_restart_neither_loses_nor_double_counts(node: Node) -> None:
    await applied(node)
    node.one.add_traffic("a", 100, 10)
    await node.agent.sample_usage()

    node.one.restart()  # new epoch, counters back to 0
    await node.agent.sample_usage()
    assert total(node, "one", "a") == (100, 10)

    node.one.add_traffic("a", 150, 20)  # larger than before the restart: all of it is new
    await node.agent.sample_usage()
    await node.agent.reconcile()
    await node.agent.sample_usage()

    assert total(node, "one", "a") == (250, 30)
    assert node.one.clients == by_id(wg("a", 1), wg("b", 2))


# --- a failing backend --------------------------------------------------------------------


async def test_a_failing_backend_is_degraded_and_repaired_by_reconcile(node: Node) -> None:
    node.one.fail_next_apply = "disk on fire"

    outcome = await applied(node)

    status = {o.name: o.status for o in outcome.backends}
    assert status["one"].health is Health.DEGRADED
    assert "disk on fire" in status["one"].reason
    assert status["two"].health is Health.OK
    assert node.one.clients == {}
    assert node.two.clients == by_id(ovpn("x"))
    assert (node.agent.revision, node.agent.state) == (1, base())
    assert node.store.load() == (1, base())
    assert (await node.agent.statuses())["one"].health is Health.DEGRADED

    await node.agent.reconcile()

    assert node.one.clients == by_id(wg("a", 1), wg("b", 2))
    statuses = await node.agent.statuses()
    assert statuses["one"] == BackendStatus(Health.OK, "", 2, 0)
    assert statuses["two"].health is Health.OK


async def test_a_delta_to_a_failing_backend_is_still_persisted(node: Node) -> None:
    await applied(node)
    node.one.fail_next_apply = "busy"

    outcome = await node.agent.apply_delta(
        1, 2, upserts={"one": [wg("c", 3)], "two": [ovpn("y")]}, removals={}
    )

    status = {o.name: o.status for o in outcome.backends}
    assert status["one"].health is Health.DEGRADED and "busy" in status["one"].reason
    assert node.two.clients == by_id(ovpn("x"), ovpn("y"))
    assert node.agent.revision == 2
    assert node.store.load() == (2, node.agent.state)

    await node.agent.reconcile()

    assert node.one.clients == by_id(wg("a", 1), wg("b", 2), wg("c", 3))
    assert (await node.agent.backend_status("one")).health is Health.OK


async def test_a_delta_does_not_hide_an_earlier_failed_apply(node: Node) -> None:
    node.one.fail_next_apply = "busy"
    await applied(node)  # "one" never got a and b

    await node.agent.apply_delta(1, 2, upserts={"one": [wg("c", 3)]}, removals={})

    status = await node.agent.backend_status("one")
    converged = node.one.clients == by_id(*node.agent.state.clients("one"))
    assert converged or status.health is Health.DEGRADED, (status, sorted(node.one.clients))
