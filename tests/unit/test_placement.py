"""Pure placement rules: who has access, who is a DPI user, which protocols to try, which
node gets a new config."""

from __future__ import annotations

import itertools
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from controller.domain.enums import NodeStatus, SubscriptionStatus, VpnProtocol
from controller.domain.placement import (
    NodeCandidate,
    choose_node,
    has_access,
    is_dpi_user,
    protocol_candidates,
)

NOW = datetime(2026, 1, 15, 12, 0, tzinfo=UTC)
WG, VLESS, OVPN = VpnProtocol.WIREGUARD, VpnProtocol.VLESS, VpnProtocol.OPENVPN

# --- has_access -------------------------------------------------------------------------------

EXPIRIES = {
    "none": None,
    "past": NOW - timedelta(days=1),
    "now": NOW,
    "future": NOW + timedelta(seconds=1),
}


@pytest.mark.parametrize(
    ("config_active", "status", "expiry", "banned"),
    list(itertools.product([True, False], list(SubscriptionStatus), list(EXPIRIES), [False, True])),
)
def test_has_access_truth_table(
    config_active: bool, status: SubscriptionStatus, expiry: str, banned: bool
) -> None:
    expected = (
        config_active and status is SubscriptionStatus.ACTIVE and expiry == "future" and not banned
    )
    assert (
        has_access(
            config_active=config_active,
            status=status,
            expires_at=EXPIRIES[expiry],
            banned=banned,
            now=NOW,
        )
        is expected
    )


def test_has_access_follows_the_clock() -> None:
    expires = NOW + timedelta(hours=1)
    kwargs = {"config_active": True, "status": SubscriptionStatus.ACTIVE, "banned": False}
    assert has_access(expires_at=expires, now=NOW, **kwargs)  # type: ignore[arg-type]
    assert not has_access(expires_at=expires, now=expires, **kwargs)  # type: ignore[arg-type]


# --- is_dpi_user ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("language", "country", "expected"),
    [
        (None, "RU", True),
        ("en", "RU", True),  # the country decides
        (None, "ru", True),  # any case
        ("en", "IR", True),
        (None, "CN", True),
        ("ru", None, True),  # no country: the language decides
        ("ru-RU", None, True),
        ("RU", None, True),
        ("ru", "", True),
        ("en", None, False),
        ("en-US", None, False),
        (None, None, False),
        ("", "", False),
        ("ru", "DE", False),  # a known non-DPI country overrides the Russian language
        ("ru", "US", False),
        ("uk", "UA", False),
    ],
)
def test_is_dpi_user(language: str | None, country: str | None, expected: bool) -> None:
    assert is_dpi_user(language, country) is expected


# --- protocol_candidates ----------------------------------------------------------------------


@pytest.mark.parametrize("dpi_user", [False, True])
@pytest.mark.parametrize("auto_select", [False, True])
def test_an_explicit_choice_is_the_only_candidate(dpi_user: bool, auto_select: bool) -> None:
    for explicit in (WG, VLESS, OVPN):
        assert protocol_candidates(
            explicit=explicit, preferred=VLESS, auto_select=auto_select, dpi_user=dpi_user
        ) == [explicit]


def test_automatic_order_for_dpi_users_starts_with_vless() -> None:
    assert protocol_candidates(explicit=None, preferred=None, auto_select=True, dpi_user=True) == [
        VLESS,
        WG,
        OVPN,
    ]


def test_automatic_order_for_others_starts_with_wireguard() -> None:
    assert protocol_candidates(explicit=None, preferred=None, auto_select=True, dpi_user=False) == [
        WG,
        VLESS,
        OVPN,
    ]


@pytest.mark.parametrize("auto_select", [False, True])
@pytest.mark.parametrize(
    ("preferred", "dpi_user", "expected"),
    [
        (OVPN, False, [OVPN, WG, VLESS]),
        (OVPN, True, [OVPN, VLESS, WG]),
        (WG, True, [WG, VLESS, OVPN]),
        (VLESS, False, [VLESS, WG, OVPN]),
        (WG, False, [WG, VLESS, OVPN]),
    ],
)
def test_the_preferred_protocol_comes_first(
    preferred: VpnProtocol, dpi_user: bool, expected: list[VpnProtocol], auto_select: bool
) -> None:
    result = protocol_candidates(
        explicit=None, preferred=preferred, auto_select=auto_select, dpi_user=dpi_user
    )
    assert result == expected
    assert len(result) == len(set(result))  # no protocol twice


