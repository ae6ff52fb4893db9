"""The job commands: enqueue, jobs, status, watch, retry, cancel and stats."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import sys
import time
from collections.abc import Callable
from typing import Any
from uuid import UUID

from psycopg.types.json import Jsonb
from rich.console import Console

from processor import db
from processor.cli import bulk, console
from processor.cli.common import (
    add_command,
    bounded_int,
    database_url,
    env,
    job_ref,
    print_json,
    public_url,
    resolve_job_id,
    routed_types,
    seconds,
)
from processor.errors import ConfigError
from processor.settings import BUILTIN_ROUTES, json_type, unknown_job_type
from processor.status import STATUSES


def enqueue_problems(job_type: str, payload: Any) -> list[str]:
    """What is wrong with a job before it is inserted: an unknown type, or a built-in type's
    payload that breaks its rules (the same rules its handler applies)."""
    from processor.images.payload import PayloadError, parse

    routes = routed_types()
    if job_type not in routes:
        return [unknown_job_type(job_type, routes)]
    if not isinstance(payload, dict):
        return [f"payload must be a JSON object, got {json_type(payload)}"]
    if job_type in BUILTIN_ROUTES:
        try:
            parse(payload, kind_allowed=BUILTIN_ROUTES[job_type] == "/process-image")
        except PayloadError as exc:
            return list(exc.problems)
    return []


def cmd_enqueue(args: argparse.Namespace) -> int:
    try:
        payload = json.loads(args.payload)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"payload is not valid JSON: {exc}") from None
    if not args.force:
        problems = enqueue_problems(args.job_type, payload)
        if problems:
            print("not enqueued:", file=sys.stderr)
            for problem in problems:
                print(f"  - {problem}", file=sys.stderr)
            print("(--force inserts it anyway)", file=sys.stderr)
            return 2
    with db.connect(database_url()) as conn:
        row = db.run(
            conn,
            "enqueue_job",
            {
                "job_type": args.job_type,
                "payload": Jsonb(payload),
                "user_id": args.user_id,
                "priority": args.priority,
                "run_at": None,
                "max_retries": args.max_retries,
                "idempotency_key": args.idempotency_key,
                "concurrency_key": args.concurrency_key,
                "traceparent": args.traceparent,
            },
        )[0]
    print(row["id"])
    if not args.wait:
        return 0
    return _follow(row["id"], args.timeout)


def _fetch_job(job_id: UUID) -> Callable[[], dict[str, Any] | None]:
    url = database_url()

    def fetch() -> dict[str, Any] | None:
        with db.connect(url) as conn:
            rows = db.run(conn, "get_job", {"id": job_id})
            if rows:
                rows[0]["spend"] = db.run(conn, "job_spend", {"job_id": job_id})
                if rows[0]["workflow_id"] is not None:
                    rows[0]["workflow"] = db.run(
                        conn, "workflow_jobs", {"workflow_id": rows[0]["workflow_id"]}
                    )
        return rows[0] if rows else None

    return fetch


def _follow(job_id: UUID, timeout: float) -> int:
    """Shows the job's progress until it ends; 0 when it completed, 1 otherwise."""
    err = console.output(stderr=True)
    fetch = _fetch_job(job_id)
    if timeout > 0:
        deadline = time.monotonic() + timeout
        inner = fetch

        def fetch() -> dict[str, Any] | None:
            if time.monotonic() > deadline:
                raise TimeoutError
            return inner()

    try:
        job = console.follow(fetch, err)
    except TimeoutError:
        err.print(f"[yellow]still not finished after {timeout:g}s[/]; it goes on running")
        return 1
    if job is None:
        err.print(f"no job {job_id}")
        return 1
    console.emit(err, console.summary(_with_fresh_urls(job), err.width))
    return 0 if job["status"] == "completed" else 1


def _with_fresh_urls(job: dict[str, Any]) -> dict[str, Any]:
    """Signs URLs for a private bucket's files as the job is shown (they expire, so none is
    stored); with public or local storage the stored URLs are shown as they are."""
    from processor.providers.registry import storage_for
    from processor.providers.storage import fresh_urls

    storage = storage_for(env().providers, public_url())
    if storage.durable_urls:
        return job

    async def sign() -> dict[str, Any]:
        return {
            **job,
            "result": await fresh_urls(job["result"], storage),
            "progress": await fresh_urls(job["progress"], storage),
        }

    return asyncio.run(sign())


def _find(ref: str) -> UUID | None:
    """The job an id or its first characters name (None, said on stderr, if none)."""
    with db.connect(database_url()) as conn:
        job_id = resolve_job_id(conn, ref)
    if job_id is None:
        print(f"no job {ref}", file=sys.stderr)
    return job_id


def cmd_status(args: argparse.Namespace) -> int:
    job_id = _find(args.job_id)
    job = _fetch_job(job_id)() if job_id else None
    if job is None:
        if job_id:
            print(f"no job {args.job_id}", file=sys.stderr)
        return 1
    job = _with_fresh_urls(job)
    if args.json:
        print_json(job)
    else:
        out = console.output()
        console.emit(out, console.summary(job, out.width))
    return 0


