"""Stars payments through the bot: a successful payment delivered twice counts once; forged
ones are refused (and refunded when real); pre-checkout refuses a plan taken off sale or a
wrong amount, well inside Telegram's 10 seconds; floods keep the last action."""

from __future__ import annotations

import asyncio
import dataclasses
import time
from datetime import timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa
from fastapi import FastAPI
from sqlalchemy.ext.asyncio import AsyncEngine

from bots.client.callbacks import MenuCb, PlanAction, PlanCb, Screen
from bots.client.handlers import payment as payment_handlers
from bots.common.webhook import mount, webhook_path
from controller.db.models import Payment, Subscription
from controller.domain.enums import PaymentStatus, PromoKind
from controller.services.plans import PlanDraft
from controller.services.promo import PromoDraft
from tests.bots.harness import (
    TOKEN,
    Flaky,
    client_app,
    free_port,
    running,
    running_client_bot,
    serving,
)
from tests.fake_telegram import FakeTelegram, FakeUser, SentMessage
from tests.hub_support import ControllerHarness
from tests.integration.factories import ADMIN


async def invoice_for(user: FakeUser, plan_id: int) -> SentMessage:
    await user.send("/menu")
    menu = await user.wait_message(lambda m: "Главное меню" in m.text)
    await user.forge_callback(menu, PlanCb(plan_id=plan_id, action=PlanAction.BUY).pack())
    return await user.wait_message(lambda m: m.invoice is not None)


async def rows(controller: ControllerHarness) -> tuple[list[Payment], list[Subscription]]:
    async with controller.uow_factory() as uow:
        payments = (await uow.session.execute(sa.select(Payment).order_by(Payment.id))).scalars()
        subscriptions = (
            await uow.session.execute(sa.select(Subscription).order_by(Subscription.id))
        ).scalars()
        return list(payments), list(subscriptions)


async def test_the_same_successful_payment_twice_extends_once(
    engine: AsyncEngine, tmp_path: Path, tg: FakeTelegram
) -> None:
    async with ControllerHarness.open(engine, tmp_path, start_hub=False) as controller:
        plan = await controller.services.plans.create(
            ADMIN, PlanDraft(name="Месяц", duration_days=30, price_minor=300, currency="XTR")
        )
        async with running_client_bot(controller.services, tg):
            alice = tg.user(1001, first_name="Alice")
            invoice = await invoice_for(alice, plan.id)
            assert invoice.invoice is not None and invoice.invoice["total_amount"] == 300
            paid = await alice.pay(invoice)
            assert paid.ok
            await alice.wait_message(lambda m: "Оплата получена" in m.text)
            payments, subscriptions = await rows(controller)
            expiry = subscriptions[0].expires_at

            payload = paid.update["message"]["successful_payment"]["invoice_payload"]
            again = await alice.deliver_successful_payment(
                invoice_payload=payload, total_amount=300, currency="XTR", charge_id=paid.charge_id
            )
            assert again.charge_id == paid.charge_id
            await alice.wait_message(lambda m: "уже учтён" in m.text)
            payments2, subscriptions2 = await rows(controller)
        assert [(p.id, p.status, p.external_payment_id) for p in payments2] == [
            (payments[0].id, PaymentStatus.COMPLETED, paid.charge_id)
        ]
        assert [(s.id, s.expires_at) for s in subscriptions2] == [(subscriptions[0].id, expiry)]


async def test_forged_successful_payments_change_nothing_and_real_money_goes_back(
    engine: AsyncEngine, tmp_path: Path, tg: FakeTelegram
) -> None:
    async with ControllerHarness.open(engine, tmp_path, start_hub=False) as controller:
        plan = await controller.services.plans.create(
            ADMIN, PlanDraft(name="Месяц", duration_days=30, price_minor=300, currency="XTR")
        )
        async with running_client_bot(controller.services, tg):
            alice = tg.user(1001, first_name="Alice")
            bob = tg.user(2002, first_name="Bob")
            await invoice_for(alice, plan.id)
            await invoice_for(bob, plan.id)
            payload = (await controller.services.payments.list_for_user(1001))[0]
            alice_payload = f"p:{payload.id}:{payload.details['nonce']}"  # type: ignore[index]
            before = await rows(controller)

            # Bob replays Alice's invoice payload with a charge Telegram never made.
            await bob.deliver_successful_payment(
                invoice_payload=alice_payload, total_amount=300, charge_id="forged-charge-1"
            )
            await bob.wait_message(lambda m: "Не удалось сопоставить" in m.text)
            # A real charge (the fake made it) for garbage: refunded, never counted.
            await bob.deliver_successful_payment(invoice_payload="p:999:nope", total_amount=300)
            await bob.wait_message(lambda m: "звёзды возвращены" in m.text)
            # Alice's own payload with the wrong amount.
            await alice.deliver_successful_payment(invoice_payload=alice_payload, total_amount=1)
            await alice.wait_message(lambda m: "звёзды возвращены" in m.text)
            after = await rows(controller)
        assert [(p.id, p.status, p.external_payment_id) for p in after[0]] == [
            (p.id, p.status, p.external_payment_id) for p in before[0]
        ]
        assert after[1] == [] == before[1]
        refunds = [c for c in tg.calls if c.method == "refundStarPayment"]
        assert len(refunds) == 3  # the forged charge is refused by Telegram, not counted


