"""Operating at scale: the autoscaling number, bulk retry and cancel by filter (with what a
retry has paid and may still cost), and the table-health view."""

from __future__ import annotations

import uuid
from decimal import Decimal

import psycopg
import pytest
from psycopg.types.json import Jsonb


def add(conn, n: int, job_type: str = "ok", status: str = "pending", **cols) -> list[uuid.UUID]:
    names = ["job_type", "status", *cols]
    values = [job_type, status, *cols.values()]
    extra = ", ".join(["%s"] * len(values))
    return [
        conn.execute(
            f"insert into job_queue ({', '.join(names)}) values ({extra}) returning id", values
        ).fetchone()["id"]
        for _ in range(n)
    ]


def metric(conn, job_types: list[str] | None = None, slots: int | None = 4) -> float:
    return conn.execute(
        "select processor_scaling_metric(%s, %s) as v", (job_types, slots)
    ).fetchone()["v"]


def test_the_scaling_metric_is_running_plus_due_work_per_slot(conn):
    assert metric(conn) == 0
    add(conn, 6, "a")  # due now
    add(conn, 3, "a", run_at="2999-01-01")  # not due: no processor needed for them yet
    add(conn, 2, "b", status="processing", locked_until="2999-01-01", lease_token=uuid.uuid4())
    assert metric(conn) == (6 + 2) / 4
    assert metric(conn, ["a"]) == 6 / 4
    assert metric(conn, ["b"], slots=1) == 2
    # A paused type needs no processor; a capped type counts only what its cap leaves room for.
    conn.execute("select pause_job_type('a')")
    assert metric(conn) == 2 / 4
    conn.execute("select resume_job_type('a')")
    conn.execute("select set_job_type_limit('a', 1)")
    assert metric(conn) == (1 + 2) / 4
    conn.execute("select set_job_type_limit('b', 2)")  # at its cap already: 2 running count
    add(conn, 5, "b")
    assert metric(conn) == (1 + 2) / 4
    # Without p_slots it divides by what processor serve recorded (MAX_RUNNING_JOBS).
    conn.execute("update job_queue_settings set slots_per_processor = 3")
    assert metric(conn, slots=None) == 1
    with pytest.raises(
        psycopg.errors.InvalidParameterValue, match="slots must be an integer of at least 1"
    ):
        metric(conn, slots=0)


def test_the_keda_query_runs_against_the_schema_and_gives_100_per_slot_of_work(conn):
    from tests.unit.test_kubernetes_manifests import by_kind

    query = by_kind("keda")["ScaledObject"]["spec"]["triggers"][0]["metadata"]["query"]
    conn.execute("update job_queue_settings set slots_per_processor = 4")
    assert list(conn.execute(query).fetchone().values()) == [0]
    conn.execute("insert into job_queue (job_type) select 'ok' from generate_series(1, 6)")
    assert list(conn.execute(query).fetchone().values()) == [150]  # 6 due / 4 slots: 2 pods


def test_the_scaling_metric_counts_a_deep_backlog_only_up_to_100_processors(conn):
    conn.execute("insert into job_queue (job_type) select 'a' from generate_series(1, 500)")
    assert metric(conn, slots=2) == 100  # 200 counted of 500: enough for any fleet
    assert metric(conn, slots=10) == 50


def failed(conn, n: int, job_type: str = "ok", error: str = "provider down", **cols):
    return add(
        conn,
        n,
        job_type,
        status="failed",
        error_message=error,
        retry_count=3,
        completed_at=cols.pop("completed_at", "2026-12-01 10:00+00"),
        **cols,
    )


def retry(conn, **kw) -> list[dict]:
    args = ", ".join(f"p_{k} => %({k})s" for k in kw)
    return conn.execute(f"select * from retry_jobs({args})", kw).fetchall()


