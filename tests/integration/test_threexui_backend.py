"""The 3X-UI backend against the local panel, both API generations: clients added, changed and
removed through ``apply`` and ``apply_changes``, hand-made clients untouched, usage, lost
sessions, panel failures and convergence afterwards, Reality parameters; and once through a
real agent (gRPC over mTLS, state store, usage ledger)."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from node_agent.backends.base import Counters, Health, RealityPublicParams
from node_agent.backends.threexui.backend import ThreeXuiBackend
from node_agent.config import ThreeXuiConfig
from node_agent.errors import BackendError
from node_agent.model import Client, VlessUser
from proto.nodeapi.v1 import node_agent_pb2 as pb
from tests.agent_support import Cluster, running_agent
from tests.threexui_fake import FakePanel, reality_stream, running_panel

VISION = "xtls-rprx-vision"
PUBLIC_KEY = "Z84J2IelR9ch3k8VtlVhhs5ycBUlXA7wHBWcBrjqnAw"
HAND_UUID = "d3b1a7c0-5f43-4c5e-9d2e-3c1f0b8a9e77"


def user_id(n: int) -> str:
    return str(uuid.UUID(int=0xA000 + n))


def vless(client_id: str, n: int, flow: str = VISION, email: str | None = None) -> Client:
    return Client(client_id, VlessUser(user_id(n), flow, f"config-{n}" if email is None else email))


def email(n: int) -> str:
    return f"vpnbot-config-{n}"


def ours(panel: FakePanel, inbound: int) -> dict[str, tuple[str, str, bool]]:
    """Our clients in the panel: email -> (uuid, flow, enable)."""
    return {
        c["email"]: (c["id"], c.get("flow", ""), c.get("enable", True))
        for c in panel.clients(inbound)
        if c["email"].startswith("vpnbot-")
    }


async def eventually(check: Callable[[], bool], within: float = 10) -> None:
    deadline = time.monotonic() + within
    while not check():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.02)


@pytest.fixture(params=["inbounds", "clients"])
def panel(request: pytest.FixtureRequest) -> Iterator[FakePanel]:
    with running_panel(request.param) as fake:
        yield fake


@pytest.fixture
def inbound(panel: FakePanel) -> int:
    number = panel.add_inbound(port=8443, stream=reality_stream(PUBLIC_KEY))
    panel.add_hand_client(number, "alice-by-hand", HAND_UUID, flow=VISION)
    return number


BackendFactory = Callable[..., ThreeXuiBackend]


@pytest.fixture
async def make(panel: FakePanel, tmp_path: Path) -> AsyncIterator[BackendFactory]:
    made: list[ThreeXuiBackend] = []

    def factory(inbound_id: int, **table: Any) -> ThreeXuiBackend:
        spec = ThreeXuiConfig(
            type="threexui",
            url=panel.url,
            username=panel.username,
            password=panel.password,
            inbound_id=inbound_id,
            **table,
        )
        backend = ThreeXuiBackend("xui", spec, tmp_path)
        made.append(backend)
        return backend

    yield factory
    for backend in made:
        await backend.close()


@pytest.fixture
async def backend(make: BackendFactory, inbound: int) -> ThreeXuiBackend:
    made = make(inbound)
    await made.start()
    return made


# --- full applies -------------------------------------------------------------------------


async def test_apply_adds_updates_and_removes_only_our_clients(
    panel: FakePanel, inbound: int, backend: ThreeXuiBackend
) -> None:
    by_hand = panel.client(inbound, "alice-by-hand")

    report = await backend.apply([vless("a", 1), vless("b", 2)])

    assert (report.added, report.updated, report.removed) == (2, 0, 0)
    assert report.reset_clients == {"a", "b"}  # new panel clients count from zero
    assert ours(panel, inbound) == {
        email(1): (user_id(1), VISION, True),
        email(2): (user_id(2), VISION, True),
    }
    created = panel.client(inbound, email(1))
    assert created["comment"].startswith("managed by vpnbot")
    assert (created["totalGB"], created["expiryTime"]) == (0, 0)  # the panel never cuts it off

    report = await backend.apply([vless("a", 1, flow=""), vless("b", 2)])
    assert (report.added, report.updated, report.removed) == (0, 1, 0)
    assert report.reset_clients == frozenset()  # changed in place: counters go on
    assert ours(panel, inbound)[email(1)] == (user_id(1), "", True)

    report = await backend.apply([vless("b", 2)])
    assert (report.added, report.updated, report.removed) == (0, 0, 1)
    assert report.reset_clients == {"a"}
    assert set(ours(panel, inbound)) == {email(2)}

    assert (await backend.apply([vless("b", 2)])) == type(report)()  # nothing to do
    assert panel.client(inbound, "alice-by-hand") == by_hand  # never touched


async def test_apply_repairs_what_was_changed_in_the_panel(
    panel: FakePanel, inbound: int, backend: ThreeXuiBackend
) -> None:
    wanted = [vless("a", 1), vless("b", 2), vless("c", 3)]
    await backend.apply(wanted)
    panel.drop_client(inbound, email(1))  # deleted by hand
    panel.edit_client(inbound, email(2), enable=False)  # switched off by hand
    panel.edit_client(inbound, email(3), flow="", id=HAND_UUID.replace("d3", "e4"))
    panel.add_hand_client(inbound, "vpnbot-stray", str(uuid.uuid4()))  # ours by its prefix

    report = await backend.apply(wanted)

    assert (report.added, report.updated, report.removed) == (1, 2, 1)
    assert report.reset_clients == {"a"}
    assert ours(panel, inbound) == {
        email(1): (user_id(1), VISION, True),
        email(2): (user_id(2), VISION, True),
        email(3): (user_id(3), VISION, True),
    }
    assert "alice-by-hand" in panel.emails(inbound)


async def test_a_hand_made_client_holding_our_uuid_stops_the_apply_before_any_change(
    panel: FakePanel, inbound: int, backend: ThreeXuiBackend
) -> None:
    clash = Client("a", VlessUser(HAND_UUID, VISION, "config-1"))

    with pytest.raises(BackendError, match="'alice-by-hand' holds the UUID of 'vpnbot-config-1'"):
        await backend.apply([clash, vless("b", 2)])

    assert ours(panel, inbound) == {}


async def test_after_an_agent_restart_the_panel_says_which_client_is_whose(
    panel: FakePanel, inbound: int, make: BackendFactory
) -> None:
    first = make(inbound)
    await first.apply([vless("a", 1), vless("b", 2)])
    panel.add_traffic(email(1), 10, 20)

    second = make(inbound)  # a new process: no memory of the panel
    report = await second.apply([vless("a", 1), vless("b", 2)])

    assert report == type(report)()
    assert (await second.usage()).counters["a"] == Counters(10, 20)


# --- deltas ----------------------------------------------------------------------------------


async def test_apply_changes_sends_only_the_delta(
    panel: FakePanel, inbound: int, backend: ThreeXuiBackend
) -> None:
    await backend.apply([vless("a", 1)])
    reads = panel.calls("inbounds/get/")

    report = await backend.apply_changes([vless("b", 2)], [])
    assert (report.added, report.reset_clients) == (1, {"b"})
    assert panel.calls("inbounds/get/") == reads  # no read of the inbound for a delta

    panel.add_traffic(email(1), 100, 200)
    moved = Client("a", VlessUser(user_id(9), VISION, "config-1"))  # a new UUID, same client
    report = await backend.apply_changes([moved], [])
    assert (report.updated, report.reset_clients) == (1, frozenset())
    assert ours(panel, inbound)[email(1)] == (user_id(9), VISION, True)
    assert panel.traffics[email(1)]["up"] == 100  # changed in place, counters kept

    report = await backend.apply_changes([], ["a", "unknown"])
    assert (report.removed, report.reset_clients) == (1, {"a"})
    assert set(ours(panel, inbound)) == {email(2)}

    await backend.apply_changes([vless("c", 3)], [])
    panel.drop_client(inbound, email(3))  # deleted by hand meanwhile: gone is gone
    report = await backend.apply_changes([], ["c"])
    assert (report.removed, report.reset_clients) == (1, {"c"})

    renamed = Client("b", VlessUser(user_id(2), VISION, "config-77"))
    report = await backend.apply_changes([renamed], [])
    assert (report.added, report.removed, report.reset_clients) == (1, 1, {"b"})
    assert set(ours(panel, inbound)) == {"vpnbot-config-77"}


async def test_a_reissued_config_takes_over_the_email_after_the_old_client_goes(
    panel: FakePanel, inbound: int, backend: ThreeXuiBackend
) -> None:
    """Re-issue: a new client id and UUID under the same panel email, in one delta."""
    old = vless("old", 1)
    await backend.apply([old])
    panel.add_traffic(email(1), 5, 5)
    new = Client("new", VlessUser(user_id(2), VISION, "config-1"))

    report = await backend.apply_changes([new], ["old"])

    assert (report.added, report.removed, report.reset_clients) == (1, 1, {"old", "new"})
    assert ours(panel, inbound) == {email(1): (user_id(2), VISION, True)}
    assert panel.traffics[email(1)]["up"] == 0  # the old client's traffic is not the new one's
    assert (await backend.usage()).counters == {"new": Counters(0, 0)}


# --- usage and status ---------------------------------------------------------------------


async def test_usage_reports_our_clients_counters_by_client_id(
    panel: FakePanel, inbound: int, backend: ThreeXuiBackend
) -> None:
    await backend.apply([vless("a", 1), vless("b", 2)])
    panel.add_traffic(email(1), 1000, 50_000)
    panel.add_traffic("alice-by-hand", 7, 7)

    sample = await backend.usage()

    assert sample.counters == {"a": Counters(1000, 50_000), "b": Counters(0, 0)}
    panel.reset_traffic(email(1))  # the panel's reset button: the ledger sees the decrease
    again = await backend.usage()
    assert again.counters["a"] == Counters(0, 0)
    assert again.epoch == sample.epoch == f"3x-ui-inbound-{inbound}"


async def test_status_counts_clients_and_reports_the_panel_down(
    panel: FakePanel, inbound: int, backend: ThreeXuiBackend
) -> None:
    await backend.apply([vless("a", 1), vless("b", 2)])
    panel.add_traffic(email(2), 1, 1)  # online now
    panel.add_traffic("alice-by-hand", 1, 1)

    status = await backend.status()
    assert (status.health, status.clients, status.clients_online) == (Health.OK, 2, 1)

    panel.inbounds[inbound]["enable"] = False
    status = await backend.status()
    assert status.health is Health.DOWN
    assert status.reason == f"inbound {inbound} is disabled in the panel"

    panel.stop()
    status = await backend.status()
    assert status.health is Health.DOWN
    assert "cannot reach the panel" in status.reason


# --- Reality and the inbound ---------------------------------------------------------------


async def test_public_params_are_the_reality_inbounds(
    panel: FakePanel, make: BackendFactory
) -> None:
    reality = panel.add_inbound(
        port=8443,
        stream=reality_stream(PUBLIC_KEY, short_ids=["6ba85179e30d4fc2"], fingerprint="safari"),
    )
    plain = panel.add_inbound(port=8080, stream={"network": "ws", "security": "none"})
    backend, other = make(reality), make(plain)

    await backend.start()
    await other.start()

    assert backend.public_params() == RealityPublicParams(
        port=8443,
        public_key=PUBLIC_KEY,
        short_ids=("6ba85179e30d4fc2",),
        server_names=("www.example.com", "example.com"),
        flow=VISION,
        fingerprint="safari",
    )
    assert other.public_params() is None
    await other.apply([vless("a", 1)])
    assert ours(panel, plain)[email(1)][1] == ""  # no Vision flow on a WebSocket inbound


async def test_a_missing_or_non_vless_inbound_is_refused(
    panel: FakePanel, make: BackendFactory
) -> None:
    vmess = panel.add_inbound(protocol="vmess")

    with pytest.raises(BackendError, match="xui: read inbound 42: no such inbound"):
        await make(42).start()
    with pytest.raises(BackendError, match=f"inbound {vmess} is a vmess inbound"):
        await make(vmess).apply([vless("a", 1)])


async def test_auto_finds_the_generation_and_a_wrong_forced_one_fails_clearly(
    panel: FakePanel, inbound: int, make: BackendFactory
) -> None:
    auto = make(inbound)
    await auto.start()
    assert auto.generation == panel.generation

    wrong = make(inbound, api="clients" if panel.generation == "inbounds" else "inbounds")
    with pytest.raises(
        BackendError, match=r"the panel has no (GET|POST) /panel/api/.* \(HTTP 404\)"
    ):
        await wrong.apply([vless("a", 1)])
    assert ours(panel, inbound) == {}


# --- sessions and failures -------------------------------------------------------------------


async def test_a_lost_session_means_one_new_login(
    panel: FakePanel, inbound: int, backend: ThreeXuiBackend
) -> None:
    await backend.apply([vless("a", 1)])
    logins = panel.logins
    panel.expire_sessions()

    report = await backend.apply_changes([vless("b", 2)], [])

    assert report.added == 1
    assert panel.logins == logins + 1
    assert set(ours(panel, inbound)) == {email(1), email(2)}


@pytest.mark.parametrize(
    ("kind", "message"),
    [
        ("refuse", "the panel refused: Something went wrong (injected failure)"),
        ("html", "answered HTTP 200 with text/html, not JSON"),
        ("status500", "answered HTTP 500"),
    ],
)
async def test_a_failing_panel_is_a_backend_error_and_a_retry_converges(
    panel: FakePanel, inbound: int, backend: ThreeXuiBackend, kind: Any, message: str
) -> None:
    await backend.apply([vless("a", 1)])
    write = "addClient" if panel.generation == "inbounds" else "clients/add"
    panel.fail_next(kind, path=write)

    with pytest.raises(BackendError) as info:
        await backend.apply_changes([vless("b", 2)], ["a"])
    assert str(info.value).startswith("xui: add ")
    assert message in str(info.value)
    assert set(ours(panel, inbound)) == {email(1)}  # nothing of the change landed

    report = await backend.apply([vless("b", 2)])  # what the agent's retry does
    assert (report.added, report.removed, report.reset_clients) == (1, 1, {"a", "b"})
    assert set(ours(panel, inbound)) == {email(2)}


async def test_a_timed_out_change_that_landed_anyway_is_adopted_not_repeated(
    panel: FakePanel, inbound: int, make: BackendFactory
) -> None:
    backend = make(inbound, timeout=1.0)
    await backend.apply([vless("a", 1)])
    write = "addClient" if panel.generation == "inbounds" else "clients/add"
    panel.fail_next("slow", path=write, delay=2.0)

    with pytest.raises(BackendError, match=r"did not answer within 1 s"):
        await backend.apply_changes([vless("b", 2)], [])
    await eventually(lambda: email(2) in panel.emails(inbound))  # the slow panel did it

    report = await backend.apply([vless("a", 1), vless("b", 2)])
    assert (report.added, report.updated, report.removed) == (0, 0, 0)
    assert sum(1 for c in panel.clients(inbound) if c["email"] == email(2)) == 1


async def test_the_last_client_of_an_inbound(panel: FakePanel, make: BackendFactory) -> None:
    """Older panels never delete an inbound's last client: it is switched off instead, and
    deleted once another client exists. Newer panels simply delete it."""
    alone = panel.add_inbound(port=9443, stream=reality_stream(PUBLIC_KEY))
    backend = make(alone)
    await backend.apply([vless("a", 1)])
    panel.add_traffic(email(1), 10, 10)

    report = await backend.apply([])
    assert report.removed == 1
    if panel.generation == "inbounds":
        assert ours(panel, alone) == {email(1): (user_id(1), VISION, False)}
        assert report.reset_clients == frozenset()  # its counters live on in the panel
        assert (await backend.usage()).counters == {}
        assert (await backend.apply([])).removed == 0  # still refused, already off
        report = await backend.apply([vless("a", 1)])  # back again: switched on
        assert (report.added, report.updated, report.reset_clients) == (0, 1, frozenset())
        assert (await backend.usage()).counters == {"a": Counters(10, 10)}
        report = await backend.apply([vless("b", 2)])  # now the old one can go
        assert (report.added, report.removed) == (1, 1)
    else:
        assert ours(panel, alone) == {}
        assert report.reset_clients == {"a"}
        await backend.apply([vless("b", 2)])
    assert set(ours(panel, alone)) == {email(2)}


# --- through the agent ---------------------------------------------------------------------


def pb_client(client: Client) -> pb.Client:
    spec = client.spec
    assert isinstance(spec, VlessUser)
    return pb.Client(
        id=client.id, vless=pb.VlessUser(uuid=spec.uuid, flow=spec.flow, email=spec.email)
    )


def delta(upserts: Sequence[Client] = (), removals: Sequence[str] = ()) -> list[pb.BackendDelta]:
    return [
        pb.BackendDelta(name="xui", upsert=[pb_client(c) for c in upserts], remove=list(removals))
    ]


async def test_through_the_agent_usage_is_cumulative_and_failures_converge(
    panel: FakePanel, inbound: int, make: BackendFactory, tmp_path: Path
) -> None:
    cluster = Cluster.create()
    state_dir = tmp_path / "agent"
    cluster.enroll(state_dir, "node-x")
    backend = make(inbound)
    a, b = vless("a", 1), vless("b", 2)
    write = "addClient" if panel.generation == "inbounds" else "clients/add"

    async with (
        running_agent(state_dir, {"xui": backend}) as running,
        cluster.client(running.target, "node-x", timeout=10) as client,
    ):
        info = await client.info()
        (xui,) = info.backends
        assert xui.kind == pb.BACKEND_KIND_THREEXUI
        assert xui.reality.public_key == PUBLIC_KEY and xui.reality.port == 8443

        state = pb.DesiredState(
            backends=[pb.BackendState(name="xui", clients=[pb_client(a), pb_client(b)])]
        )
        result = await client.apply_state(1, state)
        assert (result.backends[0].added, result.backends[0].status.clients) == (2, 2)

        panel.add_traffic(email(1), 100, 1000)
        await running.agent.sample_usage()
        panel.reset_traffic(email(1))  # reset in the panel, then more traffic
        panel.add_traffic(email(1), 5, 50)
        await running.agent.sample_usage()
        panel.add_traffic(email(1), 1, 1)  # counted by the final sample before removal
        await client.apply_delta(1, 2, delta(removals=["a"]))
        await client.apply_delta(2, 3, delta([a]))  # back: a fresh panel client from zero
        panel.add_traffic(email(1), 2, 2)
        await running.agent.sample_usage()

        usage = await client.read_usage()
        totals = {e.client_id: (e.rx_bytes, e.tx_bytes) for e in usage.entries}
        assert totals == {"a": (100 + 5 + 1 + 2, 1000 + 50 + 1 + 2)}

        panel.fail_next("refuse", path=write)
        result = await client.apply_delta(3, 4, delta([vless("c", 3)]))
        status = result.backends[0].status
        assert status.health == pb.BACKEND_HEALTH_DEGRADED
        assert "last apply failed: xui: add " in status.reason
        assert email(3) not in panel.emails(inbound)

        await running.agent.reconcile()
        assert (await running.agent.backend_status("xui")).health is Health.OK
        assert set(ours(panel, inbound)) == {email(1), email(2), email(3)}
