"""What every built-in handler shares: the call body, the endpoint wrapper that maps failures to
the HTTP answers the dispatcher understands, and the record of a job's finished assets."""

from __future__ import annotations

import asyncio
import json
import math
import uuid
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

import httpx
import structlog
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from processor import redact, signing, tracing
from processor.auth import require_token
from processor.db import Database, Row
from processor.images.fetch import Fetcher, FetchFailed, FetchRefused, FetchTooLarge
from processor.images.imaging import ImageDataError, load, probe
from processor.images.payload import ImageJob, PayloadError
from processor.providers import metering as spend
from processor.providers.errors import Permanent, ProviderError, RateLimited, Transient
from processor.providers.registry import Providers
from processor.providers.shared_limits import SharedLimits
from processor.settings import BUILTIN_ROUTES

log = structlog.get_logger("processor.images.handlers")
T = TypeVar("T")
MAX_SOURCE_BYTES = 25 * 1024 * 1024
EXTENSIONS = {"image/png": "png", "image/jpeg": "jpg", "image/webp": "webp"}
SOURCE_MIME = {"PNG": "image/png", "JPEG": "image/jpeg", "WEBP": "image/webp", "GIF": "image/gif"}


@dataclass(frozen=True)
class JobCall:
    """The body the dispatcher POSTs to a handler."""

    job_id: uuid.UUID
    job_type: str | None
    attempt: int
    lease_token: uuid.UUID
    user_id: str | None
    payload: Any
    dependencies: list[dict[str, Any]] | None = None  # what the jobs it waited for came to
    parent_id: uuid.UUID | None = None  # the job that made it a child (its files go there)

    @property
    def folder_id(self) -> uuid.UUID:
        """The job whose folder its files go in: its parent's, for a child (a pack's images
        sit together under the pack's id, as when the pack made them itself)."""
        return self.parent_id or self.job_id


@dataclass(frozen=True)
class Children:
    """A handler's answer "make these jobs, and call me again when they are finished": the
    endpoint answers 202 with them (processor.queue.verdict)."""

    jobs: list[dict[str, Any]]


@dataclass
class HandlerContext:
    db: Database
    providers: Providers
    client: httpx.AsyncClient
    pack_concurrency: int
    fetcher: Fetcher
    signing_secrets: list[str]  # the built-in handlers' own (Settings.builtin_signing_secrets)
    max_image_pixels: int = 40_000_000
    prices: Mapping[str, Mapping[str, float]] = field(default_factory=dict)
    limits: SharedLimits | None = None


class LeaseLost(Exception):
    """The job was cancelled or taken over while this handler ran: stop, spend nothing more."""


def parse_call(raw: bytes) -> JobCall:
    """The dispatcher's call body; 400 names what is wrong with anything else."""
    try:
        body = json.loads(raw)
    except RecursionError:
        raise HTTPException(400, "body nests too deeply to be read") from None
    except ValueError as exc:
        raise HTTPException(400, f"body is not valid JSON: {redact.clean(str(exc), 120)}") from None
    if not isinstance(body, dict):
        raise HTTPException(400, "body must be a JSON object with job_id, lease_token and payload")
    problems = []
    ids: dict[str, uuid.UUID | None] = {}
    for key in ("job_id", "lease_token"):
        try:
            ids[key] = uuid.UUID(body[key]) if isinstance(body.get(key), str) else None
        except ValueError:
            ids[key] = None
        if ids[key] is None:
            problems.append(f"{key} must be a UUID string")
    attempt = body.get("attempt", 1)
    if not isinstance(attempt, int) or isinstance(attempt, bool) or not 1 <= attempt <= 10_000:
        problems.append("attempt must be an integer from 1")
    user_id = body.get("user_id")
    if user_id is not None and not isinstance(user_id, str):
        problems.append("user_id must be a string or null")
    job_type = body.get("job_type")
    if job_type is not None and not isinstance(job_type, str):
        problems.append("job_type must be a string")
    if "payload" not in body:
        problems.append("payload is required")
    dependencies = body.get("dependencies")
    if dependencies is not None and not (
        isinstance(dependencies, list) and all(isinstance(d, dict) for d in dependencies)
    ):
        problems.append("dependencies must be an array of objects")
    parent_id = None
    if body.get("parent_id") is not None:
        try:
            parent_id = uuid.UUID(str(body["parent_id"]))
        except ValueError:
            problems.append("parent_id must be a UUID string")
    if problems:
        raise HTTPException(400, "; ".join(problems))
    job_id, lease_token = ids["job_id"], ids["lease_token"]
    assert job_id is not None and lease_token is not None
    return JobCall(
        job_id, job_type, attempt, lease_token, user_id, body["payload"], dependencies, parent_id
    )


