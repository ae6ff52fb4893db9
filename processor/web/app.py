"""The HTTP service: the route table, the lifespan, and the queue endpoints."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import date, datetime
from typing import Any

import httpx
import structlog
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles

from processor import redact, tracing
from processor.auth import FailureGuard, require_token
from processor.db import Database
from processor.errors import DatabaseError
from processor.ids import RULE as ID_RULE
from processor.ids import ambiguous, id_digits, matching_ids
from processor.images import handlers
from processor.images.common import HandlerContext
from processor.images.fetch import Fetcher
from processor.ops.relay import Relay
from processor.providers.registry import build as build_providers
from processor.providers.registry import storage_for
from processor.providers.shared_limits import SharedLimits
from processor.providers.storage import FILES_PREFIX, LocalStorage, fresh_urls
from processor.queue.claim import Claimer
from processor.queue.dispatch import Dispatcher, Outcome
from processor.queue.drain import Drainer
from processor.queue.jobs import ClaimedJob, JobQueue
from processor.queue.listen import Listener, why_not_listen
from processor.queue.recorder import Recorder
from processor.queue.statistics import StatisticsKeeper
from processor.settings import Settings
from processor.web.body_limit import BodyLimit
from processor.web.metrics import metrics
from processor.web.openapi import document
from processor.web.requests import ClaimRequest, short
from processor.web.ui import pages as ui_pages
from processor.web.ui.session import Sessions

log = structlog.get_logger("processor.web.app")

HEALTH_TIMEOUT = 1.0  # /healthz answers within this, whatever the database does


class ApiResponse(JSONResponse):
    """JSON that also carries datetimes and UUIDs."""

    def render(self, content: Any) -> bytes:
        text = json.dumps(content, default=_encode, separators=(",", ":"))
        return redact.redact(text).encode()


def _encode(value: Any) -> Any:
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, uuid.UUID):
        return str(value)
    raise TypeError(f"cannot encode {type(value).__name__}")


async def process_jobs(request: Request) -> Response:
    """Claims due jobs (never more than the free running slots), answers at once, and runs
    them. With no free slot it claims nothing and answers "busy"."""
    require_token(request)
    settings: Settings = request.app.state.settings
    ask = ClaimRequest.parse(await request.body(), settings.max_claim)
    limit, job_types, wait, drain = ask.limit, ask.job_types, ask.wait, ask.drain
    if request.app.state.stopping.is_set():
        raise HTTPException(
            503, "the processor is shutting down; nothing claimed", headers={"Retry-After": "5"}
        )
    structlog.contextvars.bind_contextvars(
        request_id=request.headers.get("x-request-id") or uuid.uuid4().hex[:12]
    )
    claim = await request.app.state.claimer.claim(limit, job_types, via="request")
    body: dict[str, Any] = {
        "claimed": [
            {"id": str(j.id), "job_type": j.job_type, "attempt": j.attempt} for j in claim.jobs
        ]
    }
    if claim.busy:
        body["message"] = (
            f"Busy: {claim.running} of {settings.max_running_jobs} jobs running; nothing claimed"
        )
        body["busy"] = True
        body["running"] = claim.running
    else:
        body["message"] = (
            f"Claimed {len(claim.jobs)} job(s)" if claim.jobs else "No jobs to process"
        )
    if claim.requeued:
        body["requeued_expired"] = claim.requeued
    if drain:
        request.app.state.drainer.request(job_types)
    if wait:
        body["outcomes"] = await _outcomes(claim.jobs, claim.tasks, request.app.state.stopping)
    return ApiResponse(body)


STILL_RUNNING = (
    "the processor is shutting down: the job goes on for up to SHUTDOWN_GRACE seconds, "
    "and is retried if it does not finish"
)


async def _outcomes(
    jobs: list[ClaimedJob], tasks: list[asyncio.Task[Outcome]], stopping: asyncio.Event
) -> list[dict[str, Any]]:
    """Each claimed job's outcome, waited for until they all end or shutdown begins; a job
    still running then is answered as running (its outcome is recorded when it ends)."""
    if tasks:
        stop = asyncio.create_task(stopping.wait())
        try:
            await asyncio.wait({*tasks, stop}, return_when=asyncio.FIRST_COMPLETED)
            while not stop.done() and not all(t.done() for t in tasks):
                await asyncio.wait(
                    {*(t for t in tasks if not t.done()), stop},
                    return_when=asyncio.FIRST_COMPLETED,
                )
        finally:
            stop.cancel()
    return [
        t.result().as_dict()
        if t.done()
        else {
            "id": str(j.id),
            "job_type": j.job_type,
            "attempt": j.attempt,
            "status": "processing",
            "error": STILL_RUNNING,
        }
        for j, t in zip(jobs, tasks, strict=True)
    ]


def begin_shutdown(app: object) -> None:
    """Called from the signal handler as shutdown begins, before the server waits for open
    requests: claiming stops, and calls waiting for outcomes are answered with what they have,
    so the wait for open requests ends at once and the running jobs get the whole grace."""
    state = getattr(app, "state", None)
    loop: asyncio.AbstractEventLoop | None = getattr(state, "loop", None)
    stopping: asyncio.Event | None = getattr(state, "stopping", None)
    if loop is not None and stopping is not None:
        loop.call_soon_threadsafe(stopping.set)


async def get_job(request: Request) -> Response:
    require_token(request)
    raw = request.path_params["job_id"]
    digits = id_digits(raw)
    if digits is None:
        raise HTTPException(400, f"job id must be {ID_RULE}, got {short(repr(raw))}")
    found = await matching_ids(request.app.state.queue.db, digits)
    if len(found) > 1:
        raise HTTPException(400, ambiguous(short(raw), found))
    job = await request.app.state.queue.get(found[0]) if found else None
    if job is None:
        raise HTTPException(404, f"no job {short(raw)}")
    job_id = job["id"]
    storage = request.app.state.handler_context.providers.storage
    job["result"] = await fresh_urls(job["result"], storage)
    job["progress"] = await fresh_urls(job["progress"], storage)
    attempts = await request.app.state.queue.db.fetch_all("job_spend", {"job_id": job_id})
    job["spend"] = {
        "calls": sum(a["calls"] for a in attempts),
        "cost_usd": round(sum(a["cost_usd"] for a in attempts), 6),
        "attempts": attempts,
    }
    if job["workflow_id"] is not None:
        nodes = await request.app.state.queue.db.fetch_all(
            "workflow_jobs", {"workflow_id": job["workflow_id"]}
        )
        job["workflow"] = [{k: v for k, v in n.items() if k != "total"} for n in nodes]
    return ApiResponse(job)


async def openapi(request: Request) -> Response:
    return ApiResponse(request.app.state.openapi)


async def healthz(request: Request) -> Response:
    try:
        async with asyncio.timeout(HEALTH_TIMEOUT):
            await request.app.state.queue.ping()
    except TimeoutError:
        return ApiResponse(
            {"status": "error", "database": f"no answer within {HEALTH_TIMEOUT:g} s"},
            status_code=503,
        )
    except DatabaseError as exc:
        return ApiResponse({"status": "error", "database": str(exc)}, status_code=503)
    problem = request.app.state.claimer.health.problem
    if problem is not None:
        return ApiResponse(
            {"status": "error", "database": "ok", "claims": problem}, status_code=503
        )
    return ApiResponse(
        {"status": "ok", "database": "ok", "running_jobs": request.app.state.dispatcher.running}
    )


async def http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    return ApiResponse({"error": exc.detail}, status_code=exc.status_code, headers=exc.headers)


async def database_error(request: Request, exc: Exception) -> Response:
    """503 with Retry-After only when the database is away; an input the database refused is
    a 4xx naming the reason, and a query that should never fail a 500."""
    assert isinstance(exc, DatabaseError)
    if exc.outage:
        log.error("database_error", error=str(exc))
        return ApiResponse(
            {"error": f"database unavailable: {exc}"}, status_code=503, headers={"Retry-After": "5"}
        )
    if exc.status >= 500:
        log.error("database_error", error=str(exc))
    return ApiResponse({"error": exc.reason}, status_code=exc.status)


routes = [
    Route("/process-jobs", process_jobs, methods=["POST"]),
    *handlers.routes,
    Route("/jobs/{job_id}", get_job, methods=["GET"]),
    Route("/healthz", healthz, methods=["GET"]),
    Route("/metrics", metrics, methods=["GET"]),
    Route("/openapi.json", openapi, methods=["GET"]),
]


def create_app(settings: Settings, http_client: httpx.AsyncClient | None = None) -> Starlette:
    """Builds the service. Pass an httpx client to control how handlers are reached (tests)."""

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        if tracing.configure():
            log.info("tracing_on", exporter="otlp/http")
        db = Database(
            settings.database_url,
            max_size=settings.db_pool_max,
            prepared=settings.prepared_statements,
        )
        await db.open()
        # Outcome writes and lease extensions get their own connections: they never wait
        # behind claims or handlers.
        outcome_db = Database(
            settings.database_url,
            max_size=3,
            application_name="processor-outcomes",
            prepared=settings.prepared_statements,
        )
        await outcome_db.open()
        client = http_client or httpx.AsyncClient(
            timeout=60.0, limits=httpx.Limits(max_connections=100, max_keepalive_connections=20)
        )
        providers = build_providers(settings.providers, client, settings.processor_url)
        queue = JobQueue(db)
        writer = Recorder(JobQueue(outcome_db), give_up_after=settings.lease_seconds)
        writer.start()
        dispatcher = Dispatcher(queue, writer, settings)
        await dispatcher.open()
        claimer = Claimer(queue, dispatcher, settings)
        drainer = Drainer(claimer, settings)
        fetcher = Fetcher(allow_private=settings.providers.allow_private_urls)
        limits = SharedLimits(db, settings.worker_id, settings.providers.limits)
        await limits.configure()
        # processor_scaling_metric divides by the slots of one processor: this one's.
        try:
            await db.fetch_all("record_slots", {"slots": settings.max_running_jobs})
        except DatabaseError as exc:  # not migrated yet (a rollout's migration job still runs)
            log.warning("slots_not_recorded", error=str(exc))
        app.state.handler_context = HandlerContext(
            db,
            providers,
            client,
            settings.providers.pack_concurrency,
            fetcher,
            settings.builtin_signing_secrets(),
            settings.providers.max_image_pixels,
            settings.providers.prices,
            limits,
        )
        app.state.settings = settings
        app.state.openapi = document(settings.max_claim)
        app.state.accepted_tokens = [t for t in (settings.token, settings.previous_token) if t]
        app.state.ui_sessions = Sessions(settings, db)
        app.state.auth_guard = FailureGuard()
        app.state.queue = queue
        app.state.dispatcher = dispatcher
        app.state.claimer = claimer
        app.state.drainer = drainer
        app.state.stopping = asyncio.Event()
        app.state.loop = asyncio.get_running_loop()

        async def stop_claiming() -> None:
            await app.state.stopping.wait()
            log.info("processor_stopping", running=dispatcher.running)
            await drainer.stop()

        background = [
            asyncio.create_task(stop_claiming(), name="stop-claiming"),
            asyncio.create_task(StatisticsKeeper(queue).run(), name="statistics"),
        ]
        if settings.run_relay:
            background.append(asyncio.create_task(Relay(settings.database_url, client).run()))
        reason = why_not_listen(settings.listen_for_jobs)
        app.state.listener = None
        if reason is None:
            listener = Listener(
                settings.listen_database_url or settings.database_url,
                lambda: drainer.request(None),
                probe=queue.notify_listeners,
            )
            app.state.listener = listener
            background.append(asyncio.create_task(listener.run(), name="listener"))
        else:
            log.info("listen_off", reason=reason)
        log.info(
            "processor_started",
            worker=settings.worker_id,
            routes=sorted(settings.routes()),
            max_running=settings.max_running_jobs,
        )
        try:
            yield
        finally:
            for task in background:
                task.cancel()
            await asyncio.gather(*background, return_exceptions=True)
            await drainer.stop()
            await dispatcher.shutdown(settings.shutdown_grace)
            await writer.stop()
            await fetcher.close()
            if http_client is None:
                await client.aclose()
            await outcome_db.close()
            await db.close()
            log.info("processor_stopped")

    app_routes: list[BaseRoute] = [*routes, *ui_pages.routes]
    if isinstance(storage := storage_for(settings.providers, settings.processor_url), LocalStorage):
        # Generated files are served by the app itself, so result URLs open in a browser.
        storage.root.mkdir(parents=True, exist_ok=True)
        app_routes.append(Mount(FILES_PREFIX, StaticFiles(directory=storage.root), name="files"))
    return Starlette(
        routes=app_routes,
        lifespan=lifespan,
        middleware=[Middleware(BodyLimit, max_bytes=settings.max_request_bytes)],
        exception_handlers={HTTPException: http_error, DatabaseError: database_error},
    )