async def test_pre_checkout_refuses_a_withdrawn_plan_and_a_wrong_amount_quickly(
    engine: AsyncEngine, tmp_path: Path, tg: FakeTelegram
) -> None:
    async with ControllerHarness.open(engine, tmp_path, start_hub=False) as controller:
        services = controller.services
        plan = await services.plans.create(
            ADMIN, PlanDraft(name="Месяц", duration_days=30, price_minor=300, currency="XTR")
        )
        async with running_client_bot(services, tg):
            alice = tg.user(1001, first_name="Alice", language_code="en")
            invoice = await invoice_for_en(alice, plan.id)
            pending = (await services.payments.list_for_user(1001))[0]
            payload = f"p:{pending.id}:{pending.details['nonce']}"  # type: ignore[index]

            started = time.monotonic()
            wrong = await alice.send_pre_checkout(invoice_payload=payload, total_amount=299)
            assert time.monotonic() - started < 5
            assert wrong["ok"] is False and "does not match" in wrong["error_message"]

            await services.plans.set_active(ADMIN, plan.id, False)
            result = await alice.pay(invoice)
            assert result.ok is False
            assert result.error_message == "This plan is no longer on sale. Please choose another."
            assert result.charge_id is None
        payments, subscriptions = await rows(controller)
        assert [p.status for p in payments] == [PaymentStatus.PENDING] and subscriptions == []


async def invoice_for_en(user: FakeUser, plan_id: int) -> SentMessage:
    await user.send("/menu")
    menu = await user.wait_message(lambda m: "Main menu" in m.text)
    await user.forge_callback(menu, PlanCb(plan_id=plan_id, action=PlanAction.BUY).pack())
    return await user.wait_message(lambda m: m.invoice is not None)


async def test_a_flood_is_throttled_and_its_last_action_is_kept(
    engine: AsyncEngine, tmp_path: Path, tg: FakeTelegram
) -> None:
    async with (
        ControllerHarness.open(engine, tmp_path, start_hub=False) as controller,
        running_client_bot(controller.services, tg, throttle_updates=2, throttle_window=1.0),
    ):
        alice = tg.user(1001, first_name="Alice")
        for _ in range(6):
            await alice.send("/menu")
        await alice.send("/help")
        helped = await alice.wait_message(lambda m: "Как пользоваться" in m.text, timeout=5)
        assert helped
        await asyncio.sleep(1.2)
        menus = [m for m in alice.messages if "Главное меню" in m.text]
        # Two within the limit; the other five /menu were dropped, only /help was kept.
        assert len(menus) == 2, [m.text for m in alice.messages]
        # Another user is not held back by Alice's flood.
        bob = tg.user(2002, first_name="Bob")
        await bob.send("/menu")
        await bob.wait_message(lambda m: "Главное меню" in m.text, timeout=2)