def check_caller(request: Request, body: bytes, secrets: list[str]) -> bool:
    """A built-in handler takes calls signed by the dispatcher for its route, or (by hand) the
    bearer token; returns whether the call was signed."""
    header = request.headers.get(signing.HEADER)
    if header is None:
        require_token(request)
        return False
    try:
        signing.verify(
            header,
            body,
            secrets,
            path=request.url.path,
            delivery=request.headers.get(signing.DELIVERY_HEADER),
        )
    except signing.SignatureError as exc:
        log.warning("handler_call_refused", path=request.url.path, reason=str(exc))
        raise HTTPException(401, str(exc)) from None
    return True


async def use_delivery(ctx: HandlerContext, request: Request, call: JobCall) -> None:
    """A signed delivery runs at most once, on any processor sharing the database: a second
    call with the same Processor-Delivery id (a replay of a captured call, even one sent at the
    same moment) is refused with 409 before anything is spent."""
    delivery = request.headers.get(signing.DELIVERY_HEADER, "")
    row = await ctx.db.fetch_one(
        "use_delivery", {"delivery": delivery, "path": request.url.path, "job_id": call.job_id}
    )
    if not (row and row["fresh"]):
        log.warning("handler_call_replayed", path=request.url.path, delivery=delivery)
        raise HTTPException(
            409,
            f"delivery {delivery} was already run: each signed call runs once, and the "
            "processor sends a new delivery id with every attempt",
        )


def check_job_type(request: Request, call: JobCall, signed: bool) -> None:
    """A built-in handler runs only the job types routed to it: a call signed for another type
    is refused before anything is spent (a call by hand with the token may leave it out)."""
    mine = sorted(t for t, path in BUILTIN_ROUTES.items() if path == request.url.path)
    if call.job_type is None and not signed:
        return
    if call.job_type not in mine:
        raise HTTPException(
            403,
            f"{request.url.path} runs job types {', '.join(mine)}, not {call.job_type!r}",
        )


Handler = Callable[[HandlerContext, JobCall], Awaitable[Any]]


def endpoint(handler: Handler) -> Callable[[Request], Awaitable[Response]]:
    """Wraps a handler: bearer auth, the call body, and failures as 422 (never retried),
    429 + Retry-After (postponed), or 503 (retried)."""

    async def route(request: Request) -> Response:
        ctx: HandlerContext = request.app.state.handler_context
        body = await request.body()
        signed = check_caller(request, body, ctx.signing_secrets)
        call = parse_call(body)
        check_job_type(request, call, signed)
        if signed:
            await use_delivery(ctx, request, call)
        structlog.contextvars.bind_contextvars(job_id=str(call.job_id), attempt=call.attempt)
        project = call.payload.get("project_id") if isinstance(call.payload, dict) else None
        spend.current_job.set(
            spend.JobMeter(
                ctx.db,
                ctx.prices,
                call.job_id,
                call.attempt,
                call.user_id,
                project if isinstance(project, str) else None,
                ctx.limits,
            )
        )
        try:
            with tracing.handler_span(request.url.path, request.headers, call.job_id, call.attempt):
                result = await handler(ctx, call)
        except PayloadError as exc:
            return JSONResponse({"error": str(exc), "problems": exc.problems}, 422)
        except LeaseLost:
            log.warning("handler_stopped_lease_lost")
            return JSONResponse(
                {"error": "stopped: the job was cancelled or taken over while it ran"}, 409
            )
        except Permanent as exc:
            log.warning("handler_permanent_failure", error=str(exc))
            return JSONResponse({"error": str(exc)}, 422)
        except RateLimited as exc:
            wait = math.ceil(exc.retry_after) if exc.retry_after is not None else None
            log.warning("provider_rate_limited", error=str(exc), retry_after=wait)
            headers = {"Retry-After": str(wait)} if wait is not None else {}
            return JSONResponse({"error": str(exc)}, 429, headers=headers)
        except Transient as exc:
            log.warning("provider_retry", error=str(exc))
            return JSONResponse({"error": str(exc)}, 503)
        except Exception as exc:  # a bug here: say what it was, and let the job retry
            log.exception("handler_crashed")
            reason = redact.clean(f"{type(exc).__name__}: {exc}", 300)
            return JSONResponse({"error": f"internal error in the handler: {reason}"}, 500)
        if isinstance(result, Children):
            return JSONResponse({"children": result.jobs}, 202)
        return JSONResponse({"result": result})

    return route


async def load_source(ctx: HandlerContext, job: ImageJob) -> tuple[bytes, str] | None:
    """The reference photo named by the payload, checked to be an image; None without one."""
    if job.source_image_path:
        data = await ctx.providers.storage.get(job.source_image_path)
        where = f"source_image_path {job.source_image_path!r}"
    elif job.source_image_url:
        where = "source_image_url"
        try:
            fetched = await ctx.fetcher.get(job.source_image_url, MAX_SOURCE_BYTES)
        except FetchRefused:
            raise Permanent(
                "source image",
                f"{where} was refused: it must be a public http(s) address",
            ) from None
        except FetchTooLarge as exc:
            raise Permanent("source image", f"{where} is {exc}") from None
        except FetchFailed as exc:
            raise Transient("source image", f"{where} could not be fetched ({exc})") from None
        if fetched.status >= 400:
            error = Transient if fetched.status >= 500 or fetched.status == 429 else Permanent
            raise error("source image", f"{where} answered {fetched.status}")
        if fetched.status >= 300:
            raise Permanent("source image", f"{where} answered {fetched.status}")
        data = fetched.body
    else:
        return None
    try:
        fmt = await asyncio.to_thread(probe, data, ctx.max_image_pixels)
    except ImageDataError as exc:
        raise Permanent("source image", f"{where} is {exc}") from None
    return data, SOURCE_MIME.get(fmt, "image/png")


