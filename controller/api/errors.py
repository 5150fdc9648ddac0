"""The HTTP edge of the domain error tree (:mod:`controller.domain.errors`).

Routes call a service and let its :class:`DomainError` propagate; the handlers installed here
turn it into one status per error class and the body ``{"error": code, "detail": message}``.
The code is the error's stable machine code, the detail the English message the service
wrote; nothing of the request is added, so a reply never echoes input (DESIGN "Public HTTP").
Request bodies that fail validation get the same shape, without pydantic's echo of the input.

Every concrete error class has its own entry in :data:`HTTP_STATUS`, chosen on purpose (a test
walks the tree and fails on a class without one). At run time an unlisted subclass still gets
its nearest listed ancestor's status rather than a 500.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import structlog
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from controller.domain import errors as e

log = structlog.get_logger(__name__)

HTTP_STATUS: Mapping[type[e.DomainError], int] = {
    e.DomainError: 400,
    # A referenced record does not exist (or, for payments, is not the caller's: the same
    # answer, so ids cannot be probed).
    e.NotFound: 404,
    e.UserNotFound: 404,
    e.PlanNotFound: 404,
    e.SubscriptionNotFound: 404,
    e.PromoCodeNotFound: 404,
    e.NodeNotFound: 404,
    e.ConfigNotFound: 404,
    e.PaymentNotFound: 404,
    e.TicketNotFound: 404,
    e.InvalidInput: 400,
    # The request is well-formed but clashes with the current state.
    e.Conflict: 409,
    e.AlreadyExists: 409,
    e.InvalidStateTransition: 409,
    e.PromoCodeAlreadyUsed: 409,
    e.TrialAlreadyUsed: 409,
    e.PaymentMismatch: 409,
    e.Forbidden: 403,
    e.UserBanned: 403,
    e.EnrollmentRefused: 403,
    # An exhausted quota is a state of the record, not request pacing: 409, not 429 (which
    # would invite the client to retry later).
    e.LimitReached: 409,
    e.PromoCodeExhausted: 409,
    e.Unavailable: 409,
    e.PlanInactive: 409,
    e.PromoCodeInactive: 409,
    e.TrialUnavailable: 409,
    # The caller lacks access until they pay: refused, like a ban.
    e.NoActiveSubscription: 403,
    # Capacity and providers come back without the caller changing anything: retryable.
    e.NoServerAvailable: 503,
    e.PaymentProviderUnavailable: 503,
}

VALIDATION_CODE = "invalid_request"
# Bounds a reply to a body with thousands of bad fields.
_MAX_VALIDATION_ITEMS = 10


def status_for(error: e.DomainError) -> int:
    for cls in type(error).__mro__:
        if issubclass(cls, e.DomainError) and cls in HTTP_STATUS:
            return HTTP_STATUS[cls]
    raise AssertionError("DomainError itself is mapped")


def error_body(code: str, detail: str) -> dict[str, str]:
    return {"error": code, "detail": detail}


def _peer(request: Request) -> str:
    return request.client.host if request.client else "?"


async def _on_domain_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, e.DomainError)
    status = status_for(exc)
    log.warning(
        "api_request_refused",
        path=request.url.path,
        status=status,
        error=exc.code,
        detail=exc.message,
        peer=_peer(request),
    )
    return JSONResponse(error_body(exc.code, exc.message), status_code=status)


def _describe(error: Mapping[str, Any]) -> str:
    # The location names a declared field except for an unexpected one, whose name is the
    # client's own text: that one is not repeated.
    if error.get("type") == "extra_forbidden":
        return "unexpected field"
    where = ".".join(str(part) for part in error.get("loc", ())[1:])
    message = str(error.get("msg", "invalid"))
    return f"{where}: {message}" if where else message


async def _on_validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    problems = [_describe(error) for error in exc.errors()[:_MAX_VALIDATION_ITEMS]]
    log.warning("api_request_invalid", path=request.url.path, peer=_peer(request))
    return JSONResponse(error_body(VALIDATION_CODE, "; ".join(problems)), status_code=422)


def install_error_handlers(app: FastAPI) -> None:
    """Install the one mapping on ``app``; every app the controller builds calls this."""
    app.add_exception_handler(e.DomainError, _on_domain_error)
    app.add_exception_handler(RequestValidationError, _on_validation_error)
