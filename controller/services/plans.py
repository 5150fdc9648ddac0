"""Subscription plans: what a seller sells."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, fields

from controller.db.models import SubscriptionPlan
from controller.db.uow import UnitOfWork
from controller.domain import money, rules
from controller.domain.errors import InvalidInput, PlanNotFound
from controller.services import audit
from controller.services.base import Actor, Service


@dataclass(frozen=True, slots=True)
class PlanDraft:
    name: str
    duration_days: int
    price_minor: int
    currency: str = "RUB"
    description: str | None = None
    traffic_limit_gb: int | None = None
    device_limit: int = 1
    is_popular: bool = False
    is_trial: bool = False
    sort_order: int = 0


@dataclass(frozen=True, slots=True)
class PlanChanges:
    """Fields to change; ``None`` leaves a field as it is (use ``clear_traffic_limit`` to make a
    plan unlimited)."""

    name: str | None = None
    description: str | None = None
    duration_days: int | None = None
    price_minor: int | None = None
    currency: str | None = None
    traffic_limit_gb: int | None = None
    clear_traffic_limit: bool = False
    device_limit: int | None = None
    sort_order: int | None = None


def _validated(draft: PlanDraft) -> PlanDraft:
    return PlanDraft(
        name=rules.validate_plan_name(draft.name),
        duration_days=rules.validate_days(draft.duration_days),
        price_minor=money.validate_amount_minor(draft.price_minor),
        currency=money.normalize_currency(draft.currency),
        description=draft.description,
        traffic_limit_gb=rules.validate_traffic_limit_gb(draft.traffic_limit_gb),
        device_limit=rules.validate_device_limit(draft.device_limit),
        is_popular=draft.is_popular,
        is_trial=draft.is_trial,
        sort_order=rules.validate_sort_order(draft.sort_order),
    )


class PlanService(Service):
    async def create(self, actor: Actor, draft: PlanDraft) -> SubscriptionPlan:
        draft = _validated(draft)
        async with self._uow() as uow:
            plan = await uow.plans.add(
                SubscriptionPlan(**{f.name: getattr(draft, f.name) for f in fields(draft)})
            )
            await audit.record(
                uow,
                actor,
                "plan.create",
                target_type="plan",
                target_id=plan.id,
                details={
                    "name": plan.name,
                    "price_minor": plan.price_minor,
                    "currency": plan.currency,
                },
            )
            await uow.commit()
            return plan

    async def update(self, actor: Actor, plan_id: int, changes: PlanChanges) -> SubscriptionPlan:
        async with self._uow() as uow:
            plan = await _require(uow, plan_id)
            merged = PlanDraft(
                name=changes.name if changes.name is not None else plan.name,
                duration_days=(
                    plan.duration_days if changes.duration_days is None else changes.duration_days
                ),
                price_minor=(
                    changes.price_minor if changes.price_minor is not None else plan.price_minor
                ),
                currency=plan.currency if changes.currency is None else changes.currency,
                description=(
                    changes.description if changes.description is not None else plan.description
                ),
                traffic_limit_gb=(
                    None
                    if changes.clear_traffic_limit
                    else plan.traffic_limit_gb
                    if changes.traffic_limit_gb is None
                    else changes.traffic_limit_gb
                ),
                device_limit=(
                    plan.device_limit if changes.device_limit is None else changes.device_limit
                ),
                is_popular=plan.is_popular,
                is_trial=plan.is_trial,
                sort_order=changes.sort_order
                if changes.sort_order is not None
                else plan.sort_order,
            )
            merged = _validated(merged)
            changed: dict[str, object] = {}
            for field in fields(merged):
                new = getattr(merged, field.name)
                if getattr(plan, field.name) != new:
                    changed[field.name] = new
                    setattr(plan, field.name, new)
            if not changed:
                raise InvalidInput("nothing to change")
            await audit.record(
                uow, actor, "plan.update", target_type="plan", target_id=plan.id, details=changed
            )
            await uow.commit()
            return plan

    async def set_active(self, actor: Actor, plan_id: int, active: bool) -> SubscriptionPlan:
        return await self._set_flag(actor, plan_id, "is_active", active)

    async def set_popular(self, actor: Actor, plan_id: int, popular: bool) -> SubscriptionPlan:
        return await self._set_flag(actor, plan_id, "is_popular", popular)

    async def _set_flag(
        self, actor: Actor, plan_id: int, flag: str, value: bool
    ) -> SubscriptionPlan:
        async with self._uow() as uow:
            plan = await _require(uow, plan_id)
            setattr(plan, flag, value)
            await audit.record(
                uow,
                actor,
                f"plan.{flag}",
                target_type="plan",
                target_id=plan.id,
                details={flag: value},
            )
            await uow.commit()
            return plan

    async def get(self, plan_id: int) -> SubscriptionPlan:
        async with self._uow() as uow:
            return await _require(uow, plan_id, for_update=False)

    async def list(self, *, active_only: bool = False) -> Sequence[SubscriptionPlan]:
        async with self._uow() as uow:
            return await uow.plans.list(active_only=active_only)


async def _require(uow: UnitOfWork, plan_id: int, *, for_update: bool = True) -> SubscriptionPlan:
    plan = await uow.plans.get(plan_id, for_update=for_update)
    if plan is None:
        raise PlanNotFound(f"no plan with id {plan_id}")
    return plan
