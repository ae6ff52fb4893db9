"""Credits, when on: reserved at insert (enqueue_job and a plain INSERT alike), charged exactly
once on completion, released on failure or cancellation, never below zero, under retries, lease
loss and concurrent enqueues. The balance is derivable from the append-only ledger."""

from __future__ import annotations

import threading

import psycopg
import pytest
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from tests.support import TOKEN

PAYLOAD = Jsonb({"project_id": "p1", "product": {"name": "Mug"}})


@pytest.fixture
def credits_on(conn):
    conn.execute("update job_queue_settings set credits_enabled = true")
    return conn


def balance(conn, user: str) -> dict:
    row = conn.execute("select * from credit_balances where user_id = %s", (user,)).fetchone()
    assert row["available"] == row["ledger_available"]  # the cache agrees with the ledger
    return row


def enqueue(conn, user: str | None, job_type: str = "generate-image", payload=PAYLOAD):
    return conn.execute(
        "select enqueue_job(%s, %s, %s) as id", (job_type, payload, user)
    ).fetchone()["id"]


def claim(conn, job_id):
    return conn.execute(
        "select lease_token from claim_jobs('w', 1) where id = %s", (job_id,)
    ).fetchone()["lease_token"]


def test_off_by_default_nothing_is_reserved(conn):
    enqueue(conn, "nobody")
    assert conn.execute("select count(*) as n from credit_ledger").fetchone()["n"] == 0


def test_a_short_balance_refuses_the_insert_plain_or_through_enqueue_job(credits_on):
    conn = credits_on
    assert conn.execute("select grant_credits('alice', 5) as a").fetchone()["a"] == 5
    with pytest.raises(psycopg.errors.InsufficientResources, match="alice has 5, the job needs 6"):
        enqueue(conn, "alice", "generate-complete-pack")
    with pytest.raises(psycopg.errors.InsufficientResources, match="needs 12"):
        conn.execute(
            "insert into job_queue (job_type, payload, user_id) values"
            " ('generate-complete-pack', %s, 'alice')",
            (Jsonb({"project_id": "p", "product": {"name": "M"}, "include_aplus": True}),),
        )
    with pytest.raises(psycopg.errors.InsufficientResources, match="bob has no credit account"):
        enqueue(conn, "bob")
    with pytest.raises(psycopg.errors.InvalidParameterValue, match="needs a user_id"):
        enqueue(conn, None)
    assert conn.execute("select count(*) as n from job_queue").fetchone()["n"] == 0
    enqueue(conn, "ops", "thumbnail")  # not a built-in type: no price, no account needed
    conn.execute("select set_credits_unlimited('vip', true)")
    enqueue(conn, "vip", "generate-complete-pack")
    assert balance(conn, "alice")["available"] == 5


def test_charged_once_on_completion_after_retries_and_a_lost_lease(credits_on):
    conn = credits_on
    conn.execute("select grant_credits('alice', 10)")
    job = enqueue(conn, "alice")
    assert balance(conn, "alice")["available"] == 9
    # Attempt 1 fails (retryable): still held.
    token = claim(conn, job)
    conn.execute("select fail_jobs(array[%s], array[%s], array['boom'], array[true])",
                 (job, token))  # fmt: skip
    assert balance(conn, "alice")["held"] == 1
    # Attempt 2 loses its lease; the job is put back; attempt 3 completes.
    conn.execute("update job_queue set run_at = now() where id = %s", (job,))
    stale = claim(conn, job)
    conn.execute("update job_queue set locked_until = now() - interval '1 s' where id = %s",
                 (job,))  # fmt: skip
    conn.execute("select requeue_expired_jobs()")
    conn.execute("update job_queue set run_at = now() where id = %s", (job,))
    token = claim(conn, job)
    assert not conn.execute("select mark_job_completed(%s, %s) as ok", (job, stale)).fetchone()[
        "ok"
    ]
    assert conn.execute("select mark_job_completed(%s, %s) as ok", (job, token)).fetchone()["ok"]
    assert not conn.execute("select mark_job_completed(%s, %s) as ok", (job, token)).fetchone()[
        "ok"
    ]
    b = balance(conn, "alice")
    assert (b["available"], b["held"], b["spent"]) == (9, 0, 1)
    kinds = [
        r["kind"]
        for r in conn.execute(
            "select kind from credit_ledger where job_id = %s order by id", (job,)
        ).fetchall()
    ]
    assert kinds == ["reserve", "charge"]


