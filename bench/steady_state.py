"""Steady state: a producer at a fixed share of the measured drain rate for a long run, sampled
every 30 s — does throughput hold, does the backlog stay bounded, does memory stay flat, and
what do the table and WAL grow by?

    .venv/bin/python bench/steady_state.py [--minutes 30] [--share 0.7] [--processors 1]
                                           [--groups 1]

On a private PostgreSQL cluster (fsync on, autovacuum as shipped), --processors `processor serve`
(MAX_RUNNING_JOBS=20, LISTEN on, retention as shipped) and the no-op handler, each in its own
process. First the drain rate: 20,000 jobs inserted at once, drained by the processors. Then a
producer inserts --share of that rate (every 100 ms, one statement), and a `{"drain": true}`
call goes to each processor every 10 s, as pg_cron does. Every 30 s one line: jobs completed per
second since the last sample, the backlog (due pending jobs), job_queue's dead rows, table and
index size, the WAL written since the start, and the processors' RSS.

--groups N spreads the jobs over N sellers (user_id, round robin), so fair share has N groups to
share out; with --share above 1 the backlog never empties and each sample is the service's
capacity at that minute.
"""

from __future__ import annotations

import argparse
import statistics
import threading
import time
from contextlib import ExitStack
from pathlib import Path

import httpx
import psycopg
from common import TOKEN, private_database
from side_by_side import handler_process, service

DRAIN_JOBS = 20_000
INSERT = (
    "insert into job_queue (job_type, user_id) "
    "select 'bench', case when %(groups)s > 1 then 'seller-' || (%(from)s + g) %% %(groups)s end "
    "from generate_series(1, %(n)s) g"
)


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def drain(bases: list[str]) -> None:
    for base in bases:
        httpx.post(
            f"{base}/process-jobs",
            json={"drain": True},
            headers={"Authorization": f"Bearer {TOKEN}"},
            timeout=30,
        )


def completed(conn: psycopg.Connection) -> int:
    return conn.execute("select count(*) from job_queue where status = 'completed'").fetchone()[0]


def drain_rate(conn: psycopg.Connection, bases: list[str], groups: int) -> float:
    conn.execute(INSERT, {"groups": groups, "from": 0, "n": DRAIN_JOBS})
    started = time.monotonic()
    drain(bases)
    while completed(conn) < DRAIN_JOBS:
        time.sleep(0.1)
    rate = DRAIN_JOBS / (time.monotonic() - started)
    conn.execute("truncate job_queue cascade")
    conn.execute("vacuum analyze job_queue")
    return rate


