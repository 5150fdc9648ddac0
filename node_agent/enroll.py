"""``vpn-node-agent enroll``: trade a token from ``vpnbot node add`` for the agent's
certificate.

1. The cluster CA certificate is downloaded from the controller's enrollment listener. It is
   public data, fetched before the agent can verify anything, and accepted **only** if its
   SHA-256 equals the fingerprint the token pins (the pattern of kubeadm's
   discovery-token-ca-cert-hash): a man in the middle cannot substitute another CA.
2. Over HTTPS verified against that CA (and the URL's host name), the agent sends the token's
   secret and a CSR for a new key of its own, generated here and never sent anywhere.
3. The certificate it gets back must chain to the pinned CA, carry the agent's new public
   key and name the token's node; only then are ``agent.key``, ``agent.pem`` and ``ca.pem``
   written (every enrollment makes a new key).
"""

from __future__ import annotations

import http.client
import json
import ssl
from pathlib import Path
from urllib.parse import urlsplit

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from node_agent.errors import ConfigError
from node_agent.files import write_atomic
from node_agent.tls import CA_FILE, CERT_FILE, KEY_FILE, key_pem, make_csr, new_key, node_id_of
from proto.nodeapi.v1.enrollment import (
    CA_PATH,
    ENROLL_PATH,
    EnrollmentToken,
    TokenError,
    pem_fingerprint,
)

MAX_RESPONSE = 256 * 1024


class EnrollmentError(ConfigError):
    """Enrollment did not happen (nothing was written except, possibly, the agent key)."""


def _request(
    url: str,
    method: str,
    path: str,
    context: ssl.SSLContext,
    timeout: float,
    body: bytes | None = None,
) -> tuple[int, bytes]:
    parts = urlsplit(url)
    assert parts.hostname is not None
    connection = http.client.HTTPSConnection(
        parts.hostname, parts.port or 443, context=context, timeout=timeout
    )
    try:
        headers = {"Content-Type": "application/json"} if body is not None else {}
        connection.request(method, path, body=body, headers=headers)
        response = connection.getresponse()
        return response.status, response.read(MAX_RESPONSE)
    except ssl.SSLCertVerificationError as exc:
        raise EnrollmentError(
            f"the controller at {url} presented a certificate the pinned CA did not sign "
            f"({exc.verify_message}); refusing to send the token"
        ) from None
    except (OSError, http.client.HTTPException) as exc:
        raise EnrollmentError(f"cannot reach the controller at {url}: {exc}") from None
    finally:
        connection.close()


def fetch_pinned_ca(token: EnrollmentToken, timeout: float) -> bytes:
    # Unverified on purpose, and only for public data checked against the pin below.
    discovery = ssl.create_default_context()
    discovery.check_hostname = False
    discovery.verify_mode = ssl.CERT_NONE
    status, body = _request(token.url, "GET", CA_PATH, discovery, timeout)
    if status != 200:
        raise EnrollmentError(f"the controller answered {status} for its CA certificate")
    try:
        certificates = x509.load_pem_x509_certificates(body)
    except ValueError:
        raise EnrollmentError("the controller sent no CA certificate") from None
    # Exactly one certificate, and only it is used from here on: anything appended to the
    # unverified answer would otherwise become trusted without being pinned.
    if len(certificates) != 1:
        raise EnrollmentError("the controller's CA answer must hold exactly one certificate")
    ca = certificates[0]
    pem = ca.public_bytes(serialization.Encoding.PEM)
    if pem_fingerprint(pem) != token.ca_fingerprint:
        raise EnrollmentError(
            "the CA certificate at the enrollment URL does not match the token's fingerprint: "
            "not the controller that issued this token (or someone in between)"
        )
    try:
        is_ca = ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    except x509.ExtensionNotFound:
        is_ca = False
    if not is_ca:
        raise EnrollmentError("the pinned certificate is not a CA certificate")
    return pem


def enroll(token_text: str, state_dir: Path, *, timeout: float = 30.0) -> str:
    """Enroll into ``state_dir``; return the node id."""
    try:
        token = EnrollmentToken.decode(token_text)
    except TokenError as exc:
        raise EnrollmentError(str(exc)) from None
    state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    ca_pem = fetch_pinned_ca(token, timeout)
    # A fresh key for every enrollment (re-enrolling after a leak must not keep the leaked
    # key); it replaces the old one only together with the certificate issued for it.
    key = new_key()
    csr = make_csr(key, token.node_id)
    verified = ssl.create_default_context(cadata=ca_pem.decode())
    body = json.dumps({"token": token.secret, "csr": csr.decode()}).encode()
    status, answer = _request(token.url, "POST", ENROLL_PATH, verified, timeout, body)
    try:
        reply = json.loads(answer)
    except ValueError:
        reply = {}
    if status == 403:
        raise EnrollmentError(
            "the controller refused the token: it is expired, already used or replaced "
            "(make a new one with `vpnbot node token NAME`)"
        )
    if status != 200 or not isinstance(reply, dict):
        detail = reply.get("detail") if isinstance(reply, dict) else None
        raise EnrollmentError(f"enrollment failed ({status}): {detail or answer[:200]!r}")
    cert_pem = str(reply.get("certificate", "")).encode()
    _check_certificate(cert_pem, ca_pem, key, token.node_id)
    write_atomic(state_dir / KEY_FILE, key_pem(key))
    write_atomic(state_dir / CERT_FILE, cert_pem)
    write_atomic(state_dir / CA_FILE, ca_pem)
    return token.node_id


def _check_certificate(
    cert_pem: bytes, ca_pem: bytes, key: ec.EllipticCurvePrivateKey, node_id: str
) -> None:
    try:
        cert = x509.load_pem_x509_certificate(cert_pem)
        ca = x509.load_pem_x509_certificate(ca_pem)
        cert.verify_directly_issued_by(ca)
    except Exception as exc:  # InvalidSignature is not a ValueError
        raise EnrollmentError(f"the controller sent an unusable certificate: {exc}") from None
    if key.public_key() != cert.public_key():
        raise EnrollmentError("the certificate the controller sent is not for this agent's key")
    if node_id_of(cert) != node_id:
        raise EnrollmentError(f"the certificate does not name node {node_id}")
