"""Payments in Telegram Stars: invoices, pre-checkout answers, refunds.

The fake knows no payment providers, so only Stars invoices ("XTR", no provider token, exactly one
price, no tips) can be sent; anything else gets the error Telegram gives such an invoice.
"""

from __future__ import annotations

import asyncio
from typing import Any

from ..args import to_integer
from ..errors import QUERY_TOO_OLD, bad_request
from ..state import UserState
from . import Ctx, api_method
from .common import markup, send, target

PRE_CHECKOUT_TIMEOUT = 10.0


def _prices(raw: str) -> list[dict[str, Any]]:
    import json

    try:
        value = json.loads(raw)
    except ValueError:
        raise bad_request("Can't parse prices JSON object") from None
    if not isinstance(value, list):
        raise bad_request("Expected an Array of labeled prices")
    prices = []
    for item in value:
        if not isinstance(item, dict):
            raise bad_request("Can't parse labeled price: LabeledPrice must be an Object")
        label, amount = item.get("label"), item.get("amount")
        if not isinstance(label, str):
            raise bad_request('Can\'t parse labeled price: Field "label" must be of type String')
        if not label:
            raise bad_request("Can't parse labeled price: LabeledPrice label must be non-empty")
        if isinstance(amount, str) and amount.lstrip("-").isdigit():
            amount = int(amount)
        if not isinstance(amount, int) or isinstance(amount, bool):
            raise bad_request('Can\'t parse labeled price: Field "amount" must be a valid Number')
        prices.append({"label": label, "amount": amount})
    if not prices:
        raise bad_request("There must be at least one price")
    return prices


@api_method("sendInvoice")
def send_invoice(ctx: Ctx) -> dict[str, Any]:
    args = ctx.args
    title = args.required("title")
    description = args.required("description")
    payload = args.required("payload")
    provider_token = args.text("provider_token")
    currency = args.required("currency")
    prices = _prices(args.required("prices"))
    max_tip = args.text("max_tip_amount")
    if max_tip and not max_tip.lstrip("-").isdigit():
        raise bad_request('Can\'t parse "max_tip_amount" as Number')
    tips = args.json_value("suggested_tip_amounts", "suggested_tip_amounts")
    reply_markup = markup(ctx)
    where = target(ctx)
    total = sum(price["amount"] for price in prices)
    if total <= 0:
        raise bad_request("Total price must be positive")
    if currency == "XTR":
        if len(prices) != 1 or provider_token or int(max_tip or 0) or tips:
            raise bad_request("STARS_INVOICE_INVALID")
    else:
        raise bad_request("PAYMENT_PROVIDER_INVALID")
    if len(payload.encode("utf-8")) > 128:
        raise bad_request("INVOICE_PAYLOAD_INVALID")
    if len(title) > 32:
        raise bad_request("TITLE_INVALID")
    if len(description) > 255:
        raise bad_request("DESCRIPTION_INVALID")
    invoice = {
        "title": title,
        "description": description,
        "start_parameter": args.text("start_parameter"),
        "currency": currency,
        "total_amount": total,
    }
    message = send(ctx, where, {"invoice": invoice}, reply_markup, payload=payload)
    return message.json()


@api_method("answerPreCheckoutQuery")
def answer_pre_checkout_query(ctx: Ctx) -> bool:
    query_id = str(to_integer(ctx.args.text("pre_checkout_query_id")))
    ok = ctx.args.flag("ok")
    error_message = None if ok else ctx.args.required("error_message")
    query = ctx.tg.pre_checkout_queries.get(query_id)
    loop = asyncio.get_running_loop()
    if (
        query is None
        or query.bot_id != ctx.bot.id
        or query.answer is not None
        or loop.time() - query.created > PRE_CHECKOUT_TIMEOUT
    ):
        raise bad_request(QUERY_TOO_OLD)
    query.answer = {"ok": ok, "error_message": error_message}
    query.answered.set()
    return True


@api_method("refundStarPayment")
def refund_star_payment(ctx: Ctx) -> bool:
    user_id = max(to_integer(ctx.args.text("user_id")), 0)
    if not user_id:
        raise bad_request("Invalid user_id specified")
    charge_id = ctx.args.required("telegram_payment_charge_id")
    user = ctx.tg.users.get(user_id)
    if user is None or not ctx.tg.knows_user(ctx.bot, user_id):
        raise bad_request("user not found")
    charge = ctx.tg.charges.get(charge_id)
    if charge is None or charge.user_id != user_id or charge.bot_id != ctx.bot.id:
        raise bad_request("CHARGE_NOT_FOUND")
    if charge.refunded:
        raise bad_request("CHARGE_ALREADY_REFUNDED")
    charge.refunded = True
    ctx.tg.star_transactions.append(("out", charge))
    _announce_refund(ctx, user, charge.charge_id)
    return True


@api_method("getStarTransactions")
def get_star_transactions(ctx: Ctx) -> dict[str, Any]:
    """The bot's Star transactions, oldest first (as documented), ``offset`` skipped."""
    offset = max(to_integer(ctx.args.text("offset") or "0"), 0)
    limit = to_integer(ctx.args.text("limit") or "100")
    if not 1 <= limit <= 100:
        raise bad_request("Invalid limit specified")
    mine = [(way, c) for way, c in ctx.tg.star_transactions if c.bot_id == ctx.bot.id]
    transactions = []
    for way, charge in mine[offset : offset + limit]:
        partner = {
            "type": "user",
            "transaction_type": "invoice_payment",
            "user": ctx.tg.users[charge.user_id].json(),
        }
        if way == "in":
            partner["invoice_payload"] = charge.invoice_payload
        transactions.append(
            {
                "id": charge.charge_id,
                "amount": charge.total_amount,
                "date": charge.date,
                ("source" if way == "in" else "receiver"): partner,
            }
        )
    return {"transactions": transactions}


def _announce_refund(ctx: Ctx, user: UserState, charge_id: str) -> None:
    """The service message Telegram puts in the chat after a refund (Message.refunded_payment)."""
    charge = ctx.tg.charges[charge_id]
    chat = ctx.tg.private_chat(ctx.bot, user)
    refunded = {
        "currency": charge.currency,
        "total_amount": charge.total_amount,
        "invoice_payload": charge.invoice_payload,
        "telegram_payment_charge_id": charge.charge_id,
    }
    message = ctx.tg.store(chat, user, {"refunded_payment": refunded})
    ctx.tg.deliver(message)
