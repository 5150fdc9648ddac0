"""Adding nodes and enrolling their agents: NodeService on SQLite and PostgreSQL, the real
HTTPS enrollment listener with `vpn-node-agent enroll` against it, and the `vpnbot node`
commands."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import secrets
import socket
import stat
from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
import uvicorn
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID
from sqlalchemy.ext.asyncio import AsyncEngine

from controller.api.enroll import create_enrollment_app
from controller.bootstrap import Container, open_container
from controller.crypto import SecretBox
from controller.db.base import utcnow
from controller.db.engine import create_session_factory
from controller.db.models import Server
from controller.db.uow import UnitOfWorkFactory
from controller.domain.enums import NodeStatus, VpnProtocol
from controller.domain.errors import (
    AlreadyExists,
    EnrollmentRefused,
    InvalidInput,
    NodeNotFound,
)
from controller.nodes.ca import listener_certificate, load_ca
from controller.nodes.pki import CertificateAuthority, fingerprint
from controller.nodes.store import HubStore
from controller.server import _enrollment_listener, _QuietServer
from controller.services import Services, build_services
from controller.services.nodes import NodeDraft
from controller.settings import EnrollmentSettings, Settings, load_settings
from node_agent import cli as agent_cli
from node_agent.enroll import EnrollmentError, enroll
from node_agent.tls import CA_FILE, CERT_FILE, KEY_FILE, create_key_and_csr, load_credentials
from node_agent.tls import node_id_of as cert_node_id
from proto.nodeapi.v1.enrollment import EnrollmentToken, hash_secret, pem_fingerprint
from proto.nodeapi.v1.identity import node_dns_name
from tests.conftest import FakeClock
from tests.hub_support import wireguard_info
from tests.integration.factories import ADMIN
from tests.integration.test_cli import Cli, _cli

PUBLIC_URL = "https://controller.example:8443"
SERVER_WG_KEY = "q" * 43 + "="


@pytest.fixture
def box() -> SecretBox:
    return SecretBox(os.urandom(32))


@pytest.fixture
def svc(uow_factory: UnitOfWorkFactory, clock: FakeClock, box: SecretBox) -> Services:
    return build_services(
        uow_factory, clock, secrets=box, enrollment=EnrollmentSettings(public_url=PUBLIC_URL)
    )


async def _row(uow_factory: UnitOfWorkFactory, name: str) -> Server:
    async with uow_factory() as uow:
        server = await uow.nodes.get_by_name(name)
        assert server is not None
        return server


def _snapshot(server: Server) -> dict[str, Any]:
    """The columns enrollment writes."""
    return {
        key: getattr(server, key)
        for key in (
            "enrollment_token_hash",
            "enrollment_token_expires_at",
            "cert_fingerprint",
            "cert_serial",
            "cert_not_after",
            "enrolled_at",
            "agent_boot_id",
            "node_uid",
        )
    }


async def _audit(uow_factory: UnitOfWorkFactory) -> list[str]:
    async with uow_factory() as uow:
        return sorted(e.action for e in await uow.audit.list())


def _csr(directory: Path, node_id: str) -> bytes:
    directory.mkdir(parents=True, exist_ok=True)
    return create_key_and_csr(directory, node_id)


# --- add ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"name": ""}, "node name"),
        ({"name": "-edge"}, "node name"),
        ({"name": "nl 1"}, "node name"),
        ({"name": "n" * 65}, "node name"),
        ({"address": "not a host!"}, "neither an IP address nor a host name"),
        ({"address": "bad..dots.example"}, "neither an IP address nor a host name"),
        ({"address": ""}, "neither an IP address nor a host name"),
        ({"country_code": "NLD"}, "two-letter"),
        ({"country_code": "1X"}, "two-letter"),
        ({"protocols": ()}, "at least one protocol"),
        ({"protocols": (VpnProtocol.IKEV2,)}, "cannot serve ikev2"),
        ({"grpc_port": 0}, "gRPC port"),
        ({"grpc_port": 65536}, "gRPC port"),
        ({"max_users": 0}, "max users"),
        ({"city": "c" * 65}, "city"),
    ],
)
async def test_add_refuses_bad_input_and_creates_nothing(
    svc: Services,
    uow_factory: UnitOfWorkFactory,
    box: SecretBox,
    changes: dict[str, Any],
    message: str,
) -> None:
    draft = replace(NodeDraft(name="nl-1", address="203.0.113.10"), **changes)
    with pytest.raises(InvalidInput, match=message):
        await svc.nodes.add(ADMIN, draft)
    assert list(await svc.nodes.list()) == []
    assert await _audit(uow_factory) == []
    assert await load_ca(uow_factory, box) is None  # refused before anything was made


async def test_add_normalises_the_draft(svc: Services) -> None:
    server, _ = await svc.nodes.add(
        ADMIN,
        NodeDraft(
            name="de.fra_1",
            address="  Node-1.Example.NET ",
            protocols=(VpnProtocol.VLESS, VpnProtocol.WIREGUARD, VpnProtocol.VLESS),
            country_code=" de ",
            city=" Frankfurt ",
            max_users=7,
            grpc_port=60000,
        ),
    )
    stored = await svc.nodes.get("de.fra_1")
    assert stored.id == server.id
    assert stored.ip_address == "node-1.example.net"
    assert stored.supported_protocols == ["vless", "wireguard"]
    assert stored.primary_protocol is VpnProtocol.VLESS
    assert (stored.country_code, stored.city, stored.max_users) == ("DE", "Frankfurt", 7)
    assert stored.grpc_port == 60000
    assert stored.status is NodeStatus.UNKNOWN
    assert stored.enrolled_at is None
    # An IPv6 address is kept in its canonical form.
    v6, _ = await svc.nodes.add(ADMIN, NodeDraft(name="v6", address="2001:DB8:0::1"))
    assert (await svc.nodes.get("v6")).ip_address == "2001:db8::1"
    assert v6.node_uid != server.node_uid


async def test_a_duplicate_name_is_refused_and_the_first_token_still_works(
    svc: Services, uow_factory: UnitOfWorkFactory, tmp_path: Path
) -> None:
    _, token_text = await svc.nodes.add(ADMIN, NodeDraft(name="nl-1", address="203.0.113.10"))
    before = _snapshot(await _row(uow_factory, "nl-1"))

    with pytest.raises(AlreadyExists, match="nl-1"):
        await svc.nodes.add(ADMIN, NodeDraft(name="nl-1", address="203.0.113.99"))

    assert [s.name for s in await svc.nodes.list()] == ["nl-1"]
    assert _snapshot(await _row(uow_factory, "nl-1")) == before
    assert await _audit(uow_factory) == ["node.add"]
    token = EnrollmentToken.decode(token_text)
    enrolled = await svc.nodes.enroll(token.secret, _csr(tmp_path, token.node_id))
    assert enrolled.node_id == token.node_id


async def test_the_token_pins_the_database_ca_and_names_the_node(
    svc: Services,
    uow_factory: UnitOfWorkFactory,
    box: SecretBox,
    clock: FakeClock,
    engine: AsyncEngine,
) -> None:
    server, token_text = await svc.nodes.add(ADMIN, NodeDraft(name="nl-1", address="203.0.113.10"))
    token = EnrollmentToken.decode(token_text)

    ca = await load_ca(uow_factory, box)
    assert ca is not None
    ca_pem = await svc.nodes.ca_certificate()
    assert ca_pem == ca.cert_pem
    assert token.ca_fingerprint == fingerprint(ca.cert) == pem_fingerprint(ca_pem)
    assert token.node_id == server.node_uid
    assert token.url == PUBLIC_URL

    row = await _row(uow_factory, "nl-1")
    assert row.enrollment_token_hash == hash_secret(token.secret)
    assert row.enrollment_token_hash != token.secret
    assert row.enrollment_token_expires_at == clock.now + timedelta(minutes=60)
    # The secret itself is in no column of the row.
    async with engine.connect() as connection:
        raw = (await connection.execute(sa.text("SELECT * FROM servers"))).one()
    assert all(token.secret not in str(value) for value in raw)

    # A second node shares the CA (one per database) but gets its own id and secret.
    other, other_text = await svc.nodes.add(ADMIN, NodeDraft(name="nl-2", address="203.0.113.11"))
    other_token = EnrollmentToken.decode(other_text)
    assert other_token.ca_fingerprint == token.ca_fingerprint
    assert other_token.node_id == other.node_uid != server.node_uid
    assert other_token.secret != token.secret
    assert await _audit(uow_factory) == ["node.add", "node.add"]


# --- enroll ------------------------------------------------------------------------------


async def test_enroll_signs_the_csr_for_the_node_and_burns_the_token(
    svc: Services,
    uow_factory: UnitOfWorkFactory,
    box: SecretBox,
    clock: FakeClock,
    tmp_path: Path,
) -> None:
    server, token_text = await svc.nodes.add(ADMIN, NodeDraft(name="nl-1", address="203.0.113.10"))
    token = EnrollmentToken.decode(token_text)
    async with uow_factory() as uow:  # a host enrolled before had a boot id
        await uow.nodes.update_fields(server.id, agent_boot_id="old-boot")
        await uow.commit()
    clock.advance(minutes=5)

    enrolled = await svc.nodes.enroll(token.secret, _csr(tmp_path / "a", token.node_id))

    ca = await load_ca(uow_factory, box)
    assert ca is not None
    cert = x509.load_pem_x509_certificate(enrolled.certificate_pem)
    cert.verify_directly_issued_by(ca.cert)
    assert enrolled.ca_certificate_pem == ca.cert_pem
    assert enrolled.node_id == server.node_uid
    assert cert_node_id(cert) == server.node_uid
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == [node_dns_name(server.node_uid)]
    key = serialization.load_pem_private_key((tmp_path / "a" / KEY_FILE).read_bytes(), None)
    assert cert.public_key() == key.public_key()

    row = await _row(uow_factory, "nl-1")
    assert row.enrollment_token_hash is None
    assert row.enrollment_token_expires_at is None
    assert row.enrolled_at == clock.now
    assert row.cert_fingerprint == fingerprint(cert)
    assert row.cert_serial == format(cert.serial_number, "x")
    assert row.cert_not_after == cert.not_valid_after_utc
    assert row.agent_boot_id is None  # the hub resends everything to a re-enrolled host
    assert await _audit(uow_factory) == ["node.add", "node.enroll"]

    # Used: a second attempt is refused and changes nothing.
    before = _snapshot(row)
    clock.advance(minutes=1)
    with pytest.raises(EnrollmentRefused):
        await svc.nodes.enroll(token.secret, _csr(tmp_path / "b", token.node_id))
    assert _snapshot(await _row(uow_factory, "nl-1")) == before
    assert await _audit(uow_factory) == ["node.add", "node.enroll"]


async def test_the_certificate_names_the_tokens_node_whatever_the_csr_asks(
    svc: Services, tmp_path: Path
) -> None:
    first, first_text = await svc.nodes.add(ADMIN, NodeDraft(name="nl-1", address="203.0.113.1"))
    second, _ = await svc.nodes.add(ADMIN, NodeDraft(name="nl-2", address="203.0.113.2"))
    # An agent holding nl-1's token asks for a certificate naming nl-2.
    csr = _csr(tmp_path, second.node_uid)
    enrolled = await svc.nodes.enroll(EnrollmentToken.decode(first_text).secret, csr)
    cert = x509.load_pem_x509_certificate(enrolled.certificate_pem)
    assert cert_node_id(cert) == first.node_uid
    assert (await svc.nodes.get("nl-2")).enrolled_at is None


@pytest.mark.parametrize(
    ("minutes", "accepted"), [(59, True), (60, False), (61, False), (60 * 24, False)]
)
async def test_an_expired_token_is_refused_and_creates_nothing(
    svc: Services,
    uow_factory: UnitOfWorkFactory,
    clock: FakeClock,
    tmp_path: Path,
    minutes: int,
    accepted: bool,
) -> None:
    _, token_text = await svc.nodes.add(ADMIN, NodeDraft(name="nl-1", address="203.0.113.10"))
    token = EnrollmentToken.decode(token_text)
    before = _snapshot(await _row(uow_factory, "nl-1"))
    clock.advance(minutes=minutes)
    csr = _csr(tmp_path, token.node_id)

    if accepted:
        await svc.nodes.enroll(token.secret, csr)
        assert (await _row(uow_factory, "nl-1")).enrolled_at == clock.now
        return
    with pytest.raises(EnrollmentRefused, match="unknown, used or expired"):
        await svc.nodes.enroll(token.secret, csr)
    row = await _row(uow_factory, "nl-1")
    assert row.enrolled_at is None
    assert row.cert_fingerprint is None
    assert _snapshot(row) == before
    assert await _audit(uow_factory) == ["node.add"]


async def test_a_forged_or_unknown_secret_is_refused(
    svc: Services, uow_factory: UnitOfWorkFactory, tmp_path: Path
) -> None:
    _, token_text = await svc.nodes.add(ADMIN, NodeDraft(name="nl-1", address="203.0.113.10"))
    token = EnrollmentToken.decode(token_text)
    before = _snapshot(await _row(uow_factory, "nl-1"))
    csr = _csr(tmp_path, token.node_id)
    forged = [
        secrets.token_urlsafe(32),
        "",
        hash_secret(token.secret),  # what a reader of the database has
        token.secret[:-1],
        token.secret + "A",
        token.secret.upper(),
    ]
    for secret in forged:
        with pytest.raises(EnrollmentRefused):
            await svc.nodes.enroll(secret, csr)
    assert _snapshot(await _row(uow_factory, "nl-1")) == before
    await svc.nodes.enroll(token.secret, csr)  # the real one still works


async def test_enroll_without_a_ca_is_refused(svc: Services) -> None:
    with pytest.raises(EnrollmentRefused):
        await svc.nodes.enroll(secrets.token_urlsafe(32), b"")
    assert await svc.nodes.ca_certificate() is None


async def test_mint_token_replaces_the_old_one(
    svc: Services, uow_factory: UnitOfWorkFactory, clock: FakeClock, tmp_path: Path
) -> None:
    server, old_text = await svc.nodes.add(ADMIN, NodeDraft(name="nl-1", address="203.0.113.10"))
    old = EnrollmentToken.decode(old_text)
    clock.advance(minutes=30)
    minted, new_text = await svc.nodes.mint_token(ADMIN, "nl-1")
    new = EnrollmentToken.decode(new_text)
    assert minted.id == server.id
    assert (new.node_id, new.ca_fingerprint, new.url) == (old.node_id, old.ca_fingerprint, old.url)
    assert new.secret != old.secret
    row = await _row(uow_factory, "nl-1")
    assert row.enrollment_token_hash == hash_secret(new.secret)
    assert row.enrollment_token_expires_at == clock.now + timedelta(minutes=60)

    csr = _csr(tmp_path / "a", old.node_id)
    with pytest.raises(EnrollmentRefused):
        await svc.nodes.enroll(old.secret, csr)
    first = await svc.nodes.enroll(new.secret, csr)

    # A token for an enrolled node re-enrolls it (a reinstalled host): new certificate.
    _, again_text = await svc.nodes.mint_token(ADMIN, "nl-1")
    second = await svc.nodes.enroll(
        EnrollmentToken.decode(again_text).secret, _csr(tmp_path / "b", old.node_id)
    )
    assert second.certificate_pem != first.certificate_pem
    assert (await _row(uow_factory, "nl-1")).cert_fingerprint == fingerprint(
        x509.load_pem_x509_certificate(second.certificate_pem)
    )
    assert await _audit(uow_factory) == [
        "node.add",
        "node.enroll",
        "node.enroll",
        "node.token",
        "node.token",
    ]
    with pytest.raises(NodeNotFound):
        await svc.nodes.mint_token(ADMIN, "ghost")


def _rsa_csr() -> bytes:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "rsa")]))
        .sign(key, hashes.SHA256())
    )
    return csr.public_bytes(serialization.Encoding.PEM)


def _tampered_csr(directory: Path, node_id: str) -> bytes:
    """A CSR whose signature does not cover its content (one signature byte flipped)."""
    der = x509.load_pem_x509_csr(_csr(directory, node_id)).public_bytes(serialization.Encoding.DER)
    broken = der[:-1] + bytes([der[-1] ^ 0x01])
    csr = x509.load_der_x509_csr(broken)
    return csr.public_bytes(serialization.Encoding.PEM)


async def test_a_bad_csr_is_invalid_input_and_keeps_the_token(
    svc: Services, uow_factory: UnitOfWorkFactory, tmp_path: Path
) -> None:
    _, token_text = await svc.nodes.add(ADMIN, NodeDraft(name="nl-1", address="203.0.113.10"))
    token = EnrollmentToken.decode(token_text)
    before = _snapshot(await _row(uow_factory, "nl-1"))
    bad = [
        b"",
        b"not a csr",
        b"-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----\n",
        _rsa_csr(),
        _tampered_csr(tmp_path / "t", token.node_id),
    ]
    for csr in bad:
        with pytest.raises(InvalidInput):
            await svc.nodes.enroll(token.secret, csr)
        assert _snapshot(await _row(uow_factory, "nl-1")) == before
    await svc.nodes.enroll(token.secret, _csr(tmp_path / "ok", token.node_id))
    assert (await _row(uow_factory, "nl-1")).enrolled_at is not None


async def test_simultaneous_uses_of_one_token_enroll_once(
    svc: Services, uow_factory: UnitOfWorkFactory, tmp_path: Path
) -> None:
    """PostgreSQL is the bar (the transactions really interleave); SQLite queues them."""
    _, token_text = await svc.nodes.add(ADMIN, NodeDraft(name="nl-1", address="203.0.113.10"))
    token = EnrollmentToken.decode(token_text)
    csrs = [_csr(tmp_path / str(i), token.node_id) for i in range(6)]

    results = await asyncio.gather(
        *(svc.nodes.enroll(token.secret, csr) for csr in csrs), return_exceptions=True
    )

    won = [r for r in results if not isinstance(r, BaseException)]
    lost = [r for r in results if isinstance(r, BaseException)]
    assert len(won) == 1, results
    assert all(isinstance(r, EnrollmentRefused) for r in lost), lost
    row = await _row(uow_factory, "nl-1")
    assert row.cert_fingerprint == fingerprint(
        x509.load_pem_x509_certificate(won[0].certificate_pem)
    )
    assert await _audit(uow_factory) == ["node.add", "node.enroll"]


async def test_simultaneous_double_use_on_postgresql(
    pg_only: None, svc: Services, tmp_path: Path
) -> None:
    _, token_text = await svc.nodes.add(ADMIN, NodeDraft(name="nl-1", address="203.0.113.10"))
    token = EnrollmentToken.decode(token_text)
    first, second = await asyncio.gather(
        svc.nodes.enroll(token.secret, _csr(tmp_path / "a", token.node_id)),
        svc.nodes.enroll(token.secret, _csr(tmp_path / "b", token.node_id)),
        return_exceptions=True,
    )
    outcomes = sorted(type(r).__name__ for r in (first, second))
    assert outcomes == ["Enrolled", "EnrollmentRefused"], (first, second)


# --- the HTTPS listener and `vpn-node-agent enroll` ---------------------------------------


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def _wait_listening(port: int, task: asyncio.Task[None], within: float = 10.0) -> None:
    deadline = asyncio.get_running_loop().time() + within
    while True:
        if task.done():
            task.result()  # raises what stopped it
            raise AssertionError("the listener stopped before it listened")
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            if asyncio.get_running_loop().time() > deadline:
                raise AssertionError(f"nothing listens on port {port}") from None
            await asyncio.sleep(0.02)
            continue
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
        return


class Controller:
    """The enrollment side of `vpnbot run`: the real listener over the test database."""

    def __init__(self, container: Container, port: int, task: asyncio.Task[None]) -> None:
        self.container = container
        self.port = port
        self.task = task
        self.url = f"https://127.0.0.1:{port}"

    @property
    def services(self) -> Services:
        return self.container.services

    async def token(self, name: str) -> tuple[Server, str]:
        return await self.services.nodes.add(ADMIN, NodeDraft(name=name, address="203.0.113.10"))

    async def row(self, name: str) -> Server:
        return await _row(self.container.uow_factory, name)


@pytest.fixture
async def controller(
    engine: AsyncEngine,
    uow_factory: UnitOfWorkFactory,
    box: SecretBox,
    clock: FakeClock,
    tmp_path: Path,
    clean_env: None,
) -> AsyncIterator[Controller]:
    port = _free_port()
    settings = load_settings(
        data_dir=tmp_path / "data",
        enrollment=EnrollmentSettings(
            host="127.0.0.1", port=port, public_url=f"https://127.0.0.1:{port}"
        ),
    )
    container = Container(
        settings=settings,
        engine=engine,
        session_factory=create_session_factory(engine),
        uow_factory=uow_factory,
        services=build_services(uow_factory, clock, secrets=box, enrollment=settings.enrollment),
        secrets=box,
    )
    task = asyncio.create_task(_enrollment_listener(container))
    try:
        await _wait_listening(port, task)
        yield Controller(container, port, task)
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


@contextlib.asynccontextmanager
async def _impostor(container: Container, ca: CertificateAuthority, directory: Path) -> Any:
    """The controller's own app (it serves the genuine CA certificate and would enroll),
    behind a listener certificate from another CA: a man in the middle relaying to it."""
    port = _free_port()
    cert, key = listener_certificate(ca, f"https://127.0.0.1:{port}", directory)
    server = _QuietServer(
        uvicorn.Config(
            create_enrollment_app(container),
            host="127.0.0.1",
            port=port,
            ssl_certfile=str(cert),
            ssl_keyfile=str(key),
            log_config=None,
            access_log=False,
            lifespan="off",
        )
    )
    task = asyncio.create_task(server.serve())
    try:
        await _wait_listening(port, task)
        yield port
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 10)


def _retarget(token_text: str, **changes: str) -> str:
    return replace(EnrollmentToken.decode(token_text), **changes).encode()


async def test_agent_enrolls_over_https(controller: Controller, tmp_path: Path) -> None:
    server, token_text = await controller.token("nl-1")
    assert EnrollmentToken.decode(token_text).url == controller.url
    state_dir = tmp_path / "agent"

    node_id = await asyncio.to_thread(enroll, token_text, state_dir, timeout=10)

    assert node_id == server.node_uid
    for name in (CA_FILE, CERT_FILE, KEY_FILE):
        assert (state_dir / name).is_file(), name
    assert stat.S_IMODE((state_dir / KEY_FILE).stat().st_mode) == 0o600
    credentials = load_credentials(state_dir)
    assert credentials.node_id == server.node_uid
    assert credentials.ca_pem == await controller.services.nodes.ca_certificate()
    row = await controller.row("nl-1")
    assert row.enrolled_at is not None
    assert row.enrollment_token_hash is None
    assert row.cert_fingerprint == fingerprint(x509.load_pem_x509_certificate(credentials.cert_pem))

    # The same token again, from another host: refused by the controller.
    with pytest.raises(EnrollmentError, match="refused"):
        await asyncio.to_thread(enroll, token_text, tmp_path / "again", timeout=10)
    assert not (tmp_path / "again" / CERT_FILE).exists()
    assert (await controller.row("nl-1")).cert_fingerprint == row.cert_fingerprint


async def test_agent_refuses_a_ca_other_than_the_pinned_one(
    controller: Controller, tmp_path: Path
) -> None:
    _, token_text = await controller.token("nl-1")
    pinned = EnrollmentToken.decode(token_text).ca_fingerprint
    other = "0" * 64 if pinned != "0" * 64 else "1" * 64
    state_dir = tmp_path / "agent"

    with pytest.raises(EnrollmentError, match="does not match the token's fingerprint"):
        await asyncio.to_thread(
            enroll, _retarget(token_text, ca_fingerprint=other), state_dir, timeout=10
        )

    assert not (state_dir / CERT_FILE).exists()
    assert not (state_dir / KEY_FILE).exists()  # stopped before anything was made or sent
    row = await controller.row("nl-1")
    assert row.enrollment_token_hash is not None and row.enrolled_at is None
    # The secret never left: the genuine token still works.
    await asyncio.to_thread(enroll, token_text, state_dir, timeout=10)
    assert load_credentials(state_dir).node_id == row.node_uid


async def test_agent_refuses_a_listener_certificate_of_another_ca(
    controller: Controller, tmp_path: Path
) -> None:
    _, token_text = await controller.token("nl-1")
    rogue = CertificateAuthority.create("rogue CA")
    state_dir = tmp_path / "agent"

    async with _impostor(controller.container, rogue, tmp_path / "rogue") as port:
        token = _retarget(token_text, url=f"https://127.0.0.1:{port}")
        with pytest.raises(EnrollmentError, match="certificate the pinned CA did not sign"):
            await asyncio.to_thread(enroll, token, state_dir, timeout=10)

    assert not (state_dir / CERT_FILE).exists()
    row = await controller.row("nl-1")
    assert row.enrolled_at is None
    assert row.enrollment_token_hash == hash_secret(EnrollmentToken.decode(token_text).secret)
    await asyncio.to_thread(enroll, token_text, state_dir, timeout=10)
    assert (await controller.row("nl-1")).enrolled_at is not None


async def _accepts(port: int) -> bool:
    try:
        _, writer = await asyncio.open_connection("127.0.0.1", port)
    except OSError:
        return False
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()
    return True


async def test_stopping_the_listener_closes_its_port(controller: Controller) -> None:
    """`vpnbot run` stops the enrollment listener by cancelling its task
    (_Server.stop_background); the listening socket must close with it."""
    assert await _accepts(controller.port)
    controller.task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await controller.task
    await asyncio.sleep(0.1)
    assert not await _accepts(controller.port), "the listener still accepts after its stop"


async def test_agent_reports_an_unreachable_controller(
    controller: Controller, tmp_path: Path
) -> None:
    _, token_text = await controller.token("nl-1")
    token = _retarget(token_text, url=f"https://127.0.0.1:{_free_port()}")
    with pytest.raises(EnrollmentError, match="cannot reach the controller"):
        await asyncio.to_thread(enroll, token, tmp_path / "agent", timeout=5)
    assert (await controller.row("nl-1")).enrollment_token_hash is not None


async def test_agent_cli_enrolls_through_the_listener(
    controller: Controller, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    server, token_text = await controller.token("nl-1")
    state_dir = tmp_path / "agent"
    capsys.readouterr()
    code = await asyncio.to_thread(
        agent_cli.main, ["enroll", "--token", token_text, "--state-dir", str(state_dir)]
    )
    out, err = capsys.readouterr()
    assert code == 0, err
    assert f"enrolled as node {server.node_uid}" in out
    assert load_credentials(state_dir).node_id == server.node_uid

    code = await asyncio.to_thread(
        agent_cli.main, ["enroll", "--token", token_text, "--state-dir", str(tmp_path / "b")]
    )
    _, err = capsys.readouterr()
    assert code == 1
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("vpn-node-agent: error: "), err
    assert "refused the token" in lines[0]


@pytest.mark.parametrize(
    "token",
    [
        "garbage",
        "vpnbot-enroll-v1.!!!not-base64!!!",
        "vpnbot-enroll-v1." + "e30",  # {}
        EnrollmentToken(
            "http://127.0.0.1:1", "n1", "a" * 64, "s" * 43
        ).encode(),  # plain HTTP is refused
    ],
)
def test_agent_cli_rejects_a_garbage_token_in_one_line(
    token: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    capsys.readouterr()
    code = agent_cli.main(["enroll", "--token", token, "--state-dir", str(tmp_path / "s")])
    out, err = capsys.readouterr()
    assert code == 1
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("vpn-node-agent: error: ")
    assert "token" in lines[0] or "URL" in lines[0]
    assert "Traceback" not in out + err
    assert not (tmp_path / "s" / KEY_FILE).exists()


# --- `vpnbot node ...` -------------------------------------------------------------------


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


def _token_of(out: str) -> str:
    lines = out.splitlines()
    index = next(i for i, line in enumerate(lines) if line.startswith("enrollment token"))
    return lines[index + 1].strip()


def _enroll_and_report(token_text: str, state_dir: Path, subnet: str = "10.8.0.1/24") -> None:
    """What an agent does, done in-process against the CLI's database: enroll through the
    service, then the hub records the agent's WireGuard parameters."""

    async def run() -> None:
        settings: Settings = load_settings()
        async with open_container(settings) as container:
            token = EnrollmentToken.decode(token_text)
            await container.services.nodes.enroll(
                token.secret, create_key_and_csr(state_dir, token.node_id)
            )
            async with container.uow_factory() as uow:
                server = next(s for s in await uow.nodes.list_all() if s.node_uid == token.node_id)
            store = HubStore(container.uow_factory, container.secrets, utcnow)
            await store.record_info(server.id, wireguard_info(subnet, SERVER_WG_KEY))

    state_dir.mkdir(parents=True, exist_ok=True)
    asyncio.run(run())


