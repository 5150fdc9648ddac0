"""Payments whose update never reached us are found in Telegram's Star ledger and recorded
once; refunded and unmatched charges never give access."""

from __future__ import annotations

import dataclasses
import functools
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from bots.client import reconcile
from bots.client.handlers import payment as payment_handlers
from bots.common.app import create_bot
from controller.db.models import Payment, Subscription
from controller.domain.enums import PaymentStatus, SubscriptionStatus
from controller.services.plans import PlanDraft
from controller.services.users import TelegramProfile
from tests.bots.harness import TOKEN, Flaky, running_client_bot
from tests.fake_telegram import FakeTelegram
from tests.hub_support import ControllerHarness
from tests.integration.factories import ADMIN


async def test_a_lost_payment_is_recorded_from_the_star_ledger_once(
    engine: AsyncEngine, tmp_path: Path, tg: FakeTelegram
) -> None:
    async with ControllerHarness.open(engine, tmp_path, start_hub=False) as controller:
        services = controller.services
        plan = await services.plans.create(
            ADMIN, PlanDraft(name="Месяц", duration_days=30, price_minor=300, currency="XTR")
        )
        tg.add_bot(TOKEN, username="vpn_test_bot")
        alice, bob = tg.user(1001, first_name="Alice"), tg.user(2002, first_name="Bob")
        for user in (alice, bob):
            await user.send("/start")  # opens the chat; nobody is polling
            await services.users.register(TelegramProfile(telegram_id=user.id))
        lost = await services.payments.create_invoice(1001, plan.id)
        refunded = await services.payments.create_invoice(2002, plan.id)
        # The bot is down: these successful payments are never seen as updates.
        paid = await alice.deliver_successful_payment(lost.payload, 300)
        await bob.deliver_successful_payment(refunded.payload, 300)
        await bob.deliver_successful_payment("p:424242:not-one-of-ours-at-all", 300)
        bot = create_bot(TOKEN, tg.base_url)
        try:
            bob_charges = [c for c in tg.charges.values() if c.user_id == 2002]
            await bot.refund_star_payment(2002, bob_charges[0].charge_id)

            assert await reconcile.reconcile_once(bot, services) == 1
            assert await reconcile.reconcile_once(bot, services) == 0  # read once
            assert await services.payments.ledger_cursor() == 4
        finally:
            await bot.session.close()
        await alice.wait_message(lambda m: "Мы нашли вашу оплату" in m.text)

        async with controller.uow_factory() as uow:
            payments = (await uow.session.execute(sa.select(Payment))).scalars().all()
            subscriptions = (await uow.session.execute(sa.select(Subscription))).scalars().all()
        completed = [p for p in payments if p.status is PaymentStatus.COMPLETED]
        assert [(p.external_payment_id, p.user_id) for p in completed] == [
            (paid.charge_id, subscriptions[0].user_id)
        ]
        assert [s.status for s in subscriptions] == [SubscriptionStatus.ACTIVE]


async def test_the_running_bot_records_a_payment_lost_to_a_database_outage(
    engine: AsyncEngine, tmp_path: Path, tg: FakeTelegram, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Polling: the update's retries run out while the database is away, and nothing will
    deliver it again; the ledger job records it once the database is back."""
    monkeypatch.setattr(payment_handlers, "CONFIRM_RETRY_DELAYS_POLLING", (0.01,))
    async with ControllerHarness.open(engine, tmp_path, start_hub=False) as controller:
        plan = await controller.services.plans.create(
            ADMIN, PlanDraft(name="Месяц", duration_days=30, price_minor=300, currency="XTR")
        )
        flaky = Flaky(controller.services.payments, failures=2)  # both tries of the update
        services = dataclasses.replace(controller.services, payments=flaky)
        job = functools.partial(reconcile.run, services=services, interval=1.0)
        alice = tg.user(1001, first_name="Alice", language_code="en")
        async with running_client_bot(services, tg, jobs=[job]):  # type: ignore[arg-type]
            await alice.send("/start")
            await alice.wait_message(lambda m: "Hi, Alice" in m.text)
            invoice = await controller.services.payments.create_invoice(1001, plan.id)
            charge = await alice.deliver_successful_payment(invoice.payload, 300)
            await alice.wait_message(lambda m: "do not pay again" in m.text)
            await alice.wait_message(lambda m: "We found your payment" in m.text, timeout=5)
        [payment] = await controller.services.payments.list_for_user(1001)
        assert payment.status is PaymentStatus.COMPLETED
        assert payment.external_payment_id == charge.charge_id
        assert flaky.calls == 3
