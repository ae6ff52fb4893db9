"""What processor_scaling_metric() costs a scaler that polls it, as the queue grows.

    .venv/bin/python bench/scaling_metric.py [--jobs 1000000] [--rounds 200]

One connection to a private PostgreSQL cluster (fsync on). For each queue, the mean and p95
wall time of `select processor_scaling_metric()` over --rounds calls, and its plan:

- empty;
- --jobs finished jobs (completed), 20 running, 100 due;
- the same plus --jobs due jobs waiting (a deep backlog: counted up to 100 processors' worth);
- the same with one job type capped and another paused.
"""

from __future__ import annotations

import argparse
import statistics
import time

import psycopg
from common import private_database

QUERY = "select processor_scaling_metric()"


def timed(conn: psycopg.Connection, rounds: int) -> tuple[float, float]:
    times = []
    for _ in range(rounds):
        started = time.perf_counter()
        conn.execute(QUERY, prepare=True).fetchone()
        times.append((time.perf_counter() - started) * 1000)
    times.sort()
    return statistics.mean(times), times[int(len(times) * 0.95) - 1]


def plan(conn: psycopg.Connection) -> str:
    """The plan of the statement inside the function that counts due jobs."""
    rows = conn.execute(
        "explain (analyze, costs off, timing off, summary off) "
        "select count(*) from (select 1 from job_queue where status = 'pending' "
        "and run_at <= now() and job_type <> all ('{}') limit 2000) d"
    ).fetchall()
    return " / ".join(r[0].strip() for r in rows if "Scan" in r[0] or "Heap" in r[0])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--jobs", type=int, default=1_000_000)
    parser.add_argument("--rounds", type=int, default=200)
    args = parser.parse_args()
    with private_database() as (cluster, _), psycopg.connect(cluster.url, autocommit=True) as c:
        print(f"PostgreSQL on port {cluster.port}; slots_per_processor 20 (the default)")

        def report(label: str) -> None:
            c.execute("vacuum analyze job_queue")
            mean, p95 = timed(c, args.rounds)
            value = c.execute(QUERY).fetchone()[0]
            print(f"  {label}: mean {mean:.3f} ms, p95 {p95:.3f} ms, value {value:g}", flush=True)
            print(f"    {plan(c)}", flush=True)

        report("empty")
        c.execute(
            "insert into job_queue (job_type, status, completed_at) "
            "select 'generate-image', 'completed', now() from generate_series(1, %s)",
            (args.jobs,),
        )
        c.execute(
            "insert into job_queue (job_type, status, locked_until, lease_token) "
            "select 'generate-image', 'processing', now() + interval '1 hour', gen_random_uuid() "
            "from generate_series(1, 20)"
        )
        c.execute(
            "insert into job_queue (job_type, user_id) "
            "select 'generate-image', 'u' || (g % 100) from generate_series(1, 100) g"
        )
        report(f"{args.jobs:,} finished, 20 running, 100 due")
        c.execute(
            "insert into job_queue (job_type, user_id) "
            "select 'generate-complete-pack', 'u' || (g %% 1000) from generate_series(1, %s) g",
            (args.jobs,),
        )
        report(f"and {args.jobs:,} more due")
        c.execute("select set_job_type_limit('generate-image', 10), pause_job_type('x')")
        report("and generate-image capped at 10")


if __name__ == "__main__":
    main()
