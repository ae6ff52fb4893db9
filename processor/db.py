"""The database gateway: owns the connection pool and translates psycopg errors.

Nothing outside this module sees a psycopg exception: callers get DatabaseError.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator, Mapping
from contextlib import contextmanager, suppress
from typing import Any, cast

import psycopg
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb, set_json_loads
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from processor.errors import DatabaseError
from processor.sql import query

Row = dict[str, Any]


def _adapt(params: Mapping[str, Any]) -> dict[str, Any]:
    # dicts go to PostgreSQL as jsonb; lists stay arrays (wrap them in Jsonb to send JSON).
    return {k: Jsonb(v) if isinstance(v, dict) else v for k, v in params.items()}


def describe(exc: BaseException) -> str:
    """A one-line reason for a database error that never includes the connection string."""
    # libpq's messages name host, port and user, never the password.
    if isinstance(exc, psycopg.Error) and exc.diag.message_primary:
        return exc.diag.message_primary
    return " ".join(str(exc).split()) or type(exc).__name__


# SQLSTATE → HTTP status for errors that are the input's fault. Everything else from the server
# is 500 (a query that should not fail), except the classes that mean the database is away or
# busy for now (connection, resources, operator intervention, system errors, lock and
# serialization conflicts), which are 503.
_INPUT_STATES = {
    "22": 400,  # data exception: a value out of range, malformed, NUL in text
    "23": 409,  # integrity: a duplicate, a check the row breaks
    "54000": 413,  # program limit: a payload too large or too deep (job_queue_settings)
    "53000": 409,  # raised by the credit functions: insufficient credits
    "P0001": 400,  # a plain RAISE EXCEPTION from the processor's functions
    "42883": 400,  # no such function signature: an argument of the wrong type
}
_OUTAGE_CLASSES = ("08", "40", "53", "55", "57", "58", "XX")


def http_status(exc: BaseException) -> int:
    """The HTTP status a failed query deserves (see _INPUT_STATES)."""
    state = getattr(exc, "sqlstate", None)
    if state is None:
        # Raised by psycopg before anything was sent (a NUL byte in a text value): the input's
        # fault. Without a connection or a free one from the pool: an outage.
        return 400 if isinstance(exc, psycopg.DataError) else 503
    for key in (state, state[:2]):
        if key in _INPUT_STATES and not (key == "53000" and "credit" not in describe(exc)):
            return _INPUT_STATES[key]
    return 503 if state[:2] in _OUTAGE_CLASSES else 500


UNDECODABLE = {"undecodable": "this JSON nests too deeply for the processor to read"}


def safe_loads(data: str | bytes) -> Any:
    """json.loads for values read from the database: a value nested too deeply for Python
    becomes a marker instead of an exception that would spoil the whole query."""
    try:
        return json.loads(data)
    except RecursionError:
        return dict(UNDECODABLE)


async def _configure(conn: psycopg.AsyncConnection[Any]) -> None:
    set_json_loads(safe_loads, conn)


# Invariant: no connection this project opens prepares a statement on the server unless
# PREPARED_STATEMENTS=on says the URL reaches PostgreSQL directly. A transaction-mode pooler
# (Supabase's Supavisor on 6543, PgBouncer before 1.21) runs each transaction on whichever
# server connection is free, where a statement prepared on another one "does not exist", or
# exists under the same name for another query. Unprepared, every statement is parsed where it
# runs: a fraction of a millisecond per call, since the claim and outcome functions keep their
# own cached plans inside PostgreSQL either way (bench/pooler.py).
NO_PREPARE: dict[str, Any] = {"prepare_threshold": None}


def session_options(prepared: bool = False) -> dict[str, Any]:
    """psycopg connection options every connection of the project uses."""
    return {} if prepared else dict(NO_PREPARE)


class Database:
    """Async access for the service: one pool, named queries, rows as dicts. Idle connections
    are checked every CHECK_EVERY seconds, so ones a database restart broke are replaced
    before a caller meets them."""

    CHECK_EVERY = 15.0

    def __init__(
        self,
        url: str,
        *,
        max_size: int = 10,
        application_name: str = "processor",
        prepared: bool = False,
    ):
        self._pool = AsyncConnectionPool(
            url,
            min_size=1,
            max_size=max_size,
            open=False,
            kwargs={
                "autocommit": True,
                "row_factory": dict_row,
                "application_name": application_name,
                **session_options(prepared),
            },
            configure=_configure,
            timeout=10.0,
        )
        self._checker: asyncio.Task[None] | None = None

    async def open(self) -> None:
        try:
            await self._pool.open(wait=True, timeout=15.0)
        except (psycopg.Error, PoolTimeout) as exc:
            await self._pool.close()
            raise DatabaseError(f"cannot connect to the database: {describe(exc)}") from exc
        self._checker = asyncio.create_task(self._check_idle(), name="pool-check")

    async def close(self) -> None:
        if self._checker is not None:
            self._checker.cancel()
            await asyncio.gather(self._checker, return_exceptions=True)
        await self._pool.close()

    async def _check_idle(self) -> None:
        while True:
            await asyncio.sleep(self.CHECK_EVERY)
            with suppress(Exception):
                await self._pool.check()

    async def ping(self) -> bool:
        """True when the database answers. A connection broken since it was pooled (the
        database restarted) is replaced and the ping tried once more on a fresh one."""
        for attempt in (1, 2):
            try:
                row = await self.fetch_one("ping")
                return bool(row and row["ok"] == 1)
            except DatabaseError:
                if attempt == 2:
                    raise
        return False

    async def fetch_all(
        self, name: str, params: Mapping[str, Any] | None = None, *, prepare: bool | None = None
    ) -> list[Row]:
        """prepare=False plans every call with its own values (queries with optional filters)."""
        try:
            async with self._pool.connection() as conn, conn.cursor() as cur:
                await cur.execute(query(name), _adapt(params or {}), prepare=prepare)
                rows = await cur.fetchall() if cur.description else []
                return cast(list[Row], rows)  # the pool's connections use dict_row
        except (psycopg.Error, PoolTimeout) as exc:
            raise DatabaseError(f"{name} failed: {describe(exc)}", http_status(exc)) from exc

    async def fetch_one(self, name: str, params: Mapping[str, Any] | None = None) -> Row | None:
        rows = await self.fetch_all(name, params)
        return rows[0] if rows else None


@contextmanager
def connect(url: str, *, autocommit: bool = True) -> Iterator[psycopg.Connection[Row]]:
    """A plain connection for the command line and migrations, errors translated."""
    try:
        conn = psycopg.connect(
            url,
            autocommit=autocommit,
            row_factory=dict_row,
            application_name="processor-cli",
            connect_timeout=10,
            **session_options(),
        )
    except psycopg.Error as exc:
        raise DatabaseError(f"cannot connect to the database: {describe(exc)}") from exc
    set_json_loads(safe_loads, conn)
    try:
        with conn:
            yield conn
    except psycopg.Error as exc:
        raise DatabaseError(describe(exc)) from exc


def run(
    conn: psycopg.Connection[Row], name: str, params: Mapping[str, Any] | None = None
) -> list[Row]:
    """Runs a named query on a plain connection."""
    cur = conn.execute(query(name), _adapt(params or {}))
    return cur.fetchall() if cur.description else []
