"""The OpenVPN backend: an openvpn server with the node's own PKI, whose desired state is
the set of enabled clients (by certificate common name).

* Issuance (``issue_client``) signs a client certificate with the node's CA, whose key never
  leaves the node, and returns an inline profile. Re-issuing a name supersedes its earlier
  certificate for good.
* Enabling and disabling is the CRL: it lists every issued certificate whose name is not
  enabled (and every superseded one), so enabling a name again un-revokes it. openvpn
  re-reads the CRL when it changes; live sessions of disabled names are killed at once
  through the management interface.
* A name in the desired state that this node never issued is accepted: it simply never
  connects. Desired state may arrive before issuance is recorded (e.g. after the state
  directory was wiped and the controller re-issues), and refusing it would block the whole
  node's state over one client.
* Usage per client id is cumulative across reconnects (``usage.UsageBook``). A removed
  client's counters are dropped and reported in ``ApplyReport.reset_clients``, like a removed
  WireGuard peer's.

openvpn runs daemonized and is adopted by the next agent when its rendered configuration is
unchanged; a changed configuration (or a renewed server certificate) restarts it.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import structlog

from node_agent.backends.base import (
    ApplyReport,
    BackendStatus,
    Health,
    IssuedClient,
    OpenVpnPublicParams,
    PublicParams,
    UsageSample,
)
from node_agent.backends.openvpn.management import (
    ManagementClient,
    ManagementError,
    NotRunningError,
    Session,
)
from node_agent.backends.openvpn.pki import NodePki, check_common_name
from node_agent.backends.openvpn.process import OpenVpnProcess
from node_agent.backends.openvpn.render import (
    ServerPaths,
    render_hook,
    render_profile,
    render_server,
)
from node_agent.backends.openvpn.usage import UsageBook
from node_agent.config import OpenVpnConfig
from node_agent.errors import BackendError, ConfigError, InvalidStateError
from node_agent.files import write_atomic
from node_agent.model import Client, OpenVpnClient, validate_client_ids

log = structlog.get_logger("node_agent.openvpn")

_MAX_UNIX_PATH = 107  # sun_path is 108 bytes with its terminating NUL


class OpenVpnBackend:
    kind = "openvpn"

    def __init__(self, name: str, spec: OpenVpnConfig, state_dir: Path) -> None:
        self.name = name
        self.spec = spec
        self.directory = state_dir / f"openvpn-{name}"
        self.pki = NodePki.load_or_create(self.directory, name)
        socket = spec.management_socket or self.directory / "management.sock"
        if len(os.fsencode(socket)) > _MAX_UNIX_PATH:
            raise ConfigError(
                f"backend {name!r}: the management socket path {socket} is longer than "
                f"{_MAX_UNIX_PATH} bytes; set management_socket to a shorter path"
            )
        self.config_path = self.directory / "server.conf"
        self.spool = self.directory / "sessions"
        self.paths = ServerPaths(
            ca=self.pki.ca_cert_path,
            cert=self.pki.server_cert_path,
            key=self.pki.server_key_path,
            tls_crypt=self.pki.tls_crypt_path,
            crl=self.pki.crl_path,
            management=socket,
            log=self.directory / "openvpn.log",
            pid=self.directory / "openvpn.pid",
            hook=self.directory / "client-disconnect.sh",
        )
        self._running_digest_path = self.directory / "running.sha256"
        self.book = UsageBook(self.directory / "usage.json", self.spool)
        self.management = ManagementClient(socket)
        self.process = OpenVpnProcess(
            name=name,
            command=[*spec.command_prefix, spec.openvpn],
            config_path=self.config_path,
            pid_path=self.paths.pid,
            log_path=self.paths.log,
            management=self.management,
            start_timeout=spec.start_timeout,
        )
        self._enabled: dict[str, str] = {}  # client id -> common name, as last applied
        self._applied = False
        self._online = 0
        # One writer of the PKI records and the CRL at a time (apply and issuance race).
        self._lock = asyncio.Lock()
        self._log = log.bind(backend=name)

    # --- validation -----------------------------------------------------------------------

    def _wanted(self, clients: Sequence[Client]) -> dict[str, str]:
        validate_client_ids(self.name, clients)
        owner: dict[str, str] = {}
        for client in clients:
            spec = client.spec
            if not isinstance(spec, OpenVpnClient):
                raise InvalidStateError(
                    f"backend {self.name!r}: client {client.id!r} is not an OpenVPN client"
                )
            check_common_name(
                spec.common_name, f"backend {self.name!r}: client {client.id!r}: common name"
            )
            if spec.common_name in owner:
                raise InvalidStateError(
                    f"backend {self.name!r}: clients {owner[spec.common_name]!r} and "
                    f"{client.id!r} share the common name {spec.common_name!r}"
                )
            owner[spec.common_name] = client.id
        return {client_id: cn for cn, client_id in owner.items()}

    def _merged(self, upserts: Sequence[Client], removals: Sequence[str]) -> list[Client]:
        validate_client_ids(self.name, upserts)
        gone = set(removals)
        merged = {
            client_id: Client(client_id, OpenVpnClient(cn))
            for client_id, cn in self._enabled.items()
            if client_id not in gone
        }
        merged.update((c.id, c) for c in upserts)
        return list(merged.values())

    def validate(self, clients: Sequence[Client]) -> None:
        self._wanted(clients)

    def validate_changes(self, upserts: Sequence[Client], removals: Sequence[str]) -> None:
        self._wanted(self._merged(upserts, removals))

    # --- the server -----------------------------------------------------------------------

    def _enabled_names(self) -> set[str]:
        # Before the first apply nothing is known to be enabled: deny rather than allow.
        return set(self._enabled.values()) if self._applied else set()

    def _enabled_for_issue(self) -> set[str]:
        if self._applied:
            return self._enabled_names()
        # Nothing applied in this process yet (start() failed, say): the CRL on disk says
        # who the server lets in. Recomputing it from an empty enabled set would revoke
        # every client; names it does not show enabled stay denied.
        on_disk = self.pki.read_crl()
        if on_disk is None:
            return set()
        revoked = {entry.serial_number for entry in on_disk}
        return {cn for cn, serial in self.pki.current_serials().items() if serial not in revoked}

    def _rendered(self) -> tuple[str, str]:
        return render_server(self.name, self.spec, self.paths), render_hook(self.spool)

    def _digest(self, config: str, hook: str) -> str:
        digest = hashlib.sha256()
        for part in (config.encode(), hook.encode(), self.pki.server_cert_path.read_bytes()):
            digest.update(hashlib.sha256(part).digest())
        return digest.hexdigest()

    def _write_files(self) -> str:
        """Renew what needs renewing, write what changed; the digest of what should run."""
        self.pki.ensure_server_cert()
        if self.pki.read_crl() is None:
            self.pki.write_crl(self.pki.revoked_serials(self._enabled_names()))
        config, hook = self._rendered()
        for path, text, mode in ((self.config_path, config, 0o600), (self.paths.hook, hook, 0o700)):
            try:
                unchanged = path.read_text() == text
            except (OSError, UnicodeDecodeError):
                unchanged = False
            if not unchanged:
                write_atomic(path, text.encode(), mode=mode)
        return self._digest(config, hook)

    def _running_digest(self) -> str:
        try:
            return self._running_digest_path.read_text().strip()
        except OSError:
            return ""

    async def start(self) -> None:
        async with self._lock:
            try:
                digest = self._write_files()
                self.process.rotate_log()
            except OSError as exc:
                raise BackendError(f"{self.name}: cannot write the server files: {exc}") from None
            if await self.process.ready():
                if self._running_digest() == digest:
                    return  # ours, with this very configuration: adopt it
                self._log.info("openvpn_config_changed_restarting")
                await self.process.stop()
            elif (pid := self.process.pid()) is not None:
                # Alive but not answering: still starting, stuck, or someone else holds the
                # management interface (it serves one client). Restarting would drop every
                # client on a guess; report it and let the next reconcile look again.
                raise BackendError(
                    f"{self.name}: openvpn (pid {pid}) runs but its management interface at "
                    f"{self.paths.management} does not answer"
                )
            self._running_digest_path.unlink(missing_ok=True)
            await self.process.start()
            write_atomic(self._running_digest_path, (digest + "\n").encode(), mode=0o600)

    # --- desired state --------------------------------------------------------------------

    async def apply(self, clients: Sequence[Client]) -> ApplyReport:
        return await self._converge(self._wanted(clients))

    async def apply_changes(
        self, upserts: Sequence[Client], removals: Sequence[str]
    ) -> ApplyReport:
        return await self._converge(self._wanted(self._merged(upserts, removals)))

    async def _converge(self, wanted: Mapping[str, str]) -> ApplyReport:
        async with self._lock:
            old = self._enabled
            added = sum(1 for i in wanted if i not in old)
            updated = sum(1 for i, cn in wanted.items() if i in old and old[i] != cn)
            removed = {i for i in old if i not in wanted}
            names = set(wanted.values())
            try:
                # The CRL first: from here on a disabled client cannot connect again.
                self.pki.write_crl(self.pki.revoked_serials(names))
            except OSError as exc:
                raise BackendError(f"{self.name}: cannot write the CRL: {exc}") from None
            self._enabled, self._applied = dict(wanted), True
            await self._kill_sessions(lambda s: s.common_name not in names)
            reset = removed | (self.book.totals.keys() - wanted.keys())
            self.book.forget(reset)
            self._save_book()
        return ApplyReport(added, updated, len(removed), frozenset(reset))

    async def _kill_sessions(self, doomed: Callable[[Session], bool]) -> int:
        """Disconnect the live sessions ``doomed`` picks. BackendError when openvpn does not
        answer (it may still serve them); not running, there is nobody to disconnect."""
        try:
            async with self.management.connect() as conn:
                victims = [s for s in await conn.sessions() if doomed(s)]
                await conn.kill(victims)
        except NotRunningError:
            return 0
        except ManagementError as exc:
            raise BackendError(f"{self.name}: could not disconnect clients: {exc}") from None
        if victims:
            self._log.info(
                "openvpn_sessions_disconnected", common_names=sorted(s.common_name for s in victims)
            )
        return len(victims)

    def _save_book(self) -> None:
        try:
            self.book.save()
        except OSError as exc:
            raise BackendError(f"{self.name}: cannot save usage: {exc}") from None

    # --- issuance -------------------------------------------------------------------------

    async def issue_client(self, common_name: str, valid_days: int) -> IssuedClient:
        check_common_name(common_name)
        if not 1 <= valid_days <= 3650:
            raise InvalidStateError(f"valid_days must be 1..3650, got {valid_days}")
        days = min(valid_days, self.spec.client_valid_days)
        async with self._lock:
            reissue = common_name in self.pki.current_serials()
            try:
                enabled = self._enabled_for_issue()
                issued = self.pki.issue_client(common_name, days)
                self.pki.write_crl(self.pki.revoked_serials(enabled))
            except OSError as exc:
                raise BackendError(f"{self.name}: cannot record the certificate: {exc}") from None
            if reissue:
                # The superseded certificate is revoked; its live session goes now, not at
                # the next renegotiation.
                try:
                    await self._kill_sessions(lambda s: s.common_name == common_name)
                except BackendError as exc:
                    self._log.warning("openvpn_reissued_disconnect_failed", error=str(exc))
        profile = render_profile(
            transport=self.spec.transport,
            ca_pem=self.pki.ca_certificate_pem,
            cert_pem=issued.certificate_pem,
            key_pem=issued.private_key_pem,
            tls_crypt_key=self.pki.tls_crypt_key,
        )
        return IssuedClient(
            common_name=common_name,
            certificate_pem=issued.certificate_pem,
            profile=profile,
            not_after=issued.record.not_after,
        )

    # --- observation ----------------------------------------------------------------------

    async def _poll(self) -> list[Session] | None:
        """Live sessions; [] when openvpn is not running; None when it does not answer."""
        try:
            return await self.management.sessions()
        except NotRunningError:
            return []
        except ManagementError as exc:
            self._log.warning("openvpn_management_unanswered", error=str(exc))
            return None

    async def usage(self) -> UsageSample:
        sessions = await self._poll()
        owners = {cn: client_id for client_id, cn in self._enabled.items()}
        try:
            counters = self.book.sample(sessions, owners.get)
        except OSError as exc:
            raise BackendError(f"{self.name}: cannot save usage: {exc}") from None
        if sessions is not None:
            self._online = sum(1 for s in sessions if s.common_name in owners)
        return UsageSample(self.book.epoch, counters)

    async def status(self) -> BackendStatus:
        try:
            sessions = await self.management.sessions()
        except ManagementError as exc:
            pid = self.process.pid()
            if pid is None:
                tail = self.process.log_tail(2)
                return BackendStatus(
                    Health.DOWN,
                    "openvpn is not running" + (f" (last log: {tail})" if tail else ""),
                    len(self._enabled),
                )
            return BackendStatus(
                Health.DEGRADED,
                f"openvpn (pid {pid}) runs but does not answer: {exc}",
                len(self._enabled),
            )
        names = set(self._enabled.values())
        self._online = sum(1 for s in sessions if s.common_name in names)
        return BackendStatus(Health.OK, "", len(self._enabled), self._online)

    def public_params(self) -> PublicParams:
        return OpenVpnPublicParams(
            port=self.spec.port,
            transport=self.spec.transport,
            ca_certificate_pem=self.pki.ca_certificate_pem,
        )

    async def close(self) -> None:
        """Leave openvpn running: clients stay connected while the agent is away."""
