"""OpenTelemetry traces across the queue, off unless configured.

A job may carry a W3C `traceparent` (job_queue.traceparent, set by the app: enqueue_job's
p_traceparent or a plain INSERT). The processor continues that trace: a `job <type>` span from
the claim to the recorded outcome, with children for the claim, the handler call (whose
`traceparent` header the handler continues) and the outcome write; the built-in handlers add a
span per provider call with its model, tokens and cost. Log lines written inside a span carry
its trace_id and span_id.

Tracing is on when OTEL_EXPORTER_OTLP_ENDPOINT (or OTEL_EXPORTER_OTLP_TRACES_ENDPOINT) is set
and OTEL_SDK_DISABLED is not true; the exporter reads the other standard OTEL_* variables itself
(headers, protocol, timeout, OTEL_SERVICE_NAME, OTEL_RESOURCE_ATTRIBUTES). Off, every span is
the API's no-op span.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator, Mapping, MutableMapping
from contextlib import AbstractContextManager, contextmanager, nullcontext
from typing import Any, Protocol
from urllib.parse import urlsplit

from opentelemetry import context, trace
from opentelemetry.trace import (
    INVALID_SPAN,
    NoOpTracerProvider,
    ProxyTracerProvider,
    Span,
    SpanKind,
    Status,
    StatusCode,
)
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

tracer = trace.get_tracer("processor")
_propagator = TraceContextTextMapPropagator()
_installed = False  # one provider per process (OpenTelemetry refuses a second)

_OFF: AbstractContextManager[Span] = nullcontext(INVALID_SPAN)  # what a span is while off

__all__ = ["Span", "SpanKind", "Status", "StatusCode", "tracer"]


_on = False  # a tracer provider is installed (OpenTelemetry never takes one back)
_looked_at = -1.0  # when active() last asked OpenTelemetry, while off (time.monotonic)
LOOK_EVERY = 1.0  # seconds: a provider the app installs itself is seen within this


def active() -> bool:
    """Whether a tracer provider is installed: by configure(), or by the app's own SDK setup
    (seen within LOOK_EVERY, or at once after refresh()). While none is, the code skips its
    tracing calls: a job pays a few of these checks (asking OpenTelemetry itself costs more,
    as it reads the environment each time)."""
    global _looked_at
    if _on:
        return True
    now = time.monotonic()
    if now - _looked_at < LOOK_EVERY:
        return False
    _looked_at = now
    return refresh()


def refresh() -> bool:
    """Looks now whether a tracer provider is installed (after installing one yourself)."""
    global _on
    provider = trace.get_tracer_provider()
    _on = not isinstance(provider, ProxyTracerProvider | NoOpTracerProvider)
    return _on


def span(name: str, **options: Any) -> AbstractContextManager[Span]:
    """A child of the current span for the block (tracer.start_as_current_span), or, while
    tracing is off, a block that does nothing and yields the invalid span."""
    if not active():
        return _OFF
    return tracer.start_as_current_span(name, **options)


def call_span(url: str) -> AbstractContextManager[Span]:
    """The span of one handler call: POST <path>, to <host>."""
    if not active():
        return _OFF
    parts = urlsplit(url)
    return tracer.start_as_current_span(
        f"POST {parts.path or '/'}",
        kind=SpanKind.CLIENT,
        attributes={"server.address": parts.hostname or ""},
    )


def handler_span(
    path: str, headers: Mapping[str, str], job_id: Any, attempt: int
) -> AbstractContextManager[Span]:
    """A handler's span for one call, continuing the caller's traceparent header."""
    if not active():
        return _OFF
    return tracer.start_as_current_span(
        f"handle {path}",
        context=incoming(headers),
        kind=SpanKind.SERVER,
        attributes={"job.id": str(job_id), "job.attempt": attempt},
    )


class TracedJob(Protocol):
    """What a job's span reads (processor.queue.jobs.ClaimedJob has it)."""

    @property
    def id(self) -> Any: ...
    @property
    def job_type(self) -> str: ...
    @property
    def attempt(self) -> int: ...
    @property
    def traceparent(self) -> str | None: ...


def job_span(job: TracedJob, claimed: tuple[int, int] | None) -> AbstractContextManager[Span]:
    """The span of one job's attempt, from its claim (start, end in time.time_ns) on,
    continuing the trace of its enqueue, with the claim as its first child."""
    if not active():
        return _OFF
    return _job_span(job, claimed)


@contextmanager
def _job_span(job: TracedJob, claimed: tuple[int, int] | None) -> Iterator[Span]:
    span = tracer.start_span(
        f"job {job.job_type}",
        context=parent_of(job.traceparent),
        kind=SpanKind.CONSUMER,
        start_time=claimed[0] if claimed else None,
        attributes={"job.id": str(job.id), "job.type": job.job_type, "job.attempt": job.attempt},
    )
    with trace.use_span(span, end_on_exit=True):
        if claimed:
            tracer.start_span("claim", start_time=claimed[0]).end(claimed[1])
        yield span


def configure(env: Mapping[str, str] | None = None) -> bool:
    """Installs the OTLP/HTTP exporter when the environment asks for it; True when it did."""
    global _installed
    env = os.environ if env is None else env
    if _installed:
        return False
    wanted = env.get("OTEL_EXPORTER_OTLP_ENDPOINT") or env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
    if not wanted or env.get("OTEL_SDK_DISABLED", "").lower() == "true":
        return False
    if env.get("OTEL_TRACES_EXPORTER", "otlp") == "none":
        return False
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import SERVICE_NAME, Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    # OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES win over the default name.
    named = {} if env.get("OTEL_SERVICE_NAME") else {SERVICE_NAME: "processor"}
    provider = TracerProvider(resource=Resource.create(named))
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    trace.set_tracer_provider(provider)
    _installed = True
    refresh()
    return True


def parent_of(traceparent: str | None) -> context.Context | None:
    """The context a job's spans continue: its traceparent, or None (a new trace)."""
    if not traceparent:
        return None
    return _propagator.extract({"traceparent": traceparent})


def incoming(headers: Mapping[str, str]) -> context.Context:
    """The context a handler continues: the caller's traceparent header, if any."""
    return _propagator.extract({"traceparent": headers.get("traceparent", "")})


def inject(headers: MutableMapping[str, str]) -> None:
    """Adds the current span's traceparent to outgoing request headers (nothing when off)."""
    if active():
        _propagator.inject(headers)


def add_trace_ids(_: Any, __: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """structlog: the trace and span id of the span a line is written in."""
    if not active():
        return event
    span_context = trace.get_current_span().get_span_context()
    if span_context.is_valid:
        event["trace_id"] = format(span_context.trace_id, "032x")
        event["span_id"] = format(span_context.span_id, "016x")
    return event
