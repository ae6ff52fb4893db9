"""The relay of the local pg_net stand-in: sends the requests that net.http_post() queued, once
their transaction has committed, and records each answer in net._http_response as pg_net does.

Only for `processor dev` and the tests; on Supabase the real pg_net does this job.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import httpx
import psycopg
import structlog

from processor.db import Database, Row
from processor.errors import DatabaseError
from processor.sql import query

log = structlog.get_logger("processor.relay")
CHANNEL = "processor_net"  # the channel net.http_post() notifies (sql/local/)
RESPONSE_TTL_SECONDS = 6 * 3600  # pg_net keeps responses for 6 hours by default
MAX_CONTENT = 64 * 1024


class Relay:
    def __init__(
        self,
        database_url: str,
        client: httpx.AsyncClient,
        *,
        batch: int = 50,
        poll_seconds: float = 1.0,
    ) -> None:
        self.database_url = database_url
        self.db = Database(database_url, max_size=4, application_name="processor-relay")
        self.client = client
        self.batch = batch
        self.poll_seconds = poll_seconds
        self.sent = 0

    async def run(self) -> None:
        """Sends queued requests until cancelled: woken by NOTIFY (delivered at commit), and
        every poll_seconds in case a notification was missed."""
        await self.db.open()
        try:
            while True:
                try:
                    await self._listen()
                except (psycopg.Error, DatabaseError) as exc:
                    log.warning("relay_reconnecting", error=str(exc))
                    await asyncio.sleep(self.poll_seconds)
        finally:
            await self.db.close()

    async def _listen(self) -> None:
        async with await psycopg.AsyncConnection.connect(
            self.database_url, autocommit=True, application_name="processor-relay"
        ) as conn:
            await conn.execute(query("relay_listen"))
            log.info("relay_listening", channel=CHANNEL)
            rounds = 0
            missing_logged = False
            while True:
                try:
                    await self.flush()
                except DatabaseError as exc:
                    # e.g. the stand-in is not installed yet: keep listening, it may be soon.
                    if not missing_logged:
                        log.warning("relay_cannot_read_queue", error=str(exc))
                        missing_logged = True
                rounds += 1
                if rounds % 600 == 0:
                    with contextlib.suppress(DatabaseError):
                        await self.db.fetch_all(
                            "relay_prune", {"ttl_seconds": RESPONSE_TTL_SECONDS}
                        )
                async for _ in conn.notifies(timeout=self.poll_seconds, stop_after=1):
                    pass

    async def flush(self) -> int:
        """Sends everything queued now; returns how many requests it sent."""
        total = 0
        while True:
            rows = await self.db.fetch_all("relay_take", {"batch": self.batch})
            if not rows:
                return total
            await asyncio.gather(*(self._send(row) for row in rows))
            total += len(rows)
            self.sent += len(rows)

    async def _send(self, row: Row) -> None:
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
                headers=dict(response.headers),
                content=response.text[:MAX_CONTENT],
            )
        except httpx.TimeoutException:
            answer.update(
                timed_out=True, error_msg=f"Timeout of {row['timeout_milliseconds']} ms reached"
            )
        except httpx.HTTPError as exc:
            answer["error_msg"] = " ".join(str(exc).split()) or type(exc).__name__
        with contextlib.suppress(DatabaseError):
            await self.db.fetch_all("relay_record", answer)
        log.debug(
            "relay_sent",
            request_id=row["id"],
            status=answer["status_code"],
            error=answer["error_msg"],
        )


async def run_forever(database_url: str) -> None:
    """`processor relay`: the relay on its own, beside a service started separately."""
    async with httpx.AsyncClient() as client:
        await Relay(database_url, client).run()
