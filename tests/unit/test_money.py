"""Money as integer minor units: parsing, formatting and discounts."""

from __future__ import annotations

import time

import pytest

from controller.domain import money
from controller.domain.errors import DomainError, InvalidInput
from controller.domain.money import (
    CURRENCY_EXPONENTS,
    MAX_AMOUNT_MINOR,
    apply_percent_discount,
    format_amount,
    normalize_currency,
    parse_amount,
    validate_amount_minor,
)

# --- normalize_currency ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "expected"),
    [("RUB", "RUB"), ("rub", "RUB"), ("  usd ", "USD"), ("Xtr", "XTR"), ("usdt", "USDT")],
)
def test_normalize_currency_accepts_known_codes(raw: str, expected: str) -> None:
    assert normalize_currency(raw) == expected


@pytest.mark.parametrize("raw", ["", "   ", "GBP", "RU", "RUBLE", "R1B", "ЕUR", "US D", "BTC"])
def test_normalize_currency_refuses_unknown_codes(raw: str) -> None:
    with pytest.raises(InvalidInput, match="unknown currency") as info:
        normalize_currency(raw)
    # The message lists what is accepted, so the person can correct the typo.
    assert "RUB" in info.value.message
    assert "XTR" in info.value.message


def test_every_known_currency_normalizes_to_itself() -> None:
    for code in CURRENCY_EXPONENTS:
        assert normalize_currency(code.lower()) == code


def test_telegram_stars_have_no_minor_unit() -> None:
    assert CURRENCY_EXPONENTS["XTR"] == 0
    assert CURRENCY_EXPONENTS["RUB"] == 2


# --- parse_amount ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "currency", "expected"),
    [
        ("199", "RUB", 19900),
        ("199.90", "RUB", 19990),
        ("199,90", "RUB", 19990),
        ("199.9", "RUB", 19990),
        ("0.01", "RUB", 1),
        ("0", "RUB", 0),
        ("  42.50  ", "usd", 4250),
        ("199.00", "EUR", 19900),
        ("250", "XTR", 250),
        ("250.0", "XTR", 250),
        ("250,00", "XTR", 250),
    ],
)
def test_parse_amount_accepts_human_amounts(text: str, currency: str, expected: int) -> None:
    result = parse_amount(text, currency)
    assert result == expected
    assert type(result) is int


def test_parse_amount_does_not_go_through_float() -> None:
    # 0.29 * 100 == 28.999999999999996 as a float; exact parsing must give exactly 29.
    assert parse_amount("0.29", "RUB") == 29
    assert parse_amount("1.15", "USD") == 115
    assert parse_amount("4.35", "EUR") == 435


@pytest.mark.parametrize(
    ("text", "currency"),
    [("199.999", "RUB"), ("0.001", "USD"), ("1.5", "XTR"), ("10,01", "XTR"), ("0.5", "XTR")],
)
def test_parse_amount_refuses_too_many_decimals(text: str, currency: str) -> None:
    with pytest.raises(InvalidInput, match="decimal places"):
        parse_amount(text, currency)


@pytest.mark.parametrize("text", ["-1", "-0.01", " -199.90 "])
def test_parse_amount_refuses_negative(text: str) -> None:
    with pytest.raises(InvalidInput, match="negative"):
        parse_amount(text, "RUB")


@pytest.mark.parametrize(
    "text",
    [
        "NaN",
        "nan",
        "sNaN",
        "inf",
        "Infinity",
        "-Infinity",
        "",
        "  ",
        "abc",
        "0x10",
        "1.2.3",
        "1,000.50",
        "1 000",
        "1_000",
        "--1",
        "1e3",
        "1E15",
        "199 RUB",
    ],
)
def test_parse_amount_refuses_non_numbers(text: str) -> None:
    with pytest.raises(InvalidInput, match="not a number"):
        parse_amount(text, "RUB")


def test_parse_amount_refuses_unknown_currency_before_parsing() -> None:
    with pytest.raises(InvalidInput, match="unknown currency"):
        parse_amount("199", "GBP")


def test_parse_amount_limit_is_inclusive() -> None:
    assert parse_amount("10000000000", "RUB") == MAX_AMOUNT_MINOR
    assert parse_amount(str(MAX_AMOUNT_MINOR), "XTR") == MAX_AMOUNT_MINOR
    with pytest.raises(InvalidInput, match="unreasonably large"):
        parse_amount("10000000000.01", "RUB")
    with pytest.raises(InvalidInput, match="unreasonably large"):
        parse_amount(str(MAX_AMOUNT_MINOR + 1), "XTR")


@pytest.mark.parametrize(
    "text", ["99999999999999999999", "1" * 41, "9" * 10_000, "123456789012345.5"]
)
def test_parse_amount_refuses_huge_amounts(text: str) -> None:
    with pytest.raises(InvalidInput, match="unreasonably large"):
        parse_amount(text, "RUB")


