"""Paying with Telegram Stars: invoice, pre-checkout answer, successful payment.

The pre-checkout query must be answered within 10 seconds or Telegram cancels the payment:
its check is one short read-only transaction with its own deadline here. A successful
payment is confirmed by the service idempotently by its charge id, so a payment Telegram
delivers twice extends the subscription once.
"""

from __future__ import annotations

import asyncio
import contextlib

import structlog
from aiogram import Bot, F
from aiogram.exceptions import TelegramBadRequest
from aiogram.fsm.context import FSMContext
from aiogram.fsm.state import State, StatesGroup
from aiogram.types import (
    CallbackQuery,
    LabeledPrice,
    Message,
    PreCheckoutQuery,
    SuccessfulPayment,
)

from bots.client.callbacks import MenuCb, PlanAction, PlanCb, Screen, SubAction, SubCb
from bots.client.handlers.subscription import STARS, plan_terms
from bots.common.context import BotUser
from bots.common.formatting import clip, esc, moment
from bots.common.i18n import I18n
from bots.common.keyboards import keyboard
from bots.common.middlewares import RetryLater, error_text
from bots.common.routes import Routes
from bots.common.screens import answer
from controller.domain.errors import DomainError, PaymentMismatch, PaymentNotFound
from controller.services import Services
from controller.services.payments import Confirmation

log = structlog.get_logger(__name__)
router = Routes("client.payment")

PRE_CHECKOUT_DEADLINE = 7.0  # seconds of Telegram's 10 spent on our check at most
# Retries of recording a successful payment while the database is away. Through a webhook
# a short budget, then Telegram delivers the update again; by polling nothing will, so ride
# out a failover of a couple of minutes.
CONFIRM_RETRY_DELAYS = (0.5, 1.0, 2.0, 4.0)
CONFIRM_RETRY_DELAYS_POLLING = (0.5, 1.0, 2.0, 4.0, 8.0, 15.0, 30.0, 30.0, 30.0)


class PromoInput(StatesGroup):
    code = State()


async def send_invoice(
    bot: Bot,
    chat_id: int,
    services: Services,
    user: BotUser,
    i18n: I18n,
    plan_id: int,
    *,
    subscription_id: int | None = None,
    promo_code: str | None = None,
) -> None:
    invoice = await services.payments.create_invoice(
        user.telegram_id,
        plan_id,
        provider=STARS,
        subscription_id=subscription_id,
        promo_code=promo_code,
    )
    plan = await services.plans.get(plan_id)
    key = "payment.invoice_renewal" if subscription_id is not None else "payment.invoice"
    description = i18n.t(key, terms=plan_terms(i18n, plan), id=subscription_id or 0)
    await bot.send_invoice(
        chat_id=chat_id,
        title=clip(invoice.title, 32),
        description=clip(description, 255),
        payload=invoice.payload,
        currency=invoice.currency,
        prices=[LabeledPrice(label=clip(plan.name, 32), amount=invoice.amount_minor)],
        provider_token="",
    )


@router.callback_query(PlanCb.filter(F.action == PlanAction.BUY))
async def on_buy(
    query: CallbackQuery,
    callback_data: PlanCb,
    bot: Bot,
    services: Services,
    user: BotUser,
    i18n: I18n,
) -> None:
    await send_invoice(bot, user.telegram_id, services, user, i18n, callback_data.plan_id)
    await answer(query)


@router.callback_query(PlanCb.filter(F.action == PlanAction.PROMO))
async def on_promo_for_plan(
    query: CallbackQuery, callback_data: PlanCb, state: FSMContext, i18n: I18n
) -> None:
    await state.set_state(PromoInput.code)
    await state.update_data(plan_id=callback_data.plan_id)
    if query.message is not None and query.bot is not None:
        await query.bot.send_message(
            query.from_user.id,
            i18n.t("payment.promo_prompt"),
            reply_markup=keyboard(
                [
                    (
                        i18n.t("common.cancel"),
                        PlanCb(plan_id=callback_data.plan_id, action=PlanAction.VIEW),
                    )
                ]
            ),
        )
    await answer(query)


@router.message(PromoInput.code, F.text, ~F.text.startswith("/"))  # commands go on
async def on_promo_code(
    message: Message,
    state: FSMContext,
    bot: Bot,
    services: Services,
    user: BotUser,
    i18n: I18n,
) -> None:
    data = await state.get_data()
    await state.clear()
    plan_id = data.get("plan_id")
    if not isinstance(plan_id, int) or message.text is None:
        await message.answer(i18n.t("error.stale_button"))
        return
    await send_invoice(
        bot, message.chat.id, services, user, i18n, plan_id, promo_code=message.text.strip()
    )


