"""Instant pickup without pg_net: a running processor keeps one LISTEN connection, and the insert
trigger's NOTIFY (delivered at commit) starts a drain within milliseconds.

LISTEN needs a session that stays with one server connection: a direct connection or a
session-mode pooler. A transaction-mode pooler (Supabase's on port 6543) hands each transaction
to another server connection and drops notifications, so there the listener stays off with a
warning; pg_net and cron still wake the processor.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable
from urllib.parse import urlsplit

import psycopg
import structlog

from processor.db import describe
from processor.sql import query

log = structlog.get_logger("processor.queue.listen")

CHANNEL = "job_queue_insert"  # notified by job_queue_instant_pickup() (sql/migrations/0004)
TRANSACTION_POOLER_PORT = 6543


def transaction_pooler(url: str) -> bool:
    """Whether a connection string points at a transaction-mode pooler (no LISTEN there)."""
    try:
        return urlsplit(url).port == TRANSACTION_POOLER_PORT
    except ValueError:
        return False


def why_not_listen(database_url: str, enabled: bool) -> str | None:
    """None when the processor should LISTEN for inserts, else the reason it does not."""
    if not enabled:
        return "LISTEN_FOR_JOBS=off"
    if transaction_pooler(database_url):
        return (
            "DATABASE_URL is a transaction-mode pooler (port 6543), which drops LISTEN; new "
            "jobs are picked up through pg_net and cron instead. Use the direct or session-mode "
            "connection string (Supabase: port 5432) for millisecond pickup."
        )
    return None


class Listener:
    def __init__(self, database_url: str, on_insert: Callable[[], None]) -> None:
        self.database_url = database_url
        self.on_insert = on_insert
        self.connected = asyncio.Event()
        self.waits: deque[float] = deque(maxlen=100)  # the latest reconnect waits (tests)

    FIRST_RETRY = 0.5
    MAX_RETRY = 10.0

    async def run(self) -> None:
        """Listens until cancelled, reconnecting after a lost connection; each (re)connect
        also wakes the processor once, for anything inserted while it was not listening. The
        wait doubles while connecting fails and starts again from FIRST_RETRY once a
        connection has held, so every restart of the database is met as quickly."""
        delay = self.FIRST_RETRY
        while True:
            try:
                await self._listen()
            except psycopg.Error as exc:
                if self.connected.is_set():
                    delay = self.FIRST_RETRY  # this connection had held: a fresh failure
                self.connected.clear()
                log.warning("listen_reconnecting", error=describe(exc), retry_in=delay)
                self.waits.append(delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, self.MAX_RETRY)

    async def _listen(self) -> None:
        async with await psycopg.AsyncConnection.connect(
            self.database_url, autocommit=True, application_name="processor-listen"
        ) as conn:
            await conn.execute(query("listen_inserts"))
            self.connected.set()
            log.info("listening", channel=CHANNEL)
            self.on_insert()
            async for _ in conn.notifies():
                self.on_insert()
