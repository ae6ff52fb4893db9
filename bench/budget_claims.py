"""What spend budgets cost a claim: the claim with 1,000 budgeted groups, half of them held by
their budget, against the same claim with no budgets, in alternating rounds of one run.

    .venv/bin/python bench/budget_claims.py [--rounds 5] [--jobs 1000] [--limit 1]

Two private clusters (fsync on, one claimed from at a time), each with the same queue: 1,000 groups
(sellers) with 40 due generate-image jobs each, in line. In "budgets", every group has a budget
(a price of $0.01 a job): the odd-numbered groups have spent theirs already (a ledger row each,
before the budgets were set, so their counters are seeded from the ledger), the others have
$1,000 of room. Before the rounds each database runs 2,000 claims, so the held groups are held
(their jobs out of line) and both queues are in their steady state. Each round then times --jobs
claims (`claim_jobs(w, --limit)`, one connection, prepared) and their completions
(`complete_jobs`), in each database, the order of the two alternating from round to round.

The figures: the median of the rounds' claim time per job (wall, from the client) and the
claiming backend's CPU per job (user + system, from /proc: steadier on a shared machine), and
the ratios budgets / none per round. The periodic release of held groups (every rebuild_every,
30 s) falls inside the rounds when it is due, as it would in service.
"""

from __future__ import annotations

import argparse
import statistics
import time

import psycopg
from common import private_database
from fair_claim_cpu import cpu_seconds

GROUPS = 1000
PER_GROUP = 40
CLAIM = "select id, lease_token from claim_jobs('w', %s)"
COMPLETE = "select complete_jobs(%s::uuid[], %s::uuid[], %s::jsonb[])"
PAYLOAD = '{"project_id": "p1", "kind": "main", "product": {"name": "Mug"}}'


def fill(url: str, budgets: bool) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(
            "insert into job_queue (job_type, payload, user_id)"
            " select 'generate-image', %s::jsonb, 'seller-' || g"
            " from generate_series(1, %s) g, generate_series(1, %s) n",
            (PAYLOAD, GROUPS, PER_GROUP),
        )
        if budgets:
            conn.execute(
                "insert into provider_calls (job_id, attempt, user_id, provider, model,"
                " operation, status, duration_ms, cost_usd)"
                " select null, 1, 'seller-' || g, 'gemini', 'm', 'image', 'ok', 1, 5"
                " from generate_series(1, %s, 2) g",
                (GROUPS,),
            )
            conn.execute("select set_job_type_price('generate-image', 0.01)")
            conn.execute(
                "select set_spend_budget('seller-' || g, case when g %% 2 = 1 then 5 else 1000 end)"
                " from generate_series(1, %s) g",
                (GROUPS,),
            )
        conn.execute("vacuum analyze")


def run(conn: psycopg.Connection, jobs: int, limit: int) -> tuple[float, float, int, float]:
    """(claim seconds, complete seconds, jobs claimed, backend CPU seconds of the claims)."""
    claim_s = complete_s = cpu = 0.0
    done = 0
    pid = conn.info.backend_pid
    while done < jobs:
        c0 = cpu_seconds(pid)
        t0 = time.perf_counter()
        rows = conn.execute(CLAIM, (limit,), prepare=True).fetchall()
        t1 = time.perf_counter()
        cpu += cpu_seconds(pid) - c0
        if not rows:
            raise RuntimeError("the queue ran dry")
        conn.execute(
            COMPLETE,
            ([r[0] for r in rows], [r[1] for r in rows], ["{}"] * len(rows)),
            prepare=True,
        )
        claim_s += t1 - t0
        complete_s += time.perf_counter() - t1
        done += len(rows)
    return claim_s, complete_s, done, cpu


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--jobs", type=int, default=1000)
    parser.add_argument("--limit", type=int, default=1)
    args = parser.parse_args()
    need = 2000 + args.rounds * args.jobs
    assert need <= GROUPS * PER_GROUP // 2, "too many jobs for the queue's open half"

    with private_database() as (plain, _), private_database() as (budgeted, _):
        urls = {"none": plain.url, "budgets": budgeted.url}
        fill(urls["none"], budgets=False)
        fill(urls["budgets"], budgets=True)
        conns = {k: psycopg.connect(u, autocommit=True) for k, u in urls.items()}
        try:
            for conn in conns.values():
                run(conn, 2000, args.limit)
            held = (
                conns["budgets"]
                .execute(
                    "select count(distinct user_id) from job_queue"
                    " where status = 'pending' and turn = '-infinity'"
                )
                .fetchone()[0]
            )
            print(f"groups held by their budget after the warm-up: {held} of {GROUPS}")
            per_job: dict[str, list[float]] = {"none": [], "budgets": []}
            cpu_per_job: dict[str, list[float]] = {"none": [], "budgets": []}
            ratios, cpu_ratios = [], []
            for r in range(args.rounds):
                order = ["none", "budgets"] if r % 2 == 0 else ["budgets", "none"]
                got, cpu = {}, {}
                for key in order:
                    claim_s, complete_s, done, cpu_s = run(conns[key], args.jobs, args.limit)
                    got[key] = claim_s / done * 1e6
                    cpu[key] = cpu_s / done * 1e6
                    per_job[key].append(got[key])
                    cpu_per_job[key].append(cpu[key])
                    print(
                        f"  round {r + 1} {key:>7}: claim {got[key]:7.1f} µs/job"
                        f" (backend CPU {cpu[key]:6.1f}),"
                        f" complete {complete_s / done * 1e6:7.1f} µs/job",
                        flush=True,
                    )
                ratios.append(got["budgets"] / got["none"])
                cpu_ratios.append(cpu["budgets"] / cpu["none"])
            reserved = (
                conns["budgets"]
                .execute(
                    "select count(*) from job_queue"
                    " where status = 'processing' and budget_reserved is not null"
                )
                .fetchone()[0]
            )
            overspent = (
                conns["budgets"]
                .execute(
                    "select count(*) from spend_budgets_now"
                    " where spent_usd + reserved_usd > budget_usd"
                    " and key not in (select 'seller-' || g from generate_series(1, %s, 2) g)",
                    (GROUPS,),
                )
                .fetchone()[0]
            )
            taken_from_held = (
                conns["budgets"]
                .execute(
                    "select count(*) from job_queue where status <> 'pending'"
                    " and (substr(user_id, 8))::int % 2 = 1"
                )
                .fetchone()[0]
            )
        finally:
            for conn in conns.values():
                conn.close()

    print(f"\nclaim_jobs(w, {args.limit}), {args.jobs} jobs a round, {args.rounds} rounds")
    print("| config | claim µs/job, wall (median) | backend CPU µs/job (median) |")
    print("| --- | ---: | ---: |")
    for key in ("none", "budgets"):
        print(
            f"| {key} | {statistics.median(per_job[key]):.1f}"
            f" | {statistics.median(cpu_per_job[key]):.1f} |"
        )
    for name, values in (("wall", ratios), ("backend CPU", cpu_ratios)):
        print(
            f"budgets / none, {name}, per round: {', '.join(f'{x:.2f}' for x in values)};"
            f" median {statistics.median(values):.2f}"
        )
    print(
        f"running jobs left holding a reservation: {reserved};"
        f" groups past their budget: {overspent}; jobs taken from held groups: {taken_from_held}"
    )


if __name__ == "__main__":
    main()
