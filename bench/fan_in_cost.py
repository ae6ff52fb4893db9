"""What finishing a job costs the database when another job waits for it: complete_jobs in
batches, for jobs nobody waits for against the same number of children of one fan-in.

    .venv/bin/python bench/fan_in_cost.py [--jobs 4000] [--batch 20] [--rounds 2]

One connection to a private cluster (fsync on), no processor: the jobs are put in processing
by hand, then completed --batch at a time with the lease tokens, as the processor's outcome
writer does. Alternating rounds; the figure is the wall time per completed job.
"""

from __future__ import annotations

import argparse
import time

import psycopg
from common import private_database


def one_round(conn: psycopg.Connection, kind: str, jobs: int, batch: int) -> float:
    conn.execute("delete from job_queue")
    with conn.transaction():
        ids = [
            r[0]
            for r in conn.execute(
                "insert into job_queue (job_type) select 'b' from generate_series(1, %s) "
                "returning id",
                (jobs,),
            )
        ]
        if kind == "fan-in":
            conn.execute("insert into job_queue (job_type, depends_on) values ('b', %s)", (ids,))
    conn.execute(
        "update job_queue set status = 'processing', lease_token = gen_random_uuid(), "
        "locked_until = now() + interval '1 hour' where id = any (%s)",
        (ids,),
    )
    tokens = dict(conn.execute("select id, lease_token from job_queue where id = any (%s)", (ids,)))
    started = time.perf_counter()
    for i in range(0, jobs, batch):
        chunk = ids[i : i + batch]
        conn.execute(
            "select count(*) from complete_jobs(%s::uuid[], %s::uuid[], %s::jsonb[])",
            (chunk, [tokens[x] for x in chunk], [None] * len(chunk)),
        )
    return (time.perf_counter() - started) * 1e6 / jobs


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--jobs", type=int, default=4000)
    parser.add_argument("--batch", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    with private_database() as (cluster, _), psycopg.connect(cluster.url, autocommit=True) as c:
        for r in range(args.rounds):
            plain = one_round(c, "independent", args.jobs, args.batch)
            fan = one_round(c, "fan-in", args.jobs, args.batch)
            print(
                f"round {r + 1}: {plain:.0f} µs per completed job nobody waits for, "
                f"{fan:.0f} µs per child of a {args.jobs} -> 1 fan-in "
                f"(batches of {args.batch}): +{fan - plain:.0f} µs, ratio {fan / plain:.2f}"
            )


if __name__ == "__main__":
    main()
