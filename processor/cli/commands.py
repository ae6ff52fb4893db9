"""The `processor` command line."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import sys
import time
from collections.abc import Callable, Sequence
from datetime import timedelta
from typing import Any
from uuid import UUID

import uvicorn
from psycopg.types.json import Jsonb
from rich.console import Console

from processor import __version__, db
from processor.cli import console
from processor.errors import ConfigError, ProcessorError
from processor.logging import configure
from processor.ops import devstack, migrate, relay, retention, schedule, verify
from processor.settings import BUILTIN_ROUTES, CommandSettings, Settings, parse_job_routes
from processor.status import STATUSES

DEFAULT_PG_PORT = 54320


def _env() -> CommandSettings:
    return CommandSettings.from_env()


def _database_url() -> str:
    return _env().database_url


def _print_json(value: Any) -> None:
    print(json.dumps(value, indent=2, default=str))


class _Server(uvicorn.Server):
    """uvicorn, telling the app as soon as a signal asks it to stop (uvicorn itself tells the
    app only after every open request has ended)."""

    def handle_exit(self, sig: int, frame: Any) -> None:
        from processor.web.app import begin_shutdown

        begin_shutdown(self.config.app)
        super().handle_exit(sig, frame)


def _serve(settings: Settings, host: str, port: int) -> None:
    from processor.web.app import create_app

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
    server = _Server(config)
    server.run()
    if not server.started:
        raise ProcessorError(f"the server did not start on {host}:{port} (see the log above)")


def cmd_serve(args: argparse.Namespace) -> int:
    url = _env().processor_url or f"http://{args.host}:{args.port}"
    _serve(Settings.from_env(processor_url=url.rstrip("/")), args.host, args.port)
    return 0


def cmd_dev(args: argparse.Namespace) -> int:
    return devstack.run(args.host, args.port, args.pg_port, _serve)


def cmd_schedule(args: argparse.Namespace) -> int:
    url = args.url or _env().processor_url
    if not url:
        raise ConfigError("give the processor's URL: --url https://… (or set PROCESSOR_URL)")
    result = schedule.schedule(
        _database_url(),
        url,
        _env().token,
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
    configure(_env().log_format, _env().log_level)
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


def enqueue_problems(job_type: str, payload: Any) -> list[str]:
    """What is wrong with a job before it is inserted: an unknown type, or a built-in type's
    payload that breaks its rules (the same rules its handler applies)."""
    from processor.images.payload import PayloadError, parse

    routes = set(BUILTIN_ROUTES) | set(parse_job_routes(_env().job_routes, 120))
    if job_type not in routes:
        return [
            f"unknown job type {job_type!r}: this processor runs {', '.join(sorted(routes))} "
            "(add yours to JOB_ROUTES)"
        ]
    if not isinstance(payload, dict):
        return [f"payload must be a JSON object, got {type(payload).__name__}"]
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
    if not args.wait:
        return 0
    return _follow(row["id"], args.timeout)


def _fetch_job(job_id: UUID) -> Callable[[], dict[str, Any] | None]:
    url = _database_url()

    def fetch() -> dict[str, Any] | None:
        with db.connect(url) as conn:
            rows = db.run(conn, "get_job", {"id": job_id})
            if rows:
                rows[0]["spend"] = db.run(conn, "job_spend", {"job_id": job_id})
        return rows[0] if rows else None

    return fetch


def _follow(job_id: UUID, timeout: float) -> int:
    """Shows the job's progress until it ends; 0 when it completed, 1 otherwise."""
    err = Console(stderr=True)
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
    err.print(console.summary(_with_fresh_urls(job), err.width), crop=False)
    return 0 if job["status"] == "completed" else 1


def _with_fresh_urls(job: dict[str, Any]) -> dict[str, Any]:
    """Signs URLs for a private bucket's files as the job is shown (they expire, so none is
    stored); with public or local storage the stored URLs are shown as they are."""
    from processor.providers.registry import storage_for
    from processor.providers.storage import fresh_urls

    storage = storage_for(
        _env().providers,
        _env().processor_url or "http://127.0.0.1:8000",
    )
    if storage.durable_urls:
        return job

    async def sign() -> dict[str, Any]:
        return {
            **job,
            "result": await fresh_urls(job["result"], storage),
            "progress": await fresh_urls(job["progress"], storage),
        }

    return asyncio.run(sign())


def cmd_status(args: argparse.Namespace) -> int:
    job = _fetch_job(args.job_id)()
    if job is None:
        print(f"no job {args.job_id}", file=sys.stderr)
        return 1
    job = _with_fresh_urls(job)
    if args.json:
        _print_json(job)
    else:
        out = Console()
        out.print(console.summary(job, out.width), crop=False)
    return 0


