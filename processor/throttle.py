"""Provider limits shared by every processor on one database (PROVIDER_LIMITS): a cap on
concurrent calls and a pace in calls per minute per provider, kept in Postgres
(provider_limits, provider_slots) so that any number of processors together respect them; and
a pause that one 429 with a wait sets for all of them.

A call that would have to wait longer than MAX_WAIT does not wait: it raises RateLimited, the
handler answers 429, and the job is postponed without spending an attempt.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass

import structlog

from processor.db import Database
from processor.errors import ConfigError
from processor.providers.errors import RateLimited

log = structlog.get_logger("processor.throttle")

MAX_WAIT = 5.0  # seconds a call may wait for its turn before its job is postponed instead


@dataclass(frozen=True)
class Limit:
    concurrent: int | None = None
    per_minute: float | None = None


def parse_limits(raw: str) -> dict[str, Limit]:
    """PROVIDER_LIMITS: {"gemini": {"concurrent": 8, "per_minute": 60}, "openai": {...}}."""
    if not raw.strip():
        return {}
    try:
        data = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"PROVIDER_LIMITS is not valid JSON: {exc.msg}") from None
    if not isinstance(data, dict):
        raise ConfigError("PROVIDER_LIMITS must map provider names to limits")
    limits = {}
    for provider, spec in data.items():
        where = f"PROVIDER_LIMITS[{provider!r}]"
        if not isinstance(spec, dict) or set(spec) - {"concurrent", "per_minute"}:
            raise ConfigError(f'{where} must be {{"concurrent": N, "per_minute": N}}')
        concurrent, per_minute = spec.get("concurrent"), spec.get("per_minute")
        for name, value in (("concurrent", concurrent), ("per_minute", per_minute)):
            if value is not None and (
                not isinstance(value, int | float) or isinstance(value, bool) or value <= 0
            ):
                raise ConfigError(f"{where}.{name} must be a positive number")
        limits[provider] = Limit(
            int(concurrent) if concurrent is not None else None,
            float(per_minute) if per_minute is not None else None,
        )
    return limits


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
