"""Work conservation: how much of a processor's slots a backlog keeps busy when nothing calls it
often, or at all.

    .venv/bin/python bench/work_conserving.py [--jobs 80] [--seconds 1] [--slots 4]

One `processor serve` (MAX_RUNNING_JOBS=--slots) and the no-op handler, each in its own process,
on a private PostgreSQL cluster (fsync on). --jobs jobs of --seconds each are inserted in one
statement, then:

- "a call every 60 s": LISTEN off; the benchmark posts {"drain": true} at once and every 60 s,
  as pg_cron 1.4 would (it has no second schedules);
- "no call at all": LISTEN on; the insert's NOTIFY is the only wake-up.

Slot use is the work done (jobs times seconds) over slots times the time from the insert to the last
completion: 100 % means no slot sat idle while a job waited.
"""

from __future__ import annotations

import argparse
import json
import threading
import time

import httpx
import psycopg
from common import TOKEN, private_database
from side_by_side import handler_process, service


def run(
    url: str, handler: str, jobs: int, seconds: float, slots: int, listen: bool
) -> tuple[float, float]:
    env = {"MAX_RUNNING_JOBS": str(slots), "LISTEN_FOR_JOBS": "on" if listen else "off"}
    with service(url, handler, **env) as (base, _), psycopg.connect(url, autocommit=True) as conn:
        conn.execute("truncate job_queue cascade")
        time.sleep(0.5)  # listening
        stop = threading.Event()

        def cron() -> None:  # pg_cron 1.4's schedule: once a minute
            while not stop.is_set():
                httpx.post(
                    f"{base}/process-jobs",
                    json={"drain": True},
                    headers={"Authorization": f"Bearer {TOKEN}"},
                    timeout=30,
                )
                stop.wait(60)

        payload = json.dumps({"respond": {"delay": seconds}})
        started = time.monotonic()
        conn.execute(
            "insert into job_queue (job_type, payload) "
            "select 'bench', %s::jsonb from generate_series(1, %s)",
            (payload, jobs),
        )
        caller = threading.Thread(target=cron, daemon=True)
        if not listen:
            caller.start()
        try:
            while True:
                done = conn.execute(
                    "select count(*) from job_queue where status = 'completed'"
                ).fetchone()[0]
                if done == jobs:
                    break
                if time.monotonic() - started > jobs * seconds + 300:
                    raise RuntimeError(f"only {done} of {jobs} jobs completed")
                time.sleep(0.05)
            elapsed = time.monotonic() - started
        finally:
            stop.set()
        return jobs * seconds / (slots * elapsed), elapsed


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--jobs", type=int, default=80)
    parser.add_argument("--seconds", type=float, default=1.0)
    parser.add_argument("--slots", type=int, default=4)
    args = parser.parse_args()
    work = args.jobs * args.seconds / args.slots
    with private_database() as (cluster, _), handler_process() as handler:
        print(
            f"{args.jobs} jobs of {args.seconds:g} s on {args.slots} slots "
            f"({work:g} s of work per slot); PostgreSQL on port {cluster.port}, fsync on"
        )
        for listen, name in ((False, "a call every 60 s"), (True, "no call at all")):
            use, elapsed = run(cluster.url, handler, args.jobs, args.seconds, args.slots, listen)
            print(f"  {name}: done in {elapsed:.1f} s, slot use {use:.0%}", flush=True)


if __name__ == "__main__":
    main()
