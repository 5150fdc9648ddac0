"""An authenticated HTTP session with a 3X-UI panel: login, CSRF, re-login, the JSON envelope.

How each panel generation authenticates (sources in ``api``'s docstring):

* ``POST {base}login`` with ``username``, ``password`` and, with 2FA on, ``twoFactorCode``
  (a TOTP: base32 secret, SHA-1, 6 digits, 30 s) sets the session cookie ``3x-ui``.
* 3.0+ guards unsafe requests with a CSRF token: ``GET {base}csrf-token`` answers
  ``{"success": true, "obj": TOKEN}`` and sets the cookie; the token goes into the
  ``X-CSRF-Token`` header of the login and of every later POST. 2.x has no such route (404).
* 3.1+ also takes ``Authorization: Bearer TOKEN`` (an API token): no login, no CSRF.
* Without a valid session an API call answers 401 (2.0-2.8 and 3.x, for requests carrying
  ``X-Requested-With: XMLHttpRequest``, which we always send), a 307 redirect to the base
  path (2.0-2.8 without that header) or 404 (2.9.x, always). So a 401 or a redirect means
  "log in again"; a 404 means "log in again" once, and only a second 404 means the route is
  missing.

The password, token and TOTP secret are read from their files at each login and never logged
or put into an error message.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import os
import ssl
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import httpx
import structlog

from node_agent.config import ThreeXuiConfig
from node_agent.errors import BackendError, ConfigError

log = structlog.get_logger("node_agent.threexui")

CSRF_HEADER = "X-CSRF-Token"
# 3.x blocks an address for 15 min after 5 failed logins in 5 min (login_limiter.go): after a
# refused login, wait this long before the next attempt, whoever asks.
LOGIN_BACKOFF = 90.0
_LOGIN_LOST = {301, 302, 303, 307, 308, 401}


class PanelError(BackendError):
    """The panel could not be reached or did not answer as documented."""


class PanelRefused(PanelError):
    """The panel answered ``{"success": false, "msg": ...}``; ``msg`` is the panel's text."""

    def __init__(self, what: str, msg: str) -> None:
        super().__init__(f"{what}: the panel refused: {msg or 'no reason given'}")
        self.msg = msg


class RouteMissing(PanelError):
    """404 even right after a fresh login: this panel has no such route."""


