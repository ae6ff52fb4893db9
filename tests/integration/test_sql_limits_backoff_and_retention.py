"""Hardening in the database itself: bounded payloads and retries, a backoff that cannot
overflow, and retention. Called as users call them, from psql-like connections."""

from __future__ import annotations

import psycopg
import pytest
from psycopg.types.json import Jsonb

from tests.support import add_job, claim, fail_attempt, job, make_due


def nested(depth: int) -> str:
    """A JSON object `depth` levels deep, as text (too deep for Python's json to write)."""
    return '{"a":' * (depth - 1) + "{}" + "}" * (depth - 1)


def insert_text(conn: psycopg.Connection, payload: str) -> object:
    return conn.execute(
        "insert into job_queue (job_type, payload) values ('t', %s::jsonb) returning id", (payload,)
    ).fetchone()["id"]


def test_a_payload_nested_too_deep_is_refused_by_a_plain_insert_and_enqueue_job(conn):
    with pytest.raises(psycopg.errors.ProgramLimitExceeded, match="nests more than 64 levels"):
        insert_text(conn, nested(2000))
    with pytest.raises(psycopg.errors.ProgramLimitExceeded, match="nests more than 64 levels"):
        conn.execute("select enqueue_job('t', %s::jsonb)", (nested(65),))
    assert insert_text(conn, nested(64))  # exactly at the limit is fine
    assert conn.execute("select count(*) as n from job_queue").fetchone()["n"] == 1


def test_a_payload_over_the_size_limit_is_refused_and_the_limit_is_a_setting(conn):
    big = {"blob": "x" * (1024 * 1024)}
    with pytest.raises(
        psycopg.errors.ProgramLimitExceeded, match=r"payload is \d+ bytes; the limit is 1048576"
    ):
        add_job(conn, payload=big)
    conn.execute("update job_queue_settings set max_payload_bytes = 2000000")
    assert add_job(conn, payload=big)
    conn.execute("update job_queue_settings set max_payload_bytes = 100, max_payload_depth = 2")
    with pytest.raises(psycopg.errors.ProgramLimitExceeded, match="nests more than 2 levels"):
        add_job(conn, payload={"a": {"b": {}}})


def test_jsonb_depth_counts_levels_and_stops_early(conn):
    depth = lambda v, stop=1000: conn.execute(  # noqa: E731
        "select jsonb_depth(%s, %s) as d", (Jsonb(v), stop)
    ).fetchone()["d"]
    assert depth(1) == 0
    assert depth({}) == 1
    assert depth({"a": [1, {"b": []}]}) == 4
    deep = conn.execute("select jsonb_depth(%s::jsonb, 10) as d", (nested(500),)).fetchone()
    assert deep["d"] == 10


def test_max_retries_is_bounded_by_the_table(conn):
    with pytest.raises(
        psycopg.errors.InvalidParameterValue,
        match="max_retries must be an integer from 0 to 25, got 100",
    ):
        add_job(conn, max_retries=100)
    with pytest.raises(psycopg.errors.InvalidParameterValue, match="got 1000000"):
        conn.execute("select enqueue_job('t', '{}', null, 0, now(), 1000000)")
    job_id = add_job(conn, max_retries=25)
    with pytest.raises(psycopg.errors.InvalidParameterValue):
        conn.execute("update job_queue set max_retries = 26 where id = %s", (job_id,))


def test_backoff_never_overflows(conn):
    for n in (1, 20, 43, 44, 100, 2_000_000_000):
        wait = conn.execute("select extract(epoch from job_backoff(%s)) as s", (n,)).fetchone()["s"]
        assert 0 < wait <= 15 * 60


def test_a_failure_late_in_many_retries_is_recorded(conn):
    job_id = add_job(conn, max_retries=25)
    conn.execute("update job_queue set retry_count = 24 where id = %s", (job_id,))
    make_due(conn, job_id)
    claim(conn)
    assert fail_attempt(conn, job_id, "boom") == "pending"
    make_due(conn, job_id)
    claim(conn)
    assert fail_attempt(conn, job_id, "boom again") == "failed"
    assert job(conn, job_id)["error_message"] == "boom again (gave up after 26 attempts)"


def test_prune_deletes_old_finished_jobs_and_their_rows_and_keeps_the_rest(conn):
    def aged(status: str, days: int) -> object:
        job_id = add_job(conn)
        conn.execute(
            "update job_queue set status = %s, completed_at = now() - make_interval(days => %s)"
            " where id = %s",
            (status, days, job_id),
        )
        return job_id

    old_done = aged("completed", 15)
    new_done = aged("completed", 13)
    old_failed = aged("failed", 31)
    new_failed = aged("failed", 29)
    old_cancelled = aged("cancelled", 40)
    pending = add_job(conn)
    conn.execute(
        "insert into generated_images (job_id, project_id, kind, slot, storage_path, url, width,"
        " height, mime_type, provider, model) values (%s, 'p', 'main', 'main', 'p/x/main.jpg',"
        " 'u', 1, 1, 'image/jpeg', 'demo', 'm')",
        (old_done,),
    )
    rows = dict(
        (r["kind"], r["deleted"])
        for r in conn.execute("select * from prune_jobs(p_batch => 1)").fetchall()
    )
    assert rows["completed"] == 1 and rows["failed_or_cancelled"] == 2
    left = {r["id"] for r in conn.execute("select id from job_queue").fetchall()}
    assert left == {new_done, new_failed, pending}
    assert old_failed not in left and old_cancelled not in left
    assert conn.execute("select count(*) as n from generated_images").fetchone()["n"] == 0
    # Arguments override the settings.
    rows = dict(
        (r["kind"], r["deleted"])
        for r in conn.execute("select * from prune_jobs(interval '1 day')").fetchall()
    )
    assert rows["completed"] == 1
