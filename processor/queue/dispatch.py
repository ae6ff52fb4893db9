"""Runs claimed jobs: POSTs each to its handler over one shared keep-alive HTTP client (one
connection per running slot, so a claimed job never queues for one), keeps the leases of all
running jobs alive with one statement per beat, and hands every verdict to the outcome writer.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, TypeVar
from urllib.parse import urlsplit
from uuid import UUID

import structlog

from processor import redact, signing, tracing
from processor.errors import DatabaseError
from processor.queue.handler_client import (
    AnswerTooLarge,
    ConnectionLost,
    HandlerCallError,
    HandlerClient,
)
from processor.queue.jobs import ClaimedJob, JobQueue
from processor.queue.recorder import Recorder
from processor.queue.timings import JobTimings
from processor.queue.verdict import Verdict, judge
from processor.settings import Route, Settings, unknown_job_type
from processor.tracing import Status, StatusCode

MAX_SEND_DEPTH = 512  # deeper JSON than most handlers' parsers can read (Python's stops ~1000)

log = structlog.get_logger("processor.queue.dispatch")
T = TypeVar("T")


@dataclass(frozen=True)
class Outcome:
    """What became of one attempt: the job's status afterwards, and why."""

    id: str
    job_type: str
    attempt: int
    status: str  # a Status (completed, pending to retry, failed, waiting for its children), or
    # "lost": the lease was taken away
    error: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if v is not None}


@dataclass
class _Running:
    job: ClaimedJob
    task: asyncio.Task[Outcome] | None = None
    calling: bool = False  # the handler call is under way (the part a lost lease interrupts)
    lost: bool = False
    claimed: tuple[int, int] | None = None  # the claim's start and end, ns (its trace span)
    via: str = "request"  # what claimed it: request, drain (its job_claimed log line)


