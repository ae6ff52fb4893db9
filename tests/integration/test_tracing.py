"""Traces across the queue: a job enqueued with a W3C traceparent is claimed, sent to its
handler, calls its provider and records its outcome in that one trace (the SDK's in-memory
exporter); the OTLP exporter really sends spans when the environment asks for it; log lines
carry the trace id; a malformed traceparent is refused with the reason."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer

import psycopg
import pytest
import structlog
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind
from psycopg.types.json import Jsonb

from processor import tracing
from tests.support import TOKEN, enqueue, post

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT_ID = "00f067aa0ba902b7"
TRACEPARENT = f"00-{TRACE_ID}-{PARENT_ID}-01"


@pytest.fixture(scope="module")
def spans():
    """Every span this process ends, in memory (one provider per process: added to, if set)."""
    exporter = InMemorySpanExporter()
    provider = trace.get_tracer_provider()
    if not isinstance(provider, TracerProvider):
        provider = TracerProvider()
        trace.set_tracer_provider(provider)
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    assert tracing.refresh()  # the service sees the provider from its next span on
    return exporter


def hex_id(value: int, width: int) -> str:
    return format(value, f"0{width}x")


def test_one_trace_links_enqueue_claim_handler_call_provider_calls_and_outcome(
    make_service, conn, fake_gemini, spans
):
    fake, env = fake_gemini
    server = make_service(env)
    job_id = conn.execute(
        "select enqueue_job('generate-image', %s, 'user-1', p_traceparent => %s) as id",
        (Jsonb({"project_id": "p1", "product": {"name": "Mug"}}), TRACEPARENT),
    ).fetchone()["id"]
    spans.clear()
    answer = post(server, {"wait": True}).json()
    assert answer["outcomes"][0]["status"] == "completed"
    mine = [s for s in spans.get_finished_spans() if hex_id(s.context.trace_id, 32) == TRACE_ID]
    by_name = {s.name: s for s in mine}
    job = by_name["job generate-image"]
    assert hex_id(job.parent.span_id, 16) == PARENT_ID  # continues the enqueuing request
    assert job.kind == SpanKind.CONSUMER
    assert job.attributes["job.id"] == str(job_id) and job.attributes["job.outcome"] == "completed"

    def child_of(name: str, parent) -> object:
        span = by_name[name]
        assert span.parent.span_id == parent.context.span_id, name
        return span

    claim = child_of("claim", job)
    assert claim.start_time == job.start_time and claim.end_time <= job.end_time
    call = child_of("POST /process-image", job)
    assert call.kind == SpanKind.CLIENT
    handle = child_of("handle /process-image", call)  # the handler read the traceparent header
    assert handle.kind == SpanKind.SERVER
    child_of("record outcome", job)
    provider = [s for s in mine if s.name == "gemini image"]
    assert len(provider) == len(fake.calls) == 1
    attributes = provider[0].attributes
    assert attributes["gen_ai.system"] == "gemini" and attributes["gen_ai.request.model"]
    assert attributes["gen_ai.usage.output_tokens"] == 1290
    assert attributes["processor.cost_usd"] > 0
    # the provider call sits inside the handler's span
    ids = {s.context.span_id: s for s in mine}
    parent, chain = provider[0], []
    while parent.parent is not None and parent.parent.span_id in ids:
        parent = ids[parent.parent.span_id]
        chain.append(parent.name)
    assert chain[:1] == ["handle /process-image"] and chain[-1] == "job generate-image"


def test_a_job_without_a_traceparent_starts_its_own_trace(make_service, conn, spans):
    server = make_service()
    conn.execute("insert into job_queue (job_type) values ('ok')")
    spans.clear()
    post(server, {"wait": True})
    [job] = [s for s in spans.get_finished_spans() if s.name == "job ok"]
    assert job.parent is None and job.context.trace_id != int(TRACE_ID, 16)


def test_a_secret_in_a_handlers_error_never_reaches_a_span(make_service, conn, spans):
    server = make_service()
    enqueue(conn, "bad", respond={"status": 400, "text": f"bad token {TOKEN} rejected"})
    spans.clear()
    post(server, {"wait": True})
    described = [s for s in spans.get_finished_spans() if s.status.description]
    assert {s.name for s in described} == {"job bad", "POST /bad"}
    assert all("[redacted]" in s.status.description for s in described)
    assert not any(TOKEN in repr(s.to_json()) for s in spans.get_finished_spans())


def test_a_jobs_log_lines_carry_its_trace_id(make_service, conn, spans):
    from structlog.testing import capture_logs

    server = make_service()
    conn.execute("insert into job_queue (job_type, traceparent) values ('ok', %s)", (TRACEPARENT,))
    # capture_logs replaces the processors: put the trace-id one back in front of it
    with capture_logs(processors=[tracing.add_trace_ids]) as logs:
        post(server, {"wait": True})
    lines = {e["event"]: e for e in logs if e.get("job_type") == "ok"}
    assert {"job_claimed", "job_completed"} <= set(lines)
    assert {lines[name].get("trace_id") for name in ("job_claimed", "job_completed")} == {TRACE_ID}


def test_log_lines_written_in_a_span_carry_its_trace_id(spans):
    from processor.logging import configure

    configure("json")
    assert tracing.add_trace_ids in structlog.get_config()["processors"]
    with tracing.tracer.start_as_current_span("work") as span:
        event = tracing.add_trace_ids(None, "info", {"event": "x"})
    assert event["trace_id"] == hex_id(span.get_span_context().trace_id, 32)
    assert event["span_id"] == hex_id(span.get_span_context().span_id, 16)
    assert "trace_id" not in tracing.add_trace_ids(None, "info", {"event": "outside"})


@pytest.mark.parametrize(
    "bad",
    [
        "not-a-traceparent",
        f"01-{TRACE_ID}-{PARENT_ID}-01",  # only version 00 is defined
        f"00-{'0' * 32}-{PARENT_ID}-01",  # all-zero trace id
        f"00-{TRACE_ID.upper()}-{PARENT_ID}-01",
    ],
)
def test_a_malformed_traceparent_is_refused_with_the_reason(conn, bad):
    with pytest.raises(psycopg.errors.InvalidParameterValue, match="must be a W3C trace context"):
        conn.execute("select enqueue_job('ok', '{}', p_traceparent => %s)", (bad,))
    with pytest.raises(psycopg.errors.CheckViolation, match="job_queue_traceparent_format"):
        conn.execute("insert into job_queue (job_type, traceparent) values ('ok', %s)", (bad,))


class _Collector(BaseHTTPRequestHandler):
    received: list[tuple[str, str, bytes]] = []

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.received.append((self.path, self.headers["Content-Type"], body))
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


def test_the_otlp_exporter_sends_spans_when_the_environment_asks_for_it():
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
        ExportTraceServiceRequest,
    )

    collector = HTTPServer(("127.0.0.1", 0), _Collector)
    threading.Thread(target=collector.serve_forever, daemon=True).start()
    endpoint = f"http://127.0.0.1:{collector.server_port}"
    script = (
        "import json; from opentelemetry import trace; from processor import tracing\n"
        "print(json.dumps([tracing.configure({}), tracing.configure({"
        "'OTEL_EXPORTER_OTLP_ENDPOINT': 'x', 'OTEL_SDK_DISABLED': 'true'})]))\n"
        "assert tracing.configure()\n"
        "with tracing.tracer.start_as_current_span('from-a-processor'): pass\n"
        "trace.get_tracer_provider().force_flush()\n"
    )
    env = {"OTEL_EXPORTER_OTLP_ENDPOINT": endpoint, "OTEL_SERVICE_NAME": "processor-test",
           "PATH": "/usr/bin:/bin"}  # fmt: skip
    done = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=60
    )
    collector.shutdown()
    collector.server_close()
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == [False, False]  # nothing set; the SDK turned off
    [(path, content_type, body)] = _Collector.received
    assert path == "/v1/traces" and content_type == "application/x-protobuf"
    request = ExportTraceServiceRequest.FromString(body)
    [resource] = request.resource_spans
    service = {a.key: a.value.string_value for a in resource.resource.attributes}
    assert service["service.name"] == "processor-test"
    assert [s.name for s in resource.scope_spans[0].spans] == ["from-a-processor"]
