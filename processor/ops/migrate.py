"""Applies the numbered files of sql/migrations/ once each, recorded in processor_migrations."""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path

import psycopg

from processor.db import Row, connect, describe, run
from processor.errors import MigrationError
from processor.sql import sql_dir

_FILE = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    path: Path

    @property
    def text(self) -> str:
        return self.path.read_text(encoding="utf-8")

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.text.encode()).hexdigest()


def available(folder: Path | None = None) -> list[Migration]:
    folder = folder or sql_dir() / "migrations"
    found = []
    for path in sorted(folder.iterdir()):
        match = _FILE.match(path.name)
        if match:
            found.append(Migration(int(match[1]), match[2], path))
    versions = [m.version for m in found]
    if len(set(versions)) != len(versions):
        raise MigrationError(f"two migrations share a number in {folder}")
    return found


def applied(conn: psycopg.Connection[Row]) -> dict[int, Row]:
    if not run(conn, "migrations_exists")[0]["ok"]:
        return {}
    return {row["version"]: row for row in run(conn, "migrations_applied")}


def pending(
    conn: psycopg.Connection[Row], migrations: list[Migration] | None = None
) -> list[Migration]:
    """Migrations not applied yet; raises when an applied one was edited afterwards."""
    migrations = available() if migrations is None else migrations
    done = applied(conn)
    for m in migrations:
        row = done.get(m.version)
        if row and row["checksum"] != m.checksum:
            raise MigrationError(
                f"migration {m.path.name} was changed after it was applied; "
                "add a new migration instead of editing an applied one"
            )
    return [m for m in migrations if m.version not in done]


def migrate(url: str, migrations: list[Migration] | None = None) -> list[Migration]:
    """Applies every pending migration, each in its own transaction. Returns what it applied.

    Invariant: concurrent migrators never apply one migration twice, on a direct connection or
    through a transaction-mode pooler. Each transaction takes the migration lock itself
    (pg_advisory_xact_lock, released at its commit or rollback) and only then reads what is
    applied; a session-level lock would be taken on one server connection behind a pooler and
    released on another, which leaves it held forever."""
    migrations = available() if migrations is None else migrations
    done: list[Migration] = []
    with connect(url) as conn:
        while True:
            with conn.transaction():
                run(conn, "migrations_lock")
                run(conn, "migrations_table")
                todo = pending(conn, migrations)
                if not todo:
                    return done
                m = todo[0]
                try:
                    conn.execute(m.text)
                    run(
                        conn,
                        "migrations_record",
                        {"version": m.version, "name": m.name, "checksum": m.checksum},
                    )
                except psycopg.Error as exc:
                    raise MigrationError(
                        f"migration {m.path.name} failed: {describe(exc)}"
                    ) from exc
            done.append(m)
