"""The 3X-UI panel's HTTP API, both generations of its client endpoints.

Facts, read from the panel's source (github.com/MHSanaei/3x-ui; tags v2.0.0, v2.9.4, v3.0.2,
v3.1.0 and the main branch at 02002dc, Aug 2026). Paths are relative to the panel URL with its
web base path (``{base}``, e.g. ``https://host:2053/secret/``).

Envelope (``web/entity/entity.go`` ``Msg``; ``web/controller/util.go`` ``jsonMsgObj``): every
JSON answer is ``{"success": bool, "msg": str, "obj": any}`` with HTTP 200, also on failure
(``success: false`` and the reason in ``msg``, e.g. ``"Duplicate email: x"``).

Session (``web/controller/index.go``, ``web/controller/api.go`` ``checkAPIAuth``/``checkLogin``,
``web/session``, ``web/middleware/security.go`` ``CSRFMiddleware``): see ``session``. Cookie
``3x-ui`` with the base path as its path, max age = the panel's session timeout.

**Older generation** (every 2.x, and 3.0.x) — ``web/controller/inbound.go`` in v2.9.4/v3.0.2:

* ``GET  panel/api/inbounds/list``: every inbound of the user with ``clientStats``
  (``xray/client_traffic.go`` ``ClientTraffic``: ``id, inboundId, enable, email, up, down,
  allTime, expiryTime, total, reset, lastOnline``).
* ``GET  panel/api/inbounds/get/:id``: one inbound (``database/model/model.go`` ``Inbound``:
  ``id, port, protocol, enable, settings, streamSettings, ...``) where ``settings`` and
  ``streamSettings`` are JSON **strings**; ``settings.clients[]`` holds the clients
  (``model.Client``: ``id`` (the VLESS UUID), ``flow``, ``email``, ``enable``, ``limitIp``,
  ``totalGB``, ``expiryTime``, ``subId``, ``comment``, ``reset``, ...). No ``clientStats``.
* ``POST panel/api/inbounds/addClient`` body ``{"id": INBOUND, "settings":
  "{\\"clients\\": [...]}"}`` (JSON or form, ``c.ShouldBind``): appends all clients in one
  transaction; any email already used anywhere in the panel (case-insensitive) fails the
  whole call with ``Duplicate email: x``.
* ``POST panel/api/inbounds/updateClient/:uuid`` same body with one client: *replaces* the
  client whose ``id`` is ``:uuid`` (the traffic row follows an email change).
* ``POST panel/api/inbounds/:id/delClient/:uuid``: removes it and its traffic row; refuses
  with ``no client remained in Inbound`` when it is the inbound's last client and with
  ``Client Not Found In Inbound For ID: x`` when there is no such client.
* ``POST panel/api/inbounds/onlines``: emails online now (``obj`` may be null).
* also ``GET panel/api/inbounds/getClientTraffics/:email`` (one client's traffic).

**Newer generation** (3.1.0+, PR #4469 "multi inbound clients"; ``web/controller/client.go``,
``web/service/client_crud.go``, OpenAPI in ``docs/public/openapi.json``): clients are
panel-wide records keyed by email and attached to inbounds; the inbound-level client routes
above are gone (404). Inbound JSON now carries ``settings``/``streamSettings`` as nested
objects (``Inbound.MarshalJSON``); strings are still accepted on write.

* ``GET  panel/api/clients/list``: records (``id`` = record number, ``uuid``, ``email``,
  ``flow``, ``enable``, ...) with ``inboundIds`` and ``traffic`` (``{up, down, ...}``,
  absent when the client has no traffic row).
* ``POST panel/api/clients/add`` body ``{"client": {...model.Client}, "inboundIds": [N]}``:
  email required, no whitespace, ``/`` or ``\\``; ``email already in use: x`` when taken.
* ``POST panel/api/clients/update/:email`` body: the whole ``model.Client`` (the row is
  replaced, not patched).
* ``POST panel/api/clients/del/:email`` (``?keepTraffic=1`` keeps the traffic row; we do not
  send it): removes the client from every inbound; no last-client rule; ``client "x" not
  found in any inbound or client record`` when there is no such client.
* ``POST panel/api/clients/onlines``, ``GET panel/api/clients/traffic/:email``.

``api = "auto"`` probes ``GET panel/api/clients/list`` once per process (and again after a
route vanishes): a 404 after a fresh login means the older generation.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any, Protocol
from urllib.parse import quote

from node_agent.backends.threexui.inbound import InboundView, parse_inbound
from node_agent.backends.threexui.session import (
    PanelError,
    PanelRefused,
    PanelSession,
    RouteMissing,
)

API_INBOUNDS = "panel/api/inbounds/"
API_CLIENTS = "panel/api/clients/"


class LastClientRefused(PanelRefused):
    """The older generation never deletes an inbound's last client."""


