"""What the insert triggers cost an enqueue, each switched off in turn in the same run: the
payload checks (job_queue_check_row: size, depth, max_retries) and the placement in the
fair-share line (job_queue_placed_on_insert; with it off, the next claim places the rows
instead, so its cost moves to the claim rather than going away).

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
    off = {"all on": None, "checks off": "job_queue_check_row",
           "placement off": "job_queue_placed_on_insert"}  # fmt: skip
    results: dict[str, list[tuple[float, float, float]]] = {state: [] for state in off}
    with private_database() as (cluster, _), psycopg.connect(cluster.url, autocommit=True) as conn:
        for _ in range(args.repeat):
            for state, trigger in off.items():
                if trigger:
                    conn.execute(f"alter table job_queue disable trigger {trigger}")
                results[state].append(measure(conn, args.rows, args.calls))
                if trigger:
                    conn.execute(f"alter table job_queue enable trigger {trigger}")
    print(f"median of {args.repeat}; µs per job")
    print(f"{'':<14} {'bulk INSERT':>12} {'enqueue_job':>12} {'60-deep payload':>16}")
    for state, runs in results.items():
        bulk, single, deep = (statistics.median(r[i] for r in runs) for i in range(3))
        print(f"{state:<14} {bulk:>12.1f} {single:>12.0f} {deep:>16.0f}")


if __name__ == "__main__":
    main()
