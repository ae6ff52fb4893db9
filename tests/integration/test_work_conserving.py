"""A processor keeps its slots full without being called again: it refills a freed slot while
due jobs wait, and wakes by itself when a pending job's time arrives."""

from __future__ import annotations

import time

from tests.support import post, wait_until


def counts(conn) -> dict[str, int]:
    rows = conn.execute("select status, count(*) as n from job_queue group by status")
    return {r["status"]: r["n"] for r in rows}


def test_one_drain_call_runs_a_backlog_longer_than_drain_seconds(make_service, conn, handler):
    # 12 jobs of 0.3 s on 2 slots take about 1.8 s: longer than the 0.5 s drain window, which
    # used to end the drain with jobs still due.
    server = make_service({"MAX_RUNNING_JOBS": "2", "DRAIN_SECONDS": "0.5"})
    conn.execute("""insert into job_queue (job_type, payload)
                    select 'ok', '{"respond": {"delay": 0.3}}' from generate_series(1, 12)""")
    assert post(server, {"drain": True, "limit": 2}).status_code == 200
    wait_until(lambda: counts(conn) == {"completed": 12}, 15, "12 completions from one call")
    assert handler.most_in_flight == 2
    # No slot sat idle while jobs waited: each start follows the previous finish closely.
    gaps = conn.execute("""
        select max(gap) as worst from (
            select processed_at - lag(processed_at, 2) over (order by processed_at) as gap
            from job_queue) g""").fetchone()["worst"]
    assert gaps.total_seconds() < 0.6


def test_a_job_whose_run_at_arrives_starts_without_any_call(make_service, conn, handler):
    server = make_service({"DRAIN_SECONDS": "0.5"})
    job_id = conn.execute(
        "insert into job_queue (job_type, run_at) values ('ok', now() + interval '2.5 seconds') "
        "returning id"
    ).fetchone()["id"]
    started = time.monotonic()
    assert post(server, {"drain": True}).json()["claimed"] == []  # not due yet
    wait_until(lambda: counts(conn) == {"completed": 1}, 10, "the job at its run_at")
    assert handler.calls_for(job_id)
    late = conn.execute(
        "select extract(epoch from processed_at - run_at) as s from job_queue where id = %s",
        (job_id,),
    ).fetchone()["s"]
    assert 0 <= late < 0.5  # started at its time: the drain window had closed 2 s before
    assert time.monotonic() - started >= 2.0


def test_a_retry_whose_backoff_runs_out_runs_without_any_call(make_service, conn, handler):
    server = make_service({"DRAIN_SECONDS": "0.5"})
    conn.execute(
        """insert into job_queue (job_type, payload, max_retries)
           values ('flaky', '{"respond": {"fail_times": 1}}', 2)"""
    )
    assert len(post(server, {"drain": True}).json()["claimed"]) == 1
    wait_until(lambda: counts(conn) == {"completed": 1}, 20, "the retry after its backoff")
    assert conn.execute("select retry_count from job_queue").fetchone()["retry_count"] == 1