@router.callback_query(SubCb.filter(F.action == SubAction.RENEW))
async def on_renew(
    query: CallbackQuery,
    callback_data: SubCb,
    bot: Bot,
    services: Services,
    user: BotUser,
    i18n: I18n,
) -> None:
    view = await services.subscriptions.view(user.telegram_id, callback_data.subscription_id)
    if view.plan_id is None:
        await answer(query, i18n.t("subscription.renew_choose_plan"), alert=True)
        return
    await send_invoice(
        bot, user.telegram_id, services, user, i18n, view.plan_id, subscription_id=view.id
    )
    await answer(query)


@router.pre_checkout_query()
async def on_pre_checkout(query: PreCheckoutQuery, services: Services, i18n: I18n) -> None:
    try:
        await asyncio.wait_for(
            services.payments.check_pre_checkout(
                query.from_user.id, query.invoice_payload, query.currency, query.total_amount
            ),
            timeout=PRE_CHECKOUT_DEADLINE,
        )
    except DomainError as exc:
        log.info("pre_checkout_refused", code=exc.code, tg_user_id=query.from_user.id)
        await query.answer(ok=False, error_message=clip(error_text(i18n, exc), 255))
        return
    except TimeoutError:
        log.warning("pre_checkout_too_slow", tg_user_id=query.from_user.id)
        await query.answer(ok=False, error_message=i18n.t("payment.busy"))
        return
    await query.answer(ok=True)


@router.message(F.successful_payment)
async def on_successful_payment(
    message: Message,
    bot: Bot,
    services: Services,
    user: BotUser,
    i18n: I18n,
    redelivered_on_failure: bool = False,
) -> None:
    paid = message.successful_payment
    assert paid is not None
    try:
        delays = CONFIRM_RETRY_DELAYS if redelivered_on_failure else CONFIRM_RETRY_DELAYS_POLLING
        confirmation = await _confirm(services, user, paid, delays)
    except RetryLater:
        with contextlib.suppress(Exception):
            await message.answer(
                i18n.t("payment.processing", code=esc(paid.telegram_payment_charge_id))
            )
        raise
    except (PaymentNotFound, PaymentMismatch) as exc:
        # Nothing of ours matches it: never grant access for it. If Telegram really took
        # the stars, give them back (a forged update's charge id is refused by Telegram).
        log.warning("payment_unmatched", code=exc.code, tg_user_id=user.telegram_id)
        refunded = await _refund(
            bot, user.telegram_id, paid.currency, paid.telegram_payment_charge_id
        )
        await message.answer(
            i18n.t("payment.unmatched_refunded" if refunded else "payment.unmatched")
        )
        return
    if confirmation.already_processed:
        await message.answer(i18n.t("payment.already_counted"))
        return
    subscription = confirmation.subscription
    await message.answer(
        i18n.t(
            "payment.done",
            days=confirmation.days_added,
            until=moment(subscription.expires_at),
            id=subscription.id,
        ),
        reply_markup=keyboard(
            [(i18n.t("devices.connect"), MenuCb(screen=Screen.NEW_DEVICE))],
            [(i18n.t("menu.title_button"), MenuCb(screen=Screen.MAIN))],
        ),
    )
    log.info(
        "payment_confirmed",
        tg_user_id=user.telegram_id,
        payment_id=confirmation.payment.id,
        subscription_id=subscription.id,
        plan_id=confirmation.payment.plan_id,
    )


async def _confirm(
    services: Services, user: BotUser, paid: SuccessfulPayment, delays: tuple[float, ...]
) -> Confirmation:
    """Record the payment, riding out a short database outage: the money is already taken,
    and confirming again is safe (idempotent by the charge id)."""
    for delay in (*delays, None):
        try:
            return await services.payments.confirm(
                user.telegram_id,
                paid.invoice_payload,
                paid.currency,
                paid.total_amount,
                paid.telegram_payment_charge_id,
                paid.provider_payment_charge_id,
            )
        except DomainError:
            raise
        except Exception:
            if delay is None:
                # Not recorded: say so honestly (never "try again": they would pay twice),
                # and have the update delivered again where Telegram can (webhook).
                log.exception(
                    "payment_not_recorded",
                    tg_user_id=user.telegram_id,
                    charge_id=paid.telegram_payment_charge_id,
                    payload=paid.invoice_payload,
                    amount=paid.total_amount,
                    currency=paid.currency,
                )
                raise RetryLater("the payment could not be recorded") from None
            log.warning("payment_confirm_retry", tg_user_id=user.telegram_id, exc_info=True)
            await asyncio.sleep(delay)
    raise AssertionError("unreachable")


async def _refund(bot: Bot, user_id: int, currency: str, charge_id: str) -> bool:
    if currency != "XTR":
        return False
    try:
        return bool(
            await bot.refund_star_payment(user_id=user_id, telegram_payment_charge_id=charge_id)
        )
    except TelegramBadRequest as exc:
        log.info("refund_refused", tg_user_id=user_id, reason=exc.message)
        return False