def test_bulk_retry_takes_exactly_the_filtered_jobs_and_a_dry_run_changes_nothing(conn):
    target = failed(conn, 3, "generate-image", user_id="u1", error="OpenAI 503: overloaded")
    failed(conn, 2, "generate-image", user_id="u2", error="OpenAI 503: overloaded")
    failed(conn, 2, "generate-image", user_id="u1", error="bad payload: no prompt")
    failed(conn, 1, "generate-image", user_id="u1", error="openai 503", completed_at="2026-11-01")
    failed(conn, 2, "other", user_id="u1", error="OpenAI 503: overloaded")
    add(conn, 1, "generate-image", user_id="u1", error_message="OpenAI 503")  # pending
    before = conn.execute("select id, status, updated_at from job_queue order by id").fetchall()

    filters = dict(
        job_type="generate-image",
        user_id="u1",
        error="openai 503",
        since="2026-11-30",
        until="2026-12-02",
    )
    dry = retry(conn, **filters, dry_run=True)
    assert sorted(r["job_id"] for r in dry) == sorted(target)
    assert {r["reason"] for r in dry} == {"dry run: would go back to pending"}
    assert not any(r["retried"] for r in dry)
    assert (
        conn.execute("select id, status, updated_at from job_queue order by id").fetchall()
        == before
    )

    done = retry(conn, **filters, limit=2)
    assert len(done) == 2 and all(r["retried"] for r in done)
    statuses = {
        r["id"]: r
        for r in conn.execute(
            "select id, status, retry_count from job_queue where id = any(%s)", (target,)
        )
    }
    assert sorted(r["status"] for r in statuses.values()) == ["failed", "pending", "pending"]
    assert all(r["retry_count"] == 0 for r in statuses.values() if r["status"] == "pending")
    assert len(retry(conn, **filters)) == 1  # the third; the other jobs were never selected
    assert (
        conn.execute("select count(*) as n from job_queue where status = 'failed'").fetchone()["n"]
        == 7
    )


def test_a_dry_run_says_what_was_paid_and_the_most_a_retry_of_the_missing_images_costs(conn):
    pack = failed(conn, 1, "generate-complete-pack", user_id="u1")[0]
    image = failed(conn, 1, "generate-image", user_id="u1")[0]
    for slot in ("main", "lifestyle", "infographic", "detail"):  # 4 of the pack's 6 are stored
        conn.execute(
            "insert into generated_images (job_id, user_id, kind, slot, storage_path, url, width,"
            " height, mime_type, provider, model) values (%s, 'u1', %s, %s, 'p', 'u', 1, 1,"
            " 'image/png', 'openai', 'gpt-image-1')",
            (pack, slot, slot),
        )
    for job, cost, status in (
        (pack, "0.04", "ok"),
        (pack, "0.06", "ok"),
        (pack, "0.02", "ok"),
        (pack, "0.03", "transient"),
        (image, "0.05", "ok"),
    ):
        conn.execute(
            "insert into provider_calls (job_id, attempt, user_id, provider, model, operation,"
            " status, duration_ms, cost_usd) values (%s, 1, 'u1', 'openai', 'gpt-image-1',"
            " 'image', %s, 1000, %s)",
            (job, status, cost),
        )
    rows = {r["job_id"]: r for r in retry(conn, dry_run=True)}
    assert rows[pack]["items_needed"] == 6 and rows[pack]["items_stored"] == 4
    assert rows[pack]["paid_usd"] == Decimal("0.15")
    assert rows[pack]["max_retry_usd"] == Decimal("0.12")  # dearest ok call of packs
    assert rows[image]["items_needed"] == 1 and rows[image]["items_stored"] == 0
    assert rows[image]["max_retry_usd"] == Decimal("0.05")
    custom = failed(conn, 1, "my-own-type")[0]
    assert {r["job_id"]: r for r in retry(conn, dry_run=True)}[custom]["max_retry_usd"] is None


def test_bulk_retry_with_credits_on_skips_a_job_its_user_cannot_pay_for_again(conn):
    conn.execute("insert into credit_prices (job_type, credits) values ('paid', 2)")
    conn.execute("select grant_credits('rich', 10), grant_credits('poor', 1)")
    rich = failed(conn, 1, "paid", user_id="rich")[0]
    poor = failed(conn, 1, "paid", user_id="poor")[0]
    conn.execute("update job_queue_settings set credits_enabled = true")
    rows = {r["job_id"]: r for r in retry(conn, job_type="paid")}
    assert rows[rich]["retried"] and rows[rich]["reason"] is None
    assert not rows[poor]["retried"]
    assert rows[poor]["reason"] == "insufficient credits: user poor has 1, the job needs 2"
    status = {
        r["id"]: r["status"]
        for r in conn.execute(
            "select id, status from job_queue where id = any(%s)", ([rich, poor],)
        )
    }
    assert status == {rich: "pending", poor: "failed"}


