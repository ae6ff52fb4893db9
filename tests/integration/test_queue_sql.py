"""The queue's SQL functions, called as users call them from psql, on a real PostgreSQL."""

from __future__ import annotations

import threading
import uuid
from collections import Counter
from datetime import timedelta

import psycopg
import pytest
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from tests.support import add_job, claim, fail_attempt, job, make_due


def expire_lease(conn: psycopg.Connection, job_id: uuid.UUID) -> None:
    conn.execute(
        "update job_queue set locked_until = now() - interval '1 second' where id = %s", (job_id,)
    )


def test_claim_order_is_priority_then_run_at_then_created_at(conn):
    # One global order is what fair share off gives (with it on, groups take turns within a
    # priority, and a group's jobs run in the order they became due: test_fair_scheduling).
    conn.execute("update job_queue_settings set fair_share = false")
    low = add_job(conn, priority=0, run_at="2020-01-01")
    high_late = add_job(conn, priority=5, run_at="2020-01-03")
    high_early = add_job(conn, priority=5, run_at="2020-01-02")
    same_time_first = add_job(conn, priority=1, run_at="2020-01-01")
    same_time_second = add_job(conn, priority=1, run_at="2020-01-01")
    order = [claim(conn)[0]["id"] for _ in range(5)]
    assert order == [high_early, high_late, same_time_first, same_time_second, low]
    assert claim(conn) == []


def test_jobs_not_yet_due_and_finished_jobs_are_not_claimed(conn):
    add_job(conn, run_at="2999-01-01")
    add_job(conn, status="completed")
    add_job(conn, status="failed")
    add_job(conn, status="cancelled")
    assert claim(conn, limit=10) == []


def test_claim_filters_by_job_type(conn):
    a = add_job(conn, "a")
    b = add_job(conn, "b")
    assert [j["id"] for j in claim(conn, 10, ["b"])] == [b]
    assert [j["id"] for j in claim(conn, 10, ["a", "c"])] == [a]


def test_claim_sets_a_fresh_lease_and_start_time(conn):
    job_id = add_job(conn)
    row = claim(conn, lease="90 seconds")[0]
    assert row["status"] == "processing"
    assert row["locked_by"] == "w1"
    assert row["lease_token"] is not None
    remaining = (row["locked_until"] - row["processed_at"]).total_seconds()
    assert 89 <= remaining <= 91
    assert job(conn, job_id)["lease_token"] == row["lease_token"]


def test_mark_job_processing_only_moves_pending_jobs(conn):
    job_id = add_job(conn)
    first = conn.execute("select * from mark_job_processing(%s, 'a')", (job_id,)).fetchall()
    second = conn.execute("select * from mark_job_processing(%s, 'b')", (job_id,)).fetchall()
    assert len(first) == 1 and first[0]["locked_by"] == "a"
    assert second == []
    assert job(conn, job_id)["locked_by"] == "a"


def test_get_next_job_skips_jobs_locked_by_another_transaction(conn, database_url):
    first = add_job(conn, priority=1)
    second = add_job(conn, priority=0)
    with psycopg.connect(database_url, row_factory=dict_row) as other:
        locked = other.execute("select * from get_next_job()").fetchone()
        assert locked["id"] == first
        # While `other` holds the row lock, a second claimer moves on to the next job.
        assert conn.execute("select * from get_next_job()").fetchone()["id"] == second


