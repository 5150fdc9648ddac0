"""VLESS users of one inbound: validation that stays fast at 10k users, and the email each
user has in the core.

**The core email.** Xray keys a user by its email: ``RemoveUserOperation`` names it and the
per-user traffic counters are ``user>>>EMAIL>>>traffic>>>uplink|downlink``. The email we give
the core is ``LABEL.DIGEST``:

* ``LABEL`` is ``VlessUser.email`` (what the controller calls the user, e.g. ``config-12``),
  or, when that is empty, the client id itself when it is a plain name (a UUID is), else
  ``client``;
* ``DIGEST`` is 12 hex digits of SHA-256 over (client id, uuid, flow).

Why not the bare email: the core keeps a counter for as long as it runs, also after the user
is removed, and a re-issued config keeps its email but gets a new client id. With the bare
email the new client would inherit the old client's counter and the ledger would count that
traffic twice. With the digest, a new client id (or a new uuid or flow) is a new core user
with a fresh counter, a client removed and added back continues its own counter, and a
duplicate add ("already exists") really is the same user, so treating it as success is safe.
"""

from __future__ import annotations

import hashlib
import re
import uuid as uuidlib
from collections.abc import Sequence
from dataclasses import dataclass

from node_agent.errors import InvalidStateError
from node_agent.model import Client, VlessUser, validate_client_ids

VISION = "xtls-rprx-vision"
FLOWS = ("", VISION)
MAX_LABEL = 64
_LABEL = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@+-]{0,63}$")
_UUID = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")


@dataclass(frozen=True, slots=True)
class CoreUser:
    """A user as the core knows it (level 0 always)."""

    email: str
    uuid: str  # canonical lowercase
    flow: str


@dataclass(frozen=True, slots=True)
class VlessEntry:
    client_id: str
    label: str  # VlessUser.email as given ("" when none was)
    user: CoreUser


def core_email(client_id: str, label: str, uuid: str, flow: str) -> str:
    if not label:
        label = client_id if _LABEL.fullmatch(client_id) else "client"
    digest = hashlib.sha256(f"{client_id}\0{uuid}\0{flow}".encode()).hexdigest()[:12]
    return f"{label}.{digest}"


def uuid_key(value: str) -> bytes:
    """The bytes Xray and v2ray index users by: the UUID with bytes 6 and 7 zeroed
    (``vless.ProcessUUID``), so two UUIDs differing only there are the same user to them."""
    raw = bytearray(uuidlib.UUID(value).bytes)
    raw[6] = raw[7] = 0
    return bytes(raw)


