"""The OpenVPN backend without a running server: validation, issuance, the CRL an apply
writes, reports, status and start-up failures. With the real server in
tests/e2e/test_openvpn_backend_e2e.py."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
from cryptography import x509

from node_agent.backends.base import (
    Health,
    IssuesClients,
    OpenVpnPublicParams,
    VpnBackend,
)
from node_agent.backends.openvpn.backend import OpenVpnBackend
from node_agent.backends.registry import build_backends
from node_agent.config import AgentConfig, OpenVpnConfig
from node_agent.errors import BackendError, ConfigError, InvalidStateError
from node_agent.model import Client, OpenVpnClient, VlessUser


def ovpn(client_id: str, cn: str) -> Client:
    return Client(client_id, OpenVpnClient(cn))


@pytest.fixture
def backend(tmp_path: Path) -> OpenVpnBackend:
    spec = OpenVpnConfig(type="openvpn", port=1195, transport="tcp", client_valid_days=365)
    return OpenVpnBackend("main", spec, tmp_path)


def revoked(backend: OpenVpnBackend) -> set[int]:
    crl = x509.load_pem_x509_crl(backend.pki.crl_path.read_bytes())
    return {entry.serial_number for entry in crl}


def test_the_registry_builds_it_and_it_speaks_both_protocols(tmp_path: Path) -> None:
    config = AgentConfig.model_validate(
        {"state_dir": str(tmp_path), "backends": {"openvpn": {"port": 1194}}}
    )
    built = build_backends(config)["openvpn"]
    assert isinstance(built, OpenVpnBackend)
    assert isinstance(built, VpnBackend) and isinstance(built, IssuesClients)
    assert built.kind == "openvpn"
    assert (tmp_path / "openvpn-openvpn" / "ca.crt").exists()


@pytest.mark.parametrize(
    ("clients", "error"),
    [
        ([ovpn("a", "alice"), ovpn("b", "alice")], "share the common name 'alice'"),
        ([ovpn("a", "alice"), ovpn("a", "bob")], "duplicate client id"),
        ([ovpn("", "alice")], "client id"),
        ([ovpn("a", "al ice")], "common name 'al ice' must be"),
        ([ovpn("a", "")], "common name '' must be"),
        ([ovpn("a", "x" * 65)], "must be 1..64"),
        ([Client("a", VlessUser("0c5a4f9e-8d0c-4b8e-9a53-0f6f9d8f0b11"))], "not an OpenVPN"),
    ],
)
def test_bad_desired_state_is_refused(
    backend: OpenVpnBackend, clients: list[Client], error: str
) -> None:
    with pytest.raises(InvalidStateError, match=error):
        backend.validate(clients)


async def test_changes_are_validated_against_the_applied_state(backend: OpenVpnBackend) -> None:
    await backend.apply([ovpn("a", "alice")])
    with pytest.raises(InvalidStateError, match="share the common name"):
        backend.validate_changes([ovpn("b", "alice")], [])
    backend.validate_changes([ovpn("b", "alice")], ["a"])  # the name moves to another id
    backend.validate_changes([ovpn("a", "alice2")], [])


async def test_names_never_issued_are_allowed(backend: OpenVpnBackend) -> None:
    # Desired state may arrive before issuance is recorded (e.g. after a state-dir wipe).
    report = await backend.apply([ovpn("a", "never-issued")])
    assert report.added == 1
    assert revoked(backend) == set()


async def test_the_crl_follows_the_enabled_set(backend: OpenVpnBackend) -> None:
    alice = await backend.issue_client("alice", 30)
    bob = await backend.issue_client("bob", 30)
    serial = {
        issued.common_name: x509.load_pem_x509_certificate(
            issued.certificate_pem.encode()
        ).serial_number
        for issued in (alice, bob)
    }
    # Before any apply nothing is known to be enabled: issued certificates stay revoked.
    assert revoked(backend) == {serial["alice"], serial["bob"]}

    report = await backend.apply([ovpn("a", "alice"), ovpn("b", "bob")])
    assert (report.added, report.updated, report.removed) == (2, 0, 0)
    assert revoked(backend) == set()

    report = await backend.apply_changes([], ["b"])
    assert (report.removed, report.reset_clients) == (1, frozenset({"b"}))
    assert revoked(backend) == {serial["bob"]}

    report = await backend.apply_changes([ovpn("b", "bob")], [])  # re-enabled: un-revoked
    assert report.added == 1
    assert revoked(backend) == set()

    report = await backend.apply([ovpn("a", "alice"), ovpn("b", "carol")])
    assert (report.updated, report.reset_clients) == (1, frozenset())
    assert revoked(backend) == {serial["bob"]}

    # Re-issuing supersedes for good, even while the name is enabled.
    again = await backend.issue_client("alice", 30)
    new_serial = x509.load_pem_x509_certificate(again.certificate_pem.encode()).serial_number
    assert revoked(backend) == {serial["bob"], serial["alice"]}
    assert new_serial not in revoked(backend)

    # A new backend on the same state dir keeps the CRL as it was until its first apply.
    restarted = OpenVpnBackend("main", backend.spec, backend.directory.parent)
    assert revoked(restarted) == {serial["bob"], serial["alice"]}


async def test_issuance_returns_a_complete_profile(backend: OpenVpnBackend) -> None:
    before = dt.datetime.now(dt.UTC)
    issued = await backend.issue_client("alice", 3650)

    # Capped by client_valid_days (365 here); the response says the truth.
    assert before + dt.timedelta(days=364) < issued.not_after < before + dt.timedelta(days=366)
    cert = x509.load_pem_x509_certificate(issued.certificate_pem.encode())
    assert cert.not_valid_after_utc == issued.not_after
    profile = issued.profile
    assert "proto tcp" in profile.splitlines()
    assert backend.pki.ca_certificate_pem.strip() in profile
    assert issued.certificate_pem.strip() in profile
    assert "-----BEGIN PRIVATE KEY-----" in profile
    assert backend.pki.tls_crypt_key.split("-----BEGIN")[1] in profile
    assert not [line for line in profile.splitlines() if line.startswith("remote ")]


@pytest.mark.parametrize(("name", "days"), [("bad name", 30), ("alice", 0), ("alice", 4000)])
async def test_bad_issuance_requests_are_refused(
    backend: OpenVpnBackend, name: str, days: int
) -> None:
    with pytest.raises(InvalidStateError):
        await backend.issue_client(name, days)
    assert backend.pki.records == ()


async def test_status_without_a_server_is_down_with_the_reason(backend: OpenVpnBackend) -> None:
    await backend.apply([ovpn("a", "alice")])
    status = await backend.status()
    assert status.health is Health.DOWN
    assert "openvpn is not running" in status.reason
    assert status.clients == 1
    # Usage still answers: nothing is counted, nothing is lost.
    sample = await backend.usage()
    assert sample.epoch.startswith("openvpn-") and sample.counters == {}


def test_public_params_carry_the_ca_and_no_secret(backend: OpenVpnBackend) -> None:
    params = backend.public_params()
    assert params == OpenVpnPublicParams(
        port=1195, transport="tcp", ca_certificate_pem=backend.pki.ca_certificate_pem
    )
    assert "PRIVATE" not in params.ca_certificate_pem


def test_a_management_socket_path_too_long_is_a_config_error(tmp_path: Path) -> None:
    spec = OpenVpnConfig(type="openvpn", management_socket=tmp_path / ("x" * 120))
    with pytest.raises(ConfigError, match="management_socket"):
        OpenVpnBackend("main", spec, tmp_path)


async def test_start_reports_a_missing_program(tmp_path: Path) -> None:
    spec = OpenVpnConfig(type="openvpn", openvpn=str(tmp_path / "no-such-openvpn"))
    backend = OpenVpnBackend("main", spec, tmp_path)
    with pytest.raises(BackendError, match=r"could not start openvpn: .*not found"):
        await backend.start()
    # What it would run is on disk all the same.
    assert "crl-verify" in backend.config_path.read_text()
    assert backend.pki.crl_path.exists()


async def test_start_reports_a_refusing_program(tmp_path: Path) -> None:
    program = tmp_path / "fake-openvpn"
    program.write_text("#!/bin/sh\necho 'Options error: something is wrong'\nexit 1\n")
    program.chmod(0o700)
    backend = OpenVpnBackend("main", OpenVpnConfig(type="openvpn", openvpn=str(program)), tmp_path)
    with pytest.raises(BackendError, match=r"refused to start .*Options error: something"):
        await backend.start()


async def test_start_reports_a_program_that_exits_at_once(tmp_path: Path) -> None:
    # Exits 0 like a daemonizing openvpn, but nothing ever serves.
    spec = OpenVpnConfig(type="openvpn", openvpn="true", start_timeout=3)
    backend = OpenVpnBackend("main", spec, tmp_path)
    with pytest.raises(BackendError, match="did not come up"):
        await backend.start()


async def test_issuing_before_this_process_applied_keeps_enabled_clients(
    backend: OpenVpnBackend, tmp_path: Path
) -> None:
    """An agent whose boot failed to apply (openvpn slow to answer, say) still serves
    issuance: that must not recompute the CRL from an empty enabled set and so revoke every
    client the server was letting in."""
    await backend.issue_client("alice", 30)
    await backend.issue_client("bob", 30)
    await backend.apply([ovpn("a", "alice")])  # bob is disabled
    serials = backend.pki.current_serials()
    assert revoked(backend) == {serials["bob"]}

    restarted = OpenVpnBackend("main", backend.spec, tmp_path)  # nothing applied yet
    await restarted.issue_client("alice", 30)  # a re-issue: the old alice is superseded
    await restarted.issue_client("carol", 30)  # unknown to the CRL: denied until applied
    now = restarted.pki.current_serials()
    assert revoked(restarted) == {serials["bob"], serials["alice"], now["carol"]}
    assert now["alice"] not in revoked(restarted)
