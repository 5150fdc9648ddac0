"""A local 3X-UI panel: a real HTTP server on loopback speaking one generation of the panel's API.

No 3X-UI panel can run here, so this one re-implements the documented behaviour the adapter
relies on (MHSanaei/3x-ui: ``web/controller/{index,api,inbound,client}.go``,
``web/service/{inbound,client_crud}.go``, ``web/session``, ``docs/public/openapi.json``):

* the base path, ``POST login`` (form or JSON; ``twoFactorCode`` when 2FA is on), the session
  cookie ``3x-ui``, and what a request without a valid session gets: 404 (2.9.x), 401 for
  ``X-Requested-With: XMLHttpRequest`` else 404 (3.x), or 401 JSON / 307 redirect (2.0-2.8);
* the CSRF token (3.x): ``GET csrf-token``, then ``X-CSRF-Token`` on the login and every POST
  (403 without it); Bearer API tokens (3.1+) skip both;
* ``"inbounds"``: ``panel/api/inbounds/{list,get/:id,addClient,updateClient/:uuid,
  :id/delClient/:uuid,getClientTraffics/:email,onlines}`` with ``settings`` and
  ``streamSettings`` as JSON strings, duplicate emails refused panel-wide, the last client
  of an inbound never deleted;
* ``"clients"``: ``panel/api/clients/{list,add,update/:email,del/:email,traffic/:email,
  onlines}`` plus ``inbounds/{list,get/:id}`` with nested JSON; the inbound-level client
  routes answer 404 as on 3.1+;
* the envelope ``{"success", "msg", "obj"}`` with HTTP 200 also for refusals.

Test controls: ``add_inbound``, ``add_hand_client``, ``add_traffic``, ``reset_traffic``,
``expire_sessions``, ``fail_next`` (a refusal, HTML, HTTP 500 or a slow answer), ``online``,
and ``requests``, the log of what arrived.
"""

from __future__ import annotations

import base64
import contextlib
import hmac
import itertools
import json
import secrets
import socket
import struct
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.cookies import SimpleCookie
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Literal
from urllib.parse import parse_qs, unquote, urlsplit

Generation = Literal["inbounds", "clients"]
AuthFailure = Literal["not_found", "unauthorized", "legacy"]
FailKind = Literal["refuse", "html", "status500", "slow"]

COOKIE = "3x-ui"
FORBIDDEN_EMAIL = set("/\\")


