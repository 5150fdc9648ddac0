"""``vpnbot admin``, ``vpnbot plan`` and ``vpnbot user``: day-to-day management."""

from __future__ import annotations

import click

from controller.bootstrap import Container
from controller.cli.common import table, with_container
from controller.db.models import SubscriptionPlan, User
from controller.domain import money, rules
from controller.domain.enums import UserRole
from controller.services import Actor
from controller.services.plans import PlanDraft

TELEGRAM_ID = click.IntRange(min=1, max=rules.MAX_TELEGRAM_ID - 1)
RECORD_ID = click.IntRange(min=1, max=rules.MAX_RECORD_ID)


@click.group("admin")
def admin_group() -> None:
    """Staff roles: who may use the admin and support bots."""


@admin_group.command("add")
@click.argument("telegram_id", type=TELEGRAM_ID)
@click.option(
    "--role",
    type=click.Choice(["admin", "support"]),
    default="admin",
    show_default=True,
    help="Role to give.",
)
@click.pass_context
def admin_add(ctx: click.Context, telegram_id: int, role: str) -> None:
    """Make TELEGRAM_ID an admin or support agent (creates the user if not seen yet)."""

    async def action(c: Container) -> User:
        return await c.services.users.set_role(Actor.cli(), telegram_id, UserRole(role))

    user = with_container(ctx, action)
    click.echo(f"user {user.telegram_id} is now {user.role.value}")


@admin_group.command("remove")
@click.argument("telegram_id", type=TELEGRAM_ID)
@click.pass_context
def admin_remove(ctx: click.Context, telegram_id: int) -> None:
    """Take the staff role away from TELEGRAM_ID (they stay a client)."""

    async def action(c: Container) -> User:
        await c.services.users.get(telegram_id)  # refuse unknown ids instead of creating them
        return await c.services.users.set_role(Actor.cli(), telegram_id, UserRole.CLIENT)

    user = with_container(ctx, action)
    click.echo(f"user {user.telegram_id} is now {user.role.value}")


@click.group("plan")
def plan_group() -> None:
    """Subscription plans on sale."""


@plan_group.command("add")
@click.option("--name", required=True, help="Name shown to clients.")
@click.option(
    "--days",
    type=click.IntRange(1, rules.MAX_DURATION_DAYS),
    required=True,
    help="Duration in days.",
)
@click.option("--price", required=True, help="Price, e.g. 199 or 199.90 (no floats stored).")
@click.option("--currency", default=None, help="Currency code [default: VPNBOT_DEFAULT_CURRENCY].")
@click.option(
    "--traffic-gb",
    type=click.IntRange(1, rules.MAX_TRAFFIC_GB),
    default=None,
    help="Traffic limit in GiB [default: unlimited].",
)
@click.option(
    "--devices",
    type=click.IntRange(1, rules.MAX_DEVICE_LIMIT),
    default=1,
    show_default=True,
    help="Devices per subscription.",
)
@click.option("--description", default=None, help="Longer text shown to clients.")
@click.option("--popular", is_flag=True, help="Highlight the plan in the bot.")
@click.option("--trial", is_flag=True, help="Mark the plan as the free trial.")
@click.option(
    "--sort-order",
    type=click.IntRange(-rules.MAX_SORT_ORDER, rules.MAX_SORT_ORDER),
    default=0,
    show_default=True,
    help="Lower comes first.",
)
@click.pass_context
def plan_add(
    ctx: click.Context,
    name: str,
    days: int,
    price: str,
    currency: str | None,
    traffic_gb: int | None,
    devices: int,
    description: str | None,
    popular: bool,
    trial: bool,
    sort_order: int,
) -> None:
    """Create a plan."""

    async def action(c: Container) -> SubscriptionPlan:
        code = money.normalize_currency(currency or c.settings.default_currency)
        draft = PlanDraft(
            name=name,
            duration_days=days,
            price_minor=money.parse_amount(price, code),
            currency=code,
            description=description,
            traffic_limit_gb=traffic_gb,
            device_limit=devices,
            is_popular=popular,
            is_trial=trial,
            sort_order=sort_order,
        )
        return await c.services.plans.create(Actor.cli(), draft)

    plan = with_container(ctx, action)
    click.echo(f"plan {plan.id} created: {_plan_line(plan)}")


