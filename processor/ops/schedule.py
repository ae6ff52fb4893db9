"""Installs the trigger path in a database: the processor's URL and token (Vault or the private
settings table), the local pg_net stand-in when asked, and the pg_cron job."""

from __future__ import annotations

from dataclasses import dataclass

import psycopg

from processor.db import Row, connect, describe, run
from processor.errors import ConfigError, DatabaseError
from processor.ops import retention
from processor.sql import sql_dir

JOB_NAME = "process-job-queue"  # contract: the cron job's name
COMMAND = "select invoke_job_processor()"  # no secret here: it reads Vault or processor_settings
EVERY_10_SECONDS = "10 seconds"  # pg_cron >= 1.5
EVERY_MINUTE = "* * * * *"  # the smallest schedule of pg_cron < 1.5


@dataclass(frozen=True)
class Scheduled:
    schedule: str
    cron_version: str
    secrets_in: str  # "vault" or "processor_settings"
    net: str  # "pg_net" or "local stand-in"
    warning: str | None = None


def cron_schedule_for(version: str) -> tuple[str, str | None]:
    """The schedule to use for a pg_cron version, and a warning when it is not 10 seconds."""
    parts = tuple(int(p) for p in version.replace("-", ".").split(".")[:2] if p.isdigit())
    if parts >= (1, 5):
        return EVERY_10_SECONDS, None
    return EVERY_MINUTE, (
        f"pg_cron {version} has no sub-minute schedules (they need 1.5+), so the job runs every "
        "minute. New jobs still start at once through the insert trigger; retries and missed "
        "calls wait up to a minute. (A six-field '*/10 * * * * *' would mean every ten "
        "minutes on this version, not ten seconds.)"
    )


def install_standin(conn: psycopg.Connection[Row]) -> None:
    state = run(conn, "net_state")[0]
    if state["pg_net_version"]:
        return  # the real pg_net is here: never shadow it
    conn.execute((sql_dir() / "local" / "pg_net_standin.sql").read_text())


def _store_secret(conn: psycopg.Connection[Row], name: str, value: str) -> str:
    if run(conn, "vault_present")[0]["ok"]:
        found = run(conn, "vault_secret_id", {"name": name})
        if found:
            run(conn, "vault_update", {"id": found[0]["id"], "value": value})
        else:
            run(conn, "vault_create", {"name": name, "value": value})
        return "vault"
    run(conn, "setting_upsert", {"key": name, "value": value})
    return "processor_settings"


def configure_endpoint(
    conn: psycopg.Connection[Row], url: str, token: str, *, instant_pickup: bool = True
) -> str:
    """Stores where and how the database calls the processor; returns where the secrets went."""
    with conn.transaction():
        where = _store_secret(conn, "processor_url", url.rstrip("/"))
        _store_secret(conn, "processor_token", token)
        run(
            conn,
            "setting_upsert",
            {"key": "instant_pickup", "value": "on" if instant_pickup else "off"},
        )
    return where


def schedule(
    database_url: str, url: str, token: str, *, local: bool = False, instant_pickup: bool = True
) -> Scheduled:
    """Installs or updates (never duplicates) the cron jobs `process-job-queue` and, hourly,
    `processor-prune` (retention)."""
    if len(token) < 16:
        raise ConfigError(
            "PROCESSOR_TOKEN is missing or shorter than 16 characters (for the local stack: "
            "`export PROCESSOR_TOKEN=$(cat .data/token)`, the token file `make dev` printed)"
        )
    with connect(database_url) as conn:
        if local:
            install_standin(conn)
        state = run(conn, "net_state")[0]
        if not state["has_http_post"]:
            raise ConfigError(
                "pg_net is not installed in this database: enable it (Supabase: Database → "
                "Extensions → pg_net, or `create extension pg_net;`), or pass --local to install "
                "the local stand-in for development"
            )
        try:
            run(conn, "cron_extension")
        except psycopg.Error as exc:
            raise DatabaseError(f"cannot enable pg_cron here: {describe(exc)}") from exc
        version = run(conn, "cron_version")[0]["extversion"]
        expression, warning = cron_schedule_for(version)
        where = configure_endpoint(conn, url, token, instant_pickup=instant_pickup)
        run(conn, "cron_schedule", {"name": JOB_NAME, "schedule": expression, "command": COMMAND})
        run(
            conn,
            "cron_schedule",
            {
                "name": retention.JOB_NAME,
                "schedule": retention.SCHEDULE,
                "command": retention.COMMAND,
            },
        )
    return Scheduled(
        expression,
        version,
        where,
        "pg_net" if state["pg_net_version"] else "local stand-in",
        warning,
    )


def unschedule(database_url: str) -> bool:
    """Removes the cron jobs `process-job-queue` and `processor-prune`; False when there were
    none."""
    with connect(database_url) as conn:
        if not run(conn, "cron_version"):
            return False
        removed = bool(run(conn, "cron_unschedule", {"name": JOB_NAME}))
        return bool(run(conn, "cron_unschedule", {"name": retention.JOB_NAME})) or removed
