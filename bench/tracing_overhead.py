"""What tracing costs a job when it is off (no OTEL_EXPORTER_OTLP_ENDPOINT): the CPU of the
tracing calls a job makes, against the processor's whole CPU per job, measured in one run.

    .venv/bin/python bench/tracing_overhead.py [--jobs 5000] [--calls 100000]

1. The processor's CPU per job: one `processor serve` (tracing off, LISTEN off) and the no-op
   handler, each in its own process, on a private PostgreSQL cluster (fsync on); --jobs no-op
   jobs inserted at once and drained; the service process's user + system CPU over the run,
   from /proc, divided by the jobs.
2. The tracing calls of one job, --calls times in this process, as the service makes them
   when tracing is off: the job span (with the claim), the handler-call span and its
   traceparent header, the outcome span, and the trace-id lookup of two log lines (the
   built-in handlers add one span per provider call; a no-op job has none).

The ratio is the share of a job's processor CPU that tracing takes when off.
"""

from __future__ import annotations

import argparse
import os
import time
import uuid
from pathlib import Path

import httpx
import psycopg
from common import TOKEN, private_database
from side_by_side import handler_process, service

from processor import tracing
from processor.queue.jobs import ClaimedJob


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def service_cpu_per_job(url: str, handler: str, jobs: int) -> float:
    with service(url, handler) as (base, proc), psycopg.connect(url, autocommit=True) as conn:
        conn.execute("truncate job_queue cascade")
        conn.execute(
            "insert into job_queue (job_type) select 'bench' from generate_series(1, %s)", (jobs,)
        )
        before = cpu_seconds(proc.pid)
        httpx.post(
            f"{base}/process-jobs",
            json={"drain": True},
            headers={"Authorization": f"Bearer {TOKEN}"},
            timeout=30,
        )
        while conn.execute("select count(*) from job_queue where status <> 'completed'").fetchone()[
            0
        ]:
            time.sleep(0.05)
        return (cpu_seconds(proc.pid) - before) / jobs


def one_jobs_tracing(job: ClaimedJob) -> None:
    """The tracing calls one job's attempt makes (processor.queue.dispatch), in order, and the
    trace-id lookup of its two log lines (claimed, completed)."""
    now = time.time_ns()
    tracing.add_trace_ids(None, "info", {"event": "job_claimed"})
    with tracing.job_span(job, (now, now)) as span:
        with tracing.call_span("http://127.0.0.1:8001/bench"):
            headers: dict[str, str] = {}
            tracing.inject(headers)
        with tracing.span("record outcome"):
            tracing.add_trace_ids(None, "info", {"event": "job_completed"})
        span.set_attribute("job.outcome", "completed")


def tracing_cpu_per_job(calls: int) -> float:
    assert not tracing.active(), "tracing must be off for this measurement"
    job = ClaimedJob(uuid.uuid4(), "bench", "{}", None, 1, 3, uuid.uuid4())
    for _ in range(1000):
        one_jobs_tracing(job)  # warm up
    started = time.process_time()
    for _ in range(calls):
        one_jobs_tracing(job)
    return (time.process_time() - started) / calls


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--jobs", type=int, default=5000)
    parser.add_argument("--calls", type=int, default=100_000)
    args = parser.parse_args()
    with private_database() as (cluster, _), handler_process() as handler:
        per_job = service_cpu_per_job(cluster.url, handler, args.jobs)
    calls = tracing_cpu_per_job(args.calls)
    print(f"processor CPU per no-op job: {per_job * 1e6:.0f} us ({args.jobs:,} jobs)")
    print(f"tracing calls per job, tracing off: {calls * 1e6:.2f} us ({args.calls:,} rounds)")
    print(f"share of the job's processor CPU: {calls / per_job:.2%}")


if __name__ == "__main__":
    main()
