"""The lease rescue: jobs whose lease ran out (their worker died, hung or lost the database)
go back to pending with the attempt counted, or end failed after their last one
(requeue_expired_jobs). Every claim asks for it, at most once per REQUEUE_EVERY_SECONDS per
processor, so a queue with a live processor never holds an expired lease for long.

The same rescue runs the waiting jobs' reaper every REAP_EVERY_SECONDS
(job_queue_reap_waiting): a job waiting for a dependency that was deleted is failed with a
reason, and a count left wrong by rows written with triggers off is set right, so no job waits
forever for something that can never finish.

It also writes one log line (`budget_reached`) for each spend budget that held work back for
the first time in its period (whichever processor comes first), and every
TYPE_COSTS_EVERY_SECONDS prices the job types without a price of their own from their recent
completed jobs (job_queue_refresh_type_costs), for the budgets' estimates."""

from __future__ import annotations

import time

import structlog

from processor.queue.jobs import JobQueue

log = structlog.get_logger("processor.queue.rescue")

REQUEUE_EVERY_SECONDS = 1.0
REAP_EVERY_SECONDS = 10.0
TYPE_COSTS_EVERY_SECONDS = 60.0


class LeaseRescue:
    def __init__(
        self,
        queue: JobQueue,
        every: float = REQUEUE_EVERY_SECONDS,
        reap_every: float = REAP_EVERY_SECONDS,
    ) -> None:
        self.queue = queue
        self.every = every
        self.reap_every = reap_every
        self._last = float("-inf")
        self._last_reap = float("-inf")
        self._last_costs = float("-inf")

    async def requeue_expired_jobs(self) -> int:
        """Sends back expired jobs unless this processor did so less than `every` s ago; returns
        how many it moved. Every `reap_every` s it also runs the waiting jobs' reaper."""
        now = time.monotonic()
        if now - self._last < self.every:
            return 0
        self._last = now
        moved = await self.queue.requeue_expired_jobs()
        if moved:
            log.warning("leases_expired_requeued", jobs=moved)
        if now - self._last_reap >= self.reap_every:
            self._last_reap = now
            fixed = await self.queue.reap_waiting()
            if fixed:
                log.warning("waiting_jobs_reaped", jobs=fixed)
            for b in await self.queue.budgets_reached():
                log.warning(
                    "budget_reached",
                    scope=b["scope"],
                    key=b["key"],
                    spent_usd=round(b["spent_usd"] or 0.0, 4),
                    reserved_usd=round(b["reserved_usd"] or 0.0, 4),
                    budget_usd=b["budget_usd"],
                    period=b["period"],
                    resets=b["resets"].isoformat() if b["resets"] else None,
                )
        if now - self._last_costs >= TYPE_COSTS_EVERY_SECONDS:
            self._last_costs = now
            await self.queue.refresh_type_costs()
        return moved
