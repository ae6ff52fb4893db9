"""The operator's commands: run the service (dev, serve, relay), set a database up (migrate,
schedule, unschedule, verify, token, signing-secret) and keep it tidy (prune)."""

from __future__ import annotations

import argparse
import asyncio
import sys
from datetime import timedelta
from typing import Any

import uvicorn

from processor.cli.common import (
    PORT_NUMBER,
    add_command,
    bounded_int,
    database_url,
    days,
    env,
    public_url,
)
from processor.errors import ConfigError, ProcessorError
from processor.logging import configure
from processor.ops import devstack, migrate, relay, retention, schedule, verify
from processor.settings import Settings, new_token

DEFAULT_PG_PORT = 54320


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


def own_url(host: str, port: int) -> str:
    """This processor's address as it calls itself when PROCESSOR_URL is unset: the address it
    listens on, and the loopback one when it listens on every address (0.0.0.0, ::)."""
    if host in ("", "0.0.0.0", "::"):  # noqa: S104 (not binding: recognising it)
        host = "127.0.0.1"
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def cmd_serve(args: argparse.Namespace) -> int:
    url = env().processor_url or own_url(args.host, args.port)
    _serve(Settings.from_env(processor_url=url.rstrip("/")), args.host, args.port)
    return 0


def cmd_dev(args: argparse.Namespace) -> int:
    return devstack.run(args.host, args.port, args.pg_port, _serve)


def cmd_relay(args: argparse.Namespace) -> int:
    configure(env().log_format, env().log_level)
    asyncio.run(relay.run_forever(database_url()))
    return 0


def cmd_migrate(args: argparse.Namespace) -> int:
    applied = migrate.migrate(database_url())
    for m in applied:
        print(f"applied {m.path.name}")
    if not applied:
        print("up to date")
    return 0


def cmd_schedule(args: argparse.Namespace) -> int:
    url = args.url or env().processor_url
    if not url:
        raise ConfigError("give the processor's URL: --url https://… (or set PROCESSOR_URL)")
    result = schedule.schedule(
        database_url(),
        url,
        env().token,
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
    removed = schedule.unschedule(database_url())
    names = f"'{schedule.JOB_NAME}' and '{retention.JOB_NAME}'"
    print(f"removed {names}" if removed else f"no cron job {names}")
    return 0


def cmd_verify(args: argparse.Namespace) -> int:
    return 0 if verify.verify(database_url(), replicas=args.replicas) else 1


def cmd_token(args: argparse.Namespace) -> int:
    """Prints a new random PROCESSOR_TOKEN (256 bits); nothing is stored or changed."""
    print(new_token())
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
    def age(value: float | None) -> timedelta | None:
        return None if value is None else timedelta(days=value)

    storage = None
    if args.with_files:
        from processor.providers.registry import storage_for

        storage = storage_for(env().providers, public_url())
    pruned = retention.prune(
        database_url(),
        keep_completed=age(args.completed_days),
        keep_failed=age(args.failed_days),
        keep_cron_history=age(args.cron_days),
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


def add_run_commands(sub: Any) -> None:
    """dev, serve and migrate: what a user types first, so they head the help."""
    p = add_command(
        sub,
        "dev",
        "run the local stack: a private PostgreSQL with pg_cron, migrations, and the server",
        env="Settings come from the environment (PROCESSOR_TOKEN is made for you if unset).",
    )
    p.add_argument("--host", default="127.0.0.1", help="address to serve on")
    p.add_argument("--port", type=PORT_NUMBER, default=8000, help="HTTP port (make dev PORT=…)")
    p.add_argument(
        "--pg-port",
        type=PORT_NUMBER,
        default=env().port("PROCESSOR_PG_PORT", DEFAULT_PG_PORT),
        help="port of the private PostgreSQL (env PROCESSOR_PG_PORT)",
    )
    p.set_defaults(func=cmd_dev)

    p = add_command(
        sub,
        "serve",
        "run the HTTP service against DATABASE_URL",
        env="Reads DATABASE_URL, PROCESSOR_TOKEN, PROCESSOR_URL and the rest of the "
        "Configuration table from the environment.",
    )
    p.add_argument("--host", default="127.0.0.1", help="address to serve on")
    p.add_argument(
        "--port",
        type=PORT_NUMBER,
        default=env().port("PORT", 8000),
        help="HTTP port (env PORT, as container platforms set it)",
    )
    p.set_defaults(func=cmd_serve)

    add_command(sub, "migrate", "apply pending migrations to DATABASE_URL").set_defaults(
        func=cmd_migrate
    )


def add_setup_commands(sub: Any) -> None:
    """schedule, unschedule, token, signing-secret, prune, relay and verify."""
    p = add_command(
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
    add_command(sub, "unschedule", "remove the pg_cron jobs").set_defaults(func=cmd_unschedule)

    add_command(
        sub,
        "token",
        "print a new random token for PROCESSOR_TOKEN (256 bits; nothing is stored)",
        env="Reads nothing.",
    ).set_defaults(func=cmd_token)

    p = add_command(
        sub,
        "signing-secret",
        "print the secret handlers verify Processor-Signature with (current first)",
        env="Reads PROCESSOR_TOKEN, HANDLER_SIGNING_SECRET(_PREVIOUS) and JOB_ROUTES.",
    )
    p.add_argument("--route", metavar="TYPE", help="the job type whose own secret to print")
    p.set_defaults(func=cmd_signing_secret)

    p = add_command(
        sub,
        "prune",
        "delete finished jobs past their age, their image rows, and old cron history",
        env="Reads DATABASE_URL; with --with-files also the storage settings "
        "(SUPABASE_URL, SUPABASE_SERVICE_ROLE_KEY, STORAGE_BUCKET, LOCAL_STORAGE_DIR).",
    )
    p.add_argument(
        "--completed-days",
        type=days,
        help="keep completed jobs this long (default: job_queue_settings.keep_completed, 14)",
    )
    p.add_argument(
        "--failed-days",
        type=days,
        help="keep failed and cancelled jobs this long (default: keep_failed, 30)",
    )
    p.add_argument(
        "--cron-days",
        type=days,
        help="keep pg_cron run history this long (default: keep_cron_history, 7)",
    )
    p.add_argument(
        "--with-files",
        action="store_true",
        help="also delete the deleted jobs' files from storage",
    )
    p.add_argument(
        "--batch", type=bounded_int(1, 100_000), default=1000, help="rows per transaction"
    )
    p.set_defaults(func=cmd_prune)
    add_command(sub, "relay", "send the local pg_net stand-in's requests").set_defaults(
        func=cmd_relay
    )
    p = add_command(
        sub,
        "verify",
        "check every link of the trigger chain; exit 1 if one is broken",
        env="Reads DATABASE_URL, and DB_POOL_MAX and LISTEN_FOR_JOBS as the processors have them.",
    )
    p.add_argument(
        "--replicas",
        type=bounded_int(1, 10_000),
        default=1,
        help="processors you run against this database: warn if their connections do not fit",
    )
    p.set_defaults(func=cmd_verify)
