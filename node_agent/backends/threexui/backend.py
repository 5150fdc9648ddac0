"""The 3X-UI adapter: the VLESS users of one inbound of a 3X-UI panel are the desired clients.

**Which clients are ours.** A client of the inbound whose email starts with ``email_prefix``
(default ``vpnbot-``) belongs to this backend: it is created, changed and deleted to match the
desired state, and edits made to it in the panel are reverted. Every other client of the
inbound (made by hand) is left alone; a hand-made client holding a UUID we must serve is a
conflict the apply refuses before changing anything. A client's panel email is
``email_prefix + VlessUser.email`` (``+ client id`` when the email is empty), so it is stable
for the client and unique panel-wide, which 3X-UI requires.

**Changes.** ``apply`` reads the inbound and repairs every difference (missing, extra, or a
changed UUID, flow or enable flag). ``apply_changes`` sends only the delta, judged against
what the backend last saw in the panel. Deletions that free a UUID or an email another client
needs go first (Xray keys users by UUID); everything else is added before it is deleted, so
the older panels' rule "an inbound keeps at least one client" rarely bites. When it does, the
client is switched off instead (``enable: false``: Xray drops it) and deleted by a later apply.
Our record of the panel changes only as each call succeeds: after a failure it says exactly
what landed, and the next full apply finishes the job.

**Usage.** The panel's per-client ``up``/``down`` (client to server / server to client, so
``rx``/``tx`` from the server's side) count from the client's creation and survive panel and
Xray restarts. They fall back to zero only when someone resets them in the panel or the client
is re-created, which is per client: the ledger counts a decreasing counter as a restart of
that client's counters. The epoch names the inbound and never changes on its own, because a
backend-wide epoch change would make the ledger count every other client's whole total again.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import structlog

from node_agent.backends.base import (
    ApplyReport,
    BackendStatus,
    Counters,
    Health,
    PublicParams,
    RealityPublicParams,
    UsageSample,
)
from node_agent.backends.threexui.api import (
    ClientsApi,
    InboundsApi,
    LastClientRefused,
    PanelApi,
    detect,
)
from node_agent.backends.threexui.inbound import (
    VISION,
    InboundView,
    client_object,
    flow_capable,
    forbidden_email_char,
    reality_params,
)
from node_agent.backends.threexui.session import PanelError, RouteMissing, open_session
from node_agent.config import ThreeXuiConfig
from node_agent.errors import BackendError, InvalidStateError
from node_agent.model import Client, VlessUser, validate_client_ids

log = structlog.get_logger("node_agent.threexui")

FLOWS = frozenset({"", VISION, "xtls-rprx-vision-udp443"})


@dataclass(frozen=True, slots=True)
class Held:
    """One of our clients as the panel holds it; ``client_id`` empty when not known yet."""

    client_id: str
    uuid: str
    flow: str
    enable: bool = True


@dataclass(slots=True)
class _Plan:
    first_removes: list[str] = field(default_factory=list)
    adds: list[tuple[str, Client]] = field(default_factory=list)
    updates: list[tuple[str, Client]] = field(default_factory=list)
    removes: list[str] = field(default_factory=list)


class ThreeXuiBackend:
    kind = "threexui"

    def __init__(self, name: str, spec: ThreeXuiConfig, state_dir: Path) -> None:
        self.name = name
        self.spec = spec
        self.prefix = spec.email_prefix
        self.inbound_id = spec.inbound_id
        self.epoch = f"3x-ui-inbound-{spec.inbound_id}"
        self.session = open_session(name, spec)
        self._api: PanelApi | None = None
        self._panel: dict[str, Held] = {}  # email -> our client as last seen/changed there
        self._desired: dict[str, Client] = {}
        self._params: RealityPublicParams | None = None
        self._flow_ok = True
        self._seen = False
        self._log = log.bind(backend=name, inbound=spec.inbound_id)

    @property
    def generation(self) -> str | None:
        return None if self._api is None else self._api.generation

    # --- validation ---------------------------------------------------------------------------

    def email_of(self, client: Client) -> str:
        spec = client.spec
        assert isinstance(spec, VlessUser)
        return self.prefix + (spec.email or client.id)

    def validate(self, clients: Sequence[Client]) -> None:
        validate_client_ids(self.name, clients)
        emails: dict[str, str] = {}
        uuids: dict[str, str] = {}
        for client in clients:
            spec = client.spec
            where = f"backend {self.name!r}: client {client.id!r}"
            if not isinstance(spec, VlessUser):
                raise InvalidStateError(f"{where}: a 3x-ui backend serves VLESS users only")
            try:
                canonical = str(uuid.UUID(spec.uuid))
            except ValueError:
                raise InvalidStateError(f"{where}: {spec.uuid!r} is not a UUID") from None
            if canonical != spec.uuid:
                raise InvalidStateError(f"{where}: write the UUID as {canonical}")
            if spec.flow not in FLOWS:
                raise InvalidStateError(
                    f"{where}: flow {spec.flow!r} is not one of {sorted(FLOWS)}"
                )
            email = self.email_of(client)
            bad = forbidden_email_char(email)
            if bad is not None:
                raise InvalidStateError(
                    f"{where}: the panel email {email!r} may not contain {bad!r}"
                )
            other = emails.setdefault(email.lower(), client.id)  # the panel ignores case
            if other != client.id:
                raise InvalidStateError(f"{where}: panel email {email!r} is also {other!r}'s")
            other = uuids.setdefault(spec.uuid, client.id)
            if other != client.id:
                raise InvalidStateError(f"{where}: UUID {spec.uuid} is also {other!r}'s")

    def validate_changes(self, upserts: Sequence[Client], removals: Sequence[str]) -> None:
        validate_client_ids(self.name, upserts)
        self.validate(self._merged(upserts, removals))

    def _merged(self, upserts: Sequence[Client], removals: Sequence[str]) -> list[Client]:
        gone = set(removals)
        merged = {i: c for i, c in self._desired.items() if i not in gone}
        merged.update((c.id, c) for c in upserts)
        return list(merged.values())

    # --- the panel ------------------------------------------------------------------------

    async def _ready(self) -> PanelApi:
        if self._api is None:
            if self.spec.api == "inbounds":
                self._api = InboundsApi(self.session, self.inbound_id)
            elif self.spec.api == "clients":
                self._api = ClientsApi(self.session, self.inbound_id)
            else:
                self._api = await detect(self.session, self.inbound_id)
            self._log.info("threexui_api_chosen", generation=self._api.generation)
        return self._api

    def _failed(self, exc: PanelError) -> BackendError:
        if isinstance(exc, RouteMissing) and self.spec.api == "auto":
            self._api = None  # the panel was upgraded or replaced: probe again next time
        return BackendError(f"{self.name}: {exc}")

    def _observe(self, view: InboundView) -> None:
        if view.protocol != "vless":
            raise BackendError(
                f"{self.name}: inbound {self.inbound_id} is a {view.protocol or 'protocol-less'} "
                "inbound; this backend manages the users of a VLESS inbound"
            )
        self._params = reality_params(view)
        self._flow_ok = flow_capable(view)
        self._seen = True

    def _ours(self, view: InboundView) -> dict[str, dict[str, Any]]:
        return {
            c["email"]: c
            for c in view.clients
            if isinstance(c.get("email"), str) and c["email"].startswith(self.prefix)
        }

    def _flow(self, spec: VlessUser) -> str:
        return spec.flow if self._flow_ok else ""

    # --- lifecycle ------------------------------------------------------------------------

    async def start(self) -> None:
        """Log in, pick the API generation and check the inbound (once; apply reads it anyway)."""
        try:
            api = await self._ready()
            if not self._seen:
                self._observe(await api.inbound())
        except PanelError as exc:
            raise self._failed(exc) from None

    async def close(self) -> None:
        """Drop the HTTP session; the panel and its clients keep running."""
        await self.session.close()

    # --- changes --------------------------------------------------------------------------

    async def apply(self, clients: Sequence[Client]) -> ApplyReport:
        wanted = {self.email_of(c): c for c in clients}
        try:
            api = await self._ready()
            view = await api.inbound()
            self._observe(view)
            self._adopt(view, wanted)
            plan = self._plan(wanted, {e for e in self._panel if e not in wanted})
            return await self._execute(api, plan)
        except PanelError as exc:
            raise self._failed(exc) from None
        finally:
            self._desired = {c.id: c for c in clients}

    def _adopt(self, view: InboundView, wanted: dict[str, Client]) -> None:
        """Our record becomes what the panel holds, keeping the owners we know; refuse a
        hand-made client that holds a UUID one of ours needs, before changing anything."""
        wanted_uuids = {c.spec.uuid: e for e, c in wanted.items() if isinstance(c.spec, VlessUser)}
        clashes = sorted(
            f"{c.get('email')!r} holds the UUID of {wanted_uuids[c['id']]!r}"
            for c in view.clients
            if c.get("id") in wanted_uuids
            and not (isinstance(c.get("email"), str) and c["email"].startswith(self.prefix))
        )
        if clashes:
            raise BackendError(
                f"{self.name}: clients made by hand in inbound {self.inbound_id} clash with "
                f"ours ({'; '.join(clashes)}); change or delete them in the panel"
            )
        held: dict[str, Held] = {}
        for email, obj in self._ours(view).items():
            known = self._panel.get(email)
            owner = known.client_id if known is not None else ""
            if not owner and email in wanted:
                owner = wanted[email].id  # after a restart: the email says whose it is
            held[email] = Held(
                owner,
                str(obj.get("id") or ""),
                str(obj.get("flow") or ""),
                obj.get("enable") is not False,
            )
        self._panel = held

    async def apply_changes(
        self, upserts: Sequence[Client], removals: Sequence[str]
    ) -> ApplyReport:
        owner_email = {h.client_id: e for e, h in self._panel.items() if h.client_id}
        upsert_ids = {c.id for c in upserts}
        wanted = {self.email_of(c): c for c in upserts}
        gone = {owner_email[i] for i in removals if i in owner_email and i not in upsert_ids}
        # A client whose email changed leaves its old panel client (and counters) behind.
        gone |= {
            owner_email[c.id]
            for c in upserts
            if c.id in owner_email and owner_email[c.id] != self.email_of(c)
        }
        try:
            api = await self._ready()
            return await self._execute(api, self._plan(wanted, gone - wanted.keys()))
        except PanelError as exc:
            raise self._failed(exc) from None
        finally:
            self._desired = {c.id: c for c in self._merged(upserts, removals)}

    def _plan(self, wanted: dict[str, Client], removals: set[str]) -> _Plan:
        plan = _Plan()
        removes = set(removals)
        for email, client in wanted.items():
            spec = client.spec
            assert isinstance(spec, VlessUser)
            held = self._panel.get(email)
            if held is not None and held.client_id and held.client_id != client.id:
                # The email passes to another client; the counters stay with the old one.
                removes.add(email)
                held = None
            if held is None:
                plan.adds.append((email, client))
            elif (held.uuid, held.flow, held.enable) != (spec.uuid, self._flow(spec), True):
                plan.updates.append((email, client))
        needed = {e.lower() for e, _ in plan.adds} | {
            c.spec.uuid for _, c in [*plan.adds, *plan.updates] if isinstance(c.spec, VlessUser)
        }
        for email in sorted(removes):
            if email.lower() in needed or self._panel[email].uuid in needed:
                plan.first_removes.append(email)
            else:
                plan.removes.append(email)
        return plan

    async def _execute(self, api: PanelApi, plan: _Plan) -> ApplyReport:
        reset: set[str] = set()
        removed = 0

        async def remove(email: str) -> None:
            nonlocal removed
            held = self._panel[email]
            try:
                await api.delete_client(held.uuid, email)
                if held.client_id:
                    reset.add(held.client_id)
                removed += 1
            except LastClientRefused:
                # Older panels keep an inbound's last client: switch it off (Xray drops it).
                # Its counters stay, so it is no reset; a later apply deletes it.
                if held.enable:
                    await api.update_client(
                        held.uuid, email, client_object(email, held.uuid, held.flow, False)
                    )
                    removed += 1
                    self._log.warning("threexui_last_client_disabled")
            del self._panel[email]

        for email in plan.first_removes:
            await remove(email)
        for start in range(0, len(plan.adds), api.add_batch):
            batch = plan.adds[start : start + api.add_batch]
            await api.add_clients([self._object_for(e, c) for e, c in batch])
            for email, client in batch:
                self._panel[email] = self._held_for(client)
                reset.add(client.id)
        for email, client in plan.updates:
            await api.update_client(self._panel[email].uuid, email, self._object_for(email, client))
            self._panel[email] = self._held_for(client)
        for email in plan.removes:
            await remove(email)
        return ApplyReport(len(plan.adds), len(plan.updates), removed, frozenset(reset))

    def _object_for(self, email: str, client: Client) -> dict[str, Any]:
        spec = client.spec
        assert isinstance(spec, VlessUser)
        return client_object(email, spec.uuid, self._flow(spec))

    def _held_for(self, client: Client) -> Held:
        spec = client.spec
        assert isinstance(spec, VlessUser)
        return Held(client.id, spec.uuid, self._flow(spec))

    # --- reading --------------------------------------------------------------------------

    async def usage(self) -> UsageSample:
        try:
            traffic = await (await self._ready()).traffic()
        except PanelError as exc:
            raise self._failed(exc) from None
        counters = {
            held.client_id: Counters(*traffic[email])
            for email, held in self._panel.items()
            if held.client_id and email in traffic
        }
        return UsageSample(self.epoch, counters)

    async def status(self) -> BackendStatus:
        try:
            api = await self._ready()
            view = await api.inbound()
            online = await api.onlines()
            self._observe(view)
        except PanelError as exc:
            self._failed(exc)  # a vanished route makes the next call probe again
            return BackendStatus(Health.DOWN, str(exc))
        except BackendError as exc:
            return BackendStatus(Health.DOWN, str(exc))
        ours = self._ours(view)
        if not view.enable:
            return BackendStatus(
                Health.DOWN, f"inbound {self.inbound_id} is disabled in the panel", len(ours)
            )
        return BackendStatus(Health.OK, "", len(ours), len(online & ours.keys()))

    def public_params(self) -> PublicParams:
        """The Reality parameters of the inbound as last read; None when it is not Reality."""
        return self._params
