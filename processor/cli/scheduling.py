"""The scheduling commands: limits (what runs, what waits, and the caps), set-limit and
set-type-limit (caps and weights, kept in the database for every processor), pause and resume;
budgets, set-budget and set-price (what groups, types and the service may spend per period)."""

from __future__ import annotations

import argparse
from datetime import UTC
from decimal import Decimal, InvalidOperation
from typing import Any

from rich.table import Table

from processor import db
from processor.cli import console
from processor.cli.common import add_command, bounded_int, database_url, routed_types
from processor.errors import ConfigError

FORCE_HELP = "use a job type no route, job or limit knows yet"


def _cap(text: str) -> int | None:
    """A running cap: a whole number from 0 to 1,000,000, or `none` for no cap (as SQL says
    it: null)."""
    if text.lower() == "none":
        return None
    return bounded_int(0, 1_000_000, ", or none for no cap")(text)


def cmd_limits(args: argparse.Namespace) -> int:
    with db.connect(database_url()) as conn:
        types = db.run(conn, "job_type_states")
        groups = db.run(conn, "busiest_groups", {"limit": args.groups})
        limits = db.run(conn, "concurrency_limits")
    console.emit(console.output(), console.limits_view(types, groups, limits))
    return 0


def cmd_set_limit(args: argparse.Namespace) -> int:
    with db.connect(database_url()) as conn:
        db.run(
            conn,
            "set_concurrency_limit",
            {"key": args.group, "max_running": args.max_running, "weight": args.weight},
        )
    who = "every group without a limit of its own" if args.group == "*" else f"group {args.group}"
    cap = "no cap" if args.max_running is None else f"at most {args.max_running} running"
    print(f"{who}: {cap}, weight {args.weight}")
    return 0


def require_known_type(conn: Any, job_type: str, force: bool) -> None:
    """Refuses a job type that no route, pending, running or recent job, or limit names (a typo
    would pause or cap nothing and say it did), unless --force; the message lists the known."""
    if force:
        return
    known = routed_types() | {r["job_type"] for r in db.run(conn, "known_job_types")}
    if job_type not in known:
        raise ConfigError(
            f"unknown job type {job_type!r}: no route, job or limit names it. Known types: "
            f"{', '.join(sorted(known))}. Pass --force to use the name anyway (say, for a type "
            "whose first job is still to come)"
        )


def cmd_set_type_limit(args: argparse.Namespace) -> int:
    with db.connect(database_url()) as conn:
        require_known_type(conn, args.job_type, args.force)
        db.run(
            conn, "set_job_type_limit", {"job_type": args.job_type, "max_running": args.max_running}
        )
    cap = "no cap" if args.max_running is None else f"at most {args.max_running} running"
    print(f"job type {args.job_type}: {cap} across every processor")
    return 0


def _pause_action(query: str) -> Any:
    def action(args: argparse.Namespace) -> int:
        with db.connect(database_url()) as conn:
            if query == "pause_job_type":
                require_known_type(conn, args.job_type, args.force)
            ok = db.run(conn, query, {"job_type": args.job_type})[0]["ok"]
        if query == "pause_job_type":
            print(f"paused {args.job_type}: its pending jobs wait; running ones finish")
        elif ok:
            print(f"resumed {args.job_type}")
        else:
            print(f"{args.job_type} was not paused")
        return 0

    return action


PERIODS = {"hour": "1 hour", "day": "1 day", "week": "7 days", "month": "1 month"}


def _usd(text: str) -> Decimal | None:
    """An amount in USD, or `none` to remove (as SQL says it: null)."""
    if text.lower() == "none":
        return None
    try:
        value = Decimal(text.removeprefix("$"))
    except InvalidOperation:
        raise argparse.ArgumentTypeError(
            f"must be an amount in USD (such as 5 or 4.80), or none, got {text!r}"
        ) from None
    if not value.is_finite() or value < 0:
        raise argparse.ArgumentTypeError(f"must be an amount of at least 0, got {text!r}")
    return value


