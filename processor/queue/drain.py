"""Draining: after a wake-up (a trigger call with {"drain": true}, or a NOTIFY from an insert),
keep claiming due jobs as slots free up, until none is due or DRAIN_SECONDS pass without a new
wake-up. Every claim goes through the Claimer, so draining never exceeds MAX_RUNNING_JOBS."""

from __future__ import annotations

import asyncio
import time

import structlog

from processor.errors import DatabaseError
from processor.queue.claim import Claimer
from processor.settings import Settings

log = structlog.get_logger("processor.queue.drain")

Key = tuple[str, ...] | None


class Drainer:
    def __init__(self, claimer: Claimer, settings: Settings) -> None:
        self.claimer = claimer
        self.settings = settings
        # One drain per job-type filter; a new request pushes its deadline out and makes it
        # look again even if its last claim found nothing.
        self._tasks: dict[Key, asyncio.Task[int]] = {}
        self._deadlines: dict[Key, float] = {}
        self._again: dict[Key, asyncio.Event] = {}
        self._stopped = False

    def request(self, job_types: list[str] | None) -> None:
        if self.settings.drain_seconds <= 0 or self._stopped:
            return
        key = tuple(sorted(job_types)) if job_types else None
        self._deadlines[key] = time.monotonic() + self.settings.drain_seconds
        self._again.setdefault(key, asyncio.Event()).set()
        task = self._tasks.get(key)
        if task is None or task.done():
            self._tasks[key] = asyncio.create_task(self._run(key), name=f"drain-{key}")

    async def _run(self, key: Key) -> int:
        claimed = 0
        job_types = list(key) if key else None
        again = self._again[key]
        # Claim in chunks: waiting for a quarter of the slots to free up makes fewer, larger
        # claims under load without delaying a job when the processor is idle.
        chunk = max(1, min(self.settings.max_running_jobs, self.settings.max_claim) // 4)
        try:
            while time.monotonic() < self._deadlines[key]:
                again.clear()
                if self.claimer.free < chunk and self.claimer.dispatcher.running:
                    await self.claimer.dispatcher.wait_for_a_slot(within=0.05)
                    if self.claimer.free == 0:
                        continue
                claim = await self.claimer.claim(self.settings.max_claim, job_types, via="drain")
                claimed += len(claim.jobs)
                if not claim.jobs and not claim.busy and not again.is_set():
                    break
        except DatabaseError as exc:
            log.warning("drain_stopped", error=str(exc))
        if claimed:
            log.info("drain_finished", claimed=claimed)
        return claimed

    async def stop(self) -> None:
        """Ends every drain; later requests are ignored (the processor is shutting down)."""
        self._stopped = True
        for task in self._tasks.values():
            task.cancel()
        await asyncio.gather(*self._tasks.values(), return_exceptions=True)