@dataclass
class Dispatcher:
    """Owns the running jobs of one processor: starts them, keeps their leases, drains them on
    shutdown. `running` counts every job from its claim until its outcome is written."""

    queue: JobQueue
    writer: Recorder
    settings: Settings
    finished: Counter[str] = field(default_factory=Counter)  # attempts by outcome (/metrics)
    timings: JobTimings = field(default_factory=JobTimings)  # pickup and run time (/metrics)

    def __post_init__(self) -> None:
        self.routes: dict[str, Route] = self.settings.routes()
        self._running: dict[UUID, _Running] = {}
        self._freed = asyncio.Event()
        self._client: HandlerClient | None = None
        self._keeper: asyncio.Task[None] | None = None

    async def open(self) -> None:
        self._client = HandlerClient(
            self.settings.max_running_jobs, max_answer_bytes=self.settings.max_answer_bytes
        )
        self._keeper = asyncio.create_task(self._keep_leases(), name="lease-keeper")

    async def close(self) -> None:
        if self._keeper is not None:
            self._keeper.cancel()
            await asyncio.gather(self._keeper, return_exceptions=True)
        if self._client is not None:
            await self._client.close()

    @property
    def running(self) -> int:
        return len(self._running)

    def start(
        self,
        jobs: Iterable[ClaimedJob],
        claimed: tuple[int, int] | None = None,
        via: str = "request",
    ) -> list[asyncio.Task[Outcome]]:
        """Runs each job in its own task; the caller may await them or walk away. `claimed`:
        when the claim statement started and ended (time.time_ns), for the job's trace; `via`:
        what claimed it, for its job_claimed line."""
        tasks = []
        for job in jobs:
            self.timings.picked_up(job.job_type, job.waited_seconds)
            entry = _Running(job, claimed=claimed, via=via)
            self._running[job.id] = entry
            entry.task = asyncio.create_task(self._run(entry), name=f"job-{job.id}")
            tasks.append(entry.task)
        return tasks

    async def wait_for_a_slot(self, within: float) -> None:
        """Returns when a running job finishes (or after `within` seconds)."""
        self._freed.clear()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._freed.wait(), within)

    async def shutdown(self, grace: float) -> None:
        """Waits up to `grace` seconds for running jobs, then interrupts the rest (each records a
        retryable failure, so nothing waits for its lease to expire)."""
        pending = {e.task for e in self._running.values() if e.task is not None}
        if pending:
            log.info("dispatch_draining", running=len(pending), grace_seconds=grace)
            _, still = await asyncio.wait(pending, timeout=grace)
            for task in still:
                task.cancel()
            if still:
                await asyncio.wait(still, timeout=10)
        await self.close()

    async def _run(self, entry: _Running) -> Outcome:
        job = entry.job
        started = time.monotonic()
        outcome = "interrupted"
        try:
            # The job's span continues the trace its enqueue began (job_queue.traceparent).
            with tracing.job_span(job, entry.claimed) as span:
                _log(job).info("job_claimed", via=entry.via)  # in the span: it has the trace id
                result = await self._attempt(entry)
                outcome = result.status
                span.set_attribute("job.outcome", outcome)
                if outcome not in ("completed", "pending", "waiting"):
                    span.set_status(Status(StatusCode.ERROR, result.error or outcome))
                return result
        finally:
            self.timings.ran(entry.job.job_type, outcome, time.monotonic() - started)
            del self._running[entry.job.id]
            self._freed.set()

    async def _attempt(self, entry: _Running) -> Outcome:
        job = entry.job
        route = self.routes.get(job.job_type)
        if route is None:
            verdict = Verdict(ok=False, error=unknown_job_type(job.job_type, self.routes))
            return await self._record(job, verdict)
        entry.calling = True
        try:
            with tracing.call_span(route.url) as call_span:
                verdict = await self._call(job, route)
                if not verdict.ok:  # what a trace carries is redacted as the logs are
                    call_span.set_status(
                        Status(StatusCode.ERROR, redact.redact(verdict.error or "failed"))
                    )
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if entry.lost and task is not None and task.cancelling() <= 1:
                task.uncancel()
                _log(job).warning("job_lease_lost")
                self.finished["lost"] += 1
                return Outcome(
                    str(job.id),
                    job.job_type,
                    job.attempt,
                    "lost",
                    "the lease was taken away while the handler ran",
                )
            await self._record(
                job,
                Verdict(
                    ok=False,
                    retryable=True,
                    error="interrupted: the processor shut down during this attempt",
                ),
            )
            raise
        finally:
            entry.calling = False
        return await self._record(job, verdict)

    async def _call(self, job: ClaimedJob, route: Route) -> Verdict:
        """POSTs the job to its handler, signed (handlers never see PROCESSOR_TOKEN)."""
        assert self._client is not None, "Dispatcher.open() was not awaited"
        unsendable = _unsendable(job.payload_json, self.settings.max_request_bytes)
        if unsendable:
            return Verdict(ok=False, error=unsendable)
        dependencies = b""
        if job.has_dependencies:
            try:
                outcomes = await self.queue.dependencies_json(job)
            except DatabaseError as exc:
                return Verdict(
                    ok=False, retryable=True, error=f"its dependencies could not be read: {exc}"
                )
            size = len(job.payload_json.encode()) + len(outcomes.encode()) + 300  # (+ the rest)
            if size > self.settings.max_request_bytes:
                return Verdict(
                    ok=False,
                    error=f"its payload and what its dependencies came to are {size} bytes; "
                    f"handler calls are limited to {self.settings.max_request_bytes} "
                    "(MAX_REQUEST_BYTES): have dependencies return smaller results",
                )
            dependencies = b',"dependencies":' + outcomes.encode()
        if job.parent_id is not None:
            dependencies += b',"parent_id":"%s"' % str(job.parent_id).encode()
        body = b"".join(
            (
                b'{"job_id":"%s","job_type":' % str(job.id).encode(),
                json.dumps(job.job_type).encode(),
                b',"attempt":%d,"lease_token":"%s","user_id":'
                % (job.attempt, str(job.lease_token).encode()),
                json.dumps(job.user_id).encode(),
                b',"payload":',
                job.payload_json.encode(),
                dependencies,
                b"}",
            )
        )
        delivery = signing.new_delivery()
        signature = signing.sign(
            body,
            self.settings.signing_secrets(route),
            path=urlsplit(route.url).path or "/",
            delivery=delivery,
            legacy=self.settings.legacy_signature and not route.builtin,
        )
        headers = {
            "Content-Type": "application/json",
            signing.DELIVERY_HEADER: delivery,
            signing.HEADER: signature,
        }
        tracing.inject(headers)  # the handler continues the job's trace
        try:
            answer = await self._client.post(route.url, body, headers, route.timeout)
        except TimeoutError:
            return Verdict(
                ok=False, retryable=True, error=f"handler timed out after {route.timeout:g}s"
            )
        except AnswerTooLarge as exc:
            return Verdict(
                ok=False,
                error=f"handler answer not stored: {exc} (MAX_HANDLER_ANSWER_BYTES)",
            )
        except ConnectionLost as exc:
            return Verdict(ok=False, retryable=True, error=f"handler call failed: {exc}")
        except HandlerCallError as exc:
            return Verdict(ok=False, retryable=True, error=f"handler unreachable: {exc}")
        return judge(answer)

    async def _keep_leases(self) -> None:
        """Every beat, one statement extends the lease of every running job; a job whose lease
        is gone (cancelled, or requeued by someone else) has its handler call stopped."""
        while True:
            await asyncio.sleep(self.settings.heartbeat_seconds)
            entries = list(self._running.values())
            if not entries:
                continue
            try:
                held = await self.writer.extend_job_leases(
                    [e.job for e in entries], self.settings.lease_seconds
                )
            except DatabaseError as exc:
                # Keep the handlers running: the next beat may get through before leases end.
                log.warning("lease_extend_failed", jobs=len(entries), error=str(exc))
                continue
            for entry in entries:
                if entry.job.id not in held and entry.calling and entry.task is not None:
                    entry.lost = True
                    entry.task.cancel()

    async def _record(self, job: ClaimedJob, verdict: Verdict) -> Outcome:
        verdict = verdict.redacted()
        try:
            with tracing.span("record outcome"):
                return await self._write(job, verdict)
        except DatabaseError as exc:
            _log(job).error("job_outcome_unrecorded", error=str(exc))
            self.finished["unrecorded"] += 1
            return Outcome(
                str(job.id), job.job_type, job.attempt, "lost", f"outcome not recorded: {exc}"
            )

    async def _write(self, job: ClaimedJob, verdict: Verdict) -> Outcome:
        def outcome(status: str | None) -> Outcome:
            self.finished[status or "lost"] += 1
            return Outcome(
                str(job.id),
                job.job_type,
                job.attempt,
                status or "lost",
                verdict.error if status else "the lease was taken away",
            )

        if verdict.ok and verdict.children is not None:
            made = await self.writer.suspend_job(job, verdict.children)
            if isinstance(made, DatabaseError):
                verdict = Verdict(
                    ok=False, error=f"handler asked for children the queue refused: {made.reason}"
                )
            elif made is None:
                _log(job).warning("job_lease_lost")
                return outcome(None)
            else:
                _log(job).info(
                    "job_waiting_for_children",
                    children=len(made),
                    created=sum(1 for r in made if r["created"]),
                )
                return outcome("waiting")
        if verdict.ok:
            done = await self.writer.complete(job, verdict.result)
            _log(job).info("job_completed" if done else "job_lease_lost")
            return outcome("completed" if done else None)
        error = verdict.error or "failed"
        if verdict.postpone_seconds is not None:
            delay = verdict.postpone_seconds
            status = await self.writer.postpone_job(job, delay, error)
            if status == "pending":
                _log(job).warning("job_postponed", error=error, retry_after=delay)
                return outcome(status)
        else:
            status = await self.writer.fail(job, error, retryable=verdict.retryable)
        if status == "pending":
            _log(job).warning("job_retry_scheduled", error=verdict.error)
        elif status == "failed":
            _log(job).error("job_failed", error=verdict.error, retryable=verdict.retryable)
        else:
            _log(job).warning("job_lease_lost", error=verdict.error)
        return outcome(status)