def _one_row(listing: str, name: str) -> list[str]:
    rows = [line.split() for line in listing.splitlines() if line.split()[:1] == [name]]
    assert len(rows) == 1, listing
    return rows[0]


def test_cli_node_lifecycle(cli: Cli, tmp_path: Path) -> None:
    assert "no nodes yet" in cli.ok("node", "list")

    out = cli.ok(
        "node",
        "add",
        "nl-1",
        "--address",
        "203.0.113.10",
        "--country",
        "nl",
        "--city",
        "Amsterdam",
        "--max-users",
        "5",
    )
    node_id = re.search(r"node nl-1 added \(id ([a-z0-9-]+)\)", out)
    assert node_id is not None, out
    first = EnrollmentToken.decode(_token_of(out))
    assert first.node_id == node_id.group(1)
    assert first.url.startswith("https://") and first.url.endswith(":8443")
    assert f"vpn-node-agent enroll --token '{_token_of(out)}'" in out

    assert "exists" in cli.fails("node", "add", "nl-1", "--address", "203.0.113.11")
    assert "node name" in cli.fails("node", "add", "bad name", "--address", "203.0.113.11")
    assert "--protocols" in cli.fails(
        "node", "add", "x", "--address", "203.0.113.11", "--protocols", "ikev2", code=2
    )
    assert "--address" in cli.fails("node", "add", "x", code=2)

    row = _one_row(cli.ok("node", "list"), "nl-1")
    assert row[1:4] == ["203.0.113.10", "NL", "wireguard"]
    assert "not enrolled" in " ".join(row)
    assert row[-3:-1] == ["0/0", "0/5"]

    shown = cli.ok("node", "show", "nl-1")
    assert f"id:            {first.node_id}" in shown
    assert "enrolled:      no" in shown
    assert "location:      NL Amsterdam" in shown
    assert "configs:       0 of 5" in shown

    # A new token: the old one dies.
    second = EnrollmentToken.decode(_token_of(cli.ok("node", "token", "nl-1")))
    assert second.node_id == first.node_id and second.secret != first.secret
    assert "no node named 'ghost'" in cli.fails("node", "token", "ghost")
    with pytest.raises(EnrollmentRefused):
        _enroll_and_report(first.encode(), tmp_path / "agent")

    _enroll_and_report(second.encode(), tmp_path / "agent")
    shown = cli.ok("node", "show", "nl-1")
    assert "enrolled:      no" not in shown
    assert f"wireguard:     {SERVER_WG_KEY} port 51820 subnet 10.8.0.1/24" in shown
    assert "status:        online" in shown
    assert "online" in _one_row(cli.ok("node", "list"), "nl-1")[4]

    # A client config on it.
    assert "active until" in cli.ok("user", "grant", "555", "--days", "30")
    conf = tmp_path / "555.conf"
    exported = cli.ok("config", "export", "555", "--out", str(conf))
    assert "wireguard config 1 on node nl-1 written to" in exported
    text = conf.read_text()
    assert "Address = 10.8.0.2/32" in text
    assert "Endpoint = 203.0.113.10:51820" in text
    assert stat.S_IMODE(conf.stat().st_mode) == 0o600
    assert "configs:       1 of 5" in cli.ok("node", "show", "nl-1")
    assert "1/5" in _one_row(cli.ok("node", "list"), "nl-1")

    # Removal is refused while it carries the config; --force deletes the config and
    # leaves the node for the hub to empty; with no agent to apply that, only a second
    # --force removes it.
    refused = cli.fails("node", "remove", "nl-1")
    assert "1 client config(s)" in refused and "--force" in refused
    assert "nl-1" in cli.ok("node", "list")
    drained = cli.ok("node", "remove", "nl-1", "--force")
    assert "1 client config(s) of node nl-1 deleted" in drained
    assert "0/5" in _one_row(cli.ok("node", "list"), "nl-1")
    assert "not applied its last change" in cli.fails("node", "remove", "nl-1")
    assert "node nl-1 removed" in cli.ok("node", "remove", "nl-1", "--force")
    assert "no nodes yet" in cli.ok("node", "list")
    assert "no node named 'nl-1'" in cli.fails("node", "show", "nl-1")
    assert "no node named 'nl-1'" in cli.fails("node", "remove", "nl-1")
    # The user's access is gone with it: the next export needs a node.
    assert "no healthy node" in cli.fails("config", "export", "555", "--out", str(conf))


def test_cli_removes_an_empty_node_without_force(cli: Cli) -> None:
    cli.ok("node", "add", "de-1", "--address", "de1.example.net", "--protocols", "wireguard,vless")
    assert "wireguard,vless" in " ".join(_one_row(cli.ok("node", "list"), "de-1"))
    out = cli.ok("node", "remove", "de-1")
    assert out.strip() == "node de-1 removed; uninstall the agent on the host"
    assert "no nodes yet" in cli.ok("node", "list")


def test_cli_grant_and_export_refusals(cli: Cli, tmp_path: Path) -> None:
    assert "exactly one of --plan and --days" in cli.fails("user", "grant", "7", code=2)
    assert "exactly one of --plan and --days" in cli.fails(
        "user", "grant", "7", "--days", "3", "--plan", "1", code=2
    )
    assert "no user" in cli.fails("config", "export", "7", "--out", str(tmp_path / "x"))
    cli.ok("user", "grant", "7", "--days", "3", "--devices", "2")
    assert "no healthy node" in cli.fails("config", "export", "7", "--out", str(tmp_path / "x"))
    assert not (tmp_path / "x").exists()