class UserIndex:
    """The users of one inbound by client id, with who owns each UUID and label."""

    def __init__(self, backend: str, *, allow_vision: bool = True) -> None:
        self.backend = backend
        self.allow_vision = allow_vision
        self.entries: dict[str, VlessEntry] = {}  # by client id
        self.uuid_owner: dict[bytes, str] = {}
        self.label_owner: dict[str, str] = {}  # lowercased non-empty labels
        self.email_owner: dict[str, str] = {}  # core email -> client id

    # --- checks (no side effects) ------------------------------------------------------------

    def check_user(self, client: Client) -> VlessEntry:
        """Validate one client on its own; return its entry."""
        where = f"backend {self.backend!r}, client {client.id!r}"
        spec = client.spec
        if not isinstance(spec, VlessUser):
            raise InvalidStateError(f"{where}: an Xray backend takes VLESS users only")
        if not _UUID.fullmatch(spec.uuid):
            raise InvalidStateError(
                f"{where}: uuid {spec.uuid!r} is not a UUID (xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx)"
            )
        if spec.flow not in FLOWS:
            raise InvalidStateError(
                f"{where}: flow {spec.flow!r} is not supported (use '' or {VISION!r})"
            )
        if spec.flow == VISION and not self.allow_vision:
            raise InvalidStateError(
                f"{where}: flow {VISION!r} needs a Reality inbound; this one is plain VLESS"
            )
        if spec.email and not _LABEL.fullmatch(spec.email):
            raise InvalidStateError(
                f"{where}: email {spec.email!r} must be 1..{MAX_LABEL} letters, digits or "
                "'.', '_', '@', '+', '-', starting with a letter or digit"
            )
        canonical = spec.uuid.lower()
        email = core_email(client.id, spec.email, canonical, spec.flow)
        return VlessEntry(client.id, spec.email, CoreUser(email, canonical, spec.flow))

    def _clash(self, entry: VlessEntry, leaving: set[str]) -> str | None:
        """Who else already uses this entry's uuid, email or core email (None: nobody)."""
        owners = [
            (self.uuid_owner.get(uuid_key(entry.user.uuid)), f"uuid {entry.user.uuid}"),
            (self.email_owner.get(entry.user.email), f"core email {entry.user.email!r}"),
        ]
        if entry.label:
            owners.append((self.label_owner.get(entry.label.lower()), f"email {entry.label!r}"))
        for owner, what in owners:
            if owner is not None and owner != entry.client_id and owner not in leaving:
                return f"{what} is already used by client {owner!r}"
        return None

    def check_changes(self, upserts: Sequence[Client], removals: Sequence[str]) -> None:
        """Raise InvalidStateError unless the index with these changes stays consistent."""
        validate_client_ids(self.backend, upserts)
        leaving = set(removals) | {c.id for c in upserts}
        scratch = UserIndex(self.backend, allow_vision=self.allow_vision)
        for client in upserts:
            entry = self.check_user(client)
            problem = self._clash(entry, leaving)
            if problem is not None:
                raise InvalidStateError(
                    f"backend {self.backend!r}, client {client.id!r}: {problem}"
                )
            scratch._add(entry)  # catches clashes among the upserts

    # --- changes ---------------------------------------------------------------------------

    @classmethod
    def build(
        cls, backend: str, clients: Sequence[Client], *, allow_vision: bool = True
    ) -> UserIndex:
        """A validated index of ``clients``; raises InvalidStateError on any problem."""
        validate_client_ids(backend, clients)
        index = cls(backend, allow_vision=allow_vision)
        for client in clients:
            index._add(index.check_user(client))
        return index

    def apply_changes(self, upserts: Sequence[Client], removals: Sequence[str]) -> None:
        """Apply an already checked change."""
        for client_id in [*removals, *(c.id for c in upserts)]:
            self._remove(client_id)
        for client in upserts:
            self._add(self.check_user(client))

    def copy(self) -> UserIndex:
        other = UserIndex(self.backend, allow_vision=self.allow_vision)
        other.entries = dict(self.entries)
        other.uuid_owner = dict(self.uuid_owner)
        other.label_owner = dict(self.label_owner)
        other.email_owner = dict(self.email_owner)
        return other

    def users(self) -> dict[str, CoreUser]:
        """The core users by core email."""
        return {e.user.email: e.user for e in self.entries.values()}

    def _add(self, entry: VlessEntry) -> None:
        if entry.client_id in self.entries:
            raise InvalidStateError(
                f"backend {self.backend!r}: duplicate client id {entry.client_id!r}"
            )
        problem = self._clash(entry, set())
        if problem is not None:
            raise InvalidStateError(
                f"backend {self.backend!r}, client {entry.client_id!r}: {problem}"
            )
        self.entries[entry.client_id] = entry
        self.uuid_owner[uuid_key(entry.user.uuid)] = entry.client_id
        if entry.label:
            self.label_owner[entry.label.lower()] = entry.client_id
        self.email_owner[entry.user.email] = entry.client_id

    def _remove(self, client_id: str) -> None:
        entry = self.entries.pop(client_id, None)
        if entry is None:
            return
        del self.uuid_owner[uuid_key(entry.user.uuid)]
        if entry.label:
            del self.label_owner[entry.label.lower()]
        del self.email_owner[entry.user.email]