def test_parse_amount_leading_zeros_do_not_count_as_size() -> None:
    assert parse_amount("0" * 30 + "199.90", "RUB") == 19990


@pytest.mark.parametrize(
    ("text", "currency"),
    [("1e999999", "RUB"), ("1e1000000", "XTR"), ("1e999997", "RUB"), ("9" * 100_000, "RUB")],
)
def test_parse_amount_refuses_huge_exponents_and_lengths_quickly(text: str, currency: str) -> None:
    # Regression: a Decimal-based parser let decimal.Overflow escape for "1e999999" and spent
    # ~26 s of CPU building the integer for "1e999997" before the size check.
    started = time.perf_counter()
    with pytest.raises(InvalidInput):
        parse_amount(text, currency)
    assert time.perf_counter() - started < 0.1


@pytest.mark.parametrize(
    ("text", "currency"),
    [
        ("0.999999999999999999999999999999", "RUB"),
        ("1.000000000000000000000000000001", "RUB"),
        ("5.0000000000000000000000000000001", "XTR"),
        ("0.001", "RUB"),
    ],
)
def test_parse_amount_refuses_extra_decimals_however_many_digits(text: str, currency: str) -> None:
    # Regression: scaling with a 28-digit decimal context rounded these to whole minor units.
    with pytest.raises(InvalidInput, match="decimal places"):
        parse_amount(text, currency)


def test_parse_amount_ignores_trailing_zeros_in_the_fraction() -> None:
    assert parse_amount("199.900000", "RUB") == 19990
    assert parse_amount("250.000", "XTR") == 250


# --- validate_amount_minor ------------------------------------------------------------------


@pytest.mark.parametrize("value", [0, 1, 19990, MAX_AMOUNT_MINOR])
def test_validate_amount_minor_accepts(value: int) -> None:
    assert validate_amount_minor(value) == value


@pytest.mark.parametrize("value", [-1, MAX_AMOUNT_MINOR + 1, True, False, 1.0, "100", None])
def test_validate_amount_minor_refuses(value: object) -> None:
    with pytest.raises(InvalidInput):
        validate_amount_minor(value)  # type: ignore[arg-type]


# --- format_amount --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("minor", "currency", "expected"),
    [
        (19990, "RUB", "199.90 RUB"),
        (19900, "RUB", "199.00 RUB"),
        (5, "USD", "0.05 USD"),
        (0, "EUR", "0.00 EUR"),
        (-150, "RUB", "-1.50 RUB"),
        (-5, "RUB", "-0.05 RUB"),
        (250, "XTR", "250 XTR"),
        (0, "XTR", "0 XTR"),
        (MAX_AMOUNT_MINOR, "RUB", "10000000000.00 RUB"),
    ],
)
def test_format_amount(minor: int, currency: str, expected: str) -> None:
    assert format_amount(minor, currency) == expected


@pytest.mark.parametrize("currency", sorted(CURRENCY_EXPONENTS))
@pytest.mark.parametrize("minor", [0, 1, 99, 100, 19990, 123456789])
def test_format_then_parse_round_trips(minor: int, currency: str) -> None:
    text, code = format_amount(minor, currency).split(" ")
    assert code == currency
    assert parse_amount(text, code) == minor


# --- apply_percent_discount -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("amount", "percent", "expected"),
    [
        (10000, 10, 9000),
        (10000, 100, 0),
        (10000, 1, 9900),
        (19990, 15, 16992),  # discount 2998.5 -> 2998 (down), price 16992
        (199, 15, 170),  # discount 29.85 -> 29
        (99, 1, 99),  # discount 0.99 -> 0: the seller keeps the kopeck
        (1, 50, 1),
        (0, 50, 0),
        (250, 33, 168),  # XTR: discount 82.5 -> 82
    ],
)
def test_apply_percent_discount_rounds_discount_down(
    amount: int, percent: int, expected: int
) -> None:
    assert apply_percent_discount(amount, percent) == expected


def test_apply_percent_discount_never_exceeds_price_nor_goes_negative() -> None:
    for amount in (0, 1, 7, 99, 100, 101, 19990):
        for percent in range(1, 101):
            price = apply_percent_discount(amount, percent)
            assert 0 <= price <= amount
            # Rounding the discount down means the price is rounded up.
            exact_price = amount * (100 - percent) / 100
            assert exact_price <= price < exact_price + 1


@pytest.mark.parametrize("percent", [0, -1, 101, 1000])
def test_apply_percent_discount_refuses_out_of_range(percent: int) -> None:
    with pytest.raises(InvalidInput, match="between 1 and 100"):
        apply_percent_discount(10000, percent)


def test_invalid_input_is_a_domain_error() -> None:
    with pytest.raises(DomainError):
        money.parse_amount("x", "RUB")
