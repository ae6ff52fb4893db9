"""The one path by which outcomes reach the database: completions, failures, postpones (a 429
with a wait) and lease extensions, each row fenced by its lease token. Completions and failures
from many running jobs are written in batches, one statement per kind per batch; a postpone is
rare and written alone; leases are extended many per statement.

There is no timer: while one batch is being written the next one gathers, so a quiet processor
writes each outcome at once and a busy one writes hundreds per statement. The writer gets its
own small connection pool, so outcome writes never wait behind claims or handlers for a
connection. A failed batch is retried until the lease of its oldest job would have run out:
giving up earlier would let the job run again after its lease expires.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar
from uuid import UUID

import structlog

from processor.errors import DatabaseError
from processor.queue.jobs import ClaimedJob, JobQueue

log = structlog.get_logger("processor.queue.recorder")

MAX_BATCH = 500
T = TypeVar("T")


@dataclass
class _Pending:
    job: ClaimedJob
    future: asyncio.Future[Any]
    result: Any = None
    error: str | None = None
    retryable: bool = True
    queued_at: float = field(default_factory=time.monotonic)


class Recorder:
    """complete(), fail() and postpone_job() return once their row is written (or known to be
    lost); every write rides out a database outage for as long as the job's lease lasts."""

    def __init__(
        self, queue: JobQueue, *, give_up_after: float, max_batch: int = MAX_BATCH
    ) -> None:
        self.queue = queue
        self.give_up_after = give_up_after
        self.max_batch = max_batch
        self._completions: list[_Pending] = []
        self._failures: list[_Pending] = []
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.batches = 0  # statements written (for /metrics and the tests)

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="outcome-writer")

    async def stop(self) -> None:
        """Writes what is queued, then stops."""
        if self._task is None:
            return
        while self._completions or self._failures:
            self._wake.set()
            await asyncio.sleep(0.01)
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)
        self._task = None

    async def complete(self, job: ClaimedJob, result: Any) -> bool:
        """False when this worker no longer holds the job (nothing changed)."""
        pending = _Pending(job, asyncio.get_running_loop().create_future(), result=result)
        self._completions.append(pending)
        self._wake.set()
        return bool(await pending.future)

    async def fail(self, job: ClaimedJob, error: str, *, retryable: bool) -> str | None:
        """The job's new status ('pending' to retry, 'failed'), or None when the lease was lost."""
        pending = _Pending(
            job, asyncio.get_running_loop().create_future(), error=error, retryable=retryable
        )
        self._failures.append(pending)
        self._wake.set()
        result: str | None = await pending.future
        return result

    async def postpone_job(self, job: ClaimedJob, delay_seconds: float, reason: str) -> str | None:
        """Back to pending after a rate limit without spending an attempt: the job's new status,
        or None when the lease was lost."""
        return await _retrying(
            lambda: self.queue.postpone_job(job, delay_seconds, reason),
            started=time.monotonic(),
            within=self.give_up_after,
        )

    async def suspend_job(
        self, job: ClaimedJob, children: list[Any]
    ) -> list[dict[str, Any]] | DatabaseError | None:
        """A handler's children created and the job waiting for them: their rows (name,
        job_id, created), None when the lease was lost, or the database's refusal of the
        children (a bad graph: not retried, it would be refused again)."""

        async def write() -> list[dict[str, Any]] | DatabaseError | None:
            try:
                return await self.queue.suspend_job(job, children)
            except DatabaseError as exc:
                if exc.outage:
                    raise
                return exc

        return await _retrying(write, started=time.monotonic(), within=self.give_up_after)

    async def extend_job_leases(self, jobs: list[ClaimedJob], lease_seconds: float) -> set[UUID]:
        """Extends many leases in one statement, on the recorder's own connections too:
        keeping a lease must never wait behind claims or handlers for a connection. Not
        retried: the heartbeat asks again within a third of the lease."""
        return await self.queue.extend_job_leases(jobs, lease_seconds)

    async def _run(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            completions = self._take(self._completions)
            failures = self._take(self._failures)
            await asyncio.gather(
                self._write(completions, self._write_completions),
                self._write(failures, self._write_failures),
            )
            if self._completions or self._failures:
                self._wake.set()

    def _take(self, queue: list[_Pending]) -> list[_Pending]:
        batch = queue[: self.max_batch]
        del queue[: self.max_batch]
        return batch

    async def _write(
        self,
        batch: list[_Pending],
        write: Callable[[list[_Pending]], Awaitable[dict[UUID, Any]]],
    ) -> None:
        if not batch:
            return
        try:
            results: dict[UUID, Any] = await _retrying(
                lambda: write(batch),
                started=min(p.queued_at for p in batch),
                within=self.give_up_after,
                jobs=len(batch),
            )
        except DatabaseError as exc:
            for p in batch:
                if not p.future.done():
                    p.future.set_exception(exc)
            return
        self.batches += 1
        for p in batch:
            if not p.future.done():
                p.future.set_result(results.get(p.job.id))

    async def _write_completions(self, batch: list[_Pending]) -> dict[UUID, Any]:
        done = await self.queue.complete_jobs([(p.job, p.result) for p in batch])
        return {job_id: True for job_id in done}

    async def _write_failures(self, batch: list[_Pending]) -> dict[UUID, Any]:
        return await self.queue.fail_jobs(
            [(p.job, p.error or "failed", p.retryable) for p in batch]
        )


async def _retrying(
    write: Callable[[], Awaitable[T]], *, started: float, within: float, jobs: int = 1
) -> T:
    """The one retry rule for outcome writes: try again with backoff while the oldest job's
    lease (`within` seconds from `started`) would still hold; giving up sooner would let the
    job run again after its lease expires."""
    delay = 0.1
    while True:
        try:
            return await write()
        except DatabaseError as exc:
            if time.monotonic() - started + delay > within:
                log.error("outcome_write_failed", jobs=jobs, error=str(exc))
                raise
            log.warning("outcome_write_retry", jobs=jobs, error=str(exc))
            await asyncio.sleep(delay)
            delay = min(delay * 2, 2.0)
