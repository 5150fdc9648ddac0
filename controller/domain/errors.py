"""The domain error hierarchy.

Every error a use case can refuse with derives from :class:`DomainError`. Each error carries a
stable machine ``code`` (used by the bots to pick a translated text and by the API to pick a
status) and an English ``message`` for logs and the CLI. Errors are translated only at the
edge: the CLI prints the message, the API maps the class to an HTTP status, the bots map the
code to a Russian or English text.

    DomainError
    ├── NotFound                    a referenced record does not exist
    │   ├── UserNotFound
    │   ├── PlanNotFound
    │   ├── SubscriptionNotFound
    │   ├── PromoCodeNotFound
    │   ├── NodeNotFound
    │   ├── ConfigNotFound
    │   ├── PaymentNotFound         also another user's payment or a forged invoice payload
    │   └── TicketNotFound
    ├── InvalidInput                a value breaks a business rule (bad price, days, percent...)
    ├── Conflict                    the request clashes with the current state
    │   ├── AlreadyExists
    │   ├── InvalidStateTransition  e.g. resuming a subscription that is not suspended
    │   ├── PromoCodeAlreadyUsed
    │   ├── TrialAlreadyUsed        once per user, and only for users without active access
    │   └── PaymentMismatch         the amount or currency paid is not the invoice's
    ├── Forbidden                   the actor may not do this
    │   ├── UserBanned
    │   └── EnrollmentRefused       an expired, used or unknown enrollment token
    ├── LimitReached                a quota is exhausted
    │   └── PromoCodeExhausted
    └── Unavailable                 the thing exists but cannot be used now
        ├── PlanInactive
        ├── PromoCodeInactive       disabled, not yet valid, expired, or for another plan
        ├── NoActiveSubscription    access needs an active subscription
        ├── NoServerAvailable       no node can take a config of that protocol now
        ├── TrialUnavailable        no trial plan is on sale
        └── PaymentProviderUnavailable  the provider is off or cannot charge that currency

Infrastructure failures (database down, disk full) are not domain errors and are left to
propagate.
"""

from __future__ import annotations


class DomainError(Exception):
    code = "domain_error"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class NotFound(DomainError):
    code = "not_found"


class UserNotFound(NotFound):
    code = "user_not_found"


class PlanNotFound(NotFound):
    code = "plan_not_found"


class SubscriptionNotFound(NotFound):
    code = "subscription_not_found"


class PromoCodeNotFound(NotFound):
    code = "promo_not_found"


class NodeNotFound(NotFound):
    code = "node_not_found"


class ConfigNotFound(NotFound):
    code = "config_not_found"


class PaymentNotFound(NotFound):
    code = "payment_not_found"


class TicketNotFound(NotFound):
    code = "ticket_not_found"


class InvalidInput(DomainError):
    code = "invalid_input"


class Conflict(DomainError):
    code = "conflict"


class AlreadyExists(Conflict):
    code = "already_exists"


class InvalidStateTransition(Conflict):
    code = "invalid_state"


class PromoCodeAlreadyUsed(Conflict):
    code = "promo_already_used"


class TrialAlreadyUsed(Conflict):
    code = "trial_used"


class PaymentMismatch(Conflict):
    code = "payment_mismatch"


class Forbidden(DomainError):
    code = "forbidden"


class UserBanned(Forbidden):
    code = "user_banned"


class EnrollmentRefused(Forbidden):
    code = "enrollment_refused"


class LimitReached(DomainError):
    code = "limit_reached"


class PromoCodeExhausted(LimitReached):
    code = "promo_exhausted"


class Unavailable(DomainError):
    code = "unavailable"


class PlanInactive(Unavailable):
    code = "plan_inactive"


class PromoCodeInactive(Unavailable):
    code = "promo_inactive"


class NoActiveSubscription(Unavailable):
    code = "no_active_subscription"


class NoServerAvailable(Unavailable):
    code = "no_server_available"


class TrialUnavailable(Unavailable):
    code = "trial_unavailable"


class PaymentProviderUnavailable(Unavailable):
    code = "payment_provider_unavailable"
