"""Runs claimed jobs: POSTs each to its handler while a heartbeat extends its lease, then records
the outcome. 2xx completes the job; 408/429/5xx, a timeout or a connection error retries it; any
other answer fails it at once with the handler's reason."""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any, TypeVar

import httpx
import structlog

from processor.errors import DatabaseError
from processor.queue import ClaimedJob, JobQueue
from processor.settings import Route, Settings

log = structlog.get_logger("processor.dispatch")

RETRYABLE_STATUS = frozenset({408, 425, 429})
REASON_LIMIT = 1000
T = TypeVar("T")


@dataclass(frozen=True)
class Outcome:
    """What became of one attempt: the job's status afterwards, and why."""

    id: str
    job_type: str
    attempt: int
    status: str  # completed | pending (will retry) | failed | lost (lease taken away)
    error: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if v is not None}


@dataclass(frozen=True)
class Verdict:
    ok: bool
    result: Any = None
    error: str | None = None
    retryable: bool = False
    postpone_seconds: float | None = None  # a 429 with Retry-After: wait, spend no attempt


class LeaseLost(Exception):
    """The job was requeued, cancelled or finished by someone else while its handler ran."""


def judge(response: httpx.Response) -> Verdict:
    """Turns a handler's answer into a verdict."""
    status = response.status_code
    if 200 <= status < 300:
        body = _json(response)
        if isinstance(body, dict) and "result" in body:
            return Verdict(ok=True, result=body["result"])
        return Verdict(ok=True, result=body)
    summary = f"handler answered {status} {response.reason_phrase}".rstrip()
    reason = _reason(response)
    error = f"{summary}: {reason}" if reason else summary
    if 300 <= status < 400:
        where = response.headers.get("location", "?")
        return Verdict(ok=False, error=f"{summary} to {where}; configure the final URL")
    postpone = _retry_after(response) if status == 429 else None
    return Verdict(
        ok=False,
        error=error,
        retryable=status >= 500 or status in RETRYABLE_STATUS,
        postpone_seconds=postpone,
    )


def _retry_after(response: httpx.Response) -> float | None:
    value = response.headers.get("retry-after", "")
    try:
        return max(0.0, float(value))
    except ValueError:
        return None


def _json(response: httpx.Response) -> Any:
    try:
        return response.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        return None


def _reason(response: httpx.Response) -> str:
    body = _json(response)
    if isinstance(body, dict):
        for key in ("error", "detail", "message", "reason"):
            value = body.get(key)
            if isinstance(value, dict) and isinstance(value.get("message"), str):
                value = value["message"]
            if value:
                text = value if isinstance(value, str) else json.dumps(value)
                return text[:REASON_LIMIT]
    text = response.text.strip()
    return " ".join(text.split())[:REASON_LIMIT]


