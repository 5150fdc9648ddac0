"""Every domain error has a deliberate HTTP status (controller.api.errors)."""

from __future__ import annotations

import importlib
import pkgutil

import pytest

import controller
from controller.api.errors import HTTP_STATUS, status_for
from controller.domain import errors as e

# The statuses the edge may answer a refusal with; a 500 or a 2xx would be a mapping bug.
DELIBERATE = {400, 403, 404, 409, 503}


def _import_controller() -> None:
    # An error class defined in any controller module counts, not only domain/errors.py.
    for module in pkgutil.walk_packages(controller.__path__, "controller."):
        importlib.import_module(module.name)


def _tree(root: type[e.DomainError]) -> list[type[e.DomainError]]:
    found = [root]
    for sub in root.__subclasses__():
        found.extend(_tree(sub))
    return found


def _production_errors() -> list[type[e.DomainError]]:
    _import_controller()
    return [cls for cls in _tree(e.DomainError) if not cls.__module__.startswith("tests.")]


def test_every_domain_error_class_has_its_own_status() -> None:
    errors = _production_errors()
    assert e.EnrollmentRefused in errors and e.PaymentProviderUnavailable in errors  # walked
    unmapped = [cls.__name__ for cls in errors if cls not in HTTP_STATUS]
    assert unmapped == [], f"map these in controller/api/errors.py HTTP_STATUS: {unmapped}"
    for cls in errors:
        assert HTTP_STATUS[cls] in DELIBERATE, cls.__name__


def test_the_mapping_lists_only_domain_errors() -> None:
    assert set(HTTP_STATUS) == set(_production_errors())


@pytest.mark.parametrize(
    ("error", "status"),
    [
        (e.UserNotFound("x"), 404),
        (e.PaymentNotFound("x"), 404),
        (e.InvalidInput("x"), 400),
        (e.AlreadyExists("x"), 409),
        (e.PaymentMismatch("x"), 409),
        (e.EnrollmentRefused("x"), 403),
        (e.UserBanned("x"), 403),
        (e.PromoCodeExhausted("x"), 409),
        (e.NoActiveSubscription("x"), 403),
        (e.NoServerAvailable("x"), 503),
        (e.PaymentProviderUnavailable("x"), 503),
    ],
)
def test_status_of_an_error(error: e.DomainError, status: int) -> None:
    assert status_for(error) == status


class _UnlistedNotFound(e.NotFound):
    code = "unlisted"


def test_an_unlisted_subclass_gets_its_nearest_ancestors_status() -> None:
    # Never a 500 for a new error class in production, even before it is mapped.
    assert status_for(_UnlistedNotFound("x")) == 404
