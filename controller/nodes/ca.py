"""The cluster CA kept in the database: certificate in clear, private key sealed with the
master key. Created on first use (``vpnbot node add``), shared by every controller process."""

from __future__ import annotations

import base64
import ipaddress
from pathlib import Path
from urllib.parse import urlsplit

from controller.crypto import SecretBox
from controller.db.uow import UnitOfWork, UnitOfWorkFactory
from controller.nodes.client import ClientCredentials
from controller.nodes.pki import (
    CertificateAuthority,
    cert_to_pem,
    generate_key,
    key_to_pem,
    load_certificate,
    load_key,
    write_private,
    write_public,
)

CA_CERT_SETTING = "nodes.ca.certificate"
CA_KEY_SETTING = "nodes.ca.key"
_KEY_CONTEXT = b"vpnbot:nodes-ca-key"


async def load_ca_in(uow: UnitOfWork, box: SecretBox) -> CertificateAuthority | None:
    """The CA inside the caller's transaction."""
    cert_row = await uow.app_settings.get(CA_CERT_SETTING)
    key_row = await uow.app_settings.get(CA_KEY_SETTING)
    if cert_row is None or key_row is None:
        return None
    key_pem = box.decrypt(base64.b64decode(key_row.value), _KEY_CONTEXT)
    return CertificateAuthority(load_key(key_pem), load_certificate(cert_row.value.encode()))


async def load_ca(uow_factory: UnitOfWorkFactory, box: SecretBox) -> CertificateAuthority | None:
    async with uow_factory().read_only() as uow:
        return await load_ca_in(uow, box)


def controller_credentials(ca: CertificateAuthority) -> ClientCredentials:
    """A fresh client certificate with the controller's identity, for calling agents over mTLS."""
    key, cert = ca.issue_controller()
    return ClientCredentials(ca.cert_pem, key_to_pem(key), cert_to_pem(cert))


async def load_controller_credentials(
    uow_factory: UnitOfWorkFactory, box: SecretBox
) -> ClientCredentials | None:
    """The controller's gRPC client credentials from the stored cluster CA (None: no CA yet).

    The one place the hub, the OpenVPN issuer and the CLI get them, so every caller presents
    the same identity and verifies agents against the same CA.
    """
    ca = await load_ca(uow_factory, box)
    return None if ca is None else controller_credentials(ca)


async def load_ca_certificate(uow_factory: UnitOfWorkFactory) -> bytes | None:
    """The CA certificate alone (public: no key is unsealed)."""
    async with uow_factory().read_only() as uow:
        row = await uow.app_settings.get(CA_CERT_SETTING)
        return None if row is None else str(row.value).encode()


async def ensure_ca(uow_factory: UnitOfWorkFactory, box: SecretBox) -> CertificateAuthority:
    """The cluster CA, created if this database has none yet (the first of several
    simultaneous callers wins; the others load its CA)."""
    found = await load_ca(uow_factory, box)
    if found is not None:
        return found
    ca = CertificateAuthority.create()
    async with uow_factory() as uow:
        sealed = base64.b64encode(box.encrypt(key_to_pem(ca.key), _KEY_CONTEXT)).decode()
        if await uow.app_settings.insert_if_absent(CA_CERT_SETTING, cert_to_pem(ca.cert).decode()):
            await uow.app_settings.insert_if_absent(CA_KEY_SETTING, sealed)
            await uow.commit()
            return ca
    loaded = await load_ca(uow_factory, box)
    if loaded is None:
        raise RuntimeError("the cluster CA vanished while it was being created")
    return loaded


def listener_certificate(ca: CertificateAuthority, url: str, directory: Path) -> tuple[Path, Path]:
    """Files (certificate chain, key) for the HTTPS enrollment listener: a server
    certificate of the cluster CA naming the enrollment URL's host (and loopback)."""
    host = urlsplit(url).hostname or "localhost"
    dns, ips = ["localhost"], ["127.0.0.1", "::1"]
    try:
        ips.append(str(ipaddress.ip_address(host)))
    except ValueError:
        dns.append(host)
    key = generate_key()
    cert = ca.issue(
        key.public_key(),
        common_name="vpnbot enrollment",
        dns_names=sorted(set(dns)),
        ip_addresses=sorted(set(ips)),
        server=True,
        client=False,
    )
    directory.mkdir(parents=True, exist_ok=True)
    cert_path, key_path = directory / "enrollment.pem", directory / "enrollment.key"
    write_private(key_path, key_to_pem(key))
    write_public(cert_path, cert_to_pem(cert) + ca.cert_pem)
    return cert_path, key_path
