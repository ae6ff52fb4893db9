"""Draining keeps a processor's slots full. A wake-up (a trigger call with {"drain": true}, a
NOTIFY from an insert, or the processor's own timer) starts a drain for a job-type filter; it
claims due jobs as slots free up, and stops looking only DRAIN_SECONDS after it last found
nothing due. While it waits it sleeps until the earliest pending job becomes due (a retry's
backoff, a run_at), a job of its own finishes, or another wake-up arrives; it polls at most once a
second, and only while jobs of its own run. When it stops, a timer wakes it again for the
earliest job due later (and at least every IDLE_RECHECK seconds), so a job whose time arrives
needs no call. Every claim goes through the Claimer, so draining never exceeds
MAX_RUNNING_JOBS."""

from __future__ import annotations

import asyncio
import random
import time

import structlog

from processor.errors import DatabaseError
from processor.queue.claim import Claimer
from processor.settings import Settings

log = structlog.get_logger("processor.queue.drain")

Key = tuple[str, ...] | None

POLL = 1.0  # seconds between looks while jobs of this processor run and nothing is due
IDLE_RECHECK = 30.0  # an idle processor looks again at least this often (three cheap queries)


def _jitter(seconds: float) -> float:
    """±20 %, so processors that woke together do not query together."""
    return seconds * random.uniform(0.8, 1.2)


class Drainer:
    def __init__(self, claimer: Claimer, settings: Settings) -> None:
        self.claimer = claimer
        self.settings = settings
        # One drain per job-type filter; a new request makes it look again at once and keeps
        # it looking DRAIN_SECONDS more.
        self._tasks: dict[Key, asyncio.Task[int]] = {}
        self._deadlines: dict[Key, float] = {}
        self._again: dict[Key, asyncio.Event] = {}
        self._timers: dict[Key, asyncio.TimerHandle] = {}
        self._stopped = False

    def request(self, job_types: list[str] | None) -> None:
        if self.settings.drain_seconds <= 0 or self._stopped:
            return
        key = tuple(sorted(job_types)) if job_types else None
        self._deadlines[key] = time.monotonic() + self.settings.drain_seconds
        self._again.setdefault(key, asyncio.Event()).set()
        timer = self._timers.pop(key, None)
        if timer is not None:
            timer.cancel()
        task = self._tasks.get(key)
        if task is None or task.done():
            self._tasks[key] = asyncio.create_task(self._run(key), name=f"drain-{key}")

    async def _run(self, key: Key) -> int:
        claimed = 0
        job_types = list(key) if key else None
        again = self._again[key]
        dispatcher = self.claimer.dispatcher
        # Claim in chunks: waiting for a quarter of the slots to free up makes fewer, larger
        # claims under load without delaying a job when the processor is idle.
        chunk = max(1, min(self.settings.max_running_jobs, self.settings.max_claim) // 4)
        next_due: float | None = None
        try:
            while True:
                again.clear()
                if self.claimer.free < chunk and dispatcher.running:
                    await dispatcher.wait_for_a_slot(within=0.05)
                    if self.claimer.free == 0:
                        self._keep_going(key)  # every slot is busy: there is work
                        continue
                claim = await self.claimer.claim(self.settings.max_claim, job_types, via="drain")
                claimed += len(claim.jobs)
                if claim.jobs or claim.busy:
                    self._keep_going(key)
                    continue
                if again.is_set():
                    continue
                left = self._deadlines[key] - time.monotonic()
                next_due = await self.claimer.queue.next_due_in(job_types)
                if left <= 0:
                    break
                await self._nap(again, min(left, next_due if next_due is not None else left))
        except DatabaseError as exc:
            log.warning("drain_stopped", error=str(exc))
            next_due = None
        if claimed:
            log.info("drain_finished", claimed=claimed)
        self._arm(key, job_types, next_due)
        return claimed

    def _keep_going(self, key: Key) -> None:
        self._deadlines[key] = max(
            self._deadlines[key], time.monotonic() + self.settings.drain_seconds
        )

    async def _nap(self, again: asyncio.Event, seconds: float) -> None:
        """Sleeps up to `seconds`, waking early for a new request or, while jobs of this
        processor run, when one finishes (its retry may be due soon) or after POLL."""
        dispatcher = self.claimer.dispatcher
        waits: list[asyncio.Future[object]] = [asyncio.ensure_future(again.wait())]
        if dispatcher.running:
            seconds = min(seconds, _jitter(POLL))
            waits.append(asyncio.ensure_future(dispatcher.wait_for_a_slot(within=seconds)))
        try:
            await asyncio.wait(waits, timeout=max(0.0, seconds), return_when="FIRST_COMPLETED")
        finally:
            for wait in waits:
                wait.cancel()

    def _arm(self, key: Key, job_types: list[str] | None, next_due: float | None) -> None:
        """Wakes this drain again for the earliest job due later, or after IDLE_RECHECK."""
        if self._stopped:
            return
        delay = IDLE_RECHECK if next_due is None else min(max(next_due, 0.0), IDLE_RECHECK)
        self._timers[key] = asyncio.get_running_loop().call_later(
            _jitter(delay) if next_due is None else delay, self.request, job_types
        )

    async def stop(self) -> None:
        """Ends every drain; later requests are ignored (the processor is shutting down)."""
        self._stopped = True
        for timer in self._timers.values():
            timer.cancel()
        for task in self._tasks.values():
            task.cancel()
        await asyncio.gather(*self._tasks.values(), return_exceptions=True)
