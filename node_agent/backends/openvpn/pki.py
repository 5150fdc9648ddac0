"""The node's own OpenVPN PKI, made with ``cryptography`` alone (EC P-256).

Everything lives in one 0700 directory; keys are 0600 and every file is written atomically:

    ca.key, ca.crt          the CA (its key never leaves the node)
    server.key, server.crt  the server certificate (EKU serverAuth), renewed before it expires
    tls-crypt.key           OpenVPN's 2048-bit static key format (as ``openvpn --genkey secret``)
    issued.json             every client certificate ever issued: serial, common name, not_after
    crl.pem                 the revocation list openvpn's ``crl-verify`` reads

Client private keys are not kept: they leave in the profile and only the controller stores it.
A re-issue for the same common name supersedes the earlier certificate for good; which of the
current certificates are revoked is decided by the caller (the enabled common names).

Existing material is never replaced silently: a CA that cannot be read is a ConfigError, since
a new CA would invalidate every profile already handed out.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
from collections.abc import Collection, Iterable
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from node_agent.backends.openvpn.statickey import (
    generate_static_key,
    parse_static_key,
)
from node_agent.errors import ConfigError, InvalidStateError
from node_agent.files import write_atomic

COMMON_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
CA_DAYS = 20 * 365
SERVER_DAYS = 5 * 365
SERVER_RENEW_BEFORE = dt.timedelta(days=60)
MAX_CLIENT_DAYS = 3650
# OpenSSL refuses every client once the CRL's nextUpdate has passed, so the CRL is valid for
# long and re-signed well before it runs out (the periodic reconcile checks).
CRL_DAYS = 2 * 365
CRL_REFRESH_BEFORE = dt.timedelta(days=365)
_BACKDATE = dt.timedelta(minutes=5)  # tolerate a client clock a little behind ours


def check_common_name(common_name: str, what: str = "common name") -> None:
    if not isinstance(common_name, str) or not COMMON_NAME.fullmatch(common_name):
        raise InvalidStateError(
            f"{what} {common_name!r} must be 1..64 characters of letters, digits, '_', '.' or '-'"
        )


def _utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _new_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _cert_pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def _key_usage(**flags: bool) -> x509.KeyUsage:
    names = (
        "digital_signature",
        "content_commitment",
        "key_encipherment",
        "data_encipherment",
        "key_agreement",
        "key_cert_sign",
        "crl_sign",
        "encipher_only",
        "decipher_only",
    )
    return x509.KeyUsage(**{name: flags.get(name, False) for name in names})


@dataclass(frozen=True, slots=True)
class CertRecord:
    serial: int
    common_name: str
    not_after: dt.datetime
    issued_at: dt.datetime

    def to_json(self) -> dict[str, str]:
        return {
            "serial": format(self.serial, "x"),
            "common_name": self.common_name,
            "not_after": self.not_after.isoformat(),
            "issued_at": self.issued_at.isoformat(),
        }

    @classmethod
    def from_json(cls, data: dict[str, str]) -> CertRecord:
        return cls(
            serial=int(data["serial"], 16),
            common_name=data["common_name"],
            not_after=dt.datetime.fromisoformat(data["not_after"]),
            issued_at=dt.datetime.fromisoformat(data["issued_at"]),
        )


@dataclass(frozen=True, slots=True)
class ClientCredentials:
    record: CertRecord
    certificate_pem: str
    private_key_pem: str


class NodePki:
    """The PKI in ``directory``; ``load_or_create`` makes what is missing on first use."""

    def __init__(self, directory: Path, name: str) -> None:
        self.directory = directory
        self.name = name
        self.ca_key_path = directory / "ca.key"
        self.ca_cert_path = directory / "ca.crt"
        self.server_key_path = directory / "server.key"
        self.server_cert_path = directory / "server.crt"
        self.tls_crypt_path = directory / "tls-crypt.key"
        self.crl_path = directory / "crl.pem"
        self.issued_path = directory / "issued.json"
        self._ca_key: ec.EllipticCurvePrivateKey | None = None
        self._ca_cert: x509.Certificate | None = None
        self._records: list[CertRecord] = []
        self.tls_crypt_key = ""

    @classmethod
    def load_or_create(cls, directory: Path, name: str, now: dt.datetime | None = None) -> NodePki:
        pki = cls(directory, name)
        pki._load_or_create(now or _utcnow())
        return pki

    # --- loading --------------------------------------------------------------------------

    def _load_or_create(self, now: dt.datetime) -> None:
        try:
            self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
            os.chmod(self.directory, 0o700)
            self._records = self._load_records()
            self._load_or_create_ca(now)
            self._load_or_create_tls_crypt()
            self.ensure_server_cert(now)
        except OSError as exc:
            raise ConfigError(f"the OpenVPN PKI in {self.directory}: {exc}") from None

    def _load_records(self) -> list[CertRecord]:
        if not self.issued_path.exists():
            return []
        try:
            data = json.loads(self.issued_path.read_text())
            return [CertRecord.from_json(item) for item in data["certificates"]]
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise ConfigError(f"{self.issued_path} is unreadable: {exc}") from None

    def _load_or_create_ca(self, now: dt.datetime) -> None:
        have_key, have_cert = self.ca_key_path.exists(), self.ca_cert_path.exists()
        if have_key and have_cert:
            try:
                key = serialization.load_pem_private_key(
                    self.ca_key_path.read_bytes(), password=None
                )
                cert = x509.load_pem_x509_certificate(self.ca_cert_path.read_bytes())
            except (OSError, ValueError) as exc:
                raise ConfigError(
                    f"the OpenVPN CA in {self.directory} is unreadable: {exc}"
                ) from None
            if not isinstance(key, ec.EllipticCurvePrivateKey) or key.public_key() != (
                cert.public_key()
            ):
                raise ConfigError(f"{self.ca_key_path} does not match {self.ca_cert_path}")
            self._ca_key, self._ca_cert = key, cert
            return
        if self._records:
            # Profiles were handed out under this CA: a new one would silently break them all.
            raise ConfigError(
                f"the OpenVPN CA in {self.directory} is missing ca.key or ca.crt but clients "
                "were issued under it; restore the CA or wipe the directory"
            )
        key = _new_key()
        subject = x509.Name(
            [x509.NameAttribute(NameOID.COMMON_NAME, f"vpnbot OpenVPN CA {self.name}")]
        )
        ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
        cert = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - _BACKDATE)
            .not_valid_after(now + dt.timedelta(days=CA_DAYS))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(
                _key_usage(key_cert_sign=True, crl_sign=True),
                critical=True,
            )
            .add_extension(ski, critical=False)
            .sign(key, hashes.SHA256())
        )
        # The key first: a crash in between leaves a key without a certificate, which the next
        # start replaces (no client can have been issued yet).
        write_atomic(self.ca_key_path, _key_pem(key), mode=0o600)
        write_atomic(self.ca_cert_path, _cert_pem(cert), mode=0o644)
        self._ca_key, self._ca_cert = key, cert

    def _load_or_create_tls_crypt(self) -> None:
        if self.tls_crypt_path.exists():
            try:
                text = self.tls_crypt_path.read_text()
                parse_static_key(text)
            except (OSError, ValueError) as exc:
                raise ConfigError(f"{self.tls_crypt_path}: {exc}") from None
            self.tls_crypt_key = text
            return
        text = generate_static_key()
        write_atomic(self.tls_crypt_path, text.encode(), mode=0o600)
        self.tls_crypt_key = text

    @property
    def ca_cert(self) -> x509.Certificate:
        assert self._ca_cert is not None
        return self._ca_cert

    @property
    def ca_key(self) -> ec.EllipticCurvePrivateKey:
        assert self._ca_key is not None
        return self._ca_key

    @property
    def ca_certificate_pem(self) -> str:
        return _cert_pem(self.ca_cert).decode()

    @property
    def records(self) -> tuple[CertRecord, ...]:
        return tuple(self._records)

    # --- signing --------------------------------------------------------------------------

    def _sign(
        self,
        common_name: str,
        key: ec.EllipticCurvePrivateKey,
        usage: x509.ObjectIdentifier,
        not_before: dt.datetime,
        not_after: dt.datetime,
    ) -> x509.Certificate:
        return (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
            .issuer_name(self.ca_cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(not_before)
            .not_valid_after(not_after)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                _key_usage(digital_signature=True, key_agreement=True),
                critical=True,
            )
            .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self.ca_key.public_key()),
                critical=False,
            )
            .sign(self.ca_key, hashes.SHA256())
        )

    def _issued_by_ca(self, cert: x509.Certificate) -> bool:
        try:
            cert.verify_directly_issued_by(self.ca_cert)
        except (ValueError, TypeError, InvalidSignature):
            return False
        return True

    def ensure_server_cert(self, now: dt.datetime | None = None) -> bool:
        """Keep a valid server certificate; True when it was (re)made."""
        now = now or _utcnow()
        if self.server_key_path.exists() and self.server_cert_path.exists():
            try:
                key = serialization.load_pem_private_key(
                    self.server_key_path.read_bytes(), password=None
                )
                cert = x509.load_pem_x509_certificate(self.server_cert_path.read_bytes())
            except (OSError, ValueError):
                pass  # replaced below: the server certificate is ours alone to remake
            else:
                if (
                    key.public_key() == cert.public_key()
                    and self._issued_by_ca(cert)
                    and cert.not_valid_after_utc - now > SERVER_RENEW_BEFORE
                ):
                    return False
        key = _new_key()
        not_after = min(now + dt.timedelta(days=SERVER_DAYS), self.ca_cert.not_valid_after_utc)
        cert = self._sign(
            f"{self.name}.server", key, ExtendedKeyUsageOID.SERVER_AUTH, now - _BACKDATE, not_after
        )
        write_atomic(self.server_key_path, _key_pem(key), mode=0o600)
        write_atomic(self.server_cert_path, _cert_pem(cert), mode=0o644)
        return True

    def issue_client(
        self, common_name: str, valid_days: int, now: dt.datetime | None = None
    ) -> ClientCredentials:
        """Sign a fresh key for ``common_name`` and record it; an earlier certificate of the
        same name is superseded (revoked for good by ``revoked_serials``)."""
        check_common_name(common_name)
        if not isinstance(valid_days, int) or not 1 <= valid_days <= MAX_CLIENT_DAYS:
            raise InvalidStateError(f"valid_days must be 1..{MAX_CLIENT_DAYS}, got {valid_days}")
        now = now or _utcnow()
        key = _new_key()
        # Never past the CA: a client certificate outliving its issuer would not verify anyway.
        not_after = min(now + dt.timedelta(days=valid_days), self.ca_cert.not_valid_after_utc)
        cert = self._sign(
            common_name, key, ExtendedKeyUsageOID.CLIENT_AUTH, now - _BACKDATE, not_after
        )
        record = CertRecord(cert.serial_number, common_name, cert.not_valid_after_utc, now)
        self._save_records([*self._records, record])
        return ClientCredentials(record, _cert_pem(cert).decode(), _key_pem(key).decode())

    def _save_records(self, records: list[CertRecord]) -> None:
        data = {"version": 1, "certificates": [r.to_json() for r in records]}
        write_atomic(self.issued_path, (json.dumps(data, indent=1) + "\n").encode(), mode=0o600)
        self._records = records

    # --- revocation -----------------------------------------------------------------------

    def current_serials(self) -> dict[str, int]:
        """The newest certificate of each common name ever issued."""
        current: dict[str, int] = {}
        for record in self._records:
            current[record.common_name] = record.serial
        return current

    def revoked_serials(
        self, enabled_common_names: Collection[str], now: dt.datetime | None = None
    ) -> set[int]:
        """Serials to revoke: every superseded certificate, and the current one of every name
        not enabled. Expired certificates are left out: they are refused anyway."""
        now = now or _utcnow()
        current = self.current_serials()
        return {
            r.serial
            for r in self._records
            if r.not_after > now
            and (current[r.common_name] != r.serial or r.common_name not in enabled_common_names)
        }

    def read_crl(self) -> x509.CertificateRevocationList | None:
        try:
            crl = x509.load_pem_x509_crl(self.crl_path.read_bytes())
        except FileNotFoundError:
            return None
        except (OSError, ValueError):
            return None  # rewritten by the caller
        if not crl.is_signature_valid(self.ca_key.public_key()):
            return None
        return crl

    def write_crl(self, serials: Iterable[int], now: dt.datetime | None = None) -> bool:
        """Make ``crl.pem`` revoke exactly ``serials``; True when the file was rewritten.

        Unchanged serials and a CRL far from expiry leave the file alone: openvpn re-reads it
        whenever it changes.
        """
        now = now or _utcnow()
        wanted = set(serials)
        old = self.read_crl()
        number = 0
        if old is not None:
            present = {entry.serial_number for entry in old}
            next_update = old.next_update_utc
            if (
                present == wanted
                and next_update is not None
                and next_update - now > CRL_REFRESH_BEFORE
            ):
                return False
            try:
                ext = old.extensions.get_extension_for_class(x509.CRLNumber)
                number = ext.value.crl_number
            except x509.ExtensionNotFound:
                number = 0
        builder = (
            x509.CertificateRevocationListBuilder()
            .issuer_name(self.ca_cert.subject)
            .last_update(now - _BACKDATE)
            .next_update(now + dt.timedelta(days=CRL_DAYS))
            .add_extension(x509.CRLNumber(number + 1), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self.ca_key.public_key()),
                critical=False,
            )
        )
        for serial in sorted(wanted):
            builder = builder.add_revoked_certificate(
                x509.RevokedCertificateBuilder()
                .serial_number(serial)
                .revocation_date(now - _BACKDATE)
                .build()
            )
        crl = builder.sign(self.ca_key, hashes.SHA256())
        write_atomic(self.crl_path, crl.public_bytes(serialization.Encoding.PEM), mode=0o644)
        return True
