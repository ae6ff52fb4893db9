"""The relay of the local pg_net stand-in: sends the requests that net.http_post() queued, once
their transaction has committed, and records each answer in net._http_response as pg_net does.

Only for `processor dev` and the tests; on Supabase the real pg_net does this job.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import httpx
import psycopg
import structlog
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from processor.db import Row, session_options
from processor.errors import DatabaseError
from processor.sql import query

log = structlog.get_logger("processor.ops.relay")
CHANNEL = "processor_net"  # the channel net.http_post() notifies (sql/local/)
RESPONSE_TTL_SECONDS = 6 * 3600  # pg_net keeps responses for 6 hours by default
MAX_CONTENT = 64 * 1024
PAUSE_SECONDS = 1.0  # pg_net's worker waits this long after each batch


class Relay:
    """Paced like pg_net 0.20's worker, so local timings carry over to Supabase:

    - idle, it waits for a commit that queued a request (NOTIFY, delivered at commit);
    - it takes a batch (up to 200, pg_net's default), sends it, and records every answer in
      one transaction, so the batch's rows stay in net.http_request_queue until all its
      answers are in;
    - after each batch it waits a second; only the first commit since the round began cuts
      that wait short. Under a steady trickle requests therefore go out about once a second.
    """

    def __init__(self, database_url: str, client: httpx.AsyncClient, *, batch: int = 200) -> None:
        self.database_url = database_url
        self.client = client
        self.batch = batch
        self.sent = 0

    async def run(self) -> None:
        """Sends queued requests until cancelled, reconnecting after a lost connection."""
        while True:
            try:
                await self._serve()
            except (psycopg.Error, DatabaseError) as exc:
                log.warning("relay_reconnecting", error=str(exc))
                await asyncio.sleep(1.0)

    async def _serve(self) -> None:
        async with (
            await psycopg.AsyncConnection.connect(
                self.database_url,
                autocommit=True,
                application_name="processor-relay",
                **session_options(),
            ) as listen,
            await psycopg.AsyncConnection.connect(
                self.database_url,
                row_factory=dict_row,
                application_name="processor-relay",
                **session_options(),
            ) as work,
        ):
            await listen.execute(query("relay_listen"))
            log.info("relay_listening", channel=CHANNEL)
            should_wake = True  # one round at start, for anything queued while away
            rounds = 0
            while True:
                if not should_wake:
                    should_wake = await _notified(listen, None)
                should_wake = False
                while True:
                    sent = await self._round(work)
                    rounds += 1
                    if rounds % 600 == 0:
                        await self._prune(work)
                    if should_wake:
                        await _quiet(listen, PAUSE_SECONDS)  # later commits do not wake it
                    else:
                        should_wake = await _notified(listen, PAUSE_SECONDS)
                    if sent == 0:
                        break

    async def _round(self, work: psycopg.AsyncConnection[Row]) -> int:
        """One batch: taken, sent, answered and removed from the queue in one transaction."""
        try:
            async with work.transaction():
                cur = await work.execute(query("relay_take"), {"batch": self.batch})
                rows = await cur.fetchall()
                if rows:
                    answers = await asyncio.gather(*(self._send(row) for row in rows))
                    async with work.cursor() as record:
                        await record.executemany(query("relay_record"), answers)
        except psycopg.errors.UndefinedTable as exc:
            # The stand-in is not installed yet: keep listening, it may be soon.
            log.warning("relay_cannot_read_queue", error=str(exc))
            return 0
        self.sent += len(rows)
        return len(rows)

    async def _prune(self, work: psycopg.AsyncConnection[Row]) -> None:
        async with work.transaction():
            await work.execute(query("relay_prune"), {"ttl_seconds": RESPONSE_TTL_SECONDS})

    async def _send(self, row: Row) -> dict[str, Any]:
        timeout = row["timeout_milliseconds"] / 1000
        answer: dict[str, Any] = {
            "id": row["id"],
            "status_code": None,
            "content_type": None,
            "headers": None,
            "content": None,
            "timed_out": False,
            "error_msg": None,
        }
        try:
            response = await self.client.request(
                str(row["method"]).upper(),
                row["url"],
                headers=row["headers"],
                content=bytes(row["body"] or b""),
                timeout=timeout,
            )
            answer.update(
                status_code=response.status_code,
                content_type=response.headers.get("content-type"),
                headers=Jsonb(dict(response.headers)),
                content=response.text[:MAX_CONTENT],
            )
        except httpx.TimeoutException:
            answer.update(
                timed_out=True, error_msg=f"Timeout of {row['timeout_milliseconds']} ms reached"
            )
        except httpx.HTTPError as exc:
            answer["error_msg"] = " ".join(str(exc).split()) or type(exc).__name__
        log.debug(
            "relay_sent",
            request_id=row["id"],
            status=answer["status_code"],
            error=answer["error_msg"],
        )
        return answer


async def _notified(conn: psycopg.AsyncConnection[Any], within: float | None) -> bool:
    """Waits for one notification; False when `within` seconds pass without one."""
    async for _ in conn.notifies(timeout=within, stop_after=1):
        return True
    return False


async def _quiet(conn: psycopg.AsyncConnection[Any], seconds: float) -> None:
    """Waits `seconds`, swallowing the notifications that arrive meanwhile."""
    deadline = time.monotonic() + seconds
    while (left := deadline - time.monotonic()) > 0:
        async for _ in conn.notifies(timeout=left):
            pass


async def run_forever(database_url: str) -> None:
    """`processor relay`: the relay on its own, beside a service started separately."""
    async with httpx.AsyncClient() as client:
        await Relay(database_url, client).run()
