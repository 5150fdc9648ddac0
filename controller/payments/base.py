"""The payment provider interface: each provider turns a plan's price into its own charge."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True, slots=True)
class Charge:
    """What the provider asks the buyer for, in the provider's currency and minor units."""

    amount_minor: int
    currency: str


class PaymentProvider(Protocol):
    # Stored in payments.provider; with the provider's charge id it identifies a payment.
    name: str

    def charge_for(self, price_minor: int, currency: str) -> Charge | None:
        """The charge for a price, or None when this provider cannot charge it."""
        ...