def cmd_jobs(args: argparse.Namespace) -> int:
    with db.connect(_database_url()) as conn:
        rows = db.run(
            conn,
            "list_jobs",
            {
                "status": args.status,
                "job_type": args.type,
                "user_id": None,
                "project_id": None,
                "before_at": None,
                "before_id": None,
                "limit": args.limit,
            },
        )
    if not rows:
        print("no jobs" + (" matching" if args.status or args.type else ""))
        return 0
    out = Console()
    out.print(console.jobs_table(rows, out.width))
    return 0


def cmd_watch(args: argparse.Namespace) -> int:
    if args.job_id is not None:
        return _follow(args.job_id, 0)
    url = _database_url()

    def stats() -> list[dict[str, Any]]:
        with db.connect(url) as conn:
            return db.run(conn, "dashboard_stats")

    with contextlib.suppress(KeyboardInterrupt):
        console.watch_queue(stats, Console())
    return 0


def cmd_stats(args: argparse.Namespace) -> int:
    if args.spend:
        with db.connect(_database_url()) as conn:
            rows = db.run(conn, "spend_by_provider")
            total = db.run(conn, "spend_total")[0]
        Console().print(console.spend_table(rows, total))
        return 0
    with db.connect(_database_url()) as conn:
        rows = db.run(conn, "dashboard_stats")
    if not rows:
        print("the queue is empty")
        return 0
    Console().print(console.stats_table(rows))
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


MAX_KEEP_DAYS = 36_500  # a hundred years: an age beyond it is a typo, not a retention policy


