"""What every provider call cost: the usage ledger.

Each call a built-in handler makes to an AI provider is recorded in `provider_calls`: the job
and attempt it was for, provider, model, operation, outcome, HTTP status, duration, the units
the vendor reports (tokens from Gemini's `usageMetadata` and OpenAI's `usage`, images,
remove.bg's `X-Credits-Charged`) and a cost estimated from a price table that is configuration
(PROVIDER_PRICES). Providers report units with `report(...)`; the wrappers built here time the
call, sort its outcome, and write the row. Calls outside a job (a test calling a provider
directly) are not recorded.
"""

from __future__ import annotations

import time
from collections import Counter, defaultdict
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field, fields
from typing import Any
from uuid import UUID

import structlog

from processor import redact, tracing
from processor.db import Database
from processor.errors import DatabaseError
from processor.providers import (
    BackgroundRemover,
    GeneratedImage,
    ImageGenerator,
    ImageRequest,
    TextGenerator,
)
from processor.providers.errors import Permanent, ProviderError, RateLimited
from processor.providers.shared_limits import SharedLimits
from processor.providers.usage import Call, current_call
from processor.tracing import Span, SpanKind, Status, StatusCode

log = structlog.get_logger("processor.providers.metering")


def estimate(prices: Mapping[str, Mapping[str, float]], provider: str, model: str,
             units: Mapping[str, float]) -> float:  # fmt: skip
    entry = prices.get(f"{provider}/{model}") or prices.get(f"{provider}/*") or {}
    cost = 0.0
    for unit, count in units.items():
        per = entry.get(unit, 0.0)
        cost += count * per / 1e6 if unit.endswith("tokens") else count * per
    return round(cost, 6)


@dataclass
class JobMeter:
    """Records the calls made for one attempt of one job."""

    db: Database
    prices: Mapping[str, Mapping[str, float]]
    job_id: UUID
    attempt: int
    user_id: str | None
    project_id: str | None
    limits: SharedLimits | None = None  # provider limits shared by every processor

    async def record(self, call: Call) -> float:
        """Writes the call to the ledger; returns its estimated cost."""
        cost = estimate(self.prices, call.provider, call.model, call.units())
        TOTALS[(call.provider, call.status)] += 1
        COSTS[(call.provider, call.status)] += cost
        try:
            await self.db.fetch_all(
                "record_provider_call",
                {
                    "job_id": self.job_id,
                    "attempt": self.attempt,
                    "user_id": self.user_id,
                    "project_id": self.project_id,
                    **{f.name: getattr(call, f.name) for f in fields(Call)},
                    "cost_usd": cost,
                },
            )
        except DatabaseError as exc:  # the ledger never fails the job it describes
            log.warning("provider_call_unrecorded", provider=call.provider, error=str(exc))
        return cost


current_job: ContextVar[JobMeter | None] = ContextVar("job_meter", default=None)
# This process's calls and estimated cost by (provider, outcome), for /metrics.
TOTALS: Counter[tuple[str, str]] = Counter()
COSTS: dict[tuple[str, str], float] = defaultdict(float)


@contextmanager
def _timed(call: Call) -> Iterator[Call]:
    token = current_call.set(call)
    started = time.monotonic()
    try:
        yield call
    except RateLimited as exc:
        call.status, call.error = "rate_limited", str(exc)
        raise
    except Permanent as exc:
        call.status, call.error = "permanent", str(exc)
        raise
    except ProviderError as exc:
        call.status, call.error = "transient", str(exc)
        raise
    finally:
        call.duration_ms = round((time.monotonic() - started) * 1000)
        current_call.reset(token)


CALL_TTL = 600.0  # seconds a concurrency slot is held at most (a dead processor's expire)


async def _metered(call: Call, run: Any) -> Any:
    meter = current_job.get()
    limits = meter.limits if meter is not None and call.provider != "demo" else None
    if limits is None:
        return await _recorded(meter, call, run)
    async with limits.turn(call.provider, CALL_TTL):
        try:
            return await _recorded(meter, call, run)
        except RateLimited as exc:
            if exc.retry_after:  # the vendor said how long: every processor waits that long
                await limits.pause(call.provider, exc.retry_after, str(exc))
            raise


async def _recorded(meter: JobMeter | None, call: Call, run: Any) -> Any:
    with tracing.span(f"{call.provider} {call.operation}", kind=SpanKind.CLIENT) as span:
        try:
            with _timed(call):
                return await run()
        finally:
            cost = await meter.record(call) if meter is not None else None
            _describe(span, call, cost)


def _describe(span: Span, call: Call, cost: float | None) -> None:
    """A provider call's span: what the vendor reported and what it cost (GenAI conventions)."""
    if not span.is_recording():
        return
    span.set_attributes(
        {
            "gen_ai.system": call.provider,
            "gen_ai.request.model": call.model,
            "gen_ai.operation.name": call.operation,
            "gen_ai.usage.input_tokens": call.input_tokens,
            "gen_ai.usage.output_tokens": call.output_tokens,
            "processor.images": call.images,
            "processor.call_status": call.status,
        }
    )
    if call.http_status is not None:
        span.set_attribute("http.response.status_code", call.http_status)
    if cost is not None:
        span.set_attribute("processor.cost_usd", cost)
    if call.status != "ok":
        span.set_status(Status(StatusCode.ERROR, redact.redact(call.error or call.status)))


@dataclass
class MeteredImages:
    inner: ImageGenerator
    name: str = field(init=False)
    model: str = field(init=False)

    def __post_init__(self) -> None:
        self.name, self.model = self.inner.name, self.inner.model

    async def generate(self, request: ImageRequest) -> GeneratedImage:
        operation = "edit" if request.reference is not None else "image"
        call = Call(self.name, self.model, operation)
        result: GeneratedImage = await _metered(call, lambda: self.inner.generate(request))
        return result


@dataclass
class MeteredText:
    inner: TextGenerator
    name: str = field(init=False)
    model: str = field(init=False)

    def __post_init__(self) -> None:
        self.name, self.model = self.inner.name, self.inner.model

    async def generate_json(
        self, system: str, prompt: str, schema: dict[str, Any]
    ) -> dict[str, Any]:
        call = Call(self.name, self.model, "text")
        value: dict[str, Any] = await _metered(
            call, lambda: self.inner.generate_json(system, prompt, schema)
        )
        return value


@dataclass
class MeteredBackground:
    inner: BackgroundRemover
    name: str = field(init=False)

    def __post_init__(self) -> None:
        self.name = self.inner.name

    async def remove(self, image: bytes) -> bytes:
        call = Call(self.name, "removebg", "background")
        data: bytes = await _metered(call, lambda: self.inner.remove(image))
        return data