class Assets:
    """The assets a job has finished, stored and recorded one by one as they are done."""

    def __init__(self, ctx: HandlerContext, call: JobCall, project_id: str) -> None:
        self.ctx = ctx
        self.call = call
        self.project_id = project_id

    async def images(self) -> dict[str, Row]:
        rows = await self.ctx.db.fetch_all("images_for_job", {"job_id": self.call.job_id})
        return {row["slot"]: row for row in rows}

    async def store_image(
        self,
        slot: str,
        kind: str,
        data: bytes,
        mime_type: str,
        provider: str,
        model: str,
        prompt: str | None,
    ) -> Row:
        width, height = await asyncio.to_thread(_size, data)
        path = f"{self.project_id}/{self.call.folder_id}/{slot}.{EXTENSIONS.get(mime_type, 'bin')}"
        try:
            url = await self.ctx.providers.storage.put(path, data, mime_type)
        except ValueError as exc:  # a path the storage refuses: no attempt can fix it
            raise Permanent("storage", str(exc)) from None
        row = {
            "job_id": self.call.job_id,
            "project_id": self.project_id,
            "user_id": self.call.user_id,
            "kind": kind,
            "slot": slot,
            "storage_path": path,
            "url": url,
            "width": width,
            "height": height,
            "mime_type": mime_type,
            "provider": provider,
            "model": model,
            "prompt": prompt,
        }
        recorded = await self.ctx.db.fetch_one(
            "record_image", {**row, "lease_token": self.call.lease_token}
        )
        log.info("image_stored", slot=slot, provider=provider, width=width, height=height)
        if not (recorded and recorded["held"]):
            raise LeaseLost()  # kept (it was paid for), but nothing more is made
        return row

    async def progress(self, done: int, total: int, items: list[dict[str, Any]]) -> None:
        row = await self.ctx.db.fetch_one(
            "set_job_progress",
            {
                "id": self.call.job_id,
                "lease_token": self.call.lease_token,
                "progress": {"done": done, "total": total, "items": items},
            },
        )
        if not (row and row["ok"]):
            raise LeaseLost()

    async def ensure_held(self) -> None:
        """Raises LeaseLost when the job is no longer this call's to run (cancelled, or taken
        over after its lease ran out): checked before every paid provider call."""
        row = await self.ctx.db.fetch_one(
            "lease_held", {"id": self.call.job_id, "lease_token": self.call.lease_token}
        )
        if not (row and row["held"]):
            raise LeaseLost()


def _size(data: bytes) -> tuple[int, int]:
    image = load(data)
    return image.width, image.height


def public_image(row: Row) -> dict[str, Any]:
    """How an image appears in a job's result and progress."""
    return {
        k: row[k]
        for k in (
            "slot",
            "kind",
            "url",
            "storage_path",
            "width",
            "height",
            "mime_type",
            "provider",
            "model",
        )
    }


class Progress:
    """The job's progress, {"done", "total", "items"}, written after every finished item."""

    def __init__(self, assets: Assets, total: int, items: list[dict[str, Any]]) -> None:
        self.assets = assets
        self.total = total
        self.items = list(items)
        self._lock = asyncio.Lock()

    async def add(self, item: dict[str, Any]) -> None:
        async with self._lock:  # snapshots are written in order, so `done` never goes back
            self.items.append(item)
            await self.write()

    async def write(self) -> None:
        await self.assets.progress(len(self.items), self.total, self.items)


async def run_bounded(
    jobs: list[Callable[[], Awaitable[T]]], limit: int, on_done: Callable[[T], Awaitable[None]]
) -> None:
    """Runs jobs at most `limit` at a time. After a provider failure, or once the lease is
    gone, no new job starts, but the ones already running finish and are kept (they were paid
    for); then the failure (or LeaseLost) is raised."""
    gate = asyncio.Semaphore(limit)
    failures: list[ProviderError] = []
    lost: list[LeaseLost] = []

    async def one(job: Callable[[], Awaitable[T]]) -> None:
        async with gate:
            if failures or lost:
                return
            try:
                value = await job()
                await on_done(value)
            except ProviderError as exc:
                failures.append(exc)
            except LeaseLost as exc:
                lost.append(exc)

    await asyncio.gather(*(one(job) for job in jobs))
    if lost:
        raise lost[0]
    if failures:
        # A refusal or bad input decides the job; a rate limit beats a plain transient error.
        failures.sort(
            key=lambda e: 0 if isinstance(e, Permanent) else 1 if isinstance(e, RateLimited) else 2
        )
        raise failures[0]
