"""The cluster CA: the root of trust between the controller and its node agents.

EC P-256 keys, SHA-256 signatures. The CA signs two kinds of leaf certificates:

* a node certificate for an agent's CSR, whose only SAN is ``node_dns_name(node_id)`` (the
  names the CSR asks for are ignored: the CA decides who a node is);
* the controller's client certificate, whose SAN is ``CONTROLLER_IDENTITY``.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from proto.nodeapi.v1.identity import CONTROLLER_IDENTITY, node_dns_name

PrivateKey = ec.EllipticCurvePrivateKey

CA_VALID_DAYS = 3650
LEAF_VALID_DAYS = 825
_CLOCK_SKEW = dt.timedelta(minutes=5)


class PkiError(ValueError):
    """A CSR or certificate the CA refuses (bad signature, wrong key type, unreadable PEM)."""


def generate_key() -> PrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def key_to_pem(key: PrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def cert_to_pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def load_key(pem: bytes) -> PrivateKey:
    try:
        key = serialization.load_pem_private_key(pem, password=None)
    except (ValueError, TypeError) as exc:
        raise PkiError(f"unreadable private key: {exc}") from None
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise PkiError("the private key is not an EC key")
    return key


def load_certificate(pem: bytes) -> x509.Certificate:
    try:
        return x509.load_pem_x509_certificate(pem)
    except ValueError as exc:
        raise PkiError(f"unreadable certificate: {exc}") from None


def fingerprint(cert: x509.Certificate) -> str:
    """SHA-256 of the DER certificate, lowercase hex (what enrollment tokens pin)."""
    return cert.fingerprint(hashes.SHA256()).hex()


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


@dataclass(frozen=True, slots=True)
class CertificateAuthority:
    key: PrivateKey
    cert: x509.Certificate

    @classmethod
    def create(
        cls, common_name: str = "vpnbot cluster CA", *, valid_days: int = CA_VALID_DAYS
    ) -> CertificateAuthority:
        key = generate_key()
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
        now = _now()
        ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
        cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - _CLOCK_SKEW)
            .not_valid_after(now + dt.timedelta(days=valid_days))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=False,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=True,
                    crl_sign=True,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(ski, critical=False)
            .sign(key, hashes.SHA256())
        )
        return cls(key, cert)

    @property
    def cert_pem(self) -> bytes:
        return cert_to_pem(self.cert)

    def issue(
        self,
        public_key: ec.EllipticCurvePublicKey,
        *,
        common_name: str,
        dns_names: Sequence[str],
        ip_addresses: Sequence[str] = (),
        server: bool,
        client: bool,
        valid_days: int = LEAF_VALID_DAYS,
    ) -> x509.Certificate:
        """Sign a leaf certificate for ``public_key`` naming exactly ``dns_names``."""
        if not isinstance(public_key, ec.EllipticCurvePublicKey):
            raise PkiError("only EC public keys are accepted")
        usages = []
        if server:
            usages.append(ExtendedKeyUsageOID.SERVER_AUTH)
        if client:
            usages.append(ExtendedKeyUsageOID.CLIENT_AUTH)
        now = _now()
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
            .issuer_name(self.cert.subject)
            .public_key(public_key)
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - _CLOCK_SKEW)
            .not_valid_after(
                min(now + dt.timedelta(days=valid_days), self.cert.not_valid_after_utc)
            )
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=True,
                    key_cert_sign=False,
                    crl_sign=False,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(
                x509.SubjectAlternativeName(
                    [
                        *(x509.DNSName(n) for n in dns_names),
                        *(x509.IPAddress(ipaddress.ip_address(a)) for a in ip_addresses),
                    ]
                ),
                critical=False,
            )
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self.key.public_key()),
                critical=False,
            )
        )
        if usages:
            builder = builder.add_extension(x509.ExtendedKeyUsage(usages), critical=False)
        return builder.sign(self.key, hashes.SHA256())

    def sign_node_csr(
        self, csr_pem: bytes, node_id: str, *, valid_days: int = LEAF_VALID_DAYS
    ) -> x509.Certificate:
        """Sign an agent's CSR as node ``node_id`` (server and client auth)."""
        try:
            csr = x509.load_pem_x509_csr(csr_pem)
        except ValueError as exc:
            raise PkiError(f"unreadable certificate signing request: {exc}") from None
        if not csr.is_signature_valid:
            raise PkiError("the certificate signing request's signature is invalid")
        public_key = csr.public_key()
        if not isinstance(public_key, ec.EllipticCurvePublicKey):
            raise PkiError("the certificate signing request must carry an EC key")
        return self.issue(
            public_key,
            common_name=f"vpnbot node {node_id}",
            dns_names=[node_dns_name(node_id)],
            server=True,
            client=True,
            valid_days=valid_days,
        )

    def issue_controller(
        self, *, valid_days: int = LEAF_VALID_DAYS
    ) -> tuple[PrivateKey, x509.Certificate]:
        key = generate_key()
        cert = self.issue(
            key.public_key(),
            common_name="vpnbot controller",
            dns_names=[CONTROLLER_IDENTITY],
            server=False,
            client=True,
            valid_days=valid_days,
        )
        return key, cert


def write_private(path: Path, data: bytes) -> None:
    """Write a secret file readable by its owner only, atomically."""
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


def write_public(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)
