"""Payments: invoices, the pre-checkout answer, and turning a paid charge into access.

The flow with Telegram (Stars): ``create_invoice`` stores a pending payment and returns the
invoice the bot sends; Telegram echoes only its ``payload`` back. ``check_pre_checkout``
answers the pre-checkout query (read only, fast). ``confirm`` handles ``successful_payment``:
in one transaction the payment completes and the access it bought is granted, idempotently
by the provider's charge id (unique per provider), so a notification delivered twice, or two
of them at once, extends once.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta

import structlog
from sqlalchemy.exc import IntegrityError

from controller.db.models import Payment, Subscription, SubscriptionPlan, User
from controller.db.uow import UnitOfWork, UnitOfWorkFactory
from controller.domain import money
from controller.domain.enums import PaymentStatus, PromoKind, SuspendReason
from controller.domain.errors import (
    InvalidInput,
    InvalidStateTransition,
    PaymentMismatch,
    PaymentNotFound,
    PaymentProviderUnavailable,
    PlanInactive,
    PromoCodeNotFound,
    SubscriptionNotFound,
    UserBanned,
    UserNotFound,
)
from controller.payments import Charge, PaymentProvider
from controller.payments.stars import StarsProvider
from controller.services.base import Clock, Service
from controller.services.promo import usable_code
from controller.services.subscriptions import (
    extend_locked,
    keep_ban,
    lock_subscription,
    renew_locked,
    require_plan,
    start_from_plan,
    start_plain,
)
from controller.settings import ReferralSettings

log = structlog.get_logger(__name__)

DEFAULT_PROVIDER = StarsProvider.name
# "p:<payment id>:<nonce>": Telegram allows 1-128 bytes of invoice payload.
_PAYLOAD = re.compile(r"^p:([1-9][0-9]{0,17}):([A-Za-z0-9_-]{16,64})$")
MAX_TITLE = 32  # Telegram's invoice title limit
MAX_DESCRIPTION = 255  # ... and description limit
MAX_CHARGE_ID = 255  # the column's width
MAX_LIST = 100
# An invoice older than this is refused at pre-checkout: prices and plans move on.
INVOICE_TTL = timedelta(hours=24)


def _terms(plan: SubscriptionPlan) -> list[int | None]:
    """What a plan gives, as stored with an invoice (JSON: a list)."""
    return [plan.duration_days, plan.device_limit, plan.traffic_limit_gb]


@dataclass(frozen=True, slots=True)
class Invoice:
    payment_id: int
    payload: str
    title: str
    description: str
    amount_minor: int
    currency: str
    plan_id: int


@dataclass(frozen=True, slots=True)
class Confirmation:
    payment: Payment
    subscription: Subscription
    already_processed: bool  # this charge was confirmed before; nothing changed now
    days_added: int  # days this call added (0 when already processed)


def parse_payload(payload: object) -> tuple[int, str] | None:
    if not isinstance(payload, str):
        return None
    match = _PAYLOAD.fullmatch(payload)
    return (int(match.group(1)), match.group(2)) if match else None


def describe_plan(plan: SubscriptionPlan, percent_off: int | None = None) -> str:
    """A short English description for the invoice (the bot may show its own translation)."""
    traffic = (
        "unlimited traffic" if plan.traffic_limit_gb is None else f"{plan.traffic_limit_gb} GB"
    )
    text = f"{plan.duration_days} days, {plan.device_limit} device(s), {traffic}"
    if percent_off:
        text += f", {percent_off}% off"
    return text[:MAX_DESCRIPTION]


class PaymentService(Service):
    def __init__(
        self,
        uow_factory: UnitOfWorkFactory,
        clock: Clock,
        providers: Mapping[str, PaymentProvider],
        referral: ReferralSettings,
    ) -> None:
        super().__init__(uow_factory, clock)
        self._providers = dict(providers)
        self._referral = referral

    def charge_for(
        self, price_minor: int, currency: str, provider: str = DEFAULT_PROVIDER
    ) -> Charge | None:
        """What ``provider`` would charge for a price (None: it is off or cannot charge it),
        for showing a price before an invoice exists."""
        chosen = self._providers.get(provider)
        return None if chosen is None else chosen.charge_for(price_minor, currency)

    async def create_invoice(
        self,
        telegram_id: int,
        plan_id: int,
        *,
        provider: str = DEFAULT_PROVIDER,
        subscription_id: int | None = None,
        promo_code: str | None = None,
    ) -> Invoice:
        """A pending payment for ``plan_id`` (renewing ``subscription_id`` if given, with a
        percent ``promo_code`` if given), priced by the provider."""
        chosen = self._providers.get(provider)
        if chosen is None:
            raise PaymentProviderUnavailable(f"payments by {provider} are not enabled")
        now = self._now()
        async with self._uow() as uow:
            user = await _require_user(uow, telegram_id)
            if user.is_banned:
                raise UserBanned("this user is banned")
            plan = await require_plan(uow, plan_id, allow_inactive=False)
            if plan.is_trial:
                # Trials are given once per user (start_trial), never sold again and again.
                raise PlanInactive(f"plan {plan_id} is a trial; it is not sold")
            if subscription_id is not None:
                target = await uow.subscriptions.get(subscription_id)
                if target is None or target.user_id != user.id:
                    raise SubscriptionNotFound(f"no subscription with id {subscription_id}")
                if target.suspend_reason is SuspendReason.ADMIN:
                    raise InvalidStateTransition(
                        "this subscription is suspended by the seller; contact support"
                    )
            price, promo_id, percent = plan.price_minor, None, None
            if promo_code is not None:
                promo = await usable_code(
                    uow, user.id, promo_code, PromoKind.PERCENT, now=now, plan_id=plan.id
                )
                price = money.apply_percent_discount(price, promo.value)
                promo_id, percent = promo.id, promo.value
            if price <= 0:
                raise InvalidInput("there is nothing to pay for this plan")
            charge = chosen.charge_for(price, plan.currency)
            if charge is None:
                raise PaymentProviderUnavailable(f"{provider} cannot charge {plan.currency}")
            nonce = secrets.token_urlsafe(16)
            payment = await uow.payments.add(
                Payment(
                    user_id=user.id,
                    plan_id=plan.id,
                    subscription_id=subscription_id,
                    promo_code_id=promo_id,
                    amount_minor=charge.amount_minor,
                    currency=charge.currency,
                    status=PaymentStatus.PENDING,
                    provider=chosen.name,
                    expires_at=now + INVOICE_TTL,
                    details={
                        "nonce": nonce,
                        "terms": _terms(plan),
                        "price_minor": plan.price_minor,
                        "price_currency": plan.currency,
                        "discounted_minor": price,
                        "telegram_id": telegram_id,
                    },
                )
            )
            await uow.commit()
        return Invoice(
            payment_id=payment.id,
            payload=f"p:{payment.id}:{nonce}",
            title=plan.name[:MAX_TITLE],
            description=describe_plan(plan, percent),
            amount_minor=charge.amount_minor,
            currency=charge.currency,
            plan_id=plan.id,
        )

    async def check_pre_checkout(
        self, telegram_id: int, payload: str, currency: str, total_amount: int
    ) -> Payment:
        """May Telegram take this money? Read only; refuses with the reason, changes nothing."""
        async with self._uow().read_only() as uow:
            user = await _require_user(uow, telegram_id)
            payment = await _named(uow, user, payload, provider=None)
            if payment.status is not PaymentStatus.PENDING:
                raise PaymentNotFound("this invoice has been paid already")
            _check_charge(payment, currency, total_amount)
            if user.is_banned:
                raise UserBanned("this user is banned")
            plan = await uow.plans.get(payment.plan_id) if payment.plan_id is not None else None
            if plan is None or not plan.is_active:
                raise PlanInactive("this plan is no longer on sale")
            if payment.expires_at is not None and self._now() >= payment.expires_at:
                raise PaymentNotFound("this invoice has expired; make a new one")
            details = payment.details or {}
            if "terms" in details and (
                details["terms"] != _terms(plan)
                or details.get("price_minor") != plan.price_minor
                or details.get("price_currency") != plan.currency
            ):
                # An old invoice must not buy the plan's new terms at its old price.
                raise PaymentMismatch("the plan changed since this invoice; make a new one")
            if payment.promo_code_id is not None:
                promo = await uow.promo.get(payment.promo_code_id)
                if promo is None:
                    raise PromoCodeNotFound("the promo code of this invoice no longer exists")
                await usable_code(
                    uow, user.id, promo.code, PromoKind.PERCENT, now=self._now(), plan_id=plan.id
                )
            return payment

    async def confirm(
        self,
        telegram_id: int,
        payload: str,
        currency: str,
        total_amount: int,
        charge_id: str,
        provider_charge_id: str | None = None,
        *,
        provider: str = DEFAULT_PROVIDER,
    ) -> Confirmation:
        """Record a successful payment and grant what it bought, once per charge id."""
        if not isinstance(charge_id, str) or not 1 <= len(charge_id) <= MAX_CHARGE_ID:
            raise InvalidInput("a charge id is 1 to 255 characters")
        bound = log.bind(tg_user_id=telegram_id, charge_id=charge_id, provider=provider)
        args = (telegram_id, payload, currency, total_amount, charge_id, provider_charge_id)
        try:
            try:
                return await self._confirm(*args, provider)
            except IntegrityError:
                # Another transaction recorded this charge id between our check and our
                # write, and the unique (provider, charge id) refused ours: run again, and
                # find that row.
                bound.info("payment_confirm_retry")
                return await self._confirm(*args, provider)
        except (PaymentNotFound, PaymentMismatch, UserNotFound) as exc:
            # Money may have been taken for this: leave a trace for the operator.
            bound.warning("payment_confirm_refused", error=exc.code, reason=exc.message)
            raise

    async def _confirm(
        self,
        telegram_id: int,
        payload: str,
        currency: str,
        total_amount: int,
        charge_id: str,
        provider_charge_id: str | None,
        provider: str,
    ) -> Confirmation:
        now = self._now()
        async with self._uow() as uow:
            user = await _require_user(uow, telegram_id)
            done = await _already(uow, user, provider, charge_id)
            if done is not None:
                return done
            # Locked: confirmations naming this invoice queue here, and each then sees
            # what the one before it committed.
            invoice = await _named(uow, user, payload, provider=provider, lock=True)
            _check_charge(invoice, currency, total_amount)
            done = await _already(uow, user, provider, charge_id)
            if done is not None:
                return done
            details = {**(invoice.details or {}), "provider_charge_id": provider_charge_id}
            if invoice.status is PaymentStatus.PENDING:
                paid = invoice
                paid.status = PaymentStatus.COMPLETED
                paid.external_payment_id = charge_id
                paid.paid_at = now
                paid.details = details
            else:
                # The same invoice paid again under a new charge: real money, recorded and
                # honoured as a payment of its own.
                details = {k: v for k, v in details.items() if k != "nonce"}
                paid = await uow.payments.add(
                    Payment(
                        user_id=user.id,
                        plan_id=invoice.plan_id,
                        subscription_id=invoice.subscription_id,
                        promo_code_id=invoice.promo_code_id,
                        amount_minor=invoice.amount_minor,
                        currency=invoice.currency,
                        status=PaymentStatus.COMPLETED,
                        provider=invoice.provider,
                        external_payment_id=charge_id,
                        paid_at=now,
                        details={**details, "invoice_payment_id": invoice.id},
                    )
                )
            await uow.session.flush()  # the unique (provider, charge id) is checked here
            if paid.plan_id is None:
                raise PaymentNotFound("this payment names no plan")
            # The buyer already paid: a plan taken off sale meanwhile is still honoured.
            plan = await require_plan(uow, paid.plan_id, allow_inactive=True)
            subscription = await _grant(uow, user, paid, plan, now)
            paid.subscription_id = subscription.id
            await _redeem(uow, user, paid, subscription, now)
            touched = [subscription.id]
            rewarded = await self._reward_referrer(uow, user, paid, now)
            if rewarded is not None:
                touched.append(rewarded)
            await uow.activity.add(
                user.id,
                "payment_completed",
                {
                    "payment_id": paid.id,
                    "plan_id": plan.id,
                    "amount_minor": paid.amount_minor,
                    "currency": paid.currency,
                    "subscription_id": subscription.id,
                    "days": plan.duration_days,
                },
            )
            await uow.touch_subscriptions(touched)
            await uow.commit()
            log.info(
                "payment_completed",
                tg_user_id=telegram_id,
                payment_id=paid.id,
                subscription_id=subscription.id,
            )
            return Confirmation(paid, subscription, False, plan.duration_days)

    async def _reward_referrer(
        self, uow: UnitOfWork, user: User, paid: Payment, now: datetime
    ) -> int | None:
        """On a referred user's first payment, give their referrer the reward days once;
        the referrer's subscription id that got them."""
        days = self._referral.reward_days
        if days <= 0:
            return None
        referral = await uow.referrals.of_referred(user.id)
        if referral is None or referral.referrer_id is None or referral.rewarded_at is not None:
            return None
        if await uow.payments.paid_before(user.id, excluding=paid.id):
            return None
        # Conditional: of two first payments confirmed at once, one rewards.
        if not await uow.referrals.mark_rewarded(referral.id, days, now):
            return None
        referrer_id = referral.referrer_id
        current = await uow.subscriptions.latest_renewable(referrer_id)
        if current is not None:
            subscription = await lock_subscription(uow, current.id)
            extend_locked(subscription, days, now)
            await keep_ban(uow, subscription, now)
        else:
            subscription = await start_plain(uow, referrer_id, days, now=now)
        await uow.activity.add(
            referrer_id,
            "referral_reward",
            {"referred_id": user.id, "days": days, "subscription_id": subscription.id},
        )
        return subscription.id

    async def refund_recorded(
        self, telegram_id: int, charge_id: str, *, provider: str = DEFAULT_PROVIDER
    ) -> Payment:
        """Mark a completed payment refunded (the bot has refunded it with the provider).
        The access it bought stays; repeating the call changes nothing."""
        async with self._uow() as uow:
            user = await _require_user(uow, telegram_id)
            found = await uow.payments.get_by_external(provider, charge_id)
            if found is None or found.user_id != user.id:
                raise PaymentNotFound("no such payment")
            payment = await uow.payments.get(found.id, for_update=True)
            assert payment is not None  # payments are never deleted
            if payment.status is PaymentStatus.REFUNDED:
                return payment
            if payment.status is not PaymentStatus.COMPLETED:
                raise InvalidStateTransition(f"payment {payment.id} is {payment.status.value}")
            payment.status = PaymentStatus.REFUNDED
            payment.refunded_at = self._now()
            await uow.activity.add(user.id, "payment_refunded", {"payment_id": payment.id})
            await uow.commit()
            return payment

    async def list_for_user(self, telegram_id: int, limit: int = 20) -> list[Payment]:
        """The user's payments (pending invoices included), newest first."""
        if isinstance(limit, bool) or not 1 <= limit <= MAX_LIST:
            raise InvalidInput(f"limit must be 1..{MAX_LIST}")
        async with self._uow().read_only() as uow:
            user = await _require_user(uow, telegram_id)
            return list(await uow.payments.list_for_user(user.id, limit=limit))

    async def ledger_cursor(self, provider: str = DEFAULT_PROVIDER) -> int:
        """How many of the provider's ledger entries (Telegram's Star transactions) have
        been reconciled with our payments already."""
        async with self._uow().read_only() as uow:
            row = await uow.app_settings.get(_cursor_key(provider))
            value = row.value if row is not None else 0
            return value if isinstance(value, int) and value >= 0 else 0

    async def set_ledger_cursor(self, position: int, provider: str = DEFAULT_PROVIDER) -> None:
        if isinstance(position, bool) or not isinstance(position, int) or position < 0:
            raise InvalidInput("a ledger position is a whole number, not negative")
        async with self._uow() as uow:
            await uow.app_settings.set(_cursor_key(provider), position)
            await uow.commit()