def produce(url: str, rate: float, groups: int, stop: threading.Event) -> None:
    """Inserts `rate` jobs a second, in one statement every 100 ms (carrying the remainder)."""
    with psycopg.connect(url, autocommit=True) as conn:
        started, made = time.monotonic(), 0
        while not stop.is_set():
            due = int((time.monotonic() - started) * rate) - made
            if due > 0:
                conn.execute(INSERT, {"groups": groups, "from": made, "n": due})
                made += due
            stop.wait(0.1)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--minutes", type=float, default=30)
    parser.add_argument("--share", type=float, default=0.7)
    parser.add_argument("--processors", type=int, default=1)
    parser.add_argument("--every", type=float, default=30, help="seconds between samples")
    parser.add_argument("--groups", type=int, default=1, help="sellers the jobs are spread over")
    args = parser.parse_args()
    with ExitStack() as stack:
        cluster, _ = stack.enter_context(private_database())
        handler = stack.enter_context(handler_process())
        procs = [
            stack.enter_context(service(cluster.url, handler, LISTEN_FOR_JOBS="on"))
            for _ in range(args.processors)
        ]
        bases = [base for base, _ in procs]
        conn = stack.enter_context(psycopg.connect(cluster.url, autocommit=True))
        rate = drain_rate(conn, bases, args.groups)
        target = rate * args.share
        print(
            f"drain rate {rate:,.0f} jobs/s with {args.processors} processor(s); producing "
            f"{target:,.0f} jobs/s ({args.share:.0%}) for {args.minutes:g} min over "
            f"{args.groups:,} group(s)",
            flush=True,
        )
        stop = threading.Event()
        threading.Thread(
            target=produce, args=(cluster.url, target, args.groups, stop), daemon=True
        ).start()
        wal_start = conn.execute("select pg_current_wal_lsn()").fetchone()[0]
        started = last_at = time.monotonic()
        last_done, samples = 0, []
        next_drain = started
        print(" min  jobs/s  backlog  dead rows  table MB  index MB  WAL MB  RSS MB", flush=True)
        while time.monotonic() - started < args.minutes * 60:
            now = time.monotonic()
            if now >= next_drain:
                drain(bases)
                next_drain = now + 10
            if now - last_at < args.every:
                time.sleep(min(0.5, next_drain - now if next_drain > now else 0.5))
                continue
            done = completed(conn)
            backlog = conn.execute(
                "select count(*) from job_queue where status = 'pending' and run_at <= now()"
            ).fetchone()[0]
            health = conn.execute(
                "select dead_tuples, table_bytes, index_bytes from job_queue_table_health "
                "where table_name = 'job_queue'"
            ).fetchone()
            wal = conn.execute("select pg_current_wal_lsn() - %s::pg_lsn", (wal_start,)).fetchone()[
                0
            ]
            rss = sum(rss_mb(proc.pid) for _, proc in procs)
            sample = {
                "minute": (now - started) / 60,
                "rate": (done - last_done) / (now - last_at),
                "backlog": backlog,
                "dead": health[0],
                "table_mb": health[1] / 2**20,
                "index_mb": health[2] / 2**20,
                "wal_mb": float(wal) / 2**20,
                "rss_mb": rss,
                "done": done,
            }
            samples.append(sample)
            print(
                f"{sample['minute']:4.1f} {sample['rate']:7,.0f} {backlog:8,} {health[0]:10,} "
                f"{sample['table_mb']:9.1f} {sample['index_mb']:9.1f} {sample['wal_mb']:7.0f} "
                f"{rss:7.1f}",
                flush=True,
            )
            last_done, last_at = done, now
        stop.set()
        summarize(samples, target, args.every)


def summarize(samples: list[dict[str, float]], target: float, every: float) -> None:
    window = max(1, int(300 / every))  # five minutes of samples
    first = statistics.mean(s["rate"] for s in samples[:window])
    last = statistics.mean(s["rate"] for s in samples[-window:])
    worst = max(s["backlog"] for s in samples)
    rss = [s["rss_mb"] for s in samples]
    done = samples[-1]["done"]
    end = samples[-1]
    print(
        f"throughput: first 5 min {first:,.0f} jobs/s, last 5 min {last:,.0f} ({last / first:.2f}x)"
    )
    minute = max(1, int(60 / every))
    first = statistics.mean(s["rate"] for s in samples[:minute])
    last = statistics.mean(s["rate"] for s in samples[-minute:])
    print(f"throughput: first minute {first:,.0f} jobs/s, last {last:,.0f} ({last / first:.2f}x)")
    print(f"backlog: at most {worst:,.0f} jobs = {worst / target:.1f} s of the producer's work")
    print(f"RSS: {min(rss):.1f} to {max(rss):.1f} MB ({max(rss) / min(rss) - 1:+.1%} over the run)")
    size = end["table_mb"] + end["index_mb"]
    hours = end["minute"] / 60
    print(
        f"job_queue after {done:,} jobs: table {end['table_mb']:.0f} MB + indexes "
        f"{end['index_mb']:.0f} MB = {size:.0f} MB ({size * 2**20 / done:,.0f} bytes a job; one "
        f"hour of history at this rate: {size / hours:,.0f} MB)"
    )
    print(f"WAL: {end['wal_mb'] * 2**20 / done:,.0f} bytes per job")


if __name__ == "__main__":
    main()
