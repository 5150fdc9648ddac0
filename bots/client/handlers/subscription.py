"""Plans on sale and the user's subscriptions (status, expiry, traffic, auto-renewal)."""

from __future__ import annotations

from aiogram import F
from aiogram.types import CallbackQuery

from bots.client.callbacks import MenuCb, PlanAction, PlanCb, Screen, SubAction, SubCb
from bots.common.context import BotUser
from bots.common.formatting import clip, day, esc, moment, price, size
from bots.common.i18n import I18n
from bots.common.keyboards import Button, keyboard
from bots.common.routes import Routes
from bots.common.screens import show
from controller.db.models import SubscriptionPlan
from controller.domain.enums import SubscriptionStatus
from controller.payments.stars import StarsProvider
from controller.services import Services
from controller.services.subscriptions import SubscriptionView

router = Routes("client.subscription")
STARS = StarsProvider.name  # the provider the client bot sells through


def plan_terms(i18n: I18n, plan: SubscriptionPlan) -> str:
    traffic = (
        i18n.t("plan.traffic_unlimited")
        if plan.traffic_limit_gb is None
        else i18n.t("plan.traffic_gb", gb=plan.traffic_limit_gb)
    )
    return i18n.t("plan.terms", days=plan.duration_days, devices=plan.device_limit, traffic=traffic)


def stars_price(services: Services, plan: SubscriptionPlan) -> int | None:
    """The plan's price in stars, or None when Stars payments are off."""
    charge = services.payments.charge_for(plan.price_minor, plan.currency, STARS)
    return None if charge is None else charge.amount_minor


@router.callback_query(MenuCb.filter(F.screen == Screen.PLANS))
async def on_plans(query: CallbackQuery, services: Services, i18n: I18n) -> None:
    plans = [p for p in await services.plans.list(active_only=True) if not p.is_trial]
    if not plans:
        await show(query, i18n.t("plans.none"), keyboard(_back(i18n)))
        return
    rows: list[list[Button]] = []
    for plan in plans:
        star = "⭐ " if plan.is_popular else ""
        label = f"{star}{plan.name} · {price(plan.price_minor, plan.currency)}"
        rows.append([(label, PlanCb(plan_id=plan.id, action=PlanAction.VIEW))])
    await show(query, i18n.t("plans.title"), keyboard(*rows, _back(i18n)))


@router.callback_query(PlanCb.filter(F.action == PlanAction.VIEW))
async def on_plan(
    query: CallbackQuery,
    callback_data: PlanCb,
    services: Services,
    i18n: I18n,
) -> None:
    plan = await services.plans.get(callback_data.plan_id)
    if not plan.is_active or plan.is_trial:
        await show(query, i18n.t("error.plan_inactive"), keyboard(_plans(i18n)))
        return
    stars = stars_price(services, plan)
    lines = [f"<b>{esc(plan.name)}</b>"]
    if plan.description:
        lines.append(esc(clip(plan.description, 2000)))
    lines.append(plan_terms(i18n, plan))
    lines.append(i18n.t("plan.price", price=price(plan.price_minor, plan.currency)))
    if stars is not None and plan.currency != "XTR":
        lines.append(i18n.t("plan.price_stars", stars=stars))
    buttons: list[list[Button]] = []
    if stars is not None:
        buttons.append([(i18n.t("plan.pay_stars"), PlanCb(plan_id=plan.id, action=PlanAction.BUY))])
        buttons.append([(i18n.t("plan.promo"), PlanCb(plan_id=plan.id, action=PlanAction.PROMO))])
    else:
        lines.append(i18n.t("plan.no_payment_method"))
    await show(query, "\n".join(lines), keyboard(*buttons, _plans(i18n)))


def subscription_line(i18n: I18n, view: SubscriptionView) -> str:
    name = esc(view.plan_name) if view.plan_name else i18n.t("subscription.no_plan")
    return i18n.t(
        "subscription.line",
        id=view.id,
        name=name,
        status=status_text(i18n, view),
        until=day(view.expires_at),
    )


