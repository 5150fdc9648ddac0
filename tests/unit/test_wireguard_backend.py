"""`WireGuardBackend` over an in-memory device with UAPI semantics, alone and under a real
`Agent` (with its `StateStore` and `UsageLedger` in ``tmp_path``).

Besides convergence, these pin down what a review found: a public key moving to another
client must not carry the old owner's traffic along, a failed backend must not let a delta
poison the desired state, an apply whose caller goes away still finishes, and a device that
prints its networks canonically is not re-sent the same allowed IPs on every full apply.
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import datetime as dt
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from pathlib import Path

import pytest

from node_agent.agent import Agent
from node_agent.backends.base import ApplyReport, Health
from node_agent.backends.wireguard.backend import WireGuardBackend
from node_agent.backends.wireguard.driver import DriverError, PeerChange, PeerState
from node_agent.errors import InvalidStateError
from node_agent.ledger import UsageLedger
from node_agent.model import Client, DesiredState, WireGuardPeer
from node_agent.state import StateStore
from tests.unit.wg_memory_driver import (
    LISTEN_PORT,
    SERVER_ADDRESSES,
    MemoryWireGuardDriver,
    make_backend,
    patch_link,
)

# --- builders ----------------------------------------------------------------------------


def key(n: int) -> str:
    return base64.b64encode(n.to_bytes(32, "big")).decode()


def psk(n: int) -> str:
    return base64.b64encode(bytes([n]) * 32).decode()


def peer(
    client_id: str,
    n: int,
    *,
    ip: str | None = None,
    preshared_key: str | None = None,
    keepalive: int = 0,
) -> Client:
    """Client ``client_id`` with key ``n`` and, unless given, the address 10.8.0.(n+1)."""
    allowed = (ip or f"10.8.0.{n + 1}/32",)
    return Client(client_id, WireGuardPeer(key(n), preshared_key, allowed, keepalive))


def fresh(n: int, *ips: str) -> PeerState:
    """A device peer with key ``n`` as created by the backend: no traffic yet."""
    return PeerState(key(n), None, ips or (f"10.8.0.{n + 1}/32",), 0)


def desired(*clients: Client) -> DesiredState:
    return DesiredState({"wg": clients} if clients else {})


class Clock:
    def __init__(self) -> None:
        self.now = dt.datetime(2026, 1, 15, 12, 0, tzinfo=dt.UTC)

    def __call__(self) -> dt.datetime:
        self.now += dt.timedelta(seconds=1)
        return self.now


class Node:
    """One agent process over a state directory, with backend "wg" over the memory device."""

    def __init__(self, state_dir: Path, driver: MemoryWireGuardDriver) -> None:
        state_dir.mkdir(parents=True, exist_ok=True)
        self.state_path = state_dir / "state.db"
        self.driver = driver
        self.backend = make_backend(state_dir, driver)
        self.store = StateStore(self.state_path)
        self.ledger = UsageLedger(state_dir / "usage.db")
        self.agent = Agent(
            node_id="node-1",
            version="test",
            backends={"wg": self.backend},
            store=self.store,
            ledger=self.ledger,
            clock=Clock(),
        )

    def close(self) -> None:
        self.store.close()
        self.ledger.close()

    def persisted(self) -> tuple[int, DesiredState]:
        """What a fresh reader of the state file sees."""
        store = StateStore(self.state_path)
        try:
            return store.load()
        finally:
            store.close()

    def totals(self) -> dict[str, tuple[int, int]]:
        return {cid: (c.rx_bytes, c.tx_bytes) for cid, c in self.ledger.totals("wg").items()}

    async def health(self) -> Health:
        return (await self.agent.backend_status("wg")).health


StartNode = Callable[[], Awaitable[Node]]


# --- fixtures ----------------------------------------------------------------------------


@pytest.fixture
def driver(monkeypatch: pytest.MonkeyPatch) -> MemoryWireGuardDriver:
    driver = MemoryWireGuardDriver()
    patch_link(monkeypatch, driver)
    return driver


@pytest.fixture
async def backend(tmp_path: Path, driver: MemoryWireGuardDriver) -> WireGuardBackend:
    backend = make_backend(tmp_path, driver)
    await backend.start()
    return backend


@pytest.fixture
async def start_node(tmp_path: Path, driver: MemoryWireGuardDriver) -> AsyncIterator[StartNode]:
    """Start (or restart) the agent over the same state directory and the same device."""
    nodes: list[Node] = []

    async def start() -> Node:
        node = Node(tmp_path / "node", driver)
        nodes.append(node)
        await node.agent.boot()
        return node

    yield start
    for node in nodes:
        node.close()


@pytest.fixture
async def node(start_node: StartNode) -> Node:
    return await start_node()


async def apply(
    backend: WireGuardBackend,
    mode: str,
    clients: Iterable[Client],
    upserts: Iterable[Client] = (),
    removals: Iterable[str] = (),
) -> ApplyReport:
    """``mode`` "full": converge to ``clients``; "delta": send only the change."""
    if mode == "full":
        return await backend.apply(list(clients))
    return await backend.apply_changes(list(upserts), list(removals))


MODES = ["full", "delta"]


# --- the memory device itself ------------------------------------------------------------


async def test_the_memory_device_applies_a_set_in_order_like_the_uapi(
    driver: MemoryWireGuardDriver,
) -> None:
    await driver.ensure_device("wg0")
    await driver.set("wg0", peers=[PeerChange(key(1), allowed_ips=("10.8.0.2/32",))])
    driver.add_traffic(key(1), 10, 20)

    await driver.set(
        "wg0",
        peers=[
            PeerChange(key(1), remove=True),
            PeerChange(key(1), preshared_key=psk(1), allowed_ips=("FD00:0:0::2/128",)),
            PeerChange(key(2), update_only=True, persistent_keepalive=25),  # absent: ignored
            PeerChange(key(3), allowed_ips=("fd00::2/128", "10.8.0.4/32")),  # takes fd00::2
        ],
    )
    assert driver.peers == {
        key(1): PeerState(key(1), psk(1), ()),  # re-created: no counters, network moved away
        key(3): PeerState(key(3), None, ("fd00::2/128", "10.8.0.4/32")),
    }

    await driver.set("wg0", peers=[PeerChange(key(1), update_only=True, preshared_key="")])
    assert driver.peers[key(1)].preshared_key is None


async def test_the_memory_device_fails_and_crashes_on_demand(
    driver: MemoryWireGuardDriver,
) -> None:
    assert await driver.ensure_device("wg0") is True
    assert await driver.ensure_device("wg0") is False
    first = driver.configure_link("wg0", [])
    await driver.set("wg0", peers=[PeerChange(key(1), allowed_ips=("10.8.0.2/32",))])

    driver.fail_get = driver.fail_set = True
    with pytest.raises(DriverError):
        await driver.get("wg0")
    with pytest.raises(DriverError):
        await driver.set("wg0", peers=[PeerChange(key(1), remove=True)])
    driver.fail_get = driver.fail_set = False

    driver.crash()
    assert not await driver.exists("wg0")
    with pytest.raises(DriverError):
        driver.configure_link("wg0", [])
    assert await driver.ensure_device("wg0") is True
    assert driver.configure_link("wg0", []) != first
    assert (await driver.get("wg0")).peers == {}


# --- convergence -------------------------------------------------------------------------


async def test_a_full_apply_converges_an_empty_device(
    backend: WireGuardBackend, driver: MemoryWireGuardDriver
) -> None:
    assert driver.created == 1
    assert driver.private_key == backend.private_key
    assert driver.listen_port == LISTEN_PORT
    assert driver.addresses == SERVER_ADDRESSES
    assert driver.peers == {}

    report = await backend.apply(
        [peer("alice", 1, preshared_key=psk(1), keepalive=25), peer("bob", 2, ip="fd00::2/128")]
    )

    assert report == ApplyReport(added=2, reset_clients=frozenset({"alice", "bob"}))
    assert driver.peers == {
        key(1): PeerState(key(1), psk(1), ("10.8.0.2/32",), 25),
        key(2): fresh(2, "fd00::2/128"),
    }


async def test_a_second_full_apply_sends_no_change(
    backend: WireGuardBackend, driver: MemoryWireGuardDriver
) -> None:
    clients = [
        peer("alice", 1, preshared_key=psk(1), keepalive=25),
        peer("bob", 2),
        Client("carol", WireGuardPeer(key(3), None, ("fd00::3/128", "10.8.0.4/32"))),
    ]
    await backend.apply(clients)
    sent = len(driver.changes)

    assert await backend.apply(clients) == ApplyReport()
    assert await backend.apply(list(reversed(clients))) == ApplyReport()

    assert len(driver.changes) == sent


EDITS: dict[str, Callable[[WireGuardPeer], WireGuardPeer]] = {
    "allowed IPs": lambda s: dataclasses.replace(s, allowed_ips=("10.8.0.50/32", "fd00::50/128")),
    "preshared key changed": lambda s: dataclasses.replace(s, preshared_key=psk(7)),
    "preshared key cleared": lambda s: dataclasses.replace(s, preshared_key=None),
    "keepalive": lambda s: dataclasses.replace(s, persistent_keepalive=25),
}


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("edit", list(EDITS))
async def test_editing_a_peer_updates_it_in_place(
    backend: WireGuardBackend, driver: MemoryWireGuardDriver, edit: str, mode: str
) -> None:
    alice, bob = peer("alice", 1, preshared_key=psk(1)), peer("bob", 2)
    await backend.apply([alice, bob])
    driver.add_traffic(key(1), 1000, 2000)
    driver.add_traffic(key(2), 30, 40)
    assert isinstance(alice.spec, WireGuardPeer)
    spec = EDITS[edit](alice.spec)
    edited = Client("alice", spec)
    sent = len(driver.changes)

    report = await apply(backend, mode, [edited, bob], upserts=[edited])

    assert report == ApplyReport(updated=1)  # nobody's counters restarted
    changes = driver.changes[sent:]
    assert [(c.public_key, c.update_only, c.remove) for c in changes] == [(key(1), True, False)]
    assert driver.peers[key(1)] == PeerState(
        key(1), spec.preshared_key, spec.allowed_ips, spec.persistent_keepalive, None, 0, 1000, 2000
    )
    assert driver.peers[key(2)] == dataclasses.replace(fresh(2), rx_bytes=30, tx_bytes=40)


@pytest.mark.parametrize("mode", MODES)
async def test_removing_a_client_removes_only_its_peer(
    backend: WireGuardBackend, driver: MemoryWireGuardDriver, mode: str
) -> None:
    alice, bob, carol = peer("alice", 1), peer("bob", 2), peer("carol", 3)
    await backend.apply([alice, bob, carol])
    driver.add_traffic(key(1), 10, 20)
    sent = len(driver.changes)

    report = await apply(backend, mode, [alice, carol], removals=["bob"])

    assert report == ApplyReport(removed=1, reset_clients=frozenset({"bob"}))
    assert driver.changes[sent:] == [PeerChange(key(2), remove=True)]
    assert driver.peers == {
        key(1): dataclasses.replace(fresh(1), rx_bytes=10, tx_bytes=20),
        key(3): fresh(3),
    }


@pytest.mark.parametrize("mode", MODES)
async def test_a_client_changing_its_key_gets_a_fresh_peer(
    backend: WireGuardBackend, driver: MemoryWireGuardDriver, mode: str
) -> None:
    await backend.apply([peer("alice", 1), peer("bob", 2)])
    driver.add_traffic(key(1), 1000, 2000)
    rekeyed = peer("alice", 9, ip="10.8.0.2/32")  # same address, new key

    report = await apply(backend, mode, [rekeyed, peer("bob", 2)], upserts=[rekeyed])

    assert report.reset_clients == {"alice"}
    assert driver.peers == {key(9): fresh(9, "10.8.0.2/32"), key(2): fresh(2)}


async def test_a_non_canonical_ipv6_allowed_ip_is_not_resent_on_every_full_apply(
    backend: WireGuardBackend, driver: MemoryWireGuardDriver
) -> None:
    alice = peer("alice", 1, ip="FD00:0:0::2/128")
    await backend.apply([alice])
    assert driver.peers[key(1)].allowed_ips == ("fd00::2/128",)  # as the device prints it
    sent = len(driver.changes)

    for _ in range(3):
        assert await backend.apply([alice]) == ApplyReport()

    assert len(driver.changes) == sent


# --- a key that moves to another client ---------------------------------------------------

KEY_MOVES = ["delta, alice removed", "delta, alice re-keyed", "full, alice removed"]
KEY_MOVES += ["full, alice re-keyed"]


@pytest.mark.parametrize("how", KEY_MOVES)
async def test_a_key_moved_to_another_client_takes_no_traffic_along(
    node: Node, driver: MemoryWireGuardDriver, how: str
) -> None:
    agent = node.agent
    await agent.apply_full(1, desired(peer("alice", 1)), force=False)
    driver.add_traffic(key(1), 5_000_000_000, 7_000)  # alice used 5 GB
    await agent.sample_usage()

    # In one change bob (a new client, his own address) gets the key alice had; alice
    # either leaves or keeps her address under a new key.
    bob = peer("bob", 1, ip="10.8.0.9/32")
    alice = peer("alice", 2, ip="10.8.0.2/32")
    remaining = [alice] if "re-keyed" in how else []
    if how.startswith("delta"):
        removals = [] if remaining else ["alice"]
        await agent.apply_delta(1, 2, {"wg": [*remaining, bob]}, {"wg": removals})
    else:
        await agent.apply_full(2, desired(*remaining, bob), force=False)

    assert await node.health() is Health.OK
    assert driver.peers[key(1)] == fresh(1, "10.8.0.9/32")  # re-created, not taken over
    await agent.sample_usage()
    assert node.totals().get("bob", (0, 0)) == (0, 0)
    assert node.totals()["alice"] == (5_000_000_000, 7_000)

    driver.add_traffic(key(1), 300, 400)
    if remaining:
        driver.add_traffic(key(2), 10, 20)
    await agent.sample_usage()
    expected_alice = (5_000_000_010, 7_020) if remaining else (5_000_000_000, 7_000)
    assert node.totals() == {"alice": expected_alice, "bob": (300, 400)}


# --- a failed backend -------------------------------------------------------------------


async def _fail_full_state(node: Node) -> tuple[int, DesiredState, Client]:
    state = desired(peer("alice", 1), peer("carol", 3))
    outcome = await node.agent.apply_full(2, state, force=False)
    assert outcome.backends[0].status.health is Health.DEGRADED
    return 2, state, peer("carol", 3)


async def _fail_two_deltas(node: Node) -> tuple[int, DesiredState, Client]:
    # The first failed delta degrades the backend; the second one, on a degraded backend,
    # goes out as the whole state and fails too.
    outcome = await node.agent.apply_delta(1, 2, {"wg": [peer("carol", 3)]}, {})
    assert outcome.backends[0].status.health is Health.DEGRADED
    outcome = await node.agent.apply_delta(2, 3, {"wg": [peer("dave", 4)]}, {})
    assert outcome.backends[0].status.health is Health.DEGRADED
    return 3, desired(peer("alice", 1), peer("carol", 3), peer("dave", 4)), peer("dave", 4)


FAILED_CHANGES = {"full state": _fail_full_state, "two deltas": _fail_two_deltas}


def _clashing(newest: Client, clash: str) -> Client:
    assert isinstance(newest.spec, WireGuardPeer)
    if clash == "public key":
        return Client("eve", WireGuardPeer(newest.spec.public_key, None, ("10.8.0.99/32",)))
    return Client("eve", WireGuardPeer(key(99), None, newest.spec.allowed_ips))


@pytest.mark.parametrize("clash", ["public key", "allowed IP"])
@pytest.mark.parametrize("failed_change", list(FAILED_CHANGES))
async def test_a_failed_backend_refuses_a_delta_that_clashes_with_the_desired_state(
    node: Node,
    start_node: StartNode,
    driver: MemoryWireGuardDriver,
    failed_change: str,
    clash: str,
) -> None:
    agent = node.agent
    await agent.apply_full(1, desired(peer("alice", 1)), force=False)
    driver.fail_set = True  # the device stops taking changes

    # Accepted (the node must converge to it), but not on the device yet.
    revision, state, newest = await FAILED_CHANGES[failed_change](node)
    assert (agent.revision, agent.state) == (revision, state)
    assert node.persisted() == (revision, state)
    assert key(3) not in driver.peers

    # A change that clashes with what the node must serve is refused, and changes nothing,
    # although it would fit what the device last took.
    with pytest.raises(InvalidStateError):
        await agent.apply_delta(revision, revision + 1, {"wg": [_clashing(newest, clash)]}, {})
    assert (agent.revision, agent.state) == (revision, state)
    assert node.persisted() == (revision, state)
    assert await node.health() is Health.DEGRADED

    # The device is back: the periodic reconcile converges it.
    driver.fail_set = False
    await agent.reconcile()
    assert await node.health() is Health.OK
    wanted = {c.spec.public_key for c in state.clients("wg") if isinstance(c.spec, WireGuardPeer)}
    assert set(driver.peers) == wanted

    # And a restart serves the same state.
    await agent.close()
    node.close()
    restarted = await start_node()
    assert (restarted.agent.revision, restarted.agent.state) == (revision, state)
    assert await restarted.health() is Health.OK
    assert set(driver.peers) == wanted


# --- a caller that goes away ----------------------------------------------------------------


@pytest.mark.parametrize("call", ["apply_full", "apply_delta"])
async def test_an_apply_whose_caller_is_cancelled_still_completes(
    node: Node, driver: MemoryWireGuardDriver, call: str
) -> None:
    agent = node.agent
    alice, bob, carol = peer("alice", 1), peer("bob", 2), peer("carol", 3)
    await agent.apply_full(1, desired(alice), force=False)
    driver.set_delay = 0.3  # a slow device: the caller's deadline passes mid-apply

    if call == "apply_full":
        work = agent.apply_full(2, desired(alice, bob), force=False)
    else:
        work = agent.apply_delta(1, 2, {"wg": [bob]}, {})
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(work, 0.05)

    await agent.sample_usage()  # takes the agent's lock: the apply has finished by then
    assert agent.revision == node.persisted()[0] == 2
    assert agent.state == node.persisted()[1] == desired(alice, bob)
    assert set(driver.peers) == {key(1), key(2)}
    assert await node.health() is Health.OK

    # The controller goes on from the revision the agent reports.
    driver.set_delay = 0
    outcome = await agent.apply_delta(agent.revision, 3, {"wg": [carol]}, {})
    assert outcome.revision == 3
    assert outcome.backends[0].status.health is Health.OK
    assert set(driver.peers) == {key(1), key(2), key(3)}
    assert node.persisted() == (3, desired(alice, bob, carol))


# --- a device that disappears ------------------------------------------------------------


async def test_a_crashed_device_is_recreated_and_usage_is_neither_lost_nor_counted_twice(
    node: Node, driver: MemoryWireGuardDriver
) -> None:
    agent = node.agent
    await agent.apply_full(1, desired(peer("alice", 1), peer("bob", 2)), force=False)
    driver.add_traffic(key(1), 1000, 2000)
    driver.add_traffic(key(2), 300, 400)
    await agent.sample_usage()
    epoch = (await node.backend.usage()).epoch

    driver.crash()
    assert await node.health() is Health.DOWN
    await agent.sample_usage()  # nothing to read: no harm done

    await agent.reconcile()

    assert await node.health() is Health.OK
    assert driver.created == 2
    assert (driver.private_key, driver.listen_port) == (node.backend.private_key, LISTEN_PORT)
    assert driver.peers == {key(1): fresh(1), key(2): fresh(2)}
    assert (await node.backend.usage()).epoch != epoch
    await agent.sample_usage()
    assert node.totals() == {"alice": (1000, 2000), "bob": (300, 400)}

    # Counters of the new device start from zero; more than the old ones is all new traffic.
    driver.add_traffic(key(1), 5000, 6000)
    driver.add_traffic(key(2), 1, 1)
    await agent.sample_usage()
    assert node.totals() == {"alice": (6000, 8000), "bob": (301, 401)}