def test_bulk_cancel_takes_the_filtered_pending_jobs(conn):
    mine = add(conn, 3, "generate-image", user_id="u1")
    add(conn, 2, "generate-image", user_id="u2")
    dry = conn.execute("select * from cancel_jobs(p_user_id => 'u1', p_dry_run => true)").fetchall()
    assert sorted(r["job_id"] for r in dry) == sorted(mine) and not any(r["cancelled"] for r in dry)
    assert (
        conn.execute("select count(*) as n from job_queue where status = 'pending'").fetchone()["n"]
        == 5
    )
    done = conn.execute("select * from cancel_jobs(p_user_id => 'u1')").fetchall()
    assert sorted(r["job_id"] for r in done) == sorted(mine) and all(r["cancelled"] for r in done)
    left = conn.execute("select user_id, status from job_queue order by user_id").fetchall()
    assert [(r["user_id"], r["status"]) for r in left] == [("u1", "cancelled")] * 3 + [
        ("u2", "pending")
    ] * 2


@pytest.mark.parametrize(
    ("call", "message"),
    [
        ("retry_jobs(p_status => 'completed')", "status must be failed or cancelled"),
        ("cancel_jobs(p_status => 'failed')", "status must be pending, processing or waiting"),
        ("retry_jobs(p_limit => 0)", "limit must be an integer from 1 to 10000"),
        ("retry_jobs(p_since => '2026-12-02', p_until => '2026-12-01')", "is after until"),
    ],
)
def test_bulk_actions_refuse_bad_filters_with_a_reason(conn, call, message):
    with pytest.raises(psycopg.errors.InvalidParameterValue, match=message):
        conn.execute(f"select * from {call}")


def test_the_table_health_view_counts_dead_rows_and_names_an_open_transaction(conn, database_url):
    add(conn, 200)
    conn.execute("update job_queue set status = 'cancelled'")
    wait_for_stats(conn)
    conn.execute("analyze job_queue")  # the live count is analyze's, the dead count the updates'
    with psycopg.connect(database_url, autocommit=True) as other:
        other.execute("begin isolation level repeatable read")
        other.execute("select count(*) from job_queue")  # holds a snapshot: vacuum must wait
        pid = other.info.backend_pid
        rows = {r["table_name"]: r for r in conn.execute("select * from job_queue_table_health")}
        other.execute("rollback")
    q = rows["job_queue"]
    assert q["live_tuples"] == 200 and q["dead_tuples"] >= 200
    assert q["table_bytes"] > 0 and q["index_bytes"] > 0 and q["updates"] >= 200
    assert q["oldest_xact_pid"] == pid and q["oldest_xact_seconds"] >= 0
    assert {"job_queue", "job_queue_turns", "provider_calls"} <= set(rows)


def wait_for_stats(conn) -> None:
    """The cumulative statistics reach pg_stat_user_tables when a backend reports them."""
    import time

    for _ in range(100):
        conn.execute("select pg_stat_force_next_flush()")
        row = conn.execute(
            "select n_dead_tup from pg_stat_user_tables where relname = 'job_queue'"
        ).fetchone()
        if row and row["n_dead_tup"] >= 200:
            return
        time.sleep(0.05)


def test_the_command_line_retries_by_filter_after_a_dry_run_and_cancels(
    database_url, conn, monkeypatch, capsys
):
    from processor.cli.commands import main

    monkeypatch.setenv("DATABASE_URL", database_url)
    monkeypatch.setenv("COLUMNS", "160")
    outage = failed(conn, 3, "generate-image", error="OpenAI 503: overloaded")
    failed(conn, 2, "generate-image", error="bad payload: no prompt")
    assert main(["retry", "--error", "503", "--since", "30d", "--dry-run"]) == 0
    shown = capsys.readouterr().out
    assert all(str(i) in shown for i in outage) and shown.count(" would be retried ") == 3
    assert "dry run: 3 jobs would be retried; nothing changed" in shown
    assert "Already paid $0.0000; the provider ledger has no price for these" in shown
    assert (
        conn.execute("select count(*) as n from job_queue where status = 'failed'").fetchone()["n"]
        == 5
    )

    assert main(["retry", "--error", "503"]) == 0
    assert "3 jobs retried" in capsys.readouterr().out
    pending = {r["id"] for r in conn.execute("select id from job_queue where status = 'pending'")}
    assert pending == set(outage)
    assert main(["retry", "--error", "503"]) == 0  # nothing left to match
    assert capsys.readouterr().out.strip() == "no jobs match"

    with pytest.raises(SystemExit, match="give a job ID, or at least one filter"):
        main(["retry"])
    with pytest.raises(SystemExit, match="not both"):
        main(["retry", str(outage[0]), "--type", "x"])
    with pytest.raises(SystemExit):  # argparse: not a time
        main(["retry", "--since", "yesterday"])
    assert "not a time: 'yesterday'" in capsys.readouterr().err

    assert main(["cancel", "--type", "generate-image", "--limit", "2"]) == 0
    assert "2 jobs cancelled" in capsys.readouterr().out
    last = conn.execute("select id from job_queue where status = 'pending'").fetchone()["id"]
    assert main(["cancel", str(last)]) == 0
    assert (
        conn.execute("select count(*) as n from job_queue where status = 'cancelled'").fetchone()[
            "n"
        ]
        == 3
    )


