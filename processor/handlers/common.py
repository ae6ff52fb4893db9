"""What every built-in handler shares: the call body, the endpoint wrapper that maps failures to
the HTTP answers the dispatcher understands, and the record of a job's finished assets."""

from __future__ import annotations

import asyncio
import json
import math
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import httpx
import structlog
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from processor.auth import require_token
from processor.db import Database, Row
from processor.handlers.payload import ImageJob, PayloadError
from processor.imaging import ImageDataError, load
from processor.providers.errors import Permanent, ProviderError, RateLimited, Transient, network
from processor.providers.registry import Providers

log = structlog.get_logger("processor.handlers")
T = TypeVar("T")
MAX_SOURCE_BYTES = 25 * 1024 * 1024
EXTENSIONS = {"image/png": "png", "image/jpeg": "jpg", "image/webp": "webp"}
SOURCE_MIME = {"PNG": "image/png", "JPEG": "image/jpeg", "WEBP": "image/webp", "GIF": "image/gif"}


@dataclass(frozen=True)
class JobCall:
    """The body the dispatcher POSTs to a handler."""

    job_id: uuid.UUID
    attempt: int
    lease_token: uuid.UUID
    user_id: str | None
    payload: Any


@dataclass
class HandlerContext:
    db: Database
    providers: Providers
    client: httpx.AsyncClient
    pack_concurrency: int


def parse_call(raw: bytes) -> JobCall:
    try:
        body = json.loads(raw)
        return JobCall(
            uuid.UUID(body["job_id"]),
            int(body.get("attempt", 1)),
            uuid.UUID(body["lease_token"]),
            body.get("user_id"),
            body["payload"],
        )
    except (ValueError, KeyError, TypeError) as exc:
        raise HTTPException(
            400,
            f"body must be JSON with job_id, lease_token and payload ({type(exc).__name__}: {exc})",
        ) from None


Handler = Callable[[HandlerContext, JobCall], Awaitable[Any]]


def endpoint(handler: Handler) -> Callable[[Request], Awaitable[Response]]:
    """Wraps a handler: bearer auth, the call body, and failures as 422 (never retried),
    429 + Retry-After (postponed), or 503 (retried)."""

    async def route(request: Request) -> Response:
        require_token(request)
        call = parse_call(await request.body())
        structlog.contextvars.bind_contextvars(job_id=str(call.job_id), attempt=call.attempt)
        try:
            result = await handler(request.app.state.handler_context, call)
        except PayloadError as exc:
            return JSONResponse({"error": str(exc), "problems": exc.problems}, 422)
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
            async with ctx.client.stream(
                "GET", job.source_image_url, timeout=30, follow_redirects=True
            ) as response:
                if response.status_code >= 400:
                    error = Transient if response.status_code >= 500 else Permanent
                    raise error("source image", f"{where} answered {response.status_code}")
                chunks, size = [], 0
                async for chunk in response.aiter_bytes():
                    size += len(chunk)
                    if size > MAX_SOURCE_BYTES:
                        raise Permanent("source image", f"{where} is larger than 25 MB")
                    chunks.append(chunk)
                data = b"".join(chunks)
        except httpx.HTTPError as exc:
            raise network("source image", exc) from exc
    else:
        return None
    try:
        image = load(data)
    except ImageDataError as exc:
        raise Permanent("source image", f"{where} is {exc}") from None
    return data, SOURCE_MIME.get(image.format or "", "image/png")


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
        image = load(data)
        path = f"{self.project_id}/{self.call.job_id}/{slot}.{EXTENSIONS.get(mime_type, 'bin')}"
        url = await self.ctx.providers.storage.put(path, data, mime_type)
        row = {
            "job_id": self.call.job_id,
            "project_id": self.project_id,
            "user_id": self.call.user_id,
            "kind": kind,
            "slot": slot,
            "storage_path": path,
            "url": url,
            "width": image.width,
            "height": image.height,
            "mime_type": mime_type,
            "provider": provider,
            "model": model,
            "prompt": prompt,
        }
        await self.ctx.db.fetch_all("record_image", row)
        log.info(
            "image_stored", slot=slot, provider=provider, width=image.width, height=image.height
        )
        return row

    async def progress(self, done: int, total: int, items: list[dict[str, Any]]) -> None:
        await self.ctx.db.fetch_all(
            "set_progress",
            {
                "id": self.call.job_id,
                "lease_token": self.call.lease_token,
                "progress": {"done": done, "total": total, "items": items},
            },
        )


def public_image(row: Row) -> dict[str, Any]:
    """How an image appears in a job's result and progress."""
    return {
        k: row[k]
        for k in ("slot", "kind", "url", "width", "height", "mime_type", "provider", "model")
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
    """Runs jobs at most `limit` at a time. After a provider failure no new job starts, but the
    ones already running finish and are kept (they were paid for); then the failure is raised."""
    gate = asyncio.Semaphore(limit)
    failures: list[ProviderError] = []

    async def one(job: Callable[[], Awaitable[T]]) -> None:
        async with gate:
            if failures:
                return
            try:
                value = await job()
            except ProviderError as exc:
                failures.append(exc)
                return
            await on_done(value)

    await asyncio.gather(*(one(job) for job in jobs))
    if failures:
        # A refusal or bad input decides the job; a rate limit beats a plain transient error.
        failures.sort(
            key=lambda e: 0 if isinstance(e, Permanent) else 1 if isinstance(e, RateLimited) else 2
        )
        raise failures[0]
