"""The vless:// share link: the exact text apps import, and parsing it back."""

from __future__ import annotations

import dataclasses

import pytest

from controller.vpn.vless import ShareLink, parse_share_link, share_link

UUID = "bf000d23-0752-40b4-affe-68f7707a9661"
PBK = "UuMBgl7MXTPx9inmQp2UC7Jcnwc6XYbwDNebonM-FCc"
BASE = ShareLink(
    uuid=UUID,
    host="203.0.113.7",
    port=443,
    public_key=PBK,
    short_id="0123456789abcdef",
    server_name="www.example.com",
    fingerprint="chrome",
    flow="xtls-rprx-vision",
    name="My Node",
)


def build(link: ShareLink) -> str:
    return share_link(**dataclasses.asdict(link))


def test_exact_link_for_a_known_input() -> None:
    assert build(BASE) == (
        f"vless://{UUID}@203.0.113.7:443?type=tcp&security=reality&pbk={PBK}"
        "&sid=0123456789abcdef&sni=www.example.com&fp=chrome&flow=xtls-rprx-vision"
        "&encryption=none#My%20Node"
    )


def test_empty_flow_short_id_and_name_are_omitted() -> None:
    link = build(dataclasses.replace(BASE, flow="", short_id="", name=""))
    assert link == (
        f"vless://{UUID}@203.0.113.7:443?type=tcp&security=reality&pbk={PBK}"
        "&sni=www.example.com&fp=chrome&encryption=none"
    )
    assert parse_share_link(link) == dataclasses.replace(BASE, flow="", short_id="", name="")


@pytest.mark.parametrize(
    "link",
    [
        BASE,
        dataclasses.replace(BASE, host="vpn.example.net", port=8443, flow=""),
        dataclasses.replace(BASE, name="100% fast & safe #1 / ?=+"),
        dataclasses.replace(BASE, name="Emoji 🇳🇱 name"),
    ],
)
def test_round_trip(link: ShareLink) -> None:
    assert parse_share_link(build(link)) == link


def test_ipv6_host_in_brackets() -> None:
    text = build(dataclasses.replace(BASE, host="2001:DB8::1"))
    assert text.startswith(f"vless://{UUID}@[2001:db8::1]:443?")
    assert parse_share_link(text).host == "2001:db8::1"
    # Brackets given by the caller are accepted too.
    assert build(dataclasses.replace(BASE, host="[2001:db8::1]")) == text


def test_cyrillic_name_round_trips_percent_encoded() -> None:
    name = "Москва · Reality №1"
    text = build(dataclasses.replace(BASE, name=name))
    fragment = text.partition("#")[2]
    assert fragment.isascii() and " " not in fragment
    assert fragment.startswith("%D0%9C%D0%BE%D1%81%D0%BA%D0%B2%D0%B0%20")
    assert parse_share_link(text).name == name


def test_internationalised_host_becomes_punycode() -> None:
    text = build(dataclasses.replace(BASE, host="пример.рф"))
    assert "@xn--e1afmkfd.xn--p1ai:443?" in text
    assert parse_share_link(text).host == "xn--e1afmkfd.xn--p1ai"


def test_links_from_other_writers_parse() -> None:
    # v2rayN / 3X-UI style: another parameter order, raw instead of tcp, spx and headerType.
    text = (
        f"vless://{UUID}@203.0.113.7:443?encryption=none&security=reality&sni=www.example.com"
        f"&fp=chrome&pbk={PBK}&sid=0123456789abcdef&spx=%2F&type=raw&headerType=none"
        "&flow=xtls-rprx-vision#My%20Node"
    )
    assert parse_share_link(text) == BASE
    assert parse_share_link(f"  {build(BASE)}\n") == BASE


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"uuid": "not-a-uuid"}, "not a UUID"),
        ({"host": ""}, "host is empty"),
        ({"host": "bad host"}, "neither an IP address nor a DNS name"),
        ({"port": 0}, "outside 1..65535"),
        ({"port": 65536}, "outside 1..65535"),
        ({"public_key": "short"}, "32 bytes"),
        ({"public_key": PBK + "="}, "32 bytes"),
        ({"short_id": "abc"}, "short id"),
        ({"short_id": "0123456789abcdef00"}, "short id"),
        ({"short_id": "zz"}, "short id"),
        ({"server_name": ""}, "server name"),
        ({"server_name": "a b"}, "server name"),
        ({"fingerprint": ""}, "fingerprint"),
        ({"fingerprint": "chrome&x=1"}, "fingerprint"),
        ({"flow": "xtls-rprx-direct"}, "flow"),
    ],
)
def test_bad_values_are_refused_when_building(change: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        build(dataclasses.replace(BASE, **change))  # type: ignore[arg-type]


GOOD = build(BASE)


@pytest.mark.parametrize(
    ("link", "message"),
    [
        ("", "starts with 'vless://'"),
        (GOOD.replace("vless://", "vmess://"), "starts with 'vless://'"),
        (GOOD.replace(f"{UUID}@", ""), "no user id"),
        (GOOD.replace(UUID, "1234"), "not a UUID"),
        (GOOD.replace(":443?", "?"), "no port"),
        (GOOD.replace(":443?", ":44x3?"), "not a number"),
        (GOOD.replace(":443?", ":70000?"), "outside 1..65535"),
        (GOOD.replace("203.0.113.7", "2001:db8::1"), "in brackets"),
        (GOOD.replace("203.0.113.7", "[203.0.113.7]"), "not an IPv6 address"),
        (GOOD.replace(":443?", ":443/path?"), "no path"),
        (GOOD.replace("security=reality", "security=tls"), "only reality"),
        (GOOD.replace("&security=reality", ""), "only reality"),
        (GOOD.replace("type=tcp", "type=ws"), "only tcp"),
        (GOOD.replace("encryption=none", "encryption=mlkem768x25519plus"), "only none"),
        (GOOD.replace(f"pbk={PBK}&", ""), "lacks 'pbk'"),
        (GOOD.replace("sni=www.example.com&", ""), "lacks 'sni'"),
        (GOOD.replace("fp=chrome&", "fp=&"), "lacks 'fp'"),
        (GOOD.replace("&encryption=none", "&encryption=none&sni=other.example"), "twice"),
        (GOOD.replace("&encryption=none", "&encryption=none&serviceName=x"), "not supported"),
        (GOOD.replace("&encryption=none", "&encryption=none&headerType=http"), "TCP header"),
        (GOOD.replace("&encryption=none", "&encryption"), "has no value"),
        (GOOD.replace(f"pbk={PBK}", "pbk=AAAA"), "32 bytes"),
        (GOOD.replace("sid=0123456789abcdef", "sid=xyz"), "short id"),
        (GOOD.replace("flow=xtls-rprx-vision", "flow=xtls-rprx-origin"), "flow"),
        (GOOD.replace("#My%20Node", "#%FF"), "percent-encoded UTF-8"),
    ],
)
def test_bad_links_are_refused(link: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_share_link(link)