def _cursor_key(provider: str) -> str:
    return f"payments.{provider}.ledger_seen"[:64]


async def _require_user(uow: UnitOfWork, telegram_id: int) -> User:
    user = await uow.users.get_by_telegram_id(telegram_id)
    if user is None:
        raise UserNotFound(f"no user with Telegram id {telegram_id}")
    return user


async def _named(
    uow: UnitOfWork, user: User, payload: str, *, provider: str | None, lock: bool = False
) -> Payment:
    """The user's payment a payload names; any other payload (forged, another user's,
    garbage) is "not found" alike."""
    parsed = parse_payload(payload)
    if parsed is None:
        raise PaymentNotFound("unknown invoice")
    payment_id, nonce = parsed
    payment = await uow.payments.get(payment_id, for_update=lock)
    stored = (payment.details or {}).get("nonce") if payment is not None else None
    if (
        payment is None
        or payment.user_id != user.id
        or (provider is not None and payment.provider != provider)
        or not isinstance(stored, str)
        or not secrets.compare_digest(stored.encode(), nonce.encode())
    ):
        raise PaymentNotFound("unknown invoice")
    return payment


def _check_charge(payment: Payment, currency: str, total_amount: int) -> None:
    if (
        currency != payment.currency
        or isinstance(total_amount, bool)
        or not isinstance(total_amount, int)
        or total_amount != payment.amount_minor
    ):
        raise PaymentMismatch(
            "the amount paid is not the invoice's "
            f"({money.format_amount(payment.amount_minor, payment.currency)})"
        )


