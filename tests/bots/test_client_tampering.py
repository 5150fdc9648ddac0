"""Callback data is never trusted: every kind of button of one user, pressed by another (or
forged, stale, malformed), is refused politely, changes nothing, and shows nothing of the
first user."""

from __future__ import annotations

from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from bots.client.callbacks import (
    DeviceAction,
    DeviceCb,
    LanguageCb,
    NewDeviceCb,
    PlanAction,
    PlanCb,
    ProtocolCb,
    ServerCb,
    SubAction,
    SubCb,
    TicketCb,
)
from bots.common.i18n import CATALOGS
from controller.db.models import Payment, Subscription, VpnConfig
from controller.domain.enums import VpnProtocol
from controller.services import Actor
from controller.services.plans import PlanDraft
from tests.bots.harness import running_client_bot
from tests.fake_telegram import FakeTelegram, FakeUser
from tests.hub_support import ControllerHarness
from tests.integration.factories import ADMIN

ALICE, BOB = 1001, 2002
ALICE_TICKET = "Мой секретный вопрос про роутер 7f3a"
REFUSALS = {
    text
    for key, text in CATALOGS["ru"].items()
    if key.startswith("error.") and key != "error.internal"
}


async def snapshot(controller: ControllerHarness) -> dict[str, object]:
    async with controller.uow_factory() as uow:
        session = uow.session
        configs = (await session.execute(sa.select(VpnConfig).order_by(VpnConfig.id))).scalars()
        subscriptions = (
            await session.execute(sa.select(Subscription).order_by(Subscription.id))
        ).scalars()
        payments = (await session.execute(sa.select(sa.func.count()).select_from(Payment))).scalar()
        users = await uow.users.list(limit=100)
        return {
            "configs": [
                (c.id, c.subscription_id, c.client_id, c.device_name, c.is_active) for c in configs
            ],
            "subscriptions": [
                (s.id, s.user_id, s.status, s.expires_at, s.auto_renew, s.device_limit)
                for s in subscriptions
            ],
            "payments": payments,
            "users": [
                (u.telegram_id, u.language_code, u.preferred_protocol, u.preferred_server_id)
                for u in users
            ],
        }


def forged_data(alice_sub: int, alice_config: int, alice_ticket: int, plan: int) -> list[str]:
    """Every callback type carrying Alice's ids, plus stale and malformed data."""
    data = [SubCb(subscription_id=alice_sub, action=a).pack() for a in SubAction]
    data += [DeviceCb(config_id=alice_config, action=a).pack() for a in DeviceAction]
    data += [TicketCb(ticket_id=alice_ticket).pack()]
    data += [
        PlanCb(plan_id=plan + 1000, action=PlanAction.VIEW).pack(),  # no such plan
        PlanCb(plan_id=plan + 1000, action=PlanAction.BUY).pack(),
        ServerCb(server_id=987654).pack(),
        LanguageCb(language="de").pack(),
        ProtocolCb(protocol="ikev2").pack(),
        ProtocolCb(protocol="carrier-pigeon").pack(),
        NewDeviceCb(protocol="carrier-pigeon").pack(),
        NewDeviceCb(protocol="wireguard", platform="toaster").pack(),
        "dv:abc:v",
        "dv:1",
        "sb:-1:v",
        "sb:1:zz",
        "m:nowhere",
        "tk:99999999999999999999999",
        "zz:1",
        "x" * 64,
    ]
    return data


async def press_and_answer(user: FakeUser, message: object, data: str) -> str:
    query = await user.forge_callback(message, data)  # type: ignore[arg-type]
    answer = await user.wait_callback_answer(query, timeout=10)
    return str(answer.get("text") or "")


async def test_a_second_user_replaying_every_button_gets_nothing(
    engine: AsyncEngine, tmp_path: Path, tg: FakeTelegram
) -> None:
    async with ControllerHarness.open(engine, tmp_path) as controller:
        services = controller.services
        node = await controller.add_node("nl-1", country="NL")
        plan = await services.plans.create(
            ADMIN, PlanDraft(name="Месяц", duration_days=30, price_minor=19900, device_limit=3)
        )
        async with node.agent(), running_client_bot(services, tg):
            await controller.wait_converged(node)
            alice = tg.user(ALICE, first_name="Alice", language_code="ru")
            bob = tg.user(BOB, first_name="Bob", language_code="ru")
            for user in (alice, bob):
                await user.send("/start")
                await user.wait_message(lambda m: "Привет" in m.text)
            for telegram_id in (ALICE, BOB):
                await services.subscriptions.grant(Actor.cli(), telegram_id, plan_id=plan.id)
                await services.configs.provision(
                    telegram_id, VpnProtocol.WIREGUARD, device_name="Android"
                )
            (alice_sub,) = await services.subscriptions.overview(ALICE)
            (alice_device,) = (await services.configs.devices(ALICE)).devices
            ticket = await services.support.open_ticket(ALICE, ALICE_TICKET)
            alice_conf = (await services.configs.render_for(ALICE, alice_device.config_id)).text
            alice_secrets = [
                line.split("=", 1)[1].strip()
                for line in alice_conf.splitlines()
                if line.startswith(("PrivateKey", "PresharedKey", "Address"))
            ]
            assert len(alice_secrets) == 3
            before = await snapshot(controller)

            await bob.send("/menu")
            menu = await bob.wait_message(lambda m: "Главное меню" in m.text)
            seen_before = len(bob.messages)
            answers = []
            for data in forged_data(alice_sub.id, alice_device.config_id, ticket.id, plan.id):
                answers.append((data, await press_and_answer(bob, menu, data)))

            # Every press was answered with a polite refusal, never with content.
            for data, text in answers:
                assert text in REFUSALS, (data, text)
            # Nothing Bob received afterwards carries Alice's data.
            leaked = [ALICE_TICKET, f"#{alice_sub.id} ", str(ALICE), *alice_secrets]
            for message in bob.messages[seen_before:]:
                for secret in leaked:
                    assert secret not in message.text, (secret, message.text)
                assert message.document is None and message.photo is None
                assert message.invoice is None
            assert await snapshot(controller) == before

            # The same buttons still work for their owner.
            await alice.send("/menu")
            own = await alice.wait_message(lambda m: "Главное меню" in m.text)
            await alice.forge_callback(
                own, DeviceCb(config_id=alice_device.config_id, action=DeviceAction.GET).pack()
            )
            document = await alice.wait_message(lambda m: m.document is not None)
            assert document.document is not None
            assert document.document["data"].decode() == alice_conf


@pytest.mark.parametrize("data", ["sb:1:v", "dv:1:g", "tk:1"])
async def test_buttons_of_a_user_without_any_records_are_refused(
    engine: AsyncEngine, tmp_path: Path, tg: FakeTelegram, data: str
) -> None:
    async with (
        ControllerHarness.open(engine, tmp_path, start_hub=False) as controller,
        running_client_bot(controller.services, tg),
    ):
        carol = tg.user(3003, first_name="Carol")
        await carol.send("/start")
        menu = await carol.wait_message(lambda m: "Привет" in m.text)
        assert await press_and_answer(carol, menu, data) in REFUSALS
