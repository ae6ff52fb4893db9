"""The service through PgBouncer against a direct connection, in the same run.

    .venv/bin/python bench/pooler.py [--jobs 5000] [--rounds 5] [--callers 8]

A private PostgreSQL 15 cluster (fsync on), Debian's PgBouncer 1.18 in front of it once in
transaction mode (as Supabase's pooler on port 6543) and once in session mode, each with a
pool of 20 server connections. Each round runs every configuration once, in turn: one
`processor serve` process (MAX_RUNNING_JOBS=200, LISTEN off) and the no-op handler
(bench/noop_handler.py) in processes of their own; --jobs no-op jobs inserted at once, then
--callers threads sending `{"limit": 50, "wait": true}` to /process-jobs until every job has
ended (0 callers: one `{"drain": true}` call instead). It reports the median jobs/s of each
configuration over the rounds, its ratio to the direct connection, and the jobs that did not
complete or were delivered more than once, and the /process-jobs answers other than 200.

Configurations: direct (no prepared statements: the default), direct with
PREPARED_STATEMENTS=on, PgBouncer transaction mode, PgBouncer session mode.
"""

from __future__ import annotations

import argparse
import statistics
import threading
import time

import httpx
import psycopg
from common import TOKEN, private_database
from side_by_side import handler_process, service

from tests.support import PgBouncer

CONFIGS = ("direct", "direct, PREPARED_STATEMENTS=on", "pgbouncer transaction", "pgbouncer session")


def one_run(url: str, db_url: str, handler: str, jobs: int, callers: int, **env: str) -> dict:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("truncate job_queue cascade")
        httpx.post(f"{handler}/reset", timeout=10)
        with service(db_url, handler, MAX_RUNNING_JOBS="200", **env) as (base, _):
            conn.execute(
                "insert into job_queue (job_type) select 'bench' from generate_series(1, %s)",
                (jobs,),
            )
            began = time.perf_counter()
            answers: list[int] = []
            lock = threading.Lock()

            def left() -> int:
                with psycopg.connect(url, autocommit=True) as c:
                    return c.execute(
                        "select count(*) from job_queue where status in ('pending', 'processing')"
                    ).fetchone()[0]

            def caller() -> None:
                with httpx.Client(timeout=60) as client:
                    while left():
                        answer = client.post(
                            f"{base}/process-jobs",
                            json={"limit": 50, "wait": True},
                            headers={"Authorization": f"Bearer {TOKEN}"},
                        )
                        with lock:
                            answers.append(answer.status_code)

            if callers:
                threads = [threading.Thread(target=caller) for _ in range(callers)]
                for t in threads:
                    t.start()
                for t in threads:
                    t.join()
            else:
                httpx.post(
                    f"{base}/process-jobs",
                    json={"drain": True},
                    headers={"Authorization": f"Bearer {TOKEN}"},
                    timeout=30,
                )
                while left():
                    time.sleep(0.02)
            seconds = time.perf_counter() - began
        done = conn.execute(
            "select count(*) filter (where status = 'completed') from job_queue"
        ).fetchone()
    stats = httpx.get(f"{handler}/stats", timeout=10).json()
    return {
        "jobs_per_s": jobs / seconds,
        "not_completed": jobs - done[0],
        "not_200": sum(1 for a in answers if a != 200),
        "delivered_twice": stats["duplicates"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=5000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--callers", type=int, default=8)
    args = parser.parse_args()
    results: dict[str, list[dict]] = {c: [] for c in CONFIGS}
    with (
        private_database() as (cluster, _),
        handler_process() as handler,
        PgBouncer(cluster, "transaction") as tx,
        PgBouncer(cluster, "session") as session,
    ):
        urls = {
            "direct": (cluster.url, {}),
            "direct, PREPARED_STATEMENTS=on": (cluster.url, {"PREPARED_STATEMENTS": "on"}),
            "pgbouncer transaction": (tx.url_for(cluster.url), {}),
            "pgbouncer session": (session.url_for(cluster.url), {}),
        }
        for r in range(args.rounds):
            order = CONFIGS if r % 2 == 0 else tuple(reversed(CONFIGS))
            for config in order:
                db_url, env = urls[config]
                run = one_run(cluster.url, db_url, handler, args.jobs, args.callers, **env)
                results[config].append(run)
                print(f"round {r + 1} {config:32} {run['jobs_per_s']:8.0f} jobs/s {run}")
    base = statistics.median(r["jobs_per_s"] for r in results["direct"])
    mode = f"{args.callers} callers, wait" if args.callers else "one drain call"
    print(f"\n{args.jobs} no-op jobs, {mode}, median of {args.rounds} rounds")
    print("| config | jobs/s | vs direct | not completed | delivered twice | answers not 200 |")
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    for config in CONFIGS:
        runs = results[config]
        rate = statistics.median(r["jobs_per_s"] for r in runs)
        ratios = sorted(
            a["jobs_per_s"] / d["jobs_per_s"] for a, d in zip(runs, results["direct"], strict=True)
        )
        print(
            f"| {config} | {rate:,.0f} | {rate / base:.2f} ({ratios[0]:.2f} to {ratios[-1]:.2f}) "
            f"| {sum(r['not_completed'] for r in runs)} "
            f"| {sum(r['delivered_twice'] for r in runs)} "
            f"| {sum(r['not_200'] for r in runs)} |"
        )


if __name__ == "__main__":
    main()
