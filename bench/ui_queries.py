"""The status page's queries on a big table: one page of the job list under each filter (first
page, and the page after 20 pages of keyset paging), and the overview's queries, with the
index each list query uses.

    .venv/bin/python bench/ui_queries.py [--jobs 1000000] [--repeat 5]
"""

from __future__ import annotations

import argparse
import statistics
import time

import psycopg
from common import private_database
from psycopg import sql
from psycopg.rows import dict_row

from processor.sql import query

FILTERS = {
    "no filter": {},
    "status = failed (1 in 50)": {"status": "failed"},
    "type = t3 (1 in 10)": {"job_type": "t3"},
    "user = u7 (1 in 1,000)": {"user_id": "u7"},
    "project = p7 (1 in 1,000)": {"project_id": "p7"},
}
BLANK = {"status": None, "job_type": None, "user_id": None, "project_id": None,
         "before_at": None, "before_id": None, "limit": 51}  # fmt: skip


def fill(conn: psycopg.Connection, jobs: int) -> None:
    conn.execute("alter table job_queue disable trigger job_queue_check_row")
    conn.execute(
        """insert into job_queue (job_type, status, user_id, payload, created_at, completed_at,
                                  processed_at)
           select 't' || (g %% 10),
                  case when g %% 50 = 0 then 'failed' when g %% 50 = 1 then 'pending'
                       else 'completed' end,
                  'u' || (g %% 1000), jsonb_build_object('project_id', 'p' || (g %% 1000)),
                  now() - make_interval(secs => g / 10.0),
                  case when g %% 50 <> 1 then now() - make_interval(secs => g / 10.0) end,
                  now() - make_interval(secs => g / 10.0 + 2)
           from generate_series(1, %s) g""",
        (jobs,),
    )
    conn.execute("alter table job_queue enable trigger job_queue_check_row")
    conn.execute("vacuum analyze job_queue")


def timed(conn: psycopg.Connection, name: str, params: dict, repeat: int) -> tuple[float, list]:
    samples, rows = [], []
    for _ in range(repeat):
        t = time.perf_counter()
        rows = conn.execute(query(name), params, prepare=False).fetchall()
        samples.append((time.perf_counter() - t) * 1000)
    return statistics.median(samples), rows


def index_used(conn: psycopg.Connection, params: dict) -> str:
    plan = [r["QUERY PLAN"] for r in conn.execute(sql.SQL("explain ") + query("list_jobs"), params)]
    for line in plan:
        if "Index" in line and " using " in line:
            return line.split(" using ")[1].split(" ")[0]
    return "(no index: " + plan[1].strip() + ")"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--jobs", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    with (
        private_database() as (cluster, _),
        psycopg.connect(cluster.url, autocommit=True, row_factory=dict_row) as conn,
    ):
        started = time.perf_counter()
        fill(conn, args.jobs)
        print(
            f"{args.jobs:,} jobs in {time.perf_counter() - started:.0f} s; median of "
            f"{args.repeat}, ms"
        )
        print("| list filter | first page | page 21 | index |\n| --- | ---: | ---: | --- |")
        for label, extra in FILTERS.items():
            params = {**BLANK, **extra}
            first, rows = timed(conn, "list_jobs", params, args.repeat)
            cursor = rows[-2] if len(rows) > 1 else None
            deep = float("nan")
            for _ in range(20):  # follow the keyset pages, as "older →" does
                if cursor is None:
                    break
                params = {**params, "before_at": cursor["created_at"], "before_id": cursor["id"]}
                deep, rows = timed(conn, "list_jobs", params, 1 if _ < 19 else args.repeat)
                cursor = rows[-2] if len(rows) > 1 else None
            print(
                f"| {label} | {first:.2f} | {deep:.2f} | {index_used(conn, {**BLANK, **extra})} |"
            )
        print("| overview query | ms |\n| --- | ---: |")
        for name in ("ui_counts", "ui_oldest_due", "ui_durations", "ui_per_minute"):
            ms, _ = timed(conn, name, {}, args.repeat)
            print(f"| {name} | {ms:.1f} |")


if __name__ == "__main__":
    main()