def totp(secret_b32: str, now: float | None = None) -> str:
    """RFC 6238 code as 3X-UI checks it (gotp's defaults: SHA-1, 6 digits, 30 s)."""
    text = secret_b32.strip().replace(" ", "").upper()
    key = base64.b32decode(text + "=" * (-len(text) % 8))
    counter = int((time.time() if now is None else now) // 30)
    digest = hmac.new(key, counter.to_bytes(8, "big"), hashlib.sha1).digest()
    offset = digest[-1] & 0x0F
    code = (int.from_bytes(digest[offset : offset + 4], "big") & 0x7FFFFFFF) % 1_000_000
    return f"{code:06d}"


class Credentials:
    """Where the secrets come from; each getter reads its file anew (rotation)."""

    def __init__(
        self,
        username: str = "",
        password: Callable[[], str] | None = None,
        api_token: Callable[[], str] | None = None,
        totp_secret: Callable[[], str] | None = None,
    ) -> None:
        self.username = username
        self.password = password
        self.api_token = api_token
        self.totp_secret = totp_secret


class PanelSession:
    """One logged-in session, re-established when the panel drops it.

    ``call`` returns the ``obj`` of a successful envelope and raises PanelError otherwise.
    The httpx client is created on first use and closed by ``close`` (and made again if the
    session is used after that).
    """

    def __init__(
        self,
        url: str,
        credentials: Credentials,
        *,
        verify: bool | ssl.SSLContext = True,
        timeout: float = 10.0,
        login_backoff: float = LOGIN_BACKOFF,
    ) -> None:
        self.url = url if url.endswith("/") else url + "/"
        # The panel's web base path works as a password: logs and error reasons (which
        # reach the controller) name the origin only.
        parsed = httpx.URL(self.url)
        port = f":{parsed.port}" if parsed.port else ""
        self.origin = f"{parsed.scheme}://{parsed.host}{port}"
        self._credentials = credentials
        self._verify = verify
        self._timeout = timeout
        self._http: httpx.AsyncClient | None = None
        self._logged_in = False
        self._csrf: str | None = None
        self._login_lock = asyncio.Lock()
        self._session_no = 0  # bumped at every login: a stale failure must not log in twice
        self._login_backoff = login_backoff
        self._refused: tuple[float, str] | None = None  # when and why the last login failed
        self.logins = 0

    def _client(self) -> httpx.AsyncClient:
        if self._http is None:
            self._http = httpx.AsyncClient(
                base_url=self.url,
                verify=self._verify,
                timeout=self._timeout,
                follow_redirects=False,
                headers={"Accept": "application/json", "X-Requested-With": "XMLHttpRequest"},
            )
            self._logged_in = False
        return self._http

    async def close(self) -> None:
        if self._http is not None:
            http, self._http = self._http, None
            self._logged_in = False
            await http.aclose()

    # --- the one entry point ----------------------------------------------------------------

    async def call(
        self,
        method: str,
        path: str,
        what: str,
        *,
        json_body: Any = None,
        params: Mapping[str, str] | None = None,
    ) -> Any:
        """Send ``method path`` (relative to the base URL) and return the envelope's ``obj``."""
        not_found = False
        for attempt in range(3):
            session = await self._ensure_login()
            response = await self._send(method, path, what, json_body=json_body, params=params)
            status = response.status_code
            if status in _LOGIN_LOST or (status == 404 and not not_found):
                # 404 is what 2.9.x answers a lost session with; a second 404 after a fresh
                # login means the route does not exist.
                not_found = not_found or status == 404
                if self._credentials.api_token is not None and status != 404:
                    raise PanelError(f"{what}: the panel refused the API token (HTTP {status})")
                self._lost(session)
                continue
            if status == 404:
                raise RouteMissing(f"{what}: the panel has no {method} /{path} (HTTP 404)")
            if status == 403 and self._csrf is not None and attempt < 2:
                self._lost(session)  # the CSRF token went stale: a new session fetches one
                continue
            return self._envelope(response, what)
        raise PanelError(f"{what}: the panel keeps dropping the session right after login")

    def _lost(self, session_no: int) -> None:
        if self._session_no == session_no:
            self._logged_in = False

    async def _send(
        self,
        method: str,
        path: str,
        what: str,
        *,
        json_body: Any = None,
        data: Mapping[str, str] | None = None,
        params: Mapping[str, str] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> httpx.Response:
        extra = dict(headers or {})
        if method != "GET" and self._csrf is not None:
            extra.setdefault(CSRF_HEADER, self._csrf)
        token = self._credentials.api_token
        if token is not None:
            extra["Authorization"] = f"Bearer {_read_secret(token, 'API token')}"
        try:
            return await self._client().request(
                method, path, json=json_body, data=data, params=params, headers=extra
            )
        except httpx.TimeoutException:
            raise PanelError(
                f"{what}: the panel at {self.origin} did not answer within {self._timeout:g} s"
            ) from None
        except httpx.HTTPError as exc:
            raise PanelError(f"{what}: cannot reach the panel at {self.origin}: {exc}") from None

    def _envelope(self, response: httpx.Response, what: str) -> Any:
        """The ``obj`` of ``{"success": true, "msg": ..., "obj": ...}``, or PanelError."""
        kind = response.headers.get("content-type", "").split(";")[0].strip() or "no content type"
        try:
            body = response.json()
        except ValueError:  # JSONDecodeError, UnicodeDecodeError
            if response.status_code != 200:
                raise PanelError(
                    f"{what}: the panel answered HTTP {response.status_code} ({kind})"
                ) from None
            raise PanelError(
                f"{what}: the panel answered HTTP {response.status_code} with {kind}, not JSON "
                "(is the url the panel's address with its base path?)"
            ) from None
        if not isinstance(body, dict) or not isinstance(body.get("success"), bool):
            raise PanelError(
                f"{what}: the panel answered HTTP {response.status_code} without the "
                '{"success", "msg", "obj"} envelope'
            )
        if not body["success"]:
            raise PanelRefused(what, str(body.get("msg") or ""))
        if response.status_code != 200:
            raise PanelError(f"{what}: the panel answered HTTP {response.status_code}")
        return body.get("obj")

    # --- login ------------------------------------------------------------------------------

    async def _ensure_login(self) -> int:
        if self._logged_in and self._http is not None:
            return self._session_no
        async with self._login_lock:
            if not (self._logged_in and self._http is not None):
                if self._refused is not None:
                    wait = self._refused[0] + self._login_backoff - time.monotonic()
                    if wait > 0:
                        raise PanelError(
                            f"{self._refused[1]} (next login attempt in {wait:.0f} s, to stay "
                            "under the panel's login limit)"
                        )
                try:
                    await self._login()
                except PanelRefused as exc:
                    self._refused = (time.monotonic(), str(exc))
                    raise
                self._refused = None
                self._session_no += 1
                self._logged_in = True
        return self._session_no

    async def _login(self) -> None:
        http = self._client()
        if self._credentials.api_token is not None:
            self._csrf = None
            return
        http.cookies.clear()
        self._csrf = None
        response = await self._send("GET", "csrf-token", "login")
        if response.status_code == 200:
            # 3.0+: the login itself needs the token, and so does every later POST.
            self._csrf = self._envelope(response, "login (CSRF token)")
            if not isinstance(self._csrf, str) or not self._csrf:
                raise PanelError("login: the panel's CSRF token is not a string")
        elif response.status_code != 404:
            raise PanelError(f"login: GET csrf-token answered HTTP {response.status_code}")
        form = {"username": self._credentials.username}
        if self._credentials.password is not None:
            form["password"] = _read_secret(self._credentials.password, "password")
        if self._credentials.totp_secret is not None:
            secret = _read_secret(self._credentials.totp_secret, "two-factor secret")
            try:
                form["twoFactorCode"] = totp(secret)
            except ValueError:
                raise PanelError("login: the two-factor secret is not base32") from None
        response = await self._send("POST", "login", "login", data=form)
        if response.status_code == 404:
            raise PanelError(
                f"login: {self.origin}/…/login does not exist (HTTP 404): check the url's base path"
            )
        self._envelope(response, "login")
        self.logins += 1
        log.info("threexui_logged_in", panel=self.origin, csrf=self._csrf is not None)


def _read_secret(getter: Callable[[], str], what: str) -> str:
    try:
        value = getter()
    except OSError as exc:
        raise PanelError(f"cannot read the panel {what}: {exc.strerror or exc}") from None
    if not value:
        raise PanelError(f"the panel {what} is empty")
    return value


def _reader(path: Path, what: str, backend: str) -> Callable[[], str]:
    if not os.access(path, os.R_OK) or not path.is_file():
        raise ConfigError(f"backend {backend!r}: {what} {path} is not a readable file")
    return lambda: path.read_text().rstrip("\r\n")


def _credentials(name: str, spec: ThreeXuiConfig) -> Credentials:
    password: Callable[[], str] | None = None
    if spec.password_file is not None:
        password = _reader(spec.password_file, "password_file", name)
    elif spec.password is not None:
        inline = spec.password
        password = lambda: inline  # noqa: E731
    return Credentials(
        username=spec.username,
        password=password,
        api_token=(
            _reader(spec.api_token_file, "api_token_file", name) if spec.api_token_file else None
        ),
        totp_secret=(
            _reader(spec.two_factor_secret_file, "two_factor_secret_file", name)
            if spec.two_factor_secret_file
            else None
        ),
    )


def _verify(name: str, spec: ThreeXuiConfig) -> bool | ssl.SSLContext:
    if not spec.verify_tls:
        return False
    if spec.ca_file is None:
        return True
    try:
        return ssl.create_default_context(cafile=str(spec.ca_file))
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"backend {name!r}: ca_file {spec.ca_file}: {exc}") from None


def open_session(name: str, spec: ThreeXuiConfig) -> PanelSession:
    """A session for backend ``name``; ConfigError for unreadable secret files or CA file."""
    return PanelSession(
        spec.url, _credentials(name, spec), verify=_verify(name, spec), timeout=spec.timeout
    )
