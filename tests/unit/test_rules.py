"""Pure business rules of the domain, and the domain error hierarchy."""

from __future__ import annotations

import inspect
import re
from datetime import UTC, datetime, timedelta, timezone

import pytest

from controller.domain import errors, rules
from controller.domain.errors import DomainError, InvalidInput
from controller.domain.rules import (
    GIB,
    MAX_DEVICE_LIMIT,
    MAX_DURATION_DAYS,
    MAX_TELEGRAM_ID,
    MAX_TRAFFIC_GB,
    extended_expiry,
    normalize_language,
    normalize_promo_code,
    traffic_limit_bytes,
    traffic_limit_reached,
    validate_days,
    validate_device_limit,
    validate_language,
    validate_plan_name,
    validate_promo_value,
    validate_telegram_id,
    validate_traffic_limit_gb,
)

NOW = datetime(2026, 1, 15, 12, 0, tzinfo=UTC)

# --- extended_expiry ------------------------------------------------------------------------


def test_future_expiry_extends_from_expiry_so_time_left_is_kept() -> None:
    expires = NOW + timedelta(days=10, hours=3)
    assert extended_expiry(expires, NOW, 30) == expires + timedelta(days=30)


def test_past_expiry_extends_from_now() -> None:
    expires = NOW - timedelta(days=5)
    assert extended_expiry(expires, NOW, 30) == NOW + timedelta(days=30)


def test_no_expiry_extends_from_now() -> None:
    assert extended_expiry(None, NOW, 7) == NOW + timedelta(days=7)


def test_expiry_exactly_now_extends_from_now() -> None:
    assert extended_expiry(NOW, NOW, 1) == NOW + timedelta(days=1)


def test_expiry_one_microsecond_ahead_is_kept() -> None:
    expires = NOW + timedelta(microseconds=1)
    assert extended_expiry(expires, NOW, 1) == expires + timedelta(days=1)


def test_extended_expiry_compares_across_time_zones() -> None:
    moscow = timezone(timedelta(hours=3))
    # 14:00 in Moscow is 11:00 UTC: already in the past relative to NOW (12:00 UTC).
    past_in_moscow = datetime(2026, 1, 15, 14, 0, tzinfo=moscow)
    assert extended_expiry(past_in_moscow, NOW, 2) == NOW + timedelta(days=2)
    # 16:00 in Moscow is 13:00 UTC: one hour left, which is kept.
    future_in_moscow = datetime(2026, 1, 15, 16, 0, tzinfo=moscow)
    result = extended_expiry(future_in_moscow, NOW, 2)
    assert result == NOW + timedelta(days=2, hours=1)


def test_repeated_early_renewals_accumulate() -> None:
    expires = None
    for _ in range(3):
        expires = extended_expiry(expires, NOW, 30)
    assert expires == NOW + timedelta(days=90)


def test_extended_expiry_refuses_naive_now() -> None:
    with pytest.raises(ValueError, match="naive"):
        extended_expiry(None, NOW.replace(tzinfo=None), 30)


def test_extended_expiry_refuses_naive_expiry() -> None:
    with pytest.raises(ValueError, match="naive"):
        extended_expiry((NOW + timedelta(days=1)).replace(tzinfo=None), NOW, 30)


@pytest.mark.parametrize("days", [0, -1, MAX_DURATION_DAYS + 1, True, 1.5, "30", None])
def test_extended_expiry_refuses_bad_days(days: object) -> None:
    with pytest.raises(InvalidInput):
        extended_expiry(None, NOW, days)  # type: ignore[arg-type]


# --- validate_days --------------------------------------------------------------------------


@pytest.mark.parametrize("days", [1, 30, 365, MAX_DURATION_DAYS])
def test_validate_days_accepts(days: int) -> None:
    assert validate_days(days) == days


@pytest.mark.parametrize("days", [0, -30, MAX_DURATION_DAYS + 1, True, False, 30.0, "30", None])
def test_validate_days_refuses(days: object) -> None:
    with pytest.raises(InvalidInput, match="days"):
        validate_days(days)  # type: ignore[arg-type]


# --- device and traffic limits --------------------------------------------------------------


@pytest.mark.parametrize("limit", [1, 5, MAX_DEVICE_LIMIT])
def test_validate_device_limit_accepts(limit: int) -> None:
    assert validate_device_limit(limit) == limit


@pytest.mark.parametrize("limit", [0, -1, MAX_DEVICE_LIMIT + 1, True, False])
def test_validate_device_limit_refuses(limit: object) -> None:
    with pytest.raises(InvalidInput, match="device limit"):
        validate_device_limit(limit)  # type: ignore[arg-type]


