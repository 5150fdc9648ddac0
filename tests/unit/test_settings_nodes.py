"""The settings sections for nodes (enrollment listener, hub, client configs) read from the
environment, and the enrollment URL that goes into tokens."""

from __future__ import annotations

import socket

import pytest

from controller.services.nodes import enrollment_url
from controller.settings import EnrollmentSettings, SettingsError, load_settings

pytestmark = pytest.mark.usefixtures("clean_env")


def refused(monkeypatch: pytest.MonkeyPatch, variable: str, value: str) -> str:
    monkeypatch.setenv(variable, value)
    with pytest.raises(SettingsError) as info:
        load_settings()
    message = str(info.value)
    assert message.startswith(f"invalid setting {variable}:"), message
    return message


# --- defaults ---------------------------------------------------------------------------------


def test_defaults() -> None:
    settings = load_settings()
    enrollment, hub, vpn = settings.enrollment, settings.hub, settings.vpn
    assert enrollment.enabled is True
    assert enrollment.host == "0.0.0.0"
    assert enrollment.port == 8443
    assert enrollment.public_url is None
    assert enrollment.token_ttl_minutes == 60
    assert hub.enabled is True
    assert hub.poll_seconds == 1.0
    assert hub.resync_seconds == 30.0
    assert hub.usage_seconds == 30.0
    assert hub.metrics_seconds == 60.0
    assert hub.rpc_timeout_seconds == 10.0
    assert hub.max_backoff_seconds == 30.0
    assert hub.stats_retention_days == 30
    assert vpn.wireguard_dns == "1.1.1.1, 1.0.0.1"
    assert vpn.wireguard_allowed_ips == "0.0.0.0/0, ::/0"
    assert vpn.wireguard_keepalive == 25
    assert vpn.split(vpn.wireguard_dns) == ["1.1.1.1", "1.0.0.1"]
    assert vpn.split(vpn.wireguard_allowed_ips) == ["0.0.0.0/0", "::/0"]


# --- enrollment -------------------------------------------------------------------------------


def test_enrollment_values_from_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VPNBOT_ENROLLMENT__ENABLED", "false")
    monkeypatch.setenv("VPNBOT_ENROLLMENT__HOST", "192.0.2.10")
    monkeypatch.setenv("VPNBOT_ENROLLMENT__PORT", "9443")
    monkeypatch.setenv("VPNBOT_ENROLLMENT__TOKEN_TTL_MINUTES", "15")
    monkeypatch.setenv("VPNBOT_ENROLLMENT__PUBLIC_URL", "https://ctl.example.org:9443/")
    enrollment = load_settings().enrollment
    assert enrollment.enabled is False
    assert enrollment.host == "192.0.2.10"
    assert enrollment.port == 9443
    assert enrollment.token_ttl_minutes == 15
    assert enrollment.public_url == "https://ctl.example.org:9443"  # trailing slash dropped


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("https://ctl.example.org", "https://ctl.example.org"),
        ("https://ctl.example.org:8443", "https://ctl.example.org:8443"),
        ("  https://ctl.example.org:8443/  ", "https://ctl.example.org:8443"),
        ("https://203.0.113.5:8443", "https://203.0.113.5:8443"),
        ("https://[2001:db8::5]:8443", "https://[2001:db8::5]:8443"),
        ("", None),
        ("   ", None),
    ],
)
def test_public_url_accepted(
    monkeypatch: pytest.MonkeyPatch, value: str, expected: str | None
) -> None:
    monkeypatch.setenv("VPNBOT_ENROLLMENT__PUBLIC_URL", value)
    assert load_settings().enrollment.public_url == expected


