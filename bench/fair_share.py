"""Fair share and caps as a user sees them, on real processors.

    .venv/bin/python bench/fair_share.py

`processor serve` processes and the no-op handler (bench/noop_handler.py), each in its own
process, on a private PostgreSQL cluster (fsync on), no configuration unless named:

- noisy neighbour: one processor with 4 slots (LISTEN on); one group inserts 200 jobs of
  0.2 s, then nine other groups insert one job each. The figure is the time from each of the
  nine inserts to its handler call.
- weights: groups of weight 3 and 1, both with 200 waiting jobs: who the first 160 claims go to.
- caps: every group capped at 2, the type at 5, two processors with MAX_RUNNING_JOBS=8, 240 jobs
  of 0.3 s over 6 groups. Running jobs are sampled every 50 ms until all are done; where the
  caps allow 5 to run (enough groups still have work), how often 4 or more do.
"""

from __future__ import annotations

import json
import statistics
import threading
import time
from collections import Counter

import httpx
import psycopg
from common import private_database
from side_by_side import handler_process, service


def delayed(seconds: float) -> str:
    return json.dumps({"respond": {"delay": seconds}})


def noisy_neighbour(url: str, handler: str) -> list[float]:
    httpx.post(f"{handler}/reset")
    with (
        service(url, handler, MAX_RUNNING_JOBS="4", LISTEN_FOR_JOBS="on"),
        psycopg.connect(url, autocommit=True) as conn,
    ):
        time.sleep(0.5)  # listening
        conn.execute(
            "insert into job_queue (job_type, user_id, payload) "
            "select 'bench', 'importer', %s::jsonb from generate_series(1, 200)",
            (delayed(0.2),),
        )
        time.sleep(0.5)  # the import is running
        inserted = {}
        for seller in range(9):
            job_id = conn.execute(
                "insert into job_queue (job_type, user_id) values ('bench', %s) returning id",
                (f"seller-{seller}",),
            ).fetchone()[0]
            inserted[str(job_id)] = time.time()
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            seen = httpx.get(f"{handler}/stats", params={"times": 1}).json()["first_seen"]
            if all(j in seen for j in inserted):
                break
            time.sleep(0.05)
        return sorted(seen[j] - t for j, t in inserted.items())


def weights(url: str) -> Counter[str]:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("truncate job_queue cascade")
        for group in ("heavy", "light"):
            conn.execute(
                "insert into job_queue (job_type, user_id) "
                "select 'bench', %s from generate_series(1, 200)",
                (group,),
            )
        conn.execute("select set_concurrency_limit('heavy', null, 3)")
        served: Counter[str] = Counter()
        for _ in range(160):
            served.update(r[0] for r in conn.execute("select user_id from claim_jobs('w', 1)"))
        conn.execute("delete from job_concurrency_limits")
        return served


def caps(url: str, handler: str) -> dict[str, float]:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("truncate job_queue cascade")
        conn.execute("select set_concurrency_limit('*', 2), set_job_type_limit('bench', 5)")
        samples: list[tuple[int, int, int]] = []  # most in a group, of the type, still waiting
        with (
            service(url, handler, MAX_RUNNING_JOBS="8", LISTEN_FOR_JOBS="on"),
            service(url, handler, MAX_RUNNING_JOBS="8", LISTEN_FOR_JOBS="on"),
        ):
            time.sleep(0.5)
            conn.execute(
                "insert into job_queue (job_type, user_id, payload) "
                "select 'bench', 'g' || (g %% 6), %s::jsonb from generate_series(1, 240) g",
                (delayed(0.3),),
            )
            stop = threading.Event()
            while not stop.is_set():
                rows = conn.execute(
                    "select user_id, count(*) filter (where status = 'processing'), "
                    "count(*) filter (where status = 'pending') "
                    "from job_queue where status in ('pending', 'processing') group by 1"
                ).fetchall()
                if not rows:
                    break
                # What the caps allow now: at most 2 of each group's work, 5 in all.
                allowed = min(5, sum(min(2, r[1] + r[2]) for r in rows))
                samples.append((max(r[1] for r in rows), sum(r[1] for r in rows), allowed))
                time.sleep(0.05)
        conn.execute("delete from job_concurrency_limits; delete from job_type_limits")
    full = [s for s in samples[5:] if s[2] == 5]  # the caps allow 5: is the type at 5?
    return {
        "most_in_a_group": max(s[0] for s in samples),
        "most_of_the_type": max(s[1] for s in samples),
        "at_least_4": sum(s[1] >= 4 for s in full) / len(full),
        "mean_while_5_allowed": statistics.mean(s[1] for s in full),
        "samples": len(samples),
    }


def main() -> None:
    with private_database() as (cluster, _), handler_process() as handler:
        print(f"PostgreSQL on port {cluster.port}, fsync on")
        waits = noisy_neighbour(cluster.url, handler)
        print(
            f"  noisy neighbour: the nine sellers started {waits[0] * 1000:.0f} to "
            f"{waits[-1] * 1000:.0f} ms after their insert "
            f"(median {statistics.median(waits) * 1000:.0f} ms), "
            "behind 200 jobs of 0.2 s on 4 slots",
            flush=True,
        )
        served = weights(cluster.url)
        print(
            f"  weights 3:1, first 160 claims: heavy {served['heavy']}, light {served['light']} "
            f"({served['heavy'] / served['light']:.2f} : 1)",
            flush=True,
        )
        held = caps(cluster.url, handler)
        print(
            f"  caps (group 2, type 5, two processors of 8 slots, {held['samples']} samples): "
            f"at most {held['most_in_a_group']} in a group and {held['most_of_the_type']} of the "
            f"type; while the caps allowed 5, 4 or more ran in {held['at_least_4']:.0%} of "
            f"samples (mean {held['mean_while_5_allowed']:.2f})",
            flush=True,
        )


if __name__ == "__main__":
    main()
