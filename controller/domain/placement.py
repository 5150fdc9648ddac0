"""Pure rules for access and placement: who gets peers, which protocol, which node."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from controller.domain.enums import NodeStatus, SubscriptionStatus, VpnProtocol

# The automatic order. VLESS-Reality first where DPI blocks WireGuard and OpenVPN.
AUTO_ORDER_RU = (VpnProtocol.VLESS, VpnProtocol.WIREGUARD, VpnProtocol.OPENVPN)
AUTO_ORDER = (VpnProtocol.WIREGUARD, VpnProtocol.VLESS, VpnProtocol.OPENVPN)
# Countries where DPI blocks or throttles WireGuard/OpenVPN: VLESS first.
DPI_COUNTRIES = frozenset({"RU", "BY", "IR", "CN", "TM"})


def has_access(
    *,
    config_active: bool,
    status: SubscriptionStatus,
    expires_at: datetime | None,
    banned: bool,
    now: datetime,
) -> bool:
    """A config is on its node only while its subscription is active and unexpired (the
    expiry sweep may not have run yet) and its owner is not banned."""
    return (
        config_active
        and status is SubscriptionStatus.ACTIVE
        and expires_at is not None
        and expires_at > now
        and not banned
    )


def is_dpi_user(language_code: str | None, country_code: str | None) -> bool:
    return (country_code or "").upper() in DPI_COUNTRIES or (
        not country_code and (language_code or "").lower().startswith("ru")
    )


def protocol_candidates(
    *,
    explicit: VpnProtocol | None,
    preferred: VpnProtocol | None,
    auto_select: bool,
    dpi_user: bool,
) -> list[VpnProtocol]:
    """Protocols to try, best first: the user's explicit choice alone; else their
    preference, then the automatic order."""
    if explicit is not None:
        return [explicit]
    order = list(AUTO_ORDER_RU if dpi_user else AUTO_ORDER)
    if preferred is not None and (preferred in order or not auto_select):
        order = [preferred, *(p for p in order if p != preferred)]
    return order


@dataclass(frozen=True, slots=True)
class NodeCandidate:
    server_id: int
    status: NodeStatus
    is_active: bool
    is_maintenance: bool
    protocols: frozenset[VpnProtocol]  # supported *and* reported by the agent
    country_code: str
    configs: int
    max_users: int


_STATUS_RANK = {NodeStatus.ONLINE: 0, NodeStatus.DEGRADED: 1}


def choose_node(
    candidates: Sequence[NodeCandidate],
    protocol: VpnProtocol,
    *,
    country: str | None = None,
    preferred_server_id: int | None = None,
) -> int | None:
    """The node for a new config: serves ``protocol``, is active, not in maintenance,
    healthy (online or degraded), below ``max_users``; then the user's preferred node, the
    preferred country, online before degraded, least loaded."""
    eligible = [
        c
        for c in candidates
        if protocol in c.protocols
        and c.is_active
        and not c.is_maintenance
        and c.status in _STATUS_RANK
        and c.configs < c.max_users
    ]
    if not eligible:
        return None
    wanted = (country or "").upper()

    def rank(c: NodeCandidate) -> tuple[int, int, int, float, int]:
        return (
            0 if c.server_id == preferred_server_id else 1,
            0 if not wanted or c.country_code == wanted else 1,
            _STATUS_RANK[c.status],
            c.configs / c.max_users,
            c.server_id,
        )

    return min(eligible, key=rank).server_id