def cmd_jobs(args: argparse.Namespace) -> int:
    with db.connect(database_url()) as conn:
        workflow_id = None
        if args.workflow is not None:
            workflow_id = resolve_job_id(conn, args.workflow)
            if workflow_id is None:
                print(f"no job {args.workflow}", file=sys.stderr)
                return 1
        rows = db.run(
            conn,
            "list_jobs",
            {
                "status": args.status,
                "job_type": args.type,
                "user_id": None,
                "workflow_id": workflow_id,
                "project_id": None,
                "before_at": None,
                "before_id": None,
                "limit": args.limit,
            },
        )
        paused = {r["job_type"] for r in db.run(conn, "paused_job_types")}
    for r in rows:
        r["paused"] = r["status"] == "pending" and r["job_type"] in paused
    if not rows:
        print("no jobs" + (" matching" if args.status or args.type or args.workflow else ""))
        return 0
    out = console.output()
    console.emit(out, console.jobs_table(rows, out.width))
    return 0


def cmd_watch(args: argparse.Namespace) -> int:
    if args.job_id is not None:
        job_id = _find(args.job_id)
        return _follow(job_id, 0) if job_id else 1
    url = database_url()

    def stats() -> list[dict[str, Any]]:
        with db.connect(url) as conn:
            return db.run(conn, "dashboard_stats")

    with contextlib.suppress(KeyboardInterrupt):
        console.watch_queue(stats, Console())
    return 0


def cmd_stats(args: argparse.Namespace) -> int:
    if args.spend:
        with db.connect(database_url()) as conn:
            rows = db.run(conn, "spend_by_provider")
            total = db.run(conn, "spend_total")[0]
        console.emit(console.output(), console.spend_table(rows, total))
        return 0
    with db.connect(database_url()) as conn:
        rows = db.run(conn, "dashboard_stats")
    if not rows:
        print("the queue is empty")
        return 0
    console.emit(console.output(), console.stats_table(rows))
    return 0


def add_commands(sub: Any) -> None:
    p = add_command(
        sub,
        "enqueue",
        "add a job and print its id (checked against the routes and payload rules first)",
        env="Reads DATABASE_URL, and JOB_ROUTES for the job types it accepts.",
    )
    p.add_argument("job_type", metavar="TYPE", help="job type (a built-in or one in JOB_ROUTES)")
    p.add_argument("payload", metavar="JSON", nargs="?", default="{}", help="the payload object")
    p.add_argument("--user-id", help="the user the job belongs to")
    p.add_argument(
        "--priority",
        type=bounded_int(-(2**31), 2**31 - 1),
        default=0,
        help="higher runs first",
    )
    p.add_argument(
        "--max-retries",
        type=bounded_int(0, 25),
        default=3,
        help="retries after the first attempt, 0 to 25",
    )
    p.add_argument("--idempotency-key", help="a repeated key returns the existing job's id")
    p.add_argument(
        "--concurrency-key",
        help="its fairness group (a shop id, say; default: the user)",
    )
    p.add_argument(
        "--traceparent",
        help="W3C trace context of the caller (00-<trace id>-<span id>-<flags>): "
        "the job's spans continue that trace",
    )
    p.add_argument(
        "--wait",
        action="store_true",
        help="show progress until the job ends; exit 1 unless it completed",
    )
    p.add_argument(
        "--timeout",
        type=seconds,
        default=0,
        help="with --wait: give up after this many seconds (0: never)",
    )
    p.add_argument("--force", action="store_true", help="insert without checking type and payload")
    p.set_defaults(func=cmd_enqueue)

    p = add_command(sub, "jobs", "list jobs, newest first")
    p.add_argument(
        "--status",
        choices=STATUSES,
        metavar="STATUS",
        help=f"only jobs in this status: {', '.join(STATUSES)}",
    )
    p.add_argument("--type", help="only jobs of this type")
    p.add_argument(
        "--workflow",
        type=job_ref,
        metavar="ID",
        help="only jobs of this workflow (its first job's id or first 8+ characters)",
    )
    p.add_argument("--limit", type=bounded_int(1, 1000), default=20, help="how many")
    p.set_defaults(func=cmd_jobs)

    p = add_command(sub, "status", "show one job: state, attempts and errors, progress, image URLs")
    p.add_argument(
        "job_id", metavar="ID", type=job_ref, help="the job's id, or its first 8 or more characters"
    )
    p.add_argument("--json", action="store_true", help="print the raw job as JSON")
    p.set_defaults(func=cmd_status)

    p = add_command(
        sub, "watch", "follow one job's progress, or the whole queue live (Ctrl-C stops)"
    )
    p.add_argument(
        "job_id",
        metavar="ID",
        type=job_ref,
        nargs="?",
        help="the job to follow, by its id or first 8 or more characters "
        "(default: the whole queue)",
    )
    p.set_defaults(func=cmd_watch)

    bulk.add_commands(sub)  # retry and cancel

    p = add_command(sub, "stats", "jobs per type and status, oldest due, p50/p95 run time")
    p.add_argument(
        "--spend", action="store_true", help="AI spend instead: calls, units and cost per provider"
    )
    p.set_defaults(func=cmd_stats)