def _days(text: str) -> float:
    """A retention age in days: a finite number from 0 to MAX_KEEP_DAYS (nan and 1e10 are not
    ages, and a negative one would delete jobs that finished moments ago)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of days: {text!r}") from None
    if not math.isfinite(value) or not 0 <= value <= MAX_KEEP_DAYS:
        raise argparse.ArgumentTypeError(
            f"days must be a number from 0 to {MAX_KEEP_DAYS}, got {text!r}"
        )
    return value


def _bounded_int(low: int, high: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"must be from {low} to {high}, got {text}")
        return value

    return parse


def cmd_prune(args: argparse.Namespace) -> int:
    def days(value: float | None) -> timedelta | None:
        return None if value is None else timedelta(days=value)

    storage = None
    if args.with_files:
        from processor.providers.registry import storage_for

        storage = storage_for(
            _env().providers,
            _env().processor_url or "http://127.0.0.1:8000",
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


DB_ENV = "Reads DATABASE_URL from the environment."


def _sub(
    sub: Any, name: str, help_text: str, env: str = DB_ENV, **kw: Any
) -> argparse.ArgumentParser:
    parser: argparse.ArgumentParser = sub.add_parser(
        name,
        help=help_text,
        description=help_text[0].upper() + help_text[1:] + ".",
        epilog=env,
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        **kw,
    )
    return parser


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="processor",
        description=__doc__,
        epilog="Every command reads its settings from the environment; see the README's "
        "Configuration table. `processor COMMAND --help` lists a command's options.",
    )
    parser.add_argument("--version", action="version", version=f"processor {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = _sub(
        sub,
        "dev",
        "run the local stack: a private PostgreSQL with pg_cron, migrations, and the server",
        env="Settings come from the environment (PROCESSOR_TOKEN is made for you if unset).",
    )
    p.add_argument("--host", default="127.0.0.1", help="address to serve on")
    p.add_argument("--port", type=int, default=8000, help="HTTP port (make dev PORT=…)")
    p.add_argument(
        "--pg-port",
        type=int,
        default=_env().port("PROCESSOR_PG_PORT", DEFAULT_PG_PORT),
        help="port of the private PostgreSQL (env PROCESSOR_PG_PORT)",
    )
    p.set_defaults(func=cmd_dev)

    p = _sub(
        sub,
        "serve",
        "run the HTTP service against DATABASE_URL",
        env="Reads DATABASE_URL, PROCESSOR_TOKEN, PROCESSOR_URL and the rest of the "
        "Configuration table from the environment.",
    )
    p.add_argument("--host", default="127.0.0.1", help="address to serve on")
    p.add_argument(
        "--port",
        type=int,
        default=_env().port("PORT", 8000),
        help="HTTP port (env PORT, as container platforms set it)",
    )
    p.set_defaults(func=cmd_serve)

    _sub(sub, "migrate", "apply pending migrations to DATABASE_URL").set_defaults(func=cmd_migrate)

    p = _sub(
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
        type=_bounded_int(-(2**31), 2**31 - 1),
        default=0,
        help="higher runs first",
    )
    p.add_argument(
        "--max-retries", type=int, default=3, help="retries after the first attempt, 0-25"
    )
    p.add_argument("--idempotency-key", help="a repeated key returns the existing job's id")
    p.add_argument(
        "--wait",
        action="store_true",
        help="show progress until the job ends; exit 1 unless it completed",
    )
    p.add_argument(
        "--timeout",
        type=float,
        default=0,
        help="with --wait: give up after this many seconds (0: never)",
    )
    p.add_argument("--force", action="store_true", help="insert without checking type and payload")
    p.set_defaults(func=cmd_enqueue)

    p = _sub(sub, "jobs", "list jobs, newest first")
    p.add_argument(
        "--status",
        choices=STATUSES,
        help="only jobs in this status",
    )
    p.add_argument("--type", help="only jobs of this type")
    p.add_argument("--limit", type=int, default=20, help="how many")
    p.set_defaults(func=cmd_jobs)

    p = _sub(sub, "status", "show one job: state, attempts and errors, progress, image URLs")
    p.add_argument("job_id", metavar="ID", type=UUID, help="the job's id")
    p.add_argument("--json", action="store_true", help="print the raw job as JSON")
    p.set_defaults(func=cmd_status)

    p = _sub(sub, "watch", "follow one job's progress, or the whole queue live (Ctrl-C stops)")
    p.add_argument(
        "job_id",
        metavar="ID",
        type=UUID,
        nargs="?",
        help="the job to follow (default: the whole queue)",
    )
    p.set_defaults(func=cmd_watch)

    for name, func, help_text in (
        ("retry", _job_action("retry_job", "retried"), "put a failed or cancelled job back"),
        ("cancel", _job_action("cancel_job", "cancelled"), "cancel a pending or running job"),
    ):
        p = _sub(sub, name, help_text)
        p.add_argument("job_id", metavar="ID", type=UUID, help="the job's id")
        p.set_defaults(func=func)

    p = _sub(sub, "stats", "jobs per type and status, oldest due, p50/p95 run time")
    p.add_argument(
        "--spend", action="store_true", help="AI spend instead: calls, units and cost per provider"
    )
    p.set_defaults(func=cmd_stats)

    p = _sub(
        sub,
        "schedule",
        "install the pg_cron jobs: process-job-queue (calls /process-jobs) and processor-prune",
        env="Reads DATABASE_URL, PROCESSOR_TOKEN (stored in Vault or processor_settings) and "
        "PROCESSOR_URL (when --url is not given).",
    )
    p.add_argument(
        "--url", help="where the database reaches the processor (default: env PROCESSOR_URL)"
    )
    p.add_argument(
        "--local",
        action="store_true",
        help="install the local pg_net stand-in (development; never on Supabase)",
    )
    p.add_argument(
        "--instant-pickup",
        choices=("on", "off"),
        default="on",
        help="call the processor from an insert trigger too",
    )
    p.set_defaults(func=cmd_schedule)
    _sub(sub, "unschedule", "remove the pg_cron jobs").set_defaults(func=cmd_unschedule)
    p = _sub(
        sub,
        "signing-secret",
        "print the secret handlers verify Processor-Signature with (current first)",
        env="Reads PROCESSOR_TOKEN, HANDLER_SIGNING_SECRET(_PREVIOUS) and JOB_ROUTES.",
    )
    p.add_argument("--route", metavar="TYPE", help="the job type whose own secret to print")
    p.set_defaults(func=cmd_signing_secret)
    p = _sub(
        sub,
        "prune",
        "delete finished jobs past their age, their image rows, and old cron history",
        env="Reads DATABASE_URL; with --with-files also the storage settings "
        "(SUPABASE_URL, SUPABASE_SERVICE_ROLE_KEY, STORAGE_BUCKET, LOCAL_STORAGE_DIR).",
    )
    p.add_argument(
        "--completed-days",
        type=_days,
        help="keep completed jobs this long (default: job_queue_settings.keep_completed, 14)",
    )
    p.add_argument(
        "--failed-days",
        type=_days,
        help="keep failed and cancelled jobs this long (default: keep_failed, 30)",
    )
    p.add_argument(
        "--cron-days",
        type=_days,
        help="keep pg_cron run history this long (default: keep_cron_history, 7)",
    )
    p.add_argument(
        "--with-files",
        action="store_true",
        help="also delete the deleted jobs' files from storage",
    )
    p.add_argument(
        "--batch", type=_bounded_int(1, 100_000), default=1000, help="rows per transaction"
    )
    p.set_defaults(func=cmd_prune)
    _sub(sub, "relay", "send the local pg_net stand-in's requests").set_defaults(func=cmd_relay)
    _sub(
        sub, "verify", "check every link of the trigger chain; exit 1 if one is broken"
    ).set_defaults(func=cmd_verify)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)  # defaults read PORT and PROCESSOR_PG_PORT
        return int(args.func(args))
    except ProcessorError as exc:
        print(f"processor: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
