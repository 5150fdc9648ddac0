"""``PanelSession`` against the local panel: logins of every panel generation, CSRF, re-login
after a lost session, API tokens, 2FA, and every way a panel answer can be wrong."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

from node_agent.backends.threexui.session import (
    Credentials,
    PanelError,
    PanelRefused,
    PanelSession,
    RouteMissing,
)
from tests.threexui_fake import FakePanel, running_panel

LIST = "panel/api/inbounds/list"

# (generation, csrf, auth_failure): 2.9.x, 3.0.x, 3.1+, 2.0-2.8
VARIANTS = [
    ("inbounds", False, "not_found"),
    ("inbounds", True, "unauthorized"),
    ("clients", True, "unauthorized"),
    ("inbounds", False, "legacy"),
]


def password_of(panel: FakePanel) -> Credentials:
    return Credentials(panel.username, lambda: panel.password)


@pytest.fixture
async def closing() -> AsyncIterator[list[PanelSession]]:
    sessions: list[PanelSession] = []
    yield sessions
    for session in sessions:
        await session.close()


def open_session(
    closing: list[PanelSession], url: str, credentials: Credentials, timeout: float = 5
) -> PanelSession:
    session = PanelSession(url, credentials, timeout=timeout)
    closing.append(session)
    return session


@pytest.fixture(params=VARIANTS, ids=["2.9", "3.0", "3.1", "2.0-2.8"])
def panel(request: pytest.FixtureRequest) -> Iterator[FakePanel]:
    generation, csrf, auth_failure = request.param
    with running_panel(generation, csrf=csrf, auth_failure=auth_failure) as fake:
        fake.add_inbound()
        yield fake


async def test_logs_in_once_and_again_after_the_panel_drops_the_session(
    panel: FakePanel, closing: list[PanelSession]
) -> None:
    session = open_session(closing, panel.url, password_of(panel))

    first = await session.call("GET", LIST, "list")
    await session.call(
        "POST",
        "panel/api/inbounds/onlines"
        if panel.generation == "inbounds"
        else "panel/api/clients/onlines",
        "onlines",
    )  # a POST passes CSRF
    assert panel.logins == 1
    panel.expire_sessions()
    again = await session.call("GET", LIST, "list")

    assert first == again and first[0]["id"] == 1
    assert panel.logins == 2
    assert ("GET", "csrf-token") in panel.requests  # 2.x answers it with 404, 3.x with a token


async def test_a_missing_route_is_told_apart_from_a_lost_session(
    panel: FakePanel, closing: list[PanelSession]
) -> None:
    session = open_session(closing, panel.url, password_of(panel))
    await session.call("GET", LIST, "list")

    with pytest.raises(RouteMissing, match="has no GET /panel/api/nothing/here"):
        await session.call("GET", "panel/api/nothing/here", "probe")

    assert panel.calls("panel/api/nothing/here") == 2  # once more after a fresh login
    assert panel.logins == 2


async def test_wrong_credentials_are_refused_without_showing_the_password(
    closing: list[PanelSession],
) -> None:
    with running_panel("clients") as panel, capture_logs() as logs:
        session = open_session(closing, panel.url, Credentials("admin", lambda: "guess-XYZ"))
        with pytest.raises(PanelRefused) as info:
            await session.call("GET", LIST, "list")

    assert str(info.value) == "login: the panel refused: Wrong username or password"
    with pytest.raises(PanelError, match=r"Wrong username or password \(next login attempt in"):
        await session.call("GET", LIST, "list")  # not asked again at once: its login limiter
    assert panel.calls("login") == 1
    assert "guess-XYZ" not in repr(logs)
    assert panel.logins == 0


async def test_a_password_file_is_read_at_every_login(
    tmp_path: Path, closing: list[PanelSession]
) -> None:
    secret = tmp_path / "panel.pass"
    secret.write_text("first-pass\n")
    with running_panel("inbounds", password="first-pass") as panel:
        panel.add_inbound()
        session = open_session(
            closing, panel.url, Credentials("admin", lambda: secret.read_text().rstrip("\n"))
        )
        await session.call("GET", LIST, "list")
        panel.password = "second-pass"
        secret.write_text("second-pass\n")
        panel.expire_sessions()

        await session.call("GET", LIST, "list")

    assert panel.logins == 2


async def test_two_factor_codes_are_computed_from_the_secret(closing: list[PanelSession]) -> None:
    with running_panel("clients", totp_secret="JBSWY3DPEHPK3PXP") as panel:
        panel.add_inbound()
        without = open_session(closing, panel.url, password_of(panel))
        with pytest.raises(PanelRefused, match="Wrong username or password"):
            await without.call("GET", LIST, "list")
        credentials = Credentials(
            panel.username, lambda: panel.password, totp_secret=lambda: "JBSWY3DPEHPK3PXP"
        )
        with_code = open_session(closing, panel.url, credentials)

        assert (await with_code.call("GET", LIST, "list"))[0]["id"] == 1


async def test_an_api_token_needs_no_login_and_no_csrf(closing: list[PanelSession]) -> None:
    with running_panel("clients", api_token="tok-123") as panel:
        panel.add_inbound()
        session = open_session(closing, panel.url, Credentials(api_token=lambda: "tok-123"))

        await session.call("GET", LIST, "list")
        await session.call("POST", "panel/api/clients/onlines", "onlines")

        assert panel.logins == 0
        assert not any(path in ("login", "csrf-token") for _, path in panel.requests)
        wrong = open_session(closing, panel.url, Credentials(api_token=lambda: "tok-999"))
        with pytest.raises(PanelError, match="refused the API token"):
            await wrong.call("GET", LIST, "list")


@pytest.mark.parametrize(
    ("kind", "error", "message"),
    [
        ("refuse", PanelRefused, "list: the panel refused: Something went wrong (injected"),
        ("html", PanelError, "answered HTTP 200 with text/html, not JSON"),
        ("status500", PanelError, "answered HTTP 500"),
    ],
)
async def test_bad_answers_are_panel_errors_with_the_reason(
    closing: list[PanelSession], kind: Any, error: type[PanelError], message: str
) -> None:
    with running_panel("inbounds") as panel:
        panel.add_inbound()
        session = open_session(closing, panel.url, password_of(panel))
        await session.call("GET", LIST, "list")
        panel.fail_next(kind, path="inbounds/list")

        with pytest.raises(error) as info:
            await session.call("GET", LIST, "list")
        assert message in str(info.value)
        assert (await session.call("GET", LIST, "list"))[0]["id"] == 1  # and then it works


async def test_a_slow_panel_times_out(closing: list[PanelSession]) -> None:
    with running_panel("inbounds") as panel:
        panel.add_inbound()
        session = open_session(closing, panel.url, password_of(panel), timeout=1.0)
        await session.call("GET", LIST, "list")
        panel.fail_next("slow", path="inbounds/list", delay=3.0)

        with pytest.raises(PanelError, match=r"did not answer within 1 s"):
            await session.call("GET", LIST, "list")


async def test_a_wrong_base_path_or_no_panel_says_so(closing: list[PanelSession]) -> None:
    with running_panel("inbounds") as panel:
        wrong = panel.url.replace(panel.base_path, "/other/")
        session = open_session(closing, wrong, password_of(panel))
        with pytest.raises(
            PanelError, match=r"login does not exist .*check the url's base path"
        ) as info:
            await session.call("GET", LIST, "list")
        assert "/other/" not in str(info.value)  # the base path is a secret: never shown

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # nothing listens there once closed
    session = open_session(closing, f"http://127.0.0.1:{port}/", password_of(panel))
    with pytest.raises(PanelError, match=f"cannot reach the panel at http://127.0.0.1:{port}:"):
        await session.call("GET", LIST, "list")