@pytest.mark.parametrize("limit", [None, 1, 100, MAX_TRAFFIC_GB])
def test_validate_traffic_limit_gb_accepts(limit: int | None) -> None:
    assert validate_traffic_limit_gb(limit) == limit


@pytest.mark.parametrize("limit", [0, -1, MAX_TRAFFIC_GB + 1, True, False])
def test_validate_traffic_limit_gb_refuses(limit: object) -> None:
    with pytest.raises(InvalidInput, match="traffic limit"):
        validate_traffic_limit_gb(limit)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "validator", [validate_device_limit, validate_traffic_limit_gb, validate_telegram_id]
)
def test_integer_validators_refuse_fractions(validator: object) -> None:
    with pytest.raises(InvalidInput):
        validator(2.5)  # type: ignore[operator]


def test_traffic_limit_bytes_is_gibibytes() -> None:
    assert GIB == 1073741824
    assert traffic_limit_bytes(1) == 1073741824
    assert traffic_limit_bytes(50) == 50 * 1024**3
    assert traffic_limit_bytes(None) is None


@pytest.mark.parametrize(
    ("used", "limit", "reached"),
    [
        (0, None, False),
        (10**18, None, False),
        (0, GIB, False),
        (GIB - 1, GIB, False),
        (GIB, GIB, True),
        (GIB + 1, GIB, True),
    ],
)
def test_traffic_limit_reached(used: int, limit: int | None, reached: bool) -> None:
    assert traffic_limit_reached(used, limit) is reached


# --- plan names -----------------------------------------------------------------------------


def test_validate_plan_name_strips_and_bounds_length() -> None:
    assert validate_plan_name("  Month  ") == "Month"
    assert validate_plan_name("x" * 128) == "x" * 128
    for bad in ("", "   ", "x" * 129):
        with pytest.raises(InvalidInput):
            validate_plan_name(bad)


# --- languages ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("code", "expected"),
    [
        (None, "ru"),
        ("", "ru"),
        ("ru", "ru"),
        ("en", "en"),
        ("en-US", "en"),
        ("en_GB", "en"),
        ("EN", "en"),
        (" en-us ", "en"),
        ("ru-RU", "ru"),
        ("de", "ru"),
        ("uk", "ru"),
        ("zh-hans", "ru"),
        ("english", "ru"),
    ],
)
def test_normalize_language(code: str | None, expected: str) -> None:
    assert normalize_language(code) == expected


@pytest.mark.parametrize(("value", "expected"), [("ru", "ru"), ("EN", "en"), (" en ", "en")])
def test_validate_language_accepts(value: str, expected: str) -> None:
    assert validate_language(value) == expected


@pytest.mark.parametrize("value", ["", "de", "en-US", "russian"])
def test_validate_language_refuses(value: str) -> None:
    with pytest.raises(InvalidInput, match="language"):
        validate_language(value)


# --- Telegram ids ---------------------------------------------------------------------------


@pytest.mark.parametrize("telegram_id", [1, 123456789, 7_000_000_000, MAX_TELEGRAM_ID - 1])
def test_validate_telegram_id_accepts(telegram_id: int) -> None:
    assert validate_telegram_id(telegram_id) == telegram_id


@pytest.mark.parametrize(
    "telegram_id", [0, -1, -1001234567890, MAX_TELEGRAM_ID, 2**63, True, False]
)
def test_validate_telegram_id_refuses(telegram_id: int) -> None:
    with pytest.raises(InvalidInput, match="Telegram user id"):
        validate_telegram_id(telegram_id)


def test_max_telegram_id_is_52_bits() -> None:
    assert MAX_TELEGRAM_ID == 2**52


# --- promo codes ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("code", "expected"),
    [
        ("summer25", "SUMMER25"),
        ("  new-year_2026 ", "NEW-YEAR_2026"),
        ("ABC", "ABC"),
        ("A" * 32, "A" * 32),
    ],
)
def test_normalize_promo_code_accepts(code: str, expected: str) -> None:
    assert normalize_promo_code(code) == expected


@pytest.mark.parametrize(
    "code",
    ["", "AB", "A" * 33, "SUMMER 25", "PROMO!", "ПРОМО", "ABC\nDEF", "ABC.DEF", "A$B", "%%%"],
)
def test_normalize_promo_code_refuses(code: str) -> None:
    with pytest.raises(InvalidInput, match="promo code"):
        normalize_promo_code(code)


