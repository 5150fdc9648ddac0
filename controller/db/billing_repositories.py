"""Billing repositories: promo codes, payments and referrals (see repositories.py for the
conventions: queries over one session, flushing when they must, never committing)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from controller.db.models import Payment, PromoCode, PromoRedemption, Referral
from controller.db.repositories import _Repository
from controller.domain.enums import PaymentStatus


class PromoRepository(_Repository):
    async def get_by_code(self, code: str, *, for_update: bool = False) -> PromoCode | None:
        return await self._one_or_none(
            sa.select(PromoCode).where(PromoCode.code == code), for_update=for_update
        )

    async def add(self, promo: PromoCode) -> PromoCode:
        self.session.add(promo)
        await self.session.flush()
        return promo

    async def claim_use(self, promo_id: int) -> bool:
        """Count one use if the code still has uses left; False when it is exhausted."""
        stmt = (
            sa.update(PromoCode)
            .where(
                PromoCode.id == promo_id,
                sa.or_(PromoCode.max_uses.is_(None), PromoCode.uses_count < PromoCode.max_uses),
            )
            .values(uses_count=PromoCode.uses_count + 1)
            .execution_options(synchronize_session=False)
        )
        result = await self.session.execute(stmt)
        return bool(getattr(result, "rowcount", 0))

    async def redemption_exists(self, promo_id: int, user_id: int) -> bool:
        stmt = sa.select(PromoRedemption.id).where(
            PromoRedemption.promo_code_id == promo_id, PromoRedemption.user_id == user_id
        )
        return (await self.session.execute(stmt)).first() is not None

    async def add_redemption(self, redemption: PromoRedemption) -> None:
        self.session.add(redemption)
        await self.session.flush()

    async def get(self, promo_id: int) -> PromoCode | None:
        return await self._one_or_none(
            sa.select(PromoCode).where(PromoCode.id == promo_id), for_update=False
        )

    async def add_redemption_if_absent(self, values: dict[str, Any]) -> int | None:
        """Record a redemption unless this user already has one of this code; the new id or
        None. ON CONFLICT DO NOTHING: a duplicate never aborts the caller's transaction."""
        stmt = (
            self._insert(PromoRedemption)
            .values(**values)
            .on_conflict_do_nothing(index_elements=["promo_code_id", "user_id"])
            .returning(PromoRedemption.id)
        )
        return (await self.session.execute(stmt)).scalar_one_or_none()

    async def delete_redemption(self, redemption_id: int) -> None:
        await self.session.execute(
            sa.delete(PromoRedemption).where(PromoRedemption.id == redemption_id)
        )


class PaymentRepository(_Repository):
    async def add(self, payment: Payment) -> Payment:
        self.session.add(payment)
        await self.session.flush()
        return payment

    async def get(self, payment_id: int, *, for_update: bool = False) -> Payment | None:
        return await self._one_or_none(
            sa.select(Payment).where(Payment.id == payment_id), for_update=for_update
        )

    async def get_by_external(self, provider: str, external_id: str) -> Payment | None:
        return await self._one_or_none(
            sa.select(Payment).where(
                Payment.provider == provider, Payment.external_payment_id == external_id
            ),
            for_update=False,
        )

    async def list_for_user(self, user_id: int, *, limit: int) -> Sequence[Payment]:
        stmt = (
            sa.select(Payment)
            .where(Payment.user_id == user_id)
            .order_by(Payment.id.desc())
            .limit(limit)
        )
        return (await self.session.execute(stmt)).scalars().all()

    async def paid_before(self, user_id: int, *, excluding: int) -> bool:
        """Whether the user paid anything before (a refunded payment was paid too)."""
        stmt = sa.select(Payment.id).where(
            Payment.user_id == user_id,
            Payment.id != excluding,
            Payment.status.in_([PaymentStatus.COMPLETED, PaymentStatus.REFUNDED]),
        )
        return (await self.session.execute(stmt.limit(1))).first() is not None


@dataclass(frozen=True, slots=True)
class ReferralCounts:
    invited: int
    rewarded: int
    reward_days: int


class ReferralRepository(_Repository):
    async def add(self, referral: Referral) -> None:
        self.session.add(referral)
        await self.session.flush()

    async def of_referred(self, user_id: int) -> Referral | None:
        return await self._one_or_none(
            sa.select(Referral).where(Referral.referred_id == user_id), for_update=False
        )

    async def mark_rewarded(self, referral_id: int, days: int, now: datetime) -> bool:
        """Record the reward unless it already is; False when another payment got there first."""
        stmt = (
            sa.update(Referral)
            .where(Referral.id == referral_id, Referral.rewarded_at.is_(None))
            .values(reward_days=days, rewarded_at=now)
            .execution_options(synchronize_session=False)
        )
        result = await self.session.execute(stmt)
        return bool(getattr(result, "rowcount", 0))

    async def counts(self, referrer_id: int) -> ReferralCounts:
        rewarded = Referral.rewarded_at.is_not(None)
        stmt = sa.select(
            sa.func.count(Referral.id),
            sa.func.coalesce(sa.func.sum(sa.case((rewarded, 1), else_=0)), 0),
            sa.func.coalesce(
                sa.func.sum(
                    sa.case((rewarded, sa.func.coalesce(Referral.reward_days, 0)), else_=0)
                ),
                0,
            ),
        ).where(Referral.referrer_id == referrer_id)
        invited, paid, days = (await self.session.execute(stmt)).one()
        return ReferralCounts(int(invited), int(paid), int(days))