def test_eight_concurrent_claimers_claim_each_of_500_jobs_exactly_once(conn, database_url):
    conn.execute("insert into job_queue (job_type) select 't' from generate_series(1, 500)")
    claimed: list[uuid.UUID] = []
    lock = threading.Lock()
    barrier = threading.Barrier(8)

    def claimer(n: int) -> None:
        with psycopg.connect(database_url, autocommit=True) as c:
            barrier.wait()
            while True:
                rows = c.execute("select id from claim_jobs(%s, 3)", (f"w{n}",)).fetchall()
                if not rows:
                    return
                with lock:
                    claimed.extend(r[0] for r in rows)

    threads = [threading.Thread(target=claimer, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    counts = Counter(claimed)
    assert len(counts) == 500
    assert max(counts.values()) == 1
    workers = conn.execute("select count(distinct locked_by) from job_queue").fetchone()["count"]
    assert workers > 1  # the claimers really did run side by side


def test_only_the_current_lease_holder_can_complete(conn):
    job_id = add_job(conn)
    token = claim(conn)[0]["lease_token"]
    wrong = conn.execute("select mark_job_completed(%s, %s, '{}')", (job_id, uuid.uuid4()))
    assert wrong.fetchone()["mark_job_completed"] is False
    assert job(conn, job_id)["status"] == "processing"
    ok = conn.execute("""select mark_job_completed(%s, %s, '{"n": 1}')""", (job_id, token))
    assert ok.fetchone()["mark_job_completed"] is True
    row = job(conn, job_id)
    assert (row["status"], row["result"], row["lease_token"]) == ("completed", {"n": 1}, None)
    assert row["completed_at"] is not None
    again = conn.execute("select mark_job_completed(%s, %s, '{}')", (job_id, token))
    assert again.fetchone()["mark_job_completed"] is False


def test_a_late_worker_changes_nothing_after_its_job_was_requeued_and_reclaimed(conn):
    job_id = add_job(conn)
    old = claim(conn)[0]["lease_token"]
    expire_lease(conn, job_id)
    assert conn.execute("select requeue_expired_jobs()").fetchone()["requeue_expired_jobs"] == 1
    new = claim(conn)[0]["lease_token"]
    assert new != old
    for stmt in (
        "select mark_job_completed(%s, %s, '{}') as r",
        "select mark_job_failed(%s, %s, 'late', false) as r",
        "select extend_job_lease(%s, %s) as r",
    ):
        result = conn.execute(stmt, (job_id, old)).fetchone()["r"]
        assert result in (False, None)
    row = job(conn, job_id)
    assert (row["status"], row["lease_token"]) == ("processing", new)


def test_max_retries_three_means_four_attempts(conn):
    job_id = add_job(conn)  # max_retries defaults to 3
    statuses = []
    for _ in range(4):
        make_due(conn, job_id)
        assert [r["id"] for r in claim(conn)] == [job_id]
        statuses.append(fail_attempt(conn, job_id, f"boom {len(statuses) + 1}"))
    assert statuses == ["pending", "pending", "pending", "failed"]
    row = job(conn, job_id)
    assert row["retry_count"] == 3
    assert row["error_message"] == "boom 4 (gave up after 4 attempts)"
    assert [e["attempt"] for e in row["errors"]] == [1, 2, 3, 4]
    assert [e["error"] for e in row["errors"]] == ["boom 1", "boom 2", "boom 3", "boom 4"]
    assert row["completed_at"] is not None


def test_max_retries_zero_fails_on_the_first_failure(conn):
    job_id = add_job(conn, max_retries=0)
    claim(conn)
    assert fail_attempt(conn, job_id) == "failed"


def test_a_non_retryable_failure_ends_failed_at_once(conn):
    job_id = add_job(conn)
    claim(conn)
    assert fail_attempt(conn, job_id, "bad payload: product.name missing", False) == "failed"
    row = job(conn, job_id)
    assert row["retry_count"] == 0
    assert row["errors"][0]["retryable"] is False


def test_retry_backoff_grows_exponentially_within_jitter_bounds(conn):
    job_id = add_job(conn, max_retries=5)
    for retry in range(1, 6):
        make_due(conn, job_id)
        claim(conn)
        before = conn.execute("select now() as t").fetchone()["t"]
        assert fail_attempt(conn, job_id) == "pending"
        delay = job(conn, job_id)["run_at"] - before
        full = timedelta(seconds=10 * 2 ** (retry - 1))
        assert full / 2 - timedelta(seconds=1) <= delay <= full + timedelta(seconds=1), retry


def test_backoff_is_capped_and_jittered(conn):
    delays = [
        r["d"].total_seconds()
        for r in conn.execute("select job_backoff(20) as d from generate_series(1, 200)").fetchall()
    ]
    assert all(450 <= d <= 900 for d in delays)  # cap 15 min, jitter down to half
    assert len(set(delays)) > 150


def test_expired_lease_is_requeued_and_counts_the_attempt(conn):
    job_id = add_job(conn)
    claim(conn)
    expire_lease(conn, job_id)
    assert conn.execute("select requeue_expired_jobs() as n").fetchone()["n"] == 1
    row = job(conn, job_id)
    assert (row["status"], row["retry_count"], row["lease_token"]) == ("pending", 1, None)
    assert "lease expired" in row["error_message"]
    assert row["errors"][0]["attempt"] == 1


def test_live_leases_are_not_requeued(conn):
    add_job(conn)
    claim(conn)
    assert conn.execute("select requeue_expired_jobs() as n").fetchone()["n"] == 0


def test_expired_lease_on_the_last_attempt_fails_the_job(conn):
    job_id = add_job(conn, max_retries=1)
    claim(conn)
    expire_lease(conn, job_id)
    conn.execute("select requeue_expired_jobs()")
    claim(conn)
    expire_lease(conn, job_id)
    conn.execute("select requeue_expired_jobs()")
    row = job(conn, job_id)
    assert row["status"] == "failed"
    assert len(row["errors"]) == 2


def test_extend_job_lease_moves_the_expiry(conn):
    job_id = add_job(conn)
    row = claim(conn, lease="5 seconds")[0]
    new = conn.execute(
        "select extend_job_lease(%s, %s, '10 minutes') as t", (job_id, row["lease_token"])
    ).fetchone()["t"]
    assert new - row["locked_until"] > timedelta(minutes=9)


def test_enqueue_job_validates_and_dedupes_on_idempotency_key(conn):
    first = conn.execute(
        "select enqueue_job('t', '{\"a\": 1}', 'u1', p_idempotency_key => 'k')"
    ).fetchone()["enqueue_job"]
    second = conn.execute(
        "select enqueue_job('t', '{\"a\": 2}', 'u1', p_idempotency_key => 'k')"
    ).fetchone()["enqueue_job"]
    assert first == second
    assert conn.execute("select count(*) from job_queue").fetchone()["count"] == 1
    assert job(conn, first)["payload"] == {"a": 1}
    with pytest.raises(psycopg.errors.InvalidParameterValue, match="payload must be a JSON object"):
        conn.execute("select enqueue_job('t', '[1, 2]')")
    with pytest.raises(psycopg.errors.InvalidParameterValue, match="job_type"):
        conn.execute("select enqueue_job('  ', '{}')")


def test_a_plain_insert_gets_every_default(conn):
    job_id = add_job(conn, "t")
    row = job(conn, job_id)
    assert (row["status"], row["retry_count"], row["max_retries"], row["errors"]) == (
        "pending",
        0,
        3,
        [],
    )


def test_payload_must_be_an_object(conn):
    with pytest.raises(
        psycopg.errors.InvalidParameterValue, match="must be a JSON object, got string"
    ):
        conn.execute("insert into job_queue (job_type, payload) values ('t', '\"text\"')")


def test_cancel_revokes_the_lease_and_retry_requeues(conn):
    job_id = add_job(conn)
    token = claim(conn)[0]["lease_token"]
    assert conn.execute("select cancel_job(%s) as ok", (job_id,)).fetchone()["ok"] is True
    late = conn.execute("select mark_job_completed(%s, %s) as ok", (job_id, token)).fetchone()
    assert late["ok"] is False
    assert job(conn, job_id)["status"] == "cancelled"
    assert conn.execute("select cancel_job(%s) as ok", (job_id,)).fetchone()["ok"] is False
    assert conn.execute("select retry_job(%s) as ok", (job_id,)).fetchone()["ok"] is True
    assert [r["id"] for r in claim(conn)] == [job_id]


def test_the_claim_uses_the_partial_index(conn):
    conn.execute("""insert into job_queue (job_type, status)
                    select 't', 'completed' from generate_series(1, 20000)""")
    conn.execute("insert into job_queue (job_type) select 't' from generate_series(1, 50)")
    conn.execute("analyze job_queue")
    plan = conn.execute("""explain select * from job_queue where status = 'pending'
                           and run_at <= now() order by priority desc, run_at, created_at
                           limit 1 for update skip locked""").fetchall()
    text = "\n".join(r["QUERY PLAN"] for r in plan)
    assert "job_queue_claim_idx" in text
    size = conn.execute("select pg_relation_size('job_queue_claim_idx') as s").fetchone()["s"]
    assert size <= 8192 * 4  # 50 pending rows, whatever the 20,000 finished ones


def test_anonymous_roles_cannot_call_the_queue_functions(conn):
    conn.execute("create role nobody_in_particular")
    conn.execute("set role nobody_in_particular")
    try:
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("select * from claim_jobs('x')")
    finally:
        conn.execute("reset role")
        conn.execute("drop role nobody_in_particular")


def test_a_batch_claim_takes_jobs_in_get_next_jobs_order(conn):
    low = add_job(conn, priority=0, run_at="2020-01-01")
    high_late = add_job(conn, priority=5, run_at="2020-01-03")
    high_early = add_job(conn, priority=5, run_at="2020-01-02")
    first = add_job(conn, priority=1, run_at="2020-01-01")
    second = add_job(conn, priority=1, run_at="2020-01-01")
    add_job(conn, run_at="2999-01-01")  # not due
    batch = claim(conn, limit=4)
    assert [r["id"] for r in batch] == [high_early, high_late, first, second]
    assert {r["status"] for r in batch} == {"processing"}
    assert len({r["lease_token"] for r in batch}) == 4
    assert [r["id"] for r in claim(conn, limit=4)] == [low]


def test_batch_claims_skip_rows_another_claimer_holds(conn, database_url):
    ids = [add_job(conn) for _ in range(6)]
    with psycopg.connect(database_url, row_factory=dict_row) as other:
        held = other.execute("select * from claim_jobs('w2', 2)").fetchall()  # not committed
        mine = claim(conn, limit=10)
        other.rollback()
    assert {r["id"] for r in held} == set(ids[:2])
    assert {r["id"] for r in mine} == set(ids[2:])


def batch_args(rows: list[dict], tokens: list[uuid.UUID] | None = None) -> tuple[list, list]:
    return [r["id"] for r in rows], tokens or [r["lease_token"] for r in rows]


def test_a_batched_completion_never_completes_a_job_whose_lease_token_is_stale(conn):
    for _ in range(3):
        add_job(conn)
    rows = claim(conn, limit=3)
    stale = rows[1]
    expire_lease(conn, stale["id"])
    conn.execute("select requeue_expired_jobs()")
    [reclaimed] = claim(conn)  # someone else holds it now, under a new token
    assert reclaimed["id"] == stale["id"] and reclaimed["lease_token"] != stale["lease_token"]

    ids, tokens = batch_args(rows)
    done = conn.execute(
        "select c.id from complete_jobs(%s, %s, %s::jsonb[]) as c(id)",
        (ids, tokens, [Jsonb({"n": 1}), Jsonb({"n": 2}), Jsonb({"n": 3})]),
    ).fetchall()
    assert {r["id"] for r in done} == {rows[0]["id"], rows[2]["id"]}
    assert job(conn, rows[0]["id"])["result"] == {"n": 1}
    still = job(conn, stale["id"])
    assert (still["status"], still["result"]) == ("processing", None)
    assert still["lease_token"] == reclaimed["lease_token"]


def test_batched_failures_follow_the_retry_rules_and_skip_stale_leases(conn):
    retry = add_job(conn, max_retries=3)
    last = add_job(conn, max_retries=0)
    permanent = add_job(conn, max_retries=3)
    lost = add_job(conn)
    rows = {r["id"]: r for r in claim(conn, limit=4)}
    ids = [retry, last, permanent, lost]
    tokens = [rows[i]["lease_token"] for i in ids[:3]] + [uuid.uuid4()]
    result = conn.execute(
        "select job_id, new_status from fail_jobs(%s, %s, %s, %s)",
        (ids, tokens, ["boom", "boom", "bad input", "late"], [True, True, False, True]),
    ).fetchall()
    assert {r["job_id"]: r["new_status"] for r in result} == {
        retry: "pending",
        last: "failed",
        permanent: "failed",
    }
    retried = job(conn, retry)
    assert retried["retry_count"] == 1 and retried["run_at"] > retried["updated_at"]
    assert retried["errors"][0]["error"] == "boom"
    assert job(conn, permanent)["errors"][0]["retryable"] is False
    assert job(conn, lost)["status"] == "processing"


def test_batched_lease_extension_reports_which_leases_are_still_held(conn):
    a, b = add_job(conn), add_job(conn)
    rows = claim(conn, limit=2, lease="5 seconds")
    conn.execute("select cancel_job(%s)", (b,))
    before = job(conn, a)["locked_until"]
    held = conn.execute(
        "select e.id from extend_job_leases(%s, %s, interval '60 seconds') as e(id)",
        batch_args(rows),
    ).fetchall()
    assert [r["id"] for r in held] == [a]
    assert job(conn, a)["locked_until"] - before > timedelta(seconds=50)
