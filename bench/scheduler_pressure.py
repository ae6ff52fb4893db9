"""What a claim costs as the number of groups grows, beside a capped or paused type, and behind
a claim transaction left open (issue 24's cases), as ratios to the same claim with 10 groups.

    .venv/bin/python bench/scheduler_pressure.py [--rounds 1000] [--drain 100000]

A private PostgreSQL cluster (fsync on); each case in a fresh copy of a migrated database,
vacuumed and analysed after it is filled, then warmed with 100 claims (the first claims after
a cap is set hold the groups at it).
Each figure is the median wall time of one `claim_jobs('w', 10)` plus the completion of what
it took, over --rounds rounds, with 10 claimable jobs inserted (untimed) before each round.
The cases take their rounds in turns, 50 at a time, so that the machine's slow and fast
moments fall on all of them alike.

- 10 groups: 10,000 due jobs in 10 groups (the baseline);
- 10,000 groups / 100,000 groups: one job type, each group its own key;
- 10,000 groups of a capped type: 20,000 jobs of type `capped` in 10,000 groups, the type at
  its cap (5 running), beside the 10-group baseline's jobs;
- a paused type with 100,000 jobs waiting: type `paused` paused before its jobs arrive, beside
  the baseline's jobs.

Then the drain: --drain jobs in one group, and --drain jobs each in its own group, claimed 50 at
a time and completed, in seconds. Then 4 claimer processes for 5 s each, with and without a
fifth session holding `BEGIN; SELECT claim_jobs('x', 1)` open in a group that keeps receiving
jobs, in jobs per second.
"""

from __future__ import annotations

import argparse
import multiprocessing
import statistics
import time
import uuid

import psycopg
from common import private_database

from processor.ops.migrate import migrate

CLAIM = "select id, lease_token from claim_jobs('w', %s)"
COMPLETE = "select complete_jobs(%s::uuid[], %s::uuid[], %s::jsonb[])"


def fill(conn, jobs: int, groups: int, job_type: str = "a") -> None:
    conn.execute(
        "insert into job_queue (job_type, user_id, run_at) "
        "select %s, %s || (g %% %s), now() - interval '1 hour' from generate_series(1, %s) g",
        (job_type, job_type, groups, jobs),
    )


def claim_and_complete(conn, n: int) -> int:
    rows = conn.execute(CLAIM, (n,)).fetchall()
    if rows:
        conn.execute(COMPLETE, ([r[0] for r in rows], [r[1] for r in rows], [None] * len(rows)))
    return len(rows)


def warm(conn) -> None:
    for _ in range(100):
        claim_and_complete(conn, 1)


def per_claim(conn, rounds: int) -> list[float]:
    times = []
    for _ in range(rounds):
        conn.execute(
            "insert into job_queue (job_type, user_id) select 'a', 'a' || g "
            "from generate_series(1, 10) g"
        )
        began = time.perf_counter()
        claim_and_complete(conn, 10)
        times.append(time.perf_counter() - began)
    return times


TEMPLATE = "scheduler_template"  # not "processor": pg_cron's launcher stays connected to it


def fresh(cluster, name: str):
    cluster.create_database(name, template=TEMPLATE)
    return psycopg.connect(cluster.url_for(name), autocommit=True)


BLOCK = 50  # rounds a case takes before the next case's turn


def cases_in_turns(cluster, rounds: int, setups: dict) -> dict[str, float]:
    """Each case's median seconds per claim, the cases measured in alternating blocks."""
    conns, names = {}, []
    try:
        for label, setup in setups.items():
            names.append(f"case_{uuid.uuid4().hex[:8]}")
            conns[label] = conn = fresh(cluster, names[-1])
            setup(conn)
            conn.execute("vacuum analyze")
            warm(conn)
        times: dict[str, list[float]] = {label: [] for label in setups}
        for block in range(0, rounds, BLOCK):
            for label, conn in conns.items():
                times[label] += per_claim(conn, min(BLOCK, rounds - block))
    finally:
        for conn in conns.values():
            conn.close()
        for name in names:
            cluster.drop_database(name)
    return {label: statistics.median(t) for label, t in times.items()}


