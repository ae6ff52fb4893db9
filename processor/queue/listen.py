"""Instant pickup without pg_net: a running processor keeps one LISTEN connection, and the insert
trigger's NOTIFY (delivered at commit) starts a drain within milliseconds.

LISTEN needs a session that stays with one server connection: a direct connection or a
session-mode pooler. A transaction-mode pooler (Supabase's Supavisor on 6543, PgBouncer in
`pool_mode = transaction` on any port) hands each transaction to another server connection and
drops notifications. The port says nothing reliable about that, so the listener proves itself
before it listens for jobs: it LISTENs on a channel of its own, sends a NOTIFY there from
another connection (the service's pool) and waits for it. Only when the probe arrives does it
LISTEN for inserts. When the probe does not arrive it logs `listen_unavailable` once and stops;
pg_net, cron and the drain's own timer still wake the processor. Behind a transaction pooler the
probe's LISTEN stays on whichever server connection ran it, but on a channel nobody else
notifies, so no other client of the pooler ever receives a notification from it.
LISTEN_DATABASE_URL gives the listener a direct URL of its own while everything else goes
through the pooler.
"""

from __future__ import annotations

import asyncio
import uuid
from collections import deque
from collections.abc import Awaitable, Callable

import psycopg
import structlog
from psycopg import sql

from processor.db import describe, session_options
from processor.sql import query

log = structlog.get_logger("processor.queue.listen")

CHANNEL = "job_queue_insert"  # notified by job_queue_instant_pickup() (sql/migrations/0004)
PROBE_TIMEOUT = 5.0  # a NOTIFY is delivered at commit: milliseconds on any working path

Probe = Callable[[str], Awaitable[None]]  # sends NOTIFY <channel> from another connection

UNAVAILABLE = (
    "the probe NOTIFY sent after LISTEN never arrived: DATABASE_URL goes through a "
    "transaction-mode pooler (Supabase's port 6543, or PgBouncer pool_mode=transaction), which "
    "drops notifications. New jobs are picked up through pg_net, cron and the drain timer "
    "instead; set LISTEN_DATABASE_URL to a direct or session-mode URL (Supabase: the direct "
    "connection or the session pooler on port 5432) for millisecond pickup."
)


def why_not_listen(enabled: bool) -> str | None:
    """None when the processor should try to LISTEN for inserts, else the reason it does not."""
    return None if enabled else "LISTEN_FOR_JOBS=off"


class ListenUnavailable(Exception):
    """LISTEN was accepted but notifications do not come back on this connection."""


class Listener:
    def __init__(
        self, database_url: str, on_insert: Callable[[], None], probe: Probe | None = None
    ) -> None:
        self.database_url = database_url
        self.on_insert = on_insert
        self.probe = probe
        self.connected = asyncio.Event()
        self.unavailable: str | None = None  # why the listener gave up, once it has
        self.waits: deque[float] = deque(maxlen=100)  # the latest reconnect waits (tests)

    FIRST_RETRY = 0.5
    MAX_RETRY = 10.0

    async def run(self) -> None:
        """Listens until cancelled, reconnecting after a lost connection; each (re)connect
        also wakes the processor once, for anything inserted while it was not listening. The
        wait doubles while connecting fails and starts again from FIRST_RETRY once a
        connection has held, so every restart of the database is met as quickly. Returns when
        the probe shows that notifications cannot arrive on this URL."""
        delay = self.FIRST_RETRY
        while True:
            try:
                await self._listen()
            except ListenUnavailable as exc:
                self.connected.clear()
                self.unavailable = str(exc)
                log.warning("listen_unavailable", reason=str(exc))
                return
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
            self.database_url,
            autocommit=True,
            application_name="processor-listen",
            **session_options(),
        ) as conn:
            if self.probe is not None:
                await self._prove(conn, self.probe)
            await conn.execute(query("listen_inserts"))
            self.connected.set()
            log.info("listening", channel=CHANNEL)
            self.on_insert()
            async for _ in conn.notifies():
                self.on_insert()

    async def _prove(self, conn: psycopg.AsyncConnection[object], probe: Probe) -> None:
        """LISTENs on a channel of this attempt's own, has another connection NOTIFY it, and
        waits; raises ListenUnavailable when the probe does not come within PROBE_TIMEOUT."""
        channel = f"processor_probe_{uuid.uuid4().hex}"
        named = {"channel": sql.Identifier(channel)}
        await conn.execute(query("listen_probe_channel").format(**named))
        try:
            await probe(channel)
        except Exception as exc:  # the pool is away: a connection problem, retried
            raise psycopg.OperationalError(f"could not send the LISTEN probe: {exc}") from exc
        arrived = False
        async for note in conn.notifies(timeout=PROBE_TIMEOUT):
            if note.channel == channel:
                arrived = True
                break  # the generator holds the connection: leave it before the next query
        if not arrived:
            raise ListenUnavailable(UNAVAILABLE)
        await conn.execute(query("unlisten_probe_channel").format(**named))