def _plan_line(plan: SubscriptionPlan) -> str:
    traffic = "unlimited" if plan.traffic_limit_gb is None else f"{plan.traffic_limit_gb} GB"
    return (
        f"{plan.name}, {plan.duration_days} days, "
        f"{money.format_amount(plan.price_minor, plan.currency)}, {traffic}, "
        f"{plan.device_limit} device(s)"
    )


@plan_group.command("list")
@click.option("--all", "show_all", is_flag=True, help="Include plans that are not on sale.")
@click.pass_context
def plan_list(ctx: click.Context, show_all: bool) -> None:
    """List plans."""

    async def action(c: Container) -> list[SubscriptionPlan]:
        return list(await c.services.plans.list(active_only=not show_all))

    plans = with_container(ctx, action)
    if not plans:
        click.echo("no plans yet: add one with `vpnbot plan add`")
        return
    rows = [
        (
            p.id,
            p.name,
            p.duration_days,
            money.format_amount(p.price_minor, p.currency),
            "unlimited" if p.traffic_limit_gb is None else p.traffic_limit_gb,
            p.device_limit,
            "yes" if p.is_active else "no",
            "yes" if p.is_popular else "",
        )
        for p in plans
    ]
    headers = ("ID", "NAME", "DAYS", "PRICE", "TRAFFIC_GB", "DEVICES", "ON_SALE", "POPULAR")
    click.echo(table(headers, rows))


@click.group("user")
def user_group() -> None:
    """Look up users."""


@user_group.command("list")
@click.option(
    "--role", type=click.Choice([r.value for r in UserRole]), default=None, help="Only this role."
)
@click.option("--banned/--not-banned", default=None, help="Only banned / not banned users.")
@click.option("--limit", type=click.IntRange(1, 1000), default=50, show_default=True)
@click.option("--offset", type=click.IntRange(0, 10**9), default=0, show_default=True)
@click.pass_context
def user_list(
    ctx: click.Context, role: str | None, banned: bool | None, limit: int, offset: int
) -> None:
    """List users, oldest first."""

    async def action(c: Container) -> list[User]:
        return list(
            await c.services.users.list(
                role=UserRole(role) if role else None, banned=banned, limit=limit, offset=offset
            )
        )

    users = with_container(ctx, action)
    if not users:
        click.echo("no users")
        return
    rows = [
        (
            u.id,
            u.telegram_id,
            f"@{u.username}" if u.username else "",
            u.role.value,
            u.language_code,
            "yes" if u.is_banned else "",
            u.created_at.strftime("%Y-%m-%d %H:%M"),
        )
        for u in users
    ]
    click.echo(
        table(("ID", "TELEGRAM_ID", "USERNAME", "ROLE", "LANG", "BANNED", "CREATED_UTC"), rows)
    )


@user_group.command("show")
@click.argument("telegram_id", type=TELEGRAM_ID)
@click.pass_context
def user_show(ctx: click.Context, telegram_id: int) -> None:
    """Show one user and their subscriptions."""

    async def action(c: Container) -> tuple[User, list[str]]:
        user = await c.services.users.get(telegram_id)
        subscriptions = await c.services.subscriptions.list_for_user(user.id)
        lines = []
        for s in subscriptions:
            expires = s.expires_at.strftime("%Y-%m-%d %H:%M UTC") if s.expires_at else "-"
            limit = "unlimited" if s.traffic_limit_bytes is None else f"{s.traffic_limit_bytes}"
            lines.append(
                f"  #{s.id} {s.status.value} until {expires}, plan {s.plan_id or '-'}, "
                f"traffic {s.traffic_used_bytes}/{limit} bytes, devices {s.device_limit}"
            )
        return user, lines

    user, lines = with_container(ctx, action)
    name = " ".join(part for part in (user.first_name, user.last_name) if part) or "-"
    banned = f"yes ({user.ban_reason or 'no reason given'})" if user.is_banned else "no"
    activity = user.last_activity.strftime("%Y-%m-%d %H:%M UTC") if user.last_activity else "-"
    click.echo(
        "\n".join(
            [
                f"user {user.id}",
                f"  telegram id:   {user.telegram_id}",
                f"  username:      {'@' + user.username if user.username else '-'}",
                f"  name:          {name}",
                f"  role:          {user.role.value}",
                f"  language:      {user.language_code}",
                f"  banned:        {banned}",
                f"  registered:    {user.created_at.strftime('%Y-%m-%d %H:%M UTC')}",
                f"  last activity: {activity}",
                f"subscriptions: {len(lines) or 'none'}",
                *lines,
            ]
        )
    )