def totp_code(secret_b32: str, at: float) -> str:
    """RFC 6238 as gotp computes it (SHA-1, 6 digits, 30 s), written separately from the
    agent's own implementation on purpose."""
    key = base64.b32decode(secret_b32.upper() + "=" * (-len(secret_b32) % 8))
    mac = hmac.new(key, struct.pack(">Q", int(at) // 30), "sha1").digest()
    start = mac[19] & 15
    (value,) = struct.unpack(">I", mac[start : start + 4])
    return str((value & 0x7FFFFFFF) % 10**6).zfill(6)


def reality_stream(
    public_key: str,
    *,
    short_ids: list[str] | None = None,
    server_names: list[str] | None = None,
    fingerprint: str = "chrome",
    network: str = "tcp",
) -> dict[str, Any]:
    """streamSettings as the panel's UI saves a VLESS Reality inbound."""
    return {
        "network": network,
        "security": "reality",
        "externalProxy": [],
        "realitySettings": {
            "show": False,
            "xver": 0,
            "target": "www.example.com:443",
            "serverNames": server_names or ["www.example.com", "example.com"],
            "privateKey": "private-key-never-leaves-the-panel",
            "minClientVer": "",
            "maxClientVer": "",
            "maxTimediff": 0,
            "shortIds": short_ids if short_ids is not None else ["6ba85179e30d4fc2", "a1"],
            "mldsa65Seed": "",
            "settings": {
                "publicKey": public_key,
                "fingerprint": fingerprint,
                "serverName": "",
                "spiderX": "/",
                "mldsa65Verify": "",
            },
        },
        "tcpSettings": {"acceptProxyProtocol": False, "header": {"type": "none"}},
    }


class Refusal(Exception):
    """A ``{"success": false}`` answer with this message."""


@dataclass
class _Session:
    created: float = field(default_factory=time.monotonic)
    user: bool = False
    csrf: str | None = None


@dataclass
class _Failure:
    kind: FailKind
    path: str | None
    count: int
    delay: float


@dataclass
class Reply:
    status: int
    body: bytes = b""
    content_type: str = "application/json; charset=utf-8"
    headers: dict[str, str] = field(default_factory=dict)


def _envelope(obj: Any = None, msg: str = "", success: bool = True) -> Reply:
    return Reply(200, json.dumps({"success": success, "msg": msg, "obj": obj}).encode())


class FakePanel:
    def __init__(
        self,
        generation: Generation = "inbounds",
        *,
        base_path: str = "/x7Kq2p/",
        username: str = "admin",
        password: str = "s3cret-pa55",
        totp_secret: str | None = None,
        api_token: str | None = None,
        csrf: bool | None = None,
        auth_failure: AuthFailure | None = None,
        session_max_age: float | None = None,
    ) -> None:
        self.generation = generation
        self.base_path = base_path
        self.username = username
        self.password = password
        self.totp_secret = totp_secret
        self.api_token = api_token
        self.csrf = generation == "clients" if csrf is None else csrf
        self.auth_failure: AuthFailure = auth_failure or (
            "unauthorized" if generation == "clients" else "not_found"
        )
        self.session_max_age = session_max_age
        self.inbounds: dict[int, dict[str, Any]] = {}
        self.traffics: dict[str, dict[str, Any]] = {}
        self.records: dict[str, int] = {}  # email -> client record number (3.1+)
        self.online: set[str] = set()
        self.requests: list[tuple[str, str]] = []
        self.logins = 0
        self._sessions: dict[str, _Session] = {}
        self._failures: list[_Failure] = []
        self._ids = itertools.count(1)
        self._lock = threading.RLock()
        self._stopping = threading.Event()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._connections: set[socket.socket] = set()

    # --- server -----------------------------------------------------------------------------

    @property
    def url(self) -> str:
        assert self._server is not None
        return f"http://127.0.0.1:{self._server.server_address[1]}{self.base_path}"

    def start(self) -> FakePanel:
        panel = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True  # headers and body go out as two writes

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def setup(self) -> None:
                super().setup()
                with panel._lock:
                    panel._connections.add(self.connection)

            def finish(self) -> None:
                with panel._lock:
                    panel._connections.discard(self.connection)
                with contextlib.suppress(OSError):
                    super().finish()

            def _serve(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                reply = panel.handle(self.command, self.path, dict(self.headers.items()), body)
                with contextlib.suppress(OSError):  # the client may have given up (timeouts)
                    self.send_response(reply.status)
                    self.send_header("Content-Type", reply.content_type)
                    self.send_header("Content-Length", str(len(reply.body)))
                    for name, value in reply.headers.items():
                        self.send_header(name, value)
                    self.end_headers()
                    self.wfile.write(reply.body)

            do_GET = _serve
            do_POST = _serve
            do_DELETE = _serve

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Like a panel process that exits: the port closes and so do open connections."""
        self._stopping.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        with self._lock:
            connections, self._connections = set(self._connections), set()
        for connection in connections:
            with contextlib.suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> FakePanel:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # --- test controls ----------------------------------------------------------------------

    def add_inbound(
        self,
        *,
        port: int = 443,
        protocol: str = "vless",
        stream: dict[str, Any] | None = None,
        clients: list[dict[str, Any]] | None = None,
        enable: bool = True,
    ) -> int:
        with self._lock:
            inbound_id = len(self.inbounds) + 1
            self.inbounds[inbound_id] = {
                "id": inbound_id,
                "up": 0,
                "down": 0,
                "total": 0,
                "allTime": 0,
                "remark": f"inbound {inbound_id}",
                "enable": enable,
                "expiryTime": 0,
                "trafficReset": "never",
                "lastTrafficResetTime": 0,
                "listen": "",
                "port": port,
                "protocol": protocol,
                "settings": {"clients": [], "decryption": "none", "fallbacks": []},
                "streamSettings": stream if stream is not None else {"network": "tcp"},
                "tag": f"inbound-{port}",
                "sniffing": {"enabled": False, "destOverride": ["http", "tls"]},
            }
            for client in clients or ():
                self._attach(inbound_id, dict(client))
            return inbound_id

    def add_hand_client(
        self, inbound_id: int, email: str, client_uuid: str, flow: str = ""
    ) -> None:
        """A client the operator made in the panel's UI."""
        with self._lock:
            self._attach(
                inbound_id,
                {
                    "id": client_uuid,
                    "flow": flow,
                    "email": email,
                    "limitIp": 0,
                    "totalGB": 0,
                    "expiryTime": 0,
                    "enable": True,
                    "tgId": 0,
                    "subId": secrets.token_hex(8),
                    "comment": "",
                    "reset": 0,
                },
            )

    def edit_client(self, inbound_id: int, email: str, **changes: Any) -> None:
        """What an operator's edit in the UI leaves in the inbound's settings."""
        with self._lock:
            for client in self.inbounds[inbound_id]["settings"]["clients"]:
                if client["email"] == email:
                    client.update(changes)
                    return
            raise KeyError(email)

    def drop_client(self, inbound_id: int, email: str) -> None:
        """A client deleted in the UI (with its traffic row)."""
        with self._lock:
            settings = self.inbounds[inbound_id]["settings"]
            settings["clients"] = [c for c in settings["clients"] if c["email"] != email]
            self.traffics.pop(email, None)
            self.records.pop(email, None)

    def client(self, inbound_id: int, email: str) -> dict[str, Any]:
        return next(c for c in self.clients(inbound_id) if c["email"] == email)

    def clients(self, inbound_id: int) -> list[dict[str, Any]]:
        with self._lock:
            return json.loads(json.dumps(self.inbounds[inbound_id]["settings"]["clients"]))

    def emails(self, inbound_id: int) -> set[str]:
        return {c["email"] for c in self.clients(inbound_id)}

    def add_traffic(self, email: str, up: int, down: int) -> None:
        with self._lock:
            row = self.traffics[email]
            row["up"] += up
            row["down"] += down
            row["allTime"] += up + down
            self.online.add(email)

    def reset_traffic(self, email: str) -> None:
        """What the panel's "reset traffic" button does: the counters go back to zero."""
        with self._lock:
            self.traffics[email]["up"] = self.traffics[email]["down"] = 0

    def expire_sessions(self) -> None:
        with self._lock:
            self._sessions.clear()

    def fail_next(
        self,
        kind: FailKind = "refuse",
        *,
        path: str | None = None,
        count: int = 1,
        delay: float = 0,
    ) -> None:
        """The next ``count`` API calls (whose path contains ``path``) fail as ``kind``.
        ``slow`` answers after ``delay`` seconds and still does the work, like a slow panel."""
        with self._lock:
            self._failures.append(_Failure(kind, path, count, delay))

    def calls(self, fragment: str) -> int:
        with self._lock:
            return sum(1 for _, path in self.requests if fragment in path)

    # --- state helpers ----------------------------------------------------------------------

    def _attach(self, inbound_id: int, client: dict[str, Any]) -> None:
        self.inbounds[inbound_id]["settings"]["clients"].append(client)
        email = client.get("email") or ""
        if email and email not in self.traffics:
            self.traffics[email] = {
                "id": next(self._ids),
                "inboundId": inbound_id,
                "enable": client.get("enable", True),
                "email": email,
                "up": 0,
                "down": 0,
                "allTime": 0,
                "expiryTime": client.get("expiryTime", 0),
                "total": client.get("totalGB", 0),
                "reset": client.get("reset", 0),
                "lastOnline": 0,
            }
        if email:
            self.records.setdefault(email, next(self._ids))

    def _all_emails(self) -> list[str]:
        return [
            c.get("email", "").lower()
            for ib in self.inbounds.values()
            for c in ib["settings"]["clients"]
            if c.get("email")
        ]

    def _inbound(self, inbound_id: Any) -> dict[str, Any]:
        try:
            return self.inbounds[int(inbound_id)]
        except (KeyError, TypeError, ValueError):
            raise Refusal("Something went wrong (record not found)") from None

    def _inbound_json(self, inbound: dict[str, Any], stats: bool) -> dict[str, Any]:
        out = dict(inbound)
        if self.generation == "inbounds":  # Go strings holding JSON, MarshalIndent style
            for key in ("settings", "streamSettings", "sniffing"):
                out[key] = json.dumps(inbound[key], indent=2)
        out["clientStats"] = (
            [dict(t) for t in self.traffics.values() if t["inboundId"] == inbound["id"]]
            if stats
            else None
        )
        if stats:
            by_email = {c["email"]: c for c in inbound["settings"]["clients"]}
            for row in out["clientStats"]:
                row["uuid"] = by_email.get(row["email"], {}).get("id", "")
        return json.loads(json.dumps(out))

    def _rename_traffic(self, old: str, client: dict[str, Any]) -> None:
        row = self.traffics.pop(old, None)
        if row is not None:
            row.update(
                email=client["email"],
                enable=client.get("enable", True),
                total=client.get("totalGB", 0),
                expiryTime=client.get("expiryTime", 0),
            )
            self.traffics[client["email"]] = row
        if old in self.records:
            self.records[client["email"]] = self.records.pop(old)

    # --- request handling -------------------------------------------------------------------

    def handle(self, method: str, target: str, headers: dict[str, str], body: bytes) -> Reply:
        parts = urlsplit(target)
        path = unquote(parts.path)
        query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
        headers = {k.lower(): v for k, v in headers.items()}
        if not path.startswith(self.base_path):
            return Reply(404, b"404 page not found", "text/plain")
        rel = path[len(self.base_path) :]
        with self._lock:
            self.requests.append((method, rel))
            failure = self._take_failure(rel)
        if failure is not None and failure.kind != "slow":
            return self._failure_reply(failure.kind)
        if failure is not None:
            self._stopping.wait(failure.delay)
        with self._lock:
            session_id, session, fresh = self._session(headers)
            try:
                reply = self._route(method, rel, query, headers, body, session)
            except Refusal as exc:
                reply = _envelope(None, str(exc), success=False)
            if fresh and (session.user or session.csrf):
                # Like gin-contrib/sessions: a new session is kept (and its cookie sent) once
                # something was stored in it.
                self._sessions[session_id] = session
                cookie = f"{COOKIE}={session_id}; Path={self.base_path}; HttpOnly; SameSite=Lax"
                if self.session_max_age is not None:
                    cookie += f"; Max-Age={int(self.session_max_age)}"
                reply.headers["Set-Cookie"] = cookie
            return reply

    def _take_failure(self, rel: str) -> _Failure | None:
        for failure in self._failures:
            if failure.path is None or failure.path in rel:
                failure.count -= 1
                if failure.count <= 0:
                    self._failures.remove(failure)
                return failure
        return None

    @staticmethod
    def _failure_reply(kind: FailKind) -> Reply:
        if kind == "refuse":
            return _envelope(None, "Something went wrong (injected failure)", success=False)
        if kind == "html":
            return Reply(200, b"<!DOCTYPE html><html><body>login</body></html>", "text/html")
        return Reply(500, b"", "text/plain")

    def _session(self, headers: dict[str, str]) -> tuple[str, _Session, bool]:
        cookie = SimpleCookie(headers.get("cookie", ""))
        session_id = cookie[COOKIE].value if COOKIE in cookie else ""
        session = self._sessions.get(session_id)
        max_age = self.session_max_age
        if (
            session is not None
            and max_age is not None
            and time.monotonic() - session.created > max_age
        ):
            del self._sessions[session_id]
            session = None
        if session is None:
            return secrets.token_urlsafe(24), _Session(), True
        return session_id, session, False

    def _route(
        self,
        method: str,
        rel: str,
        query: dict[str, str],
        headers: dict[str, str],
        body: bytes,
        session: _Session,
    ) -> Reply:
        return _Routes(self).route(method, rel, query, headers, body, session)

    # Routes are matched on (method, pattern) with ':name' segments.
    def _match(
        self, method: str, rel: str, routes: dict[tuple[str, str], Callable[..., Reply]]
    ) -> tuple[Callable[..., Reply], dict[str, str]] | None:
        got = rel.split("/")
        for (route_method, pattern), handler in routes.items():
            want = pattern.split("/")
            if route_method != method or len(want) != len(got):
                continue
            params: dict[str, str] = {}
            for w, g in zip(want, got, strict=True):
                if w.startswith(":"):
                    params[w[1:]] = g
                elif w != g:
                    break
            else:
                return handler, params
        return None


def _json_body(body: bytes, headers: dict[str, str]) -> Any:
    kind = headers.get("content-type", "")
    if "application/json" in kind:
        try:
            return json.loads(body or b"null")
        except ValueError:
            raise Refusal("Something went wrong (invalid character in JSON body)") from None
    if "application/x-www-form-urlencoded" in kind:
        return {k: v[-1] for k, v in parse_qs(body.decode()).items()}
    raise Refusal("Something went wrong (unsupported content type)")


class _Routes:
    """The routing and handlers, kept apart from the state helpers for readability."""

    def __init__(self, panel: FakePanel) -> None:
        self.p = panel

    def route(
        self,
        method: str,
        rel: str,
        query: dict[str, str],
        headers: dict[str, str],
        body: bytes,
        session: _Session,
    ) -> Reply:
        p = self.p
        if method == "GET" and rel == "csrf-token":
            if not p.csrf:
                return Reply(404, b"404 page not found", "text/plain")
            if session.csrf is None:
                session.csrf = secrets.token_urlsafe(32)
            return _envelope(session.csrf)
        if method == "POST" and rel == "login":
            if p.csrf and not self._csrf_ok(session, headers):
                return Reply(403, b"", "text/plain")
            return self.login(_json_body(body, headers), session)
        if not rel.startswith("panel/api/"):
            return Reply(404, b"404 page not found", "text/plain")
        bearer = headers.get("authorization", "")
        by_token = (
            p.generation == "clients"
            and p.api_token is not None
            and bearer == f"Bearer {p.api_token}"
        )
        if not by_token and not session.user:
            return self._not_logged_in(headers)
        if method == "POST" and p.csrf and not by_token and not self._csrf_ok(session, headers):
            return Reply(403, b"", "text/plain")
        found = p._match(method, rel[len("panel/api/") :], self.routes())
        if found is None:
            return Reply(404, b"404 page not found", "text/plain")
        handler, params = found
        return handler(params=params, query=query, headers=headers, body=body)

    @staticmethod
    def _csrf_ok(session: _Session, headers: dict[str, str]) -> bool:
        return session.csrf is not None and headers.get("x-csrf-token") == session.csrf

    def _not_logged_in(self, headers: dict[str, str]) -> Reply:
        xhr = headers.get("x-requested-with") == "XMLHttpRequest"
        style = self.p.auth_failure
        if style == "not_found" or (style == "unauthorized" and not xhr):
            return Reply(404, b"404 page not found", "text/plain")
        if style == "unauthorized":
            return Reply(401, b"", "text/plain")
        if xhr:  # 2.0-2.8 checkLogin
            reply = _envelope(None, "The login time limit has expired", success=False)
            reply.status = 401
            return reply
        return Reply(307, b"", "text/html", {"Location": self.p.base_path})

    def login(self, form: Any, session: _Session) -> Reply:
        p = self.p
        if not isinstance(form, dict) or not form.get("username") or not form.get("password"):
            return _envelope(None, "Invalid form data", success=False)
        ok = form.get("username") == p.username and form.get("password") == p.password
        if ok and p.totp_secret is not None:
            ok = form.get("twoFactorCode") == totp_code(p.totp_secret, time.time())
        if not ok:
            return _envelope(None, "Wrong username or password", success=False)
        session.user = True
        p.logins += 1
        return _envelope(None, "Logged in successfully")

    def routes(self) -> dict[tuple[str, str], Callable[..., Reply]]:
        common: dict[tuple[str, str], Callable[..., Reply]] = {
            ("GET", "inbounds/list"): self.list_inbounds,
            ("GET", "inbounds/get/:id"): self.get_inbound,
        }
        if self.p.generation == "inbounds":
            return common | {
                ("GET", "inbounds/getClientTraffics/:email"): self.client_traffic,
                ("POST", "inbounds/addClient"): self.add_client,
                ("POST", "inbounds/updateClient/:clientId"): self.update_client,
                ("POST", "inbounds/:id/delClient/:clientId"): self.del_client,
                ("POST", "inbounds/onlines"): self.onlines,
            }
        return common | {
            ("GET", "clients/list"): self.list_clients,
            ("GET", "clients/traffic/:email"): self.client_traffic,
            ("POST", "clients/add"): self.create,
            ("POST", "clients/update/:email"): self.update,
            ("POST", "clients/del/:email"): self.delete,
            ("POST", "clients/onlines"): self.onlines,
        }

    # --- shared -----------------------------------------------------------------------------

    def list_inbounds(self, **_: Any) -> Reply:
        return _envelope([self.p._inbound_json(ib, True) for ib in self.p.inbounds.values()])

    def get_inbound(self, params: dict[str, str], **_: Any) -> Reply:
        inbound = self.p._inbound(params["id"])
        return _envelope(self.p._inbound_json(inbound, self.p.generation == "clients"))

    def client_traffic(self, params: dict[str, str], **_: Any) -> Reply:
        row = self.p.traffics.get(params["email"])
        return _envelope(dict(row) if row else None)

    def onlines(self, **_: Any) -> Reply:
        return _envelope(sorted(self.p.online) or None)

    # --- 2.x / 3.0: clients inside the inbound ----------------------------------------------

    def _payload(self, body: bytes, headers: dict[str, str]) -> tuple[dict[str, Any], list[Any]]:
        data = _json_body(body, headers)
        if not isinstance(data, dict):
            raise Refusal("Something went wrong (invalid request)")
        settings = data.get("settings")
        if not isinstance(settings, str):  # model.Inbound.Settings is a Go string here
            raise Refusal(
                "json: cannot unmarshal object into Go struct field Inbound.settings of type string"
            )
        try:
            clients = json.loads(settings).get("clients")
        except (ValueError, AttributeError):
            raise Refusal("Something went wrong (invalid settings)") from None
        if not isinstance(clients, list) or not clients:
            raise Refusal("Something went wrong (invalid settings)")
        return self.p._inbound(data.get("id")), clients

    def add_client(self, body: bytes, headers: dict[str, str], **_: Any) -> Reply:
        inbound, clients = self._payload(body, headers)
        taken = set(self.p._all_emails())
        for client in clients:
            email = str(client.get("email") or "")
            if email and email.lower() in taken:
                raise Refusal(f"Something went wrong (Duplicate email: {email})")
            taken.add(email.lower())
            if not client.get("id"):
                raise Refusal("Something went wrong (empty client ID)")
        now = int(time.time() * 1000)
        for client in clients:
            self.p._attach(inbound["id"], client | {"created_at": now, "updated_at": now})
        return _envelope(None, "Client(s) added")

    def update_client(
        self, params: dict[str, str], body: bytes, headers: dict[str, str], **_: Any
    ) -> Reply:
        inbound, clients = self._payload(body, headers)
        new = clients[0]
        current = inbound["settings"]["clients"]
        index = next((i for i, c in enumerate(current) if c.get("id") == params["clientId"]), -1)
        if index < 0 or not new.get("id"):
            raise Refusal("Something went wrong (empty client ID)")
        old_email = current[index].get("email", "")
        email = new.get("email", "")
        if email and email != old_email and email.lower() in self.p._all_emails():
            raise Refusal(f"Something went wrong (Duplicate email: {email})")
        current[index] = new | {"updated_at": int(time.time() * 1000)}
        self.p._rename_traffic(old_email, new)
        return _envelope(None, "Client updated")

    def del_client(self, params: dict[str, str], **_: Any) -> Reply:
        inbound = self.p._inbound(params["id"])
        current = inbound["settings"]["clients"]
        keep = [c for c in current if c.get("id") != params["clientId"]]
        if len(keep) == len(current):
            raise Refusal(
                f"Something went wrong (Client Not Found In Inbound For ID: {params['clientId']})"
            )
        if not keep:
            raise Refusal("Something went wrong (no client remained in Inbound)")
        gone = next(c for c in current if c.get("id") == params["clientId"])
        inbound["settings"]["clients"] = keep
        self.p.traffics.pop(gone.get("email", ""), None)
        self.p.records.pop(gone.get("email", ""), None)
        return _envelope(None, "Client deleted")

    # --- 3.1+: panel-wide client records -------------------------------------------------------

    def _attached(self, email: str) -> list[dict[str, Any]]:
        return [
            ib
            for ib in self.p.inbounds.values()
            if any(c.get("email") == email for c in ib["settings"]["clients"])
        ]

    def list_clients(self, **_: Any) -> Reply:
        rows = []
        seen: set[str] = set()
        for inbound in self.p.inbounds.values():
            for client in inbound["settings"]["clients"]:
                email = client.get("email", "")
                if not email or email in seen:
                    continue
                seen.add(email)
                row = {
                    "id": self.p.records[email],
                    "email": email,
                    "subId": client.get("subId", ""),
                    "uuid": client.get("id", ""),
                    "flow": client.get("flow", ""),
                    "enable": client.get("enable", True),
                    "limitIp": client.get("limitIp", 0),
                    "totalGB": client.get("totalGB", 0),
                    "expiryTime": client.get("expiryTime", 0),
                    "comment": client.get("comment", ""),
                    "inboundIds": [ib["id"] for ib in self._attached(email)],
                }
                if email in self.p.traffics:
                    row["traffic"] = dict(self.p.traffics[email])
                rows.append(row)
        return _envelope(rows)

    @staticmethod
    def _check_email(email: Any) -> str:
        if not isinstance(email, str) or not email.strip():
            raise Refusal("Something went wrong (client email is required)")
        if any(ch in FORBIDDEN_EMAIL or ch.isspace() or ord(ch) < 0x20 for ch in email):
            raise Refusal(
                f"Something went wrong (client email contains an invalid character: {email})"
            )
        return email

    def create(self, body: bytes, headers: dict[str, str], **_: Any) -> Reply:
        if "application/json" not in headers.get("content-type", ""):
            raise Refusal("Something went wrong (invalid request)")
        data = _json_body(body, headers)
        client = dict(data.get("client") or {}) if isinstance(data, dict) else {}
        email = self._check_email(client.get("email"))
        inbound_ids = data.get("inboundIds") or []
        if not inbound_ids:
            raise Refusal("Something went wrong (at least one inbound is required)")
        if email in self.p.records or email.lower() in self.p._all_emails():
            raise Refusal(f"Something went wrong (email already in use: {email})")
        inbounds = [self.p._inbound(i) for i in inbound_ids]
        client["enable"] = True
        client.setdefault("subId", str(uuid.uuid4()))
        if not client.get("id"):
            client["id"] = str(uuid.uuid4())
        now = int(time.time() * 1000)
        for inbound in inbounds:
            self.p._attach(inbound["id"], client | {"created_at": now, "updated_at": now})
        return _envelope(None, "Client added")

    def update(
        self, params: dict[str, str], body: bytes, headers: dict[str, str], **_: Any
    ) -> Reply:
        old = params["email"]
        attached = self._attached(old)
        if not attached:
            raise Refusal("Something went wrong (record not found)")
        new = _json_body(body, headers)
        if not isinstance(new, dict):
            raise Refusal("Something went wrong (invalid request)")
        email = self._check_email(new.get("email"))
        if email != old and email in self.p.records:
            raise Refusal(f"Something went wrong (Duplicate email: {email})")
        for inbound in attached:
            current = inbound["settings"]["clients"]
            for index, client in enumerate(current):
                if client.get("email") == old:
                    merged = dict(new)
                    merged["id"] = new.get("id") or client.get("id")
                    merged["subId"] = new.get("subId") or client.get("subId")
                    current[index] = merged
        self.p._rename_traffic(old, new)
        return _envelope(None, "Client updated")

    def delete(self, params: dict[str, str], query: dict[str, str], **_: Any) -> Reply:
        email = params["email"]
        attached = self._attached(email)
        if not attached:
            raise Refusal(
                f'Something went wrong (client "{email}" not found in any inbound or client record)'
            )
        for inbound in attached:
            inbound["settings"]["clients"] = [
                c for c in inbound["settings"]["clients"] if c.get("email") != email
            ]
        self.p.records.pop(email, None)
        if query.get("keepTraffic") != "1":
            self.p.traffics.pop(email, None)
        return _envelope(None, "Client deleted")


@contextlib.contextmanager
def running_panel(generation: Generation = "inbounds", **kwargs: Any) -> Iterator[FakePanel]:
    panel = FakePanel(generation, **kwargs).start()
    try:
        yield panel
    finally:
        panel.stop()
