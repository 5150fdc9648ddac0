"""PaymentService against a real database (SQLite and PostgreSQL): invoices, pre-checkout,
idempotent confirmation, forged payloads, promo discounts and referral rewards."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import pytest
import sqlalchemy as sa

from controller.db.models import Payment, PromoCode, PromoRedemption, Referral, Subscription
from controller.db.uow import UnitOfWorkFactory
from controller.domain.enums import PaymentStatus, PromoKind, SubscriptionStatus, SuspendReason
from controller.domain.errors import (
    DomainError,
    InvalidInput,
    InvalidStateTransition,
    PaymentMismatch,
    PaymentNotFound,
    PaymentProviderUnavailable,
    PlanInactive,
    PlanNotFound,
    PromoCodeExhausted,
    SubscriptionNotFound,
    UserBanned,
)
from controller.payments import providers_from
from controller.payments.stars import StarsProvider
from controller.services import Services, build_services
from controller.services.plans import PlanChanges, PlanDraft
from controller.services.promo import PromoDraft
from controller.services.users import TelegramProfile
from controller.settings import PaymentSettings, ReferralSettings
from tests.conftest import FakeClock
from tests.integration.factories import ADMIN

ALICE, BOB = 1001, 1002


async def _register(services: Services, telegram_id: int, referral_code: str | None = None) -> int:
    profile = TelegramProfile(telegram_id=telegram_id)
    return (await services.users.register(profile, referral_code=referral_code)).user.id


async def _plan(
    services: Services,
    *,
    price: int = 19900,
    currency: str = "RUB",
    days: int = 30,
    devices: int = 2,
    name: str = "Month",
) -> int:
    plan = await services.plans.create(
        ADMIN,
        PlanDraft(
            name=name,
            duration_days=days,
            price_minor=price,
            currency=currency,
            device_limit=devices,
        ),
    )
    return plan.id


async def _subs(uow_factory: UnitOfWorkFactory, user_id: int) -> list[Subscription]:
    async with uow_factory() as uow:
        return list(await uow.subscriptions.list_for_user(user_id))


async def _rows(uow_factory: UnitOfWorkFactory, entity: Any) -> list[Any]:
    async with uow_factory() as uow:
        return list((await uow.session.execute(sa.select(entity))).scalars().all())


@dataclass(frozen=True)
class Snapshot:
    payments: list[tuple[int, PaymentStatus, str | None]]
    subscriptions: list[tuple[int, SubscriptionStatus, datetime | None]]
    activity: int
    redemptions: int
    referrals: list[tuple[int, datetime | None]]


async def _snapshot(uow_factory: UnitOfWorkFactory) -> Snapshot:
    """Everything a payment could change, to prove a refusal changed nothing."""
    async with uow_factory() as uow:
        s = uow.session
        payments = (await s.execute(sa.select(Payment).order_by(Payment.id))).scalars().all()
        subs = (await s.execute(sa.select(Subscription).order_by(Subscription.id))).scalars()
        activity = (await s.execute(sa.text("SELECT count(*) FROM user_activity"))).scalar_one()
        redemptions = (await s.execute(sa.select(sa.func.count(PromoRedemption.id)))).scalar_one()
        referrals = (await s.execute(sa.select(Referral).order_by(Referral.id))).scalars()
        return Snapshot(
            [(p.id, p.status, p.external_payment_id) for p in payments],
            [(x.id, x.status, x.expires_at) for x in subs],
            int(activity),
            int(redemptions),
            [(r.id, r.rewarded_at) for r in referrals],
        )


# --- Stars conversion -----------------------------------------------------------------------


def _stars(provider: StarsProvider, price_minor: int, currency: str) -> int:
    charge = provider.charge_for(price_minor, currency)
    assert charge is not None
    assert charge.currency == "XTR"
    return charge.amount_minor


def test_stars_conversion_rounds_up_with_integers_only() -> None:
    stars = StarsProvider(150)  # one star = 1.50 RUB
    assert stars.name == "telegram_stars"
    assert _stars(stars, 19900, "RUB") == 133  # 132.67 -> 133
    assert _stars(stars, 15000, "RUB") == 100
    assert _stars(stars, 15001, "RUB") == 101
    assert _stars(stars, 1, "RUB") == 1  # never below one star
    # Huge prices: float division would be off here, integer ceiling division is not.
    assert _stars(StarsProvider(1), 10**17 + 1, "USD") == 10**17 + 1
    assert _stars(StarsProvider(3), 10**17, "USD") == 10**17 // 3 + 1
    # Priced in stars: charged as it is.
    assert _stars(stars, 250, "XTR") == 250
    # Nothing (or nonsense) to charge.
    assert stars.charge_for(0, "RUB") is None
    assert stars.charge_for(0, "XTR") is None
    assert stars.charge_for(-5, "RUB") is None
    with pytest.raises(ValueError, match="at least one minor unit"):
        StarsProvider(0)


def test_providers_from_settings() -> None:
    assert list(providers_from(PaymentSettings())) == ["telegram_stars"]
    assert providers_from(PaymentSettings(stars_enabled=False)) == {}
    stars = providers_from(PaymentSettings(stars_unit_price_minor=100))["telegram_stars"]
    charge = stars.charge_for(1050, "RUB")
    assert charge is not None and charge.amount_minor == 11


# --- the happy path -------------------------------------------------------------------------


async def test_invoice_pre_checkout_confirm_grants_the_plan(
    services: Services, uow_factory: UnitOfWorkFactory, clock: FakeClock
) -> None:
    user_id = await _register(services, ALICE)
    plan_id = await _plan(services, price=19900, days=30, devices=2, name="A" * 40)

    invoice = await services.payments.create_invoice(ALICE, plan_id)
    assert (invoice.amount_minor, invoice.currency, invoice.plan_id) == (133, "XTR", plan_id)
    assert invoice.title == "A" * 32
    assert 1 <= len(invoice.description) <= 255
    assert "30 days" in invoice.description and "2 device" in invoice.description
    assert len(invoice.payload.encode()) <= 128
    assert invoice.payload.startswith(f"p:{invoice.payment_id}:")
    [pending] = await _rows(uow_factory, Payment)
    assert pending.status is PaymentStatus.PENDING
    assert (pending.amount_minor, pending.currency, pending.provider) == (
        133,
        "XTR",
        "telegram_stars",
    )
    assert pending.details["price_minor"] == 19900
    assert pending.details["price_currency"] == "RUB"
    assert pending.details["telegram_id"] == ALICE
    assert invoice.payload.endswith(pending.details["nonce"])

    checked = await services.payments.check_pre_checkout(ALICE, invoice.payload, "XTR", 133)
    assert checked.id == invoice.payment_id
    assert await _snapshot(uow_factory) == await _snapshot(uow_factory)  # reads are stable
    assert (await _rows(uow_factory, Payment))[0].status is PaymentStatus.PENDING

    clock.advance(minutes=1)
    done = await services.payments.confirm(
        ALICE, invoice.payload, "XTR", 133, "charge-1", provider_charge_id="prov-1"
    )
    assert done.already_processed is False
    assert done.days_added == 30
    assert done.payment.status is PaymentStatus.COMPLETED
    assert done.subscription.status is SubscriptionStatus.ACTIVE
    assert done.subscription.expires_at == clock.now + timedelta(days=30)
    [stored] = await _rows(uow_factory, Payment)
    assert stored.status is PaymentStatus.COMPLETED
    assert stored.external_payment_id == "charge-1"
    assert stored.paid_at == clock.now
    assert stored.details["provider_charge_id"] == "prov-1"
    assert stored.subscription_id == done.subscription.id
    [sub] = await _subs(uow_factory, user_id)
    assert (sub.plan_id, sub.device_limit) == (plan_id, 2)
    assert sub.expires_at == clock.now + timedelta(days=30)
    async with uow_factory() as uow:
        actions = (
            (await uow.session.execute(sa.text("SELECT action FROM user_activity"))).scalars().all()
        )
    assert "payment_completed" in actions
    assert [p.id for p in await services.payments.list_for_user(ALICE)] == [stored.id]


async def test_plan_priced_in_stars_is_charged_as_is(services: Services) -> None:
    await _register(services, ALICE)
    plan_id = await _plan(services, price=250, currency="XTR")
    invoice = await services.payments.create_invoice(ALICE, plan_id)
    assert (invoice.amount_minor, invoice.currency) == (250, "XTR")


async def test_renewal_extends_an_existing_subscription_from_its_expiry(
    services: Services, uow_factory: UnitOfWorkFactory, clock: FakeClock
) -> None:
    user_id = await _register(services, ALICE)
    plan_id = await _plan(services, days=30)
    first = await services.subscriptions.create_from_plan(user_id, plan_id)
    assert first.expires_at is not None
    clock.advance(days=10)
    invoice = await services.payments.create_invoice(ALICE, plan_id, subscription_id=first.id)
    done = await services.payments.confirm(ALICE, invoice.payload, "XTR", 133, "c1")
    assert done.subscription.id == first.id
    [sub] = await _subs(uow_factory, user_id)
    assert sub.expires_at == first.expires_at + timedelta(days=30)


async def test_without_a_target_the_latest_renewable_subscription_is_renewed(
    services: Services, uow_factory: UnitOfWorkFactory, clock: FakeClock
) -> None:
    user_id = await _register(services, ALICE)
    plan_id = await _plan(services, days=30)
    first = await services.subscriptions.create_from_plan(user_id, plan_id)
    clock.advance(days=45)
    await services.subscriptions.expire_due()
    invoice = await services.payments.create_invoice(ALICE, plan_id)
    done = await services.payments.confirm(ALICE, invoice.payload, "XTR", 133, "c1")
    assert done.subscription.id == first.id
    [sub] = await _subs(uow_factory, user_id)
    assert sub.status is SubscriptionStatus.ACTIVE
    assert sub.expires_at == clock.now + timedelta(days=30)


# --- idempotency and concurrency ------------------------------------------------------------


async def test_the_same_charge_twice_extends_once(
    services: Services, uow_factory: UnitOfWorkFactory, clock: FakeClock
) -> None:
    user_id = await _register(services, ALICE)
    plan_id = await _plan(services)
    invoice = await services.payments.create_invoice(ALICE, plan_id)
    first = await services.payments.confirm(ALICE, invoice.payload, "XTR", 133, "c1")
    before = await _snapshot(uow_factory)
    clock.advance(hours=1)
    again = await services.payments.confirm(ALICE, invoice.payload, "XTR", 133, "c1")
    assert again.already_processed is True
    assert again.days_added == 0
    assert again.payment.id == first.payment.id
    assert again.subscription.id == first.subscription.id
    assert await _snapshot(uow_factory) == before
    [sub] = await _subs(uow_factory, user_id)
    assert sub.expires_at == first.subscription.expires_at


async def test_concurrent_confirms_of_one_charge_extend_once(
    pg_only: None, services: Services, uow_factory: UnitOfWorkFactory, clock: FakeClock
) -> None:
    user_id = await _register(services, ALICE)
    plan_id = await _plan(services)
    invoice = await services.payments.create_invoice(ALICE, plan_id)
    results = await asyncio.gather(
        *(services.payments.confirm(ALICE, invoice.payload, "XTR", 133, "c1") for _ in range(8))
    )
    assert sorted(r.already_processed for r in results) == [False] + [True] * 7
    assert len({r.payment.id for r in results}) == 1
    [sub] = await _subs(uow_factory, user_id)
    assert sub.expires_at == clock.now + timedelta(days=30)
    [payment] = await _rows(uow_factory, Payment)
    assert payment.status is PaymentStatus.COMPLETED


async def test_concurrent_confirms_of_two_charges_of_one_invoice_both_count(
    pg_only: None, services: Services, uow_factory: UnitOfWorkFactory, clock: FakeClock
) -> None:
    user_id = await _register(services, ALICE)
    plan_id = await _plan(services)
    invoice = await services.payments.create_invoice(ALICE, plan_id)
    results = await asyncio.gather(
        *(
            services.payments.confirm(ALICE, invoice.payload, "XTR", 133, charge)
            for charge in ("c1", "c2", "c1", "c2")
        )
    )
    assert sorted(r.already_processed for r in results) == [False, False, True, True]
    [sub] = await _subs(uow_factory, user_id)
    assert sub.expires_at == clock.now + timedelta(days=60)
    payments = await _rows(uow_factory, Payment)
    assert sorted(p.external_payment_id for p in payments) == ["c1", "c2"]


async def test_paying_one_invoice_twice_is_two_payments(
    services: Services, uow_factory: UnitOfWorkFactory, clock: FakeClock
) -> None:
    user_id = await _register(services, ALICE)
    plan_id = await _plan(services)
    invoice = await services.payments.create_invoice(ALICE, plan_id)
    first = await services.payments.confirm(ALICE, invoice.payload, "XTR", 133, "c1")
    second = await services.payments.confirm(ALICE, invoice.payload, "XTR", 133, "c2")
    assert second.already_processed is False
    assert second.payment.id != first.payment.id
    assert second.subscription.id == first.subscription.id
    [sub] = await _subs(uow_factory, user_id)
    assert sub.expires_at == clock.now + timedelta(days=60)
    payments = sorted(await _rows(uow_factory, Payment), key=lambda p: p.id)
    assert [(p.status, p.external_payment_id) for p in payments] == [
        (PaymentStatus.COMPLETED, "c1"),
        (PaymentStatus.COMPLETED, "c2"),
    ]
    copy = payments[1]
    assert (copy.plan_id, copy.amount_minor, copy.currency) == (plan_id, 133, "XTR")
    assert copy.details["invoice_payment_id"] == payments[0].id
    assert "nonce" not in copy.details
    # Each charge stays idempotent on its own.
    again = await services.payments.confirm(ALICE, invoice.payload, "XTR", 133, "c2")
    assert again.already_processed and again.payment.id == copy.id
    # A paid invoice cannot be pre-checked out again.
    with pytest.raises(PaymentNotFound):
        await services.payments.check_pre_checkout(ALICE, invoice.payload, "XTR", 133)


# --- refusals that change nothing -----------------------------------------------------------


async def test_forged_payloads_are_refused_and_change_nothing(
    services: Services, uow_factory: UnitOfWorkFactory
) -> None:
    await _register(services, ALICE)
    await _register(services, BOB)
    plan_id = await _plan(services)
    alice = await services.payments.create_invoice(ALICE, plan_id)
    bob = await services.payments.create_invoice(BOB, plan_id)
    nonce = alice.payload.rsplit(":", 1)[1]
    wrong_nonce = nonce[:-1] + ("A" if nonce[-1] != "A" else "B")
    forged: list[tuple[str, str, int, type[DomainError]]] = [
        (f"p:{bob.payment_id + 100}:{nonce}", "XTR", 133, PaymentNotFound),  # unknown id
        (bob.payload, "XTR", 133, PaymentNotFound),  # another user's invoice
        (f"p:{bob.payment_id}:{nonce}", "XTR", 133, PaymentNotFound),  # their id, our nonce
        (f"p:{alice.payment_id}:{wrong_nonce}", "XTR", 133, PaymentNotFound),
        (alice.payload, "XTR", 132, PaymentMismatch),  # wrong amount
        (alice.payload, "XTR", 134, PaymentMismatch),
        (alice.payload, "RUB", 133, PaymentMismatch),  # wrong currency
        (alice.payload, "XTR", True, PaymentMismatch),  # a bool is not an amount
        ("", "XTR", 133, PaymentNotFound),  # garbage
        ("p:", "XTR", 133, PaymentNotFound),
        (f"p:{alice.payment_id}", "XTR", 133, PaymentNotFound),
        (f"p:{alice.payment_id}:", "XTR", 133, PaymentNotFound),
        (f"p:0{alice.payment_id}:{nonce}", "XTR", 133, PaymentNotFound),
        (f"p:{alice.payment_id}:{nonce}\n", "XTR", 133, PaymentNotFound),
        (f"p:{'9' * 40}:{nonce}", "XTR", 133, PaymentNotFound),
        (f"p:-1:{nonce}", "XTR", 133, PaymentNotFound),
        (alice.payload + "x" * 200, "XTR", 133, PaymentNotFound),
        ("' OR 1=1 --", "XTR", 133, PaymentNotFound),
    ]
    before = await _snapshot(uow_factory)
    for index, (payload, currency, amount, error) in enumerate(forged):
        with pytest.raises(error):
            await services.payments.check_pre_checkout(ALICE, payload, currency, amount)
        with pytest.raises(error):
            await services.payments.confirm(ALICE, payload, currency, amount, f"forged-{index}")
    assert await _snapshot(uow_factory) == before
    # The genuine invoice still works afterwards.
    await services.payments.confirm(ALICE, alice.payload, "XTR", 133, "real")
    assert (await _snapshot(uow_factory)).payments[0][1] is PaymentStatus.COMPLETED


async def test_a_charge_id_of_another_user_is_not_theirs(
    services: Services, uow_factory: UnitOfWorkFactory
) -> None:
    await _register(services, ALICE)
    await _register(services, BOB)
    plan_id = await _plan(services)
    alice = await services.payments.create_invoice(ALICE, plan_id)
    bob = await services.payments.create_invoice(BOB, plan_id)
    await services.payments.confirm(ALICE, alice.payload, "XTR", 133, "c1")
    before = await _snapshot(uow_factory)
    with pytest.raises(PaymentNotFound):
        await services.payments.confirm(BOB, bob.payload, "XTR", 133, "c1")
    with pytest.raises(PaymentNotFound):
        await services.payments.refund_recorded(BOB, "c1")
    assert await _snapshot(uow_factory) == before
    for bad in ("", "x" * 256):
        with pytest.raises(InvalidInput):
            await services.payments.confirm(BOB, bob.payload, "XTR", 133, bad)


async def test_invoice_refusals(services: Services, uow_factory: UnitOfWorkFactory) -> None:
    alice_id = await _register(services, ALICE)
    bob_id = await _register(services, BOB)
    plan_id = await _plan(services)
    free_id = await _plan(services, price=0, name="Free")
    bobs = await services.subscriptions.create_from_plan(bob_id, plan_id)
    with pytest.raises(SubscriptionNotFound):  # a renewal target of another user
        await services.payments.create_invoice(ALICE, plan_id, subscription_id=bobs.id)
    with pytest.raises(SubscriptionNotFound):
        await services.payments.create_invoice(ALICE, plan_id, subscription_id=bobs.id + 100)
    with pytest.raises(PlanNotFound):
        await services.payments.create_invoice(ALICE, plan_id + 100)
    with pytest.raises(InvalidInput):  # nothing to pay
        await services.payments.create_invoice(ALICE, free_id)
    with pytest.raises(PaymentProviderUnavailable):
        await services.payments.create_invoice(ALICE, plan_id, provider="yookassa")
    trial = await services.plans.create(
        ADMIN, PlanDraft(name="Trial", duration_days=3, price_minor=100, is_trial=True)
    )
    with pytest.raises(PlanInactive):  # a trial is given once, never sold
        await services.payments.create_invoice(ALICE, trial.id)
    await services.plans.set_active(ADMIN, plan_id, False)
    with pytest.raises(PlanInactive):
        await services.payments.create_invoice(ALICE, plan_id)
    await services.plans.set_active(ADMIN, plan_id, True)
    alices = await services.subscriptions.create_from_plan(alice_id, plan_id)
    await services.subscriptions.suspend(ADMIN, alices.id)
    with pytest.raises(InvalidStateTransition):  # the seller suspended it
        await services.payments.create_invoice(ALICE, plan_id, subscription_id=alices.id)
    await services.users.ban(ADMIN, ALICE)
    with pytest.raises(UserBanned):
        await services.payments.create_invoice(ALICE, plan_id)
    assert await _rows(uow_factory, Payment) == []


async def test_disabled_provider_refuses_invoices(
    uow_factory: UnitOfWorkFactory, clock: FakeClock
) -> None:
    services = build_services(uow_factory, clock, payments=PaymentSettings(stars_enabled=False))
    await _register(services, ALICE)
    plan_id = await _plan(services)
    with pytest.raises(PaymentProviderUnavailable):
        await services.payments.create_invoice(ALICE, plan_id)


async def test_pre_checkout_for_a_deactivated_plan_is_refused_but_a_payment_is_honoured(
    services: Services, uow_factory: UnitOfWorkFactory, clock: FakeClock
) -> None:
    await _register(services, ALICE)
    plan_id = await _plan(services)
    invoice = await services.payments.create_invoice(ALICE, plan_id)
    await services.plans.set_active(ADMIN, plan_id, False)
    with pytest.raises(PlanInactive):
        await services.payments.check_pre_checkout(ALICE, invoice.payload, "XTR", 133)
    # Telegram took the money anyway (pre-checkout answered before the change): honour it.
    done = await services.payments.confirm(ALICE, invoice.payload, "XTR", 133, "c1")
    assert done.subscription.status is SubscriptionStatus.ACTIVE
    assert done.subscription.expires_at == clock.now + timedelta(days=30)


async def test_a_user_banned_after_paying_gets_the_time_held_by_the_ban(
    services: Services, uow_factory: UnitOfWorkFactory, clock: FakeClock
) -> None:
    user_id = await _register(services, ALICE)
    plan_id = await _plan(services)
    invoice = await services.payments.create_invoice(ALICE, plan_id)
    await services.users.ban(ADMIN, ALICE)
    with pytest.raises(UserBanned):
        await services.payments.check_pre_checkout(ALICE, invoice.payload, "XTR", 133)
    done = await services.payments.confirm(ALICE, invoice.payload, "XTR", 133, "c1")
    assert done.payment.status is PaymentStatus.COMPLETED
    [sub] = await _subs(uow_factory, user_id)
    assert (sub.status, sub.suspend_reason) == (SubscriptionStatus.SUSPENDED, SuspendReason.BANNED)
    assert sub.expires_at == clock.now + timedelta(days=30)
    await services.users.unban(ADMIN, ALICE)
    [sub] = await _subs(uow_factory, user_id)
    assert sub.status is SubscriptionStatus.ACTIVE


# --- promo codes ----------------------------------------------------------------------------


async def test_percent_promo_discounts_the_charge_and_is_redeemed_with_the_payment(
    services: Services, uow_factory: UnitOfWorkFactory
) -> None:
    user_id = await _register(services, ALICE)
    plan_id = await _plan(services, price=20000)
    await services.promo.create(ADMIN, PromoDraft(code="HALF", kind=PromoKind.PERCENT, value=50))
    full = await services.payments.create_invoice(ALICE, plan_id)
    assert full.amount_minor == 134  # 200.00 RUB / 1.50 = 133.3 -> 134
    invoice = await services.payments.create_invoice(ALICE, plan_id, promo_code="half")
    assert invoice.amount_minor == 67  # 100.00 RUB / 1.50 = 66.7 -> 67
    assert "50% off" in invoice.description
    await services.payments.check_pre_checkout(ALICE, invoice.payload, "XTR", 67)
    done = await services.payments.confirm(ALICE, invoice.payload, "XTR", 67, "c1")
    [redemption] = await _rows(uow_factory, PromoRedemption)
    assert (redemption.user_id, redemption.payment_id, redemption.subscription_id) == (
        user_id,
        done.payment.id,
        done.subscription.id,
    )
    [promo] = await _rows(uow_factory, PromoCode)
    assert promo.uses_count == 1
    # Used now: a new invoice with it is refused.
    with pytest.raises(DomainError):
        await services.payments.create_invoice(ALICE, plan_id, promo_code="HALF")


async def test_a_full_discount_leaves_nothing_to_pay(
    services: Services, uow_factory: UnitOfWorkFactory
) -> None:
    await _register(services, ALICE)
    plan_id = await _plan(services)
    await services.promo.create(ADMIN, PromoDraft(code="FREE", kind=PromoKind.PERCENT, value=100))
    with pytest.raises(InvalidInput):
        await services.payments.create_invoice(ALICE, plan_id, promo_code="FREE")
    assert await _rows(uow_factory, Payment) == []


async def test_a_promo_used_up_meanwhile_is_refused_at_pre_checkout_but_a_payment_is_honoured(
    services: Services, uow_factory: UnitOfWorkFactory, clock: FakeClock
) -> None:
    await _register(services, ALICE)
    bob_id = await _register(services, BOB)
    plan_id = await _plan(services, price=20000)
    await services.promo.create(
        ADMIN, PromoDraft(code="ONCE", kind=PromoKind.PERCENT, value=50, max_uses=1)
    )
    alice = await services.payments.create_invoice(ALICE, plan_id, promo_code="ONCE")
    bob = await services.payments.create_invoice(BOB, plan_id, promo_code="ONCE")
    await services.payments.confirm(ALICE, alice.payload, "XTR", 67, "a1")
    with pytest.raises(PromoCodeExhausted):
        await services.payments.check_pre_checkout(BOB, bob.payload, "XTR", 67)
    done = await services.payments.confirm(BOB, bob.payload, "XTR", 67, "b1")
    assert done.subscription.user_id == bob_id
    assert done.subscription.expires_at == clock.now + timedelta(days=30)
    [promo] = await _rows(uow_factory, PromoCode)
    assert promo.uses_count == 1
    assert bob_id not in [r.user_id for r in await _rows(uow_factory, PromoRedemption)]


# --- referral rewards -----------------------------------------------------------------------


async def _referred_pair(services: Services) -> tuple[int, int]:
    referrer_id = await _register(services, ALICE)
    code = (await services.users.get(ALICE)).referral_code
    registration = await services.users.register(
        TelegramProfile(telegram_id=BOB), referral_code=code
    )
    assert registration.referred_by == referrer_id
    return referrer_id, registration.user.id


async def test_referral_reward_is_given_once_on_the_first_payment(
    services: Services, uow_factory: UnitOfWorkFactory, clock: FakeClock
) -> None:
    referrer_id, _ = await _referred_pair(services)
    plan_id = await _plan(services)
    first = await services.payments.create_invoice(BOB, plan_id)
    await services.payments.confirm(BOB, first.payload, "XTR", 133, "b1")
    # The referrer had nothing: a plain 7-day subscription for one device.
    [reward] = await _subs(uow_factory, referrer_id)
    assert reward.plan_id is None and reward.device_limit == 1
    assert reward.status is SubscriptionStatus.ACTIVE
    assert reward.expires_at == clock.now + timedelta(days=7)
    [referral] = await _rows(uow_factory, Referral)
    assert (referral.reward_days, referral.rewarded_at) == (7, clock.now)
    stats = await services.users.referral_stats(ALICE)
    assert (stats.invited, stats.paid, stats.reward_days) == (1, 1, 7)

    clock.advance(days=1)
    second = await services.payments.create_invoice(BOB, plan_id)
    await services.payments.confirm(BOB, second.payload, "XTR", 133, "b2")
    [unchanged] = await _subs(uow_factory, referrer_id)
    assert unchanged.expires_at == reward.expires_at
    stats = await services.users.referral_stats(ALICE)
    assert (stats.invited, stats.paid, stats.reward_days) == (1, 1, 7)


async def test_referral_reward_extends_the_referrers_subscription(
    services: Services, uow_factory: UnitOfWorkFactory
) -> None:
    referrer_id, _ = await _referred_pair(services)
    plan_id = await _plan(services)
    own = await services.subscriptions.create_from_plan(referrer_id, plan_id)
    assert own.expires_at is not None
    invoice = await services.payments.create_invoice(BOB, plan_id)
    await services.payments.confirm(BOB, invoice.payload, "XTR", 133, "b1")
    [extended] = await _subs(uow_factory, referrer_id)
    assert extended.id == own.id
    assert extended.expires_at == own.expires_at + timedelta(days=7)


async def test_concurrent_first_payments_reward_once(
    pg_only: None, services: Services, uow_factory: UnitOfWorkFactory, clock: FakeClock
) -> None:
    referrer_id, _ = await _referred_pair(services)
    plan_id = await _plan(services)
    invoices = [await services.payments.create_invoice(BOB, plan_id) for _ in range(4)]
    await asyncio.gather(
        *(
            services.payments.confirm(BOB, inv.payload, "XTR", 133, f"b{i}")
            for i, inv in enumerate(invoices)
        )
    )
    [reward] = await _subs(uow_factory, referrer_id)
    assert reward.expires_at == clock.now + timedelta(days=7)


async def test_no_reward_when_the_setting_is_zero(
    uow_factory: UnitOfWorkFactory, clock: FakeClock
) -> None:
    services = build_services(uow_factory, clock, referral=ReferralSettings(reward_days=0))
    referrer_id, _ = await _referred_pair(services)
    plan_id = await _plan(services)
    invoice = await services.payments.create_invoice(BOB, plan_id)
    await services.payments.confirm(BOB, invoice.payload, "XTR", 133, "b1")
    assert await _subs(uow_factory, referrer_id) == []
    [referral] = await _rows(uow_factory, Referral)
    assert referral.rewarded_at is None


# --- refunds and listing --------------------------------------------------------------------


async def test_refund_is_recorded_once(
    services: Services, uow_factory: UnitOfWorkFactory, clock: FakeClock
) -> None:
    await _register(services, ALICE)
    plan_id = await _plan(services)
    invoice = await services.payments.create_invoice(ALICE, plan_id)
    pending = await services.payments.create_invoice(ALICE, plan_id)
    await services.payments.confirm(ALICE, invoice.payload, "XTR", 133, "c1")
    clock.advance(hours=2)
    refunded = await services.payments.refund_recorded(ALICE, "c1")
    assert refunded.status is PaymentStatus.REFUNDED
    assert refunded.refunded_at == clock.now
    clock.advance(hours=1)
    again = await services.payments.refund_recorded(ALICE, "c1")
    assert again.refunded_at == refunded.refunded_at
    with pytest.raises(PaymentNotFound):
        await services.payments.refund_recorded(ALICE, "unknown")
    listed = await services.payments.list_for_user(ALICE)
    assert [p.id for p in listed] == [pending.payment_id, invoice.payment_id]
    assert [p.id for p in await services.payments.list_for_user(ALICE, limit=1)] == [
        pending.payment_id
    ]
    with pytest.raises(InvalidInput):
        await services.payments.list_for_user(ALICE, limit=0)


async def test_an_old_invoice_cannot_buy_changed_terms_or_outlive_a_day(
    services: Services, clock: FakeClock
) -> None:
    await _register(services, ALICE)
    plan_id = await _plan(services, price=100, currency="XTR", days=30)
    old = await services.payments.create_invoice(ALICE, plan_id)
    await services.plans.update(ADMIN, plan_id, PlanChanges(duration_days=365))
    with pytest.raises(PaymentMismatch):  # 365 days at the 30-day price: no
        await services.payments.check_pre_checkout(ALICE, old.payload, "XTR", 100)
    fresh = await services.payments.create_invoice(ALICE, plan_id)
    await services.payments.check_pre_checkout(ALICE, fresh.payload, "XTR", 100)
    clock.advance(hours=24)
    with pytest.raises(PaymentNotFound):
        await services.payments.check_pre_checkout(ALICE, fresh.payload, "XTR", 100)


async def test_buying_again_renews_a_subscription_stopped_by_its_traffic_limit(
    services: Services, uow_factory: UnitOfWorkFactory
) -> None:
    """Not a second subscription beside it: the devices live on the stopped one."""
    user_id = await _register(services, ALICE)
    plan = await services.plans.create(
        ADMIN, PlanDraft(name="1 GB", duration_days=30, price_minor=100, traffic_limit_gb=1)
    )
    first = await services.subscriptions.create_from_plan(user_id, plan.id)
    stopped = await services.subscriptions.add_traffic(first.id, 2 * 1024**3)
    assert stopped.suspended_now
    invoice = await services.payments.create_invoice(ALICE, plan.id)
    await services.payments.confirm(
        ALICE, invoice.payload, invoice.currency, invoice.amount_minor, "charge-traffic"
    )
    (renewed,) = await _subs(uow_factory, user_id)
    assert renewed.id == first.id
    assert renewed.status is SubscriptionStatus.ACTIVE and renewed.traffic_used_bytes == 0
