"""The `processor` command line."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from collections.abc import Callable, Sequence
from datetime import timedelta
from typing import Any
from uuid import UUID

import uvicorn
from psycopg.types.json import Jsonb

from processor import db, devstack, migrate, relay, retention, schedule, verify
from processor.errors import ConfigError, ProcessorError
from processor.logging import configure
from processor.settings import Settings

DEFAULT_PG_PORT = 54320


def _database_url() -> str:
    url = os.environ.get("DATABASE_URL", "")
    if not url:
        raise ConfigError("DATABASE_URL is not set (e.g. postgresql://user@host:5432/db)")
    return url


def _print_json(value: Any) -> None:
    print(json.dumps(value, indent=2, default=str))


def _serve(settings: Settings, host: str, port: int) -> None:
    from processor.app import create_app

    configure(settings.log_format, settings.log_level)
    config = uvicorn.Config(
        create_app(settings),
        host=host,
        port=port,
        log_config=None,
        access_log=False,
        lifespan="on",
        timeout_graceful_shutdown=int(settings.shutdown_grace) + 5,
    )
    server = uvicorn.Server(config)
    server.run()
    if not server.started:
        raise ProcessorError(f"the server did not start on {host}:{port} (see the log above)")


def cmd_serve(args: argparse.Namespace) -> int:
    url = os.environ.get("PROCESSOR_URL") or f"http://{args.host}:{args.port}"
    _serve(Settings.from_env(processor_url=url.rstrip("/")), args.host, args.port)
    return 0


def cmd_dev(args: argparse.Namespace) -> int:
    return devstack.run(args.host, args.port, args.pg_port, _serve)


def cmd_schedule(args: argparse.Namespace) -> int:
    url = args.url or os.environ.get("PROCESSOR_URL")
    if not url:
        raise ConfigError("give the processor's URL: --url https://… (or set PROCESSOR_URL)")
    result = schedule.schedule(
        _database_url(),
        url,
        os.environ.get("PROCESSOR_TOKEN", ""),
        local=args.local,
        instant_pickup=args.instant_pickup == "on",
    )
    print(
        f"scheduled '{schedule.JOB_NAME}': every '{result.schedule}' "
        f"(pg_cron {result.cron_version}) → {url.rstrip('/')}/process-jobs"
    )
    print(
        f"url and token stored in {result.secrets_in}; pg_net: {result.net}; "
        f"instant pickup on insert: {args.instant_pickup}"
    )
    print(f"scheduled '{retention.JOB_NAME}': hourly ('{retention.SCHEDULE}'), {retention.COMMAND}")
    if result.warning:
        print(f"warning: {result.warning}", file=sys.stderr)
    return 0


def cmd_unschedule(args: argparse.Namespace) -> int:
    removed = schedule.unschedule(_database_url())
    names = f"'{schedule.JOB_NAME}' and '{retention.JOB_NAME}'"
    print(f"removed {names}" if removed else f"no cron job {names}")
    return 0


def cmd_relay(args: argparse.Namespace) -> int:
    configure(os.environ.get("LOG_FORMAT", "auto"), os.environ.get("LOG_LEVEL", "info"))
    asyncio.run(relay.run_forever(_database_url()))
    return 0


def cmd_verify(args: argparse.Namespace) -> int:
    return 0 if verify.verify(_database_url()) else 1


def cmd_migrate(args: argparse.Namespace) -> int:
    applied = migrate.migrate(_database_url())
    for m in applied:
        print(f"applied {m.path.name}")
    if not applied:
        print("up to date")
    return 0


def cmd_enqueue(args: argparse.Namespace) -> int:
    try:
        payload = json.loads(args.payload)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"payload is not valid JSON: {exc}") from None
    with db.connect(_database_url()) as conn:
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
            },
        )[0]
    print(row["id"])
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    with db.connect(_database_url()) as conn:
        rows = db.run(conn, "get_job", {"id": args.job_id})
    if not rows:
        print(f"no job {args.job_id}", file=sys.stderr)
        return 1
    _print_json(rows[0])
    return 0


def cmd_stats(args: argparse.Namespace) -> int:
    with db.connect(_database_url()) as conn:
        rows = db.run(conn, "dashboard_stats")
    if not rows:
        print("the queue is empty")
        return 0

    def seconds(value: object) -> str:
        return "" if value is None else f"{float(value):.1f}s"  # type: ignore[arg-type]

    print(f"{'job_type':<26} {'status':<11} {'jobs':>7} {'oldest due':>11} {'p50':>8} {'p95':>8}")
    for r in rows:
        print(
            f"{r['job_type']:<26} {r['status']:<11} {r['jobs']:>7} "
            f"{seconds(r['oldest_due_seconds']):>11} {seconds(r['p50_seconds']):>8} "
            f"{seconds(r['p95_seconds']):>8}"
        )
    return 0


def cmd_signing_secret(args: argparse.Namespace) -> int:
    """Prints the secret(s) a handler verifies Processor-Signature with (current first)."""
    settings = Settings.from_env()
    route = None
    if args.route:
        route = settings.routes().get(args.route)
        if route is None:
            raise ConfigError(f"no route for job type {args.route!r} (see JOB_ROUTES)")
    for secret in settings.signing_secrets(route):
        print(secret)
    return 0


def cmd_prune(args: argparse.Namespace) -> int:
    def days(value: float | None) -> timedelta | None:
        return None if value is None else timedelta(days=value)

    storage = None
    if args.with_files:
        from processor.providers.registry import storage_for
        from processor.settings import ProviderSettings

        storage = storage_for(
            ProviderSettings.from_env(os.environ),
            os.environ.get("PROCESSOR_URL", "http://127.0.0.1:8000"),
        )
    pruned = retention.prune(
        _database_url(),
        keep_completed=days(args.completed_days),
        keep_failed=days(args.failed_days),
        keep_cron_history=days(args.cron_days),
        batch=args.batch,
        storage=storage,
    )
    print(
        f"deleted {pruned.completed} completed and {pruned.failed_or_cancelled} failed or "
        f"cancelled job(s), {pruned.cron_history} cron run record(s)"
        + (f", {pruned.files} file(s)" if args.with_files else "")
    )
    if pruned.files_failed:
        print(
            f"could not delete {len(pruned.files_failed)} file(s), e.g. {pruned.files_failed[0]}",
            file=sys.stderr,
        )
        return 1
    return 0


def _job_action(query: str, verb: str) -> Callable[[argparse.Namespace], int]:
    def action(args: argparse.Namespace) -> int:
        with db.connect(_database_url()) as conn:
            ok = db.run(conn, query, {"id": args.job_id})[0]["ok"]
        print(
            f"{verb} {args.job_id}"
            if ok
            else f"job {args.job_id} cannot be {verb} "
            "(no such job, or its status does not allow it)"
        )
        return 0 if ok else 1

    return action


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="processor", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("dev", help="private PostgreSQL with pg_cron, migrations, and the server")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument(
        "--pg-port", type=int, default=int(os.environ.get("PROCESSOR_PG_PORT", DEFAULT_PG_PORT))
    )
    p.set_defaults(func=cmd_dev)

    p = sub.add_parser("serve", help="run the HTTP service against DATABASE_URL")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)
    p.set_defaults(func=cmd_serve)

    sub.add_parser("migrate", help="apply pending migrations to DATABASE_URL").set_defaults(
        func=cmd_migrate
    )

    p = sub.add_parser("enqueue", help="add a job; prints its id")
    p.add_argument("job_type", metavar="TYPE")
    p.add_argument("payload", metavar="JSON", nargs="?", default="{}")
    p.add_argument("--user-id")
    p.add_argument("--priority", type=int, default=0)
    p.add_argument("--max-retries", type=int, default=3)
    p.add_argument("--idempotency-key")
    p.set_defaults(func=cmd_enqueue)

    for name, func, help_text in (
        ("status", cmd_status, "show one job"),
        ("retry", _job_action("retry_job", "retried"), "put a failed or cancelled job back"),
        ("cancel", _job_action("cancel_job", "cancelled"), "cancel a pending or running job"),
    ):
        p = sub.add_parser(name, help=help_text)
        p.add_argument("job_id", metavar="ID", type=UUID)
        p.set_defaults(func=func)

    sub.add_parser("stats", help="jobs per type and status").set_defaults(func=cmd_stats)

    p = sub.add_parser("schedule", help="install the pg_cron job that calls /process-jobs")
    p.add_argument("--url", help="where the database reaches the processor (PROCESSOR_URL)")
    p.add_argument(
        "--local",
        action="store_true",
        help="install the local pg_net stand-in (development; never on Supabase)",
    )
    p.add_argument(
        "--instant-pickup",
        choices=("on", "off"),
        default="on",
        help="call the processor from an insert trigger too (default on)",
    )
    p.set_defaults(func=cmd_schedule)
    sub.add_parser("unschedule", help="remove the pg_cron jobs").set_defaults(func=cmd_unschedule)
    p = sub.add_parser(
        "signing-secret",
        help="print the secret handlers verify Processor-Signature with (current first)",
    )
    p.add_argument("--route", metavar="TYPE", help="the job type whose own secret to print")
    p.set_defaults(func=cmd_signing_secret)
    p = sub.add_parser(
        "prune",
        help="delete finished jobs past their age, their image rows, and old cron history",
    )
    p.add_argument(
        "--completed-days",
        type=float,
        help="keep completed jobs this long (default: job_queue_settings.keep_completed, 14)",
    )
    p.add_argument(
        "--failed-days",
        type=float,
        help="keep failed and cancelled jobs this long (default: keep_failed, 30)",
    )
    p.add_argument(
        "--cron-days",
        type=float,
        help="keep pg_cron run history this long (default: keep_cron_history, 7)",
    )
    p.add_argument(
        "--with-files",
        action="store_true",
        help="also delete the deleted jobs' files from storage (default: keep them)",
    )
    p.add_argument("--batch", type=int, default=1000, help="rows per transaction (default 1000)")
    p.set_defaults(func=cmd_prune)
    sub.add_parser("relay", help="send the local pg_net stand-in's requests").set_defaults(
        func=cmd_relay
    )
    sub.add_parser("verify", help="check every link of the trigger chain").set_defaults(
        func=cmd_verify
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except ProcessorError as exc:
        print(f"processor: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
