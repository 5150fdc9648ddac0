"""The node's OpenVPN PKI: what it creates, what it keeps across restarts, which serials the
CRL revokes (checked with the real ``openssl verify`` too), and the static key format (checked
against the real ``openvpn --genkey``)."""

from __future__ import annotations

import datetime as dt
import json
import shutil
import stat
import subprocess
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import ExtendedKeyUsageOID

from node_agent.backends.openvpn.pki import CRL_DAYS, NodePki
from node_agent.backends.openvpn.statickey import (
    format_static_key,
    generate_static_key,
    parse_static_key,
)
from node_agent.errors import ConfigError, InvalidStateError
from tests.conftest import need

NOW = dt.datetime(2026, 3, 1, 12, 0, tzinfo=dt.UTC)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def eku(cert: x509.Certificate) -> list[x509.ObjectIdentifier]:
    return list(cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value)


@pytest.fixture
def pki(tmp_path: Path) -> NodePki:
    return NodePki.load_or_create(tmp_path / "openvpn-main", "main", NOW)


def test_first_start_creates_the_ca_server_certificate_and_tls_crypt_key(pki: NodePki) -> None:
    directory = pki.directory
    assert mode(directory) == 0o700
    for key in (pki.ca_key_path, pki.server_key_path, pki.tls_crypt_path):
        assert mode(key) == 0o600
    ca = x509.load_pem_x509_certificate(pki.ca_cert_path.read_bytes())
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    server = x509.load_pem_x509_certificate(pki.server_cert_path.read_bytes())
    server.verify_directly_issued_by(ca)
    assert eku(server) == [ExtendedKeyUsageOID.SERVER_AUTH]
    assert len(parse_static_key(pki.tls_crypt_path.read_text())) == 256
    assert not list(directory.glob(".*.tmp"))  # atomic writes leave nothing behind


def test_a_restart_reuses_everything(pki: NodePki) -> None:
    issued = pki.issue_client("alice", 30, NOW)

    again = NodePki.load_or_create(pki.directory, "main", NOW + dt.timedelta(days=1))

    assert again.ca_certificate_pem == pki.ca_certificate_pem
    assert again.tls_crypt_key == pki.tls_crypt_key
    assert again.server_cert_path.read_bytes() == pki.server_cert_path.read_bytes()
    assert again.records == (issued.record,)


def test_a_client_certificate_is_signed_for_client_auth(pki: NodePki) -> None:
    issued = pki.issue_client("bob.phone_2", 30, NOW)

    cert = x509.load_pem_x509_certificate(issued.certificate_pem.encode())
    cert.verify_directly_issued_by(pki.ca_cert)
    assert cert.subject.rfc4514_string() == "CN=bob.phone_2"
    assert eku(cert) == [ExtendedKeyUsageOID.CLIENT_AUTH]
    assert cert.not_valid_after_utc == NOW + dt.timedelta(days=30) == issued.record.not_after
    key = serialization.load_pem_private_key(issued.private_key_pem.encode(), password=None)
    assert key.public_key() == cert.public_key()
    # The node keeps the record, never the client's key.
    recorded = json.loads(pki.issued_path.read_text())["certificates"]
    assert recorded == [issued.record.to_json()]
    assert "PRIVATE" not in pki.issued_path.read_text()
    assert mode(pki.issued_path) == 0o600


@pytest.mark.parametrize("name", ["", "a b", "x" * 65, "ünï", "a/b", "a\tb"])
def test_bad_common_names_are_refused(pki: NodePki, name: str) -> None:
    with pytest.raises(InvalidStateError, match="common name"):
        pki.issue_client(name, 30, NOW)
    assert pki.records == ()


@pytest.mark.parametrize("days", [0, -1, 3651])
def test_validity_is_bounded(pki: NodePki, days: int) -> None:
    with pytest.raises(InvalidStateError, match="valid_days"):
        pki.issue_client("alice", days, NOW)


def test_the_crl_revokes_exactly_the_disabled_and_the_superseded(pki: NodePki) -> None:
    alice = pki.issue_client("alice", 30, NOW).record
    bob = pki.issue_client("bob", 30, NOW).record
    carol_old = pki.issue_client("carol", 30, NOW).record
    carol = pki.issue_client("carol", 30, NOW).record  # re-issued: the old one is out for good
    expired = pki.issue_client("dave", 1, NOW).record

    assert pki.revoked_serials({"alice", "carol"}, NOW) == {
        bob.serial,
        carol_old.serial,
        expired.serial,
    }
    assert pki.revoked_serials({"alice", "bob", "carol", "dave"}, NOW) == {carol_old.serial}
    # Expired certificates are refused anyway and stay out of the list.
    later = NOW + dt.timedelta(days=2)
    assert pki.revoked_serials(set(), later) == {
        alice.serial,
        bob.serial,
        carol_old.serial,
        carol.serial,
    }

    assert pki.write_crl({bob.serial, carol_old.serial}, NOW)
    crl = x509.load_pem_x509_crl(pki.crl_path.read_bytes())
    assert crl.is_signature_valid(pki.ca_cert.public_key())
    assert {entry.serial_number for entry in crl} == {bob.serial, carol_old.serial}
    assert crl.next_update_utc is not None
    assert crl.next_update_utc - NOW > dt.timedelta(days=CRL_DAYS - 1)


