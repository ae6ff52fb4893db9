"""Server work per job, counted rather than timed: how many CPU instructions one PostgreSQL
backend executes to claim and complete a job, for the plain SKIP LOCKED statements and for the
processor's functions. valgrind's callgrind counts them, so the figures repeat to within about
1 % whatever else the machine is doing, where jobs/s on a shared 2-core machine moves by 5-10 %
from one run to the next.

    apt-get install valgrind    # once
    .venv/bin/python bench/claim_cost.py [--jobs 1000]

A private cluster (fsync on) is migrated, then restarted under callgrind, which follows every
backend it forks. Each configuration runs twice on a fresh queue of 3,000 jobs, one connection
with prepared statements (as psycopg and pgbench -M prepared send them), once for 200 jobs and
once for 200 + --jobs; the difference, divided by --jobs, is one job's share without the
connection's start-up. synchronous_commit is off: waiting for the disk costs no instructions,
and autovacuum is off so that every run meets the same table.
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import time
from pathlib import Path

import psycopg
from common import private_database
from side_by_side import PLAIN_CLAIM, PLAIN_COMPLETE

from processor.ops.pgcluster import SERVER_USER, _as_root, _bindir

CLAIM1 = "select id, lease_token from claim_jobs('w', 1)"
COMPLETE1 = "select mark_job_completed(%s, %s)"  # no result: the plain statement stores none
CONFIGS = {
    "plain": ("plain SKIP LOCKED claim + plain complete", PLAIN_CLAIM, PLAIN_COMPLETE),
    "claim1": ("claim_jobs(…, 1) + mark_job_completed", CLAIM1, COMPLETE1),
    "claim1_plain": ("claim_jobs(…, 1) + plain complete", CLAIM1, PLAIN_COMPLETE),
    "narrow_plain": (
        "claim_jobs's one-job statement returning only id, lease_token + plain complete",
        "select id, lease_token from bench_claim_narrow('w')",
        PLAIN_COMPLETE,
    ),
    "plain_mark": (
        "plain claim + mark_job_completed",
        PLAIN_CLAIM + ", lease_token",
        COMPLETE1,
    ),
}
# claim_jobs's one-job path as it would cost if it returned two columns instead of the whole
# job_queue row: a measuring instrument for the row's share, created in the bench's own cluster.
NARROW = """
create function bench_claim_narrow(p_worker text, p_lease interval default interval '60 seconds')
returns table (id uuid, lease_token uuid)
language plpgsql volatile as $$
begin
    return query
    update job_queue j
    set status = 'processing', locked_by = p_worker, locked_until = now() + p_lease,
        lease_token = gen_random_uuid(), processed_at = now()
    where j.id = (select q.id from job_queue q
                  where q.status = 'pending' and q.run_at <= now()
                  order by q.priority desc, q.run_at, q.created_at
                  limit 1 for update skip locked)
    returning j.id, j.lease_token;
end;
$$"""
QUEUE = 3000
WARM = 200


def start_under_callgrind(data_dir: Path, port: int, out: Path) -> subprocess.Popen[bytes]:
    cmd = [
        "valgrind",
        "--tool=callgrind",
        "--trace-children=yes",
        f"--callgrind-out-file={out}/cg.%p",
        str(_bindir() / "postgres"),
        "-D",
        str(data_dir),
        "-p",
        str(port),
        "-c",
        "shared_preload_libraries=",
        "-c",
        "synchronous_commit=off",
        "-c",
        "autovacuum=off",
    ]
    if _as_root():
        cmd = ["runuser", "-u", SERVER_USER, "--", *cmd]
    return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd="/")


def instructions(path: Path, timeout: float = 120) -> int:
    """The instruction total callgrind writes when the backend exits."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists():
            m = re.search(r"^(?:summary|totals): (\d+)", path.read_text(), re.M)
            if m:
                return int(m.group(1))
        time.sleep(0.2)
    raise RuntimeError(f"callgrind wrote no totals to {path}")


def backend_run(
    url: str,
    out: Path,
    claim: str,
    complete: str,
    jobs: int,
    keep: Path | None = None,
    name: str = "",
) -> int:
    with psycopg.connect(url, autocommit=True) as admin:
        admin.execute("truncate job_queue cascade")
        admin.execute(
            "insert into job_queue (job_type) select 'bench' from generate_series(1, %s)",
            (QUEUE,),
        )
        admin.execute("vacuum analyze job_queue")
    with psycopg.connect(url, autocommit=True) as conn:
        pid = conn.execute("select pg_backend_pid()").fetchone()[0]
        for _ in range(jobs):
            row = conn.execute(claim, prepare=True).fetchone()
            assert row is not None, "the queue ran dry"
            conn.execute(complete, row[: complete.count("%s")], prepare=True)
    total = instructions(out / f"cg.{pid}")
    if keep:
        keep.mkdir(parents=True, exist_ok=True)
        shutil.copy(out / f"cg.{pid}", keep / f"callgrind.{name}")
    return total


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--jobs", type=int, default=1000)
    parser.add_argument(
        "--keep", type=Path, help="copy each long run's callgrind file here (callgrind_annotate)"
    )
    args = parser.parse_args()
    assert WARM + args.jobs < QUEUE, f"--jobs must be under {QUEUE - WARM}"

    with private_database() as (cluster, folder):
        out = folder / "callgrind"
        out.mkdir()
        if _as_root():  # the server writes its counts here as the postgres OS user
            shutil.chown(out, SERVER_USER)
        with psycopg.connect(cluster.url, autocommit=True) as conn:
            conn.execute(NARROW)
        cluster.stop()
        server = start_under_callgrind(cluster.data_dir, cluster.port, out)
        try:
            cluster._wait_ready(timeout=180)
            per_job: dict[str, float] = {}
            for key, (label, claim, complete) in CONFIGS.items():
                short = backend_run(cluster.url, out, claim, complete, WARM)
                long = backend_run(
                    cluster.url, out, claim, complete, WARM + args.jobs, args.keep, key
                )
                per_job[key] = (long - short) / args.jobs
                print(f"  {label}: {per_job[key]:,.0f} instructions per job", flush=True)
        finally:
            cluster.stop()
            server.wait(timeout=120)

    print("\n| claim + complete, one backend | instructions per job | vs plain |")
    print("| --- | ---: | ---: |")
    for key, (label, _, _) in CONFIGS.items():
        print(f"| {label} | {per_job[key]:,.0f} | {per_job[key] / per_job['plain']:.3f} |")


if __name__ == "__main__":
    main()
