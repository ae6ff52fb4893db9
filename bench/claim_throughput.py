"""Claim throughput of the queue's SQL on a private PostgreSQL cluster.

    .venv/bin/python bench/claim_throughput.py [--jobs 20000] [--workers 1,4,8,16] [--batch 1,10]

Fills job_queue, then N threads claim and complete every job through claim_jobs and
mark_job_completed (what /process-jobs does, minus HTTP), and reports jobs per second. Also
claims with 200,000 finished rows in the table, to show the partial index keeps the claim cheap.
"""

from __future__ import annotations

import argparse
import time

import psycopg
from common import private_database
from side_by_side import fill, threaded


def run(url: str, jobs: int, workers: int, batch: int) -> float:
    fill(url, jobs)

    def loop(conn: psycopg.Connection) -> bool:
        rows = conn.execute("select id, lease_token from claim_jobs('w', %s)", (batch,)).fetchall()
        for job_id, token in rows:
            conn.execute("select mark_job_completed(%s, %s, '{}')", (job_id, token))
        return bool(rows)

    elapsed = threaded(url, workers, loop)
    with psycopg.connect(url) as conn:
        done = conn.execute("select count(*) from job_queue where status = 'completed'")
        assert done.fetchone()[0] == jobs, "every job must be completed exactly once"
    return jobs / elapsed


def claim_latency(url: str, finished: int) -> float:
    """Mean milliseconds of one claim+complete with `finished` completed rows in the table."""
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("truncate job_queue cascade")
        conn.execute(
            "insert into job_queue (job_type, status) "
            "select 'bench', 'completed' from generate_series(1, %s)",
            (finished,),
        )
        conn.execute(
            "insert into job_queue (job_type) select 'bench' from generate_series(1, 2000)"
        )
        conn.execute("vacuum analyze job_queue")
        started = time.perf_counter()
        for _ in range(2000):
            job_id, token = conn.execute(
                "select id, lease_token from claim_jobs('w', 1)"
            ).fetchone()
            conn.execute("select mark_job_completed(%s, %s)", (job_id, token))
        return (time.perf_counter() - started) / 2000 * 1000


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--jobs", type=int, default=20000)
    parser.add_argument("--workers", default="1,4,8,16")
    parser.add_argument("--batch", default="1,10")
    args = parser.parse_args()

    with private_database() as (cluster, _):
        print(f"{args.jobs} jobs, claim + complete, fsync on")
        print(f"{'workers':>8} {'batch':>6} {'jobs/s':>10}")
        for batch in map(int, args.batch.split(",")):
            for workers in map(int, args.workers.split(",")):
                rate = run(cluster.url, args.jobs, workers, batch)
                print(f"{workers:>8} {batch:>6} {rate:>10.0f}")
        empty = claim_latency(cluster.url, 0)
        full = claim_latency(cluster.url, 200_000)
        print(
            f"one claim+complete: {empty:.2f} ms with no finished rows, "
            f"{full:.2f} ms with 200,000 (ratio {full / empty:.2f})"
        )


if __name__ == "__main__":
    main()