async def _already(
    uow: UnitOfWork, user: User, provider: str, charge_id: str
) -> Confirmation | None:
    """The confirmation of a charge recorded before, if it was."""
    existing = await uow.payments.get_by_external(provider, charge_id)
    if existing is None:
        return None
    if existing.user_id != user.id:
        raise PaymentNotFound("unknown payment")
    subscription = None
    if existing.subscription_id is not None:
        subscription = await uow.subscriptions.get(existing.subscription_id)
    if subscription is None:  # deleted since: show what the user has now
        subscriptions = await uow.subscriptions.list_for_user(user.id)
        subscription = subscriptions[0] if subscriptions else None
    if subscription is None:
        raise SubscriptionNotFound("the subscription this payment bought no longer exists")
    return Confirmation(existing, subscription, True, 0)


async def _grant(
    uow: UnitOfWork, user: User, paid: Payment, plan: SubscriptionPlan, now: datetime
) -> Subscription:
    """Renew the payment's target, else the user's latest renewable subscription, on the
    plan's terms; else start one. A banned buyer's access is held suspended by the ban."""
    subscription = None
    if paid.subscription_id is not None:
        target = await uow.subscriptions.get(paid.subscription_id)
        if target is not None and target.user_id == user.id:
            subscription = await lock_subscription(uow, target.id)
    if subscription is None:
        current = await uow.subscriptions.latest_renewable(user.id, traffic_suspended=True)
        if current is not None:
            subscription = await lock_subscription(uow, current.id)
    if subscription is None:
        return await start_from_plan(
            uow, user.id, plan.id, now=now, allow_inactive_plan=True, allow_banned=True
        )
    renew_locked(subscription, plan, now)
    await keep_ban(uow, subscription, now)
    return subscription


async def _redeem(
    uow: UnitOfWork, user: User, paid: Payment, subscription: Subscription, now: datetime
) -> None:
    """Count the invoice's percent code as used. The user has paid the discounted price, so
    a code used up (or already redeemed) meanwhile never refuses the payment."""
    if paid.promo_code_id is None:
        return
    redemption_id = await uow.promo.add_redemption_if_absent(
        {
            "promo_code_id": paid.promo_code_id,
            "user_id": user.id,
            "subscription_id": subscription.id,
            "payment_id": paid.id,
            "redeemed_at": now,
        }
    )
    if redemption_id is None:
        log.info("promo_already_redeemed", payment_id=paid.id, promo_code_id=paid.promo_code_id)
        return
    if not await uow.promo.claim_use(paid.promo_code_id):
        await uow.promo.delete_redemption(redemption_id)
        log.warning(
            "promo_used_up_before_payment", payment_id=paid.id, promo_code_id=paid.promo_code_id
        )
