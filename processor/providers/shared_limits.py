"""Provider limits shared by every processor on one database (PROVIDER_LIMITS): a cap on
concurrent calls and a pace in calls per minute per provider, kept in Postgres
(provider_limits, provider_slots) so that any number of processors together respect them; and
a pause that one 429 with a wait sets for all of them.

A call that would have to wait longer than MAX_WAIT does not wait: it raises RateLimited, the
handler answers 429, and the job is postponed without spending an attempt.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager

import structlog

from processor.db import Database
from processor.providers.errors import RateLimited
from processor.settings import Limit

log = structlog.get_logger("processor.providers.shared_limits")

MAX_WAIT = 5.0  # seconds a call may wait for its turn before its job is postponed instead


class SharedLimits:
    def __init__(self, db: Database, holder: str, limits: Mapping[str, Limit]) -> None:
        self.db = db
        self.holder = holder
        self.limits = dict(limits)

    async def configure(self) -> None:
        """Writes this processor's limits (every processor should be given the same)."""
        for provider, limit in self.limits.items():
            await self.db.fetch_all(
                "provider_limits_set",
                {
                    "provider": provider,
                    "max_concurrent": limit.concurrent,
                    "per_minute": limit.per_minute,
                },
            )

    @asynccontextmanager
    async def turn(self, provider: str, ttl: float) -> AsyncIterator[None]:
        """Waits (up to MAX_WAIT) for this provider's turn, holds a slot for the call, and
        gives it back; raises RateLimited when the turn is further away than that."""
        while True:
            row = await self.db.fetch_one(
                "provider_acquire",
                {
                    "provider": provider,
                    "holder": self.holder,
                    "ttl_seconds": ttl,
                    "max_wait_seconds": MAX_WAIT,
                },
            )
            assert row is not None
            if row["granted"]:
                break
            wait = float(row["wait_seconds"])
            if row["reason"] == "concurrency" and wait <= MAX_WAIT:
                await asyncio.sleep(wait)
                continue
            raise RateLimited(
                provider,
                f"held back by the shared limit ({row['reason']}) for {wait:.0f}s more",
                retry_after=wait,
            )
        if row["wait_seconds"] > 0:
            await asyncio.sleep(float(row["wait_seconds"]))
        try:
            yield
        finally:
            if row["slot_id"] is not None:
                await self.db.fetch_all("provider_release", {"slot_id": row["slot_id"]})

    async def pause(self, provider: str, seconds: float, reason: str) -> None:
        """Every processor stops calling `provider` for `seconds` (a 429 said so)."""
        row = await self.db.fetch_one(
            "provider_pause", {"provider": provider, "seconds": seconds, "reason": reason}
        )
        log.warning(
            "provider_paused",
            provider=provider,
            seconds=round(seconds, 1),
            until=str(row["paused_until"]) if row else None,
        )
