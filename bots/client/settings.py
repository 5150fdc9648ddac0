"""What the client bot needs to know beyond the services."""

from __future__ import annotations

from dataclasses import dataclass

from controller.payments.stars import StarsProvider


@dataclass(frozen=True, slots=True)
class ClientSettings:
    # None when Telegram Stars payments are switched off (VPNBOT_PAYMENTS__STARS_ENABLED).
    stars: StarsProvider | None