def test_released_on_failure_and_cancel_and_reserved_again_on_retry(credits_on):
    conn = credits_on
    conn.execute("select grant_credits('alice', 7)")
    failing = enqueue(conn, "alice")
    cancelled = enqueue(conn, "alice", "generate-complete-pack")
    assert balance(conn, "alice")["available"] == 0
    token = claim(conn, failing)
    conn.execute("select fail_jobs(array[%s], array[%s], array['bad'], array[false])",
                 (failing, token))  # fmt: skip
    conn.execute("select cancel_job(%s)", (cancelled,))
    b = balance(conn, "alice")
    assert (b["available"], b["held"], b["spent"]) == (7, 0, 0)
    assert conn.execute("select retry_job(%s) as ok", (failing,)).fetchone()["ok"]
    assert balance(conn, "alice")["available"] == 6
    conn.execute("select enqueue_job('generate-complete-pack', %s, 'alice')", (PAYLOAD,))
    with pytest.raises(psycopg.errors.InsufficientResources, match="has 0, the job needs 1"):
        conn.execute("select enqueue_job('generate-image', %s, 'alice')", (PAYLOAD,))
    assert balance(conn, "alice")["available"] == 0


def test_the_ledger_is_append_only(credits_on):
    credits_on.execute("select grant_credits('alice', 3)")
    with pytest.raises(psycopg.errors.InsufficientPrivilege, match="append-only"):
        credits_on.execute("update credit_ledger set amount = 1000")
    with pytest.raises(psycopg.errors.InsufficientPrivilege, match="append-only"):
        credits_on.execute("delete from credit_ledger")


def test_twenty_parallel_enqueues_on_a_balance_for_five(credits_on, database_url):
    credits_on.execute("select grant_credits('alice', 5)")
    barrier = threading.Barrier(20)
    results: list[str] = []

    def enqueue_one() -> None:
        with psycopg.connect(database_url, autocommit=True, row_factory=dict_row) as c:
            barrier.wait()
            try:
                c.execute("select enqueue_job('generate-image', %s, 'alice')", (PAYLOAD,))
                results.append("ok")
            except psycopg.errors.InsufficientResources as exc:
                assert "insufficient credits" in str(exc)
                results.append("refused")

    threads = [threading.Thread(target=enqueue_one) for _ in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results) == ["ok"] * 5 + ["refused"] * 15
    b = balance(credits_on, "alice")
    assert (b["available"], b["held"]) == (0, 5)
    assert credits_on.execute("select count(*) as n from job_queue").fetchone()["n"] == 5


def test_a_pack_run_by_the_service_is_charged_once_and_a_refused_one_never_runs(
    make_service, credits_on
):
    import httpx

    conn = credits_on
    server = make_service()
    conn.execute("select grant_credits('alice', 8)")
    job = enqueue(conn, "alice", "generate-complete-pack")
    with pytest.raises(psycopg.errors.InsufficientResources):
        enqueue(conn, "alice", "generate-complete-pack")
    auth = {"Authorization": f"Bearer {TOKEN}"}
    for _ in range(5):  # the pack, its six images (which reserve nothing), the pack again
        httpx.post(
            f"{server.url}/process-jobs", json={"wait": True, "limit": 5}, headers=auth, timeout=60
        )
    assert (
        conn.execute("select status from job_queue where id = %s", (job,)).fetchone()["status"]
        == "completed"
    )
    assert (
        conn.execute(
            "select count(*) as n from credit_ledger where job_id <> %s", (job,)
        ).fetchone()["n"]
        == 0
    )
    b = balance(conn, "alice")
    assert (b["available"], b["held"], b["spent"]) == (2, 0, 6)
    assert (
        conn.execute(
            "select count(*) as n from credit_ledger where job_id = %s and kind = 'charge'", (job,)
        ).fetchone()["n"]
        == 1
    )


def test_a_dependent_cancelled_at_insert_holds_nothing_and_a_retry_reserves_once(credits_on):
    conn = credits_on
    conn.execute("select grant_credits('alice', 10)")
    first = enqueue(conn, "alice")
    conn.execute("select cancel_job(%s)", (first,))
    after = conn.execute(
        "select enqueue_job('generate-image', %s, 'alice', p_depends_on => array[%s]::uuid[]) "
        "as id",
        (PAYLOAD, first),
    ).fetchone()["id"]
    row = conn.execute("select status from job_queue where id = %s", (after,)).fetchone()
    assert row["status"] == "cancelled"  # its dependency was cancelled already
    assert balance(conn, "alice")["held"] == 0
    conn.execute("select retry_job(%s)", (first,))  # re-opens the dependent: both pay again
    b = balance(conn, "alice")
    assert (b["held"], b["available"]) == (2, 8)
