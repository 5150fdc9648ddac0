"""Payment providers: one module per provider, all behind :class:`PaymentProvider`."""

from __future__ import annotations

from controller.payments.base import Charge, PaymentProvider
from controller.payments.stars import StarsProvider
from controller.settings import PaymentSettings


def providers_from(settings: PaymentSettings) -> dict[str, PaymentProvider]:
    """The enabled providers by name (the name stored in ``payments.provider``)."""
    providers: dict[str, PaymentProvider] = {}
    if settings.stars_enabled:
        stars = StarsProvider(settings.stars_unit_price_minor)
        providers[stars.name] = stars
    return providers


__all__ = ["Charge", "PaymentProvider", "StarsProvider", "providers_from"]
