"""The whole journey through the client bot, as a user sees it and as the node sees it:
/start → plans → buy → Telegram Stars payment → active subscription → a WireGuard config
document and its QR code → the peer present on an agent (fake backend, real mTLS gRPC)."""

from __future__ import annotations

import base64
import re
from datetime import timedelta
from pathlib import Path

import sqlalchemy as sa
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from sqlalchemy.ext.asyncio import AsyncEngine

from bots.client.callbacks import MenuCb, NewDeviceCb, PlanAction, PlanCb, Screen
from controller.db.models import Payment, Subscription
from controller.domain.enums import PaymentStatus, SubscriptionStatus
from controller.services.plans import PlanDraft
from tests.bots.harness import running_client_bot
from tests.fake_telegram import FakeTelegram
from tests.hub_support import ControllerHarness
from tests.integration.factories import ADMIN


def wireguard_public_key(conf: str) -> str:
    private = re.search(r"^PrivateKey\s*=\s*(\S+)$", conf, re.MULTILINE)
    assert private is not None, conf
    key = X25519PrivateKey.from_private_bytes(base64.b64decode(private.group(1)))
    return base64.b64encode(key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)).decode()


async def test_start_to_paid_config_on_the_node(
    engine: AsyncEngine, tmp_path: Path, tg: FakeTelegram
) -> None:
    async with ControllerHarness.open(engine, tmp_path) as controller:
        services = controller.services
        node = await controller.add_node("nl-1", country="NL")
        plan = await services.plans.create(
            ADMIN, PlanDraft(name="Месяц", duration_days=30, price_minor=19900, device_limit=2)
        )
        async with node.agent(), running_client_bot(services, tg):
            await controller.wait_converged(node)
            alice = tg.user(1001, first_name="Alice", language_code="ru", username="alice")

            await alice.send("/start")
            menu = await alice.wait_message(lambda m: "Привет, Alice" in m.text)
            await alice.press(menu, "Купить или продлить")
            plans = await alice.wait_message(lambda m: "Выберите тариф" in m.text)
            await alice.press(plans, "Месяц")
            offer = await alice.wait_message(lambda m: "Цена" in m.text)
            # 1.50 RUB a star (the default), rounded up to whole stars.
            assert "199.00 RUB" in offer.text and "133 ⭐" in offer.text
            await alice.press(offer, data=PlanCb(plan_id=plan.id, action=PlanAction.BUY).pack())

            invoice = await alice.wait_message(lambda m: m.invoice is not None)
            assert invoice.invoice is not None
            assert invoice.invoice["currency"] == "XTR" and invoice.invoice["total_amount"] == 133
            paid = await alice.pay(invoice)
            assert paid.ok, paid.error_message
            done = await alice.wait_message(lambda m: "Оплата получена" in m.text)

            async with controller.uow_factory() as uow:
                user = await uow.users.get_by_telegram_id(1001)
                assert user is not None
                (subscription,) = await uow.subscriptions.list_for_user(user.id)
                payments = (await uow.session.execute(sa.select(Payment))).scalars().all()
            assert subscription.status is SubscriptionStatus.ACTIVE
            assert subscription.expires_at is not None
            assert subscription.expires_at - controller.clock() == timedelta(days=30)
            (payment,) = payments
            assert payment.status is PaymentStatus.COMPLETED
            assert payment.external_payment_id == paid.charge_id

            await alice.press(done, data=MenuCb(screen=Screen.NEW_DEVICE).pack())
            protocols = await alice.wait_message(lambda m: "Выберите протокол" in m.text)
            assert "WireGuard" in [text for text, _ in protocols.buttons]
            await alice.press(protocols, data=NewDeviceCb(protocol="wireguard").pack())
            platforms = await alice.wait_message(lambda m: "На каком устройстве" in m.text)
            await alice.press(platforms, "Android")

            document = await alice.wait_message(lambda m: m.document is not None)
            assert document.document is not None
            assert document.document["file_name"].endswith(".conf")
            conf = document.document["data"].decode()
            assert "[Interface]" in conf and "[Peer]" in conf
            photo = await alice.wait_message(lambda m: m.photo is not None)
            assert photo.photo is not None and photo.photo.startswith(b"\x89PNG")

            public_key = wireguard_public_key(conf)
            await controller.wait_for(
                lambda: public_key in node.peers(), within=10, what="the peer on the agent"
            )

            # The device is listed, and the same config can be fetched again.
            await alice.send("/menu")
            again = await alice.wait_message(lambda m: "Главное меню" in m.text)
            await alice.press(again, "Мои устройства")
            devices = await alice.wait_message(lambda m: "Ваши устройства" in m.text)
            assert "(1 из 2)" in devices.text and "Android" in devices.text


