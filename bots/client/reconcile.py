"""Reconciling Telegram's Star ledger with our payments.

A successful_payment update can be lost — the database was down longer than the handler's
retries while polling had already confirmed the update, or the process died mid-way. The
money is then in the bot's Star balance with no access given for it. Telegram keeps every
charge in getStarTransactions (oldest first); this job reads the entries it has not seen
yet and confirms each incoming invoice payment through the same idempotent service call as
the update would have (a charge already recorded changes nothing). The position reached is
stored, so every entry is read once; a pass that fails leaves it for the next one.
"""

from __future__ import annotations

import asyncio
import contextlib
from datetime import datetime

import structlog
from aiogram import Bot
from aiogram.exceptions import TelegramAPIError
from aiogram.types import StarTransaction, TransactionPartnerUser

from bots.common.formatting import moment
from bots.common.i18n import for_language
from controller.domain.errors import DomainError
from controller.services import Services

log = structlog.get_logger(__name__)

PAGE = 100
INTERVAL_SECONDS = 600.0


def _incoming(entry: StarTransaction) -> TransactionPartnerUser | None:
    source = entry.source
    if (
        isinstance(source, TransactionPartnerUser)
        and source.transaction_type == "invoice_payment"
        and source.invoice_payload
    ):
        return source
    return None


async def reconcile_once(bot: Bot, services: Services) -> int:
    """One pass over the unseen ledger entries; the number of payments recorded by it."""
    position = await services.payments.ledger_cursor()
    recorded = 0
    while True:
        entries = (await bot.get_star_transactions(offset=position, limit=PAGE)).transactions
        refunded = {e.id for e in entries if e.receiver is not None}
        for entry in entries:
            source = _incoming(entry)
            if source is None or entry.id in refunded:
                continue
            assert source.invoice_payload is not None
            try:
                confirmation = await services.payments.confirm(
                    source.user.id, source.invoice_payload, "XTR", entry.amount, entry.id
                )
            except DomainError as exc:
                # Not one of our invoices (or not this payer's): it was refunded when its
                # update arrived, or it is for someone to look at; never access for it.
                log.info("ledger_entry_unmatched", code=exc.code, tg_user_id=source.user.id)
                continue
            if not confirmation.already_processed:
                recorded += 1
                log.warning(
                    "payment_reconciled",
                    tg_user_id=source.user.id,
                    payment_id=confirmation.payment.id,
                    subscription_id=confirmation.subscription.id,
                )
                await _tell(bot, services, source.user.id, confirmation.subscription.expires_at)
        position += len(entries)
        await services.payments.set_ledger_cursor(position)
        if len(entries) < PAGE:
            return recorded


async def _tell(bot: Bot, services: Services, telegram_id: int, until: datetime | None) -> None:
    with contextlib.suppress(Exception):  # telling is a courtesy; the access is granted
        user = await services.users.get(telegram_id)
        i18n = for_language(user.language_code)
        await bot.send_message(
            telegram_id,
            i18n.t("payment.reconciled", until=moment(until)),
        )


async def run(bot: Bot, services: Services, interval: float = INTERVAL_SECONDS) -> None:
    """Reconcile now and then every ``interval`` seconds, until cancelled."""
    while True:
        try:
            recorded = await reconcile_once(bot, services)
            if recorded:
                log.warning("payments_reconciled", count=recorded)
        except (TelegramAPIError, OSError) as exc:
            log.warning("ledger_unreachable", reason=str(exc))
        except Exception:
            log.exception("ledger_reconcile_failed")
        await asyncio.sleep(interval)
