"""Where a batched fair claim's cost goes: backend CPU per job with fair share on and off, in
alternating rounds, and how the queue's indexes grow between autovacuum passes.

    .venv/bin/python bench/fair_claim_cpu.py [--rounds 4] [--seconds 4] [--minute 60]

One connection to a private PostgreSQL cluster (fsync on), 100,000 due jobs in 1,000 groups,
claimed 50 at a time and completed at once (bench/fair_claims.py's batched loop). Each round
runs fair share on, then off, on a fresh queue; the figures are jobs per second (wall time) and
the backend's user + system CPU per job, from /proc. CPU is steadier than wall time on a shared
machine, but still moves between rounds: read the ratios round by round.

Then --minute seconds of fair-share claims on one queue of 300,000 jobs, sampled every 5 s:
jobs per second, job_queue's dead rows and the size of the index fair claims read
(job_queue_turn_idx) and of the one claims with fair share off read (job_queue_claim_idx).
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path

import psycopg
from common import private_database
from fair_claims import CLAIM, COMPLETE, fill


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def batched(conn: psycopg.Connection, seconds: float) -> tuple[float, float]:
    """(jobs per second, backend CPU µs per job) of 50-job claims and completions."""
    pid = conn.info.backend_pid
    done, cpu, started = 0, cpu_seconds(pid), time.perf_counter()
    while time.perf_counter() - started < seconds:
        rows = conn.execute(CLAIM, (50, None), prepare=True).fetchall()
        conn.execute(
            COMPLETE, ([r[0] for r in rows], [r[1] for r in rows], [None] * len(rows)), prepare=True
        )
        done += len(rows)
    return done / (time.perf_counter() - started), (cpu_seconds(pid) - cpu) / done * 1e6


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=4)
    parser.add_argument("--minute", type=float, default=60)
    args = parser.parse_args()
    with private_database() as (cluster, _):
        setup = psycopg.connect(cluster.url, autocommit=True)
        print("round  on jobs/s  off jobs/s  on/off   on CPU/job  off CPU/job  off/on")
        ratios = []
        for round_ in range(1, args.rounds + 1):
            result = {}
            for fair in (True, False):
                setup.execute("truncate job_queue cascade")
                setup.execute("vacuum job_queue")
                setup.execute("update job_queue_settings set fair_share = %s", (fair,))
                fill(setup, 100_000, 1000, "a")
                with psycopg.connect(cluster.url, autocommit=True) as conn:  # a fresh backend
                    result[fair] = batched(conn, args.seconds)
            (on, on_cpu), (off, off_cpu) = result[True], result[False]
            ratios.append(on / off)
            print(
                f"{round_:5}  {on:9,.0f}  {off:10,.0f}  {on / off:6.2f}   {on_cpu:7.0f} µs"
                f"  {off_cpu:8.0f} µs  {off_cpu / on_cpu:6.2f}",
                flush=True,
            )
        print(f"median on/off (wall): {statistics.median(ratios):.2f}")

        setup.execute("truncate job_queue cascade")
        setup.execute("vacuum job_queue")
        setup.execute("update job_queue_settings set fair_share = true")
        fill(setup, 300_000, 1000, "a")
        print("\n  s  jobs/s  dead rows  turn index pages  claim index pages", flush=True)
        with psycopg.connect(cluster.url, autocommit=True) as conn:
            for step in range(int(args.minute // 5)):
                rate, _ = batched(conn, 5)
                dead, pages, plain = setup.execute(
                    "select n_dead_tup, pg_relation_size('job_queue_turn_idx') / 8192, "
                    "pg_relation_size('job_queue_claim_idx') / 8192 "
                    "from pg_stat_user_tables where relname = 'job_queue'"
                ).fetchone()
                print(
                    f"{(step + 1) * 5:3}  {rate:6,.0f}  {dead:9,}  {pages:16,}  {plain:17,}",
                    flush=True,
                )


if __name__ == "__main__":
    main()
