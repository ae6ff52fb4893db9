"""Records what became of attempts, in batches: completions and failures from many running jobs
are written together, one statement per kind per batch, each row still fenced by its lease token.

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
from typing import Any
from uuid import UUID

import structlog

from processor.errors import DatabaseError
from processor.queue.jobs import ClaimedJob, JobQueue

log = structlog.get_logger("processor.queue.recorder")

MAX_BATCH = 500


@dataclass
class _Pending:
    job: ClaimedJob
    future: asyncio.Future[Any]
    result: Any = None
    error: str | None = None
    retryable: bool = True
    queued_at: float = field(default_factory=time.monotonic)


class OutcomeWriter:
    """complete() and fail() return once their row is written (or known to be lost)."""

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

    async def extend_leases(self, jobs: list[ClaimedJob], lease_seconds: float) -> set[UUID]:
        """Extends many leases in one statement, on the writer's own connections too: keeping
        a lease must never wait behind claims or handlers for a connection."""
        return await self.queue.extend_many(jobs, lease_seconds)

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
        delay = 0.1
        while True:
            try:
                results: dict[UUID, Any] = await write(batch)
            except DatabaseError as exc:
                waited = time.monotonic() - min(p.queued_at for p in batch)
                if waited + delay > self.give_up_after:
                    log.error("outcome_write_failed", jobs=len(batch), error=str(exc))
                    for p in batch:
                        if not p.future.done():
                            p.future.set_exception(exc)
                    return
                log.warning("outcome_write_retry", jobs=len(batch), error=str(exc))
                await asyncio.sleep(delay)
                delay = min(delay * 2, 2.0)
                continue
            self.batches += 1
            for p in batch:
                if not p.future.done():
                    p.future.set_result(results.get(p.job.id))
            return

    async def _write_completions(self, batch: list[_Pending]) -> dict[UUID, Any]:
        done = await self.queue.complete_many([(p.job, p.result) for p in batch])
        return {job_id: True for job_id in done}

    async def _write_failures(self, batch: list[_Pending]) -> dict[UUID, Any]:
        return await self.queue.fail_many(
            [(p.job, p.error or "failed", p.retryable) for p in batch]
        )
