"""Support tickets from clients: opening one, listing and reading their own."""

from __future__ import annotations

from collections.abc import Sequence

from controller.db.models import SupportMessage, SupportTicket, User
from controller.db.uow import UnitOfWork
from controller.domain.enums import TicketPriority, TicketStatus
from controller.domain.errors import InvalidInput, LimitReached, TicketNotFound, UserNotFound
from controller.services.base import Service

MAX_TEXT = 4000  # a Telegram message is at most 4096 characters; leave room for a header
MAX_SUBJECT = 100
MAX_OPEN_TICKETS = 5
MAX_LIST = 100


class SupportService(Service):
    async def open_ticket(
        self, telegram_id: int, text: str, *, subject: str | None = None
    ) -> SupportTicket:
        """Open a ticket whose first message is ``text``; at most a few open at a time."""
        body = text.strip() if isinstance(text, str) else ""
        if not 1 <= len(body) <= MAX_TEXT:
            raise InvalidInput(f"a support request is 1 to {MAX_TEXT} characters")
        title = (subject or "").strip() or body.splitlines()[0].strip()
        title = title[:MAX_SUBJECT]
        now = self._now()
        async with self._uow() as uow:
            # Locked: two tickets opened at once cannot both slip under the limit.
            user = await _require(uow, telegram_id, for_update=True)
            if await uow.support.count_open(user.id) >= MAX_OPEN_TICKETS:
                raise LimitReached(
                    f"you have {MAX_OPEN_TICKETS} open requests; wait for an answer to one of them"
                )
            ticket = await uow.support.add_ticket(
                SupportTicket(
                    user_id=user.id,
                    subject=title,
                    description=body,
                    status=TicketStatus.OPEN,
                    priority=TicketPriority.MEDIUM,
                    last_message_at=now,
                )
            )
            await uow.support.add_message(
                SupportMessage(
                    ticket_id=ticket.id,
                    sender_id=user.id,
                    is_from_staff=False,
                    message=body,
                    created_at=now,
                )
            )
            await uow.activity.add(user.id, "ticket_opened", {"ticket_id": ticket.id})
            await uow.commit()
            return ticket

    async def list_for_user(self, telegram_id: int, limit: int = 10) -> Sequence[SupportTicket]:
        """The user's tickets, newest first."""
        if isinstance(limit, bool) or not 1 <= limit <= MAX_LIST:
            raise InvalidInput(f"limit must be 1..{MAX_LIST}")
        async with self._uow().read_only() as uow:
            user = await _require(uow, telegram_id)
            return await uow.support.list_for_user(user.id, limit=limit)

    async def get_for(self, telegram_id: int, ticket_id: int) -> SupportTicket:
        """One of the user's own tickets (another user's is "not found")."""
        async with self._uow().read_only() as uow:
            user = await _require(uow, telegram_id)
            ticket = await uow.support.get(ticket_id)
            if ticket is None or ticket.user_id != user.id:
                raise TicketNotFound(f"no ticket with id {ticket_id}")
            return ticket


async def _require(uow: UnitOfWork, telegram_id: int, *, for_update: bool = False) -> User:
    user = await uow.users.get_by_telegram_id(telegram_id, for_update=for_update)
    if user is None:
        raise UserNotFound(f"no user with Telegram id {telegram_id}")
    return user
