"""Bytes written to the WAL per job, before and after 0014_lighter_job_writes, side by side in
one run.

    .venv/bin/python bench/wal_per_job.py [--jobs 2000]

One private cluster (fsync on, autovacuum off so both databases meet the same table), two
databases: one migrated up to the migration before 0014, one migrated fully. In each, --jobs
jobs (with a user and a project, as packs have) go through their life in batches of 20: claim
(claim_jobs), then per job 3 lease extensions (extend_job_leases, as the lease keeper sends
them) and 6 progress updates (set_job_progress, as a pack reports its images), then completion
(complete_jobs); and, apart, a no-op life (insert, claim, complete). A CHECKPOINT comes before
each measurement, so full-page images count alike. The WAL is the difference of
pg_current_wal_lsn() around the run (nothing else writes to the cluster meanwhile).
"""

from __future__ import annotations

import argparse

import psycopg
from common import private_database
from psycopg.types.json import Jsonb

from processor.ops.migrate import available, migrate


def life(conn: psycopg.Connection, jobs: int, beats: int, progress: int) -> tuple[float, dict]:
    conn.execute("truncate job_queue cascade")
    conn.execute("checkpoint")
    start = conn.execute("select pg_current_wal_lsn()").fetchone()[0]
    conn.execute(
        "insert into job_queue (job_type, user_id, payload) select 'generate-complete-pack', "
        "'u' || (g %% 50), jsonb_build_object('project_id', 'p' || (g %% 200)) "
        "from generate_series(1, %s) g",
        (jobs,),
    )
    while True:
        rows = conn.execute("select id, lease_token from claim_jobs('w', 20)").fetchall()
        if not rows:
            break
        ids, tokens = [r[0] for r in rows], [r[1] for r in rows]
        for _ in range(beats):
            conn.execute(
                "select extend_job_leases(%s::uuid[], %s::uuid[], interval '1 minute')",
                (ids, tokens),
            )
        for step in range(progress):
            for job_id, token in zip(ids, tokens, strict=True):
                conn.execute(
                    "select set_job_progress(%s, %s, %s)",
                    (job_id, token, Jsonb({"done": step + 1, "total": progress})),
                )
        conn.execute(
            "select complete_jobs(%s::uuid[], %s::uuid[], %s::jsonb[])",
            (ids, tokens, [None] * len(ids)),
        )
    wal = conn.execute("select pg_current_wal_lsn() - %s::pg_lsn", (start,)).fetchone()[0]
    conn.execute("select pg_stat_force_next_flush()")  # this backend's counts, reported now
    stats = conn.execute(
        "select n_tup_upd, n_tup_hot_upd from pg_stat_user_tables where relname = 'job_queue'"
    ).fetchone()
    return float(wal) / jobs, {"updates": stats[0], "hot": stats[1]}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--jobs", type=int, default=2000)
    args = parser.parse_args()
    with private_database() as (cluster, _):
        with psycopg.connect(cluster.url, autocommit=True) as admin:
            admin.execute("alter system set autovacuum = off")
            admin.execute("select pg_reload_conf()")
        migrations = available()
        assert migrations[-1].name == "lighter_job_writes", "0014 must be the newest migration"
        urls = {}
        for name, upto in (("before 0014", migrations[:-1]), ("after 0014", migrations)):
            db = "wal_" + name.split()[0]
            cluster.create_database(db)
            urls[name] = cluster.url_for(db)
            migrate(urls[name], upto)
        print(f"PostgreSQL on port {cluster.port}; {args.jobs:,} jobs per life, WAL bytes per job")
        for label, beats, progress in (("no-op life", 0, 0), ("3 beats + 6 progress", 3, 6)):
            figures = {}
            for name, url in urls.items():
                with psycopg.connect(url, autocommit=True) as conn:
                    conn.execute("select pg_stat_reset()")
                    figures[name] = life(conn, args.jobs, beats, progress)
            before, after = figures["before 0014"], figures["after 0014"]
            print(
                f"  {label}: before {before[0]:,.0f} B (HOT {before[1]['hot']:,} of "
                f"{before[1]['updates']:,} updates), after {after[0]:,.0f} B (HOT "
                f"{after[1]['hot']:,} of {after[1]['updates']:,}); after/before "
                f"{after[0] / before[0]:.2f}",
                flush=True,
            )


if __name__ == "__main__":
    main()