async def test_english_user_gets_english_and_can_switch_to_russian(
    engine: AsyncEngine, tmp_path: Path, tg: FakeTelegram
) -> None:
    async with ControllerHarness.open(engine, tmp_path, start_hub=False) as controller:
        async with running_client_bot(controller.services, tg):
            bob = tg.user(2002, first_name="Bob", language_code="en-US")
            await bob.send("/start")
            menu = await bob.wait_message(lambda m: "Hi, Bob" in m.text)
            await bob.press(menu, "Profile")
            profile = await bob.wait_message(lambda m: "Language: " in m.text)
            await bob.press(profile, "Язык / Language")
            languages = await bob.wait_message(lambda m: "Choose a language" in m.text)
            await bob.press(languages, "Русский")
            await bob.wait_message(lambda m: "Язык: 🇷🇺 Русский" in m.text)
            await bob.send("/menu")
            await bob.wait_message(lambda m: "Главное меню" in m.text)
        async with controller.uow_factory() as uow:
            user = await uow.users.get_by_telegram_id(2002)
            assert user is not None and user.language_code == "ru"


async def test_referral_link_trial_and_support_ticket(
    engine: AsyncEngine, tmp_path: Path, tg: FakeTelegram
) -> None:
    async with ControllerHarness.open(engine, tmp_path, start_hub=False) as controller:
        services = controller.services
        await services.plans.create(
            ADMIN, PlanDraft(name="Пробный", duration_days=3, price_minor=0, is_trial=True)
        )
        async with running_client_bot(services, tg):
            alice = tg.user(1001, first_name="Alice", language_code="ru")
            await alice.send("/start")
            menu = await alice.wait_message(lambda m: "Привет" in m.text)
            await alice.press(menu, "Профиль")
            profile = await alice.wait_message(lambda m: "Профиль" in m.text)
            await alice.press(profile, "Пригласить друга")
            referral = await alice.wait_message(lambda m: "Ваша ссылка" in m.text)
            link = re.search(r"https://t\.me/vpn_test_bot\?start=(ref_[\w-]+)", referral.text)
            assert link is not None, referral.text

            carol = tg.user(3003, first_name="Carol", language_code="ru")
            await carol.send(f"/start {link.group(1)}")
            welcome = await carol.wait_message(lambda m: "Привет, Carol" in m.text)
            assert "пригласил друг" in welcome.text
            await carol.press(welcome, "Бесплатный пробный период")
            await carol.wait_message(lambda m: "Пробный период начался" in m.text)
            # The trial is once per user: the button is gone, and a replayed press is refused.
            await carol.send("/menu")
            menu2 = await carol.wait_message(lambda m: "Главное меню" in m.text)
            assert all("пробный" not in text.lower() for text, _ in menu2.buttons)
            query = await carol.forge_callback(menu2, MenuCb(screen=Screen.TRIAL).pack())
            answer = await carol.wait_callback_answer(query)
            assert "уже был использован" in answer["text"]

            await carol.press(menu2, "Поддержка")
            support = await carol.wait_message(lambda m: "Поддержка" in m.text)
            await carol.press(support, "Новое обращение")
            await carol.wait_message(lambda m: "Опишите проблему" in m.text)
            await carol.send("Не подключается на iPhone")
            opened = await carol.wait_message(lambda m: "Обращение #" in m.text)

            await alice.press(referral, "Назад")
            await alice.wait_message(lambda m: "Профиль" in m.text)
            await alice.press(profile, "Пригласить друга")
            stats = await alice.wait_message(lambda m: "Приглашено: 1" in m.text)
            assert "оплатили: 0" in stats.text

        tickets = await services.support.list_for_user(3003)
        assert [t.description for t in tickets] == ["Не подключается на iPhone"]
        assert f"#{tickets[0].id}" in opened.text
        async with controller.uow_factory() as uow:
            carol_row = await uow.users.get_by_telegram_id(3003)
            assert carol_row is not None and carol_row.trial_used_at is not None
            subscriptions = (
                (
                    await uow.session.execute(
                        sa.select(Subscription).where(Subscription.user_id == carol_row.id)
                    )
                )
                .scalars()
                .all()
            )
        assert len(subscriptions) == 1