def _counter(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0


def _emails(obj: Any) -> set[str]:
    return {e for e in obj or () if isinstance(e, str)} if isinstance(obj, list) else set()


def _path_part(text: str) -> str:
    return quote(text, safe="")


class PanelApi(Protocol):
    generation: str
    add_batch: int  # clients per add call; the backend records each call's clients as it lands

    async def inbound(self) -> InboundView: ...

    async def add_clients(self, clients: Sequence[dict[str, Any]]) -> None: ...

    async def update_client(self, uuid: str, email: str, client: dict[str, Any]) -> None: ...

    async def delete_client(self, uuid: str, email: str) -> None: ...

    async def traffic(self) -> dict[str, tuple[int, int]]: ...

    async def onlines(self) -> set[str]: ...


class _Common:
    def __init__(self, session: PanelSession, inbound_id: int) -> None:
        self.session = session
        self.inbound_id = inbound_id

    async def inbound(self) -> InboundView:
        what = f"read inbound {self.inbound_id}"
        try:
            obj = await self.session.call("GET", f"{API_INBOUNDS}get/{self.inbound_id}", what)
        except PanelRefused as exc:
            raise PanelError(f"{what}: no such inbound in the panel ({exc.msg})") from None
        return parse_inbound(obj, self.inbound_id, what)


class InboundsApi(_Common):
    """2.x and 3.0.x: clients live in the inbound's settings JSON."""

    generation = "inbounds"
    add_batch = 200  # one transaction per call: all or none of its clients

    def _body(self, clients: Sequence[dict[str, Any]]) -> dict[str, Any]:
        return {"id": self.inbound_id, "settings": json.dumps({"clients": list(clients)})}

    async def add_clients(self, clients: Sequence[dict[str, Any]]) -> None:
        if clients:
            what = f"add {len(clients)} client(s) to inbound {self.inbound_id}"
            await self.session.call(
                "POST", f"{API_INBOUNDS}addClient", what, json_body=self._body(clients)
            )

    async def update_client(self, uuid: str, email: str, client: dict[str, Any]) -> None:
        await self.session.call(
            "POST",
            f"{API_INBOUNDS}updateClient/{_path_part(uuid)}",
            f"update client {email}",
            json_body=self._body([client]),
        )

    async def delete_client(self, uuid: str, email: str) -> None:
        path = f"{API_INBOUNDS}{self.inbound_id}/delClient/{_path_part(uuid)}"
        try:
            await self.session.call("POST", path, f"delete client {email}")
        except PanelRefused as exc:
            if "no client remained" in exc.msg:
                raise LastClientRefused(f"delete client {email}", exc.msg) from None
            if "Client Not Found In Inbound" not in exc.msg:
                raise  # else: already gone, as wanted

    async def traffic(self) -> dict[str, tuple[int, int]]:
        what = "read client traffic"
        obj = await self.session.call("GET", f"{API_INBOUNDS}list", what)
        if not isinstance(obj, list):
            raise PanelError(f"{what}: the inbound list is not a list")
        for inbound in obj:
            if isinstance(inbound, dict) and inbound.get("id") == self.inbound_id:
                stats = inbound.get("clientStats") or []
                return {
                    s["email"]: (_counter(s.get("up")), _counter(s.get("down")))
                    for s in stats
                    if isinstance(s, dict) and isinstance(s.get("email"), str)
                }
        raise PanelError(f"{what}: inbound {self.inbound_id} is not in the panel's list")

    async def onlines(self) -> set[str]:
        return _emails(await self.session.call("POST", f"{API_INBOUNDS}onlines", "read onlines"))


class ClientsApi(_Common):
    """3.1+: clients are panel-wide records attached to inbounds, keyed by email."""

    generation = "clients"
    add_batch = 1

    async def add_clients(self, clients: Sequence[dict[str, Any]]) -> None:
        for client in clients:
            await self.session.call(
                "POST",
                f"{API_CLIENTS}add",
                f"add client {client['email']}",
                json_body={"client": client, "inboundIds": [self.inbound_id]},
            )

    async def update_client(self, uuid: str, email: str, client: dict[str, Any]) -> None:
        await self.session.call(
            "POST",
            f"{API_CLIENTS}update/{_path_part(email)}",
            f"update client {email}",
            json_body=client,
        )

    async def delete_client(self, uuid: str, email: str) -> None:
        try:
            await self.session.call(
                "POST", f"{API_CLIENTS}del/{_path_part(email)}", f"delete client {email}"
            )
        except PanelRefused as exc:
            if "not found in any inbound or client record" not in exc.msg:
                raise  # else: already gone, as wanted

    async def traffic(self) -> dict[str, tuple[int, int]]:
        what = "read client traffic"
        obj = await self.session.call("GET", f"{API_CLIENTS}list", what)
        if not isinstance(obj, list):
            raise PanelError(f"{what}: the client list is not a list")
        result: dict[str, tuple[int, int]] = {}
        for record in obj:
            if not isinstance(record, dict) or not isinstance(record.get("email"), str):
                continue
            traffic = record.get("traffic")
            if isinstance(traffic, dict):
                result[record["email"]] = (
                    _counter(traffic.get("up")),
                    _counter(traffic.get("down")),
                )
            else:
                result[record["email"]] = (0, 0)
        return result

    async def onlines(self) -> set[str]:
        return _emails(await self.session.call("POST", f"{API_CLIENTS}onlines", "read onlines"))


async def detect(session: PanelSession, inbound_id: int) -> PanelApi:
    """The newer generation when the panel has it, else the older one."""
    try:
        await session.call("GET", f"{API_CLIENTS}list", "probe the API generation")
    except RouteMissing:
        return InboundsApi(session, inbound_id)
    return ClientsApi(session, inbound_id)
