"""The scheduling commands: limits (what runs, what waits, and the caps), set-limit and
set-type-limit (caps and weights, kept in the database for every processor), pause and resume."""

from __future__ import annotations

import argparse
from typing import Any

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

    for name, query, help_text in (
        ("pause", "pause_job_type", "stop claiming a job type (its jobs stay pending)"),
        ("resume", "resume_job_type", "claim a paused job type again"),
    ):
        p = add_command(sub, name, help_text)
        p.add_argument("job_type", metavar="TYPE", help="the job type")
        if name == "pause":
            p.add_argument("--force", action="store_true", help=FORCE_HELP)
        p.set_defaults(func=_pause_action(query))