async def test_a_payment_survives_a_short_database_outage(
    engine: AsyncEngine, tmp_path: Path, tg: FakeTelegram, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(payment_handlers, "CONFIRM_RETRY_DELAYS_POLLING", (0.01, 0.01, 0.01))
    async with ControllerHarness.open(engine, tmp_path, start_hub=False) as controller:
        plan = await controller.services.plans.create(
            ADMIN, PlanDraft(name="Месяц", duration_days=30, price_minor=300, currency="XTR")
        )
        flaky = Flaky(controller.services.payments, failures=2)
        services = dataclasses.replace(controller.services, payments=flaky)
        async with running_client_bot(services, tg):  # type: ignore[arg-type]
            alice = tg.user(1001, first_name="Alice")
            paid = await alice.pay(await invoice_for(alice, plan.id))
            assert paid.ok
            await alice.wait_message(lambda m: "Оплата получена" in m.text)
        assert flaky.calls == 3
        payments, subscriptions = await rows(controller)
        assert [p.status for p in payments] == [PaymentStatus.COMPLETED] and len(subscriptions) == 1


async def test_a_payment_not_recorded_is_delivered_again_through_the_webhook(
    engine: AsyncEngine, tmp_path: Path, tg: FakeTelegram, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(payment_handlers, "CONFIRM_RETRY_DELAYS", (0.01,))
    port = free_port()
    url = f"http://127.0.0.1:{port}{webhook_path('client')}"
    async with ControllerHarness.open(engine, tmp_path, start_hub=False) as controller:
        plan = await controller.services.plans.create(
            ADMIN, PlanDraft(name="Месяц", duration_days=30, price_minor=300, currency="XTR")
        )
        flaky = Flaky(controller.services.payments, failures=2)  # all of the first delivery
        services = dataclasses.replace(controller.services, payments=flaky)
        tg.add_bot(TOKEN, username="vpn_test_bot")
        app = client_app(services, tg, mode="webhook", webhook_url=url)  # type: ignore[arg-type]
        api = FastAPI()
        mount(api, {"client": app})
        async with serving(api, port), running(app):
            alice = tg.user(1001, first_name="Alice")
            paid = await alice.pay(await invoice_for(alice, plan.id))
            assert paid.ok
            await alice.wait_message(lambda m: "Не оплачивайте ещё раз" in m.text)
            await alice.wait_message(lambda m: "Оплата получена" in m.text, timeout=10)
        statuses = [d.status for d in tg.webhook_deliveries]
        assert 500 in statuses and statuses[-1] == 200
        payments, subscriptions = await rows(controller)
        assert [p.external_payment_id for p in payments] == [paid.charge_id]
        assert len(subscriptions) == 1


async def test_promo_codes_a_discount_at_checkout_and_days_in_the_profile(
    engine: AsyncEngine, tmp_path: Path, tg: FakeTelegram
) -> None:
    async with ControllerHarness.open(engine, tmp_path, start_hub=False) as controller:
        services = controller.services
        plan = await services.plans.create(
            ADMIN, PlanDraft(name="Месяц", duration_days=30, price_minor=300, currency="XTR")
        )
        await services.promo.create(
            ADMIN, PromoDraft(code="HALF", kind=PromoKind.PERCENT, value=50)
        )
        await services.promo.create(ADMIN, PromoDraft(code="WEEK", kind=PromoKind.DAYS, value=7))
        async with running_client_bot(services, tg):
            alice = tg.user(1001, first_name="Alice")
            await alice.send("/menu")
            menu = await alice.wait_message(lambda m: "Главное меню" in m.text)
            await alice.forge_callback(menu, PlanCb(plan_id=plan.id, action=PlanAction.VIEW).pack())
            offer = await alice.wait_message(lambda m: "Цена" in m.text)
            await alice.press(offer, "промокод")
            await alice.wait_message(lambda m: "Пришлите промокод" in m.text)
            await alice.send("/menu")  # a command is a command, not a code
            await alice.wait_message(lambda m: "Главное меню" in m.text)
            await alice.press(offer, "промокод")
            await alice.wait_message(lambda m: "Пришлите промокод" in m.text)
            await alice.send("half")
            invoice = await alice.wait_message(lambda m: m.invoice is not None)
            assert invoice.invoice is not None and invoice.invoice["total_amount"] == 150
            assert (await alice.pay(invoice)).ok
            await alice.wait_message(lambda m: "Оплата получена" in m.text)

            await alice.forge_callback(menu, MenuCb(screen=Screen.PROMO).pack())
            await alice.wait_message(lambda m: "Пришлите промокод одним" in m.text)
            await alice.send("WEEK")
            done = await alice.wait_message(lambda m: "Промокод применён: +7 дн." in m.text)
            await alice.forge_callback(done, MenuCb(screen=Screen.PROMO).pack())
            await alice.wait_message(lambda m: "Пришлите промокод одним" in m.text)
            await alice.send("WEEK")
            await alice.wait_message(lambda m: "уже использовали этот промокод" in m.text)
        (subscription,) = (await rows(controller))[1]
        assert subscription.expires_at == controller.clock() + timedelta(days=37)
