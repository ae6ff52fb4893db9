"""The queue's operations, each one SQL function call through the gateway. Completions and
failures are written in batches by processor.queue.recorder."""

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
    payload_json: str  # the payload as the database wrote it: sent on without being decoded
    user_id: str | None
    attempt: int
    max_retries: int
    lease_token: UUID
    waited_seconds: float = 0.0  # from its run_at to this claim
    traceparent: str | None = None  # the W3C trace context its enqueue gave (processor.tracing)
    has_dependencies: bool = False  # its call carries what its dependencies came to
    parent_id: UUID | None = None  # the job whose handler made it a child (in its call too)

    @classmethod
    def from_row(cls, row: Row) -> ClaimedJob:
        return cls(
            id=row["id"],
            job_type=row["job_type"],
            payload_json=row["payload_json"],
            user_id=row["user_id"],
            attempt=row["attempt"],
            max_retries=row["max_retries"],
            lease_token=row["lease_token"],
            waited_seconds=float(row.get("waited_seconds") or 0.0),
            traceparent=row.get("traceparent"),
            has_dependencies=bool(row.get("has_dependencies")),
            parent_id=row.get("parent_id"),
        )

    @property
    def max_attempts(self) -> int:
        return self.max_retries + 1


class JobQueue:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def requeue_expired_jobs(self) -> int:
        row = await self.db.fetch_one("requeue_expired_jobs")
        return int(row["requeued"]) if row else 0

    async def refresh_statistics(self) -> bool:
        """Analyzes job_queue if enough of it changed since it was last analyzed."""
        row = await self.db.fetch_one("refresh_statistics")
        return bool(row and row["analyzed"])

    async def claim_jobs(
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

    async def next_due_in(self, job_types: list[str] | None) -> float | None:
        """Seconds until the earliest pending job of these types that is not due yet is due."""
        row = await self.db.fetch_one("next_due_in", {"job_types": job_types})
        return None if row is None or row["seconds"] is None else float(row["seconds"])

    async def postpone_job(self, job: ClaimedJob, delay_seconds: float, reason: str) -> str | None:
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

    async def dependencies_json(self, job: ClaimedJob) -> str:
        """The JSON array of what the job's dependencies came to (job_dependencies)."""
        row = await self.db.fetch_one("job_dependencies", {"id": job.id})
        return row["dependencies"] if row else "[]"

    async def suspend_job(self, job: ClaimedJob, children: list[Any]) -> list[Row] | None:
        """Creates the children a handler asked for and makes the job wait for them; None when
        the lease was lost (nothing was created)."""
        rows = await self.db.fetch_all(
            "suspend_job",
            {"id": job.id, "lease_token": job.lease_token, "children": Jsonb(children)},
        )
        return rows or None

    async def reap_waiting(self) -> int:
        row = await self.db.fetch_one("reap_waiting")
        return int(row["fixed"]) if row else 0

    async def budgets_reached(self) -> list[dict[str, Any]]:
        """The budgets that held work back for the first time in their period, each handed to
        one processor only (it is marked as told)."""
        return await self.db.fetch_all("budgets_reached")

    async def refresh_type_costs(self) -> int:
        """Prices each type without a price of its own from its recent completed jobs."""
        await self.db.fetch_all("forget_budgets_reached")
        row = await self.db.fetch_one("refresh_type_costs")
        return int(row["types"]) if row else 0

    async def complete_jobs(self, done: list[tuple[ClaimedJob, Any]]) -> set[UUID]:
        """Completes many jobs in one statement, each fenced by its lease token; returns the ids
        completed (the others were no longer held by this worker, and nothing changed)."""
        rows = await self.db.fetch_all(
            "complete_jobs",
            {
                "ids": [job.id for job, _ in done],
                "lease_tokens": [job.lease_token for job, _ in done],
                # Any result is stored as a JSON value; no result at all is SQL null.
                "results": [None if r is None else Jsonb(r) for _, r in done],
            },
        )
        return {row["id"] for row in rows}

    async def fail_jobs(self, failed: list[tuple[ClaimedJob, str, bool]]) -> dict[UUID, str]:
        """Records many failed attempts (job, error, retryable) in one statement; returns each
        held job's new status: 'pending' (retry) or 'failed'."""
        rows = await self.db.fetch_all(
            "fail_jobs",
            {
                "ids": [job.id for job, _, _ in failed],
                "lease_tokens": [job.lease_token for job, _, _ in failed],
                "errors": [error for _, error, _ in failed],
                "retryable": [retryable for _, _, retryable in failed],
            },
        )
        return {row["job_id"]: row["new_status"] for row in rows}

    async def extend_job_leases(self, jobs: list[ClaimedJob], lease_seconds: float) -> set[UUID]:
        """Extends the leases of many jobs in one statement; returns the ids still held."""
        rows = await self.db.fetch_all(
            "extend_job_leases",
            {
                "ids": [j.id for j in jobs],
                "lease_tokens": [j.lease_token for j in jobs],
                "lease_seconds": lease_seconds,
            },
        )
        return {row["id"] for row in rows}

    async def get(self, job_id: UUID) -> Row | None:
        return await self.db.fetch_one("get_job", {"id": job_id})

    async def ping(self) -> bool:
        return await self.db.ping()

    async def notify_listeners(self, channel: str) -> None:
        """Sends the listener's probe NOTIFY (processor.queue.listen) from a pooled connection."""
        await self.db.fetch_all("listen_probe", {"channel": channel})