@pytest.mark.parametrize("value", [1, 50, 100])
def test_validate_promo_value_percent_accepts(value: int) -> None:
    assert validate_promo_value(True, value) == value


@pytest.mark.parametrize("value", [0, -5, 101])
def test_validate_promo_value_percent_refuses(value: int) -> None:
    with pytest.raises(InvalidInput, match="percent"):
        validate_promo_value(True, value)


@pytest.mark.parametrize("value", [1, 7, 365, MAX_DURATION_DAYS])
def test_validate_promo_value_days_accepts(value: int) -> None:
    assert validate_promo_value(False, value) == value


@pytest.mark.parametrize("value", [0, -1, MAX_DURATION_DAYS + 1])
def test_validate_promo_value_days_refuses(value: int) -> None:
    with pytest.raises(InvalidInput, match="days"):
        validate_promo_value(False, value)


def test_days_promo_may_exceed_100_but_percent_may_not() -> None:
    assert validate_promo_value(False, 200) == 200
    with pytest.raises(InvalidInput):
        validate_promo_value(True, 200)


@pytest.mark.parametrize("kind_is_percent", [True, False])
@pytest.mark.parametrize("value", [True, 10.0, "10", None])
def test_validate_promo_value_refuses_non_integers(kind_is_percent: bool, value: object) -> None:
    with pytest.raises(InvalidInput, match="whole number"):
        validate_promo_value(kind_is_percent, value)  # type: ignore[arg-type]


def test_rule_errors_are_domain_errors() -> None:
    assert issubclass(InvalidInput, DomainError)
    with pytest.raises(DomainError):
        rules.validate_days(0)


# --- the error hierarchy --------------------------------------------------------------------


def _error_classes() -> list[type[DomainError]]:
    return [
        obj
        for _, obj in inspect.getmembers(errors, inspect.isclass)
        if obj.__module__ == errors.__name__
    ]


def _docstring_tree() -> dict[str, str | None]:
    """Map each class named in the module docstring's tree to its parent in that tree."""
    assert errors.__doc__ is not None
    parents: dict[str, str | None] = {}
    stack: list[tuple[int, str]] = []
    for line in errors.__doc__.splitlines():
        match = re.match(r"^(?P<indent>[\s│]*)(?:[├└]── )?(?P<name>[A-Z][A-Za-z]+)\b", line)
        if not match or not line.startswith("    "):
            continue
        name = match["name"]
        if name not in {cls.__name__ for cls in _error_classes()}:
            continue
        depth = len(match.group(0)) - len(name)
        while stack and stack[-1][0] >= depth:
            stack.pop()
        parents[name] = stack[-1][1] if stack else None
        stack.append((depth, name))
    return parents


def test_module_defines_the_expected_error_classes() -> None:
    names = {cls.__name__ for cls in _error_classes()}
    assert {"DomainError", "NotFound", "InvalidInput", "Conflict", "Forbidden"} <= names
    assert len(names) >= 18


def test_every_error_subclasses_domain_error() -> None:
    for cls in _error_classes():
        assert issubclass(cls, DomainError), cls
        assert issubclass(cls, Exception), cls


def test_error_codes_are_unique_and_owned_by_each_class() -> None:
    classes = _error_classes()
    codes = [cls.code for cls in classes]
    assert len(codes) == len(set(codes)), codes
    for cls in classes:
        # Each class sets its own code rather than inheriting its parent's.
        assert "code" in vars(cls), cls
        assert re.fullmatch(r"[a-z][a-z_]*", cls.code), cls.code


def test_docstring_tree_mentions_every_class() -> None:
    tree = _docstring_tree()
    assert set(tree) == {cls.__name__ for cls in _error_classes()}


def test_docstring_tree_matches_the_real_inheritance() -> None:
    tree = _docstring_tree()
    for cls in _error_classes():
        parent = tree[cls.__name__]
        if cls is DomainError:
            assert parent is None
        else:
            assert parent == cls.__bases__[0].__name__, cls


def test_errors_carry_their_message() -> None:
    for cls in _error_classes():
        exc = cls("something went wrong")
        assert exc.message == "something went wrong"
        assert str(exc) == "something went wrong"
        assert exc.code == cls.code


def test_specific_errors_are_caught_by_their_family() -> None:
    with pytest.raises(errors.NotFound):
        raise errors.UserNotFound("no such user")
    with pytest.raises(errors.Conflict):
        raise errors.PromoCodeAlreadyUsed("used")
    with pytest.raises(errors.Unavailable):
        raise errors.PromoCodeInactive("expired")
    assert not issubclass(errors.PromoCodeExhausted, errors.Unavailable)