def drain(cluster, jobs: int, groups: int) -> float:
    name = f"drain_{uuid.uuid4().hex[:8]}"
    with fresh(cluster, name) as conn:
        fill(conn, jobs, groups)
        conn.execute("vacuum analyze")
        began = time.perf_counter()
        while claim_and_complete(conn, 50):
            pass
        seconds = time.perf_counter() - began
        left = conn.execute("select count(*) from job_queue where status = 'pending'").fetchone()
    cluster.drop_database(name)
    assert left[0] == 0, left
    return seconds


def claimer(url: str, seconds: float, out) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        done, stop = 0, time.monotonic() + seconds
        while time.monotonic() < stop:
            done += claim_and_complete(conn, 1)
        out.put(done)


def throughput(url: str, seconds: float, hold: bool) -> float:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("insert into job_queue (job_type, user_id) values ('a', 'held')")
    holder = psycopg.connect(url)
    if hold:  # BEGIN is implicit and never ends: the job it took from group 'held' stays locked
        assert holder.execute("select user_id from claim_jobs('x', 1)").fetchone()[0] == "held"
    with psycopg.connect(url, autocommit=True) as conn:
        fill(conn, 200_000, 50)
    out: multiprocessing.Queue = multiprocessing.Queue()
    procs = [multiprocessing.Process(target=claimer, args=(url, seconds, out)) for _ in range(4)]
    for p in procs:
        p.start()
    with psycopg.connect(url, autocommit=True) as feeder:
        stop = time.monotonic() + seconds
        while time.monotonic() < stop:  # a trickle of inserts into that group
            feeder.execute("insert into job_queue (job_type, user_id) values ('a', 'held')")
            time.sleep(0.05)
    for p in procs:
        p.join()
    holder.rollback()
    holder.close()
    return sum(out.get() for _ in procs) / seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=1000)
    parser.add_argument("--drain", type=int, default=100_000)
    args = parser.parse_args()
    with private_database() as (cluster, _):
        cluster.create_database(TEMPLATE)
        migrate(cluster.url_for(TEMPLATE))

        def capped(conn):
            fill(conn, 10_000, 10)
            fill(conn, 20_000, 10_000, "capped")
            conn.execute("select set_job_type_limit('capped', 5)")
            conn.execute("select claim_jobs('holder', 5, '{capped}')")

        def paused(conn):
            fill(conn, 10_000, 10)
            conn.execute("select pause_job_type('paused')")
            fill(conn, 100_000, 100_000, "paused")

        cases = {
            "10 groups": lambda c: fill(c, 10_000, 10),
            "10,000 groups": lambda c: fill(c, 100_000, 10_000),
            "100,000 groups": lambda c: fill(c, 200_000, 100_000),
            "10,000 groups of a capped type (at its cap)": capped,
            "a paused type with 100,000 jobs waiting": paused,
        }
        results = cases_in_turns(cluster, args.rounds, cases)
        base = results["10 groups"]
        print(f"claim_jobs('w', 10) + complete, median of {args.rounds} rounds")
        print("| case | ms per claim | vs 10 groups |")
        print("| --- | ---: | ---: |")
        for label, seconds in results.items():
            print(f"| {label} | {seconds * 1000:.2f} | {seconds / base:.2f} |")

        one = drain(cluster, args.drain, 1)
        many = drain(cluster, args.drain, args.drain)
        print(f"\ndrain of {args.drain:,} jobs, 50 per claim: one group {one:.1f} s, "
              f"{args.drain:,} groups {many:.1f} s ({many / one:.2f}x)")  # fmt: skip

        rates = {}
        for hold in (False, True):
            name = f"hold_{uuid.uuid4().hex[:8]}"
            cluster.create_database(name, template=TEMPLATE)
            rates[hold] = throughput(cluster.url_for(name), 5.0, hold)
            cluster.drop_database(name)
        print(f"\n4 claimers, one job per claim: {rates[False]:,.0f} jobs/s; with a claim "
              f"transaction held open in a group receiving jobs: {rates[True]:,.0f} jobs/s "
              f"({rates[True] / rates[False]:.2f}x)")  # fmt: skip


if __name__ == "__main__":
    main()