def cmd_budgets(args: argparse.Namespace) -> int:
    with db.connect(database_url()) as conn:
        rows = db.run(conn, "spend_budgets_now", {"default_groups": args.groups})
    if not rows:
        print("no budgets (processor set-budget)")
        return 0
    table = Table(box=None, header_style="bold", pad_edge=False)
    money = ("spent", "reserved", "of", "used")
    for name in ("budget for", *money, "per", "resets"):
        table.add_column(name, justify="right" if name in money else "left")
    for r in rows:
        who = {"group": "group", "type": "type", "service": "the service"}[r["scope"]]
        if r["key"] != "*" or r["scope"] == "group":
            who += " " + ("(every group)" if r["key"] == "*" else r["key"])
        if not r["own"]:
            who += " (default)"
        spent, reserved = r["spent_usd"], r["reserved_usd"]
        used = (
            "-"
            if spent is None or not r["budget_usd"]
            else f"{(spent + reserved) / r['budget_usd']:.0%}"
        )
        table.add_row(
            console.inert(who),
            "-" if spent is None else f"${spent:.2f}",
            "-" if reserved is None else f"${reserved:.2f}",
            f"${r['budget_usd']:.2f}",
            used,
            {v: k for k, v in PERIODS.items()}.get(
                r["period"].replace("mon", "month"), r["period"]
            ),
            f"{r['resets'].astimezone(UTC):%Y-%m-%d %H:%M} UTC",
        )
    console.emit(console.output(), table)
    return 0


def cmd_set_budget(args: argparse.Namespace) -> int:
    period = PERIODS[args.period]
    with db.connect(database_url()) as conn:
        if args.service:
            db.run(conn, "set_service_budget", {"usd": args.usd, "period": period})
            who = "the service"
        elif args.type is not None:
            db.run(
                conn, "set_job_type_budget", {"key": args.type, "usd": args.usd, "period": period}
            )
            who = f"type {args.type}"
        else:
            db.run(conn, "set_spend_budget", {"key": args.group, "usd": args.usd, "period": period})
            who = "every group without its own" if args.group == "*" else f"group {args.group}"
    print(f"{who}: no budget" if args.usd is None else f"{who}: ${args.usd} per {args.period}")
    return 0


def cmd_set_price(args: argparse.Namespace) -> int:
    with db.connect(database_url()) as conn:
        db.run(conn, "set_job_type_price", {"job_type": args.job_type, "usd": args.usd})
    what = "no price" if args.usd is None else f"${args.usd} a job"
    print(f"{args.job_type}: {what}")
    return 0


def add_commands(sub: Any) -> None:
    p = add_command(sub, "limits", "job types, the busiest fairness groups, caps and weights")
    p.add_argument("--groups", type=bounded_int(1, 1000), default=10, help="groups to show")
    p.set_defaults(func=cmd_limits)

    p = add_command(
        sub, "set-limit", "cap a fairness group's running jobs and set its weight ('*': default)"
    )
    p.add_argument("group", metavar="GROUP", help="a concurrency_key or user id; '*' for all")
    p.add_argument("--max-running", type=_cap, default=None, help="its running cap (none: no cap)")
    p.add_argument(
        "--weight", type=bounded_int(1, 1000), default=1, help="its share against other groups"
    )
    p.set_defaults(func=cmd_set_limit)

    p = add_command(sub, "set-type-limit", "cap one job type's running jobs across processors")
    p.add_argument("job_type", metavar="TYPE", help="the job type")
    p.add_argument("--max-running", type=_cap, default=None, help="its running cap (none: no cap)")
    p.add_argument("--force", action="store_true", help=FORCE_HELP)
    p.set_defaults(func=cmd_set_type_limit)

    p = add_command(
        sub, "budgets", "spend budgets: spent and reserved in their period, and when they reset"
    )
    p.add_argument(
        "--groups",
        type=int,
        default=20,
        metavar="N",
        help="how many groups under the default budget (*) to list, the fullest first",
    )
    p.set_defaults(func=cmd_budgets)

    p = add_command(sub, "set-budget", "what a group, a job type or the service may spend")
    p.add_argument("usd", metavar="USD", type=_usd, help="the amount per period, or none")
    target = p.add_mutually_exclusive_group(required=True)
    target.add_argument("--group", help="a concurrency_key or user id; '*' for every group")
    target.add_argument("--type", help="a job type")
    target.add_argument("--service", action="store_true", help="everything the service runs")
    p.add_argument("--period", choices=sorted(PERIODS), default="day", help="calendar period")
    p.set_defaults(func=cmd_set_budget)

    p = add_command(sub, "set-price", "the price of one whole job of a type, for estimates")
    p.add_argument("job_type", metavar="TYPE", help="the job type")
    p.add_argument("usd", metavar="USD", type=_usd, help="its price in USD, or none")
    p.set_defaults(func=cmd_set_price)

    for name, query, help_text in (
        ("pause", "pause_job_type", "stop claiming a job type (its jobs stay pending)"),
        ("resume", "resume_job_type", "claim a paused job type again"),
    ):
        p = add_command(sub, name, help_text)
        p.add_argument("job_type", metavar="TYPE", help="the job type")
        if name == "pause":
            p.add_argument("--force", action="store_true", help=FORCE_HELP)
        p.set_defaults(func=_pause_action(query))
