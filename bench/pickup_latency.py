"""Pickup latency of the insert path: from an INSERT's commit to the start of its handler call.

    .venv/bin/python bench/pickup_latency.py [--jobs 200] [--gap-ms 50]

A private cluster (fsync on), the local pg_net stand-in and its relay inside the processor, and
a local handler that notes when each job arrives. Another process inserts jobs one statement
(one commit) at a time, --gap-ms apart, then again back to back; each latency is the handler's
arrival time minus the moment the INSERT returned, on the system's monotonic clock.
"""

from __future__ import annotations

import argparse
import statistics
import time
from concurrent.futures import ProcessPoolExecutor

import psycopg
from common import TOKEN, private_database
from psycopg.rows import dict_row

from processor import schedule
from processor.app import create_app
from processor.logging import configure
from processor.pgcluster import free_port
from processor.settings import Settings
from tests.support import ScriptedHandler, ThreadedServer


def insert_jobs(url: str, jobs: int, gap: float) -> dict[str, float]:
    """Runs in its own process, like an app would: {job id: when its INSERT returned}."""
    committed: dict[str, float] = {}
    with psycopg.connect(url, autocommit=True) as conn:
        for _ in range(jobs):
            job_id = conn.execute(
                "insert into job_queue (job_type) values ('bench') returning id"
            ).fetchone()[0]
            committed[str(job_id)] = time.monotonic()  # CLOCK_MONOTONIC: same across processes
            if gap:
                time.sleep(gap)
    return committed


def measure(url: str, handler: ScriptedHandler, jobs: int, gap: float) -> list[float]:
    handler.reset()
    with ProcessPoolExecutor(1) as pool:
        committed = pool.submit(insert_jobs, url, jobs, gap).result()
    deadline = time.monotonic() + 60
    while len(handler.calls) < jobs and time.monotonic() < deadline:
        time.sleep(0.05)
    started = {c.job_id: c.started for c in handler.calls}
    assert len(started) == jobs, f"only {len(started)} of {jobs} jobs reached the handler"
    return sorted((started[j] - t) * 1000 for j, t in committed.items())


def net_calls(url: str) -> int:
    with psycopg.connect(url) as conn:
        return conn.execute("select count(*) from net._http_response").fetchone()[0]


def report(label: str, ms: list[float], calls: int) -> None:
    q = statistics.quantiles(ms, n=100)
    print(
        f"{label:<28} n={len(ms):<4} p50={q[49]:7.1f} ms  p95={q[94]:7.1f} ms  "
        f"max={max(ms):7.1f} ms  pg_net calls={calls}"
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--jobs", type=int, default=200)
    parser.add_argument("--gap-ms", type=float, default=50)
    args = parser.parse_args()
    configure("console", "warning")

    handler = ScriptedHandler()
    port = free_port()
    with private_database() as (cluster, _), ThreadedServer(handler.app()) as handlers:
        env = {
            "DATABASE_URL": cluster.url,
            "PROCESSOR_TOKEN": TOKEN,
            "PROCESSOR_URL": f"http://127.0.0.1:{port}",
            "LOG_LEVEL": "warning",
            "JOB_ROUTES": f'{{"bench": "{handlers.url}/bench"}}',
        }
        settings = Settings.from_env(env, run_relay=True)
        with psycopg.connect(cluster.url, autocommit=True, row_factory=dict_row) as conn:
            schedule.install_standin(conn)
            schedule.configure_endpoint(conn, settings.processor_url, TOKEN)
        with ThreadedServer(create_app(settings), port):
            time.sleep(0.5)  # the relay is listening
            for label, gap in (
                (f"one insert per {args.gap_ms:g} ms", args.gap_ms / 1000),
                ("back-to-back inserts", 0.0),
            ):
                before = net_calls(cluster.url)
                latencies = measure(cluster.url, handler, args.jobs, gap)
                report(label, latencies, net_calls(cluster.url) - before)


if __name__ == "__main__":
    main()
