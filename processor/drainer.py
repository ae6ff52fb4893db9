"""Draining: after a trigger call ({"drain": true}), keep claiming due jobs for a time budget,
as many as MAX_RUNNING_JOBS at once, so a burst of inserts does not wait for cron ticks."""

from __future__ import annotations

import asyncio
import time

import structlog

from processor.dispatch import Dispatcher
from processor.errors import DatabaseError
from processor.queue import JobQueue
from processor.settings import Settings

log = structlog.get_logger("processor.drainer")


class Drainer:
    def __init__(self, queue: JobQueue, dispatcher: Dispatcher, settings: Settings) -> None:
        self.queue = queue
        self.dispatcher = dispatcher
        self.settings = settings
        # One drain per job-type filter; a new request only pushes its deadline out.
        self._tasks: dict[tuple[str, ...] | None, asyncio.Task[int]] = {}
        self._deadlines: dict[tuple[str, ...] | None, float] = {}

    def request(self, job_types: list[str] | None) -> None:
        if self.settings.drain_seconds <= 0:
            return
        key = tuple(sorted(job_types)) if job_types else None
        self._deadlines[key] = time.monotonic() + self.settings.drain_seconds
        task = self._tasks.get(key)
        if task is None or task.done():
            self._tasks[key] = asyncio.create_task(self._run(key), name=f"drain-{key}")

    async def _run(self, key: tuple[str, ...] | None) -> int:
        claimed = 0
        job_types = list(key) if key else None
        try:
            while time.monotonic() < self._deadlines[key]:
                free = self.settings.max_running - self.dispatcher.running
                if free <= 0:
                    await self.dispatcher.wait_for_a_slot(within=0.5)
                    continue
                jobs = await self.queue.claim(
                    self.settings.worker_id,
                    min(free, self.settings.max_claim),
                    job_types,
                    self.settings.lease_seconds,
                )
                if not jobs:
                    break
                for job in jobs:
                    log.info(
                        "job_claimed",
                        job_id=str(job.id),
                        job_type=job.job_type,
                        attempt=job.attempt,
                        via="drain",
                    )
                self.dispatcher.start(jobs)
                claimed += len(jobs)
        except DatabaseError as exc:
            log.warning("drain_stopped", error=str(exc))
        if claimed:
            log.info("drain_finished", claimed=claimed)
        return claimed

    async def stop(self) -> None:
        for task in self._tasks.values():
            task.cancel()
        await asyncio.gather(*self._tasks.values(), return_exceptions=True)