def test_a_preferred_protocol_outside_the_automatic_order() -> None:
    # IKEv2 is not offered automatically: kept first only when the user turned auto off.
    assert protocol_candidates(
        explicit=None, preferred=VpnProtocol.IKEV2, auto_select=False, dpi_user=False
    ) == [VpnProtocol.IKEV2, WG, VLESS, OVPN]
    assert protocol_candidates(
        explicit=None, preferred=VpnProtocol.IKEV2, auto_select=True, dpi_user=False
    ) == [WG, VLESS, OVPN]


# --- choose_node ------------------------------------------------------------------------------


def node(server_id: int, **changes: object) -> NodeCandidate:
    base = NodeCandidate(
        server_id=server_id,
        status=NodeStatus.ONLINE,
        is_active=True,
        is_maintenance=False,
        protocols=frozenset({WG}),
        country_code="DE",
        configs=0,
        max_users=100,
    )
    return replace(base, **changes)  # type: ignore[arg-type]


def test_a_single_healthy_node_is_chosen() -> None:
    assert choose_node([node(7)], WG) == 7


def test_nothing_eligible_gives_none() -> None:
    assert choose_node([], WG) is None
    assert choose_node([node(1, protocols=frozenset({VLESS}))], WG) is None


@pytest.mark.parametrize(
    ("changes", "why"),
    [
        ({"protocols": frozenset({VLESS, OVPN})}, "does not serve the protocol"),
        ({"protocols": frozenset()}, "serves nothing"),
        ({"is_active": False}, "inactive"),
        ({"is_maintenance": True}, "in maintenance"),
        ({"status": NodeStatus.DOWN}, "down"),
        ({"status": NodeStatus.UNKNOWN}, "never seen"),
        ({"configs": 100}, "full"),
        ({"configs": 150}, "over full"),
        ({"max_users": 0}, "takes nobody"),
    ],
)
def test_ineligible_nodes_are_filtered(changes: dict[str, object], why: str) -> None:
    bad = node(1, **changes)
    assert choose_node([bad], WG) is None, why
    # ... even when it would win every preference.
    assert choose_node([bad, node(2, configs=99)], WG, preferred_server_id=1, country="DE") == 2


def test_one_free_slot_is_enough() -> None:
    assert choose_node([node(1, configs=99)], WG) == 1


def test_degraded_nodes_are_eligible() -> None:
    assert choose_node([node(1, status=NodeStatus.DEGRADED)], WG) == 1


def test_the_preferred_server_wins_over_everything_else() -> None:
    preferred = node(5, status=NodeStatus.DEGRADED, country_code="NL", configs=90)
    other = node(1, country_code="DE", configs=0)
    assert choose_node([other, preferred], WG, preferred_server_id=5, country="DE") == 5
    assert choose_node([other, preferred], WG, country="DE") == 1


def test_the_preferred_country_wins_over_health_and_load() -> None:
    local = node(5, status=NodeStatus.DEGRADED, country_code="NL", configs=90)
    other = node(1, country_code="DE", configs=0)
    assert choose_node([other, local], WG, country="NL") == 5
    assert choose_node([other, local], WG, country="nl") == 5  # any case
    assert choose_node([other, local], WG) == 1


def test_a_country_with_no_node_does_not_exclude_the_others() -> None:
    assert choose_node([node(3, country_code="DE")], WG, country="JP") == 3


def test_online_wins_over_degraded_before_load() -> None:
    degraded = node(1, status=NodeStatus.DEGRADED, configs=0)
    online = node(2, configs=80)
    assert choose_node([degraded, online], WG) == 2


def test_the_least_loaded_ratio_wins() -> None:
    # Ratio, not count: 30/300 = 0.1 < 20/100 = 0.2.
    big = node(1, configs=30, max_users=300)
    small = node(2, configs=20, max_users=100)
    assert choose_node([small, big], WG) == 1
    assert choose_node([node(1, configs=50), node(2, configs=10)], WG) == 2


def test_ties_go_to_the_lowest_id() -> None:
    nodes = [node(9), node(4), node(6)]
    assert choose_node(nodes, WG) == 4
    assert choose_node(list(reversed(nodes)), WG) == 4


def test_the_protocol_argument_selects_among_nodes() -> None:
    nodes = [node(1, protocols=frozenset({WG})), node(2, protocols=frozenset({VLESS, WG}))]
    assert choose_node(nodes, VLESS) == 2
    assert choose_node(nodes, WG) == 1
    assert choose_node(nodes, OVPN) is None
