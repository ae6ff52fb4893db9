"""Admission control: every path that claims jobs (POST /process-jobs, draining, the LISTEN
wake-up) goes through here, so one processor never holds more than MAX_RUNNING_JOBS claimed
jobs at once. Demand comes from free slots, never from the caller's wish: a call claims at most
the free slots, and with none free it claims nothing and says it is busy.

Claims run one at a time per processor. A claim is a single short statement, so callers
waiting behind it lose a millisecond at most, and callers that would only find no free slot
are answered without touching the database.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

from processor.errors import DatabaseError
from processor.queue.dispatch import Dispatcher, Outcome
from processor.queue.jobs import ClaimedJob, JobQueue
from processor.queue.rescue import LeaseRescue
from processor.settings import Settings


@dataclass(frozen=True)
class Claim:
    jobs: list[ClaimedJob]
    tasks: list[asyncio.Task[Outcome]]
    busy: bool  # no free slot: nothing was claimed
    running: int  # jobs this processor runs now (after this claim)
    requeued: int = 0  # expired leases put back by this call


class ClaimHealth:
    """Whether claims are working: /healthz turns unhealthy after FAILING claims in a row have
    failed (a database that answers `select 1` but refuses every claim, as behind a pooler
    that lost its prepared statements), and healthy again at the first claim that works."""

    FAILING = 3

    def __init__(self) -> None:
        self.failed_in_a_row = 0
        self.last_error = ""
        self.failing_since: float | None = None  # time.time() of the first failure in the row

    def failed(self, error: str) -> None:
        if self.failed_in_a_row == 0:
            self.failing_since = time.time()
        self.failed_in_a_row += 1
        self.last_error = error

    def worked(self) -> None:
        self.failed_in_a_row = 0
        self.failing_since = None

    @property
    def problem(self) -> str | None:
        """None while claims work, else what /healthz says."""
        if self.failed_in_a_row < self.FAILING:
            return None
        return f"the last {self.failed_in_a_row} claims failed: {self.last_error}"


class Claimer:
    def __init__(self, queue: JobQueue, dispatcher: Dispatcher, settings: Settings) -> None:
        self.queue = queue
        self.dispatcher = dispatcher
        self.settings = settings
        self._lock = asyncio.Lock()
        self.rescue = LeaseRescue(queue)
        self.health = ClaimHealth()

    @property
    def free(self) -> int:
        return max(0, self.settings.max_running_jobs - self.dispatcher.running)

    async def claim(self, limit: int, job_types: list[str] | None, *, via: str) -> Claim:
        """Claims up to `limit` due jobs, never more than the free slots, and starts them."""
        async with self._lock:
            try:
                requeued = await self.rescue.requeue_expired_jobs()
                want = min(limit, self.free, self.settings.max_claim)
                if want <= 0:
                    return Claim(
                        [], [], busy=True, running=self.dispatcher.running, requeued=requeued
                    )
                began = time.time_ns()
                jobs = await self.queue.claim_jobs(
                    self.settings.worker_id, want, job_types, self.settings.lease_seconds
                )
            except DatabaseError as exc:
                self.health.failed(str(exc))
                raise
            self.health.worked()
            # Started before the lock is released, so the next claim sees these slots taken.
            tasks = self.dispatcher.start(jobs, claimed=(began, time.time_ns()), via=via)
        return Claim(jobs, tasks, busy=False, running=self.dispatcher.running, requeued=requeued)
