"""What placing many waiting jobs at once costs as their number grows: resuming a paused type,
and removing a type's cap (both put the type's jobs back in line from the frontier, in one
transaction). Each size runs on a fresh table, the jobs spread over one group per ten jobs,
beside as many jobs of another type in line. Linear placement gives a flat time per job.

    .venv/bin/python bench/placement_at_scale.py [--sizes 10000,20000,40000,100000]
"""

from __future__ import annotations

import argparse
import time

import psycopg
from common import private_database


def timed(conn: psycopg.Connection, statement: str) -> float:
    started = time.perf_counter()
    conn.execute(statement)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", default="10000,20000,40000,100000")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    print(f"{'jobs':>8} {'resume s':>9} {'µs/job':>7} {'cap off s':>10} {'µs/job':>7}")
    with private_database() as (cluster, _), psycopg.connect(cluster.url, autocommit=True) as conn:
        for n in sizes:
            conn.execute("truncate job_queue cascade")
            conn.execute("delete from job_type_limits")
            conn.execute(
                "insert into job_queue (job_type, user_id) "
                "select 'other', 'seller-' || g %% %s from generate_series(1, %s) g",
                (n // 10, n),
            )
            conn.execute("select pause_job_type('pack')")
            conn.execute(
                "insert into job_queue (job_type, user_id) "
                "select 'pack', 'seller-' || g %% %s from generate_series(1, %s) g",
                (n // 10, n),
            )
            conn.execute("vacuum analyze job_queue")
            resume = timed(conn, "select resume_job_type('pack')")
            conn.execute("select set_job_type_limit('pack', 1)")
            cap_off = timed(conn, "select set_job_type_limit('pack', null)")
            print(f"{n:>8} {resume:>9.2f} {resume / n * 1e6:>7.0f} {cap_off:>10.2f} "
                  f"{cap_off / n * 1e6:>7.0f}", flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
