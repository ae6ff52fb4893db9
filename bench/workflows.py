"""Workflows: a 10,000 -> 1 fan-in against as many independent jobs, how soon a released job is
claimed, and the per-link latency of a chain.

    .venv/bin/python bench/workflows.py [--children 10000] [--rounds 2] [--fan-ins 100]
                                        [--fan-in-width 10] [--chain 100]

Every part in its own process: a private PostgreSQL cluster (fsync on), `processor serve`
LISTENing (as deployed), and the no-op handler (bench/noop_handler.py).

1. Fan-in. In one run, alternately: --children independent jobs plus one more, inserted in one
   transaction; and --children children plus one job that depends on all of them (depends_on),
   inserted in one transaction. Wall time: from the commit to the handler's first sight of the
   last job (the dependent, in the fan-in). The ratio is fan-in over independent, per round
   and over the medians.
2. Release latency. --fan-ins rounds of a --fan-in-width -> 1 fan-in, one at a time: from the
   last child's completion (its completed_at, taken before that transaction commits, so the
   figure errs high) to the dependent's claim (processed_at), both on the database's clock.
   The finishing transaction NOTIFYs the listeners, whose drain claims it.
3. A chain of --chain jobs (enqueue_workflow, each depending on the one before): per link,
   from one job's completed_at to the next one's processed_at.
"""

from __future__ import annotations

import argparse
import statistics
import time

import httpx
import psycopg
from common import private_database
from pickup_latency import pct
from psycopg.types.json import Jsonb
from side_by_side import handler_process, service


def wait_for_handler(handler: str, job_id: str, timeout: float = 300) -> float:
    """When the handler first saw this job (time.time())."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        seen = httpx.get(f"{handler}/stats", params={"times": 1}).json()["first_seen"]
        if job_id in seen:
            return float(seen[job_id])
        time.sleep(0.02)
    raise RuntimeError(f"job {job_id} never reached the handler")


INSERTS: dict[str, list[float]] = {"independent": [], "fan-in": []}


def independent(url: str, n: int) -> tuple[float, str]:
    started = time.time()
    with psycopg.connect(url) as conn:
        ids = conn.execute(
            "insert into job_queue (job_type) select 'bench' from generate_series(1, %s) "
            "returning id",
            (n + 1,),
        ).fetchall()
        conn.commit()
    INSERTS["independent"].append(time.time() - started)
    return time.time(), str(ids[-1][0])


def fan_in(url: str, n: int) -> tuple[float, str]:
    started = time.time()
    with psycopg.connect(url) as conn:
        ids = [
            r[0]
            for r in conn.execute(
                "insert into job_queue (job_type) select 'bench' from generate_series(1, %s) "
                "returning id",
                (n,),
            )
        ]
        last = conn.execute(
            "insert into job_queue (job_type, depends_on) values ('bench', %s) returning id",
            (ids,),
        ).fetchone()[0]
        conn.commit()
    INSERTS["fan-in"].append(time.time() - started)
    return time.time(), str(last)


def release_latency(url: str, handler: str, width: int) -> float:
    _, last = fan_in(url, width)
    wait_for_handler(handler, last, 60)
    with psycopg.connect(url) as conn:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            (ms,) = conn.execute(
                "select extract(epoch from d.processed_at - max(c.completed_at)) * 1000 "
                "from job_queue d join job_queue c on c.id = any (d.depends_on) "
                "where d.id = %s and d.processed_at is not null group by d.processed_at",
                (last,),
            ).fetchone() or (None,)
            if ms is not None:
                return float(ms)
            time.sleep(0.01)
    raise RuntimeError("the dependent was never claimed")


def chain(url: str, handler: str, n: int) -> list[float]:
    nodes = [
        {
            "name": f"link-{i}",
            "job_type": "bench",
            **({"depends_on": [f"link-{i - 1}"]} if i else {}),
        }
        for i in range(n)
    ]
    with psycopg.connect(url, autocommit=True) as conn:
        ids = [r[1] for r in conn.execute("select * from enqueue_workflow(%s)", (Jsonb(nodes),))]
        wait_for_handler(handler, str(ids[-1]), 120)
        time.sleep(0.5)
        rows = conn.execute(
            "select id, processed_at, completed_at from job_queue where id = any (%s)", (ids,)
        ).fetchall()
    at = {r[0]: (r[1], r[2]) for r in rows}
    return [(at[ids[i + 1]][0] - at[ids[i]][1]).total_seconds() * 1000 for i in range(len(ids) - 1)]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--children", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--fan-ins", type=int, default=100)
    parser.add_argument("--fan-in-width", type=int, default=10)
    parser.add_argument("--chain", type=int, default=100)
    args = parser.parse_args()

    with private_database() as (cluster, _), handler_process() as handler:
        url = cluster.url
        env = {"LISTEN_FOR_JOBS": "on", "MAX_RUNNING_JOBS": "20"}
        with service(url, handler, **env):
            time.sleep(0.5)  # listening
            print(
                f"fan-in: {args.children} children -> 1 against {args.children + 1} "
                "independent jobs (wall time, commit to the last job's call)"
            )
            walls: dict[str, list[float]] = {"independent": [], "fan-in": []}
            for r in range(args.rounds):
                for kind, insert in (("independent", independent), ("fan-in", fan_in)):
                    httpx.post(f"{handler}/reset")
                    committed, last = insert(url, args.children)
                    seconds = wait_for_handler(handler, last) - committed
                    walls[kind].append(seconds)
                    print(
                        f"  round {r + 1} {kind}: {seconds:.2f} s "
                        f"({(args.children + 1) / seconds:.0f} jobs/s)"
                    )
                print(
                    f"  round {r + 1} ratio: {walls['fan-in'][-1] / walls['independent'][-1]:.2f}"
                )
            medians = {k: statistics.median(v) for k, v in walls.items()}
            print(
                f"  medians: independent {medians['independent']:.2f} s, fan-in "
                f"{medians['fan-in']:.2f} s, ratio {medians['fan-in'] / medians['independent']:.2f}"
            )
            inserts = {k: statistics.median(v) for k, v in INSERTS.items()}
            print(
                f"  the inserting transaction itself (median): independent "
                f"{inserts['independent']:.2f} s, fan-in {inserts['fan-in']:.2f} s"
            )

            ms = [release_latency(url, handler, args.fan_in_width) for _ in range(args.fan_ins)]
            print(
                f"release: {args.fan_ins} rounds of a {args.fan_in_width} -> 1 fan-in, last "
                f"child's completion to the dependent's claim (via the listener's drain): "
                f"p50 {pct(ms, 50):.1f} ms, p99 {pct(ms, 99):.1f} ms, max {max(ms):.1f} ms"
            )

            links = chain(url, handler, args.chain)
            print(
                f"chain of {args.chain}: per link, completion to the next claim: "
                f"p50 {pct(links, 50):.1f} ms, p99 {pct(links, 99):.1f} ms, "
                f"max {max(links):.1f} ms; whole chain {sum(links) / 1000:.2f} s of waiting"
            )


if __name__ == "__main__":
    main()
