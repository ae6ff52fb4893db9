"""`processor retry` and `processor cancel`: one job by id, or every job a filter selects
(retry_jobs and cancel_jobs in SQL), with --dry-run to see first what would change and, for a
retry, what the jobs already paid and the most their missing images can cost."""

from __future__ import annotations

import argparse
import sys
from decimal import Decimal
from typing import Any

from rich.table import Table

from processor import db
from processor.cli import console
from processor.cli.common import (
    add_command,
    bounded_int,
    database_url,
    job_ref,
    moment,
    resolve_job_id,
)

FILTERS = ("status", "type", "user", "since", "until", "error", "workflow")


def add_commands(sub: Any) -> None:
    for name, verb, statuses, help_text in (
        (
            "retry",
            "retried",
            ("failed", "cancelled"),
            "put a failed or cancelled job back, or every job a filter selects",
        ),
        (
            "cancel",
            "cancelled",
            ("pending", "processing", "waiting"),
            "cancel a pending, running or waiting job, or every job a filter selects",
        ),
    ):
        p = add_command(sub, name, help_text)
        p.add_argument(
            "job_id",
            metavar="ID",
            type=job_ref,
            nargs="?",
            help="one job, by its id or first 8 or more characters",
        )
        p.add_argument(
            "--status",
            choices=statuses,
            default=argparse.SUPPRESS,  # absent: statuses[0], and not a filter by itself
            help=f"jobs in this status ({statuses[0]} when filtering without it)",
        )
        p.add_argument("--type", help="only jobs of this type")
        p.add_argument("--user", help="only jobs of this user_id")
        p.add_argument(
            "--since",
            type=moment,
            help="only jobs that ended (or last changed) at or after this: ISO time or an age (6h)",
        )
        p.add_argument("--until", type=moment, help="only jobs that ended before this")
        p.add_argument("--error", help="only jobs whose last error contains this (any case)")
        p.add_argument(
            "--workflow",
            type=job_ref,
            metavar="ID",
            help="only jobs of this workflow (its first job's id or first 8+ characters)",
        )
        p.add_argument(
            "--limit",
            type=bounded_int(1, 10_000),
            default=100,
            help="at most this many, oldest first",
        )
        p.add_argument(
            "--dry-run", action="store_true", help="change nothing: list what would be " + verb
        )
        p.set_defaults(func=_command(name, verb, statuses[0]))


def _command(name: str, verb: str, default_status: str) -> Any:
    def run(args: argparse.Namespace) -> int:
        filtered = [f for f in FILTERS if getattr(args, f, None) is not None]
        if args.job_id is not None:
            if filtered or args.dry_run:
                raise SystemExit(f"processor {name}: give an ID or filters, not both")
            return _one(f"{name}_job", verb, args.job_id)
        if not filtered:
            raise SystemExit(
                f"processor {name}: give a job ID, or at least one filter "
                f"(--status, --type, --user, --since, --until, --error, --workflow)"
            )
        params = {
            "status": getattr(args, "status", default_status),
            "job_type": args.type,
            "user_id": args.user,
            "since": args.since,
            "until": args.until,
            "error": args.error,
            "limit": args.limit,
            "dry_run": args.dry_run,
        }
        with db.connect(database_url()) as conn:
            params["workflow_id"] = None
            if args.workflow is not None:
                params["workflow_id"] = resolve_job_id(conn, args.workflow)
                if params["workflow_id"] is None:
                    print(f"no job {args.workflow}", file=sys.stderr)
                    return 1
            rows = db.run(conn, f"{name}_jobs", params)
        return _report(rows, verb, dry_run=args.dry_run, costs=name == "retry")

    return run


def _one(query: str, verb: str, ref: str) -> int:
    with db.connect(database_url()) as conn:
        job_id = resolve_job_id(conn, ref)
        if job_id is None:
            print(f"no job {ref}", file=sys.stderr)
            return 1
        ok = db.run(conn, query, {"id": job_id})[0]["ok"]
    print(
        f"{verb} {job_id}"
        if ok
        else f"job {job_id} cannot be {verb} (no such job, or its status does not allow it)"
    )
    return 0 if ok else 1


def _report(rows: list[dict[str, Any]], verb: str, *, dry_run: bool, costs: bool) -> int:
    if not rows:
        print("no jobs match")
        return 0
    out = console.output()
    table = Table(box=None, header_style="bold")
    for column in ("id", "type", "user", "result"):
        table.add_column(column, overflow="fold")
    if costs:
        table.add_column("stored", justify="right")
        table.add_column("paid", justify="right")
        table.add_column("retry ≤", justify="right")
    for r in rows:
        result = (
            "would be " + verb if dry_run else (verb if r["done"] else f"skipped: {r['reason']}")
        )
        cells = [
            console.inert(str(r["job_id"]), no_wrap=True),
            console.inert(r["job_type"]),
            console.inert(r["user_id"] or "-"),
            console.inert(result),
        ]
        if costs:
            needed = r["items_needed"]
            cells += [
                console.inert(f"{r['items_stored']}/{needed}" if needed is not None else "-"),
                console.inert(_usd(r["paid_usd"])),
                console.inert(_usd(r["max_retry_usd"])),
            ]
        table.add_row(*cells)
    console.emit(out, table)
    done = sum(1 for r in rows if r["done"])
    skipped = len(rows) - done
    if dry_run:
        line = f"dry run: {len(rows)} jobs would be {verb}; nothing changed"
    else:
        line = f"{done} jobs {verb}" + (f", {skipped} skipped" if skipped else "")
    if costs:
        paid = sum((r["paid_usd"] or Decimal(0) for r in rows), Decimal(0))
        priced = [r["max_retry_usd"] for r in rows if r["max_retry_usd"] is not None]
        line += f". Already paid ${paid:.4f}"
        unpriced = len(rows) - len(priced)
        if priced:
            line += f"; a retry costs at most ${sum(priced, Decimal(0)):.4f}"
            if unpriced:
                line += f" for {len(priced)} of them ({unpriced} have no price in the ledger)"
        else:
            line += "; the provider ledger has no price for these job types: cost unknown"
    print(line)
    return 0 if done or dry_run else 1


def _usd(value: Decimal | None) -> str:
    return "-" if value is None else f"${value:.4f}"
