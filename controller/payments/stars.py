"""Telegram Stars (XTR): paid inside Telegram, no provider account or token needed."""

from __future__ import annotations

from controller.payments.base import Charge

STARS = "XTR"


class StarsProvider:
    name = "telegram_stars"

    def __init__(self, unit_price_minor: int) -> None:
        if isinstance(unit_price_minor, bool) or unit_price_minor < 1:
            raise ValueError("the price of one star must be at least one minor unit")
        self.unit_price_minor = unit_price_minor

    def charge_for(self, price_minor: int, currency: str) -> Charge | None:
        """A plan priced in stars is charged as it is; any other price is converted at the
        configured price of one star, rounded up (the seller never receives less than the
        plan's price), and never below one star (Telegram refuses an empty invoice). Nothing
        to pay is not a charge."""
        if isinstance(price_minor, bool) or not isinstance(price_minor, int) or price_minor < 1:
            return None
        if currency == STARS:
            return Charge(price_minor, STARS)
        stars = -(-price_minor // self.unit_price_minor)  # integer ceiling division
        return Charge(max(stars, 1), STARS)
