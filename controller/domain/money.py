"""Money as integer minor units.

A price is always an ``int`` count of the currency's minor unit (kopecks for RUB, cents for
USD, whole stars for Telegram Stars ``XTR``) together with its ISO-4217-style code. Floats are
never used: decimal text from a person is parsed digit by digit and refused if it has more
fractional digits than the currency allows.
"""

from __future__ import annotations

import re

from controller.domain.errors import InvalidInput

# Minor-unit exponents of the currencies a seller is likely to price in. Unknown codes are
# refused rather than guessed: a wrong exponent would misprice by a factor of 100.
CURRENCY_EXPONENTS: dict[str, int] = {
    "RUB": 2,
    "USD": 2,
    "EUR": 2,
    "UAH": 2,
    "KZT": 2,
    "BYN": 2,
    "UZS": 2,
    "USDT": 2,
    "XTR": 0,  # Telegram Stars: whole stars only
}

MAX_AMOUNT_MINOR = 10**12

_CURRENCY_RE = re.compile(r"^[A-Z]{3,4}$")
_AMOUNT_RE = re.compile(r"^(-?)(\d+)(?:[.,](\d+))?$")
_MAX_AMOUNT_TEXT = 40  # longer is never a price; keeps int() cheap


def normalize_currency(code: str) -> str:
    value = code.strip().upper()
    if not _CURRENCY_RE.match(value) or value not in CURRENCY_EXPONENTS:
        known = ", ".join(sorted(CURRENCY_EXPONENTS))
        raise InvalidInput(f"unknown currency {code!r}; known currencies: {known}")
    return value


def parse_amount(text: str, currency: str) -> int:
    """Parse a human amount such as ``"199"``, ``"199.90"`` or ``"199,90"`` into minor units.

    Only plain decimal notation is accepted (no exponents, no thousands separators), so the
    conversion is exact digit arithmetic: no rounding, no huge intermediate numbers.
    """
    currency = normalize_currency(currency)
    exponent = CURRENCY_EXPONENTS[currency]
    raw = text.strip()
    match = _AMOUNT_RE.match(raw) if len(raw) <= _MAX_AMOUNT_TEXT else None
    if match is None and len(raw) > _MAX_AMOUNT_TEXT and raw.replace(".", "").isdigit():
        raise InvalidInput(f"amount {text!r} is unreasonably large")
    if match is None:
        raise InvalidInput(f"amount {text!r} is not a number (write e.g. 199 or 199.90)")
    sign, whole, fraction = match.group(1), match.group(2), (match.group(3) or "").rstrip("0")
    if sign and (int(whole) or fraction):
        raise InvalidInput(f"amount {text!r} must not be negative")
    if len(fraction) > exponent:
        raise InvalidInput(
            f"amount {text!r} has more than {exponent} decimal places for {currency}"
        )
    if len(whole.lstrip("0")) > len(str(MAX_AMOUNT_MINOR)):
        raise InvalidInput(f"amount {text!r} is unreasonably large")
    minor = int(whole + fraction.ljust(exponent, "0"))
    validate_amount_minor(minor)
    return minor


def validate_amount_minor(amount_minor: int) -> int:
    if isinstance(amount_minor, bool) or not isinstance(amount_minor, int):
        raise InvalidInput("amount must be an integer number of minor units")
    if amount_minor < 0:
        raise InvalidInput("amount must not be negative")
    if amount_minor > MAX_AMOUNT_MINOR:
        raise InvalidInput("amount is unreasonably large")
    return amount_minor


def format_amount(amount_minor: int, currency: str) -> str:
    """Render minor units for people: ``19990, "RUB"`` -> ``"199.90 RUB"``."""
    exponent = CURRENCY_EXPONENTS.get(currency, 2)
    if exponent == 0:
        return f"{amount_minor} {currency}"
    sign = "-" if amount_minor < 0 else ""
    whole, frac = divmod(abs(amount_minor), 10**exponent)
    return f"{sign}{whole}.{frac:0{exponent}d} {currency}"


def apply_percent_discount(amount_minor: int, percent: int) -> int:
    """Price after a percent discount; the discount is rounded down (in the seller's favour)."""
    if not 1 <= percent <= 100:
        raise InvalidInput("a discount must be between 1 and 100 percent")
    discount = amount_minor * percent // 100
    return amount_minor - discount
