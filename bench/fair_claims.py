"""What fair share, caps and pause cost a claim, and what skipped work costs it.

    .venv/bin/python bench/fair_claims.py [--jobs 1000000] [--rounds 300]

One connection to a private PostgreSQL cluster (fsync on), statements prepared. Each figure is
the mean wall time of one `claim_jobs('w', 1, …)` plus the completion of what it claimed, over
--rounds rounds, with one claimable job inserted (untimed) before each round:

- empty: nothing else in the queue;
- another type: --jobs due jobs of type b in 1,000 groups, the claim asking for type a;
- paused: the same jobs, type b paused, the claim asking for any type;
- groups at cap: the same jobs, every group capped at 0 running ('*') except the claimable
  job's own;
- 10,000 groups: --jobs due jobs of one type in 10,000 groups, no limits, claim any.

Then the batched claim (50 at a time, completed at once) over 1,000 groups holding 100,000 due
jobs, in jobs per second, with job_queue_settings.fair_share on and off.
"""

from __future__ import annotations

import argparse
import statistics
import time

import psycopg
from common import private_database

CLAIM = "select id, lease_token from claim_jobs('w', %s, %s::text[])"
COMPLETE = "select complete_jobs(%s::uuid[], %s::uuid[], %s::jsonb[])"


def fill(conn: psycopg.Connection, jobs: int, groups: int, job_type: str) -> None:
    conn.execute(
        "insert into job_queue (job_type, user_id, run_at) "
        "select %s, 'g' || (g %% %s), now() - interval '1 hour' "
        "from generate_series(1, %s) g",
        (job_type, groups, jobs),
    )
    conn.execute("vacuum analyze job_queue")


def one_claims(conn: psycopg.Connection, rounds: int, job_types: list[str] | None) -> float:
    """Mean ms of one claim plus its completion; a claimable job is added before each."""
    times = []
    for _ in range(rounds):
        conn.execute("insert into job_queue (job_type, user_id) values ('a', 'me')")
        started = time.perf_counter()
        rows = conn.execute(CLAIM, (1, job_types), prepare=True).fetchall()
        conn.execute(
            COMPLETE, ([r[0] for r in rows], [r[1] for r in rows], [None] * len(rows)), prepare=True
        )
        times.append(time.perf_counter() - started)
        assert rows, "the claim found nothing"
    return statistics.mean(times) * 1000


def batched(conn: psycopg.Connection, seconds: float) -> float:
    """Jobs per second claimed 50 at a time and completed at once, for `seconds`."""
    done = 0
    started = time.perf_counter()
    while time.perf_counter() - started < seconds:
        rows = conn.execute(CLAIM, (50, None), prepare=True).fetchall()
        conn.execute(
            COMPLETE, ([r[0] for r in rows], [r[1] for r in rows], [None] * len(rows)), prepare=True
        )
        done += len(rows)
    return done / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--jobs", type=int, default=1_000_000)
    parser.add_argument("--rounds", type=int, default=300)
    args = parser.parse_args()
    with private_database() as (cluster, _), psycopg.connect(cluster.url, autocommit=True) as c:
        print(f"PostgreSQL on port {cluster.port}, fsync on; {args.jobs:,} jobs where named")
        empty = one_claims(c, args.rounds, ["a"])
        print(f"  empty queue: {empty:.2f} ms", flush=True)
        fill(c, args.jobs, 1000, "b")
        ms = one_claims(c, args.rounds, ["a"])
        print(f"  another type (1,000 groups): {ms:.2f} ms, {ms / empty:.2f}x empty", flush=True)
        c.execute("select pause_job_type('b')")
        ms = one_claims(c, args.rounds, None)
        print(f"  a paused type: {ms:.2f} ms, {ms / empty:.2f}x empty", flush=True)
        c.execute("select resume_job_type('b')")
        c.execute("select set_concurrency_limit('*', 0), set_concurrency_limit('me', null)")
        ms = one_claims(c, args.rounds, None)
        print(f"  groups at their cap: {ms:.2f} ms, {ms / empty:.2f}x empty", flush=True)
        c.execute("delete from job_concurrency_limits")
        c.execute("truncate job_queue cascade")
        fill(c, args.jobs, 10_000, "a")
        ms = one_claims(c, args.rounds, None)
        print(f"  10,000 groups: {ms:.2f} ms, {ms / empty:.2f}x empty", flush=True)

        rates = {}
        for fair in (True, False, True, False):
            c.execute("truncate job_queue cascade")
            c.execute("update job_queue_settings set fair_share = %s", (fair,))
            fill(c, 100_000, 1000, "a")
            rates.setdefault(fair, []).append(batched(c, 5))
        on, off = statistics.mean(rates[True]), statistics.mean(rates[False])
        print(
            f"  batched, 1,000 groups, 100,000 due: fair share on {on:,.0f} jobs/s, "
            f"off {off:,.0f} jobs/s, on/off {on / off:.2f}",
            flush=True,
        )


if __name__ == "__main__":
    main()