class Dispatcher:
    """Owns the running jobs of one processor: starts them, and drains them on shutdown."""

    def __init__(self, queue: JobQueue, settings: Settings, client: httpx.AsyncClient) -> None:
        self.queue = queue
        self.settings = settings
        self.client = client
        self.routes: dict[str, Route] = settings.routes()
        self._running: set[asyncio.Task[Outcome]] = set()
        self.finished: Counter[str] = Counter()  # attempts by outcome, since start (/metrics)

    @property
    def running(self) -> int:
        return len(self._running)

    def start(self, jobs: Iterable[ClaimedJob]) -> list[asyncio.Task[Outcome]]:
        """Runs each job in its own task; the caller may await them or walk away."""
        tasks = []
        for job in jobs:
            task = asyncio.create_task(self.run(job), name=f"job-{job.id}")
            self._running.add(task)
            task.add_done_callback(self._running.discard)
            tasks.append(task)
        return tasks

    async def wait_for_a_slot(self, within: float) -> None:
        """Returns when a running job finishes (or after `within` seconds)."""
        if self._running:
            await asyncio.wait(
                set(self._running), timeout=within, return_when=asyncio.FIRST_COMPLETED
            )

    async def shutdown(self, grace: float) -> None:
        """Waits up to `grace` seconds for running jobs, then interrupts the rest (each records a
        retryable failure, so nothing waits for its lease to expire)."""
        if not self._running:
            return
        pending = set(self._running)
        log.info("dispatch_draining", running=len(pending), grace_seconds=grace)
        _, still = await asyncio.wait(pending, timeout=grace)
        for task in still:
            task.cancel()
        if still:
            await asyncio.wait(still, timeout=10)

    async def run(self, job: ClaimedJob) -> Outcome:
        structlog.contextvars.bind_contextvars(
            job_id=str(job.id), job_type=job.job_type, attempt=job.attempt
        )
        route = self.routes.get(job.job_type)
        if route is None:
            known = ", ".join(sorted(self.routes))
            verdict = Verdict(
                ok=False,
                error=f"unknown job type {job.job_type!r}; known types: {known} "
                "(add one with JOB_ROUTES)",
            )
            return await self._record(job, verdict)
        log.info("job_dispatched", url=route.url)
        try:
            verdict = await self._call_with_heartbeat(job, route)
        except LeaseLost:
            log.warning("job_lease_lost")
            self.finished["lost"] += 1
            return Outcome(
                str(job.id),
                job.job_type,
                job.attempt,
                "lost",
                "the lease was taken away while the handler ran",
            )
        except asyncio.CancelledError:
            await self._record(
                job,
                Verdict(
                    ok=False,
                    retryable=True,
                    error="interrupted: the processor shut down during this attempt",
                ),
            )
            raise
        return await self._record(job, verdict)

    async def _call_with_heartbeat(self, job: ClaimedJob, route: Route) -> Verdict:
        call = asyncio.create_task(self._call(job, route))
        lost = asyncio.Event()
        beat = asyncio.create_task(self._heartbeat(job, call, lost))
        try:
            return await call
        except asyncio.CancelledError:
            current = asyncio.current_task()
            if lost.is_set() and not (current and current.cancelling()):
                raise LeaseLost from None
            call.cancel()
            raise
        finally:
            beat.cancel()

    async def _heartbeat(
        self, job: ClaimedJob, call: asyncio.Task[Verdict], lost: asyncio.Event
    ) -> None:
        while True:
            await asyncio.sleep(self.settings.heartbeat_seconds)
            try:
                held = await self.queue.extend(job, self.settings.lease_seconds)
            except DatabaseError as exc:
                # Keep the handler running: the next beat may get through before the lease ends.
                log.warning("lease_extend_failed", error=str(exc))
                continue
            if not held:
                lost.set()
                call.cancel()
                return

    async def _call(self, job: ClaimedJob, route: Route) -> Verdict:
        body = {
            "job_id": str(job.id),
            "job_type": job.job_type,
            "attempt": job.attempt,
            "lease_token": str(job.lease_token),
            "user_id": job.user_id,
            "payload": job.payload,
        }
        headers = {"Authorization": f"Bearer {self.settings.token.reveal()}"}
        try:
            response = await self.client.post(
                route.url, json=body, headers=headers, timeout=route.timeout
            )
        except httpx.TimeoutException:
            return Verdict(
                ok=False, retryable=True, error=f"handler timed out after {route.timeout:g}s"
            )
        except httpx.HTTPError as exc:
            reason = " ".join(str(exc).split()) or type(exc).__name__
            return Verdict(ok=False, retryable=True, error=f"handler unreachable: {reason}")
        return judge(response)

    async def _record(self, job: ClaimedJob, verdict: Verdict) -> Outcome:
        def outcome(status: str | None) -> Outcome:
            self.finished[status or "lost"] += 1
            return Outcome(
                str(job.id),
                job.job_type,
                job.attempt,
                status or "lost",
                verdict.error if status else "the lease was taken away",
            )

        if verdict.ok:
            done = await _persist(lambda: self.queue.complete(job, verdict.result))
            log.info("job_completed" if done else "job_lease_lost")
            return outcome("completed" if done else None)
        error = verdict.error or "failed"
        if verdict.postpone_seconds is not None:
            delay = verdict.postpone_seconds
            status = await _persist(lambda: self.queue.postpone(job, delay, error))
            if status == "pending":
                log.warning("job_postponed", error=error, retry_after=delay)
                return outcome(status)
        else:
            status = await _persist(
                lambda: self.queue.fail(job, error, retryable=verdict.retryable)
            )
        if status == "pending":
            log.warning("job_retry_scheduled", error=verdict.error)
        elif status == "failed":
            log.error("job_failed", error=verdict.error, retryable=verdict.retryable)
        else:
            log.warning("job_lease_lost", error=verdict.error)
        return outcome(status)


async def _persist(write: Callable[[], Awaitable[T]], attempts: int = 4) -> T:
    """Writes an outcome, riding out a short database outage: losing it would run the job
    again after its lease expires."""
    delay = 0.25
    for attempt in range(1, attempts + 1):
        try:
            return await write()
        except DatabaseError as exc:
            if attempt == attempts:
                raise
            log.warning("outcome_write_retry", error=str(exc), attempt=attempt)
            await asyncio.sleep(delay)
            delay *= 4
    raise AssertionError("unreachable")
