"""The queue's operations, each one SQL function call through the gateway."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from uuid import UUID

from psycopg.types.json import Jsonb

from processor.db import Database, Row


@dataclass(frozen=True)
class ClaimedJob:
    """A job this worker holds under a lease: only this lease token can finish it."""

    id: UUID
    job_type: str
    payload: dict[str, Any]
    user_id: str | None
    attempt: int
    max_retries: int
    lease_token: UUID

    @classmethod
    def from_row(cls, row: Row) -> ClaimedJob:
        return cls(
            id=row["id"],
            job_type=row["job_type"],
            payload=row["payload"],
            user_id=row["user_id"],
            attempt=row["attempt"],
            max_retries=row["max_retries"],
            lease_token=row["lease_token"],
        )

    @property
    def max_attempts(self) -> int:
        return self.max_retries + 1


class JobQueue:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def requeue_expired(self) -> int:
        row = await self.db.fetch_one("requeue_expired")
        return int(row["requeued"]) if row else 0

    async def claim(
        self, worker: str, limit: int, job_types: list[str] | None, lease_seconds: float
    ) -> list[ClaimedJob]:
        rows = await self.db.fetch_all(
            "claim_jobs",
            {
                "worker": worker,
                "limit": limit,
                "job_types": job_types,
                "lease_seconds": lease_seconds,
            },
        )
        return [ClaimedJob.from_row(row) for row in rows]

    async def complete(self, job: ClaimedJob, result: Any) -> bool:
        """False when this worker no longer holds the job (nothing changed)."""
        row = await self.db.fetch_one(
            "complete_job",
            {
                "id": job.id,
                "lease_token": job.lease_token,
                "result": _jsonable(result),
            },
        )
        return bool(row and row["ok"])

    async def fail(self, job: ClaimedJob, error: str, *, retryable: bool) -> str | None:
        """The job's new status ('pending' to retry, 'failed'), or None when the lease was lost."""
        row = await self.db.fetch_one(
            "fail_job",
            {
                "id": job.id,
                "lease_token": job.lease_token,
                "error": error,
                "retryable": retryable,
            },
        )
        return row["status"] if row else None

    async def postpone(self, job: ClaimedJob, delay_seconds: float, reason: str) -> str | None:
        """Back to pending after a rate limit without spending an attempt (capped in SQL)."""
        row = await self.db.fetch_one(
            "postpone_job",
            {
                "id": job.id,
                "lease_token": job.lease_token,
                "delay_seconds": delay_seconds,
                "reason": reason,
            },
        )
        return row["status"] if row else None

    async def extend(self, job: ClaimedJob, lease_seconds: float) -> bool:
        row = await self.db.fetch_one(
            "extend_lease",
            {
                "id": job.id,
                "lease_token": job.lease_token,
                "lease_seconds": lease_seconds,
            },
        )
        return bool(row and row["locked_until"])

    async def get(self, job_id: UUID) -> Row | None:
        return await self.db.fetch_one("get_job", {"id": job_id})

    async def ping(self) -> bool:
        row = await self.db.fetch_one("ping")
        return bool(row and row["ok"] == 1)


def _jsonable(value: Any) -> Any:
    # Any result is stored as a JSON value; no result at all is SQL null.
    return None if value is None else Jsonb(value)