def status_text(i18n: I18n, view: SubscriptionView) -> str:
    if view.status is SubscriptionStatus.SUSPENDED and view.suspend_reason is not None:
        return i18n.t(f"status.suspended.{view.suspend_reason.value}")
    return i18n.t(f"status.{view.status.value}")


@router.callback_query(MenuCb.filter(F.screen == Screen.SUBSCRIPTIONS))
async def on_subscriptions(
    query: CallbackQuery, services: Services, user: BotUser, i18n: I18n
) -> None:
    views = await services.subscriptions.overview(user.telegram_id)
    if not views:
        await show(
            query,
            i18n.t("subscription.none"),
            keyboard([(i18n.t("menu.plans"), MenuCb(screen=Screen.PLANS))], _back(i18n)),
        )
        return
    shown = views[:10]  # newest first; older ones stay in the history, not on screen
    rows: list[list[Button]] = [
        [(f"#{v.id} · {status_text(i18n, v)}", SubCb(subscription_id=v.id, action=SubAction.VIEW))]
        for v in shown
    ]
    text = "\n".join([i18n.t("subscription.title"), *(subscription_line(i18n, v) for v in shown)])
    await show(query, text, keyboard(*rows, _back(i18n)))


def render_subscription(i18n: I18n, view: SubscriptionView) -> tuple[str, list[list[Button]]]:
    limit = (
        i18n.t("plan.traffic_unlimited")
        if view.traffic_limit_bytes is None
        else size(i18n, view.traffic_limit_bytes)
    )
    text = i18n.t(
        "subscription.details",
        id=view.id,
        name=esc(view.plan_name) if view.plan_name else i18n.t("subscription.no_plan"),
        status=status_text(i18n, view),
        until=moment(view.expires_at),
        used=size(i18n, view.traffic_used_bytes),
        limit=limit,
        devices=view.devices_used,
        device_limit=view.device_limit,
        auto=i18n.t("common.on") if view.auto_renew else i18n.t("common.off"),
    )
    rows: list[list[Button]] = []
    if view.plan_id is not None:
        rows.append(
            [(i18n.t("subscription.renew"), SubCb(subscription_id=view.id, action=SubAction.RENEW))]
        )
    toggle = SubAction.AUTO_OFF if view.auto_renew else SubAction.AUTO_ON
    rows.append(
        [
            (
                i18n.t("subscription.auto_off" if view.auto_renew else "subscription.auto_on"),
                SubCb(subscription_id=view.id, action=toggle),
            )
        ]
    )
    rows.append([(i18n.t("menu.devices"), MenuCb(screen=Screen.DEVICES))])
    rows.append([(i18n.t("common.back"), MenuCb(screen=Screen.SUBSCRIPTIONS))])
    return text, rows


@router.callback_query(SubCb.filter(F.action == SubAction.VIEW))
async def on_subscription(
    query: CallbackQuery, callback_data: SubCb, services: Services, user: BotUser, i18n: I18n
) -> None:
    view = await services.subscriptions.view(user.telegram_id, callback_data.subscription_id)
    text, rows = render_subscription(i18n, view)
    await show(query, text, keyboard(*rows))


@router.callback_query(SubCb.filter(F.action.in_({SubAction.AUTO_ON, SubAction.AUTO_OFF})))
async def on_auto_renew(
    query: CallbackQuery, callback_data: SubCb, services: Services, user: BotUser, i18n: I18n
) -> None:
    view = await services.subscriptions.set_auto_renew_for(
        user.telegram_id, callback_data.subscription_id, callback_data.action is SubAction.AUTO_ON
    )
    text, rows = render_subscription(i18n, view)
    await show(query, text, keyboard(*rows))


def _back(i18n: I18n) -> list[Button]:
    return [(i18n.t("common.back"), MenuCb(screen=Screen.MAIN))]


def _plans(i18n: I18n) -> list[Button]:
    return [(i18n.t("common.back"), MenuCb(screen=Screen.PLANS))]