@pytest.mark.parametrize(
    "value",
    [
        "http://ctl.example.org:8443",  # the token pins a CA over TLS: never plain HTTP
        "ctl.example.org:8443",
        "ftp://ctl.example.org",
        "https://",
        "https://ctl.example.org/enroll",  # a path would be dropped by the agent
        "https://ctl.example.org:8443/api/v1",
    ],
)
def test_public_url_refused(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    message = refused(monkeypatch, "VPNBOT_ENROLLMENT__PUBLIC_URL", value)
    assert "https://HOST[:PORT]" in message


@pytest.mark.parametrize(
    "value",
    [
        "https://ctl.example.org:abc",  # the agent's urlsplit(...).port raises ValueError
        "https://ctl.example.org:99999",
        "https://ctl.example.org?x=1",
        "https://ctl.example.org#top",
        "https://user:pw@ctl.example.org",
        "https:// ctl.example.org",
    ],
)
def test_public_url_that_is_not_host_and_port_is_refused(
    monkeypatch: pytest.MonkeyPatch, value: str
) -> None:
    # "must be https://HOST[:PORT]": anything else ends up in tokens no agent can use.
    refused(monkeypatch, "VPNBOT_ENROLLMENT__PUBLIC_URL", value)


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("VPNBOT_ENROLLMENT__PORT", "65536"),
        ("VPNBOT_ENROLLMENT__PORT", "-1"),
        ("VPNBOT_ENROLLMENT__PORT", "https"),
        ("VPNBOT_ENROLLMENT__TOKEN_TTL_MINUTES", "0"),
        ("VPNBOT_ENROLLMENT__TOKEN_TTL_MINUTES", str(7 * 24 * 60 + 1)),
        ("VPNBOT_ENROLLMENT__ENABLED", "maybe"),
    ],
)
def test_enrollment_bounds(monkeypatch: pytest.MonkeyPatch, variable: str, value: str) -> None:
    refused(monkeypatch, variable, value)


def test_enrollment_bounds_edges(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VPNBOT_ENROLLMENT__PORT", "0")  # any free port (tests)
    monkeypatch.setenv("VPNBOT_ENROLLMENT__TOKEN_TTL_MINUTES", str(7 * 24 * 60))
    enrollment = load_settings().enrollment
    assert (enrollment.port, enrollment.token_ttl_minutes) == (0, 7 * 24 * 60)


def test_a_misspelled_enrollment_key_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VPNBOT_ENROLLMENT__PUBLIC_URI", "https://ctl.example.org")
    with pytest.raises(SettingsError, match="unknown setting VPNBOT_ENROLLMENT__PUBLIC_URI"):
        load_settings()


# --- client configs ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("9.9.9.9", "9.9.9.9"),
        (" 9.9.9.9 ,149.112.112.112 ", "9.9.9.9, 149.112.112.112"),
        ("2606:4700:4700::1111, 1.1.1.1", "2606:4700:4700::1111, 1.1.1.1"),
        ("", ""),  # no DNS line in client configs
    ],
)
def test_wireguard_dns_accepted(monkeypatch: pytest.MonkeyPatch, value: str, expected: str) -> None:
    monkeypatch.setenv("VPNBOT_VPN__WIREGUARD_DNS", value)
    assert load_settings().vpn.wireguard_dns == expected


@pytest.mark.parametrize(
    "value",
    ["dns.google", "1.1.1.1, one.one", "1.1.1.256", "10.0.0.0/8", "1.1.1.1;8.8.8.8"],
)
def test_wireguard_dns_refuses_non_ips(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    message = refused(monkeypatch, "VPNBOT_VPN__WIREGUARD_DNS", value)
    assert "is not an IP address" in message


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("10.0.0.0/8", "10.0.0.0/8"),
        ("0.0.0.0/0,::/0", "0.0.0.0/0, ::/0"),
        ("192.168.1.5", "192.168.1.5"),  # a host is a /32
        ("10.1.2.3/8", "10.1.2.3/8"),  # host bits tolerated (wg does too)
    ],
)
def test_wireguard_allowed_ips_accepted(
    monkeypatch: pytest.MonkeyPatch, value: str, expected: str
) -> None:
    monkeypatch.setenv("VPNBOT_VPN__WIREGUARD_ALLOWED_IPS", value)
    assert load_settings().vpn.wireguard_allowed_ips == expected