def _unsendable(payload_json: str, max_bytes: int) -> str | None:
    """Why a payload cannot be sent to any handler, or None. Checked per job, so one bad row
    fails alone and at once while the jobs claimed beside it run."""
    if len(payload_json) > max_bytes:
        return (
            f"payload is {len(payload_json)} bytes; handler calls are limited to {max_bytes} "
            "(MAX_REQUEST_BYTES)"
        )
    if payload_json.count("{") + payload_json.count("[") > MAX_SEND_DEPTH:
        depth = json_depth(payload_json, MAX_SEND_DEPTH + 1)
        if depth > MAX_SEND_DEPTH:
            return f"payload nests more than {MAX_SEND_DEPTH} levels deep; no handler can read it"
    return None


_STRING = re.compile(r'"(?:[^"\\]|\\.)*"')
_BRACKET = re.compile(r"[\[\]{}]")


def json_depth(text: str, stop: int) -> int:
    """How deeply a JSON text nests (counted no further than `stop`), without decoding it."""
    depth = deepest = 0
    for bracket in _BRACKET.findall(_STRING.sub("", text)):
        if bracket in "[{":
            depth += 1
            if depth > deepest:
                deepest = depth
                if deepest >= stop:
                    return deepest
        else:
            depth -= 1
    return deepest


def _log(job: ClaimedJob) -> Any:
    """A logger whose lines carry the job's id, type and attempt."""
    return log.bind(job_id=str(job.id), job_type=job.job_type, attempt=job.attempt)