def test_verify_warns_of_dead_rows_an_open_transaction_and_too_many_processors(
    conn, database_url, monkeypatch
):
    import httpx

    from processor.ops.verify import Verifier

    with httpx.Client() as client:
        clean = Verifier(conn, client).storage()
        assert clean.ok and not clean.warning and clean.label.startswith("storage: job_queue")
        conn.execute("insert into job_queue (job_type) select 'ok' from generate_series(1, 12000)")
        conn.execute("update job_queue set status = 'cancelled'")
        wait_for_stats(conn)
        with psycopg.connect(database_url, autocommit=True) as other:
            other.execute("begin isolation level repeatable read")
            other.execute("select 1")
            pid = other.info.backend_pid
            monkeypatch.setattr("processor.ops.verify.MAX_XACT_SECONDS", -1)
            check = Verifier(conn, client).storage()
            other.execute("rollback")
        assert check.ok and check.warning
        assert "job_queue has 12,000 dead rows" in check.label
        assert f"transaction of pid {pid} open" in check.label
        assert check.fix and check.fix.startswith("end it (SELECT pg_terminate_backend(")
        assert "VACUUM (ANALYZE) job_queue" in check.fix

        monkeypatch.setenv("DB_POOL_MAX", "10")
        fits = Verifier(conn, client, replicas=2).connections()
        assert fits.ok and not fits.warning and "2 processor(s) x 14" in fits.label
        crowd = Verifier(conn, client, replicas=1000).connections()
        assert crowd.ok and crowd.warning and "= 14000 of" in crowd.label
        assert crowd.fix and crowd.fix.startswith("run at most ")


def test_lease_extensions_and_progress_are_hot_updates(conn):
    add(conn, 40)
    claimed = conn.execute("select id, lease_token from claim_jobs('w', 20)").fetchall()
    ids, tokens = [r["id"] for r in claimed], [r["lease_token"] for r in claimed]
    conn.execute("select pg_stat_force_next_flush()")  # the claim's counts, reported first
    conn.execute("select pg_stat_reset_single_table_counters('job_queue'::regclass)")
    for step in range(3):
        conn.execute(
            "select extend_job_leases(%s::uuid[], %s::uuid[], interval '1 minute')", (ids, tokens)
        )
        for job_id, token in zip(ids, tokens, strict=True):
            conn.execute(
                "select set_job_progress(%s, %s, %s)", (job_id, token, Jsonb({"done": step}))
            )
    conn.execute("select pg_stat_force_next_flush()")
    stats = conn.execute(
        "select n_tup_upd, n_tup_hot_upd from pg_stat_user_tables where relname = 'job_queue'"
    ).fetchone()
    # No indexed column changes: each one can stay on its page without an index entry.
    assert stats["n_tup_upd"] == 120 and stats["n_tup_hot_upd"] >= 108, stats


def test_expired_leases_are_found_among_the_running_jobs_by_index(conn):
    conn.execute(
        "insert into job_queue (job_type, status, completed_at) "
        "select 'ok', 'completed', now() from generate_series(1, 20000)"
    )
    add(conn, 5, status="processing", locked_until="2000-01-01", lease_token=uuid.uuid4())
    conn.execute("analyze job_queue")
    plan = "\n".join(
        r["QUERY PLAN"]
        for r in conn.execute(
            "explain select id from job_queue where status = 'processing' and locked_until < now()"
        )
    )
    assert "job_queue_running_idx" in plan, plan
    assert conn.execute("select requeue_expired_jobs() as n").fetchone()["n"] == 5


def test_a_bulk_replay_of_one_sellers_jobs_does_not_hold_back_another_seller(conn):
    failed(conn, 200, "generate-image", user_id="importer")
    assert len(retry(conn, user_id="importer", limit=200)) == 200
    add(conn, 1, "generate-image", user_id="single")
    # The 200 replayed jobs share one lane: the other seller is served within the first turns.
    first = [
        conn.execute("select user_id from claim_jobs('w', 1)").fetchone()["user_id"]
        for _ in range(2)
    ]
    assert "single" in first, first