@pytest.mark.parametrize(
    ("value", "why"),
    [
        ("", "at least one network"),
        (" , ", "at least one network"),
        ("everything", "is not an IP network"),
        ("0.0.0.0/33", "is not an IP network"),
        ("0.0.0.0/0, ::/0, lan", "is not an IP network"),
    ],
)
def test_wireguard_allowed_ips_refuses_junk_and_empty(
    monkeypatch: pytest.MonkeyPatch, value: str, why: str
) -> None:
    assert why in refused(monkeypatch, "VPNBOT_VPN__WIREGUARD_ALLOWED_IPS", value)


@pytest.mark.parametrize("value", ["-1", "3601", "often"])
def test_wireguard_keepalive_bounds(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    refused(monkeypatch, "VPNBOT_VPN__WIREGUARD_KEEPALIVE", value)


def test_wireguard_keepalive_zero_is_off(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VPNBOT_VPN__WIREGUARD_KEEPALIVE", "0")
    assert load_settings().vpn.wireguard_keepalive == 0


# --- hub --------------------------------------------------------------------------------------

HUB_BOUNDS = {
    "POLL_SECONDS": ("0.05", "60", "0.049", "60.1"),
    "RESYNC_SECONDS": ("1", "3600", "0.9", "3601"),
    "USAGE_SECONDS": ("0.1", "3600", "0.09", "3601"),
    "METRICS_SECONDS": ("0.1", "3600", "0.09", "3601"),
    "RPC_TIMEOUT_SECONDS": ("0.5", "300", "0.4", "301"),
    "MAX_BACKOFF_SECONDS": ("0.5", "3600", "0.4", "3601"),
    "STATS_RETENTION_DAYS": ("1", "3650", "0", "3651"),
}


@pytest.mark.parametrize("key", sorted(HUB_BOUNDS))
def test_hub_interval_edges_are_accepted(monkeypatch: pytest.MonkeyPatch, key: str) -> None:
    low, high, _, _ = HUB_BOUNDS[key]
    for value in (low, high):
        monkeypatch.setenv(f"VPNBOT_HUB__{key}", value)
        assert getattr(load_settings().hub, key.lower()) == float(value)


@pytest.mark.parametrize("key", sorted(HUB_BOUNDS))
def test_hub_intervals_out_of_bounds_are_refused(monkeypatch: pytest.MonkeyPatch, key: str) -> None:
    _, _, too_low, too_high = HUB_BOUNDS[key]
    for value in (too_low, too_high, "soon", "nan"):
        refused(monkeypatch, f"VPNBOT_HUB__{key}", value)


def test_hub_can_be_disabled(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VPNBOT_HUB__ENABLED", "0")
    assert load_settings().hub.enabled is False


# --- enrollment_url ---------------------------------------------------------------------------


def test_public_url_wins() -> None:
    settings = EnrollmentSettings(
        host="10.0.0.1", port=9443, public_url="https://ctl.example.org:443/"
    )
    assert enrollment_url(settings) == "https://ctl.example.org:443"


@pytest.mark.parametrize("host", ["0.0.0.0", "::", ""])
def test_a_wildcard_host_becomes_the_hostname(host: str) -> None:
    url = enrollment_url(EnrollmentSettings(host=host, port=8443))
    assert url == f"https://{socket.gethostname()}:8443"


def test_a_specific_host_is_used_as_is() -> None:
    assert enrollment_url(EnrollmentSettings(host="192.0.2.7", port=8443)) == (
        "https://192.0.2.7:8443"
    )
    assert enrollment_url(EnrollmentSettings(host="ctl.example.org", port=1)) == (
        "https://ctl.example.org:1"
    )


def test_an_ipv6_host_is_bracketed() -> None:
    assert enrollment_url(EnrollmentSettings(host="2001:db8::7", port=8443)) == (
        "https://[2001:db8::7]:8443"
    )


def test_the_default_settings_give_an_url_a_token_accepts() -> None:
    from proto.nodeapi.v1.enrollment import EnrollmentToken

    url = enrollment_url(load_settings().enrollment)
    token = EnrollmentToken(url, "node-1", "ab" * 32, "A" * 43)
    assert EnrollmentToken.decode(token.encode()).url == url
