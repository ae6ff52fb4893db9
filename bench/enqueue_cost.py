"""What the payload checks (the job_queue_check_row trigger: size, depth, max_retries) cost an
enqueue, with the trigger on and off in the same run.

    .venv/bin/python bench/enqueue_cost.py [--rows 20000] [--calls 2000] [--repeat 2]
"""

from __future__ import annotations

import argparse
import statistics
import time

import psycopg
from common import private_database

PAYLOAD = (
    '{"project_id": "p1", "product": {"name": "Ceramic Mug",'
    ' "features": ["Holds 350 ml", "Dishwasher safe"]}}'
)
DEEP = '{"a":' * 60 + "{}" + "}" * 60  # more brackets than the limit: the depth is walked


def measure(conn: psycopg.Connection, rows: int, calls: int) -> tuple[float, float, float]:
    conn.execute("truncate job_queue cascade")
    t = time.perf_counter()
    conn.execute(
        "insert into job_queue (job_type, payload) select 't', %s::jsonb"
        " from generate_series(1, %s)",
        (PAYLOAD, rows),
    )
    bulk = (time.perf_counter() - t) / rows
    t = time.perf_counter()
    for _ in range(calls):
        conn.execute("select enqueue_job('t', %s::jsonb)", (PAYLOAD,))
    single = (time.perf_counter() - t) / calls
    t = time.perf_counter()
    for _ in range(calls // 4):
        conn.execute("select enqueue_job('t', %s::jsonb)", (DEEP,))
    deep = (time.perf_counter() - t) / (calls // 4)
    return bulk * 1e6, single * 1e6, deep * 1e6


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=20000)
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    results: dict[str, list[tuple[float, float, float]]] = {"on": [], "off": []}
    with private_database() as (cluster, _), psycopg.connect(cluster.url, autocommit=True) as conn:
        for _ in range(args.repeat):
            for state in ("on", "off"):
                verb = "enable" if state == "on" else "disable"
                conn.execute(f"alter table job_queue {verb} trigger job_queue_check_row")
                results[state].append(measure(conn, args.rows, args.calls))
        conn.execute("alter table job_queue enable trigger job_queue_check_row")
    print(f"median of {args.repeat}; µs per job")
    print(f"{'checks':<7} {'bulk INSERT':>12} {'enqueue_job':>12} {'60-deep payload':>16}")
    for state, runs in results.items():
        bulk, single, deep = (statistics.median(r[i] for r in runs) for i in range(3))
        print(f"{state:<7} {bulk:>12.1f} {single:>12.0f} {deep:>16.0f}")


if __name__ == "__main__":
    main()