def test_the_crl_is_rewritten_only_when_it_must_be(pki: NodePki) -> None:
    serial = pki.issue_client("alice", 30, NOW).record.serial
    assert pki.write_crl({serial}, NOW)
    first = pki.crl_path.read_bytes()

    assert not pki.write_crl({serial}, NOW + dt.timedelta(hours=1))  # unchanged
    assert pki.crl_path.read_bytes() == first

    assert pki.write_crl(set(), NOW)  # re-enabled: un-revoked
    assert list(x509.load_pem_x509_crl(pki.crl_path.read_bytes())) == []

    # Close to its nextUpdate (after which OpenSSL refuses every client) it is re-signed.
    assert pki.write_crl(set(), NOW + dt.timedelta(days=CRL_DAYS - 300))
    crl = x509.load_pem_x509_crl(pki.crl_path.read_bytes())
    number = crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number
    assert number == 3


def test_openssl_refuses_a_revoked_client_and_accepts_an_enabled_one(
    pki: NodePki, tmp_path: Path
) -> None:
    need(shutil.which("openssl") is not None, "openssl is not installed")
    now = dt.datetime.now(dt.UTC)
    alice = pki.issue_client("alice", 30, now)
    bob = pki.issue_client("bob", 30, now)
    pki.write_crl(pki.revoked_serials({"alice"}, now), now)
    for name, issued in (("alice", alice), ("bob", bob)):
        (tmp_path / f"{name}.pem").write_text(issued.certificate_pem)

    def verify(name: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [
                "openssl", "verify", "-crl_check", "-purpose", "sslclient",
                "-CAfile", str(pki.ca_cert_path), "-CRLfile", str(pki.crl_path),
                str(tmp_path / f"{name}.pem"),
            ],
            capture_output=True, text=True, check=False,
        )  # fmt: skip

    assert verify("alice").returncode == 0
    refused = verify("bob")
    assert refused.returncode != 0
    assert "certificate revoked" in refused.stdout + refused.stderr


def test_the_server_certificate_is_renewed_before_it_expires(pki: NodePki) -> None:
    before = pki.server_cert_path.read_bytes()
    assert not pki.ensure_server_cert(NOW + dt.timedelta(days=30))
    assert pki.ensure_server_cert(NOW + dt.timedelta(days=5 * 365 - 30))
    assert pki.server_cert_path.read_bytes() != before
    renewed = x509.load_pem_x509_certificate(pki.server_cert_path.read_bytes())
    renewed.verify_directly_issued_by(pki.ca_cert)


def test_a_damaged_ca_is_an_error_not_a_silent_new_one(pki: NodePki) -> None:
    pki.issue_client("alice", 30, NOW)
    pki.ca_key_path.write_text("not a key")
    with pytest.raises(ConfigError, match="unreadable"):
        NodePki.load_or_create(pki.directory, "main", NOW)

    pki.ca_key_path.unlink()
    with pytest.raises(ConfigError, match="clients were issued"):
        NodePki.load_or_create(pki.directory, "main", NOW)


def test_a_damaged_record_of_issued_certificates_is_an_error(pki: NodePki) -> None:
    pki.issued_path.write_text("{")
    with pytest.raises(ConfigError, match=r"issued\.json"):
        NodePki.load_or_create(pki.directory, "main", NOW)


def test_the_static_key_format_round_trips() -> None:
    raw = bytes(range(256))
    text = format_static_key(raw)
    assert parse_static_key(text) == raw
    lines = text.splitlines()
    assert lines[3] == "-----BEGIN OpenVPN Static key V1-----"
    assert [len(line) for line in lines[4:20]] == [32] * 16
    for bad in ("", text.replace("-----END", "-----NOPE"), text.replace(lines[4], "00")):
        with pytest.raises(ValueError, match=r"static key"):
            parse_static_key(bad)


def test_our_static_key_matches_what_openvpn_genkey_writes(tmp_path: Path) -> None:
    need(shutil.which("openvpn") is not None, "openvpn is not installed")
    path = tmp_path / "genkey.key"
    subprocess.run(["openvpn", "--genkey", "secret", str(path)], check=True, capture_output=True)
    theirs = path.read_text()
    ours = format_static_key(parse_static_key(theirs))
    assert ours == theirs
    assert generate_static_key() != generate_static_key()


def test_an_unwritable_state_directory_is_a_config_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.raises(ConfigError, match="OpenVPN PKI"):
        NodePki.load_or_create(blocker / "openvpn-main", "main", NOW)
