"""Pickup latency: from an INSERT's commit to the start of its handler call.

    .venv/bin/python bench/pickup_latency.py [--jobs 200] [--gap-ms 50] [--burst 500]
    .venv/bin/python bench/pickup_latency.py --pg-bindir /var/tmp/realpg/usr/lib/postgresql/15/bin

Every part in its own process, as in production: a private PostgreSQL cluster (fsync on),
`processor serve`, the no-op handler (bench/noop_handler.py), and an inserter that commits one
job per statement --gap-ms apart, then --burst jobs in one statement. Latency is the handler's
first sight of a job minus the moment its INSERT returned (both time.time(), one machine).

Each run is made twice: with the processor LISTENing (the default: the insert trigger's
NOTIFY wakes it) and with LISTEN_FOR_JOBS=off, where only the trigger's pg_net call does.

By default pg_net is the project's local stand-in, with `processor relay` sending its requests.
With --pg-bindir (a PostgreSQL tree holding real builds of pg_net and pg_cron >= 1.5, see the
README's benchmark section) the cluster preloads the real extensions instead, so the figures
are pg_net 0.20's and pg_cron 1.6's. No test or CI run depends on that tree.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager

import httpx
import psycopg
from common import TOKEN, private_database
from psycopg.rows import dict_row
from side_by_side import handler_process, service

from processor.ops import schedule


def insert_one_by_one(url: str, jobs: int, gap: float) -> dict[str, float]:
    """Runs in its own process, like an app: {job id: when its INSERT returned}."""
    committed: dict[str, float] = {}
    with psycopg.connect(url, autocommit=True) as conn:
        for _ in range(jobs):
            job_id = conn.execute(
                "insert into job_queue (job_type) values ('bench') returning id"
            ).fetchone()[0]
            committed[str(job_id)] = time.time()
            time.sleep(gap)
    return committed


def insert_burst(url: str, jobs: int) -> dict[str, float]:
    with psycopg.connect(url, autocommit=True) as conn:
        ids = conn.execute(
            "insert into job_queue (job_type) select 'bench' from generate_series(1, %s) "
            "returning id",
            (jobs,),
        ).fetchall()
        now = time.time()
    return {str(i): now for (i,) in ids}


def measure(url: str, handler: str, insert, *args) -> list[float]:
    httpx.post(f"{handler}/reset")
    with ProcessPoolExecutor(1) as pool:
        committed = pool.submit(insert, url, *args).result()
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        stats = httpx.get(f"{handler}/stats").json()
        if stats["jobs"] >= len(committed):
            break
        time.sleep(0.1)
    seen = httpx.get(f"{handler}/stats", params={"times": 1}).json()["first_seen"]
    missing = set(committed) - set(seen)
    assert not missing, f"{len(missing)} of {len(committed)} jobs never reached the handler"
    return sorted((seen[j] - t) * 1000 for j, t in committed.items())


def net_calls(url: str) -> int:
    with psycopg.connect(url) as conn:
        return conn.execute("select count(*) from processor_net_calls").fetchone()[0]


@contextmanager
def processor(url: str, handler: str, listen: bool):
    """`processor serve`, wired to the database as `processor schedule` does."""
    env = {"MAX_RUNNING_JOBS": "600", "LISTEN_FOR_JOBS": "on" if listen else "off"}
    with service(url, handler, **env) as (base, _):
        schedule.schedule(url, base, TOKEN, local=True)
        time.sleep(0.5)  # listening
        yield base


def pct(values: list[float], p: int) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[p - 1]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--jobs", type=int, default=200)
    parser.add_argument("--gap-ms", type=float, default=50)
    parser.add_argument("--burst", type=int, default=500)
    parser.add_argument("--pg-bindir", help="PostgreSQL bin/ of a tree with real pg_net+pg_cron")
    args = parser.parse_args()

    preload: tuple[str, ...] = ("pg_cron",)
    if args.pg_bindir:
        os.environ["PG_BINDIR"] = args.pg_bindir
        preload = ("pg_cron", "pg_net")
    with private_database(preload=preload) as (cluster, _), handler_process() as handler:
        url = cluster.url
        with psycopg.connect(url, autocommit=True, row_factory=dict_row) as conn:
            conn.execute("create extension if not exists pg_cron")
            if args.pg_bindir:
                conn.execute("create extension if not exists pg_net")
            else:
                schedule.install_standin(conn)
            versions = {
                r["extname"]: r["extversion"]
                for r in conn.execute("select extname, extversion from pg_extension")
            }
        relay = None
        if not args.pg_bindir:
            env = {**os.environ, "DATABASE_URL": url, "LOG_LEVEL": "warning"}
            relay = subprocess.Popen([sys.executable, "-m", "processor", "relay"], env=env)
        net = f"pg_net {versions['pg_net']}" if args.pg_bindir else "the local stand-in"
        print(f"PostgreSQL {cluster.port}: pg_cron {versions.get('pg_cron')}, {net}; fsync on")
        try:
            for listen in (True, False):
                path = "LISTEN/NOTIFY + pg_net" if listen else "pg_net only (LISTEN off)"
                with processor(url, handler, listen):
                    before = net_calls(url)
                    ms = measure(url, handler, insert_one_by_one, args.jobs, args.gap_ms / 1000)
                    calls = net_calls(url) - before
                    print(
                        f"  {path}: {args.jobs} inserts {args.gap_ms:g} ms apart: "
                        f"p50 {pct(ms, 50):.1f} ms, p95 {pct(ms, 95):.1f} ms, "
                        f"p99 {pct(ms, 99):.1f} ms, max {max(ms):.1f} ms; "
                        f"pg_net calls {calls}",
                        flush=True,
                    )
                    ms = measure(url, handler, insert_burst, args.burst)
                    print(
                        f"  {path}: {args.burst} jobs in one INSERT: all started within "
                        f"{max(ms):.0f} ms (p50 {pct(ms, 50):.0f} ms)",
                        flush=True,
                    )
        finally:
            if relay is not None:
                relay.terminate()
                relay.wait(timeout=30)


if __name__ == "__main__":
    main()
