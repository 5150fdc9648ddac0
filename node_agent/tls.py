"""The agent's certificates: where they live in the state directory, how they are made, and
who may call.

    <state-dir>/ca.pem      the cluster CA (trust anchor for callers)
    <state-dir>/agent.key   the agent's private key (0600, generated here, never leaves)
    <state-dir>/agent.pem   the agent's certificate, SAN = node_dns_name(node id)
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from node_agent.errors import ConfigError
from node_agent.files import write_atomic
from proto.nodeapi.v1.identity import CONTROLLER_IDENTITY, node_dns_name, node_id_from_dns_name

CA_FILE = "ca.pem"
KEY_FILE = "agent.key"
CERT_FILE = "agent.pem"


@dataclass(frozen=True, slots=True)
class AgentCredentials:
    node_id: str
    ca_pem: bytes
    key_pem: bytes
    cert_pem: bytes

    def server_credentials(self) -> grpc.ServerCredentials:
        # require_client_auth: no certificate from the cluster CA, no handshake.
        return grpc.ssl_server_credentials(
            [(self.key_pem, self.cert_pem)], root_certificates=self.ca_pem, require_client_auth=True
        )


def node_id_of(cert: x509.Certificate) -> str | None:
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return None
    ids = {
        n for name in san.get_values_for_type(x509.DNSName) if (n := node_id_from_dns_name(name))
    }
    return ids.pop() if len(ids) == 1 else None


def load_credentials(state_dir: Path) -> AgentCredentials:
    paths = {name: state_dir / name for name in (CA_FILE, KEY_FILE, CERT_FILE)}
    missing = [str(p) for p in paths.values() if not p.is_file()]
    if missing:
        raise ConfigError(
            f"missing {', '.join(missing)}: enroll the agent first "
            '(or see the README: "Run an agent by hand")'
        )
    ca_pem, key_pem, cert_pem = (paths[n].read_bytes() for n in (CA_FILE, KEY_FILE, CERT_FILE))
    try:
        cert = x509.load_pem_x509_certificate(cert_pem)
        cas = x509.load_pem_x509_certificates(ca_pem)
        if len(cas) != 1:
            raise ValueError(f"{paths[CA_FILE]} must hold exactly one certificate (the cluster CA)")
        ca = cas[0]
        key = serialization.load_pem_private_key(key_pem, password=None)
    except ValueError as exc:
        raise ConfigError(f"unreadable certificate or key in {state_dir}: {exc}") from None
    if key.public_key() != cert.public_key():
        raise ConfigError(f"{paths[KEY_FILE]} does not match {paths[CERT_FILE]}")
    try:
        cert.verify_directly_issued_by(ca)
    except (ValueError, TypeError, Exception) as exc:  # InvalidSignature is not a ValueError
        raise ConfigError(f"{paths[CERT_FILE]} is not signed by {paths[CA_FILE]}: {exc}") from None
    node_id = node_id_of(cert)
    if node_id is None:
        raise ConfigError(
            f"{paths[CERT_FILE]} names no node (its SAN lacks *.nodes.vpnbot.internal)"
        )
    return AgentCredentials(node_id, ca_pem, key_pem, cert_pem)


def create_key_and_csr(state_dir: Path, node_id: str) -> bytes:
    """Generate the agent key (kept, 0600) and return a PEM CSR naming ``node_id``."""
    key_path = state_dir / KEY_FILE
    if key_path.exists():
        key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
        if not isinstance(key, ec.EllipticCurvePrivateKey):
            raise ConfigError(f"{key_path} is not an EC key")
    else:
        key = new_key()
        write_atomic(key_path, key_pem(key))
    return make_csr(key, node_id)


def new_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def make_csr(key: ec.EllipticCurvePrivateKey, node_id: str) -> bytes:
    """A PEM CSR for ``key`` naming ``node_id`` (the CA decides the names it signs anyway)."""
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(
            x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"vpnbot node {node_id}")])
        )
        .add_extension(
            x509.SubjectAlternativeName([x509.DNSName(node_dns_name(node_id))]), critical=False
        )
        .sign(key, hashes.SHA256())
    )
    return csr.public_bytes(serialization.Encoding.PEM)


def is_controller(context: grpc.aio.ServicerContext[Any, Any]) -> bool:
    """The caller's verified certificate carries the controller identity."""
    auth = context.auth_context()
    names = auth.get("x509_subject_alternative_name", [])
    return CONTROLLER_IDENTITY.encode() in names
